//! People from real identity providers: tokens shaped as Amazon Cognito (ID and access
//! tokens), Keycloak (found by OIDC discovery, roles in `realm_access.roles`, a list
//! `aud`) and Auth0 (namespaced claims, `org_id`) document them, on every PSP route and
//! on the native API; and the tokens and discovery documents that must be refused.

use std::collections::BTreeSet;

use keyward_proto::v1;
use serde_json::{Value, json};
use tonic::{Code, Request};

use crate::{
    gateway::{Answer, PSP, Rest, psp_routes},
    helpers::{Backend, Replica, TestApp, both, create_request, key_with, spawn_with, try_start},
    jwt::{DocumentServer, Signer, jwks, write_jwks},
};

const COGNITO_ISSUER: &str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123";
/// The portal's app client (access tokens) and a second app of the same pool (ID tokens).
const COGNITO_CLIENTS: [&str; 2] = ["1example23456789abcdefghij", "2otherapp3456789abcdefghij"];
const AUTH0_ISSUER: &str = "https://acme.eu.auth0.com/";
const AUTH0_API: &str = "https://api.keyward.example.com";
const AUTH0_ROLES: &str = "https://keyward.example.com/roles";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The providers under test; each signs tokens in its own documented shape.
#[derive(Clone, Copy, Debug)]
enum Provider {
    CognitoAccess,
    CognitoId,
    Keycloak,
    Auth0,
}

/// One person of a provider: the value keyward takes as owner, and the token's claims.
struct Person {
    owner: String,
    claims: Value,
}

impl Provider {
    /// Claims as the provider's documentation shows them; `org` absent when the provider
    /// was not set up to add one.
    fn person(self, name: &str, roles: &[&str], org: Option<&str>, keycloak_issuer: &str) -> Person {
        let (iat, exp) = (now(), now() + 3600);
        match self {
            // docs.aws.amazon.com/cognito: "The access token" payload.
            Self::CognitoAccess => {
                let sub = uuid();
                let mut claims = json!({"sub": sub, "device_key": format!("eu-west-1_{}", uuid()),
                    "cognito:groups": roles, "token_use": "access", "scope": "aws.cognito.signin.user.admin",
                    "auth_time": iat, "iss": COGNITO_ISSUER, "exp": exp, "iat": iat, "origin_jti": uuid(),
                    "jti": uuid(), "client_id": COGNITO_CLIENTS[0], "username": name});
                if let Some(org) = org {
                    claims["custom:organisation_id"] = json!(org);
                    claims["custom:organisation_name"] = json!(format!("{org} Ltd"));
                }
                Person { owner: sub, claims }
            }
            // docs.aws.amazon.com/cognito: "The ID token" payload.
            Self::CognitoId => {
                let sub = uuid();
                let mut claims = json!({"sub": sub, "cognito:groups": roles, "email_verified": true,
                    "iss": COGNITO_ISSUER, "cognito:username": name, "origin_jti": uuid(),
                    "aud": COGNITO_CLIENTS[1], "event_id": uuid(), "token_use": "id", "auth_time": iat,
                    "name": name, "exp": exp, "iat": iat, "jti": uuid(), "email": format!("{name}@example.com")});
                if let Some(org) = org {
                    claims["custom:organisation_id"] = json!(org);
                    claims["custom:organisation_name"] = json!(format!("{org} Ltd"));
                }
                Person { owner: sub, claims }
            }
            // A Keycloak realm's access token with an audience mapper and user-attribute
            // mappers named `organisation.id` / `organisation.name` (nested by Keycloak).
            Self::Keycloak => {
                let sub = uuid();
                let mut realm_roles = vec!["offline_access", "uma_authorization", "default-roles-acme"];
                realm_roles.extend_from_slice(roles);
                let mut claims = json!({"exp": exp, "iat": iat, "auth_time": iat, "jti": uuid(),
                    "iss": keycloak_issuer, "aud": ["keyward", "account"], "sub": sub, "typ": "Bearer",
                    "azp": "portal", "sid": uuid(), "acr": "1", "allowed-origins": ["https://portal.example.com"],
                    "realm_access": {"roles": realm_roles},
                    "resource_access": {"account": {"roles": ["manage-account", "view-profile"]}},
                    "scope": "openid email profile", "email_verified": true, "preferred_username": name,
                    "email": format!("{name}@example.com")});
                if let Some(org) = org {
                    claims["organisation"] = json!({"id": org, "name": format!("{org} Ltd")});
                }
                Person { owner: sub, claims }
            }
            // An Auth0 access token for an API, roles added by a post-login Action under a
            // namespaced claim, the organisation from Auth0 Organizations.
            Self::Auth0 => {
                let sub = format!("auth0|{}", uuid().replace('-', "")[..24].to_owned());
                let mut claims = json!({"iss": AUTH0_ISSUER, "sub": sub,
                    "aud": [AUTH0_API, "https://acme.eu.auth0.com/userinfo"], "iat": iat, "exp": exp,
                    "scope": "openid profile email", "azp": "portalClientId0123456789abcdef",
                    AUTH0_ROLES: roles});
                if let Some(org) = org {
                    claims["org_id"] = json!(org);
                    claims["org_name"] = json!(format!("{org} Ltd"));
                }
                Person { owner: sub, claims }
            }
        }
    }

