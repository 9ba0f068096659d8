//! The escalation matrix: every caller kind against every target kind and every key RPC.
//! Each answer is the one the policy rule gives — a caller that is not admin may act on a
//! key only if the key is in its reach and it could have created that key — and a refused
//! call changes nothing. A revoked key brought back by UpdateApiKey (status in the mask)
//! is judged as an update and then exactly as UndeleteApiKey.

use std::time::Duration;

use keyward_proto::v1::{
    self, api_key_service_client::ApiKeyServiceClient, credit_service_client::CreditServiceClient,
};
use tonic::{Code, Request, Status, transport::Channel};

use crate::{
    helpers::{Backend, TestApp, admin, both, timestamp_in},
    jwt::{Signer, spawn_with_jwks, write_jwks},
};

mod holds;
mod pools;
mod roles;

const ORG: &str = "org-t";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallerKind {
    Admin,
    Reader,
    Writer,
    Verifier,
    Manager,
    ReaderWriter,
    /// keys:write on a key that is usage-limited, expires in 2 h and may use Preprod only.
    LimitedWriter,
    SuperDev,
    IssuerAdmin,
    Anonymous,
}

const CALLERS: [CallerKind; 10] = [
    CallerKind::Admin,
    CallerKind::Reader,
    CallerKind::Writer,
    CallerKind::Verifier,
    CallerKind::Manager,
    CallerKind::ReaderWriter,
    CallerKind::LimitedWriter,
    CallerKind::SuperDev,
    CallerKind::IssuerAdmin,
    CallerKind::Anonymous,
];

