//! The Masumi payment-service surface (seed `001`) over HTTP: the seed's shapes route by
//! route, credits (create, top up, take away, refused changes that change nothing),
//! importing a `token`, Read/ReadAndPay/Admin keys against every route, inclusive list
//! cursors, and a replay of every request example of the seed as written.

mod replay;

use serde_json::{Value, json};

use crate::{
    gateway::{Answer, Rest},
    helpers::{ADMIN_KEY, Backend, TestApp, both, spawn},
};

const KEY: &str = "/api/v1/api-key";
const STATUS: &str = "/api/v1/api-key-status";
const RPC: &str = "/api/v1/rpc-api-keys";

/// A key as every route answers it (with `deletedAt` once revoked): the union of the
/// fields of both Masumi contract eras, each in its own spelling.
pub(crate) const KEY_FIELDS: [&str; 14] = [
    "id",
    "token",
    "permission",
    "canRead",
    "canPay",
    "canAdmin",
    "usageLimited",
    "networkLimit",
    "NetworkLimit",
    "ChainIdLimit",
    "RemainingUsageCredits",
    "status",
    "walletScopeEnabled",
    "WalletScopes",
];
const CHANGED_FIELDS: [&str; 14] = KEY_FIELDS;
const STATUS_FIELDS: [&str; 14] = KEY_FIELDS;
const LISTED_FIELDS: [&str; 14] = KEY_FIELDS;
/// An entry of `data.RpcProviderKeys`.
const RPC_FIELDS: [&str; 6] = ["network", "id", "rpcProviderApiKey", "rpcProvider", "createdAt", "updatedAt"];

pub(crate) fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> =
        value.as_object().unwrap_or_else(|| panic!("not an object: {value}")).keys().cloned().collect();
    keys.sort();
    keys
}

pub(crate) fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    names.sort();
    names
}

/// A success: `{"status": "success", "data": …}` and nothing else; returns `data`.
#[track_caller]
pub(crate) fn success(answer: &Answer) -> &Value {
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(keys(&answer.body), sorted(&["status", "data"]), "{:?}", answer.body);
    assert_eq!(answer.body["status"], "success");
    &answer.body["data"]
}

/// The RPC provider key answer: the list at the top level (2025-12) and in `data` (2026-07).
#[track_caller]
pub(crate) fn rpc_success(answer: &Answer) -> &Value {
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(keys(&answer.body), sorted(&["status", "data", "RpcProviderKeys"]), "{:?}", answer.body);
    assert_eq!(answer.body["status"], "success");
    assert_eq!(answer.body["data"]["RpcProviderKeys"], answer.body["RpcProviderKeys"]);
    &answer.body["data"]
}

/// An error in Masumi's envelope with `status`; returns the message.
#[track_caller]
pub(crate) fn failure(answer: &Answer, status: u16) -> String {
    assert_eq!(answer.status, status, "{:?}", answer.body);
    assert_eq!(keys(&answer.body), sorted(&["status", "error"]), "{:?}", answer.body);
    assert_eq!(answer.body["status"], "error");
    assert_eq!(keys(&answer.body["error"]), sorted(&["message"]));
    let message = answer.body["error"]["message"].as_str().expect("a message string").to_owned();
    assert!(!message.is_empty());
    message
}

