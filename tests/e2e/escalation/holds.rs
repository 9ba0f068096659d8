//! Holds in the escalation matrix: every caller kind makes a hold (the right to verify),
//! and captures or releases holds of its own and of another caller (the caller that made
//! the hold, or admin; another's hold is NOT_FOUND). A refused call settles nothing.

use std::time::Duration;

use keyward_proto::v1::{self, credit_service_client::CreditServiceClient};
use tonic::{Code, Status};

use super::{CALLERS, CallerKind, Callers};
use crate::{
    credits::{amounts, metered_key},
    helpers::{Backend, admin, both},
    holds::holds_of,
    jwt::{Signer, spawn_with_jwks, write_jwks},
};

fn code<T>(outcome: &Result<T, Status>) -> Code {
    outcome.as_ref().map_or_else(Status::code, |_| Code::Ok)
}

async fn every_caller_against_holds(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let signer = Signer::ec("escalation-holds");
    write_jwks(&jwks, &[&signer]);
    let app = spawn_with_jwks(backend, jwks.to_str().unwrap(), Duration::from_secs(60)).await;
    let callers = Callers::create(&app, &signer).await;
    let credits = CreditServiceClient::new(app.channel.clone());
    let (key, secret) = metered_key(&app, &[("", 1_000)]).await;
    let hold_request =
        || v1::VerifyApiKeyRequest { key: secret.clone(), hold: amounts(&[("", 1)]), ..Default::default() };
    let mut failures = Vec::new();
    for caller in CALLERS {
        let may_verify = matches!(caller, CallerKind::Admin | CallerKind::Verifier);
        let refused = if caller == CallerKind::Anonymous { Code::Unauthenticated } else { Code::PermissionDenied };

        let made = app.client.clone().verify_api_key(callers.request(caller, hold_request())).await;
        let want = if may_verify { Code::Ok } else { refused };
        if code(&made) != want {
            failures.push(format!("{caller:?} makes a hold: want {want:?}, got {:?}", code(&made)));
        }

        // A hold of admin's, released; one of the verifier's, captured.
        let admins = app.client.clone().verify_api_key(admin(hold_request())).await.unwrap().into_inner().hold_id;
        let by_verifier = callers.request(CallerKind::Verifier, hold_request());
        let verifiers = app.client.clone().verify_api_key(by_verifier).await.unwrap().into_inner().hold_id;
        let release = v1::ReleaseCreditHoldRequest { hold_id: admins.clone(), request_id: String::new() };
        let released = credits.clone().release_credit_hold(callers.request(caller, release)).await;
        let want = match caller {
            CallerKind::Admin => Code::Ok,
            CallerKind::Verifier => Code::NotFound,
            CallerKind::Reader
            | CallerKind::Writer
            | CallerKind::Manager
            | CallerKind::ReaderWriter
            | CallerKind::LimitedWriter
            | CallerKind::SuperDev
            | CallerKind::IssuerAdmin
            | CallerKind::Anonymous => refused,
        };
        if code(&released) != want {
            failures.push(format!("{caller:?} releases admin's hold: want {want:?}, got {:?}", code(&released)));
        }
        let capture = v1::CaptureCreditHoldRequest {
            hold_id: verifiers.clone(),
            amounts: amounts(&[("", 1)]),
            request_id: String::new(),
        };
        let captured = credits.clone().capture_credit_hold(callers.request(caller, capture)).await;
        let want = if may_verify { Code::Ok } else { refused };
        if code(&captured) != want {
            failures.push(format!("{caller:?} captures the verifier's hold: want {want:?}, got {:?}", code(&captured)));
        }
        // What was refused is still live.
        let live: Vec<String> = holds_of(&app.channel, &key.id, true).await.into_iter().map(|hold| hold.id).collect();
        for (id, outcome) in [(&admins, code(&released)), (&verifiers, code(&captured))] {
            if (outcome == Code::Ok) == live.contains(id) {
                failures.push(format!("{caller:?}: hold {id} is live after {outcome:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} answers differ from the rule:\n{}", failures.len(), failures.join("\n"));
    app.stop().await;
}
both!(every_caller_against_holds);
