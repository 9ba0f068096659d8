//! People with identity-provider JWTs: signature, time and audience checks, the JWKS
//! (file and HTTP, refreshed and rotated), and the PSP roles in the policy table.

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use keyward_proto::v1;
use rand_core::OsRng;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tonic::{Code, Request};

use crate::helpers::{Backend, Replica, TestApp, admin, assert_status, both, create_request, key_with, spawn_with};

pub(crate) const ISSUER: &str = "https://idp.keyward.test";
const AUDIENCE: &str = "keyward";

/// A signing key of the test's identity provider and its public JWK.
pub(crate) struct Signer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
    public_pem: String,
}

impl Signer {
    pub(crate) fn rsa(kid: &str) -> Self {
        use rsa::{pkcs8::EncodePrivateKey, pkcs8::EncodePublicKey, traits::PublicKeyParts};
        let private = rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
        let pem = private.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let public = private.to_public_key();
        Self {
            kid: kid.into(),
            alg: Algorithm::RS256,
            key: EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            jwk: json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()), "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be())}),
            public_pem: public.to_public_key_pem(rsa::pkcs8::LineEnding::LF).unwrap(),
        }
    }

    pub(crate) fn ec(kid: &str) -> Self {
        use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
        let secret = p256::SecretKey::random(&mut OsRng);
        let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), false);
        Self {
            kid: kid.into(),
            alg: Algorithm::ES256,
            key: EncodingKey::from_ec_pem(secret.to_pkcs8_pem(p256::pkcs8::LineEnding::LF).unwrap().as_bytes())
                .unwrap(),
            jwk: json!({"kty": "EC", "kid": kid, "alg": "ES256", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()), "y": URL_SAFE_NO_PAD.encode(point.y().unwrap())}),
            public_pem: secret.public_key().to_public_key_pem(p256::pkcs8::LineEnding::LF).unwrap(),
        }
    }

    fn ed25519(kid: &str) -> Self {
        use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
        let signing = ed25519_dalek::SigningKey::generate(&mut OsRng);
        let pem = signing.to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF).unwrap();
        Self {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            key: EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
            jwk: json!({"kty": "OKP", "kid": kid, "alg": "EdDSA", "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes())}),
            public_pem: signing
                .verifying_key()
                .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
                .unwrap(),
        }
    }

    pub(crate) fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.key).unwrap()
    }

    /// A token for `sub` with `roles` in organisation `org`, valid for 10 minutes.
    pub(crate) fn token(&self, sub: &str, roles: &[&str], org: &str) -> String {
        self.sign(&claims(sub, roles, org))
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub(crate) fn claims(sub: &str, roles: &[&str], org: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 600,
        "cognito:groups": roles, "custom:organisation_id": org, "custom:organisation_name": format!("{org} Ltd")})
}

pub(crate) fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

fn bearer<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

pub(crate) async fn spawn_with_jwks(backend: Backend, jwks_at: &str, cooldown: Duration) -> TestApp {
    let jwks_at = jwks_at.to_owned();
    spawn_with(backend, move |config| {
        config.jwt.jwt_jwks = Some(jwks_at);
        config.jwt.jwt_issuer = Some(ISSUER.into());
        config.jwt.jwt_audience = Some(AUDIENCE.into());
        config.jwt.jwt_kid_refresh_cooldown = cooldown;
        config.jwt.jwt_leeway = Duration::from_secs(5);
    })
    .await
}

pub(crate) fn write_jwks(path: &Path, signers: &[&Signer]) {
    let staged = path.with_extension("tmp");
    std::fs::write(&staged, jwks(signers)).unwrap();
    std::fs::rename(staged, path).unwrap();
}

