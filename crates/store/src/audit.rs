//! Reading the audit log back: filtered, newest first, and within the reader's reach.

use chrono::{DateTime, Utc};
use keyward_core::{error::Result, model::AuditEvent, policy::Reach};
use sea_orm::{ColumnTrait, EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::{
    Store,
    convert::audit_from_row,
    db::db_error,
    entity::{api_key, audit_event},
};

/// Filters and position of one page of audit events.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only events whose target is one of these (key ids); `None` for any target.
    pub targets: Option<Vec<String>>,
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
        if let Some(targets) = &query.targets {
            select = select.filter(audit_event::Column::Target.is_in(targets.iter().cloned()));
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
        let rows = select.all(self.db()?).await.map_err(db_error)?;
        Ok(rows.into_iter().map(|row| (row.id, audit_from_row(row))).collect())
    }

    /// The ids of every key in `reach` (revoked ones included), as audit events name them.
    pub async fn key_ids_in_reach(&self, reach: &Reach) -> Result<Vec<String>> {
        let select = api_key::Entity::find().select_only().column(api_key::Column::Id);
        let select = match reach {
            Reach::All => select,
            Reach::Owner(owner) => select.filter(api_key::Column::Owner.eq(owner.as_str())),
            Reach::Organization { id, subject } => select.filter(
                api_key::Column::OrganizationId.eq(id.as_str()).or(api_key::Column::Owner.eq(subject.as_str())),
            ),
        };
        let ids = select.into_tuple::<uuid::Uuid>().all(self.db()?).await.map_err(db_error)?;
        Ok(ids.into_iter().map(|id| id.to_string()).collect())
    }
}
