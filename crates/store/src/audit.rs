//! Reading the audit log back: filtered, newest first, and within the reader's reach.

use chrono::{DateTime, Utc};
use keyward_core::{error::Result, model::AuditEvent, policy::Reach};
use sea_orm::{
    ColumnTrait, DbBackend, EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, Query, SelectStatement},
};
use uuid::Uuid;

use crate::{
    Store,
    convert::audit_from_row,
    db::db_error,
    entity::{api_key, audit_event},
};

/// Whose audit events a page holds.
#[derive(Debug, Clone, Default)]
pub enum AuditTargets {
    /// Every event, whatever its target.
    #[default]
    Any,
    /// The events of one key.
    Key(Uuid),
    /// The events of every key in reach (revoked ones included), as a subquery on the
    /// keys, so the statement does not grow with their number.
    InReach(Reach),
}

/// Filters and position of one page of audit events.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Whose events.
    pub targets: AuditTargets,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this outcome.
    pub outcome: Option<String>,
    /// At or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Before this time.
    pub until: Option<DateTime<Utc>>,
    /// Events before this id only.
    pub before: Option<i64>,
    /// Page size.
    pub limit: u64,
}

impl Store {
    /// One page of audit events, newest first, with their ids.
    pub async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<(i64, AuditEvent)>> {
        let mut select = audit_event::Entity::find().order_by_desc(audit_event::Column::Id).limit(query.limit);
        let db = self.db()?;
        match &query.targets {
            AuditTargets::Any => {}
            AuditTargets::Key(id) => select = select.filter(audit_event::Column::Target.eq(id.to_string())),
            AuditTargets::InReach(reach) => {
                select =
                    select.filter(audit_event::Column::Target.in_subquery(key_ids(db.get_database_backend(), reach)));
            }
        }
        if let Some(actor) = &query.actor {
            select = select.filter(audit_event::Column::Actor.eq(actor.as_str()));
        }
        if let Some(action) = &query.action {
            select = select.filter(audit_event::Column::Action.eq(action.as_str()));
        }
        if let Some(outcome) = &query.outcome {
            select = select.filter(audit_event::Column::Outcome.eq(outcome.as_str()));
        }
        if let Some(from) = query.from {
            select = select.filter(audit_event::Column::OccurredAt.gte(from));
        }
        if let Some(until) = query.until {
            select = select.filter(audit_event::Column::OccurredAt.lt(until));
        }
        if let Some(before) = query.before {
            select = select.filter(audit_event::Column::Id.lt(before));
        }
        let rows = select.all(db).await.map_err(db_error)?;
        Ok(rows.into_iter().map(|row| (row.id, audit_from_row(row))).collect())
    }
}

/// The ids of the keys in `reach`, as text the way audit events name them (lower-case
/// hyphenated): PostgreSQL prints a `uuid` so; SQLite holds it as 16 bytes.
fn key_ids(backend: DbBackend, reach: &Reach) -> SelectStatement {
    let id = if backend == DbBackend::Postgres {
        "CAST(api_keys.id AS TEXT)"
    } else {
        "CASE WHEN typeof(api_keys.id) = 'blob' THEN lower(substr(hex(api_keys.id), 1, 8) || '-' || \
         substr(hex(api_keys.id), 9, 4) || '-' || substr(hex(api_keys.id), 13, 4) || '-' || \
         substr(hex(api_keys.id), 17, 4) || '-' || substr(hex(api_keys.id), 21, 12)) ELSE api_keys.id END"
    };
    let mut query = Query::select();
    query.expr(Expr::cust(id)).from(api_key::Entity);
    match reach {
        Reach::All => {}
        Reach::Owner(owner) => {
            query.and_where(api_key::Column::Owner.eq(owner.as_str()));
        }
        Reach::Organization { id, subject } => {
            query.and_where(
                api_key::Column::OrganizationId.eq(id.as_str()).or(api_key::Column::Owner.eq(subject.as_str())),
            );
        }
    }
    query
}