async fn psp_roles_decide_each_key_rpc(backend: Backend) {
    let idp = Signer::rsa("rsa-1");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    write_jwks(&path, &[&idp]);
    let app = spawn_with_jwks(backend, path.to_str().unwrap(), Duration::from_secs(30)).await;
    let mut client = app.client.clone();
    let alice = idp.token("alice", &["Issuer_Admin"], "org-1");
    let bob = idp.token("bob", &["Issuer_Dev"], "org-1");
    let carol = idp.token("carol", &["Super_Dev"], "org-1");
    let dave = idp.token("dave", &["Verifier_Dev"], "org-2");
    let eve = idp.token("eve", &["Viewer"], "org-1");
    let create = |token: &str, name: &str| bearer(token, create_request(key_with(name)));

    let alices = client.create_api_key(create(&alice, "alice's")).await.unwrap().into_inner();
    let alices = alices.api_key.unwrap();
    assert_eq!((alices.owner.as_str(), alices.creator.as_str()), ("alice", "alice"), "a person creates for itself");
    assert_eq!((alices.organization_id.as_str(), alices.organization_name.as_str()), ("org-1", "org-1 Ltd"));
    let bobs = client.create_api_key(create(&bob, "bob's")).await.unwrap().into_inner().api_key.unwrap();
    let daves = client.create_api_key(create(&dave, "dave's")).await.unwrap().into_inner().api_key.unwrap();
    let mut for_other = key_with("for bob");
    for_other.owner = "bob".into();
    assert_status(
        &client.create_api_key(bearer(&alice, create_request(for_other))).await.unwrap_err(),
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        &client.create_api_key(create(&carol, "nope")).await.unwrap_err(),
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    for rpc_result in [
        client.create_api_key(create(&eve, "nope")).await.map(drop),
        client.list_api_keys(bearer(&eve, v1::ListApiKeysRequest::default())).await.map(drop),
        client.get_key_quota(bearer(&eve, v1::GetKeyQuotaRequest::default())).await.map(drop),
        client
            .delete_api_key(bearer(&eve, v1::DeleteApiKeyRequest { id: alices.id.clone(), request_id: String::new() }))
            .await
            .map(drop),
    ] {
        assert_status(&rpc_result.unwrap_err(), Code::PermissionDenied, "PERMISSION_DENIED");
    }

    let lister = app.client.clone();
    let ids = |token: &str| {
        let mut client = lister.clone();
        let request = bearer(token, v1::ListApiKeysRequest::default());
        async move {
            let mut ids: Vec<String> =
                client.list_api_keys(request).await.unwrap().into_inner().api_keys.into_iter().map(|k| k.id).collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(ids(&alice).await, vec![alices.id.clone()], "managers see their own keys");
    let mut org_one = vec![alices.id.clone(), bobs.id.clone()];
    org_one.sort();
    assert_eq!(ids(&carol).await, org_one, "Super_Dev sees every key of its organisation");
    let get = |token: &str, id: &str| bearer(token, v1::GetApiKeyRequest { id: id.to_owned() });
    assert_status(&client.get_api_key(get(&bob, &alices.id)).await.unwrap_err(), Code::NotFound, "API_KEY_NOT_FOUND");
    assert_status(&client.get_api_key(get(&carol, &daves.id)).await.unwrap_err(), Code::NotFound, "API_KEY_NOT_FOUND");

    let deactivate = |token: &str, id: &str| {
        bearer(
            token,
            v1::UpdateApiKeyRequest {
                api_key: Some(v1::ApiKey {
                    id: id.to_owned(),
                    status: v1::ApiKeyStatus::Inactive.into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["status".into()] }),
                request_id: String::new(),
                ..Default::default()
            },
        )
    };
    assert_status(
        &client.update_api_key(deactivate(&bob, &alices.id)).await.unwrap_err(),
        Code::NotFound,
        "API_KEY_NOT_FOUND",
    );
    let updated = client.update_api_key(deactivate(&carol, &bobs.id)).await.unwrap().into_inner().api_key.unwrap();
    assert_eq!(updated.status(), v1::ApiKeyStatus::Inactive, "Super_Dev updates its organisation's keys");
    let delete =
        |token: &str, id: &str| bearer(token, v1::DeleteApiKeyRequest { id: id.to_owned(), request_id: String::new() });
    assert_status(
        &client.delete_api_key(delete(&carol, &daves.id)).await.unwrap_err(),
        Code::NotFound,
        "API_KEY_NOT_FOUND",
    );
    assert_status(
        &client.delete_api_key(delete(&bob, &alices.id)).await.unwrap_err(),
        Code::NotFound,
        "API_KEY_NOT_FOUND",
    );
    client.delete_api_key(delete(&carol, &alices.id)).await.expect("Super_Dev deletes its organisation's keys");

    for role in ["Issuer_Admin", "Issuer_Dev", "Verifier_Admin", "Verifier_Dev"] {
        let token = idp.token(&format!("{role}-user"), &[role], "org-3");
        let key = client.create_api_key(create(&token, role)).await.unwrap().into_inner().api_key.unwrap();
        assert_eq!(ids(&token).await, vec![key.id.clone()], "{role} lists its own");
        client.update_api_key(deactivate(&token, &key.id)).await.unwrap_or_else(|s| panic!("{role} updates: {s:?}"));
        let quota = client.get_key_quota(bearer(&token, v1::GetKeyQuotaRequest::default())).await.unwrap().into_inner();
        assert_eq!((quota.used, quota.limit), (1, 100), "{role} reads its quota");
        client.delete_api_key(delete(&token, &key.id)).await.unwrap_or_else(|s| panic!("{role} deletes: {s:?}"));
    }
    let quota = client.get_key_quota(bearer(&carol, v1::GetKeyQuotaRequest::default())).await.unwrap().into_inner();
    assert_eq!(quota.used, 0, "Super_Dev reads its own quota");

    let all =
        client.list_api_keys(admin(v1::ListApiKeysRequest { show_revoked: true, ..Default::default() })).await.unwrap();
    assert!(all.into_inner().api_keys.len() >= 7, "admin keys keep their full rights");
    let events = app.running().store.audit_events().await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.action == "DeleteApiKey" && e.actor == "carol" && e.target == alices.id && e.outcome == "OK")
    );
    assert!(events.iter().any(|e| e.action == "CreateApiKey" && e.actor == "alice"));
    app.stop().await;
}
both!(psp_roles_decide_each_key_rpc);

/// Serves fixed documents by path over loopback HTTP, as an identity provider publishes
/// its JWKS and discovery document, and counts the requests.
pub(crate) struct DocumentServer {
    base: String,
    documents: Arc<Mutex<HashMap<String, String>>>,
    requests: Arc<AtomicUsize>,
}

impl DocumentServer {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (documents, requests): (Arc<Mutex<HashMap<String, String>>>, Arc<AtomicUsize>) = Default::default();
        let (shared, counter) = (Arc::clone(&documents), Arc::clone(&requests));
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (shared, counter) = (Arc::clone(&shared), Arc::clone(&counter));
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let line = String::from_utf8_lossy(&request).lines().next().unwrap_or_default().to_owned();
                    let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                    let found = shared.lock().unwrap().get(&path).cloned();
                    let (status, body) = found.map_or(("404 Not Found", String::new()), |body| ("200 OK", body));
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        Self { base, documents, requests }
    }

    /// The URL of `path` on this server.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn set(&self, path: &str, body: String) {
        self.documents.lock().unwrap().insert(path.to_owned(), body);
    }

    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

