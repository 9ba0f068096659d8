//! TLS for the HTTP listener, with the same certificate, key and client CA as gRPC.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use rustls::{
    RootCertStore, ServerConfig,
    crypto::ring,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};

use crate::config::TlsConfig;

/// The rustls settings of the HTTP listener, or `None` without a certificate.
pub(crate) fn server_config(config: &TlsConfig) -> anyhow::Result<Option<Arc<ServerConfig>>> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else { return Ok(None) };
    let certs = certificates(cert, "KEYWARD_TLS_CERT")?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("KEYWARD_TLS_KEY {} holds no PEM private key", key.display()))?;
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions()?;
    let builder = match &config.tls_client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca, "KEYWARD_TLS_CLIENT_CA")? {
                roots.add(cert).context("KEYWARD_TLS_CLIENT_CA holds an unusable certificate")?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder.with_single_cert(certs, key).context("KEYWARD_TLS_CERT does not match KEYWARD_TLS_KEY")?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(server)))
}

fn certificates(path: &Path, setting: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {setting} {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{setting} {} is not PEM", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{setting} {} holds no certificate", path.display());
    Ok(certs)
}
