//! Masumi's own clients against keyward, unchanged: the request shapes of Masumi's
//! dashboard and generated client of both contract eras (2025-12: `limit`/`cursorToken`,
//! `networkLimit`, `permission`; 2026-07: `take`/`cursorId`, `NetworkLimit`,
//! `ChainIdLimit`, `can…` flags, wallet scopes), at the generated client's paths (with a
//! trailing slash), with fields keyward does not know, and from a browser origin (CORS).
//! The 2026-07 dashboard screen by screen (health, revoke and re-activate, admin rules).
//! Also: trailing slashes and unknown paths on every surface, and CORS off by default.

mod cors;

use std::collections::HashSet;

use keyward_gateway::CorsOrigins;
use keyward_proto::v1;
use serde_json::{Value, json};

use crate::{
    gateway::{Answer, Rest},
    helpers::{ADMIN_KEY, Backend, TestApp, both, spawn, spawn_with},
    masumi::{KEY_FIELDS, assert_key_types, failure, keys, rpc_success, sorted, success},
};

const ORIGIN: &str = "https://dashboard.masumi.example";
const KEY: &str = "/api/v1/api-key/";
const STATUS: &str = "/api/v1/api-key-status/";
const RPC: &str = "/api/v1/rpc-api-keys/";
/// Keys the dashboard creates, beside the bootstrap admin key.
const CREATED: usize = 75;

async fn spawn_with_cors(backend: Backend) -> TestApp {
    spawn_with(backend, |config| {
        config.rest.cors_allowed_origins = CorsOrigins::List(vec![ORIGIN.parse().unwrap()]);
    })
    .await
}

/// The dashboard: every call from the browser origin, with the `token` header.
struct Dashboard {
    rest: Rest,
    base: String,
    token: String,
}

impl Dashboard {
    fn new(app: &TestApp, token: &str) -> Self {
        let addr = app.running().http_addr;
        Self { rest: Rest::new(addr), base: format!("http://{addr}"), token: token.to_owned() }
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let body = body.map(|b| b.to_string());
        let headers = [("token", self.token.as_str()), ("origin", ORIGIN), ("accept", "application/json")];
        self.rest.send(method, path, &headers, body.as_deref()).await
    }

    /// The browser's preflight of a call with `token` and a JSON body.
    async fn preflight(&self, method: &str, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, format!("{}{path}", self.base))
            .header("origin", ORIGIN)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "content-type,token")
            .send()
            .await
            .unwrap()
    }
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_owned())
}

#[track_caller]
fn assert_cors_allows(response: &reqwest::Response, method: &str) {
    assert!(response.status().is_success(), "preflight answered {}", response.status());
    assert_eq!(header(response, "access-control-allow-origin").as_deref(), Some(ORIGIN));
    let methods = header(response, "access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains(method), "{methods}");
    let headers = header(response, "access-control-allow-headers").unwrap_or_default().to_ascii_lowercase();
    assert!(headers.contains("token") && headers.contains("content-type"), "{headers}");
}

async fn verify_code(app: &TestApp, secret: &str, network: &str) -> v1::VerificationCode {
    let verdict = app.verify(secret, &[], network).await;
    v1::VerificationCode::try_from(verdict.code).unwrap()
}

/// Every key of the list, paged as the dashboard does: `cursor` names the last key of a
/// page and the next page starts with it (inclusive, as Masumi's prisma cursor), so the
/// dashboard drops that first row.
async fn page_all(dashboard: &Dashboard, size: usize, cursor_of: impl Fn(&Value) -> String, query: &str) -> Vec<Value> {
    let (size_name, cursor_name) = if query == "2026" { ("take", "cursorId") } else { ("limit", "cursorToken") };
    let mut all: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages < 100, "paging never ends");
        let path = match &cursor {
            None => format!("{KEY}?{size_name}={size}"),
            Some(cursor) => {
                format!("{KEY}?{size_name}={size}&{cursor_name}={}", url_encode(cursor))
            }
        };
        let answer = dashboard.send("GET", &path, None).await;
        let mut page = success(&answer)["ApiKeys"].as_array().unwrap().clone();
        let full = page.len() == size;
        if cursor.is_some() {
            assert_eq!(page.first().map(|k| k["id"].clone()), all.last().map(|k| k["id"].clone()), "inclusive cursor");
            page.remove(0);
        }
        let Some(last) = page.last() else { break };
        cursor = Some(cursor_of(last));
        all.extend(page);
        if !full {
            break;
        }
    }
    all
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[track_caller]
fn assert_each_once(listed: &[Value], expected: &HashSet<String>) {
    let ids: Vec<String> = listed.iter().map(|k| k["id"].as_str().unwrap().to_owned()).collect();
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "no key twice");
    assert_eq!(&unique, expected, "every key");
}

