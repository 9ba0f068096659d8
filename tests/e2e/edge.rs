//! The edge, through the real clients of it: Debian's nginx with `auth_request` in front
//! of a small upstream that echoes the headers it received (forward-auth), and Envoy's
//! own generated ext_authz stub calling `Check` as Envoy does. Both run one scenario: each
//! refusal with its status, the upstream headers on admit, client-supplied `X-Keyward-*`
//! never reaching the upstream, credits and rate limits exact, a revoked key refused, and
//! usage and the ledger showing edge calls as VerifyApiKey calls.

mod routes;

use std::{collections::HashMap, path::PathBuf, process::Stdio, time::Duration};

use keyward_proto::v1::{self, credit_service_client::CreditServiceClient};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::helpers::{Backend, TestApp, admin, both, spawn_with};

pub(crate) const ROUTES: &str = r#"
[[routes]]
path = "/public/*"
public = true

[[routes]]
path = "/v1/documents/{id}"
methods = ["GET", "HEAD"]
scopes = ["documents.read"]

[[routes]]
path = "/v1/metered"
scopes = ["documents.read"]
cost = [{ unit = "", amount = 1 }]

[[routes]]
path = "/v1/limited"
rate_limits = [{ name = "edge", cost = 1 }]
"#;

/// One request through the proxy.
#[derive(Debug, Clone)]
pub(crate) struct Ask {
    method: &'static str,
    path: &'static str,
    headers: Vec<(String, String)>,
}

impl Ask {
    pub(crate) fn new(method: &'static str, path: &'static str) -> Self {
        Self { method, path, headers: Vec::new() }
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub(crate) fn bearer(self, secret: &str) -> Self {
        self.header("Authorization", &format!("Bearer {secret}"))
    }
}

/// What came of it: the status the client saw, the headers it saw, and the headers the
/// upstream received (nginx) or was to receive (ext_authz), names in lower case.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    upstream: HashMap<String, String>,
}

/// Starts a server with the edge routes in `dir`.
async fn edge_app(backend: Backend, dir: &std::path::Path) -> TestApp {
    edge_app_with(backend, dir, |_| {}).await
}

/// Starts a server with the edge routes in `dir`, `adjust`ed.
pub(crate) async fn edge_app_with(
    backend: Backend,
    dir: &std::path::Path,
    adjust: impl FnOnce(&mut keyward_server::config::Config),
) -> TestApp {
    let routes = dir.join("routes.toml");
    std::fs::write(&routes, ROUTES).unwrap();
    spawn_with(backend, |config| {
        config.edge.edge_routes = Some(routes);
        adjust(config);
    })
    .await
}