const JWKS_PATH: &str = "/.well-known/jwks.json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_and_never_logged() {
    let (rsa, ec, ed) = (Signer::rsa("rsa-1"), Signer::ec("ec-1"), Signer::ed25519("ed-1"));
    let server = DocumentServer::start().await;
    server.set(JWKS_PATH, jwks(&[&rsa, &ec, &ed]));
    let jwks_url = server.url(JWKS_PATH);
    // A real process, so its log can be read.
    let app = spawn_with(Backend::Sqlite, |_| {}).await;
    let url = app.config.store.database_url();
    let data = tempfile::tempdir().unwrap();
    let replica = Replica::start(
        &url,
        data.path(),
        &[
            ("KEYWARD_JWT_JWKS", jwks_url.as_str()),
            ("KEYWARD_JWT_ISSUER", ISSUER),
            ("KEYWARD_JWT_AUDIENCE", AUDIENCE),
            ("KEYWARD_JWT_LEEWAY", "5s"),
            ("KEYWARD_JWT_KID_REFRESH_COOLDOWN", "1h"),
            ("KEYWARD_LOG", "debug"),
        ],
    )
    .await
    .expect("starts with an HTTP JWKS");
    let mut client = replica.client.clone();
    let quota = |token: &str| bearer(token, v1::GetKeyQuotaRequest::default());
    for signer in [&rsa, &ec, &ed] {
        let token = signer.token("alice", &["Issuer_Dev"], "org-1");
        client.get_key_quota(quota(&token)).await.unwrap_or_else(|s| panic!("{:?} token refused: {s:?}", signer.alg));
    }

    let stranger = Signer::rsa("rsa-1");
    let header =
        |alg: &str, kid: &str| URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims("alice", &["Issuer_Dev"], "org-1").to_string());
    let hs256_with_public_key = {
        use hmac::{Mac, digest::KeyInit};
        let signing_input = format!("{}.{payload}", header("HS256", "rsa-1"));
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(rsa.public_pem.as_bytes()).unwrap();
        mac.update(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    };
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = claims("alice", &["Issuer_Dev"], "org-1");
        change(&mut claims);
        rsa.sign(&claims)
    };
    let cases: Vec<(&str, String)> = vec![
        ("expired", with(&|c| c["exp"] = json!(now() - 120))),
        ("not yet valid", with(&|c| c["nbf"] = json!(now() + 120))),
        ("wrong issuer", with(&|c| c["iss"] = json!("https://evil.test"))),
        ("wrong audience", with(&|c| c["aud"] = json!("someone-else"))),
        (
            "no subject",
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
        ),
        ("signed by a key not in the JWKS", stranger.token("alice", &["Issuer_Dev"], "org-1")),
        ("alg none", format!("{}.{payload}.", header("none", "rsa-1"))),
        ("HS256 with the public key as secret", hs256_with_public_key),
        ("100 KB", format!("{}.{}.{}", header("RS256", "rsa-1"), "A".repeat(100 * 1024), "sig")),
        ("garbage", "eyJgarbage.garbage.garbage".to_owned()),
    ];
    for (case, token) in &cases {
        let status = client.get_key_quota(quota(token)).await.unwrap_err();
        assert_status(&status, Code::Unauthenticated, "UNAUTHENTICATED");
        assert!(!status.message().contains(token.as_str()), "{case}");
    }
    assert_eq!(server.requests(), 1, "known kids need no refetch");
    let unknown = Signer::ec("unknown-kid");
    for _ in 0..5 {
        let status = client.get_key_quota(quota(&unknown.token("alice", &["Issuer_Dev"], "org-1"))).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    assert_eq!(server.requests(), 2, "an unknown kid refreshes the JWKS once, then is refused");

    let log = replica.log_when(|log| log.contains("authentication failed")).await;
    assert!(log.contains("authentication failed"), "refusals are logged: {log}");
    for (case, token) in &cases {
        let signature = token.rsplit('.').next().unwrap_or_default();
        assert!(signature.len() < 8 || !log.contains(signature), "the log holds the {case} token");
    }
    drop(replica);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_identity_provider_key_is_picked_up_without_a_restart() {
    let (old, new) = (Signer::ec("2026-10"), Signer::ed25519("2026-11"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    write_jwks(&path, &[&old]);
    let app = spawn_with_jwks(Backend::Sqlite, path.to_str().unwrap(), Duration::from_millis(300)).await;
    let mut client = app.client.clone();
    let quota = |token: String| bearer(&token, v1::GetKeyQuotaRequest::default());
    client.get_key_quota(quota(old.token("alice", &["Issuer_Dev"], "org-1"))).await.unwrap();
    assert_eq!(
        client.get_key_quota(quota(new.token("alice", &["Issuer_Dev"], "org-1"))).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    write_jwks(&path, &[&new]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    client
        .get_key_quota(quota(new.token("alice", &["Issuer_Dev"], "org-1")))
        .await
        .expect("the new key is fetched on first sight");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let retired = client.get_key_quota(quota(old.token("alice", &["Issuer_Dev"], "org-1"))).await.unwrap_err();
    assert_eq!(retired.code(), Code::Unauthenticated, "a key gone from the JWKS no longer verifies");
    app.stop().await;
}