/// The 2025-12 dashboard and generated client: the seed's contract.
async fn masumi_dashboard_2025_12(backend: Backend) {
    let app = spawn_with_cors(backend).await;
    let dashboard = Dashboard::new(&app, ADMIN_KEY);
    assert_cors_allows(&dashboard.preflight("GET", STATUS).await, "GET");

    // Log in: the status of the pasted key.
    let login = dashboard.send("GET", STATUS, None).await;
    assert_eq!(success(&login)["permission"], "Admin");

    // Create 75 keys, every permission, with fields keyward does not know.
    assert_cors_allows(&dashboard.preflight("POST", KEY).await, "POST");
    let mut ids: HashSet<String> = [success(&login)["id"].as_str().unwrap().to_owned()].into();
    let mut secrets = Vec::new();
    for n in 0..CREATED {
        let permission = ["Read", "ReadAndPay", "Admin"][n % 3];
        let body = json!({
            "usageLimited": if n % 2 == 0 { "True" } else { "FALSE" },
            "UsageCredits": [{"unit": "", "amount": "1000"}],
            "networkLimit": ["Preprod"],
            "permission": permission,
            "dashboardDraftId": n,
        });
        let created = dashboard.send("POST", KEY, Some(body)).await;
        let data = success(&created);
        assert_eq!(keys(data), sorted(&KEY_FIELDS));
        assert_key_types(data);
        if permission == "Admin" {
            assert_eq!(
                (data["usageLimited"].clone(), data["networkLimit"].clone()),
                (json!(false), json!(["Mainnet", "Preprod"])),
                "as Masumi forces"
            );
        } else {
            assert_eq!(
                (data["usageLimited"].clone(), data["networkLimit"].clone()),
                (json!(n % 2 == 0), json!(["Preprod"]))
            );
        }
        ids.insert(data["id"].as_str().unwrap().to_owned());
        secrets.push((data["id"].as_str().unwrap().to_owned(), data["token"].as_str().unwrap().to_owned()));
    }

    // Page through all of them with cursorToken = the last key's token.
    let listed = page_all(&dashboard, 10, |key| key["token"].as_str().unwrap().to_owned(), "2025").await;
    assert_each_once(&listed, &ids);
    for key in &listed {
        assert_key_types(key);
        assert!(!secrets.iter().any(|(_, secret)| key["token"] == json!(secret)), "never a secret in a list");
    }
    let tokens: HashSet<&str> = listed.iter().map(|k| k["token"].as_str().unwrap()).collect();
    assert_eq!(tokens.len(), listed.len(), "a token handle per key");

    // Update: credits, networks (none at all), status; from the dashboard's selects.
    let (id, secret) = secrets[0].clone();
    assert_cors_allows(&dashboard.preflight("PATCH", KEY).await, "PATCH");
    let patched = dashboard
        .send("PATCH", KEY, Some(json!({"id": id, "UsageCreditsToAddOrRemove": [{"unit": "", "amount": "-1000"}, {"unit": "usdm", "amount": "5"}], "networkLimit": [], "usageLimited": true, "extra": {"x": 1}})))
        .await;
    let data = success(&patched);
    assert_eq!((data["networkLimit"].clone(), data["NetworkLimit"].clone()), (json!([]), json!([])));
    for network in ["Preprod", "Mainnet", "preprod"] {
        assert_eq!(verify_code(&app, &secret, network).await, v1::VerificationCode::NetworkNotAllowed, "{network}");
    }
    let status = Dashboard::new(&app, &secret).send("GET", STATUS, None).await;
    assert_eq!(success(&status)["RemainingUsageCredits"], json!([{"unit": "usdm", "amount": "5"}]), "zero is gone");

    let revoked = dashboard.send("PATCH", KEY, Some(json!({"id": id, "status": "Revoked"}))).await;
    assert_eq!(success(&revoked)["status"], "Revoked");
    assert!(revoked.body["data"].get("deletedAt").is_none(), "only DELETE deletes");
    assert_eq!(verify_code(&app, &secret, "").await, v1::VerificationCode::Inactive);
    let listed = page_all(&dashboard, 10, |key| key["token"].as_str().unwrap().to_owned(), "2025").await;
    assert_each_once(&listed, &ids);
    assert_eq!(
        listed.iter().find(|k| k["id"] == json!(id)).unwrap()["status"],
        "Revoked",
        "2025-12 lists revoked keys"
    );
    let restored = dashboard.send("PATCH", KEY, Some(json!({"id": id, "status": "Active"}))).await;
    assert_eq!(success(&restored)["status"], "Active");
    assert!(restored.body["data"].get("deletedAt").is_none());
    assert_eq!(
        verify_code(&app, &secret, "Preprod").await,
        v1::VerificationCode::NetworkNotAllowed,
        "still no network"
    );
    let networks = dashboard.send("PATCH", KEY, Some(json!({"id": id, "networkLimit": ["Mainnet", "Preprod"]}))).await;
    success(&networks);
    assert_eq!(verify_code(&app, &secret, "Mainnet").await, v1::VerificationCode::Valid);

    // Delete, twice: 200 both times.
    assert_cors_allows(&dashboard.preflight("DELETE", KEY).await, "DELETE");
    let deleted = dashboard.send("DELETE", KEY, Some(json!({"id": id, "reason": "dashboard"}))).await;
    assert_eq!(success(&deleted)["status"], "Revoked");
    let again = dashboard.send("DELETE", KEY, Some(json!({"id": id}))).await;
    assert_eq!(success(&again)["status"], "Revoked");
    let missing = dashboard.send("DELETE", KEY, Some(json!({"id": "unique_cuid_v2_of_entry_to_delete"}))).await;
    assert_eq!(failure(&missing, 404), "API key not found");

    // RPC provider keys.
    let rpc = dashboard.send("GET", &format!("{RPC}?limit=10"), None).await;
    assert_eq!(rpc_success(&rpc)["RpcProviderKeys"], json!([]));
    app.stop().await;
}
both!(masumi_dashboard_2025_12);

