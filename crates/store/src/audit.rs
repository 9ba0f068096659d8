//! Reading the audit log back: filtered, newest first, and within the reader's reach.

use chrono::{DateTime, Utc};
use keyward_core::{error::Result, model::AuditEvent, policy::Reach};
use sea_orm::{ColumnTrait, EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::{Store, convert::audit_from_row, db::db_error, entity::audit_event};

/// Whose audit events a page holds.
#[derive(Debug, Clone, Default)]
pub enum AuditTargets {
    /// Every event, whatever its target.
    #[default]
    Any,
    /// The events of one key.
    Key(Uuid),
    /// The events of every key in reach (revoked ones included), by the owner and
    /// organisation each event's key had when it was written (neither ever changes), read
    /// newest first from an index on them: the cost of a page is not the number of keys.
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
            AuditTargets::InReach(Reach::All) => {}
            AuditTargets::InReach(Reach::Owner(owner)) => {
                select = select.filter(audit_event::Column::KeyOwner.eq(owner.as_str()));
            }
            AuditTargets::InReach(Reach::Organization { id, subject }) => {
                select = select.filter(
                    audit_event::Column::KeyOrganization
                        .eq(id.as_str())
                        .or(audit_event::Column::KeyOwner.eq(subject.as_str())),
                );
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
