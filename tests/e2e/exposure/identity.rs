//! The JWKS fetch and the TLS handshake: what a slow or hostile peer can hold.

use super::*;

/// What the test identity provider does with a JWKS request.
#[derive(Clone)]
enum Jwks {
    /// Answers this JWKS.
    Serve(String),
    /// Answers 2 MiB with a content-length.
    Huge,
    /// Answers a body without a length that never ends.
    Endless,
    /// Reads the request and never answers.
    Silent,
}

/// A local identity provider whose behaviour the test switches.
struct IdentityProvider {
    url: String,
    mode: std::sync::Arc<std::sync::Mutex<Jwks>>,
}

impl IdentityProvider {
    async fn start(mode: Jwks) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
        let mode = std::sync::Arc::new(std::sync::Mutex::new(mode));
        let shared = std::sync::Arc::clone(&mode);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mode = shared.lock().unwrap().clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let head = |length: Option<usize>| {
                        let length = length.map(|n| format!("content-length: {n}\r\n")).unwrap_or_default();
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{length}connection: close\r\n\r\n"
                        )
                    };
                    match mode {
                        Jwks::Serve(body) => {
                            let _ = socket.write_all(format!("{}{body}", head(Some(body.len()))).as_bytes()).await;
                        }
                        Jwks::Huge => {
                            let body = format!("{{\"keys\": [], \"padding\": \"{}\"}}", "x".repeat(2 << 20));
                            let _ = socket.write_all(format!("{}{body}", head(Some(body.len()))).as_bytes()).await;
                        }
                        Jwks::Endless => {
                            let _ = socket
                                .write_all(format!("{}{{\"keys\": [], \"padding\": \"", head(None)).as_bytes())
                                .await;
                            let chunk = vec![b'x'; 64 * 1024];
                            while socket.write_all(&chunk).await.is_ok() {}
                        }
                        Jwks::Silent => {
                            // Hold the connection open, answering nothing, until the client leaves.
                            let _ = socket.read(&mut buffer).await;
                        }
                    }
                });
            }
        });
        Self { url, mode }
    }

    fn set(&self, mode: Jwks) {
        *self.mode.lock().unwrap() = mode;
    }
}

/// The JWKS document publishing `signers`.
fn jwks_of(signers: &[&crate::jwt::Signer]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    crate::jwt::write_jwks(&path, signers);
    std::fs::read_to_string(path).unwrap()
}

/// Starts a server on SQLite with the JWKS at `url`; the start's error, if it fails.
async fn start_with_jwks(url: &str) -> Result<keyward_server::Running, String> {
    crate::helpers::try_start(|config| {
        config.jwt.jwt_jwks = Some(url.to_owned());
        config.jwt.jwt_issuer = Some(crate::jwt::ISSUER.to_owned());
        config.jwt.jwt_audience = Some("keyward".to_owned());
        config.jwt.jwt_jwks_timeout = std::time::Duration::from_millis(500);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_too_large_or_too_slow_is_refused_at_start() {
    let provider = IdentityProvider::start(Jwks::Huge).await;
    let refused = start_with_jwks(&provider.url).await.expect_err("a 2 MiB JWKS is refused");
    assert!(refused.contains("larger than 1 MiB"), "{refused}");
    provider.set(Jwks::Endless);
    let refused = start_with_jwks(&provider.url).await.expect_err("an endless JWKS is refused");
    assert!(refused.contains("larger than 1 MiB"), "read incrementally and refused past the bound: {refused}");
    provider.set(Jwks::Silent);
    let refused = start_with_jwks(&provider.url).await.expect_err("a JWKS that never comes is refused");
    assert!(refused.contains("took longer than KEYWARD_JWT_JWKS_TIMEOUT"), "{refused}");
    let signer = crate::jwt::Signer::ec("ok-1");
    provider.set(Jwks::Serve(jwks_of(&[&signer])));
    start_with_jwks(&provider.url).await.expect("a JWKS within bounds is served").stop().await.unwrap();
}

fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_jwks_refresh_keeps_the_keys_and_logs_an_error() {
    let known = crate::jwt::Signer::ec("known-1");
    let provider = IdentityProvider::start(Jwks::Serve(jwks_of(&[&known]))).await;
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/keyward.db", dir.path().display());
    let env = [
        ("KEYWARD_JWT_JWKS", provider.url.as_str()),
        ("KEYWARD_JWT_ISSUER", crate::jwt::ISSUER),
        ("KEYWARD_JWT_AUDIENCE", "keyward"),
        ("KEYWARD_JWT_KID_REFRESH_COOLDOWN", "1ms"),
        ("KEYWARD_JWT_JWKS_TIMEOUT", "1s"),
    ];
    let replica = crate::helpers::Replica::start(&database, dir.path(), &env).await.expect("starts");
    let quota = |signer: &crate::jwt::Signer| {
        let mut client = replica.client.clone();
        let request = bearer(&signer.token("alice", &["Issuer_Dev"], "org-1"), v1::GetKeyQuotaRequest::default());
        async move { client.get_key_quota(request).await.map(drop).map_err(|status| status.code()) }
    };
    quota(&known).await.expect("a token of the published key is accepted");

    for (mode, problem) in [(Jwks::Endless, "larger than 1 MiB"), (Jwks::Silent, "took longer than")] {
        provider.set(mode);
        // A token naming an unknown key makes keyward fetch the JWKS again.
        let stranger = crate::jwt::Signer::ec(&format!("unknown-{problem}"));
        assert_eq!(quota(&stranger).await, Err(Code::Unauthenticated));
        quota(&known).await.expect("the keys it had are kept");
        let names_it = |line: &str| line.contains("could not refresh the JWKS") && line.contains(problem);
        let log = replica.log_when(|log| log.lines().any(names_it)).await;
        let line = log
            .lines()
            .find(|line| names_it(line))
            .unwrap_or_else(|| panic!("no refresh error naming {problem:?} in\n{log}"));
        assert!(line.contains("ERROR"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_completes_the_tls_handshake_is_dropped() {
    use tokio::io::AsyncReadExt;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let app = crate::helpers::spawn_with(Backend::Sqlite, |config| {
        config.tls.tls_cert = Some(cert);
        config.tls.tls_key = Some(key);
        config.tls.tls_handshake_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    for (listener, addr) in [("gRPC", app.running().grpc_addr), ("HTTP", app.running().http_addr)] {
        // Opens TCP and sends nothing: the server must close the connection.
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buffer = [0u8; 64];
        // A guard against a hang, not a measure of time.
        let closed = tokio::time::timeout(std::time::Duration::from_secs(60), idle.read(&mut buffer)).await;
        match closed.unwrap_or_else(|_| panic!("the {listener} listener kept a silent connection open")) {
            Ok(0) | Err(_) => {}
            Ok(read) => panic!("the {listener} listener sent {read} bytes to a client that said nothing"),
        }
    }
    // A client that does shake hands is still served.
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", app.running().http_addr)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/metrics", app.running().http_addr.port());
    assert!(client.get(url).send().await.unwrap().status().is_success());
    app.stop().await;
}
