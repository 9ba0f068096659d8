//! The policy table and the ceiling rule, case by case.

use super::*;
use crate::model::KeyStatus;

fn caller(scopes: &[&str]) -> Caller {
    let now = chrono::Utc::now();
    Caller::Key(Arc::new(ApiKey {
        id: uuid::Uuid::now_v7(),
        number: 1,
        name: "caller".into(),
        mask: String::new(),
        owner: "svc-a".into(),
        creator: "root".into(),
        organization_id: String::new(),
        organization_name: String::new(),
        environment: "production".into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        networks: BTreeSet::new(),
        status: KeyStatus::Active,
        usage_limited: false,
        created_at: now,
        updated_at: now,
        expires_at: None,
        deleted_at: None,
        last_used_at: None,
        metadata: Default::default(),
        rate_limits: vec![],
        credit_source: Default::default(),
        roles: BTreeSet::new(),
        effective_scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
    }))
}

#[test]
fn the_table_decides_each_right() {
    assert_eq!(authorize(&caller(&["admin"]), Action::ImportSecret).unwrap(), Reach::All);
    assert_eq!(authorize(&caller(&["keys:read"]), Action::ReadKeys).unwrap(), Reach::Owner("svc-a".into()));
    assert!(authorize(&caller(&["keys:read"]), Action::CreateKey).is_err());
    assert!(authorize(&caller(&["keys:write"]), Action::ImportSecret).is_err());
    assert_eq!(authorize(&caller(&["verify"]), Action::VerifyKey).unwrap(), Reach::All);
    assert!(authorize(&caller(&["verify"]), Action::ReadKeys).is_err());
    assert!(authorize(&caller(&["app:read"]), Action::ReadCallerKey).is_ok());
    assert_eq!(authorize(&caller(&["MANAGE"]), Action::CreateKey).unwrap(), Reach::Owner("svc-a".into()));
    assert!(authorize(&caller(&["READ", "CREATE", "UPDATE", "DELETE"]), Action::ReadKeys).is_err());
}

fn person(roles: &[&str]) -> Caller {
    Caller::Person(Arc::new(Person {
        subject: "user-1".into(),
        organization_id: "org-1".into(),
        organization_name: "Org One".into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
    }))
}

#[test]
fn psp_roles_follow_the_claims_table() {
    let own = Reach::Owner("user-1".into());
    let org = Reach::Organization { id: "org-1".into(), subject: "user-1".into() };
    assert_eq!(authorize(&person(&["Super_Dev"]), Action::ReadKeys).unwrap(), org);
    assert_eq!(authorize(&person(&["Super_Dev"]), Action::DeleteKey).unwrap(), org);
    assert!(authorize(&person(&["Super_Dev"]), Action::CreateKey).is_err());
    for role in KEY_MANAGER_ROLES {
        for action in [Action::ReadKeys, Action::CreateKey, Action::UpdateKey, Action::DeleteKey, Action::ReadQuota] {
            assert_eq!(authorize(&person(&[role]), action).unwrap(), own, "{role} {action:?}");
        }
        assert!(authorize(&person(&[role]), Action::VerifyKey).is_err());
    }
    assert_eq!(authorize(&person(&["Super_Dev", "Issuer_Dev"]), Action::ReadKeys).unwrap(), org, "the wider reach");
    assert!(authorize(&person(&["Viewer"]), Action::ReadKeys).is_err());
    assert!(authorize(&person(&[]), Action::ReadCallerKey).is_err());
}

fn key(scopes: &[&str]) -> ApiKey {
    match caller(scopes) {
        Caller::Key(key) => (*key).clone(),
        Caller::Person(_) => unreachable!("caller() makes key callers"),
    }
}

#[test]
fn callers_grant_only_what_they_hold() {
    let writer = caller(&["keys:write"]);
    assert!(permit(&writer, &key(&["keys:write", "app:anything"])).is_ok());
    for scope in RESERVED_SCOPES.iter().filter(|scope| **scope != "keys:write") {
        assert!(permit(&writer, &key(&[scope])).is_err(), "{scope}");
        assert!(permit(&caller(&["admin"]), &key(&[scope])).is_ok(), "{scope}");
    }
    let mut other_org = key(&[]);
    other_org.organization_id = "org-2".into();
    assert!(permit(&writer, &other_org).is_err());
    assert!(permit(&person(&["Super_Dev"]), &key(&[])).is_err(), "a key outside the person's organisation");

    let mut limited = key(&["keys:write"]);
    limited.usage_limited = true;
    limited.expires_at = Some(chrono::Utc::now() + chrono::Duration::days(1));
    limited.networks = ["Preprod".to_owned()].into();
    let limited = Caller::Key(Arc::new(limited.clone()));
    let mut child = key(&[]);
    assert!(permit(&limited, &child).is_err(), "unmetered, no expiry, any network");
    child.usage_limited = true;
    assert!(permit(&limited, &child).is_err(), "no expiry, any network");
    child.expires_at = limited.expiry_ceiling();
    assert!(permit(&limited, &child).is_err(), "any network");
    child.networks = ["Preprod".to_owned()].into();
    assert!(permit(&limited, &child).is_ok());
    child.networks.insert("Mainnet".to_owned());
    assert!(permit(&limited, &child).is_err(), "a network beyond its own");
}

#[test]
fn super_dev_reaches_its_organisation_and_its_own_keys() {
    let reach = authorize(&person(&["Super_Dev"]), Action::ReadKeys).unwrap();
    let mut own = key(&[]);
    own.owner = "user-1".into();
    assert!(reach.covers(&own) && reach.covers_owner("user-1"));
    own.owner = "user-2".into();
    assert!(!reach.covers(&own) && !reach.covers_owner("user-2"));
    own.organization_id = "org-1".into();
    assert!(reach.covers(&own));
}

#[test]
fn drawing_on_the_owners_pool_takes_the_right_to_adjust_credits() {
    let (writer, admin) = (caller(&["keys:write"]), caller(&["admin"]));
    let mut pooled = key(&[]);
    pooled.usage_limited = true;
    pooled.credit_source = CreditSource::Owner;
    assert!(authorize_new_key(&writer, &key(&[]), false).is_ok());
    assert!(authorize_new_key(&writer, &pooled, false).is_err(), "a pooled key spends what the writer could not grant");
    assert!(authorize_new_key(&admin, &pooled, false).is_ok());
    let patch = crate::model::KeyPatch { credit_source: Some(CreditSource::Owner), ..Default::default() };
    assert!(authorize_patch(&writer, &patch).is_err());
    assert!(authorize_patch(&admin, &patch).is_ok());
    let rotation = authorize_mutation(&writer, Action::RotateKey).unwrap();
    assert!(rotation.admit_secret(&key(&[]), false).is_ok());
    assert!(rotation.admit_secret(&pooled, false).is_err(), "its secret spends the pool");
    assert!(authorize_mutation(&admin, Action::RotateKey).unwrap().admit_secret(&pooled, false).is_ok());
    // A pool is adjusted over its owner with the right to adjust credits, and read with
    // the right to read the owner's keys.
    assert!(authorize_owner(&writer, Action::AdjustCredits, "svc-a").is_err());
    assert!(authorize_owner(&admin, Action::AdjustCredits, "anyone").is_ok());
    assert!(authorize_owner(&writer, Action::ReadKeys, "svc-a").is_ok());
    assert!(authorize_owner(&writer, Action::ReadKeys, "svc-b").is_err());
}