/// The 2026-07 dashboard: flags, NetworkLimit, ChainIdLimit, wallet scopes, take/cursorId.
async fn masumi_dashboard_2026_07(backend: Backend) {
    let app = spawn_with_cors(backend).await;
    let dashboard = Dashboard::new(&app, ADMIN_KEY);
    assert_cors_allows(&dashboard.preflight("GET", STATUS).await, "GET");
    let login = dashboard.send("GET", STATUS, None).await;
    let me = success(&login);
    assert_eq!((me["canAdmin"].clone(), me["permission"].clone()), (json!(true), json!("Admin")));
    let mut ids: HashSet<String> = [me["id"].as_str().unwrap().to_owned()].into();

    let mut created = Vec::new();
    for n in 0..CREATED {
        let body = json!({
            "usageLimited": "true",
            "UsageCredits": [{"unit": "", "amount": "10"}],
            "canRead": true,
            "canPay": n % 2 == 0,
            "canAdmin": false,
            "NetworkLimit": ["Mainnet"],
            "ChainIdLimit": ["eip155:8453", "eip155:84532"],
            "walletScopeEnabled": "true",
            "WalletScopeHotWalletIds": [format!("hot_wallet_{n}")],
            "uiTheme": "dark",
        });
        let answer = dashboard.send("POST", KEY, Some(body)).await;
        let data = success(&answer);
        assert_eq!(keys(data), sorted(&KEY_FIELDS));
        assert_key_types(data);
        assert_eq!(
            [&data["canRead"], &data["canPay"], &data["canAdmin"], &data["permission"]],
            [&json!(true), &json!(n % 2 == 0), &json!(false), &json!(if n % 2 == 0 { "ReadAndPay" } else { "Read" })]
        );
        assert_eq!(data["NetworkLimit"], json!(["Mainnet"]));
        assert_eq!(data["ChainIdLimit"], json!(["eip155:8453", "eip155:84532"]));
        assert_eq!(data["walletScopeEnabled"], true);
        assert_eq!(data["WalletScopes"], json!([{"hotWalletId": format!("hot_wallet_{n}")}]));
        ids.insert(data["id"].as_str().unwrap().to_owned());
        created.push((data["id"].as_str().unwrap().to_owned(), data["token"].as_str().unwrap().to_owned()));
    }
    // An admin key by its flag: both networks, not usage limited, as Masumi forces.
    let admin = dashboard
        .send("POST", KEY, Some(json!({"UsageCredits": [], "canAdmin": true, "NetworkLimit": ["Preprod"]})))
        .await;
    let data = success(&admin);
    assert_eq!(
        (data["NetworkLimit"].clone(), data["usageLimited"].clone()),
        (json!(["Mainnet", "Preprod"]), json!(false))
    );
    ids.insert(data["id"].as_str().unwrap().to_owned());

    let listed = page_all(&dashboard, 10, |key| key["id"].as_str().unwrap().to_owned(), "2026").await;
    assert_each_once(&listed, &ids);

    // Update: flags, the Cardano half and the EVM half of the access list, wallet scopes, credits.
    let (id, secret) = created[1].clone();
    assert_cors_allows(&dashboard.preflight("PATCH", KEY).await, "PATCH");
    let patched = dashboard
        .send("PATCH", KEY, Some(json!({"id": id, "canPay": true, "NetworkLimit": [], "WalletScopeHotWalletIds": ["w1", "w2"], "walletScopeEnabled": false, "UsageCreditsToAddOrRemove": [{"unit": "", "amount": "-10"}], "selectedRow": 3})))
        .await;
    let data = success(&patched);
    assert_eq!([&data["canPay"], &data["permission"]], [&json!(true), &json!("ReadAndPay")]);
    assert_eq!(data["NetworkLimit"], json!([]));
    assert_eq!(data["ChainIdLimit"], json!(["eip155:8453", "eip155:84532"]), "omitted: unchanged");
    assert_eq!(data["WalletScopes"], json!([{"hotWalletId": "w1"}, {"hotWalletId": "w2"}]));
    assert_eq!(data["walletScopeEnabled"], false);
    for network in ["Preprod", "Mainnet"] {
        assert_eq!(verify_code(&app, &secret, network).await, v1::VerificationCode::NetworkNotAllowed);
    }
    let own = Dashboard::new(&app, &secret).send("GET", STATUS, None).await;
    let own = success(&own);
    assert_eq!((own["id"].clone(), own["RemainingUsageCredits"].clone()), (json!(id), json!([])));
    // The Read key of the dashboard's user still cannot reach the admin routes.
    let reader = Dashboard::new(&app, &created[1].1);
    let refused = reader.send("GET", &format!("{KEY}?take=5"), None).await;
    assert_eq!(failure(&refused, 401), "Unauthorized, admin access required");

    // Deleted keys leave the 2026-07 list; deleting twice answers 200.
    let deleted = dashboard.send("DELETE", KEY, Some(json!({"id": id}))).await;
    assert_eq!(success(&deleted)["status"], "Revoked");
    assert_eq!(success(&dashboard.send("DELETE", KEY, Some(json!({"id": id}))).await)["status"], "Revoked");
    ids.remove(&id);
    let listed = page_all(&dashboard, 7, |key| key["id"].as_str().unwrap().to_owned(), "2026").await;
    assert_each_once(&listed, &ids);

    let rpc = dashboard.send("GET", RPC, None).await;
    assert_eq!(rpc_success(&rpc)["RpcProviderKeys"], json!([]));
    app.stop().await;
}
both!(masumi_dashboard_2026_07);

