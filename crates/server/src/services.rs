//! The gRPC services keyward serves, read once from their descriptor sets: the health
//! reporter flips every keyward service the protos declare, and metrics name only the
//! methods these services have, so neither list can drift from what is served.

use std::{collections::HashSet, sync::LazyLock};

use prost::Message;
use prost_types::FileDescriptorSet;

/// Full names of the keyward services the protos declare (`keyward.v1.ApiKeyService`, …).
static KEYWARD_SERVICES: LazyLock<Vec<String>> =
    LazyLock::new(|| services(keyward_proto::FILE_DESCRIPTOR_SET).map(|(name, _)| name).collect());

/// The services the server answers: keyward's, health's and server reflection's (v1 and
/// v1alpha).
const SERVED: [&[u8]; 4] = [
    keyward_proto::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// Envoy's external authorization, served with a routes file: its crate carries no
/// descriptor set, so its one method is named here.
const EXT_AUTHZ_CHECK: &str = "envoy.service.auth.v3.Authorization/Check";

/// Every method the server answers, as `package.Service/Method`.
static METHODS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    SERVED
        .into_iter()
        .flat_map(services)
        .flat_map(|(service, methods)| methods.into_iter().map(move |method| format!("{service}/{method}")))
        .chain([EXT_AUTHZ_CHECK.to_owned()])
        .collect()
});

/// The services of an encoded descriptor set, each with its methods.
fn services(encoded: &[u8]) -> impl Iterator<Item = (String, Vec<String>)> {
    let set = FileDescriptorSet::decode(encoded).expect("the built-in descriptor sets decode");
    set.file.into_iter().flat_map(|file| {
        let package = file.package.unwrap_or_default();
        file.service.into_iter().map(move |service| {
            let name = format!("{package}.{}", service.name.unwrap_or_default());
            (name, service.method.into_iter().map(|method| method.name.unwrap_or_default()).collect())
        })
    })
}

/// Server reflection describing every served service to either protocol version (so
/// `grpcurl list` shows both), and the `google.rpc` error details keyward's errors carry,
/// so a reflection client such as grpcurl decodes `ErrorInfo` and `BadRequest`.
pub(crate) fn reflection() -> tonic_reflection::server::Builder<'static> {
    SERVED
        .into_iter()
        .chain([tonic_types::pb::FILE_DESCRIPTOR_SET])
        .fold(tonic_reflection::server::Builder::configure().include_reflection_service(false), |builder, set| {
            builder.register_encoded_file_descriptor_set(set)
        })
}

/// Full names of the keyward services, as the health service reports them.
pub(crate) fn keyward_services() -> &'static [String] {
    &KEYWARD_SERVICES
}

/// Every method the server answers, as `package.Service/Method`, each name living as
/// long as the process, so labelling a call allocates nothing.
pub(crate) fn methods() -> impl Iterator<Item = &'static str> {
    METHODS.iter().map(String::as_str)
}

#[cfg(test)]
mod tests {
    use keyward_proto::v1::{
        api_key_service_server::ApiKeyServiceServer, audit_service_server::AuditServiceServer,
        credit_service_server::CreditServiceServer, rate_limit_service_server::RateLimitServiceServer,
        role_service_server::RoleServiceServer, rpc_provider_key_service_server::RpcProviderKeyServiceServer,
        webhook_service_server::WebhookServiceServer,
    };
    use tonic::server::NamedService;

    use super::*;
    use crate::{
        ApiKeyServiceImpl, AuditServiceImpl, CreditServiceImpl, RateLimitServiceImpl, RoleServiceImpl,
        RpcProviderKeyServiceImpl, WebhookServiceImpl,
    };

    #[test]
    fn every_declared_keyward_service_is_served() {
        let served = [
            <ApiKeyServiceServer<ApiKeyServiceImpl> as NamedService>::NAME,
            <RpcProviderKeyServiceServer<RpcProviderKeyServiceImpl> as NamedService>::NAME,
            <CreditServiceServer<CreditServiceImpl> as NamedService>::NAME,
            <RateLimitServiceServer<RateLimitServiceImpl> as NamedService>::NAME,
            <AuditServiceServer<AuditServiceImpl> as NamedService>::NAME,
            <WebhookServiceServer<WebhookServiceImpl> as NamedService>::NAME,
            <RoleServiceServer<RoleServiceImpl> as NamedService>::NAME,
        ];
        let mut declared: Vec<&str> = keyward_services().iter().map(String::as_str).collect();
        declared.sort_unstable();
        let mut served = served.to_vec();
        served.sort_unstable();
        assert_eq!(declared, served, "a service the protos declare must be added to the server (lib.rs)");
    }
}