/// The types the seed's examples show, field by field.
#[track_caller]
pub(crate) fn assert_key_types(data: &Value) {
    for field in ["id", "token", "permission", "status"] {
        if let Some(value) = data.get(field) {
            assert!(value.is_string(), "{field} is a string: {data}");
        }
    }
    assert!(["Read", "ReadAndPay", "Admin"].contains(&data["permission"].as_str().unwrap()), "{data}");
    assert!(["Active", "Revoked"].contains(&data["status"].as_str().unwrap()), "the contract's enum only: {data}");
    assert!(data["usageLimited"].is_boolean(), "{data}");
    let networks = data["networkLimit"].as_array().expect("networkLimit is an array");
    assert!(networks.iter().all(|n| n == "Preprod" || n == "Mainnet"), "{data}");
    assert_eq!(data["networkLimit"], data["NetworkLimit"], "both spellings agree");
    for flag in ["canRead", "canPay", "canAdmin", "walletScopeEnabled"] {
        assert!(data[flag].is_boolean(), "{flag}: {data}");
    }
    assert!(data["ChainIdLimit"].is_array() && data["WalletScopes"].is_array(), "{data}");
    let token = data["token"].as_str().unwrap();
    assert!(!token.is_empty(), "{data}");
    if let Some(credits) = data.get("RemainingUsageCredits") {
        for credit in credits.as_array().expect("RemainingUsageCredits is an array") {
            assert_eq!(keys(credit), sorted(&["unit", "amount"]));
            assert!(
                credit["unit"].is_string() && credit["amount"].as_str().unwrap().parse::<i64>().is_ok(),
                "{credit}"
            );
        }
    }
}

struct Masumi {
    rest: Rest,
}

impl Masumi {
    fn new(app: &TestApp) -> Self {
        Self { rest: Rest::new(app.running().http_addr) }
    }

    async fn send(&self, method: &str, path: &str, token: &str, body: Option<&Value>) -> Answer {
        let body = body.map(Value::to_string);
        self.rest.send(method, path, &[("token", token), ("accept", "*/*")], body.as_deref()).await
    }

    async fn create(&self, body: Value) -> (String, String) {
        let created = self.send("POST", KEY, ADMIN_KEY, Some(&body)).await;
        let data = success(&created);
        (data["id"].as_str().unwrap().to_owned(), data["token"].as_str().unwrap().to_owned())
    }

    async fn patch(&self, body: Value) -> Answer {
        self.send("PATCH", KEY, ADMIN_KEY, Some(&body)).await
    }

    /// `RemainingUsageCredits` of the key `token` authenticates, as `unit → amount`.
    async fn balances(&self, token: &str) -> Value {
        let status = self.send("GET", STATUS, token, None).await;
        let credits = success(&status)["RemainingUsageCredits"].as_array().unwrap().clone();
        credits.iter().map(|c| (c["unit"].as_str().unwrap().to_owned(), c["amount"].clone())).collect()
    }
}

