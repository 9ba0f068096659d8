//! What operators rely on: health, audit events, the bootstrap admin, restarts.

use keyward_proto::v1;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::{
    gateway::Rest,
    helpers::{Backend, TestApp, admin, both, spawn},
};

/// Masumi's health route (what its dashboard calls first), with and without the slash.
async fn masumi_health(app: &TestApp) -> Vec<(u16, Value)> {
    let rest = Rest::new(app.running().http_addr);
    let mut answers = Vec::new();
    for path in ["/api/v1/health", "/api/v1/health/"] {
        let answer = rest.send("GET", path, &[], None).await;
        answers.push((answer.status, answer.body));
    }
    answers
}

async fn health_follows_the_database(backend: Backend) {
    let app = spawn(backend).await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in ["", "keyward.v1.ApiKeyService"] {
        let answer = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving, "{service:?}");
    }
    let ok = (200, json!({"status": "success", "data": {"status": "ok"}}));
    assert_eq!(masumi_health(&app).await, vec![ok.clone(), ok.clone()]);
    if backend == Backend::Postgres {
        // Take the database away under the server: health must say so, and calls fail
        // with UNAVAILABLE rather than INTERNAL.
        let url = app.config.store.database_url();
        let (base, name) = url.rsplit_once('/').unwrap();
        let admin_db = sea_orm::Database::connect(format!("{base}/postgres")).await.unwrap();
        admin_db.execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).await.unwrap();
        admin_db
            .execute_unprepared(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            ))
            .await
            .unwrap();
        let mut status = ServingStatus::Serving;
        for _ in 0..50 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status();
            if status == ServingStatus::NotServing {
                break;
            }
        }
        assert_eq!(status, ServingStatus::NotServing);
        let failed = app.client.clone().list_api_keys(admin(v1::ListApiKeysRequest::default())).await.unwrap_err();
        assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
        let unavailable = (503, json!({"status": "error", "error": {"message": "Service unavailable"}}));
        assert_eq!(masumi_health(&app).await, vec![unavailable.clone(), unavailable], "Masumi's health says so too");
        admin_db.execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await.unwrap();
        let mut status = ServingStatus::NotServing;
        for _ in 0..50 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status();
            if status == ServingStatus::Serving {
                break;
            }
        }
        assert_eq!(status, ServingStatus::Serving, "serving again once the database is back");
        assert_eq!(masumi_health(&app).await, vec![ok.clone(), ok]);
    }
    app.stop().await;
}
both!(health_follows_the_database);

async fn every_mutation_is_audited(backend: Backend) {
    let app = spawn(backend).await;
    let mut client = app.client.clone();
    let request_id = uuid::Uuid::new_v4().to_string();
    let (key, _) = app.create_key("audited", &[]).await;
    client
        .delete_api_key(admin(v1::DeleteApiKeyRequest { id: key.id.clone(), request_id: request_id.clone() }))
        .await
        .unwrap();
    client
        .delete_api_key(admin(v1::DeleteApiKeyRequest { id: key.id.clone(), request_id: String::new() }))
        .await
        .unwrap_err();
    let events = app.running().store.audit_events().await.unwrap();
    let admin_actor = events.iter().find(|e| e.action == "CreateApiKey" && e.target == key.id).map(|e| e.actor.clone());
    let admin_actor = admin_actor.expect("the create is audited");
    assert!(admin_actor.starts_with("key:"));
    let delete =
        events.iter().find(|e| e.action == "DeleteApiKey" && e.outcome == "OK").expect("the delete is audited");
    assert_eq!((delete.target.as_str(), delete.request_id.as_deref()), (key.id.as_str(), Some(request_id.as_str())));
    assert_eq!(delete.actor, admin_actor);
    let failed =
        events.iter().find(|e| e.action == "DeleteApiKey" && e.outcome != "OK").expect("the failed delete too");
    assert_eq!(failed.outcome, "FAILED_PRECONDITION");
    app.stop().await;
}
both!(every_mutation_is_audited);

async fn restart_keeps_keys_and_does_not_reimport_the_admin(backend: Backend) {
    let mut app = spawn(backend).await;
    let (_, secret) = app.create_key("survivor", &[]).await;
    let keys = app.count_rows("api_keys").await;
    app.running.take().unwrap().stop().await.unwrap();
    let running = keyward_server::start(app.config.clone()).await.expect("restart");
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", running.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    app.client = v1::api_key_service_client::ApiKeyServiceClient::new(channel);
    app.running = Some(running);
    assert!(app.verify(&secret, &[], "").await.valid, "the same hash secret and database after a restart");
    assert_eq!(app.count_rows("api_keys").await, keys, "the bootstrap admin is imported only once");
    app.stop().await;
}
both!(restart_keeps_keys_and_does_not_reimport_the_admin);

