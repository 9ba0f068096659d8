//! The REST gateway over HTTP: the native transcoding of every google.api.http rule, the
//! PSP and generic scoped-key surfaces in their seeds' shapes, errors in each surface's
//! own shape, and the standalone gateway across an upstream outage.

use std::{collections::BTreeSet, time::Duration};

use prost_reflect::DescriptorPool;
use serde_json::{Value, json};

use crate::{
    helpers::{ADMIN_KEY, Backend, MASTER_KEY, TestApp, both, keyward_binary},
    jwt::{Signer, claims, spawn_with_jwks, write_jwks},
};

pub(crate) const PSP: &str = "/api/v1/psp/product-manager/customer-user-api-keys";

/// Every PSP route, with a valid body, acting on key `id`.
pub(crate) fn psp_routes(id: i64) -> [(&'static str, String, Option<&'static str>); 5] {
    [
        ("GET", PSP.to_owned(), None),
        ("POST", PSP.to_owned(), Some(r#"{"name":"x"}"#)),
        ("PATCH", format!("{PSP}/{id}"), Some(r#"{"status":"active"}"#)),
        ("DELETE", format!("{PSP}/{id}"), None),
        ("GET", format!("{PSP}/usage"), None),
    ]
}

/// A plain HTTP/1.1 client of one gateway.
#[derive(Clone)]
pub(crate) struct Rest {
    base: String,
    http: reqwest::Client,
}

/// What came back: status and JSON body (`Null` for an empty one).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Value,
    /// The `Allow` header, which a 405 must carry.
    pub(crate) allow: Option<String>,
}

impl Rest {
    pub(crate) fn new(addr: std::net::SocketAddr) -> Self {
        Self { base: format!("http://{addr}"), http: reqwest::Client::new() }
    }

    /// Sends a request; every answer but 204 must be JSON.
    pub(crate) async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Answer {
        let mut request = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        let response = request.send().await.expect("the gateway answers");
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let allow = response.headers().get("allow").map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        if status == 204 {
            assert!(text.is_empty(), "204 with a body: {text}");
            return Answer { status, body: Value::Null, allow };
        }
        assert!(content_type.starts_with("application/json"), "{method} {path}: {status} {content_type}: {text}");
        let body =
            serde_json::from_str(&text).unwrap_or_else(|err| panic!("{method} {path}: not JSON ({err}): {text}"));
        Answer { status, body, allow }
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The sorted keys of a JSON object.
fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> =
        value.as_object().unwrap_or_else(|| panic!("not an object: {value}")).keys().cloned().collect();
    keys.sort();
    keys
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    names.sort();
    names
}

/// RFC 3339 UTC with milliseconds, as the seeds print times.
#[track_caller]
fn assert_millis_utc(value: &Value) {
    let text = value.as_str().unwrap_or_else(|| panic!("not a time string: {value}"));
    assert_eq!(text.len(), 24, "{text}");
    assert!(text.ends_with('Z') && text.as_bytes()[19] == b'.', "{text}");
    chrono::DateTime::parse_from_rfc3339(text).unwrap();
}

fn rest(app: &TestApp) -> Rest {
    Rest::new(app.running().http_addr)
}

async fn every_native_rule_is_routed(backend: Backend) {
    let app = crate::helpers::spawn(backend).await;
    let rest = rest(&app);
    let pool = DescriptorPool::decode(keyward_proto::FILE_DESCRIPTOR_SET).unwrap();
    let rules = keyward_gateway::native::rules(&pool);
    assert!(rules.len() >= 15, "{} rules", rules.len());
    for rule in &rules {
        let mut path = rule.openapi_path();
        for variable in rule.variables() {
            path = path.replace(&format!("{{{}}}", keyward_gateway::native::short_name(&variable)), "1");
        }
        // Authentication comes first in every RPC: a routed call without credentials is a
        // 401 from the service, where an unrouted one would be a 404 or 405 from the gateway.
        let answer = rest.send(rule.method.as_str(), &path, &[], Some("{}")).await;
        assert_eq!(answer.status, 401, "{} {path} is not routed: {:?}", rule.method, answer.body);
        assert_eq!(answer.body["error"]["status"], "UNAUTHENTICATED");
        assert_eq!(answer.body["error"]["details"][0]["reason"], "UNAUTHENTICATED");
    }
    let routing = rest.send("GET", "/v1/nothing/here", &[], None).await;
    assert_eq!((routing.status, routing.body["error"]["status"].as_str()), (404, Some("NOT_FOUND")));
    let method = rest.send("PUT", "/v1/apiKeys", &[], None).await;
    assert_eq!((method.status, method.allow.as_deref()), (405, Some("GET, POST")));
    // A verb of its own is not the id of the rule without one.
    let verb =
        rest.send("PATCH", "/v1/webhookEndpoints/0190b4a4-6d8e-7c3a-9f1e-2b5c7d9e1f30:redeliver", &[], None).await;
    assert_eq!((verb.status, verb.allow.as_deref()), (405, Some("POST")));
    app.stop().await;
}
both!(every_native_rule_is_routed);

async fn native_api_speaks_proto3_json(backend: Backend) {
    let app = crate::helpers::spawn(backend).await;
    let rest = rest(&app);
    let auth = bearer(ADMIN_KEY);
    let admin = [("authorization", auth.as_str())];
    let created =
        rest.send("POST", "/v1/apiKeys", &admin, Some(r#"{"apiKey":{"name":"native","scopes":["keys:read"]}}"#)).await;
    assert_eq!(created.status, 200, "{:?}", created.body);
    let key = &created.body["apiKey"];
    let (id, secret) = (key["id"].as_str().unwrap().to_owned(), created.body["secret"].as_str().unwrap().to_owned());
    assert!(key["number"].is_string(), "int64 as a string in proto3 JSON");
    assert_eq!(key["status"], "API_KEY_STATUS_ACTIVE");
    assert!(key["createTime"].as_str().unwrap().ends_with('Z'));

    let got = rest.send("GET", &format!("/v1/apiKeys/{id}"), &admin, None).await;
    assert_eq!((got.status, &got.body["apiKey"]["name"]), (200, &json!("native")));
    let by_number = rest.send("GET", &format!("/v1/apiKeys/{}", key["number"].as_str().unwrap()), &admin, None).await;
    assert_eq!(by_number.body["apiKey"]["id"], json!(id), "a key is found by its number too");
    let patched = rest
        .send(
            "PATCH",
            &format!("/v1/apiKeys/{id}?updateMask=status,name"),
            &admin,
            Some(r#"{"status":"API_KEY_STATUS_INACTIVE","name":"renamed"}"#),
        )
        .await;
    assert_eq!(patched.status, 200, "{:?}", patched.body);
    assert_eq!(
        (&patched.body["apiKey"]["status"], &patched.body["apiKey"]["name"]),
        (&json!("API_KEY_STATUS_INACTIVE"), &json!("renamed"))
    );
    let verified = rest.send("POST", "/v1/apiKeys:verify", &admin, Some(&json!({"key": secret}).to_string())).await;
    // Unpopulated fields are emitted, as grpc-gateway's default marshaller does.
    assert_eq!(
        (verified.body.get("valid"), &verified.body["code"], &verified.body["remainingCredits"]),
        (Some(&json!(false)), &json!("VERIFICATION_CODE_INACTIVE"), &json!([]))
    );
    let rotated = rest.send("POST", &format!("/v1/apiKeys/{id}:rotate"), &admin, Some(r#"{"gracePeriod":"0s"}"#)).await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    assert!(rotated.body["secret"].as_str().unwrap().starts_with("kw_live_"));
    let listed = rest.send("GET", "/v1/apiKeys?pageSize=1&showRevoked=true", &admin, None).await;
    assert_eq!(listed.body["apiKeys"].as_array().unwrap().len(), 1);
    assert!(listed.body["nextPageToken"].is_string());
    let deleted = rest.send("DELETE", &format!("/v1/apiKeys/{id}"), &admin, None).await;
    assert_eq!(deleted.body["apiKey"]["status"], "API_KEY_STATUS_REVOKED");
    let undeleted = rest.send("POST", &format!("/v1/apiKeys/{id}:undelete"), &admin, Some("{}")).await;
    assert_eq!(undeleted.body["apiKey"]["status"], "API_KEY_STATUS_ACTIVE");
    let quota = rest.send("GET", "/v1/keyQuota?owner=bootstrap", &admin, None).await;
    assert_eq!(quota.body["limit"], "100");
    let caller = rest.send("GET", "/v1/callerApiKey", &admin, None).await;
    assert_eq!(caller.body["apiKey"]["scopes"], json!(["admin"]));
    let provider = rest
        .send(
            "POST",
            "/v1/rpcProviderKeys",
            &admin,
            Some(r#"{"rpcProviderKey":{"network":"Preprod","provider":"Blockfrost","secret":"bf_secret_1"}}"#),
        )
        .await;
    assert_eq!(provider.status, 200, "{:?}", provider.body);
    let provider_id = provider.body["rpcProviderKey"]["id"].as_str().unwrap();
    let revealed = rest.send("GET", &format!("/v1/rpcProviderKeys/{provider_id}?reveal=true"), &admin, None).await;
    assert_eq!(revealed.body["rpcProviderKey"]["secret"], "bf_secret_1");

    // Errors: Google's JSON error model with the grpc-gateway status and the details.
    let missing = rest.send("GET", &format!("/v1/apiKeys/{}", uuid::Uuid::now_v7()), &admin, None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(keys(&missing.body["error"]), sorted(&["code", "message", "status", "details"]));
    assert_eq!(
        (missing.body["error"]["code"].clone(), missing.body["error"]["status"].clone()),
        (json!(404), json!("NOT_FOUND"))
    );
    assert_eq!(missing.body["error"]["details"][0]["@type"], "type.googleapis.com/google.rpc.ErrorInfo");
    assert_eq!(missing.body["error"]["details"][0]["reason"], "API_KEY_NOT_FOUND");
    let invalid = rest.send("POST", "/v1/apiKeys", &admin, Some(r#"{"apiKey":{"name":""}}"#)).await;
    assert_eq!((invalid.status, invalid.body["error"]["status"].clone()), (400, json!("INVALID_ARGUMENT")));
    assert_eq!(invalid.body["error"]["details"][1]["fieldViolations"][0]["field"], "api_key.name");
    for (body, what) in [
        ("{not json", "malformed JSON"),
        (r#"{"apiKey":{"name":5}}"#, "a wrong type"),
        (r#"{"apiKey":{"name":"x","status":"API_KEY_STATUS_NOPE"}}"#, "an unknown enum"),
        (r#"{"apiKey":{"name":"x"},"nope":1}"#, "an unknown field"),
        ("[]", "not an object"),
    ] {
        let answer = rest.send("POST", "/v1/apiKeys", &admin, Some(body)).await;
        assert_eq!((answer.status, answer.body["error"]["status"].clone()), (400, json!("INVALID_ARGUMENT")), "{what}");
    }
    let big = format!(r#"{{"apiKey":{{"name":"{}"}}}}"#, "x".repeat(70 * 1024));
    assert_eq!(rest.send("POST", "/v1/apiKeys", &admin, Some(&big)).await.status, 413);
    let bad_query = rest.send("GET", "/v1/apiKeys?pageSize=lots", &admin, None).await;
    assert_eq!(bad_query.status, 400);
    app.stop().await;
}
both!(native_api_speaks_proto3_json);

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

#[track_caller]
fn assert_psp_error(answer: &Answer, status: u16, message: &str) {
    assert_eq!(answer.status, status, "{:?}", answer.body);
    assert_eq!(answer.body, json!({"message": message}));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_every_route() {
    let app = crate::helpers::spawn(Backend::Sqlite).await;
    let document = rest(&app).send("GET", "/openapi.json", &[], None).await;
    assert_eq!(document.status, 200);
    assert!(document.body["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = document.body["paths"].as_object().unwrap();
    for path in [
        PSP.to_owned(),
        format!("{PSP}/usage"),
        format!("{PSP}/{{apiKeyId}}"),
        "/api/v1/api-keys".to_owned(),
        "/api/v1/api-keys/{key_id}".to_owned(),
        "/v1/apiKeys".to_owned(),
        "/v1/apiKeys/{id}:rotate".to_owned(),
        "/v1/apiKeys:verify".to_owned(),
        "/v1/rpcProviderKeys/{id}".to_owned(),
        "/api/v1/api-key".to_owned(),
        "/api/v1/api-key-status".to_owned(),
        "/api/v1/rpc-api-keys".to_owned(),
    ] {
        assert!(paths.contains_key(&path), "{path} missing from {:?}", paths.keys().collect::<Vec<_>>());
    }
    // Generators name functions after operationIds: each one once.
    let ids: Vec<&str> = paths
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .map(|op| op["operationId"].as_str().unwrap())
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "repeated operationIds in {ids:?}");
    assert!(unique.contains("psp_list") && unique.contains("ApiKeyService_CreateApiKey"), "{ids:?}");
    app.stop().await;
}

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
