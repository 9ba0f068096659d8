//! VerifyApiKey's `scope_query`: precedence, parentheses, wildcards in a key's scopes,
//! malformed queries named by position, and `missing_scopes`, over gRPC and REST.

use keyward_proto::v1::{self, VerificationCode};
use serde_json::json;

use crate::{
    gateway::Rest,
    helpers::{ADMIN_KEY, Backend, TestApp, admin, assert_invalid, both, spawn, with_key},
};

async fn verify(
    app: &TestApp,
    secret: &str,
    required: &[&str],
    query: &str,
) -> Result<v1::VerifyApiKeyResponse, tonic::Status> {
    let request = v1::VerifyApiKeyRequest {
        key: secret.to_owned(),
        required_scopes: required.iter().map(|s| (*s).to_owned()).collect(),
        scope_query: query.to_owned(),
        ..Default::default()
    };
    app.client.clone().verify_api_key(admin(request)).await.map(tonic::Response::into_inner)
}

async fn answer(app: &TestApp, secret: &str, required: &[&str], query: &str) -> (VerificationCode, Vec<String>) {
    let answer = verify(app, secret, required, query).await.unwrap_or_else(|status| panic!("{query}: {status:?}"));
    assert_eq!(answer.valid, answer.code() == VerificationCode::Valid);
    (answer.code(), answer.missing_scopes)
}

async fn queries_decide_by_precedence_parentheses_and_wildcards(backend: Backend) {
    let app = spawn(backend).await;
    let (_, secret) = app.create_key("docs", &["documents.read", "billing.*", "admin.*.view"]).await;
    let valid = (VerificationCode::Valid, Vec::<String>::new());
    let short =
        |missing: &[&str]| (VerificationCode::InsufficientScope, missing.iter().map(|s| (*s).to_owned()).collect());

    assert_eq!(answer(&app, &secret, &[], "documents.read").await, valid);
    // AND binds tighter: `documents.write OR (documents.read AND billing.pay)`.
    assert_eq!(answer(&app, &secret, &[], "documents.write OR documents.read AND billing.pay").await, valid);
    // Parentheses regroup: `(documents.write OR documents.read) AND team.lead`.
    assert_eq!(
        answer(&app, &secret, &[], "(documents.write OR documents.read) AND team.lead").await,
        short(&["team.lead"])
    );
    assert_eq!(
        answer(&app, &secret, &[], "documents.read AND (documents.write OR admin)").await,
        short(&["admin"]),
        "the smaller branch of the OR: `admin` sorts before `documents.write`"
    );
    // `billing.*` grants one segment, not two and not none.
    assert_eq!(answer(&app, &secret, &[], "billing.refund").await, valid);
    assert_eq!(answer(&app, &secret, &[], "billing.refund.all").await, short(&["billing.refund.all"]));
    assert_eq!(answer(&app, &secret, &[], "billing").await, short(&["billing"]));
    assert_eq!(answer(&app, &secret, &[], "admin.users.view AND admin.keys.view").await, valid);
    assert_eq!(answer(&app, &secret, &["billing.pay"], "").await, valid, "wildcards serve required_scopes too");
    // The smallest set: `team.b` alone satisfies both groups.
    assert_eq!(answer(&app, &secret, &[], "(team.a OR team.b) AND (team.b OR team.c)").await, short(&["team.b"]));
    // required_scopes and the query together: both must hold, and both are reported.
    assert_eq!(answer(&app, &secret, &["documents.read"], "billing.pay").await, valid);
    assert_eq!(
        answer(&app, &secret, &["documents.delete"], "documents.read AND (x OR documents.delete)").await,
        short(&["documents.delete"]),
        "a required scope already missing also serves the query"
    );
    assert_eq!(answer(&app, &secret, &["documents.delete"], "x").await, short(&["documents.delete", "x"]));

    // A `*` key, which a keys:write caller may give (it is no keyward scope), never passes
    // a check for one of keyward's own scopes.
    let (_, writer_secret) = app.create_key("team", &["keys:write"]).await;
    let request = v1::CreateApiKeyRequest {
        api_key: Some(v1::ApiKey { name: "star".into(), scopes: vec!["*".into()], ..Default::default() }),
        ..Default::default()
    };
    let star = app.client.clone().create_api_key(with_key(&writer_secret, request)).await.unwrap().into_inner().secret;
    assert_eq!(answer(&app, &star, &[], "orders").await, valid);
    for reserved in ["admin", "keys:write", "verify", "MANAGE"] {
        assert_eq!(answer(&app, &star, &[reserved], "").await, short(&[reserved]), "{reserved}");
        assert_eq!(answer(&app, &star, &[], &format!("orders AND {reserved}")).await, short(&[reserved]));
    }

    // A key that fails for another reason names no missing scope.
    let revoked = app.create_key("gone", &[]).await;
    app.client
        .clone()
        .delete_api_key(admin(v1::DeleteApiKeyRequest { id: revoked.0.id.clone(), ..Default::default() }))
        .await
        .unwrap();
    assert_eq!(answer(&app, &revoked.1, &[], "x").await, (VerificationCode::Revoked, vec![]));
    app.stop().await;
}
both!(queries_decide_by_precedence_parentheses_and_wildcards);

