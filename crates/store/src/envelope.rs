//! The envelope every mutation is written in: its idempotency claim before the effect and
//! its audit row and, for a key, its event in the outbox beside it, in the effect's own
//! transaction. What every mutation records besides its effect belongs here.

use chrono::{DateTime, Utc};
use keyward_core::{
    Error,
    error::Result,
    event::{self, Author, EventType},
    model::{ApiKey, AuditAction, AuditEvent},
};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryOrder, TryInsertResult,
    sea_query::{Expr, InsertStatement, Query},
};
use uuid::Uuid;

use crate::{
    Store,
    convert::audit_from_row,
    db::db_error,
    entity::{api_key, audit_event, idempotency_record},
    outbox,
};

/// Who is mutating, under which idempotency token, and when.
#[derive(Debug, Clone)]
pub struct Mutation {
    /// Subject recorded in the audit event.
    pub actor: String,
    /// AIP-155 token; a repeat replays the first outcome.
    pub request_id: Option<String>,
    /// The time the mutation takes effect.
    pub now: DateTime<Utc>,
}

/// Whether a mutation's request id is new or repeats the same earlier request.
pub(crate) enum Claim {
    Fresh,
    Replay,
}

/// One mutation of one resource, as its audit row and idempotency record name it.
pub(crate) struct Envelope<'a> {
    mutation: &'a Mutation,
    action: AuditAction,
    target: Uuid,
    /// A create names a resource of its own making: a repeat is the same request even
    /// though it would create another id.
    creates: bool,
}

impl<'a> Envelope<'a> {
    /// The envelope of `action` on the existing resource `target`.
    pub(crate) fn of(mutation: &'a Mutation, action: AuditAction, target: Uuid) -> Self {
        Self { mutation, action, target, creates: false }
    }

    /// The envelope of `action` creating the resource `target`.
    pub(crate) fn creating(mutation: &'a Mutation, action: AuditAction, target: Uuid) -> Self {
        Self { mutation, action, target, creates: true }
    }

    /// Records (actor, request_id) or finds the earlier record of it; a request id used
    /// for another action or resource is refused.
    pub(crate) async fn claim(&self, txn: &DatabaseTransaction) -> Result<Claim> {
        let mutation = self.mutation;
        let Some(request_id) = &mutation.request_id else { return Ok(Claim::Fresh) };
        let inserted = idempotency_record::Entity::insert(idempotency_record::ActiveModel {
            actor: Set(mutation.actor.clone()),
            request_id: Set(request_id.clone()),
            operation: Set(self.action.as_str().to_owned()),
            key_id: Set(self.target),
            created_at: Set(mutation.now),
        })
        .on_conflict_do_nothing()
        .exec(txn)
        .await
        .map_err(db_error)?;
        match inserted {
            TryInsertResult::Inserted(_) | TryInsertResult::Empty => Ok(Claim::Fresh),
            TryInsertResult::Conflicted => {
                let earlier = self.earlier(txn, "idempotency record vanished during its own conflict").await?;
                let same_target = self.creates || earlier.key_id == self.target;
                if earlier.operation != self.action.as_str() || !same_target {
                    return Err(Error::invalid(
                        "request_id",
                        format!(
                            "was already used for {} of {} {}; use a fresh request_id for a new request",
                            earlier.operation,
                            target_kind(&earlier.operation),
                            earlier.key_id
                        ),
                    ));
                }
                Ok(Claim::Replay)
            }
        }
    }

    /// The refusal of a replay whose first answer cannot be given again (it showed a
    /// secret, which is shown only once).
    pub(crate) async fn already_applied(&self, txn: &DatabaseTransaction) -> Result<Error> {
        let request_id = self.mutation.request_id.clone().unwrap_or_default();
        let earlier = self.earlier(txn, "idempotency record vanished").await?;
        Ok(Error::AlreadyExists {
            reason: "REQUEST_ALREADY_APPLIED",
            message: format!(
                "request {request_id} was already applied to API key {}; its secret is shown only once",
                earlier.key_id
            ),
            resource_id: Some(earlier.key_id.to_string()),
        })
    }