async fn create(
    app: &TestApp,
    owner: &str,
    scopes: &[&str],
    adjust: impl FnOnce(&mut v1::ApiKey),
) -> (v1::ApiKey, String) {
    let mut api_key = v1::ApiKey {
        name: format!("edge key of {owner}"),
        owner: owner.to_owned(),
        organization_id: "org-edge".to_owned(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    };
    adjust(&mut api_key);
    let request = v1::CreateApiKeyRequest { api_key: Some(api_key), ..Default::default() };
    let created = app.client.clone().create_api_key(admin(request)).await.expect("create").into_inner();
    (created.api_key.unwrap(), created.secret)
}

/// The scenario both clients run; `ask` sends a batch in order.
pub(crate) async fn scenario<F, Fut>(app: &TestApp, ask: F)
where
    F: Fn(Vec<Ask>) -> Fut,
    Fut: std::future::Future<Output = Vec<Reply>>,
{
    let (reader, reader_secret) = create(app, "reader", &["documents.read"], |_| {}).await;
    let (_, other_secret) = create(app, "other", &["search"], |_| {}).await;
    let (metered, metered_secret) = create(app, "payer", &["documents.read"], |key| {
        key.usage_limited = true;
        key.credits = vec![v1::CreditAmount { unit: String::new(), amount: 1 }];
    })
    .await;
    let (_, limited_secret) = create(app, "limited", &[], |key| {
        key.rate_limits = vec![v1::RateLimit {
            name: "edge".into(),
            limit: 2,
            period: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
            burst: None,
            auto_apply: false,
        }];
    })
    .await;
    let (doomed, doomed_secret) = create(app, "doomed", &["documents.read"], |_| {}).await;

    let document = || Ask::new("GET", "/v1/documents/7");
    let replies = ask(vec![
        Ask::new("GET", "/public/status").header("X-Keyward-Owner", "forged"),
        document()
            .bearer(&reader_secret)
            .header("X-Keyward-Owner", "forged")
            .header("X-Keyward-Key-Id", "forged")
            .header("X-Keyward-Remaining", "999"),
        document().header("X-API-Key", &reader_secret),
        document(),
        document().bearer("nope"),
        document().bearer("an-imported-token-nobody-has"),
        document().bearer(&other_secret),
        Ask::new("POST", "/v1/documents/7").bearer(&reader_secret),
        Ask::new("GET", "/v1/documents/7/../../admin").bearer(&reader_secret),
        Ask::new("GET", "/v1/metered").bearer(&metered_secret),
        Ask::new("GET", "/v1/metered").bearer(&metered_secret),
        Ask::new("GET", "/v1/limited").bearer(&limited_secret),
        Ask::new("GET", "/v1/limited").bearer(&limited_secret),
        Ask::new("GET", "/v1/limited").bearer(&limited_secret),
        document().bearer(&doomed_secret),
    ])
    .await;
    let statuses: Vec<u16> = replies.iter().map(|reply| reply.status).collect();
    assert_eq!(statuses, [200, 200, 200, 401, 401, 401, 403, 403, 403, 200, 402, 200, 200, 429, 200], "{replies:#?}");

    let public = &replies[0];
    assert!(!public.upstream.contains_key("x-keyward-owner"), "a client's X-Keyward-* never passes: {public:?}");
    let admitted = &replies[1].upstream;
    assert_eq!(admitted.get("x-keyward-key-id"), Some(&reader.id), "{admitted:?}");
    assert_eq!(admitted.get("x-keyward-owner").map(String::as_str), Some("reader"));
    assert_eq!(admitted.get("x-keyward-organization").map(String::as_str), Some("org-edge"));
    assert_eq!(admitted.get("x-keyward-scopes").map(String::as_str), Some("documents.read"));
    assert!(!admitted.contains_key("x-keyward-remaining"), "an unmetered route charges nothing: {admitted:?}");
    assert_eq!(replies[2].upstream.get("x-keyward-key-id"), Some(&reader.id), "the key in X-API-Key");
    for refused in &replies[3..6] {
        assert_eq!(refused.headers.get("www-authenticate").map(String::as_str), Some("Bearer"), "{refused:?}");
    }
    assert_eq!(replies[3].headers.get("x-keyward-code").map(String::as_str), Some("MISSING"));
    assert_eq!(replies[6].headers.get("x-keyward-code").map(String::as_str), Some("INSUFFICIENT_SCOPE"));
    assert_eq!(replies[7].headers.get("x-keyward-code").map(String::as_str), Some("NO_ROUTE"));
    assert_eq!(replies[9].upstream.get("x-keyward-remaining").map(String::as_str), Some("0"), "{:?}", replies[9]);
    assert_eq!(replies[10].headers.get("x-keyward-code").map(String::as_str), Some("USAGE_EXCEEDED"));
    assert_eq!(replies[11].upstream.get("ratelimit").map(String::as_str), Some("\"edge\";r=1"), "{:?}", replies[11]);
    let retry_after: u64 = replies[13].headers.get("retry-after").expect("Retry-After on 429").parse().unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");

    // Revocation evicts the key on this replica at once: the next request is refused.
    let revoke = v1::DeleteApiKeyRequest { id: doomed.id.clone(), request_id: String::new() };
    app.client.clone().delete_api_key(admin(revoke)).await.expect("revoke");
    let replies = ask(vec![document().bearer(&doomed_secret)]).await;
    assert_eq!(replies[0].status, 401, "{replies:?}");

    // Usage and the ledger count edge calls as they count VerifyApiKey calls.
    app.running().flush_usage().await;
    let mut credits = CreditServiceClient::new(app.channel.clone());
    let usage = v1::GetUsageRequest {
        api_key_id: metered.id.clone(),
        start_time: Some(crate::helpers::timestamp_in(-3600)),
        granularity: v1::UsageGranularity::Day.into(),
        ..Default::default()
    };
    let usage = credits.get_usage(admin(usage)).await.unwrap().into_inner();
    let outcome = |name: &str| usage.buckets.iter().filter_map(|b| b.verifications.get(name)).sum::<i64>();
    let spent: i64 = usage.buckets.iter().flat_map(|b| &b.credits_spent).map(|c| c.amount).sum();
    assert_eq!((outcome("VALID"), outcome("USAGE_EXCEEDED"), spent), (1, 1, 1), "{usage:?}");
    let ledger = v1::ListCreditTransactionsRequest { api_key_id: metered.id.clone(), ..Default::default() };
    let ledger = credits.list_credit_transactions(admin(ledger)).await.unwrap().into_inner();
    let charges: Vec<_> = ledger.transactions.iter().filter(|entry| entry.delta < 0).collect();
    assert_eq!(charges.len(), 1, "{ledger:?}");
    assert_eq!(charges[0].actor, "edge");
}

/// With the database away, a key not in the cache cannot be checked: 503, not a refusal.
pub(crate) async fn unreachable_database<F, Fut>(app: &TestApp, ask: F)
where
    F: Fn(Vec<Ask>) -> Fut,
    Fut: std::future::Future<Output = Vec<Reply>>,
{
    let (_, secret) = create(app, "unseen", &["documents.read"], |_| {}).await;
    app.set_postgres_reachable(false).await;
    let replies = ask(vec![Ask::new("GET", "/v1/documents/1").bearer(&secret)]).await;
    app.set_postgres_reachable(true).await;
    assert_eq!(replies[0].status, 503, "{replies:?}");
}

// ---- nginx ----

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

/// A free port on loopback, for a process that binds it itself.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An upstream that answers every request with the request's head: the test sees what
/// the proxy sent on.
async fn echo_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => head.extend_from_slice(&buffer[..read]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    head.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.write_all(&head).await;
            });
        }
    });
    port
}

