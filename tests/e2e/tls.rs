//! TLS on the gRPC listener, and mutual TLS for service-to-service calls.

use std::path::Path;

use keyward_proto::v1::{self, api_key_service_client::ApiKeyServiceClient};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::helpers::{Backend, admin, spawn_with};

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        server: leaf(vec!["localhost".into(), "127.0.0.1".into()]),
        client: leaf(vec!["billing-service".into()]),
        ca: ca.pem(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn call(channel: Result<Channel, tonic::transport::Error>) -> Result<(), String> {
    let channel = channel.map_err(|err| format!("connect: {err}"))?;
    let mut client = ApiKeyServiceClient::new(channel);
    client
        .get_caller_api_key(admin(v1::GetCallerApiKeyRequest {}))
        .await
        .map(drop)
        .map_err(|status| format!("{status:?}"))
}

async fn tls_channel(
    addr: std::net::SocketAddr,
    ca: &str,
    identity: Option<&(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{addr}")).unwrap().tls_config(tls)?.connect().await
}

async fn plaintext_channel(addr: std::net::SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("http://{addr}")).unwrap().connect().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_served_and_plaintext_is_not() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (write(dir.path(), "server.pem", &pki.server.0), write(dir.path(), "server.key", &pki.server.1));
    let (cert, key) = (cert.clone(), key.clone());
    let app = spawn_with_tls(cert, key, None).await;
    let addr = app.running().grpc_addr;
    call(tls_channel(addr, &pki.ca, None).await).await.expect("a TLS client is served");
    assert!(call(plaintext_channel(addr).await).await.is_err(), "a plaintext client is not");
    let http = app.running().http_addr;
    let metrics = https_client(&pki.ca, None).get(format!("https://localhost:{}/metrics", http.port())).send().await;
    assert!(metrics.expect("metrics over HTTPS").status().is_success());
    let plain = reqwest::Client::new().get(format!("http://{http}/metrics")).send().await;
    assert!(plain.map_or(true, |response| !response.status().is_success()), "no plaintext HTTP");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_certificate() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (write(dir.path(), "server.pem", &pki.server.0), write(dir.path(), "server.key", &pki.server.1));
    let ca = write(dir.path(), "ca.pem", &pki.ca);
    let app = spawn_with_tls(cert, key, Some(ca)).await;
    let addr = app.running().grpc_addr;
    call(tls_channel(addr, &pki.ca, Some(&pki.client)).await)
        .await
        .expect("a client with a CA-signed certificate is served");
    assert!(call(tls_channel(addr, &pki.ca, None).await).await.is_err(), "a client without a certificate is refused");
    let stranger = {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["stranger".to_owned()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    assert!(call(tls_channel(addr, &pki.ca, Some(&stranger)).await).await.is_err(), "a self-signed client is refused");
    let url = format!("https://localhost:{}/metrics", app.running().http_addr.port());
    let with_cert = https_client(&pki.ca, Some(&pki.client)).get(&url).send().await;
    assert!(with_cert.expect("metrics with a client certificate").status().is_success());
    assert!(
        https_client(&pki.ca, None).get(&url).send().await.is_err(),
        "HTTP without a client certificate is refused"
    );
    app.stop().await;
}

fn https_client(ca: &str, identity: Option<&(String, String)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .resolve("localhost", "127.0.0.1:0".parse().unwrap());
    if let Some((cert, key)) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

async fn spawn_with_tls(
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    client_ca: Option<std::path::PathBuf>,
) -> crate::helpers::TestApp {
    spawn_with(Backend::Sqlite, move |config| {
        config.tls.tls_cert = Some(cert);
        config.tls.tls_key = Some(key);
        config.tls.tls_client_ca = client_ca;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_to_tls_listeners_close_after_the_idle_timeout() {
    use tokio::io::AsyncReadExt;
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "server.pem", &pki.server.0);
    let key = write(dir.path(), "server.key", &pki.server.1);
    let app = spawn_with(Backend::Sqlite, move |config| {
        config.tls.tls_cert = Some(cert);
        config.tls.tls_key = Some(key);
        // Far off, so that only the idle timeout can end a silent connection.
        config.tls.tls_handshake_timeout = std::time::Duration::from_secs(600);
        config.connections.idle_timeout = std::time::Duration::from_secs(2);
    })
    .await;
    for addr in [app.running().grpc_addr, app.running().http_addr] {
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(std::time::Duration::from_secs(30), silent.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "a silent connection to {addr} stayed open: {read:?}");
    }
    app.stop().await;
}
