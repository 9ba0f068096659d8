//! The routes file: refused at start with its line, reloaded when it changes, and credits
//! and rate limits through the edge exact under concurrency.

use super::*;

#[tokio::test]
async fn a_bad_routes_file_refuses_to_start_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.toml");
    std::fs::write(&routes, "[[routes]]\npath = \"/a\"\n\n[[routes]]\npath = \"b/{id}\"\n").unwrap();
    let refused =
        crate::helpers::try_start(|config| config.edge.edge_routes = Some(routes)).await.expect_err("refused");
    assert!(
        refused.contains("KEYWARD_EDGE_ROUTES") && refused.contains("line 5") && refused.contains("must start with /"),
        "{refused}"
    );
}

/// The status `/v1/forwardAuth` answers for a GET of `path`, asked directly.
async fn forward_auth_status(http: std::net::SocketAddr, path: &str) -> u16 {
    let response = reqwest::Client::new()
        .get(format!("http://{http}/v1/forwardAuth"))
        .header("X-Forwarded-Method", "GET")
        .header("X-Forwarded-Uri", path)
        .send()
        .await
        .expect("forward-auth answers");
    response.status().as_u16()
}

#[tokio::test]
async fn routes_reload_when_the_file_changes_and_a_bad_file_keeps_the_rules_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.toml");
    std::fs::write(&routes, "[[routes]]\npath = \"/a\"\npublic = true\n").unwrap();
    let app = spawn_with(Backend::Sqlite, |config| config.edge.edge_routes = Some(routes.clone())).await;
    let http = app.running().http_addr;
    assert_eq!((forward_auth_status(http, "/a").await, forward_auth_status(http, "/bb").await), (200, 403));

    std::fs::write(&routes, "[[routes]]\npath = \"/bb\"\npublic = true\n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while forward_auth_status(http, "/bb").await != 200 {
        assert!(std::time::Instant::now() < deadline, "the changed file was not read within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(forward_auth_status(http, "/a").await, 403, "the old rules are gone");

    std::fs::write(&routes, "[[routes]]\npath = \"no slash\"\npublic = true\n").unwrap();
    // Past two polls of the file: the bad file was seen and refused.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(forward_auth_status(http, "/bb").await, 200, "a bad file keeps the rules in force");
    app.stop().await;
}

/// Statuses of `count` concurrent forward-auth GETs of `path` with `secret`.
async fn concurrent_statuses(http: std::net::SocketAddr, path: &'static str, secret: &str, count: usize) -> Vec<u16> {
    let client = reqwest::Client::new();
    let calls = (0..count).map(|_| {
        let request = client
            .get(format!("http://{http}/v1/forwardAuth"))
            .header("X-Forwarded-Method", "GET")
            .header("X-Forwarded-Uri", path)
            .bearer_auth(secret);
        async move { request.send().await.expect("forward-auth answers").status().as_u16() }
    });
    let mut statuses = futures::future::join_all(calls).await;
    statuses.sort_unstable();
    statuses
}

async fn credits_and_rate_limits_at_the_edge_are_exact_under_concurrency(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = edge_app(backend, dir.path()).await;
    let http = app.running().http_addr;
    let (metered, metered_secret) = create(&app, "payer", &["documents.read"], |key| {
        key.usage_limited = true;
        key.credits = vec![v1::CreditAmount { unit: String::new(), amount: 5 }];
    })
    .await;
    let (_, limited_secret) = create(&app, "limited", &[], |key| {
        key.rate_limits = vec![v1::RateLimit {
            name: "edge".into(),
            limit: 3,
            period: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
            burst: None,
            auto_apply: false,
        }];
    })
    .await;
    let (metered_statuses, limited_statuses) = tokio::join!(
        concurrent_statuses(http, "/v1/metered", &metered_secret, 20),
        concurrent_statuses(http, "/v1/limited", &limited_secret, 20),
    );
    assert_eq!(metered_statuses, [[200; 5].as_slice(), &[402; 15]].concat(), "five credits, five requests");
    assert_eq!(limited_statuses, [[200; 3].as_slice(), &[429; 17]].concat(), "a limit of three, three requests");
    let balances = v1::GetCreditBalancesRequest { api_key_id: metered.id.clone() };
    let balances = CreditServiceClient::new(app.channel.clone()).get_credit_balances(admin(balances)).await;
    let balances = balances.expect("balances").into_inner();
    assert!(balances.balances.iter().all(|credit| credit.amount == 0), "{balances:?}");
    app.stop().await;
}
both!(credits_and_rate_limits_at_the_edge_are_exact_under_concurrency);
