//! Findings of the security review about what an outsider can reach without a right, each attacked end to end: unbounded metric labels,
//! usage counters an absurd cost could break, replayed charge request ids, the JWKS
//! fetch, the TLS handshake, and the health of every service.

mod costs;
mod identity;

use std::collections::BTreeSet;

use keyward_proto::v1::{self, credit_service_client::CreditServiceClient};
use keyward_store::UsageBatch;
use prost::Message;
use sea_orm::ConnectionTrait;
use tonic::{Code, codegen::http::uri::PathAndQuery};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::helpers::{ADMIN_KEY, Backend, TestApp, admin, assert_invalid, both, spawn, with_key};

async fn scrape(app: &crate::helpers::TestApp) -> String {
    let url = format!("http://{}/metrics", app.running().http_addr);
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// The `method` label of a series line, if it has one.
fn method_of(line: &str) -> Option<&str> {
    let rest = &line[line.find("method=\"")? + "method=\"".len()..];
    Some(&rest[..rest.find('"')?])
}

/// The series lines (not comments) of the gRPC metrics.
fn grpc_series(text: &str) -> Vec<&str> {
    text.lines().filter(|line| line.starts_with("keyward_grpc_")).collect()
}

/// An empty-message gRPC call to any path, as a hostile client can make.
async fn call_path(channel: &tonic::transport::Channel, path: &str) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = PathAndQuery::try_from(path.to_owned()).unwrap();
    match grpc.unary(tonic::Request::new(()), path, codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_do_not_grow_the_metrics() {
    let app = spawn(Backend::Sqlite).await;
    // One real call of each kind, so the known labels exist before the flood.
    app.verify("garbage", &[], "").await;
    let mut health = HealthClient::new(app.channel.clone());
    health.check(HealthCheckRequest { service: String::new() }).await.unwrap();
    let before = scrape(&app).await;
    let known_before: Vec<&str> =
        grpc_series(&before).into_iter().filter(|line| method_of(line) != Some("other")).collect();

    for index in 0..1000 {
        let path = match index % 5 {
            0 | 1 => format!("/keyward.v1.ApiKeyService/Invented{index}"),
            2 => format!("/keyward.v1.Invented{index}/Call"),
            3 => format!("/grpc.health.v1.Health/Probe{index}"),
            _ => format!("/attacker{index}.Service/Method"),
        };
        assert_eq!(call_path(&app.channel, &path).await, Code::Unimplemented, "{path}");
    }

    let after = scrape(&app).await;
    let series = grpc_series(&after);
    let labels: BTreeSet<&str> = series.iter().filter_map(|line| method_of(line)).collect();
    assert!(
        labels
            .iter()
            .all(|label| !label.contains("Invented") && !label.contains("Probe") && !label.contains("attacker")),
        "{labels:?}"
    );
    let known_after: Vec<&str> = series.iter().copied().filter(|line| method_of(line) != Some("other")).collect();
    assert_eq!(known_after.len(), known_before.len(), "no series of a known method was added");
    // One counter (code Unimplemented) and one histogram (buckets, +Inf, sum, count).
    let other: Vec<&str> = series.iter().copied().filter(|line| method_of(line) == Some("other")).collect();
    let buckets = other.iter().filter(|line| line.contains("_bucket{")).count();
    assert_eq!(other.len(), 1 + buckets + 2, "the fixed label holds one counter and one histogram: {other:#?}");
    let counted = other
        .iter()
        .find_map(|line| line.strip_prefix(r#"keyward_grpc_requests_total{code="Unimplemented",method="other"} "#))
        .expect("the made-up calls are counted under the fixed label");
    assert_eq!(counted.trim(), "1000");
    app.stop().await;
}

/// Every keyward service the protos declare, by full name.
fn declared_services() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(keyward_proto::FILE_DESCRIPTOR_SET).unwrap();
    set.file
        .iter()
        .flat_map(|file| file.service.iter().map(move |service| format!("{}.{}", file.package(), service.name())))
        .collect()
}

async fn health_of_every_service_follows_the_database(backend: Backend) {
    let app = spawn(backend).await;
    let mut health = HealthClient::new(app.channel.clone());
    let mut services = declared_services();
    assert!(services.iter().any(|name| name == "keyward.v1.CreditService"), "{services:?}");
    services.push(String::new());
    let statuses = |mut health: HealthClient<tonic::transport::Channel>, services: Vec<String>| async move {
        let mut statuses = Vec::new();
        for service in services {
            let answer = health.check(HealthCheckRequest { service: service.clone() }).await.unwrap().into_inner();
            statuses.push((service, answer.status()));
        }
        statuses
    };
    let all = |status: ServingStatus| services.iter().map(|name| (name.clone(), status)).collect::<Vec<_>>();
    assert_eq!(statuses(health.clone(), services.clone()).await, all(ServingStatus::Serving));
    if backend == Backend::Postgres {
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
        let mut seen = Vec::new();
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            seen = statuses(health.clone(), services.clone()).await;
            if seen == all(ServingStatus::NotServing) {
                break;
            }
        }
        assert_eq!(seen, all(ServingStatus::NotServing), "every service, CreditService included, stops serving");
        admin_db.execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await.unwrap();
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            seen = statuses(health.clone(), services.clone()).await;
            if seen == all(ServingStatus::Serving) {
                break;
            }
        }
        assert_eq!(seen, all(ServingStatus::Serving), "every service serves again once the database is back");
    }
    health.check(HealthCheckRequest { service: String::new() }).await.unwrap();
    app.stop().await;
}
both!(health_of_every_service_follows_the_database);
