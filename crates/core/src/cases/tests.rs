//! The use cases as pure functions: a caller, a command, the settings and a fixed `now`.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::*;
use crate::{
    Error,
    credit::Credit,
    environment::{Environment, Environments},
    model::{ApiKey, KeyPatch, KeyStatus},
    policy::{Action, Caller, Person},
    secret::SecretHasher,
};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).single().unwrap()
}

fn settings() -> KeySettings {
    let environments = Environments::new(
        vec![
            Environment {
                name: "production".into(),
                key_prefix: "kw_live".into(),
                max_live_keys: 100,
                default_ttl: Some(Duration::from_secs(90 * 86_400)),
            },
            Environment { name: "sandbox".into(), key_prefix: "kw_test".into(), max_live_keys: 5, default_ttl: None },
        ],
        "production",
    )
    .unwrap();
    KeySettings {
        environments,
        undelete_retention: Duration::from_secs(30 * 86_400),
        max_rotation_grace: Duration::from_secs(86_400),
    }
}

fn hasher() -> SecretHasher {
    SecretHasher::new(&SecretString::from("unit test hash secret"))
}

fn key(scopes: &[&str], expires_at: Option<DateTime<Utc>>) -> ApiKey {
    ApiKey {
        id: uuid::Uuid::now_v7(),
        number: 1,
        name: "caller".into(),
        mask: String::new(),
        owner: "svc-a".into(),
        creator: "root".into(),
        organization_id: "org-1".into(),
        organization_name: "Org One".into(),
        environment: "production".into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        networks: BTreeSet::new(),
        status: KeyStatus::Active,
        usage_limited: false,
        created_at: now(),
        updated_at: now(),
        expires_at,
        deleted_at: None,
        last_used_at: None,
        metadata: Default::default(),
        rate_limits: vec![],
        credit_source: Default::default(),
        roles: BTreeSet::new(),
        effective_scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn caller(scopes: &[&str], expires_at: Option<DateTime<Utc>>) -> Caller {
    Caller::Key(Arc::new(key(scopes, expires_at)))
}

fn command(environment: &str) -> CreateKey {
    CreateKey {
        name: "new".into(),
        owner: String::new(),
        organization_id: String::new(),
        organization_name: String::new(),
        environment: environment.into(),
        scopes: BTreeSet::new(),
        networks: BTreeSet::new(),
        status: KeyStatus::Active,
        usage_limited: false,
        expires_at: None,
        metadata: Default::default(),
        credits: vec![],
        refills: vec![],
        low_thresholds: vec![],
        rate_limits: vec![],
        credit_source: Default::default(),
        import_secret: None,
        roles: Default::default(),
    }
}

#[test]
fn a_new_key_belongs_to_its_creator_and_lives_the_environments_ttl() {
    let creation = create_key(&caller(&["keys:write"], None), command("production"), &settings(), &hasher(), now())
        .expect("keys:write creates its own keys");
    let key = &creation.new.key;
    assert_eq!(
        (key.owner.as_str(), key.organization_id.as_str(), key.organization_name.as_str()),
        ("svc-a", "org-1", "Org One")
    );
    assert_eq!(key.expires_at, Some(now() + chrono::Duration::days(90)));
    assert!(creation.secret.expose_secret().starts_with("kw_live_"));
    assert_eq!(creation.new.secret_hash, hasher().hash(creation.secret.expose_secret()));
    assert_eq!(creation.max_live_keys, 100);
}

#[test]
fn a_new_key_never_outlives_the_key_that_creates_it() {
    let ceiling = now() + chrono::Duration::days(2);
    let creation =
        create_key(&caller(&["keys:write"], Some(ceiling)), command("sandbox"), &settings(), &hasher(), now()).unwrap();
    assert_eq!(creation.new.key.expires_at, Some(ceiling), "no TTL in sandbox, but the creator's expiry caps it");
    let creation =
        create_key(&caller(&["keys:write"], Some(ceiling)), command("production"), &settings(), &hasher(), now())
            .unwrap();
    assert_eq!(creation.new.key.expires_at, Some(ceiling), "the earlier of the TTL and the creator's expiry");
}

#[test]
fn creating_refuses_what_the_caller_could_not_grant() {
    let writer = caller(&["keys:write"], None);
    let credited = CreateKey { credits: vec![Credit::new("", 10)], ..command("production") };
    assert!(matches!(
        create_key(&writer, credited, &settings(), &hasher(), now()),
        Err(Error::PermissionDenied { .. })
    ));
    let admin_scoped = CreateKey { scopes: BTreeSet::from(["admin".to_owned()]), ..command("production") };
    assert!(matches!(
        create_key(&writer, admin_scoped, &settings(), &hasher(), now()),
        Err(Error::PermissionDenied { .. })
    ));
    let elsewhere = CreateKey { owner: "svc-b".into(), ..command("production") };
    assert!(matches!(
        create_key(&writer, elsewhere, &settings(), &hasher(), now()),
        Err(Error::PermissionDenied { .. })
    ));
    let imported = CreateKey { import_secret: Some(SecretString::from("imported-secret-0123456789")), ..command("") };
    assert!(matches!(
        create_key(&writer, imported, &settings(), &hasher(), now()),
        Err(Error::PermissionDenied { .. })
    ));
    assert!(create_key(&caller(&["keys:read"], None), command(""), &settings(), &hasher(), now()).is_err());
    assert!(admit_create(&caller(&["keys:read"], None), false).is_err());
    assert!(admit_create(&writer, true).is_err());
}

#[test]
fn low_thresholds_on_a_new_key_take_admin() {
    let alerted = || CreateKey { low_thresholds: vec![Credit::new("", 10)], ..command("production") };
    assert!(create_key(&caller(&["keys:write"], None), alerted(), &settings(), &hasher(), now()).is_err());
    let creation = create_key(&caller(&["admin"], None), alerted(), &settings(), &hasher(), now()).unwrap();
    assert_eq!(creation.new.low_thresholds, vec![Credit::new("", 10)]);
}

#[test]
fn an_imported_secret_is_kept_and_only_hashed() {
    let admin = caller(&["admin"], None);
    let imported = CreateKey { import_secret: Some(SecretString::from("imported-secret-0123456789")), ..command("") };
    let creation = create_key(&admin, imported, &settings(), &hasher(), now()).unwrap();
    assert_eq!(creation.secret.expose_secret(), "imported-secret-0123456789");
    assert!(!creation.new.key.mask.contains("imported-secret"));
}

#[test]
fn an_unknown_environment_is_an_invalid_argument() {
    let result = create_key(&caller(&["admin"], None), command("staging"), &settings(), &hasher(), now());
    assert!(matches!(result, Err(Error::InvalidArgument(_))));
}

#[test]
fn updating_credits_usage_limits_or_secrets_takes_admin() {
    let writer = caller(&["keys:write"], None);
    let renamed =
        UpdateKey { patch: KeyPatch { name: Some("x".into()), ..KeyPatch::default() }, ..UpdateKey::default() };
    let update = update_key(&writer, &renamed, &settings(), &hasher(), now()).expect("keys:write renames");
    assert!(update.secret.is_none());
    let credited = UpdateKey { credit_deltas: vec![Credit::new("", 5)], ..UpdateKey::default() };
    assert!(update_key(&writer, &credited, &settings(), &hasher(), now()).is_err());
    let unmetered =
        UpdateKey { patch: KeyPatch { usage_limited: Some(false), ..KeyPatch::default() }, ..UpdateKey::default() };
    assert!(update_key(&writer, &unmetered, &settings(), &hasher(), now()).is_err());
    let limit = crate::rate::RateLimit { name: "api".into(), limit: 1, period_ms: 1_000, burst: 1, auto_apply: true };
    let limited =
        UpdateKey { patch: KeyPatch { rate_limits: Some(vec![limit]), ..KeyPatch::default() }, ..UpdateKey::default() };
    assert!(update_key(&writer, &limited, &settings(), &hasher(), now()).is_err());
    let thresholds = Some(vec![Credit::new("", 10)]);
    let alerted =
        UpdateKey { patch: KeyPatch { low_thresholds: thresholds, ..KeyPatch::default() }, ..UpdateKey::default() };
    assert!(update_key(&writer, &alerted, &settings(), &hasher(), now()).is_err());
    assert!(update_key(&caller(&["admin"], None), &alerted, &settings(), &hasher(), now()).is_ok());
    let imported =
        UpdateKey { import_secret: Some(SecretString::from("imported-secret-0123456789")), ..UpdateKey::default() };
    assert!(update_key(&writer, &imported, &settings(), &hasher(), now()).is_err());
    let update = update_key(&caller(&["admin"], None), &imported, &settings(), &hasher(), now()).unwrap();
    let secret = update.secret.expect("an imported secret is installed");
    assert_eq!(secret.hash, hasher().hash("imported-secret-0123456789"));
    assert_eq!(secret.old_secrets_until, now(), "the old secret stops at once");
    assert!(admit_update(&caller(&["keys:read"], None)).is_err());
}

#[test]
fn a_status_brings_a_revoked_key_back_only_as_undelete_would() {
    let revoked_at = |days: i64| ApiKey {
        status: KeyStatus::Revoked,
        deleted_at: Some(now() - chrono::Duration::days(days)),
        usage_limited: true,
        expires_at: Some(now() + chrono::Duration::days(1)),
        ..key(&[], None)
    };
    let activate = UpdateKey {
        patch: KeyPatch { status: Some(KeyStatus::Active), ..KeyPatch::default() },
        ..UpdateKey::default()
    };
    let writer = update_key(&caller(&["keys:write"], None), &activate, &settings(), &hasher(), now()).unwrap();
    writer.restore.admit(&revoked_at(29), now()).expect("keys:write undeletes its own keys");
    let late = writer.restore.admit(&revoked_at(31), now()).unwrap_err();
    assert!(matches!(late, Error::FailedPrecondition { reason: "RETENTION_EXPIRED", .. }), "{late:?}");
    let live = writer.restore.admit(&key(&[], None), now()).unwrap_err();
    assert!(matches!(live, Error::FailedPrecondition { reason: "API_KEY_NOT_REVOKED", .. }), "{live:?}");
    // MANAGE may update its keys but not undelete them: not through an update either.
    let manager = update_key(&caller(&["MANAGE"], None), &activate, &settings(), &hasher(), now()).unwrap();
    let refused = manager.restore.admit(&revoked_at(1), now()).unwrap_err();
    assert!(matches!(refused, Error::PermissionDenied { action: "undelete API keys" }), "{refused:?}");
    // Nor past the ceiling: a key the caller could not have made stays revoked.
    let unmetered = ApiKey { usage_limited: false, ..revoked_at(1) };
    let limited = Caller::Key(Arc::new(ApiKey { usage_limited: true, ..key(&["keys:write"], None) }));
    let update = update_key(&limited, &activate, &settings(), &hasher(), now()).unwrap();
    assert!(matches!(update.restore.admit(&unmetered, now()), Err(Error::PermissionDenied { .. })));

    let renamed = KeyPatch { name: Some("x".into()), ..KeyPatch::default() };
    assert!(renamed.apply(&revoked_at(1), now()).is_err(), "a revoked key takes no other change alone");
    let back = activate.patch.apply(&revoked_at(1), now()).unwrap();
    assert_eq!((back.status, back.deleted_at), (KeyStatus::Active, None));
}

#[test]
fn a_rotation_keeps_the_old_secret_for_its_grace_and_no_longer() {
    let target = key(&[], None);
    let grace = Duration::from_secs(3600);
    let (installed, secret) = rotate_key(&target, None, grace, &settings(), &hasher(), now()).unwrap();
    assert!(secret.expose_secret().starts_with("kw_live_"), "generated in the key's environment");
    assert_eq!(installed.old_secrets_until, now() + chrono::Duration::hours(1));
    let too_long = rotate_key(&target, None, Duration::from_secs(2 * 86_400), &settings(), &hasher(), now());
    assert!(matches!(too_long, Err(Error::InvalidArgument(_))));
    let gone = ApiKey { environment: "retired".into(), ..key(&[], None) };
    let unconfigured = rotate_key(&gone, None, Duration::ZERO, &settings(), &hasher(), now());
    assert!(matches!(unconfigured, Err(Error::FailedPrecondition { reason: "ENVIRONMENT_NOT_CONFIGURED", .. })));
    assert!(admit_rotation(&caller(&["keys:write"], None), true).is_err(), "importing takes admin");
    assert!(admit_rotation(&caller(&["keys:write"], None), false).is_ok());
    assert!(authorize_key_mutation(&caller(&["keys:read"], None), Action::DeleteKey).is_err());
}

#[test]
fn a_quota_is_read_for_oneself_or_within_reach() {
    assert_eq!(quota_owner(&caller(&["keys:read"], None), String::new()).unwrap(), "svc-a");
    assert!(quota_owner(&caller(&["keys:read"], None), "svc-b".into()).is_err());
    assert_eq!(quota_owner(&caller(&["admin"], None), "svc-b".into()).unwrap(), "svc-b");
    let person = Caller::Person(Arc::new(Person {
        subject: "user-1".into(),
        organization_id: String::new(),
        organization_name: String::new(),
        roles: BTreeSet::from(["Issuer_Dev".to_owned()]),
    }));
    assert_eq!(quota_owner(&person, String::new()).unwrap(), "user-1");
    assert_eq!(settings().quota("sandbox"), 5);
    assert_eq!(settings().quota("retired"), i64::MAX, "an environment no longer configured has no quota");
}

#[test]
fn owner_limits_are_set_by_admins_and_read_by_readers_of_the_owner() {
    let writer = caller(&["keys:write"], None);
    assert!(super::admit_set_limits(&writer, "svc-a").is_err());
    assert!(super::admit_set_limits(&caller(&["admin"], None), "anyone").is_ok());
    assert_eq!(super::limits_owner(&writer, String::new()).unwrap(), "svc-a");
    assert!(super::limits_owner(&writer, "svc-b".into()).is_err());
}