async fn a_malformed_query_is_refused_naming_its_position(backend: Backend) {
    let app = spawn(backend).await;
    let (_, secret) = app.create_key("docs", &["documents.read"]).await;
    for (query, position) in [
        ("documents.read AND", "at character 19"),
        ("documents.read AND OR x", "at character 20"),
        ("(documents.read OR x", "at character 21"),
        ("documents.read x", "at character 16"),
        (")", "at character 1"),
        ("   ", "at character 4"),
    ] {
        let status = verify(&app, &secret, &[], query).await.unwrap_err();
        assert_invalid(&status, "scope_query");
        assert!(status.message().contains(position), "{query}: {status:?}");
    }
    let too_many = vec!["s"; 101].join(" OR ");
    let status = verify(&app, &secret, &[], &too_many).await.unwrap_err();
    assert_invalid(&status, "scope_query");
    assert!(status.message().contains("more than 100 scopes"), "{status:?}");
    let too_long = format!("{} OR s", "x".repeat(1000));
    assert_invalid(&verify(&app, &secret, &[], &too_long).await.unwrap_err(), "scope_query");
    // The same malformed text again is refused again: only good queries are kept parsed.
    assert_invalid(&verify(&app, &secret, &[], ")").await.unwrap_err(), "scope_query");
    app.stop().await;
}
both!(a_malformed_query_is_refused_naming_its_position);

async fn the_rest_surface_takes_the_query_and_answers_missing_scopes(backend: Backend) {
    let app = spawn(backend).await;
    let (_, secret) = app.create_key("docs", &["documents.*"]).await;
    let rest = Rest::new(app.running().http_addr);
    let auth = format!("Bearer {ADMIN_KEY}");
    let admin = [("authorization", auth.as_str())];
    let body = json!({"key": secret, "scopeQuery": "documents.read AND (documents.write OR admin.all)"});
    let verified = rest.send("POST", "/v1/apiKeys:verify", &admin, Some(&body.to_string())).await;
    assert_eq!(verified.status, 200, "{:?}", verified.body);
    assert_eq!((&verified.body["valid"], &verified.body["missingScopes"]), (&json!(true), &json!([])));
    let body = json!({"key": secret, "scopeQuery": "documents.read.all OR (x AND y)"});
    let refused = rest.send("POST", "/v1/apiKeys:verify", &admin, Some(&body.to_string())).await;
    assert_eq!(
        (&refused.body["code"], &refused.body["missingScopes"]),
        (&json!("VERIFICATION_CODE_INSUFFICIENT_SCOPE"), &json!(["documents.read.all"]))
    );
    let body = json!({"key": secret, "scopeQuery": "documents.read AND"});
    let malformed = rest.send("POST", "/v1/apiKeys:verify", &admin, Some(&body.to_string())).await;
    assert_eq!(malformed.status, 400, "{:?}", malformed.body);
    assert!(malformed.body.to_string().contains("at character 19"), "{:?}", malformed.body);
    app.stop().await;
}
both!(the_rest_surface_takes_the_query_and_answers_missing_scopes);