/// The nginx recipe of docs/edge.md, on test ports.
fn nginx_conf(dir: &std::path::Path, listen: u16, keyward: std::net::SocketAddr, upstream: u16) -> String {
    let recipe = include_str!("../../docs/edge-nginx.conf");
    let dir = dir.display();
    format!(
        // One process and no workers: killing it leaves no orphan behind holding the
        // test's inherited file descriptors (a build lock among them).
        "master_process off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log notice;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
         upstream keyward {{ server {keyward}; keepalive 8; }}\n  upstream app {{ server 127.0.0.1:{upstream}; }}\n\
         server {{\n    listen 127.0.0.1:{listen};\n{recipe}\n  }}\n}}\n"
    )
}

/// nginx in front of the echo upstream, asking the app; `None` (and a line saying so)
/// when nginx is not installed.
pub(crate) async fn nginx(
    keyward: std::net::SocketAddr,
    dir: &std::path::Path,
) -> Option<(tokio::process::Child, u16)> {
    let Some(binary) = nginx_binary() else {
        eprintln!("skipped: nginx is not installed (bash tests/tools.sh installs Debian's nginx-light)");
        return None;
    };
    let upstream = echo_upstream().await;
    let listen = free_port();
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir, listen, keyward, upstream)).unwrap();
    let child = tokio::process::Command::new(binary)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("nginx starts");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", listen)).await.is_ok() {
            return Some((child, listen));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nginx did not listen: {}", std::fs::read_to_string(dir.join("error.log")).unwrap_or_default());
}