async fn masumi_routes_follow_the_seed(backend: Backend) {
    let app = spawn(backend).await;
    let masumi = Masumi::new(&app);

    // POST: `token` is the raw key, this once; the shape is the seed's.
    let body = json!({"usageLimited": "true", "UsageCredits": [{"unit": "", "amount": "10000000"}], "permission": "ReadAndPay"});
    let created = masumi.send("POST", KEY, ADMIN_KEY, Some(&body)).await;
    let data = success(&created).clone();
    assert_eq!(keys(&data), sorted(&CHANGED_FIELDS));
    assert_key_types(&data);
    assert_eq!((data["permission"].clone(), data["usageLimited"].clone()), (json!("ReadAndPay"), json!(true)));
    assert_eq!(
        (data["status"].clone(), data["networkLimit"].clone()),
        (json!("Active"), json!(["Mainnet", "Preprod"]))
    );
    let (id, secret) = (data["id"].as_str().unwrap().to_owned(), data["token"].as_str().unwrap().to_owned());
    assert!(secret.starts_with("kw_live_"), "{secret}");

    // GET /api-key-status: the caller, with its balances; the token is the mask.
    let status = masumi.send("GET", STATUS, &secret, None).await;
    let data = success(&status);
    assert_eq!(keys(data), sorted(&STATUS_FIELDS));
    assert_key_types(data);
    assert_eq!(data["RemainingUsageCredits"], json!([{"unit": "", "amount": "10000000"}]));
    assert_ne!(data["token"], json!(secret), "outside creation the token is the mask");
    let admin_status = masumi.send("GET", STATUS, ADMIN_KEY, None).await;
    assert_eq!(success(&admin_status)["RemainingUsageCredits"], json!([]));

    // GET /api-key: `ApiKeys`, each with its balances.
    let list = masumi.send("GET", &format!("{KEY}?limit=100"), ADMIN_KEY, None).await;
    let data = success(&list);
    assert_eq!(keys(data), sorted(&["ApiKeys"]));
    let listed = data["ApiKeys"].as_array().unwrap();
    assert!(listed.len() >= 2);
    for key in listed {
        assert_eq!(keys(key), sorted(&LISTED_FIELDS));
        assert_key_types(key);
    }
    let mine = listed.iter().find(|k| k["id"] == json!(id)).expect("the new key is listed");
    assert_eq!(mine["RemainingUsageCredits"], json!([{"unit": "", "amount": "10000000"}]));
    assert_ne!(mine["token"], json!(secret));

    // PATCH: top up (two units at once), take away, as one adjustment each.
    let topped = masumi
        .patch(json!({"id": id, "UsageCreditsToAddOrRemove": [{"unit": "", "amount": "5"}, {"unit": "usdm", "amount": "7"}]}))
        .await;
    let data = success(&topped);
    assert_eq!(keys(data), sorted(&CHANGED_FIELDS));
    assert_key_types(data);
    assert_ne!(data["token"], json!(secret));
    assert_eq!(masumi.balances(&secret).await, json!({"": "10000005", "usdm": "7"}));
    let taken = masumi.patch(json!({"id": id, "UsageCreditsToAddOrRemove": [{"unit": "", "amount": "-5"}]})).await;
    success(&taken);
    assert_eq!(masumi.balances(&secret).await, json!({"": "10000000", "usdm": "7"}));

    // Too much taken away in one unit: 400, and the other unit is not changed either.
    let too_much = masumi
        .patch(json!({"id": id, "UsageCreditsToAddOrRemove": [{"unit": "", "amount": "-1"}, {"unit": "usdm", "amount": "-8"}]}))
        .await;
    let message = failure(&too_much, 400);
    assert!(message.contains("too few") && message.contains("nothing was changed"), "{message}");
    assert_eq!(masumi.balances(&secret).await, json!({"": "10000000", "usdm": "7"}));
    // … nor anything else the PATCH asked for.
    let mixed = masumi
        .patch(
            json!({"id": id, "usageLimited": false, "UsageCreditsToAddOrRemove": [{"unit": "usdm", "amount": "-8"}]}),
        )
        .await;
    failure(&mixed, 400);
    assert_eq!(success(&masumi.send("GET", STATUS, &secret, None).await)["usageLimited"], true);

    // Amounts that are not decimal integers within 64 bits: 400, nothing changed.
    for amount in ["ten", "1.5", "", "+5", " 5", "1e6", "99999999999999999999", "--1", "-"] {
        let answer =
            masumi.patch(json!({"id": id, "UsageCreditsToAddOrRemove": [{"unit": "", "amount": amount}]})).await;
        assert!(failure(&answer, 400).contains("amount"), "{amount:?}");
        let answer =
            masumi.send("POST", KEY, ADMIN_KEY, Some(&json!({"UsageCredits": [{"unit": "", "amount": amount}]}))).await;
        failure(&answer, 400);
    }
    let numeric = masumi.patch(json!({"id": id, "UsageCreditsToAddOrRemove": [{"unit": "", "amount": 5}]})).await;
    failure(&numeric, 400);
    let negative =
        masumi.send("POST", KEY, ADMIN_KEY, Some(&json!({"UsageCredits": [{"unit": "", "amount": "-1"}]}))).await;
    failure(&negative, 400);
    // UsageCredits is required in both eras, as Masumi's schemas say.
    for body in [json!({}), json!({"permission": "Read"}), json!({"canRead": true, "usageLimited": "false"})] {
        let answer = masumi.send("POST", KEY, ADMIN_KEY, Some(&body)).await;
        assert!(failure(&answer, 400).contains("UsageCredits"), "{body}");
    }
    let empty = masumi.rest.send("POST", KEY, &[("token", ADMIN_KEY)], None).await;
    failure(&empty, 400);
    assert_eq!(masumi.balances(&secret).await, json!({"": "10000000", "usdm": "7"}));
    let count = success(&masumi.send("GET", &format!("{KEY}?limit=100"), ADMIN_KEY, None).await)["ApiKeys"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(count, listed.len(), "refused creations create nothing");

    // The other fields.
    let patched = masumi.patch(json!({"id": id, "usageLimited": false, "networkLimit": ["Preprod"]})).await;
    let data = success(&patched);
    assert_eq!(
        (data["usageLimited"].clone(), data["status"].clone(), data["networkLimit"].clone()),
        (json!(false), json!("Active"), json!(["Preprod"]))
    );
    let patched = masumi.patch(json!({"id": id, "status": "Active", "usageLimited": "TRUE"})).await;
    assert_eq!(
        (success(&patched)["status"].clone(), patched.body["data"]["usageLimited"].clone()),
        (json!("Active"), json!(true))
    );

    // `token` imports a caller-chosen key; the old one stops working, the answer shows the mask.
    let (_, other_secret) = masumi.create(json!({"UsageCredits": []})).await;
    let ledger = app.count_rows("credit_transactions").await;
    let taken = masumi
        .patch(json!({"id": id, "token": other_secret, "usageLimited": false,
            "UsageCreditsToAddOrRemove": [{"unit": "", "amount": "3"}]}))
        .await;
    failure(&taken, 409);
    // One transaction: nothing of the PATCH happened, so there is nothing to undo either.
    assert_eq!(masumi.balances(&secret).await, json!({"": "10000000", "usdm": "7"}), "no adjustment");
    assert_eq!(app.count_rows("credit_transactions").await, ledger, "no ledger entry, no compensating one");
    let kept = masumi.send("GET", STATUS, &secret, None).await;
    assert_eq!(success(&kept)["usageLimited"], true, "token and usageLimited kept");
    for token in ["too_short_14ch", "with a space in it", &"x".repeat(551)] {
        let answer = masumi.patch(json!({"id": id, "token": token})).await;
        assert!(failure(&answer, 400).contains("token"), "{token}");
    }
    assert_eq!(success(&masumi.send("GET", STATUS, &secret, None).await)["status"], "Active");
    let imported = "masumi_payment_api_key_secret_chosen";
    let rotated = masumi
        .patch(json!({"id": id, "token": imported, "UsageCreditsToAddOrRemove": [{"unit": "usdm", "amount": "-7"}]}))
        .await;
    let data = success(&rotated);
    assert_eq!(keys(data), sorted(&CHANGED_FIELDS));
    assert!(data["token"].as_str().unwrap().starts_with("*****osen~"), "the handle, never the secret: {data}");
    failure(&masumi.send("GET", STATUS, &secret, None).await, 401);
    assert_eq!(masumi.balances(imported).await, json!({"": "10000000"}), "a unit at zero is gone");

    // DELETE: revoked for good.
    let deleted = masumi.send("DELETE", KEY, ADMIN_KEY, Some(&json!({"id": id}))).await;
    let data = success(&deleted).clone();
    let mut fields = CHANGED_FIELDS.to_vec();
    fields.push("deletedAt");
    assert_eq!(keys(&data), sorted(&fields));
    assert_key_types(&data);
    assert_eq!(data["status"], "Revoked");
    let again = masumi.send("DELETE", KEY, ADMIN_KEY, Some(&json!({"id": id}))).await;
    assert_eq!(success(&again)["deletedAt"], data["deletedAt"], "deleting a revoked key answers it, 200");
    assert!(chrono::DateTime::parse_from_rfc3339(data["deletedAt"].as_str().unwrap()).is_ok());
    failure(&masumi.send("GET", STATUS, imported, None).await, 401);
    for body in [
        json!({"id": id, "UsageCreditsToAddOrRemove": [{"unit": "", "amount": "1"}]}),
        json!({"id": id, "token": "another_chosen_secret_1"}),
    ] {
        let answer = masumi.patch(body.clone()).await;
        assert!(failure(&answer, 400).contains("revoked"), "{body}");
    }
    failure(&masumi.send("GET", STATUS, imported, None).await, 401);
    let listed = masumi.send("GET", &format!("{KEY}?limit=100"), ADMIN_KEY, None).await;
    let revoked =
        success(&listed)["ApiKeys"].as_array().unwrap().iter().find(|k| k["id"] == json!(id)).unwrap().clone();
    assert_eq!(
        (revoked["status"].clone(), revoked["RemainingUsageCredits"].clone()),
        (json!("Revoked"), json!([{"unit": "", "amount": "10000000"}]))
    );

    // Malformed bodies and values outside the contract's enums; unknown fields are ignored.
    for body in
        ["{", "[]", r#"{"id": 5}"#, r#"{"id": "x", "status": "Paused"}"#, r#"{"id": "x", "status": "Inactive"}"#]
    {
        let answer = masumi.rest.send("PATCH", KEY, &[("token", ADMIN_KEY)], Some(body)).await;
        failure(&answer, 400);
    }
    for body in [r#"{"id": "x", "nope": 1}"#, r#"{"id":"unique_cuid_v2_of_entry","status":"Revoked"}"#] {
        let answer = masumi.rest.send("PATCH", KEY, &[("token", ADMIN_KEY)], Some(body)).await;
        assert_eq!(failure(&answer, 404), "API key not found", "{body}");
    }
    let missing = masumi.patch(json!({"id": uuid::Uuid::now_v7().to_string(), "status": "Active"})).await;
    failure(&missing, 404);
    app.stop().await;
}
both!(masumi_routes_follow_the_seed);

async fn masumi_permissions_route_by_route(backend: Backend) {
    let app = spawn(backend).await;
    let masumi = Masumi::new(&app);
    let (target, _) = masumi.create(json!({"UsageCredits": [{"unit": "", "amount": "100"}]})).await;
    let mut tokens = Vec::new();
    for permission in ["Read", "ReadAndPay", "Admin"] {
        let body = json!({"permission": permission, "UsageCredits": []});
        let created = masumi.send("POST", KEY, ADMIN_KEY, Some(&body)).await;
        assert_eq!(success(&created)["permission"], permission);
        tokens.push((permission, created.body["data"]["token"].as_str().unwrap().to_owned()));
    }
    let (victim, _) = masumi.create(json!({"UsageCredits": []})).await;
    for (permission, token) in &tokens {
        let status = masumi.send("GET", STATUS, token, None).await;
        assert_eq!(success(&status)["permission"], *permission, "every key reads its own status");
        let admin = *permission == "Admin";
        let routes: [(&str, &str, Option<Value>); 5] = [
            ("GET", KEY, None),
            ("POST", KEY, Some(json!({"permission": "Read", "UsageCredits": []}))),
            ("PATCH", KEY, Some(json!({"id": target, "UsageCreditsToAddOrRemove": [{"unit": "", "amount": "1"}]}))),
            ("DELETE", KEY, Some(json!({"id": victim}))),
            ("GET", RPC, None),
        ];
        for (method, path, body) in routes {
            let answer = masumi.send(method, path, token, body.as_ref()).await;
            if admin && path == RPC {
                rpc_success(&answer);
            } else if admin {
                success(&answer);
            } else {
                let message = failure(&answer, 401);
                assert_eq!(message, "Unauthorized, admin access required", "{permission} {method} {path}");
            }
        }
    }
    // Read and ReadAndPay changed nothing: only the Admin's one credit was added.
    let list = masumi.send("GET", &format!("{KEY}?limit=100"), ADMIN_KEY, None).await;
    let target_key =
        success(&list)["ApiKeys"].as_array().unwrap().iter().find(|k| k["id"] == json!(target)).unwrap().clone();
    assert_eq!(target_key["RemainingUsageCredits"], json!([{"unit": "", "amount": "101"}]));
    // No key, a wrong key: 401 in the envelope on every route.
    for (method, path) in [("GET", STATUS), ("GET", KEY), ("POST", KEY), ("PATCH", KEY), ("DELETE", KEY), ("GET", RPC)]
    {
        let body = match method {
            "POST" => Some(json!({"permission": "Admin", "UsageCredits": []}).to_string()),
            "PATCH" | "DELETE" => Some(json!({"id": target}).to_string()),
            _ => None,
        };
        let anonymous = masumi.rest.send(method, path, &[], body.as_deref()).await;
        assert_eq!(failure(&anonymous, 401), "Unauthorized, no authentication token provided", "{method} {path}");
        let wrong = masumi.rest.send(method, path, &[("token", "not_a_key_of_this_server")], body.as_deref()).await;
        assert_eq!(failure(&wrong, 401), "Unauthorized, invalid authentication token provided", "{method} {path}");
    }
    app.stop().await;
}
both!(masumi_permissions_route_by_route);

async fn masumi_cursors_are_inclusive(backend: Backend) {
    let app = spawn(backend).await;
    let masumi = Masumi::new(&app);
    for _ in 0..4 {
        masumi.create(json!({"UsageCredits": []})).await;
    }
    let ids = |answer: &Answer, field: &str| -> Vec<String> {
        let data = if field == "ApiKeys" { success(answer) } else { rpc_success(answer) };
        data[field].as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap().to_owned()).collect()
    };
    let all = ids(&masumi.send("GET", KEY, ADMIN_KEY, None).await, "ApiKeys");
    assert_eq!(all.len(), 5, "the admin's key and four more; default limit 10");
    let first = ids(&masumi.send("GET", &format!("{KEY}?limit=2"), ADMIN_KEY, None).await, "ApiKeys");
    assert_eq!(first, all[..2]);
    for name in ["cursorToken", "cursorId"] {
        let next =
            ids(&masumi.send("GET", &format!("{KEY}?limit=2&{name}={}", first[1]), ADMIN_KEY, None).await, "ApiKeys");
        assert_eq!(next, all[1..3], "the cursor row is the first row of the next page ({name})");
    }
    for query in ["limit=0", "limit=101", "limit=ten"] {
        failure(&masumi.send("GET", &format!("{KEY}?{query}"), ADMIN_KEY, None).await, 400);
    }

    let admin = format!("Bearer {ADMIN_KEY}");
    for n in 0..3 {
        let body = json!({"rpcProviderKey": {"network": "Preprod", "provider": "Blockfrost", "secret": format!("bf_secret_{n}")}});
        let created = masumi
            .rest
            .send("POST", "/v1/rpcProviderKeys", &[("authorization", &admin)], Some(&body.to_string()))
            .await;
        assert_eq!(created.status, 200, "{:?}", created.body);
    }
    let answer = masumi.send("GET", RPC, ADMIN_KEY, None).await;
    let data = rpc_success(&answer);
    assert_eq!(keys(data), sorted(&["RpcProviderKeys"]));
    for key in data["RpcProviderKeys"].as_array().unwrap() {
        assert_eq!(keys(key), sorted(&RPC_FIELDS));
        assert!(
            key["rpcProviderApiKey"].as_str().unwrap().starts_with("bf_secret_"),
            "in clear, as the contract requires"
        );
    }
    let all = ids(&answer, "RpcProviderKeys");
    assert_eq!(all.len(), 3);
    let first = ids(&masumi.send("GET", &format!("{RPC}?limit=2"), ADMIN_KEY, None).await, "RpcProviderKeys");
    assert_eq!(first, all[..2]);
    let next = ids(
        &masumi.send("GET", &format!("{RPC}?limit=2&cursorId={}", first[1]), ADMIN_KEY, None).await,
        "RpcProviderKeys",
    );
    assert_eq!(next, all[1..3]);
    app.stop().await;
}
both!(masumi_cursors_are_inclusive);