impl CallerKind {
    fn scopes(self) -> &'static [&'static str] {
        match self {
            Self::Admin => &["admin"],
            Self::Reader => &["keys:read"],
            Self::Writer | Self::LimitedWriter => &["keys:write"],
            Self::Verifier => &["verify"],
            Self::Manager => &["MANAGE"],
            Self::ReaderWriter => &["keys:read", "keys:write"],
            Self::SuperDev | Self::IssuerAdmin | Self::Anonymous => &[],
        }
    }

    /// Whether the caller holds the right an RPC needs, as the policy table grants it.
    fn holds(self, rpc: Rpc) -> bool {
        use CallerKind as C;
        match (self, rpc) {
            (C::Anonymous, _) => false,
            (C::Admin, _) => true,
            (_, Rpc::AdjustCredits | Rpc::SetLowThreshold) => false,
            (C::Reader, Rpc::Get) => true,
            (C::Reader | C::Verifier, _) => false,
            (C::Writer | C::ReaderWriter | C::LimitedWriter, _) => true,
            // Restore is judged as an update first: the undelete right is asked of the row.
            (C::Manager | C::IssuerAdmin | C::SuperDev, Rpc::Restore) => self.holds(Rpc::Update),
            (C::Manager | C::IssuerAdmin, Rpc::Get | Rpc::Create | Rpc::Update | Rpc::Delete) => true,
            (C::SuperDev, Rpc::Get | Rpc::Update | Rpc::Delete) => true,
            (C::Manager | C::IssuerAdmin | C::SuperDev, _) => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetKind {
    /// Metered, expiring within the hour, Preprod only, no keyward scope: anyone may make it.
    Plain,
    HoldsAdmin,
    HoldsKeysWrite,
    HoldsVerify,
    HoldsManage,
    Unmetered,
    NoExpiry,
    AnyNetwork,
    OtherOrganization,
    OtherOwner,
    /// Plain, holding credits an admin gave it: whoever gets its secret spends them.
    HoldsCredits,
}

const TARGETS: [TargetKind; 11] = [
    TargetKind::Plain,
    TargetKind::HoldsAdmin,
    TargetKind::HoldsKeysWrite,
    TargetKind::HoldsVerify,
    TargetKind::HoldsManage,
    TargetKind::Unmetered,
    TargetKind::NoExpiry,
    TargetKind::AnyNetwork,
    TargetKind::OtherOrganization,
    TargetKind::OtherOwner,
    TargetKind::HoldsCredits,
];

impl TargetKind {
    fn key(self, owner: &str) -> v1::ApiKey {
        let mut key = v1::ApiKey {
            name: format!("{self:?}"),
            owner: owner.to_owned(),
            organization_id: ORG.to_owned(),
            usage_limited: true,
            expire_time: Some(timestamp_in(3600)),
            networks: vec!["Preprod".to_owned()],
            ..Default::default()
        };
        match self {
            Self::Plain => {}
            Self::HoldsAdmin => key.scopes = vec!["admin".into()],
            Self::HoldsKeysWrite => key.scopes = vec!["keys:write".into()],
            Self::HoldsVerify => key.scopes = vec!["verify".into()],
            Self::HoldsManage => key.scopes = vec!["MANAGE".into()],
            Self::Unmetered => key.usage_limited = false,
            Self::NoExpiry => key.expire_time = None,
            Self::AnyNetwork => key.networks.clear(),
            Self::OtherOrganization => key.organization_id = "org-x".into(),
            Self::OtherOwner => key.owner = format!("{owner}-neighbour"),
            Self::HoldsCredits => key.credits = vec![v1::CreditAmount { unit: String::new(), amount: 10 }],
        }
        key
    }

    /// Whether the caller's reach covers the target: its owner's keys; for a Super_Dev,
    /// its organisation's keys and its own (so every target here).
    fn in_reach(self, caller: CallerKind) -> bool {
        matches!(caller, CallerKind::Admin | CallerKind::SuperDev) || self != Self::OtherOwner
    }

    /// Whether the caller could have granted everything the target carries.
    fn grantable_by(self, caller: CallerKind) -> bool {
        let held = caller.scopes();
        let limited = caller == CallerKind::LimitedWriter;
        match self {
            Self::Plain | Self::OtherOwner | Self::HoldsCredits => true,
            Self::HoldsAdmin => held.contains(&"admin"),
            Self::HoldsKeysWrite => held.contains(&"keys:write"),
            Self::HoldsVerify => held.contains(&"verify"),
            Self::HoldsManage => held.contains(&"MANAGE"),
            Self::OtherOrganization => false,
            Self::Unmetered | Self::NoExpiry | Self::AnyNetwork => !limited,
        }
    }

    /// Whether the caller could have given the target its credits (only admin gives
    /// credits): what creating it, or taking its secret by a rotation, needs.
    fn credits_grantable_by(self, caller: CallerKind) -> bool {
        self != Self::HoldsCredits || caller == CallerKind::Admin
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    Create,
    Get,
    Update,
    Rotate,
    AdjustCredits,
    /// UpdateApiKey of `credit_low_thresholds`, set like credits.
    SetLowThreshold,
    Delete,
    Undelete,
    /// UpdateApiKey setting a revoked key's status: an update and an undelete in one.
    Restore,
}

/// The answer the rule gives.
fn expected(caller: CallerKind, target: TargetKind, rpc: Rpc) -> Code {
    let allowed = |yes: bool| if yes { Code::Ok } else { Code::PermissionDenied };
    if caller == CallerKind::Anonymous {
        Code::Unauthenticated
    } else if !caller.holds(rpc) {
        Code::PermissionDenied
    } else if caller == CallerKind::Admin {
        Code::Ok
    } else if rpc == Rpc::Create {
        // Creating a key for another owner is a missing right, not a hidden key. A key
        // asked for without an expiry gets one within the caller's own.
        allowed(
            target != TargetKind::OtherOwner
                && target.credits_grantable_by(caller)
                && (target == TargetKind::NoExpiry || target.grantable_by(caller)),
        )
    } else if !target.in_reach(caller) {
        Code::NotFound
    } else if rpc == Rpc::Restore && !caller.holds(Rpc::Undelete) {
        Code::PermissionDenied
    } else {
        // Reading needs reach only; every change needs the key within the caller's grant,
        // and a new secret the key's credits too.
        allowed(
            rpc == Rpc::Get
                || (target.grantable_by(caller) && (rpc != Rpc::Rotate || target.credits_grantable_by(caller))),
        )
    }
}

/// The callers' credentials: a key secret or a person's JWT, per caller kind.
struct Callers {
    secrets: Vec<(CallerKind, String)>,
}

impl Callers {
    fn owner(kind: CallerKind) -> String {
        format!("tenant-{kind:?}").to_lowercase()
    }

    async fn create(app: &TestApp, signer: &Signer) -> Self {
        let mut secrets = Vec::new();
        for kind in CALLERS {
            let secret = match kind {
                CallerKind::SuperDev => signer.token(&Self::owner(kind), &["Super_Dev"], ORG),
                CallerKind::IssuerAdmin => signer.token(&Self::owner(kind), &["Issuer_Admin"], ORG),
                CallerKind::Anonymous => String::new(),
                CallerKind::Admin
                | CallerKind::Reader
                | CallerKind::Writer
                | CallerKind::Verifier
                | CallerKind::Manager
                | CallerKind::ReaderWriter
                | CallerKind::LimitedWriter => {
                    let mut key = v1::ApiKey {
                        name: format!("{kind:?} caller"),
                        owner: Self::owner(kind),
                        organization_id: ORG.into(),
                        scopes: kind.scopes().iter().map(|s| (*s).to_owned()).collect(),
                        ..Default::default()
                    };
                    if kind == CallerKind::LimitedWriter {
                        key.usage_limited = true;
                        key.expire_time = Some(timestamp_in(7200));
                        key.networks = vec!["Preprod".into()];
                    }
                    let request = v1::CreateApiKeyRequest { api_key: Some(key), ..Default::default() };
                    app.client.clone().create_api_key(admin(request)).await.unwrap().into_inner().secret
                }
            };
            secrets.push((kind, secret));
        }
        Self { secrets }
    }

    fn request<T>(&self, kind: CallerKind, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let secret = &self.secrets.iter().find(|(k, _)| *k == kind).unwrap().1;
        if !secret.is_empty() {
            request.metadata_mut().insert("authorization", format!("Bearer {secret}").parse().unwrap());
        }
        request
    }
}

async fn create_target(app: &TestApp, key: v1::ApiKey) -> v1::ApiKey {
    let request = v1::CreateApiKeyRequest { api_key: Some(key), ..Default::default() };
    app.client.clone().create_api_key(admin(request)).await.unwrap().into_inner().api_key.unwrap()
}

/// The key as admin sees it, with its balances.
async fn snapshot(app: &TestApp, id: &str) -> v1::ApiKey {
    let request = admin(v1::GetApiKeyRequest { id: id.to_owned() });
    app.client.clone().get_api_key(request).await.unwrap().into_inner().api_key.unwrap()
}

async fn call(
    client: &ApiKeyServiceClient<Channel>,
    credits: &CreditServiceClient<Channel>,
    callers: &Callers,
    caller: CallerKind,
    rpc: Rpc,
    target: &v1::ApiKey,
) -> Result<(), Status> {
    let (mut client, mut credits) = (client.clone(), credits.clone());
    let id = target.id.clone();
    match rpc {
        Rpc::Create => {
            let mut key = target.clone();
            key.name = "made by the caller".into();
            let message = v1::CreateApiKeyRequest { api_key: Some(key), ..Default::default() };
            let created = client.create_api_key(callers.request(caller, message)).await?.into_inner();
            let expiry = created.api_key.unwrap().expire_time.map(|at| at.seconds);
            // A key made without an expiry by an expiring caller lives no longer than it.
            if caller == CallerKind::LimitedWriter {
                assert!(expiry.is_some_and(|at| at <= timestamp_in(7200).seconds), "{expiry:?}");
            }
            Ok(())
        }
        Rpc::Get => client.get_api_key(callers.request(caller, v1::GetApiKeyRequest { id })).await.map(drop),
        Rpc::Update => {
            let message = v1::UpdateApiKeyRequest {
                api_key: Some(v1::ApiKey { id, name: "renamed".into(), ..Default::default() }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["name".into()] }),
                ..Default::default()
            };
            client.update_api_key(callers.request(caller, message)).await.map(drop)
        }
        Rpc::Rotate => {
            let message = v1::RotateApiKeyRequest { id, ..Default::default() };
            client.rotate_api_key(callers.request(caller, message)).await.map(drop)
        }
        Rpc::AdjustCredits => {
            let message = v1::AdjustCreditsRequest {
                api_key_id: id,
                deltas: vec![v1::CreditDelta { unit: String::new(), delta: 5 }],
                ..Default::default()
            };
            credits.adjust_credits(callers.request(caller, message)).await.map(drop)
        }
        Rpc::SetLowThreshold => {
            let thresholds = vec![v1::CreditAmount { unit: String::new(), amount: 5 }];
            let message = v1::UpdateApiKeyRequest {
                api_key: Some(v1::ApiKey { id, credit_low_thresholds: thresholds, ..Default::default() }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["credit_low_thresholds".into()] }),
                ..Default::default()
            };
            client.update_api_key(callers.request(caller, message)).await.map(drop)
        }
        Rpc::Delete => {
            let message = v1::DeleteApiKeyRequest { id, request_id: String::new() };
            client.delete_api_key(callers.request(caller, message)).await.map(drop)
        }
        Rpc::Undelete => {
            let message = v1::UndeleteApiKeyRequest { id, request_id: String::new() };
            client.undelete_api_key(callers.request(caller, message)).await.map(drop)
        }
        Rpc::Restore => {
            let key = v1::ApiKey { id, status: v1::ApiKeyStatus::Active.into(), ..Default::default() };
            let message = v1::UpdateApiKeyRequest {
                api_key: Some(key),
                update_mask: Some(prost_types::FieldMask { paths: vec!["status".into()] }),
                ..Default::default()
            };
            client.update_api_key(callers.request(caller, message)).await.map(drop)
        }
    }
}

async fn every_caller_against_every_target(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let signer = Signer::ec("escalation");
    write_jwks(&jwks, &[&signer]);
    let app = spawn_with_jwks(backend, jwks.to_str().unwrap(), Duration::from_secs(60)).await;
    let callers = Callers::create(&app, &signer).await;
    let credits = CreditServiceClient::new(app.channel.clone());
    let mut failures = Vec::new();
    for caller in CALLERS {
        let owner = Callers::owner(caller);
        for target_kind in TARGETS {
            let shape = target_kind.key(&owner);
            // Create: the caller tries to make a key shaped like the target.
            let outcome = call(&app.client, &credits, &callers, caller, Rpc::Create, &shape).await;
            check(&mut failures, caller, target_kind, Rpc::Create, &outcome);

            let live = create_target(&app, shape.clone()).await;
            for rpc in [Rpc::Get, Rpc::Update, Rpc::Rotate, Rpc::AdjustCredits, Rpc::SetLowThreshold, Rpc::Delete] {
                let before = snapshot(&app, &live.id).await;
                let outcome = call(&app.client, &credits, &callers, caller, rpc, &live).await;
                check(&mut failures, caller, target_kind, rpc, &outcome);
                if outcome.is_err() && snapshot(&app, &live.id).await != before {
                    failures.push(format!("{caller:?} {rpc:?} {target_kind:?}: refused, yet the key changed"));
                }
            }

            for rpc in [Rpc::Undelete, Rpc::Restore] {
                let revoked = create_target(&app, shape.clone()).await;
                let message = admin(v1::DeleteApiKeyRequest { id: revoked.id.clone(), request_id: String::new() });
                app.client.clone().delete_api_key(message).await.unwrap();
                let before = snapshot(&app, &revoked.id).await;
                let outcome = call(&app.client, &credits, &callers, caller, rpc, &revoked).await;
                check(&mut failures, caller, target_kind, rpc, &outcome);
                let after = snapshot(&app, &revoked.id).await;
                if outcome.is_err() && after != before {
                    failures.push(format!("{caller:?} {rpc:?} {target_kind:?}: refused, yet the key changed"));
                }
                if outcome.is_ok() && after.status != i32::from(v1::ApiKeyStatus::Active) {
                    failures.push(format!("{caller:?} {rpc:?} {target_kind:?}: allowed, yet not active"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} answers differ from the rule:\n{}", failures.len(), failures.join("\n"));

    // A Super_Dev reads the usage of its own keys; another owner's is not its to read.
    let usage = |owner: &str| v1::GetUsageRequest {
        owner: owner.to_owned(),
        start_time: Some(timestamp_in(-3600)),
        ..Default::default()
    };
    let own = usage(&Callers::owner(CallerKind::SuperDev));
    credits.clone().get_usage(callers.request(CallerKind::SuperDev, own)).await.expect("its own usage");
    let other = usage(&Callers::owner(CallerKind::Writer));
    let refused = credits.clone().get_usage(callers.request(CallerKind::SuperDev, other)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    app.stop().await;
}
both!(every_caller_against_every_target);

fn check(failures: &mut Vec<String>, caller: CallerKind, target: TargetKind, rpc: Rpc, outcome: &Result<(), Status>) {
    let got = outcome.as_ref().map_or_else(Status::code, |()| Code::Ok);
    let want = expected(caller, target, rpc);
    if got != want {
        let message = outcome.as_ref().err().map(|status| status.message().to_owned()).unwrap_or_default();
        failures.push(format!("{caller:?} {rpc:?} {target:?}: want {want:?}, got {got:?} {message}"));
    }
}