    /// Settings as the README's recipe for the provider gives them.
    async fn spawn(
        self,
        backend: Backend,
        signer: &Signer,
        discovery: &DocumentServer,
        dir: &std::path::Path,
    ) -> TestApp {
        let path = dir.join("jwks.json");
        write_jwks(&path, &[signer]);
        let (jwks, issuer) = (path.to_str().unwrap().to_owned(), realm(discovery));
        spawn_with(backend, move |config| {
            let jwt = &mut config.jwt;
            match self {
                Self::CognitoAccess | Self::CognitoId => {
                    jwt.jwt_jwks = Some(jwks);
                    jwt.jwt_issuer = Some(COGNITO_ISSUER.into());
                    jwt.jwt_audience = Some(COGNITO_CLIENTS.join(","));
                }
                Self::Keycloak => {
                    jwt.jwt_issuer = Some(issuer);
                    jwt.jwt_audience = Some("keyward".into());
                    jwt.jwt_roles_claim = "realm_access.roles".into();
                    jwt.jwt_org_id_claim = "organisation.id".into();
                    jwt.jwt_org_name_claim = "organisation.name".into();
                }
                Self::Auth0 => {
                    jwt.jwt_jwks = Some(jwks);
                    jwt.jwt_issuer = Some(AUTH0_ISSUER.into());
                    jwt.jwt_audience = Some(AUTH0_API.into());
                    jwt.jwt_roles_claim = AUTH0_ROLES.into();
                    jwt.jwt_org_id_claim = "org_id".into();
                    jwt.jwt_org_name_claim = "org_name".into();
                }
            }
        })
        .await
    }
}

const REALM: &str = "/realms/acme";

/// The realm's issuer on the provider's server.
fn realm(provider: &DocumentServer) -> String {
    provider.url(REALM)
}

/// Where the realm publishes its JWKS.
fn certs(provider: &DocumentServer) -> String {
    provider.url(&format!("{REALM}/protocol/openid-connect/certs"))
}