pub(crate) async fn through_nginx(port: u16, asks: Vec<Ask>) -> Vec<Reply> {
    let client = reqwest::Client::new();
    let mut replies = Vec::new();
    for ask in asks {
        let url = format!("http://127.0.0.1:{port}{}", ask.path);
        let mut request = client.request(ask.method.parse().unwrap(), url);
        for (name, value) in &ask.headers {
            request = request.header(name, value);
        }
        let response = request.send().await.expect("nginx answers");
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap_or_default().to_owned()))
            .collect();
        let body = response.text().await.unwrap();
        // The echo's body is the head the upstream received; a refusal has none.
        let upstream = if status == 200 {
            body.lines()
                .skip(1)
                .filter_map(|line| line.split_once(':'))
                .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
                .collect()
        } else {
            HashMap::new()
        };
        replies.push(Reply { status, headers, upstream });
    }
    replies
}

async fn forward_auth_behind_nginx(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = edge_app(backend, dir.path()).await;
    let Some((mut nginx, port)) = nginx(app.running().http_addr, dir.path()).await else {
        app.stop().await;
        return;
    };
    scenario(&app, |asks| through_nginx(port, asks)).await;
    if backend == Backend::Postgres {
        unreachable_database(&app, |asks| through_nginx(port, asks)).await;
    }
    nginx.kill().await.ok();
    app.stop().await;
}
both!(forward_auth_behind_nginx);

// ---- Envoy ext_authz ----

fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/venv/bin/python");
    assert!(python.exists(), "{} is missing: run `bash tests/tools.sh` before the tests", python.display());
    python
}

pub(crate) async fn through_envoy_client(grpc: std::net::SocketAddr, asks: Vec<Ask>) -> Vec<Reply> {
    let cases: Vec<serde_json::Value> = asks
        .iter()
        .map(|ask| {
            let headers: serde_json::Map<String, serde_json::Value> =
                ask.headers.iter().map(|(name, value)| (name.clone(), value.clone().into())).collect();
            serde_json::json!({ "method": ask.method, "path": ask.path, "host": "api.example.com", "headers": headers })
        })
        .collect();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/ext_authz_client.py");
    let mut child = tokio::process::Command::new(python())
        .arg(script)
        .arg(grpc.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(serde_json::to_string(&cases).unwrap().as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "the ext_authz client failed: {}", String::from_utf8_lossy(&output.stderr));
    let answers: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    asks.iter()
        .zip(answers)
        .map(|(ask, answer)| {
            let strings = |value: &serde_json::Value| -> HashMap<String, String> {
                value
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(name, value)| (name.clone(), value.as_str().unwrap().to_owned()))
                    .collect()
            };
            let allowed = answer["allowed"].as_bool().unwrap();
            let set = strings(&answer["headers"]);
            let status = u16::try_from(answer["status"].as_u64().unwrap()).unwrap();
            if !allowed {
                let body: serde_json::Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
                assert_eq!(body["code"].as_str(), set.get("x-keyward-code").map(String::as_str), "{answer}");
                assert!(body["message"].as_str().is_some_and(|message| !message.is_empty()), "{answer}");
                assert_ne!(answer["grpc_code"], 0, "{answer}");
                return Reply { status, headers: set, upstream: HashMap::new() };
            }
            // What Envoy would send upstream: the client's headers, less those to remove,
            // overwritten by those set.
            let removed: Vec<String> = answer["headers_to_remove"]
                .as_array()
                .unwrap()
                .iter()
                .map(|name| name.as_str().unwrap().to_ascii_lowercase())
                .collect();
            let mut upstream: HashMap<String, String> = ask
                .headers
                .iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
                .filter(|(name, _)| !removed.contains(name))
                .collect();
            upstream.extend(set);
            Reply { status, headers: HashMap::new(), upstream }
        })
        .collect()
}

async fn ext_authz_from_envoys_client(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = edge_app(backend, dir.path()).await;
    let grpc = app.running().grpc_addr;
    scenario(&app, |asks| through_envoy_client(grpc, asks)).await;
    if backend == Backend::Postgres {
        unreachable_database(&app, |asks| through_envoy_client(grpc, asks)).await;
    }
    app.stop().await;
}
both!(ext_authz_from_envoys_client);
