//! The edge on a listener of its own (`KEYWARD_EDGE_ADDR`): nginx and Envoy's client
//! through it, the main listeners no longer serving the edge, and forward-auth calls
//! counted in `/metrics`.

use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, authorization_client::AuthorizationClient};

use crate::{
    edge::{edge_app_with, nginx, scenario, through_envoy_client, through_nginx, unreachable_database},
    helpers::{Backend, both},
};

/// The sum of the series of the exposition `text` whose line starts with `prefix`.
fn metric_sum(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

async fn the_edge_on_its_own_listener(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = edge_app_with(backend, dir.path(), |config| {
        config.edge.edge_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let running = app.running();
    let edge = running.edge_addr.expect("the edge listener's address");
    assert!(edge != running.http_addr && edge != running.grpc_addr);

    // Both endpoints on the one port: HTTP/1.1 from nginx, h2c gRPC from Envoy's client.
    let Some((mut nginx, port)) = nginx(edge, dir.path()).await else {
        app.stop().await;
        return;
    };
    scenario(&app, |asks| through_nginx(port, asks)).await;
    scenario(&app, |asks| through_envoy_client(edge, asks)).await;

    // The main listeners no longer answer for the edge.
    let client = reqwest::Client::new();
    let forward_auth = |addr: std::net::SocketAddr| {
        client
            .get(format!("http://{addr}/v1/forwardAuth"))
            .header("X-Forwarded-Method", "GET")
            .header("X-Forwarded-Uri", "/public/status")
            .send()
    };
    assert_eq!(forward_auth(running.http_addr).await.unwrap().status().as_u16(), 404);
    assert_eq!(forward_auth(edge).await.unwrap().status().as_u16(), 200);
    let mut main_check = AuthorizationClient::new(app.channel.clone());
    let refused = main_check.check(CheckRequest::default()).await.expect_err("no ext_authz on the gRPC listener");
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");

    // Forward-auth requests are counted by route and status, Check calls by gRPC method:
    // the scenario's 16 requests each (nginx asks nothing for the public route's), and
    // the one forward-auth above.
    let text = reqwest::get(format!("http://{}/metrics", running.http_addr)).await.unwrap().text().await.unwrap();
    let forward = metric_sum(&text, "keyward_http_requests_total{route=\"/v1/forwardAuth\"");
    let admitted = metric_sum(&text, "keyward_http_requests_total{route=\"/v1/forwardAuth\",status=\"200\"}");
    let refused = metric_sum(&text, "keyward_http_requests_total{route=\"/v1/forwardAuth\",status=\"401\"}");
    let checks: u64 = text
        .lines()
        .filter(|line| line.starts_with("keyward_grpc_requests_total{") && line.contains("Authorization/Check"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("http_requests") || line.contains("requests_total{method=\"envoy"))
        .collect();
    assert!(forward >= 16 && admitted >= 8 && refused >= 4 && checks >= 16, "{lines:#?}");

    if backend == Backend::Postgres {
        unreachable_database(&app, |asks| through_nginx(port, asks)).await;
    }
    nginx.kill().await.ok();
    app.stop().await;
}
both!(the_edge_on_its_own_listener);
