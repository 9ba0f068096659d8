//! `keyward.v1.WebhookService`: webhook endpoints, their signing secrets and their
//! deliveries. Admin only; every change is audited.

mod requests;
pub(crate) use requests::UPDATABLE_FIELDS;

use chrono::Utc;
use keyward_core::{
    crypto::MasterKey,
    error::Result,
    model::AuditAction,
    page,
    policy::{self, Action, Caller},
    webhook,
};
use keyward_proto::v1::{self, webhook_service_server::WebhookService};
use keyward_store::{AttemptQuery, Mutation, Store};
use secrecy::ExposeSecret;
use tonic::{Request, Response, Status};

use crate::{audit::audited, status::to_status, verifier::Verifier};

/// The WebhookService implementation.
#[derive(Debug, Clone)]
pub struct WebhookServiceImpl {
    store: Store,
    verifier: Verifier,
    master: MasterKey,
    allow_http: bool,
}

impl WebhookServiceImpl {
    pub(crate) fn new(store: Store, verifier: Verifier, master: MasterKey, allow_http: bool) -> Self {
        Self { store, verifier, master, allow_http }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.verifier.authenticate(request.metadata()).await.map_err(to_status)
    }

    fn mutation(caller: &Caller) -> Mutation {
        Mutation { actor: caller.subject(), request_id: None, now: Utc::now() }
    }

    async fn create(
        &self,
        caller: &Caller,
        request: v1::CreateWebhookEndpointRequest,
    ) -> Result<v1::CreateWebhookEndpointResponse> {
        policy::authorize(caller, Action::ManageWebhooks)?;
        let mutation = Self::mutation(caller);
        let endpoint = requests::endpoint(request, self.allow_http, mutation.now)?;
        let secret = webhook::new_secret();
        let created = self.store.create_endpoint(&self.master, &endpoint, &secret, &mutation).await?;
        Ok(v1::CreateWebhookEndpointResponse {
            webhook_endpoint: Some(requests::to_proto(&created)),
            secret: secret.expose_secret().to_owned(),
        })
    }

    async fn list(
        &self,
        caller: &Caller,
        request: v1::ListWebhookEndpointsRequest,
    ) -> Result<v1::ListWebhookEndpointsResponse> {
        policy::authorize(caller, Action::ManageWebhooks)?;
        let v1::ListWebhookEndpointsRequest { page_size, page_token } = request;
        let limit = page::page_size(page_size)?;
        let filters = "webhook_endpoints";
        let after = page::decode_id(&page_token, filters)?;
        let endpoints = self.store.endpoints(after, page::fetch_limit(limit)).await?;
        let (endpoints, next_page_token) =
            page::cut(endpoints, limit, |endpoint| page::encode_id(endpoint.id, filters))?;
        Ok(v1::ListWebhookEndpointsResponse {
            webhook_endpoints: endpoints.iter().map(requests::to_proto).collect(),
            next_page_token,
        })
    }

    async fn deliveries(
        &self,
        caller: &Caller,
        request: v1::ListWebhookDeliveriesRequest,
    ) -> Result<v1::ListWebhookDeliveriesResponse> {
        policy::authorize(caller, Action::ManageWebhooks)?;
        let v1::ListWebhookDeliveriesRequest { endpoint_id, event_id, page_size, page_token } = request;
        let endpoint = requests::id("endpoint_id", &endpoint_id)?;
        let event = if event_id.is_empty() { None } else { Some(requests::id("event_id", &event_id)?) };
        let limit = page::page_size(page_size)?;
        let filters = format!("deliveries|{endpoint_id}|{event_id}");
        let query = AttemptQuery {
            endpoint_id: endpoint,
            event_id: event,
            before: page::decode(&page_token, &filters)?,
            limit: page::fetch_limit(limit),
        };
        let attempts = self.store.attempts(&query).await?;
        let (attempts, next_page_token) = page::cut(attempts, limit, |attempt| page::encode(attempt.id, &filters))?;
        Ok(v1::ListWebhookDeliveriesResponse {
            webhook_deliveries: attempts.iter().map(requests::delivery).collect(),
            next_page_token,
        })
    }
}

#[tonic::async_trait]
impl WebhookService for WebhookServiceImpl {
    #[tracing::instrument(name = "CreateWebhookEndpoint", skip_all)]
    async fn create_webhook_endpoint(
        &self,
        request: Request<v1::CreateWebhookEndpointRequest>,
    ) -> Result<Response<v1::CreateWebhookEndpointResponse>, Status> {
        let caller = self.caller(&request).await?;
        let result = self.create(&caller, request.into_inner()).await;
        audited(&self.store, &caller, AuditAction::CreateWebhookEndpoint, "", "", result).await.map(Response::new)
    }

