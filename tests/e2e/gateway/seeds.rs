//! The PSP and generic scoped-key surfaces as their seeds' clients send them: routes,
//! field sets, errors in each surface's own shape, and the seeds' own examples replayed.

use super::*;
const PSP_LIST_FIELDS: [&str; 9] = [
    "id",
    "keyMask",
    "name",
    "userCognitoSub",
    "creatorCognitoSub",
    "expiresAt",
    "createdAt",
    "status",
    "organisationName",
];
const PSP_CREATE_FIELDS: [&str; 9] =
    ["id", "keyMask", "name", "userCognitoSub", "creatorCognitoSub", "expiresAt", "createdAt", "status", "rawKey"];
const PSP_UPDATE_FIELDS: [&str; 8] =
    ["id", "keyMask", "name", "userCognitoSub", "creatorCognitoSub", "expiresAt", "createdAt", "status"];

async fn psp_app(backend: Backend, idp: &Signer, dir: &tempfile::TempDir) -> TestApp {
    let path = dir.path().join("jwks.json");
    write_jwks(&path, &[idp]);
    let jwks = path.to_str().unwrap().to_owned();
    spawn_with_jwks(backend, &jwks, Duration::from_secs(30)).await
}

async fn psp_routes_follow_the_seed(backend: Backend) {
    let idp = Signer::ec("ec-1");
    let dir = tempfile::tempdir().unwrap();
    let app = psp_app(backend, &idp, &dir).await;
    let rest = rest(&app);
    let alice = bearer(&idp.token("alice", &["Issuer_Admin"], "org-1"));
    let bob = bearer(&idp.token("bob", &["Verifier_Dev"], "org-1"));
    let carol = bearer(&idp.token("carol", &["Super_Dev"], "org-1"));
    let eve = bearer(&idp.token("eve", &["Viewer"], "org-1"));
    let auth = |token: &str| vec![("authorization", token.to_owned())];
    let send = |method: &'static str, path: String, token: &str, body: Option<&'static str>| {
        let (rest, headers) = (rest.clone(), auth(token));
        async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            rest.send(method, &path, &headers, body).await
        }
    };

    // POST, as the seed's example.
    let created = send("POST", PSP.into(), &alice, Some("{\n\"name\": \"text\"\n}")).await;
    assert_eq!(created.status, 200, "{:?}", created.body);
    assert_eq!(keys(&created.body), sorted(&PSP_CREATE_FIELDS));
    assert!(created.body["id"].is_i64());
    assert_eq!(
        (created.body["status"].clone(), created.body["userCognitoSub"].clone()),
        (json!("active"), json!("alice"))
    );
    assert_eq!(created.body["creatorCognitoSub"], "alice");
    assert_millis_utc(&created.body["createdAt"]);
    assert!(created.body["rawKey"].as_str().unwrap().starts_with("kw_live_"));
    let alices = created.body["id"].as_i64().unwrap();
    let bobs = send("POST", PSP.into(), &bob, Some(r#"{"name":"bob's"}"#)).await.body["id"].as_i64().unwrap();

    // GET: managers see their own, Super_Dev its organisation's.
    let list = send("GET", PSP.into(), &alice, None).await;
    assert_eq!(list.status, 200);
    let items = list.body.as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(keys(&items[0]), sorted(&PSP_LIST_FIELDS));
    assert_eq!((items[0]["id"].as_i64(), items[0]["organisationName"].clone()), (Some(alices), json!("org-1 Ltd")));
    assert!(items[0]["keyMask"].as_str().unwrap().len() > 4);
    assert!(items[0]["rawKey"].is_null(), "the secret is shown once");
    let org: BTreeSet<i64> = send("GET", PSP.into(), &carol, None)
        .await
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_i64().unwrap())
        .collect();
    assert_eq!(org, BTreeSet::from([alices, bobs]));

    // PATCH, as the seed's example; DELETE → 204 without a body.
    let patched = send("PATCH", format!("{PSP}/{alices}"), &alice, Some("{\n\"status\": \"inactive\"\n}")).await;
    assert_eq!(patched.status, 200, "{:?}", patched.body);
    assert_eq!(keys(&patched.body), sorted(&PSP_UPDATE_FIELDS));
    assert_eq!(patched.body["status"], "inactive");
    let patched = send("PATCH", format!("{PSP}/{alices}"), &carol, Some(r#"{"status":"active"}"#)).await;
    assert_eq!(patched.body["status"], "active", "Super_Dev updates its organisation's keys");

    let usage = send("GET", format!("{PSP}/usage"), &alice, None).await;
    assert_eq!((usage.status, usage.body.clone()), (200, json!({"used": 1, "limit": 100})));

    // The claims table, route by route.
    assert_psp_error(&send("POST", PSP.into(), &carol, Some(r#"{"name":"x"}"#)).await, 403, FORBIDDEN);
    for (method, path, body) in psp_routes(alices) {
        assert_psp_error(&send(method, path.clone(), &eve, body).await, 403, FORBIDDEN);
        assert_psp_error(&rest.send(method, &path, &[], body).await, 401, UNAUTHENTICATED);
        let stranger = bearer(&idp.sign(&{
            let mut claims = claims("mallory", &["Issuer_Admin"], "org-1");
            claims["iss"] = json!("https://unknown-issuer.test");
            claims
        }));
        assert_psp_error(&send(method, path.clone(), &stranger, body).await, 401, UNAUTHENTICATED);
    }
    assert_psp_error(
        &send("PATCH", format!("{PSP}/{alices}"), &bob, Some(r#"{"status":"active"}"#)).await,
        404,
        NOT_FOUND,
    );
    assert_psp_error(&send("DELETE", format!("{PSP}/{alices}"), &bob, None).await, 404, NOT_FOUND);
    assert_psp_error(&send("DELETE", format!("{PSP}/999999"), &alice, None).await, 404, NOT_FOUND);
    assert_psp_error(&send("DELETE", format!("{PSP}/not-a-number"), &alice, None).await, 404, NOT_FOUND);
    for body in ["{", r#"{"name": 5}"#, r#"{"title":"x"}"#, "[]", r#"{"name":""}"#] {
        assert_psp_error(&send("POST", PSP.into(), &alice, Some(body)).await, 400, INVALID);
    }
    for body in [r#"{"status":"paused"}"#, r#"{"status":true}"#, "{}", "nonsense"] {
        assert_psp_error(&send("PATCH", format!("{PSP}/{alices}"), &alice, Some(body)).await, 400, INVALID);
    }
    let big: &'static str = Box::leak(format!(r#"{{"name":"{}"}}"#, "x".repeat(65 * 1024)).into_boxed_str());
    let too_big = send("POST", PSP.into(), &alice, Some(big)).await;
    assert_eq!(too_big.status, 413);
    assert!(too_big.body["message"].is_string());

    let deleted = send("DELETE", format!("{PSP}/{bobs}"), &carol, None).await;
    assert_eq!(deleted.status, 204, "Super_Dev deletes its organisation's keys");
    let deleted = send("DELETE", format!("{PSP}/{alices}"), &alice, None).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(send("GET", PSP.into(), &alice, None).await.body, json!([]), "deleted keys are gone from the list");
    assert_eq!(send("GET", format!("{PSP}/usage"), &alice, None).await.body, json!({"used": 0, "limit": 100}));
    app.stop().await;
}
both!(psp_routes_follow_the_seed);

const INVALID: &str = "Invalid request body.";
const UNAUTHENTICATED: &str = "Invalid authentication credentials.";
const FORBIDDEN: &str = "User does not have a required claim to perform this operation.";
const NOT_FOUND: &str = "Api key not found.";

const SCOPED_FIELDS: [&str; 7] =
    ["key_id", "key_name", "key_scope", "organization_id", "key_mask", "status", "created_at"];

async fn scoped_keys_need_manage(backend: Backend) {
    let app = crate::helpers::spawn(backend).await;
    let rest = rest(&app);
    let admin = bearer(ADMIN_KEY);
    let post = |token: &str, body: &str| {
        let (rest, token, body) = (rest.clone(), token.to_owned(), body.to_owned());
        async move { rest.send("POST", "/api/v1/api-keys", &[("authorization", &token)], Some(&body)).await }
    };
    // The seed's example body, as written: scopes as a comma-separated string, the id as a string.
    let manager = post(&admin, r#"{ "key_name": "Backend API Key", "key_scope": "READ,CREATE,UPDATE,DELETE,MANAGE", "organization_id": "432"}"#).await;
    assert_eq!(manager.status, 201, "{:?}", manager.body);
    let mut fields = SCOPED_FIELDS.to_vec();
    fields.push("api_key");
    assert_eq!(keys(&manager.body), sorted(&fields));
    assert_eq!(manager.body["key_scope"], json!(["CREATE", "DELETE", "MANAGE", "READ", "UPDATE"]));
    assert_eq!(
        (manager.body["organization_id"].clone(), manager.body["status"].clone()),
        (json!(432), json!("active"))
    );
    assert_millis_utc(&manager.body["created_at"]);
    let manager_key = bearer(manager.body["api_key"].as_str().unwrap());

    let reader = post(&manager_key, r#"{"key_name":"reader","key_scope":["READ"],"organization_id":432}"#).await;
    assert_eq!(reader.status, 201, "a MANAGE key creates keys: {:?}", reader.body);
    let reader_id = reader.body["key_id"].as_i64().unwrap();
    let reader_key = bearer(reader.body["api_key"].as_str().unwrap());

    let listed = rest.send("GET", "/api/v1/api-keys", &[("authorization", &manager_key)], None).await;
    assert_eq!(listed.status, 200);
    let listed = listed.body.as_array().unwrap().clone();
    assert!(listed.iter().all(|k| keys(k) == sorted(&SCOPED_FIELDS)), "never the key value: {listed:?}");
    assert!(listed.iter().any(|k| k["key_id"] == json!(reader_id)));
    let fetched =
        rest.send("GET", &format!("/api/v1/api-keys/{reader_id}"), &[("authorization", &manager_key)], None).await;
    assert_eq!((fetched.status, keys(&fetched.body)), (200, sorted(&SCOPED_FIELDS)));
    assert_eq!(fetched.body["key_scope"], json!(["READ"]));

    // Without MANAGE: 403 in the surface's shape on every route.
    for (method, path, body) in [
        ("GET", "/api/v1/api-keys".to_owned(), None),
        ("POST", "/api/v1/api-keys".to_owned(), Some(r#"{"key_name":"x","key_scope":["READ"],"organization_id":1}"#)),
        ("GET", format!("/api/v1/api-keys/{reader_id}"), None),
        ("DELETE", format!("/api/v1/api-keys/{reader_id}"), None),
    ] {
        let answer = rest.send(method, &path, &[("authorization", &reader_key)], body).await;
        assert_eq!(answer.status, 403, "{method} {path}: {:?}", answer.body);
        assert_eq!(keys(&answer.body), sorted(&["error", "message"]));
        assert_eq!(answer.body["error"], "PERMISSION_DENIED");
        let anonymous = rest.send(method, &path, &[], body).await;
        assert_eq!((anonymous.status, anonymous.body["error"].clone()), (401, json!("UNAUTHENTICATED")));
    }
    // A key cannot mint a more powerful key.
    let (_, writer) = app.create_key("svc", &["keys:write"]).await;
    let escalate = post(&bearer(&writer), r#"{"key_name":"x","key_scope":["MANAGE"],"organization_id":1}"#).await;
    assert_eq!((escalate.status, escalate.body["error"].clone()), (403, json!("PERMISSION_DENIED")));

    for body in [
        "{",
        r#"{"key_name":"x","key_scope":["READ"]}"#,
        r#"{"key_name":"x","key_scope":["ROOT"],"organization_id":1}"#,
        r#"{"key_name":"x","key_scope":"READ,ROOT","organization_id":1}"#,
        r#"{"key_name":"x","key_scope":["READ"],"organization_id":"abc"}"#,
        r#"{"key_name":5,"key_scope":["READ"],"organization_id":1}"#,
    ] {
        let answer = post(&manager_key, body).await;
        assert_eq!((answer.status, answer.body["error"].clone()), (400, json!("INVALID_ARGUMENT")), "{body}");
        assert!(answer.body["message"].is_string());
    }
    let big = format!(r#"{{"key_name":"{}","key_scope":["READ"],"organization_id":1}}"#, "x".repeat(65 * 1024));
    assert_eq!(post(&manager_key, &big).await.status, 413);
    let (others, _) = app.create_key("someone-else", &[]).await;
    let path = format!("/api/v1/api-keys/{}", others.number);
    let other = rest.send("GET", &path, &[("authorization", &manager_key)], None).await;
    assert_eq!((other.status, &other.body["error"]), (404, &json!("NOT_FOUND")), "another owner's key is not found");
    let bad_id = rest.send("GET", "/api/v1/api-keys/abc", &[("authorization", &manager_key)], None).await;
    assert_eq!(bad_id.status, 400);
    let deleted =
        rest.send("DELETE", &format!("/api/v1/api-keys/{reader_id}"), &[("authorization", &manager_key)], None).await;
    assert_eq!(deleted.status, 204);
    let gone = rest.send("GET", "/api/v1/api-keys", &[("authorization", &reader_key)], None).await;
    assert_eq!(gone.status, 401, "a deleted key no longer authenticates");
    app.stop().await;
}
both!(scoped_keys_need_manage);

async fn seed_examples_replay(backend: Backend) {
    let idp = Signer::ec("ec-1");
    let dir = tempfile::tempdir().unwrap();
    let app = psp_app(backend, &idp, &dir).await;
    let rest = rest(&app);
    let token = idp.token("123e4567-e89b-12d3-a456-426614174000", &["Issuer_Dev"], "org-1");
    // Seed 000, each request as written, YOUR_SECRET_TOKEN filled in.
    let headers = |token: &str| {
        vec![
            ("Host", "{PORTAL_API_BASE_URL}".to_owned()),
            ("Authorization", format!("Bearer {token}")),
            ("Accept", "*/*".to_owned()),
        ]
    };
    let send = |method: &str, path: &str, body: Option<&str>| {
        let (rest, headers, method, path, body) =
            (rest.clone(), headers(&token), method.to_owned(), path.to_owned(), body.map(str::to_owned));
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().filter(|(n, _)| *n != "Host").map(|(n, v)| (*n, v.as_str())).collect();
            rest.send(&method, &path, &headers, body.as_deref()).await
        }
    };
    let created = send("POST", PSP, Some("{\n\"name\": \"text\"\n}")).await;
    assert_eq!((created.status, keys(&created.body)), (200, sorted(&PSP_CREATE_FIELDS)));
    let id = created.body["id"].as_i64().unwrap();
    let listed = send("GET", PSP, None).await;
    assert_eq!((listed.status, keys(&listed.body[0])), (200, sorted(&PSP_LIST_FIELDS)));
    let patched = send("PATCH", &format!("{PSP}/{id}"), Some("{\n\"status\": \"active\"\n}")).await;
    assert_eq!((patched.status, keys(&patched.body)), (200, sorted(&PSP_UPDATE_FIELDS)));
    let usage = send("GET", &format!("{PSP}/usage"), None).await;
    assert_eq!((usage.status, keys(&usage.body)), (200, sorted(&["used", "limit"])));
    assert!(usage.body["used"].is_i64() && usage.body["limit"].is_i64());
    let deleted = send("DELETE", &format!("{PSP}/{id}"), None).await;
    assert_eq!(deleted.status, 204);

    // Seed 002's body example, as written but for the "# Type" annotations.
    let admin = bearer(ADMIN_KEY);
    let body = r#"{ "key_name": "Backend API Key", "key_scope": "READ,CREATE,UPDATE,DELETE,MANAGE", "organization_id": "432"}"#;
    let created = rest.send("POST", "/api/v1/api-keys", &[("authorization", &admin)], Some(body)).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let key_id = created.body["key_id"].as_i64().unwrap();
    let manager = bearer(created.body["api_key"].as_str().unwrap());
    for (method, path, status) in [
        ("GET", "/api/v1/api-keys".to_owned(), 200),
        ("GET", format!("/api/v1/api-keys/{key_id}"), 200),
        ("DELETE", format!("/api/v1/api-keys/{key_id}"), 204),
    ] {
        assert_eq!(
            rest.send(method, &path, &[("authorization", &manager)], None).await.status,
            status,
            "{method} {path}"
        );
    }
    app.stop().await;
}
both!(seed_examples_replay);
