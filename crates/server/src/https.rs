//! TLS for the HTTP listener, with the same certificate, key and client CA as gRPC.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use rustls::{
    RootCertStore, ServerConfig,
    crypto::ring,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::{net::TcpListener, sync::oneshot};
use tokio_rustls::TlsAcceptor;

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

/// Serves `router` over TLS until `shutdown` fires. A client that has not completed the
/// handshake within `handshake_timeout` is dropped, so idle sockets cannot pile up.
pub(crate) async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Arc<ServerConfig>,
    handshake_timeout: Duration,
    mut shutdown: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            // A client that fails the handshake (no or a wrong certificate) or does not
            // finish it in time is just dropped.
            let Ok(Ok(stream)) = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await else {
                return;
            };
            let service = TowerToHyperService::new(router);
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