    #[tracing::instrument(name = "GetWebhookEndpoint", skip_all)]
    async fn get_webhook_endpoint(
        &self,
        request: Request<v1::GetWebhookEndpointRequest>,
    ) -> Result<Response<v1::GetWebhookEndpointResponse>, Status> {
        let caller = self.caller(&request).await?;
        let v1::GetWebhookEndpointRequest { id } = request.into_inner();
        let result = async {
            policy::authorize(&caller, Action::ManageWebhooks)?;
            let endpoint = self.store.endpoint(requests::id("id", &id)?).await?;
            Ok(v1::GetWebhookEndpointResponse { webhook_endpoint: Some(requests::to_proto(&endpoint)) })
        }
        .await;
        result.map(Response::new).map_err(to_status)
    }

    #[tracing::instrument(name = "ListWebhookEndpoints", skip_all)]
    async fn list_webhook_endpoints(
        &self,
        request: Request<v1::ListWebhookEndpointsRequest>,
    ) -> Result<Response<v1::ListWebhookEndpointsResponse>, Status> {
        let caller = self.caller(&request).await?;
        self.list(&caller, request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    #[tracing::instrument(name = "UpdateWebhookEndpoint", skip_all)]
    async fn update_webhook_endpoint(
        &self,
        request: Request<v1::UpdateWebhookEndpointRequest>,
    ) -> Result<Response<v1::UpdateWebhookEndpointResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let target = request.webhook_endpoint.as_ref().map(|endpoint| endpoint.id.clone()).unwrap_or_default();
        let result = async {
            policy::authorize(&caller, Action::ManageWebhooks)?;
            let (id, patch) = requests::patch(request, self.allow_http)?;
            let endpoint = self.store.update_endpoint(id, &patch, &Self::mutation(&caller)).await?;
            Ok(v1::UpdateWebhookEndpointResponse { webhook_endpoint: Some(requests::to_proto(&endpoint)) })
        }
        .await;
        audited(&self.store, &caller, AuditAction::UpdateWebhookEndpoint, &target, "", result).await.map(Response::new)
    }

    #[tracing::instrument(name = "DeleteWebhookEndpoint", skip_all)]
    async fn delete_webhook_endpoint(
        &self,
        request: Request<v1::DeleteWebhookEndpointRequest>,
    ) -> Result<Response<v1::DeleteWebhookEndpointResponse>, Status> {
        let caller = self.caller(&request).await?;
        let v1::DeleteWebhookEndpointRequest { id } = request.into_inner();
        let result = async {
            policy::authorize(&caller, Action::ManageWebhooks)?;
            self.store.delete_endpoint(requests::id("id", &id)?, &Self::mutation(&caller)).await?;
            Ok(v1::DeleteWebhookEndpointResponse {})
        }
        .await;
        audited(&self.store, &caller, AuditAction::DeleteWebhookEndpoint, &id, "", result).await.map(Response::new)
    }

    #[tracing::instrument(name = "RotateWebhookEndpointSecret", skip_all)]
    async fn rotate_webhook_endpoint_secret(
        &self,
        request: Request<v1::RotateWebhookEndpointSecretRequest>,
    ) -> Result<Response<v1::RotateWebhookEndpointSecretResponse>, Status> {
        let caller = self.caller(&request).await?;
        let v1::RotateWebhookEndpointSecretRequest { id } = request.into_inner();
        let result = async {
            policy::authorize(&caller, Action::ManageWebhooks)?;
            let secret = webhook::new_secret();
            let mutation = Self::mutation(&caller);
            let endpoint =
                self.store.rotate_endpoint_secret(&self.master, requests::id("id", &id)?, &secret, &mutation).await?;
            Ok(v1::RotateWebhookEndpointSecretResponse {
                webhook_endpoint: Some(requests::to_proto(&endpoint)),
                secret: secret.expose_secret().to_owned(),
            })
        }
        .await;
        audited(&self.store, &caller, AuditAction::RotateWebhookEndpointSecret, &id, "", result)
            .await
            .map(Response::new)
    }

    #[tracing::instrument(name = "ListWebhookDeliveries", skip_all)]
    async fn list_webhook_deliveries(
        &self,
        request: Request<v1::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<v1::ListWebhookDeliveriesResponse>, Status> {
        let caller = self.caller(&request).await?;
        self.deliveries(&caller, request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    #[tracing::instrument(name = "RedeliverEvent", skip_all)]
    async fn redeliver_event(
        &self,
        request: Request<v1::RedeliverEventRequest>,
    ) -> Result<Response<v1::RedeliverEventResponse>, Status> {
        let caller = self.caller(&request).await?;
        let v1::RedeliverEventRequest { endpoint_id, event_id } = request.into_inner();
        let result = async {
            policy::authorize(&caller, Action::ManageWebhooks)?;
            let endpoint = requests::id("endpoint_id", &endpoint_id)?;
            let event = requests::id("event_id", &event_id)?;
            self.store.redeliver(endpoint, event, &Self::mutation(&caller)).await?;
            Ok(v1::RedeliverEventResponse {})
        }
        .await;
        audited(&self.store, &caller, AuditAction::RedeliverEvent, &endpoint_id, "", result).await.map(Response::new)
    }
}
