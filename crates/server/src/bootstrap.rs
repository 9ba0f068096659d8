//! What start-up reads and imports before serving: the listener's TLS settings and the
//! bootstrap admin key.

use anyhow::Context;
use chrono::Utc;
use keyward_core::{
    Error,
    environment::Environments,
    model::{ApiKey, KeyStatus, NewApiKey},
    policy::SCOPE_ADMIN,
    secret::{self, SecretHasher},
};
use keyward_store::{Mutation, Store};
use secrecy::ExposeSecret;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use uuid::Uuid;

use crate::{config, config::Config, source_chain};

/// The listener's TLS settings, read and checked at start.
pub(crate) fn tls_config(config: &config::TlsConfig) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else { return Ok(None) };
    let read = |path: &std::path::Path, setting: &str| {
        std::fs::read(path).with_context(|| format!("cannot read {setting} {}", path.display()))
    };
    let mut tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(read(cert, "KEYWARD_TLS_CERT")?, read(key, "KEYWARD_TLS_KEY")?))
        .timeout(config.tls_handshake_timeout);
    if let Some(ca) = &config.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca, "KEYWARD_TLS_CLIENT_CA")?));
    }
    Ok(Some(tls))
}

/// Imports KEYWARD_BOOTSTRAP_ADMIN_KEY when no active admin key exists; only its hash is stored.
pub(crate) async fn bootstrap_admin(
    config: &Config,
    store: &Store,
    hasher: &SecretHasher,
    environments: &Environments,
) -> anyhow::Result<()> {
    let Some(admin_secret) = &config.bootstrap_admin_key else { return Ok(()) };
    secret::check_importable(admin_secret.expose_secret())
        .map_err(|problem| anyhow::anyhow!("KEYWARD_BOOTSTRAP_ADMIN_KEY {problem}"))?;
    let now = Utc::now();
    if store.has_live_admin(now).await.map_err(|err| anyhow::anyhow!(source_chain(&err)))? {
        return Ok(());
    }
    let environment =
        environments.resolve("").ok_or_else(|| anyhow::anyhow!("the default environment is not configured"))?;
    let key = ApiKey {
        id: Uuid::now_v7(),
        number: 0,
        name: "bootstrap admin".to_owned(),
        mask: secret::mask(admin_secret, environments.prefixes()),
        owner: "bootstrap".to_owned(),
        creator: "system:bootstrap".to_owned(),
        organization_id: String::new(),
        organization_name: String::new(),
        environment: environment.name.clone(),
        scopes: [SCOPE_ADMIN.to_owned()].into(),
        networks: Default::default(),
        status: KeyStatus::Active,
        usage_limited: false,
        created_at: now,
        updated_at: now,
        expires_at: None,
        deleted_at: None,
        last_used_at: None,
        metadata: Default::default(),
        rate_limits: Vec::new(),
        credit_source: Default::default(),
        roles: Default::default(),
        effective_scopes: [SCOPE_ADMIN.to_owned()].into(),
    };
    let new = NewApiKey {
        key,
        secret_hash: hasher.hash(admin_secret.expose_secret()),
        hash_version: hasher.version(),
        credits: Vec::new(),
        refills: Vec::new(),
        low_thresholds: Vec::new(),
    };
    let mutation = Mutation { actor: "system:bootstrap".to_owned(), request_id: None, now };
    match store.create(new, i64::MAX, &mutation).await {
        Ok(key) => {
            tracing::info!(key.id = %key.id, "imported the bootstrap admin key");
            Ok(())
        }
        // Another replica imported it first, or the same secret belongs to a key that is
        // no longer an active admin: either way there is nothing to import.
        Err(Error::AlreadyExists { .. }) => {
            tracing::warn!("the bootstrap admin key already exists but is not an active admin key; not imported again");
            Ok(())
        }
        Err(err) => Err(anyhow::anyhow!("importing KEYWARD_BOOTSTRAP_ADMIN_KEY failed: {}", source_chain(&err))),
    }
}
