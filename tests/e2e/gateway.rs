//! The REST gateway over HTTP: the native transcoding of every google.api.http rule, the
//! PSP and generic scoped-key surfaces in their seeds' shapes, errors in each surface's
//! own shape, and the standalone gateway across an upstream outage.

mod seeds;
mod standalone;

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

/// An error of the PSP surface: its status and its one-field body.
#[track_caller]
fn assert_psp_error(answer: &Answer, status: u16, message: &str) {
    assert_eq!(answer.status, status, "{:?}", answer.body);
    assert_eq!(answer.body, json!({"message": message}));
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
