//! Trailing slashes, unknown paths and CORS, as a browser dashboard meets them.

use super::*;

/// Every surface answers with or without a trailing slash, and an unknown path in its own
/// error shape; without the setting, no CORS header is ever answered.
async fn trailing_slashes_unknown_paths_and_no_cors_by_default(backend: Backend) {
    let app = spawn(backend).await;
    let addr = app.running().http_addr;
    let rest = Rest::new(addr);
    let bearer = format!("Bearer {ADMIN_KEY}");
    let auth = [("authorization", bearer.as_str()), ("token", ADMIN_KEY)];
    for path in [
        "/api/v1/api-key-status",
        "/api/v1/api-key",
        "/api/v1/rpc-api-keys",
        "/api/v1/api-keys",
        "/v1/apiKeys",
        "/openapi.json",
    ] {
        for path in [path.to_owned(), format!("{path}/")] {
            let answer = rest.send("GET", &path, &auth, None).await;
            assert_eq!(answer.status, 200, "{path}: {:?}", answer.body);
        }
    }
    let psp = rest.send("GET", "/api/v1/psp/product-manager/customer-user-api-keys/", &auth, None).await;
    assert_ne!(psp.status, 404, "{:?}", psp.body);

    let masumi = rest.send("GET", "/api/v1/no-such-route/", &auth, None).await;
    assert_eq!(masumi.status, 404);
    assert_eq!(masumi.body, json!({"status": "error", "error": {"message": "Not found"}}));
    let psp = rest.send("GET", "/api/v1/psp/product-manager/customer-user-api-keys/a/b", &auth, None).await;
    assert_eq!((psp.status, keys(&psp.body)), (404, sorted(&["message"])));
    let scoped = rest.send("GET", "/api/v1/api-keys/a/b", &auth, None).await;
    assert_eq!(scoped.status, 404);
    assert!(scoped.body.get("error").is_some() || scoped.body.get("code").is_some(), "{:?}", scoped.body);
    let native = rest.send("GET", "/nowhere", &auth, None).await;
    assert_eq!(native.status, 404);
    assert!(native.body.is_object(), "{:?}", native.body);

    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("http://{addr}{KEY}"))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "PATCH")
        .send()
        .await
        .unwrap();
    assert!(preflight.headers().keys().all(|name| !name.as_str().starts_with("access-control-")));
    let get = reqwest::Client::new()
        .get(format!("http://{addr}{STATUS}"))
        .header("origin", ORIGIN)
        .header("token", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert!(get.headers().keys().all(|name| !name.as_str().starts_with("access-control-")));
    app.stop().await;
}
both!(trailing_slashes_unknown_paths_and_no_cors_by_default);

/// `*` allows any origin; an origin not in the list gets no CORS headers.
async fn cors_origins_as_configured(backend: Backend) {
    let app = spawn_with_cors(backend).await;
    let addr = app.running().http_addr;
    let other = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("http://{addr}{KEY}"))
        .header("origin", "https://elsewhere.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&other, "access-control-allow-origin"), None);
    let get = reqwest::Client::new()
        .get(format!("http://{addr}{STATUS}"))
        .header("origin", ORIGIN)
        .header("token", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&get, "access-control-allow-origin").as_deref(), Some(ORIGIN));
    app.stop().await;

    let app = spawn_with(backend, |config| config.rest.cors_allowed_origins = CorsOrigins::Any).await;
    let dashboard = Dashboard::new(&app, ADMIN_KEY);
    let preflight = dashboard.preflight("DELETE", KEY).await;
    assert_eq!(header(&preflight, "access-control-allow-origin").as_deref(), Some("*"));
    app.stop().await;
}
both!(cors_origins_as_configured);
