//! `keyward.v1.AuditService`: the audit log read back, within the reader's reach.

use keyward_core::{error::Result, page, policy, policy::Caller, validate::Checks};
use keyward_proto::v1::{self, audit_service_server::AuditService};
use keyward_store::{AuditQuery, AuditTargets, Store};
use tonic::{Request, Response, Status};

use crate::{
    convert::{from_timestamp, timestamp},
    status::to_status,
    verifier::Verifier,
};

/// Longest actor, action or outcome filter.
pub(crate) const MAX_FILTER_CHARS: usize = 250;

/// The AuditService implementation.
#[derive(Debug, Clone)]
pub struct AuditServiceImpl {
    store: Store,
    verifier: Verifier,
}

impl AuditServiceImpl {
    pub(crate) fn new(store: Store, verifier: Verifier) -> Self {
        Self { store, verifier }
    }

    async fn list(&self, caller: &Caller, request: v1::ListAuditEventsRequest) -> Result<v1::ListAuditEventsResponse> {
        let reach = policy::authorize_audit(caller)?;
        let v1::ListAuditEventsRequest {
            api_key_id,
            actor,
            action,
            outcome,
            start_time,
            end_time,
            page_size,
            page_token,
        } = request;
        let mut checks = Checks::new();
        let limit = match page::page_size(page_size) {
            Ok(limit) => limit,
            Err(_) => {
                checks.fail("page_size", format!("must not be negative, got {page_size}"));
                0
            }
        };
        let key = (!api_key_id.is_empty()).then(|| checks.uuid("api_key_id", &api_key_id));
        for (field, value) in [("actor", &actor), ("action", &action), ("outcome", &outcome)] {
            checks.text(field, value, MAX_FILTER_CHARS);
        }
        let mut time = |field: &str, at: Option<prost_types::Timestamp>| {
            at.and_then(|at| {
                let parsed = from_timestamp(&at);
                if parsed.is_none() {
                    checks.fail(field, "is not a valid timestamp");
                }
                parsed
            })
        };
        let from = time("start_time", start_time);
        let until = time("end_time", end_time);
        checks.finish()?;
        let targets = match key {
            // A key outside the reach is NOT_FOUND, as everywhere else.
            Some(id) => AuditTargets::Key(self.store.get(id, &reach).await?.id),
            None if reach == policy::Reach::All => AuditTargets::Any,
            None => AuditTargets::InReach(reach.clone()),
        };
        let filters = format!("{reach:?}|{api_key_id}|{actor}|{action}|{outcome}|{from:?}|{until:?}");
        let text = |value: String| Some(value).filter(|value| !value.is_empty());
        let query = AuditQuery {
            targets,
            actor: text(actor),
            action: text(action),
            outcome: text(outcome),
            from,
            until,
            before: page::decode(&page_token, &filters)?,
            limit: page::fetch_limit(limit),
        };
        let events = self.store.list_audit(&query).await?;
        let (events, next_page_token) = page::cut(events, limit, |(id, _)| page::encode(*id, &filters))?;
        let audit_events = events
            .into_iter()
            .map(|(id, event)| {
                let keyward_core::model::AuditEvent { actor, action, target, request_id, outcome, occurred_at } = event;
                v1::AuditEvent {
                    id,
                    actor,
                    action,
                    target,
                    request_id: request_id.unwrap_or_default(),
                    outcome,
                    occur_time: Some(timestamp(occurred_at)),
                }
            })
            .collect();
        Ok(v1::ListAuditEventsResponse { audit_events, next_page_token })
    }
}

#[tonic::async_trait]
impl AuditService for AuditServiceImpl {
    #[tracing::instrument(name = "ListAuditEvents", skip_all)]
    async fn list_audit_events(
        &self,
        request: Request<v1::ListAuditEventsRequest>,
    ) -> Result<Response<v1::ListAuditEventsResponse>, Status> {
        let caller = self.verifier.authenticate(request.metadata()).await.map_err(to_status)?;
        self.list(&caller, request.into_inner()).await.map(Response::new).map_err(to_status)
    }
}