/// The 2026-07 dashboard, screen by screen: health before anything, sign-in, the list
/// (disabled keys stay listed with their status, tokens redacted as Masumi does), revoke,
/// re-activate, update, delete; a PATCH that fails changes nothing, its status included;
/// the admin rules are refused with 400; errors say why as Masumi does.
async fn masumi_dashboard_2026_07_every_screen(backend: Backend) {
    let app = spawn_with_cors(backend).await;
    let dashboard = Dashboard::new(&app, ADMIN_KEY);
    let anonymous = Dashboard::new(&app, "");
    for path in ["/api/v1/health", "/api/v1/health/"] {
        let health = anonymous.rest.send("GET", path, &[("origin", ORIGIN)], None).await;
        assert_eq!((health.status, health.body.clone()), (200, json!({"status": "success", "data": {"status": "ok"}})));
    }
    assert_cors_allows(&dashboard.preflight("GET", "/api/v1/health").await, "GET");
    let login = dashboard.send("GET", STATUS, None).await;
    assert_eq!(success(&login)["canAdmin"], true);
    let refused = anonymous.rest.send("GET", STATUS, &[], None).await;
    assert_eq!(failure(&refused, 401), "Unauthorized, no authentication token provided");
    let wrong = Dashboard::new(&app, "not_a_key_of_this_server").send("GET", STATUS, None).await;
    assert_eq!(failure(&wrong, 401), "Unauthorized, invalid authentication token provided");

    let dashboard = &dashboard;
    let create = |body: Value| async move {
        let answer = dashboard.send("POST", KEY, Some(body)).await;
        let data = success(&answer);
        (data["id"].as_str().unwrap().to_owned(), data["token"].as_str().unwrap().to_owned())
    };
    let (id, secret) = create(json!({"UsageCredits": [{"unit": "", "amount": "10"}], "canRead": true})).await;
    let (_, other_secret) = create(json!({"UsageCredits": [], "canRead": true})).await;
    let listed = |take: &'static str| async move {
        let answer = dashboard.send("GET", &format!("{KEY}?{take}"), None).await;
        success(&answer)["ApiKeys"].as_array().unwrap().clone()
    };
    let row = |keys: &[Value]| keys.iter().find(|k| k["id"] == json!(id)).cloned();
    let tail: String = secret.chars().skip(secret.chars().count() - 4).collect();
    let shown = row(&listed("take=100").await).expect("listed");
    assert_eq!(shown["token"], json!(format!("*****{tail}")), "Masumi's redaction");
    for key in listed("take=100").await {
        let token = key["token"].as_str().unwrap();
        assert!(token.starts_with("*****") && token.chars().count() == 9, "{token}");
    }
    for key in listed("limit=100").await {
        let token = key["token"].as_str().unwrap();
        assert!(token.is_ascii() && token.contains("*****"), "the 2025-12 handle pages as it is: {token}");
    }

    // Revoke: the key stops working and stays listed, Revoked, with no deletedAt.
    let revoked = dashboard.send("PATCH", KEY, Some(json!({"id": id, "status": "Revoked"}))).await;
    assert_eq!(success(&revoked)["status"], "Revoked");
    let own = Dashboard::new(&app, &secret).send("GET", STATUS, None).await;
    assert_eq!(failure(&own, 401), "Unauthorized, API key is revoked");
    let before = row(&listed("take=100").await).expect("a revoked key stays listed");
    assert_eq!(before["status"], "Revoked");
    assert!(before.get("deletedAt").is_none());

    // A PATCH that fails changes nothing, its status included.
    let overdrawn = json!({"id": id, "status": "Active", "UsageCreditsToAddOrRemove": [{"unit": "", "amount": "-11"}]});
    failure(&dashboard.send("PATCH", KEY, Some(overdrawn)).await, 400);
    let taken = json!({"id": id, "status": "Active", "token": other_secret, "canPay": true});
    failure(&dashboard.send("PATCH", KEY, Some(taken)).await, 409);
    assert_eq!(row(&listed("take=100").await), Some(before.clone()), "exactly as it was");
    assert_eq!(verify_code(&app, &secret, "").await, v1::VerificationCode::Inactive);

    // Re-activate, update, in one PATCH each.
    let active = dashboard.send("PATCH", KEY, Some(json!({"id": id, "status": "Active"}))).await;
    assert_eq!(success(&active)["status"], "Active");
    assert_eq!(verify_code(&app, &secret, "").await, v1::VerificationCode::Valid);
    let body = json!({"id": id, "canPay": true, "NetworkLimit": ["Preprod"], "UsageCreditsToAddOrRemove": [{"unit": "", "amount": "5"}]});
    let updated = dashboard.send("PATCH", KEY, Some(body)).await;
    let data = success(&updated);
    assert_eq!(
        [&data["canPay"], &data["NetworkLimit"], &data["RemainingUsageCredits"]],
        [&json!(true), &json!(["Preprod"]), &json!([{"unit": "", "amount": "15"}])]
    );

    // Delete: gone from the 2026-07 list, still in 2025-12's. A PATCH that would bring it
    // back and fails leaves it deleted; one that succeeds restores it.
    let deleted = dashboard.send("DELETE", KEY, Some(json!({"id": id}))).await;
    assert!(success(&deleted)["deletedAt"].is_string());
    assert_eq!(row(&listed("take=100").await), None);
    let own = Dashboard::new(&app, &secret).send("GET", STATUS, None).await;
    assert_eq!(failure(&own, 401), "Unauthorized, API key is revoked");
    let before = row(&listed("limit=100").await).expect("2025-12 lists deleted keys");
    let overdrawn = json!({"id": id, "status": "Active", "UsageCreditsToAddOrRemove": [{"unit": "", "amount": "-16"}]});
    failure(&dashboard.send("PATCH", KEY, Some(overdrawn)).await, 400);
    assert_eq!(row(&listed("limit=100").await), Some(before), "still deleted, nothing changed");
    assert_eq!(verify_code(&app, &secret, "").await, v1::VerificationCode::Revoked);
    let body = json!({"id": id, "status": "Active", "UsageCreditsToAddOrRemove": [{"unit": "", "amount": "-15"}]});
    let restored = dashboard.send("PATCH", KEY, Some(body)).await;
    let data = success(&restored);
    assert_eq!((data["status"].clone(), data["RemainingUsageCredits"].clone()), (json!("Active"), json!([])));
    assert!(data.get("deletedAt").is_none());
    assert_eq!(row(&listed("take=100").await).unwrap()["status"], "Active");

    // The admin rules, each a 400 in Masumi's shape that creates or changes nothing.
    let count = listed("limit=100").await.len();
    for (body, message) in [
        (json!({"UsageCredits": [], "canAdmin": true, "usageLimited": "true"}), "cannot have usage limits"),
        (json!({"UsageCredits": [], "canAdmin": true, "walletScopeEnabled": "True"}), "wallet scope"),
        (json!({"UsageCredits": [], "permission": "Admin", "walletScopeEnabled": "true"}), "wallet scope"),
        (json!({"canRead": true}), "UsageCredits"),
    ] {
        let answer = dashboard.send("POST", KEY, Some(body.clone())).await;
        assert!(failure(&answer, 400).contains(message), "{body}");
    }
    assert_eq!(listed("limit=100").await.len(), count);
    let (admin_id, _) = create(json!({"UsageCredits": [], "canAdmin": true})).await;
    let admin_row = |keys: &[Value]| keys.iter().find(|k| k["id"] == json!(admin_id)).cloned();
    let before = admin_row(&listed("take=100").await).unwrap();
    for (body, message) in [
        (json!({"id": admin_id, "usageLimited": true}), "cannot have usage limits"),
        (json!({"id": admin_id, "walletScopeEnabled": true, "WalletScopeHotWalletIds": ["w1"]}), "wallet scope"),
        (json!({"id": id, "canAdmin": true, "usageLimited": true}), "cannot have usage limits"),
    ] {
        let answer = dashboard.send("PATCH", KEY, Some(body.clone())).await;
        assert!(failure(&answer, 400).contains(message), "{body}");
    }
    assert_eq!(admin_row(&listed("take=100").await), Some(before));
    // The seed's own example, in 2025-12's words, is answered as the seed shows.
    let seed = json!({"usageLimited": "true", "UsageCredits": [], "permission": "Admin"});
    let answer = dashboard.send("POST", KEY, Some(seed)).await;
    assert_eq!(success(&answer)["usageLimited"], false);
    app.stop().await;
}
both!(masumi_dashboard_2026_07_every_screen);
