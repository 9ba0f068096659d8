//! Rows ⇄ domain records.

use std::collections::{BTreeMap, BTreeSet};

use keyward_core::{
    Error,
    error::Result,
    model::{ApiKey, AuditEvent, CreditSource, KeyStatus},
};
use sea_orm::ActiveValue::Set;

use crate::entity::{api_key, audit_event};

fn corrupt(column: &str, err: impl std::fmt::Display) -> Error {
    Error::internal(format!("stored {column} is not valid: {err}"))
}

pub(crate) fn to_domain(row: api_key::Model) -> Result<ApiKey> {
    let api_key::Model {
        number,
        id,
        name,
        mask,
        owner,
        creator,
        organization_id,
        organization_name,
        environment,
        scopes,
        networks,
        status,
        usage_limited,
        metadata,
        created_at,
        updated_at,
        expires_at,
        deleted_at,
        last_used_at,
        rate_limits,
        credit_source,
    } = row;
    let scopes: BTreeSet<String> = serde_json::from_str(&scopes).map_err(|e| corrupt("scopes", e))?;
    let scopes_copy = scopes.clone();
    let networks: BTreeSet<String> = serde_json::from_str(&networks).map_err(|e| corrupt("networks", e))?;
    let metadata: BTreeMap<String, String> = serde_json::from_str(&metadata).map_err(|e| corrupt("metadata", e))?;
    let rate_limits = serde_json::from_str(&rate_limits).map_err(|e| corrupt("rate_limits", e))?;
    let status = KeyStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?;
    let credit_source = CreditSource::parse(&credit_source).ok_or_else(|| corrupt("credit_source", &credit_source))?;
    Ok(ApiKey {
        id,
        number,
        name,
        mask,
        owner,
        creator,
        organization_id,
        organization_name,
        environment,
        scopes,
        networks,
        status,
        usage_limited,
        created_at,
        updated_at,
        expires_at,
        deleted_at,
        last_used_at,
        metadata,
        rate_limits,
        credit_source,
        // Roles come from their own table: a read holding them fills these in.
        roles: BTreeSet::new(),
        effective_scopes: scopes_copy,
    })
}

pub(crate) fn to_row(key: &ApiKey) -> Result<api_key::ActiveModel> {
    let ApiKey {
        id,
        number: _,
        name,
        mask,
        owner,
        creator,
        organization_id,
        organization_name,
        environment,
        scopes,
        networks,
        status,
        usage_limited,
        created_at,
        updated_at,
        expires_at,
        deleted_at,
        last_used_at,
        metadata,
        rate_limits,
        credit_source,
        roles: _,
        effective_scopes: _,
    } = key.clone();
    Ok(api_key::ActiveModel {
        number: sea_orm::ActiveValue::NotSet,
        id: Set(id),
        name: Set(name),
        mask: Set(mask),
        owner: Set(owner),
        creator: Set(creator),
        organization_id: Set(organization_id),
        organization_name: Set(organization_name),
        environment: Set(environment),
        scopes: Set(serde_json::to_string(&scopes).map_err(Error::internal)?),
        networks: Set(serde_json::to_string(&networks).map_err(Error::internal)?),
        status: Set(status.as_str().to_owned()),
        usage_limited: Set(usage_limited),
        metadata: Set(serde_json::to_string(&metadata).map_err(Error::internal)?),
        created_at: Set(created_at),
        updated_at: Set(updated_at),
        expires_at: Set(expires_at),
        deleted_at: Set(deleted_at),
        last_used_at: Set(last_used_at),
        rate_limits: Set(serde_json::to_string(&rate_limits).map_err(Error::internal)?),
        credit_source: Set(credit_source.as_str().to_owned()),
    })
}

pub(crate) fn audit_from_row(row: audit_event::Model) -> AuditEvent {
    let audit_event::Model { id: _, actor, action, target, request_id, outcome, occurred_at, .. } = row;
    AuditEvent { actor, action, target, request_id, outcome, occurred_at }
}
