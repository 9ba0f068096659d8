//! Owners' pools in the escalation matrix. A pool is adjusted by callers with the right
//! to adjust credits over its owner (admin) and read by callers that may read the owner's
//! keys; so are its refills and thresholds (UpdateOwnerCreditPool) set, and its ledger
//! (ListOwnerCreditTransactions) read. Pointing a key at its owner's pool is as good as granting it credits, so creating
//! a pooled key, moving a key onto the pool and taking a pooled key's secret by a rotation
//! take that right too. A refused call changes nothing.

use std::time::Duration;

use keyward_proto::v1::{self, credit_service_client::CreditServiceClient};
use tonic::{Code, Status};

use super::{CALLERS, CallerKind, Callers, TargetKind, snapshot};
use crate::{
    helpers::{Backend, admin, both},
    jwt::{Signer, spawn_with_jwks, write_jwks},
    pools::{adjust_pool, pool_balances, pool_state, refill, settings},
};

fn code<T>(outcome: &Result<T, Status>) -> Code {
    outcome.as_ref().map_or_else(Status::code, |_| Code::Ok)
}

fn expect(failures: &mut Vec<String>, what: String, want: Code, got: Code) {
    if want != got {
        failures.push(format!("{what}: want {want:?}, got {got:?}"));
    }
}

/// What the rule answers a caller holding (`right`) or lacking the right asked for.
fn answer(caller: CallerKind, right: bool) -> Code {
    if caller == CallerKind::Anonymous {
        Code::Unauthenticated
    } else if right {
        Code::Ok
    } else {
        Code::PermissionDenied
    }
}

/// Whether the caller may read the keys of its own owner (and so its own pool).
fn reads_own_keys(caller: CallerKind) -> bool {
    !matches!(caller, CallerKind::Verifier | CallerKind::Anonymous)
}

async fn every_caller_against_pools(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let signer = Signer::ec("escalation-pools");
    write_jwks(&jwks, &[&signer]);
    let app = spawn_with_jwks(backend, jwks.to_str().unwrap(), Duration::from_secs(60)).await;
    let callers = Callers::create(&app, &signer).await;
    let credits = CreditServiceClient::new(app.channel.clone());
    let neighbour = "pool-neighbour";
    adjust_pool(&app.channel, neighbour, &[("", 10)], "").await.unwrap();
    let mut failures = Vec::new();
    for caller in CALLERS {
        let owner = Callers::owner(caller);
        adjust_pool(&app.channel, &owner, &[("", 10)], "").await.unwrap();
        let is_admin = caller == CallerKind::Admin;
        for (pool_owner, reach) in [(owner.as_str(), true), (neighbour, is_admin)] {
            let before = pool_balances(&app.channel, pool_owner).await;
            let adjust = v1::AdjustOwnerCreditsRequest {
                owner: pool_owner.to_owned(),
                deltas: vec![v1::CreditDelta { unit: String::new(), delta: 5 }],
                ..Default::default()
            };
            let adjusted = credits.clone().adjust_owner_credits(callers.request(caller, adjust)).await;
            expect(
                &mut failures,
                format!("{caller:?} adjusts {pool_owner}'s pool"),
                answer(caller, is_admin),
                code(&adjusted),
            );
            if adjusted.is_err() && pool_balances(&app.channel, pool_owner).await != before {
                failures.push(format!("{caller:?} adjusts {pool_owner}'s pool: refused, yet it changed"));
            }
            let read = v1::GetOwnerCreditBalancesRequest { owner: pool_owner.to_owned(), environment: String::new() };
            let got = credits.clone().get_owner_credit_balances(callers.request(caller, read)).await;
            let may_read = is_admin || (reach && reads_own_keys(caller));
            expect(
                &mut failures,
                format!("{caller:?} reads {pool_owner}'s pool"),
                answer(caller, may_read),
                code(&got),
            );

            let before = pool_state(&app.channel, pool_owner).await;
            let refills = vec![refill("", 1_000, v1::RefillPeriod::Daily)];
            let update = settings(pool_owner, refills, &[("", 1)]);
            let updated = credits.clone().update_owner_credit_pool(callers.request(caller, update)).await;
            expect(
                &mut failures,
                format!("{caller:?} sets {pool_owner}'s pool's refills"),
                answer(caller, is_admin),
                code(&updated),
            );
            if updated.is_err() && pool_state(&app.channel, pool_owner).await != before {
                failures.push(format!("{caller:?} sets {pool_owner}'s pool's refills: refused, yet it changed"));
            }
            let list = v1::ListOwnerCreditTransactionsRequest { owner: pool_owner.to_owned(), ..Default::default() };
            let listed = credits.clone().list_owner_credit_transactions(callers.request(caller, list)).await;
            expect(
                &mut failures,
                format!("{caller:?} lists {pool_owner}'s pool's ledger"),
                answer(caller, may_read),
                code(&listed),
            );
        }

        // A key drawing on the caller's own pool, otherwise one anyone may make.
        let pooled = v1::ApiKey { credit_source: v1::CreditSource::Owner.into(), ..TargetKind::Plain.key(&owner) };
        let request = v1::CreateApiKeyRequest { api_key: Some(pooled.clone()), ..Default::default() };
        let created = app.client.clone().create_api_key(callers.request(caller, request)).await;
        expect(&mut failures, format!("{caller:?} creates a pooled key"), answer(caller, is_admin), code(&created));

        let plain = TargetKind::Plain.key(&owner);
        let request = admin(v1::CreateApiKeyRequest { api_key: Some(plain), ..Default::default() });
        let plain = app.client.clone().create_api_key(request).await.unwrap().into_inner().api_key.unwrap();
        let before = snapshot(&app, &plain.id).await;
        let moved = v1::UpdateApiKeyRequest {
            api_key: Some(v1::ApiKey {
                id: plain.id.clone(),
                credit_source: v1::CreditSource::Owner.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["credit_source".into()] }),
            ..Default::default()
        };
        let moved = app.client.clone().update_api_key(callers.request(caller, moved)).await;
        expect(&mut failures, format!("{caller:?} moves a key onto the pool"), answer(caller, is_admin), code(&moved));
        if moved.is_err() && snapshot(&app, &plain.id).await != before {
            failures.push(format!("{caller:?} moves a key onto the pool: refused, yet it changed"));
        }

        let request = admin(v1::CreateApiKeyRequest { api_key: Some(pooled), ..Default::default() });
        let pooled = app.client.clone().create_api_key(request).await.unwrap().into_inner().api_key.unwrap();
        let rotate = v1::RotateApiKeyRequest { id: pooled.id.clone(), ..Default::default() };
        let rotated = app.client.clone().rotate_api_key(callers.request(caller, rotate)).await;
        // Callers that may rotate their own keys are refused this one; the others lack
        // the right to rotate at all.
        expect(&mut failures, format!("{caller:?} rotates a pooled key"), answer(caller, is_admin), code(&rotated));
    }
    assert!(failures.is_empty(), "{} answers differ from the rule:\n{}", failures.len(), failures.join("\n"));
    app.stop().await;
}
both!(every_caller_against_pools);