/// Publishes the realm's discovery document naming `jwks_uri`, and the JWKS of `signers`
/// at the realm's usual place.
fn publish(provider: &DocumentServer, jwks_uri: &str, signers: &[&Signer]) {
    let issuer = realm(provider);
    let discovery = json!({"issuer": issuer, "jwks_uri": jwks_uri,
        "authorization_endpoint": format!("{issuer}/protocol/openid-connect/auth"),
        "token_endpoint": format!("{issuer}/protocol/openid-connect/token"),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"]});
    provider.set(DISCOVERY, discovery.to_string());
    provider.set(&format!("{REALM}/protocol/openid-connect/certs"), jwks(signers));
}

const DISCOVERY: &str = "/realms/acme/.well-known/openid-configuration";

fn ids(answer: &Answer) -> BTreeSet<i64> {
    answer
        .body
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {:?}", answer.body))
        .iter()
        .map(|k| k["id"].as_i64().unwrap())
        .collect()
}

fn bearer<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Each role of each provider on every PSP route and on the native API (gRPC and REST).
async fn every_provider_on_every_route(backend: Backend) {
    for provider in [Provider::CognitoAccess, Provider::CognitoId, Provider::Keycloak, Provider::Auth0] {
        let signer = Signer::rsa("provider-1");
        let discovery = DocumentServer::start().await;
        publish(&discovery, &certs(&discovery), &[&signer]);
        let dir = tempfile::tempdir().unwrap();
        let app = provider.spawn(backend, &signer, &discovery, dir.path()).await;
        let rest = Rest::new(app.running().http_addr);
        let person = |name: &str, roles: &[&str], org: Option<&str>| {
            let person = provider.person(name, roles, org, &realm(&discovery));
            (person.owner, format!("Bearer {}", signer.sign(&person.claims)))
        };
        let (alice, alice_token) = person("alice", &["Issuer_Admin"], Some("org-1"));
        let (bob, bob_token) = person("bob", &["Verifier_Dev"], Some("org-1"));
        let (_, carol_token) = person("carol", &["Super_Dev"], Some("org-1"));
        let (_, eve_token) = person("eve", &["Viewer"], Some("org-1"));
        let send = |method: &'static str, path: String, token: &String, body: Option<&'static str>| {
            let (rest, token) = (rest.clone(), token.clone());
            async move { rest.send(method, &path, &[("authorization", token.as_str())], body).await }
        };

        let created = send("POST", PSP.into(), &alice_token, Some(r#"{"name":"alice's"}"#)).await;
        assert_eq!(created.status, 200, "{provider:?}: {:?}", created.body);
        assert_eq!(created.body["userCognitoSub"], json!(alice), "{provider:?}: the owner is the token's subject");
        let alices = created.body["id"].as_i64().unwrap();
        let bobs = send("POST", PSP.into(), &bob_token, Some(r#"{"name":"bob's"}"#)).await;
        assert_eq!(bobs.status, 200, "{provider:?}: {:?}", bobs.body);
        assert_eq!(bobs.body["userCognitoSub"], json!(bob));
        let bobs = bobs.body["id"].as_i64().unwrap();

        let own = send("GET", PSP.into(), &alice_token, None).await;
        assert_eq!((own.status, ids(&own)), (200, BTreeSet::from([alices])), "{provider:?}");
        assert_eq!(
            own.body[0]["organisationName"], "org-1 Ltd",
            "{provider:?}: the organisation comes from its claims"
        );
        let organisation = send("GET", PSP.into(), &carol_token, None).await;
        assert_eq!(
            ids(&organisation),
            BTreeSet::from([alices, bobs]),
            "{provider:?}: Super_Dev reads its organisation"
        );
        let patched = send("PATCH", format!("{PSP}/{alices}"), &alice_token, Some(r#"{"status":"inactive"}"#)).await;
        assert_eq!((patched.status, patched.body["status"].clone()), (200, json!("inactive")), "{provider:?}");
        let usage = send("GET", format!("{PSP}/usage"), &alice_token, None).await;
        assert_eq!((usage.status, usage.body["used"].clone()), (200, json!(1)), "{provider:?}");
        assert_eq!(send("DELETE", format!("{PSP}/{bobs}"), &carol_token, None).await.status, 204, "{provider:?}");
        assert_eq!(send("DELETE", format!("{PSP}/{alices}"), &bob_token, None).await.status, 404, "{provider:?}");
        for (method, path, body) in psp_routes(alices) {
            assert_eq!(send(method, path.clone(), &eve_token, body).await.status, 403, "{provider:?}: {method} {path}");
        }

        // The native API, over gRPC and REST, with the same tokens.
        let token = alice_token.trim_start_matches("Bearer ");
        let mut client = app.client.clone();
        let key = client
            .create_api_key(bearer(token, create_request(key_with("native"))))
            .await
            .unwrap_or_else(|s| panic!("{provider:?}: {s:?}"))
            .into_inner()
            .api_key
            .unwrap();
        assert_eq!((key.owner.as_str(), key.organization_id.as_str()), (alice.as_str(), "org-1"), "{provider:?}");
        let quota = client.get_key_quota(bearer(token, v1::GetKeyQuotaRequest::default())).await.unwrap().into_inner();
        assert_eq!(quota.used, 2, "{provider:?}");
        let listed = send("GET", "/v1/apiKeys".into(), &alice_token, None).await;
        assert_eq!(listed.status, 200, "{provider:?}: {:?}", listed.body);
        assert_eq!(listed.body["apiKeys"].as_array().map(Vec::len), Some(2), "{provider:?}: {:?}", listed.body);
        let denied = client
            .get_key_quota(bearer(eve_token.trim_start_matches("Bearer "), v1::GetKeyQuotaRequest::default()))
            .await;
        assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied, "{provider:?}");
        app.stop().await;
    }
}
both!(every_provider_on_every_route);

/// A Cognito access token without organisation claims (no pre-token-generation trigger):
/// the person has no organisation reach, whatever its role.
async fn a_person_without_an_organisation_reaches_only_its_own_keys(backend: Backend) {
    let signer = Signer::ec("cognito-1");
    let discovery = DocumentServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = Provider::CognitoAccess.spawn(backend, &signer, &discovery, dir.path()).await;
    let rest = Rest::new(app.running().http_addr);
    let token = |name: &str, roles: &[&str], org: Option<&str>| {
        let person = Provider::CognitoAccess.person(name, roles, org, "");
        (person.owner, format!("Bearer {}", signer.sign(&person.claims)))
    };
    let send = |method: &'static str, path: String, token: &String, body: Option<&'static str>| {
        let (rest, token) = (rest.clone(), token.clone());
        async move { rest.send(method, &path, &[("authorization", token.as_str())], body).await }
    };
    let (_, member) = token("alice", &["Issuer_Admin"], Some("org-1"));
    let in_org = send("POST", PSP.into(), &member, Some(r#"{"name":"in org-1"}"#)).await.body["id"].as_i64().unwrap();
    let (loner, loner_token) = token("dave", &["Issuer_Dev"], None);
    let (_, other_loner) = token("frank", &["Issuer_Dev"], None);
    let created = send("POST", PSP.into(), &loner_token, Some(r#"{"name":"dave's"}"#)).await;
    assert_eq!((created.status, created.body["userCognitoSub"].clone()), (200, json!(loner)), "{:?}", created.body);
    let daves = created.body["id"].as_i64().unwrap();
    let franks =
        send("POST", PSP.into(), &other_loner, Some(r#"{"name":"frank's"}"#)).await.body["id"].as_i64().unwrap();

    let (_, unorganised_super) = token("carol", &["Super_Dev"], None);
    let seen = send("GET", PSP.into(), &unorganised_super, None).await;
    assert_eq!((seen.status, ids(&seen)), (200, BTreeSet::new()), "no organisation, so no organisation's keys");
    for id in [in_org, daves, franks] {
        let path = format!("{PSP}/{id}");
        assert_eq!(send("PATCH", path.clone(), &unorganised_super, Some(r#"{"status":"inactive"}"#)).await.status, 404);
        assert_eq!(send("DELETE", path, &unorganised_super, None).await.status, 404);
    }
    let daves_own = send("GET", PSP.into(), &loner_token, None).await;
    assert_eq!(ids(&daves_own), BTreeSet::from([daves]), "keys without an organisation are not shared");
    assert_eq!(send("DELETE", format!("{PSP}/{franks}"), &loner_token, None).await.status, 404);
    app.stop().await;
}
both!(a_person_without_an_organisation_reaches_only_its_own_keys);

/// Tokens a provider issues that keyward must refuse: 401 on REST, UNAUTHENTICATED on
/// gRPC, and nothing of the token in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_meant_for_others_are_refused_and_never_logged() {
    let signer = Signer::rsa("cognito-1");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    write_jwks(&path, &[&signer]);
    let cognito = |token_use: Option<&str>| {
        let mut env = vec![
            ("KEYWARD_JWT_JWKS", path.to_str().unwrap().to_owned()),
            ("KEYWARD_JWT_ISSUER", COGNITO_ISSUER.to_owned()),
            ("KEYWARD_JWT_AUDIENCE", COGNITO_CLIENTS.join(",")),
            ("KEYWARD_LOG", "debug".to_owned()),
        ];
        if let Some(token_use) = token_use {
            env.push(("KEYWARD_JWT_TOKEN_USE", token_use.to_owned()));
        }
        env
    };
    let access = |change: &dyn Fn(&mut Value)| {
        let mut claims = Provider::CognitoAccess.person("alice", &["Issuer_Admin"], Some("org-1"), "").claims;
        change(&mut claims);
        signer.sign(&claims)
    };
    let id = |change: &dyn Fn(&mut Value)| {
        let mut claims = Provider::CognitoId.person("alice", &["Issuer_Admin"], Some("org-1"), "").claims;
        change(&mut claims);
        signer.sign(&claims)
    };
    let remove = |name: &'static str| move |c: &mut Value| drop(c.as_object_mut().unwrap().remove(name));
    let default_refusals: Vec<(&str, String)> = vec![
        ("an access token of another app", access(&|c| c["client_id"] = json!("3someoneelse456789abcdefgh"))),
        (
            "an access token naming the app only in aud",
            access(&|c| {
                c["aud"] = json!(COGNITO_CLIENTS[0]);
                c.as_object_mut().unwrap().remove("client_id");
            }),
        ),
        ("an ID token of another app", id(&|c| c["aud"] = json!("3someoneelse456789abcdefgh"))),
        ("token_use refresh", access(&|c| c["token_use"] = json!("refresh"))),
        ("token_use missing", access(&remove("token_use"))),
        ("token_use missing from an ID token", id(&remove("token_use"))),
        ("token_use not a string", access(&|c| c["token_use"] = json!(["access"]))),
    ];
    let valid_access = access(&|_| {});
    let valid_id = id(&|_| {});

    for token_use in [None, Some("access"), Some("id")] {
        let env = cognito(token_use);
        let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let data = tempfile::tempdir().unwrap();
        let database = format!("sqlite://{}/keyward.db?mode=rwc", data.path().display());
        let replica = Replica::start(&database, data.path(), &env).await.expect("starts");
        let mut client = replica.client.clone();
        let quota = |token: &str| bearer(token, v1::GetKeyQuotaRequest::default());
        let (accepted, refused): (Vec<&String>, Vec<(&str, &String)>) = match token_use {
            Some("access") => {
                (vec![&valid_access], vec![("an ID token where only access tokens are accepted", &valid_id)])
            }
            Some(_) => (vec![&valid_id], vec![("an access token where only ID tokens are accepted", &valid_access)]),
            None => {
                (vec![&valid_access, &valid_id], default_refusals.iter().map(|(case, token)| (*case, token)).collect())
            }
        };
        for token in &accepted {
            client.get_key_quota(quota(token)).await.unwrap_or_else(|s| panic!("{token_use:?}: refused {s:?}"));
        }
        for (case, token) in &refused {
            let status = client.get_key_quota(quota(token)).await.unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        }
        let log = replica.log_when(|log| log.contains("authentication failed")).await;
        assert!(log.contains("authentication failed"), "refusals are logged: {log}");
        for (case, token) in &refused {
            let signature = token.rsplit('.').next().unwrap();
            assert!(!log.contains(signature), "the log holds the token of {case}");
        }
    }

    // The same refusals on the PSP surface are its 401.
    let discovery = DocumentServer::start().await;
    let app = Provider::CognitoAccess.spawn(Backend::Sqlite, &signer, &discovery, dir.path()).await;
    let rest = Rest::new(app.running().http_addr);
    for (case, token) in &default_refusals {
        let answer = rest.send("GET", PSP, &[("authorization", &format!("Bearer {token}"))], None).await;
        assert_eq!(answer.status, 401, "{case}: {:?}", answer.body);
    }
    app.stop().await;
}

/// Starts a server on SQLite whose JWKS is found through `issuer`'s discovery document.
async fn start_with_discovery(issuer: &str) -> Result<keyward_server::Running, String> {
    try_start(|config| {
        config.jwt.jwt_issuer = Some(issuer.to_owned());
        config.jwt.jwt_audience = Some("keyward".to_owned());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_document_off_the_rules_is_refused() {
    let signer = Signer::ec("realm-1");
    let provider = DocumentServer::start().await;

    publish(&provider, "http://keys.example.com/certs", &[&signer]);
    let refused = start_with_discovery(&realm(&provider)).await.expect_err("plain http off loopback");
    assert!(refused.contains("jwks_uri") && refused.contains("https://"), "{refused}");

    provider.set(
        DISCOVERY,
        format!(
            r#"{{"issuer":"{}","jwks_uri":"{}","padding":"{}"}}"#,
            realm(&provider),
            certs(&provider),
            "x".repeat(2 << 20)
        ),
    );
    let refused = start_with_discovery(&realm(&provider)).await.expect_err("a 2 MiB discovery document");
    assert!(refused.contains("larger than 1 MiB"), "{refused}");

    provider
        .set(DISCOVERY, json!({"issuer": "https://elsewhere.example.com", "jwks_uri": certs(&provider)}).to_string());
    let refused = start_with_discovery(&realm(&provider)).await.expect_err("a document of another issuer");
    assert!(refused.contains("another issuer"), "{refused}");

    let refused = start_with_discovery("http://idp.example.com/realms/acme").await.expect_err("plain http issuer");
    assert!(refused.contains("KEYWARD_JWT_ISSUER"), "{refused}");

    publish(&provider, &certs(&provider), &[&signer]);
    start_with_discovery(&realm(&provider)).await.expect("a document within the rules").stop().await.unwrap();
}
