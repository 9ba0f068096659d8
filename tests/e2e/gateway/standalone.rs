//! `keyward gateway` as a process of its own, in front of a `keyward serve` that goes away
//! and comes back.

use super::*;

/// A process of the `keyward` binary, its log line naming `marker`'s address.
struct Process {
    _child: tokio::process::Child,
}

async fn start_process(args: &[&str], env: &[(&str, &str)], marker: &str) -> (Process, String) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(keyward_binary())
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let needle = format!("{marker} addr=");
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(at) = line.find(&needle) {
                let rest = &line[at + needle.len()..];
                return rest.split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("the process exited before `{marker}`");
    })
    .await
    .expect("listening within 30 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (Process { _child: child }, addr)
}

async fn serve_on(data: &std::path::Path, grpc: &str) -> Process {
    let env = [
        ("KEYWARD_DATA_DIR", data.to_str().unwrap()),
        ("KEYWARD_GRPC_ADDR", grpc),
        ("KEYWARD_HTTP_ADDR", "127.0.0.1:0"),
        ("KEYWARD_HASH_SECRET", "e2e hash secret"),
        ("KEYWARD_MASTER_KEY", MASTER_KEY),
        ("KEYWARD_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY),
    ];
    start_process(&["serve"], &env, "grpc listening").await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_gateway_survives_an_upstream_outage() {
    let data = tempfile::tempdir().unwrap();
    let grpc = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let upstream = serve_on(data.path(), &grpc).await;
    let (_gateway, addr) = start_process(
        &["gateway", "--upstream", &format!("http://{grpc}"), "--gateway-addr", "127.0.0.1:0"],
        &[],
        "gateway listening",
    )
    .await;
    let rest = Rest::new(addr.parse().unwrap());
    let admin = bearer(ADMIN_KEY);
    let auth = [("authorization", admin.as_str())];
    let token = [("token", ADMIN_KEY)];
    assert_eq!(rest.send("GET", "/api/v1/api-keys", &auth, None).await.status, 200);
    assert_eq!(rest.send("GET", PSP, &auth, None).await.status, 200);
    assert_eq!(rest.send("GET", "/v1/callerApiKey", &token, None).await.status, 200);

    drop(upstream);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let native = rest.send("GET", "/v1/callerApiKey", &auth, None).await;
    assert_eq!((native.status, native.body["error"]["status"].clone()), (503, json!("UNAVAILABLE")));
    assert_psp_error(&rest.send("GET", PSP, &auth, None).await, 503, "PSP Product Manager Api is unavailable.");
    let scoped = rest.send("GET", "/api/v1/api-keys", &auth, None).await;
    assert_eq!((scoped.status, scoped.body["error"].clone()), (503, json!("UNAVAILABLE")));
    let masumi = rest.send("GET", "/api/v1/api-key-status", &token, None).await;
    assert_eq!((masumi.status, masumi.body["status"].clone()), (503, json!("error")), "{:?}", masumi.body);
    assert!(masumi.body["error"]["message"].as_str().is_some_and(|message| !message.is_empty()));

    let _upstream = serve_on(data.path(), &grpc).await;
    let mut status = 0;
    for _ in 0..50 {
        status = rest.send("GET", "/api/v1/api-keys", &auth, None).await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status, 200, "the gateway reconnects without a restart");
    assert_eq!(rest.send("GET", PSP, &auth, None).await.status, 200);
    assert_eq!(rest.send("GET", "/v1/callerApiKey", &auth, None).await.status, 200);
    assert_eq!(rest.send("GET", "/api/v1/api-key-status", &token, None).await.status, 200);

    // Its own /metrics: its requests by route and status, and its process.
    let metrics = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    let count = |series: &str| metrics.lines().find_map(|line| line.strip_prefix(series)?.trim().parse::<u64>().ok());
    assert!(count(r#"keyward_http_requests_total{route="/api/v1/api-keys",status="503"}"#) >= Some(1), "{metrics}");
    assert!(count(r#"keyward_http_requests_total{route="/v1/callerApiKey",status="200"}"#) >= Some(2), "{metrics}");
    assert!(count("process_resident_memory_bytes") > Some(0), "{metrics}");
}