    async fn earlier(&self, txn: &DatabaseTransaction, missing: &str) -> Result<idempotency_record::Model> {
        let request_id = self.mutation.request_id.clone().unwrap_or_default();
        idempotency_record::Entity::find_by_id((self.mutation.actor.clone(), request_id))
            .one(txn)
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::internal(missing.to_owned()))
    }

    /// Records that the effect happened, in its transaction.
    pub(crate) async fn record(&self, txn: &DatabaseTransaction) -> Result<()> {
        record_change(txn, self.mutation, self.action, &self.target.to_string()).await
    }

    /// Records that the effect on a key happened, in its transaction: the audit row and
    /// the event of the action in the outbox, with the key as it is now (and as it was,
    /// `previous`, for an update).
    pub(crate) async fn record_key(
        &self,
        txn: &DatabaseTransaction,
        key: &ApiKey,
        previous: Option<&ApiKey>,
    ) -> Result<()> {
        self.record(txn).await?;
        if let Some(kind) = EventType::of_action(self.action) {
            let author = Author { actor: &self.mutation.actor, request_id: self.mutation.request_id.as_deref() };
            outbox::emit(
                txn,
                kind,
                key.id,
                event::key_change(key, previous, author, self.mutation.now),
                self.mutation.now,
            )
            .await?;
        }
        Ok(())
    }
}

/// What an idempotent operation acts on, named as in its RPC: the record keeps only the
/// target's id.
fn target_kind(operation: &str) -> &'static str {
    let of = |actions: &[AuditAction]| actions.iter().any(|action| action.as_str() == operation);
    if of(&[AuditAction::AdjustOwnerCredits, AuditAction::UpdateOwnerCreditPool]) {
        "owner credit pool"
    } else if of(&[AuditAction::CaptureCreditHold, AuditAction::ReleaseCreditHold]) {
        "credit hold"
    } else {
        "API key"
    }
}

/// Records, in its transaction, that `action` changed `target`: a key's id, or an owner
/// for its shared limits (a change that is a full replacement, so it needs no claim).
pub(crate) async fn record_change(
    txn: &DatabaseTransaction,
    mutation: &Mutation,
    action: AuditAction,
    target: &str,
) -> Result<()> {
    let event = AuditEvent {
        actor: mutation.actor.clone(),
        action: action.as_str().to_owned(),
        target: target.to_owned(),
        request_id: mutation.request_id.clone(),
        outcome: "OK".to_owned(),
        occurred_at: mutation.now,
    };
    txn.execute(&audit_insert(&event)?).await.map_err(db_error)?;
    Ok(())
}

impl Store {
    /// Records an audit event that no effect carries: a failed mutation, or a read worth
    /// auditing (successful mutations are recorded with their effect).
    pub async fn record_audit(&self, event: &AuditEvent) -> Result<()> {
        self.db()?.execute(&audit_insert(event)?).await.map_err(db_error)?;
        Ok(())
    }

    /// Audit events, oldest first (for tests and operators).
    pub async fn audit_events(&self) -> Result<Vec<AuditEvent>> {
        let rows = audit_event::Entity::find()
            .order_by_asc(audit_event::Column::Id)
            .all(self.db()?)
            .await
            .map_err(db_error)?;
        Ok(rows.into_iter().map(audit_from_row).collect())
    }
}

/// The insert of one audit row. An event that targets a key carries the key's owner and
/// organisation, read by the same statement (by the key's unique id), so audit pages
/// within an owner's reach read an index on them.
fn audit_insert(event: &AuditEvent) -> Result<InsertStatement> {
    let target_key = Uuid::parse_str(&event.target).ok();
    let of_key = |column: api_key::Column| match target_key {
        Some(id) => Expr::SubQuery(
            None,
            Box::new(
                Query::select()
                    .column(column)
                    .from(api_key::Entity)
                    .and_where(api_key::Column::Id.eq(id))
                    .to_owned()
                    .into(),
            ),
        ),
        None => Expr::value(Option::<String>::None),
    };
    let mut insert = Query::insert();
    insert
        .into_table(audit_event::Entity)
        .columns([
            audit_event::Column::Actor,
            audit_event::Column::Action,
            audit_event::Column::Target,
            audit_event::Column::RequestId,
            audit_event::Column::Outcome,
            audit_event::Column::OccurredAt,
            audit_event::Column::KeyOwner,
            audit_event::Column::KeyOrganization,
        ])
        .values([
            Expr::value(event.actor.as_str()),
            Expr::value(event.action.as_str()),
            Expr::value(event.target.as_str()),
            Expr::value(event.request_id.clone()),
            Expr::value(event.outcome.as_str()),
            Expr::value(event.occurred_at),
            of_key(api_key::Column::Owner),
            of_key(api_key::Column::OrganizationId),
        ])
        .map_err(Error::internal)?;
    Ok(insert)
}