#[test]
fn bad_settings_stop_the_start_with_a_message_naming_them() {
    let data = tempfile::tempdir().unwrap();
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("KEYWARD_GRPC_ADDR", "not-an-address")], "--grpc-addr"),
        (
            &[("KEYWARD_TLS_CERT", "/nonexistent/cert.pem"), ("KEYWARD_TLS_KEY", "/nonexistent/key.pem")],
            "KEYWARD_TLS_CERT",
        ),
        (&[("KEYWARD_DATABASE_URL", "mysql://somewhere/db")], "KEYWARD_DATABASE_URL"),
        (&[("KEYWARD_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/x")], "KEYWARD_HASH_SECRET"),
        (&[("KEYWARD_ENVIRONMENTS", "production:kw_live:zero")], "--environment"),
    ];
    for (env, setting) in cases {
        let output = std::process::Command::new(crate::helpers::keyward_binary())
            .arg("serve")
            .env("KEYWARD_DATA_DIR", data.path())
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{env:?} started");
        assert!(stderr.contains(setting), "{env:?}: the message names {setting}: {stderr}");
    }
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0, "a refused start writes nothing");
}

async fn metrics_count_calls_verifications_and_the_cache(backend: Backend) {
    let app = spawn(backend).await;
    let (key, secret) = app.create_key("metered", &[]).await;
    for _ in 0..3 {
        assert!(app.verify(&secret, &[], "").await.valid);
    }
    app.verify("garbage", &[], "").await;
    let request = v1::DeleteApiKeyRequest { id: key.id, request_id: String::new() };
    app.client.clone().delete_api_key(admin(request)).await.unwrap();
    let scrape = || async {
        let url = format!("http://{}/metrics", app.running().http_addr);
        reqwest::get(url).await.unwrap().text().await.unwrap()
    };
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    let text = scrape().await;
    let verify = r#"keyward_grpc_requests_total{code="Ok",method="keyward.v1.ApiKeyService/VerifyApiKey"}"#;
    assert_eq!(value(&text, verify), 4.0);
    assert_eq!(value(&text, r#"keyward_verifications_total{outcome="VALID"}"#), 3.0);
    assert_eq!(value(&text, r#"keyward_verifications_total{outcome="MALFORMED"}"#), 1.0);
    assert!(value(&text, r#"keyward_cache_lookups_total{result="hit"}"#) >= 2.0);
    assert!(
        value(&text, r#"keyward_grpc_request_duration_seconds_count{method="keyward.v1.ApiKeyService/VerifyApiKey"}"#)
            >= 4.0
    );
    assert!(value(&text, r#"keyward_db_pool_connections{state="idle"}"#) >= 0.0);
    assert!(value(&text, "keyward_cache_keys") >= 1.0);
    let unauthenticated =
        app.client.clone().list_api_keys(tonic::Request::new(v1::ListApiKeysRequest::default())).await;
    assert_eq!(unauthenticated.unwrap_err().code(), Code::Unauthenticated);
    let text = scrape().await;
    let refused =
        r#"keyward_grpc_requests_total{code="Unauthenticated",method="keyward.v1.ApiKeyService/ListApiKeys"}"#;
    assert_eq!(value(&text, refused), 1.0);
    if backend == Backend::Postgres {
        let mut received = 0.0;
        for _ in 0..50 {
            received = value(&scrape().await, "keyward_invalidation_notifications_total");
            if received >= 1.0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(received >= 1.0, "the delete's notification came back to this replica");
    }
    app.stop().await;
}
both!(metrics_count_calls_verifications_and_the_cache);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_come_from_flags_then_env_then_the_config_file_then_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keyward.toml");
    std::fs::write(
        &file,
        "log_format = \"json\"\nhttp_addr = \"not-an-address\"\nenvironments = [\"production:kw_live:7\", \"sandbox:kw_test:3\"]\n",
    )
    .unwrap();
    // The file's http_addr loses to the env var the replica sets; its other settings apply.
    let app = spawn(Backend::Sqlite).await;
    let data = tempfile::tempdir().unwrap();
    let replica = crate::helpers::Replica::start(
        &app.config.store.database_url(),
        data.path(),
        &[("KEYWARD_CONFIG", file.to_str().unwrap())],
    )
    .await
    .expect("env beats the file's bad http_addr");
    let quota = replica.client.clone().get_key_quota(admin(v1::GetKeyQuotaRequest::default())).await.unwrap();
    assert_eq!(quota.into_inner().limit, 7, "the file beats the default");
    assert!(replica.log().lines().any(|line| line.starts_with("{\"timestamp\"")), "json logs from the file");
    drop(replica);

    let run = |args: &[&str], env: &[(&str, &str)]| {
        let output = std::process::Command::new(crate::helpers::keyward_binary())
            .args(args)
            .env("KEYWARD_DATA_DIR", data.path())
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (started, stderr) = run(&["serve", "--grpc-addr", "bogus"], &[("KEYWARD_GRPC_ADDR", "127.0.0.1:0")]);
    assert!(!started && stderr.contains("--grpc-addr"), "the flag beats the env var: {stderr}");
    std::fs::write(&file, "grpc_addr = \"bogus\"\n").unwrap();
    let (started, stderr) = run(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert!(!started && stderr.contains("--grpc-addr"), "a bad file value is named: {stderr}");
    std::fs::write(&file, "grpc_adress = \"127.0.0.1:0\"\n").unwrap();
    let (started, stderr) = run(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert!(!started && stderr.contains("grpc_adress"), "an unknown key is named: {stderr}");
    app.stop().await;
}
