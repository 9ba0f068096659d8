//! Settings of the edge: the routes file and where a proxied request carries its key.

use std::path::PathBuf;

use clap::Args;
use keyward_core::edge::{KeySource, RouteTable};

/// The edge: Envoy's ext_authz on the gRPC listener and `/v1/forwardAuth` on the HTTP
/// listener, for proxies that ask keyward whether a request of theirs may pass (off
/// unless a routes file is given).
#[derive(Debug, Clone, Args)]
pub struct EdgeConfig {
    /// TOML file of `[[routes]]` (path, methods, host, scopes, cost, rate_limits, public):
    /// what each proxied request needs; the first matching route decides, no match is 403.
    #[arg(long, env = "KEYWARD_EDGE_ROUTES")]
    pub edge_routes: Option<PathBuf>,
    /// Header a proxied request may carry its key in, besides `Authorization: Bearer`.
    #[arg(long, env = "KEYWARD_EDGE_KEY_HEADER", default_value = "X-API-Key")]
    pub edge_key_header: String,
    /// Query parameter a proxied request may carry its key in (none unless set: a key in
    /// a URL lands in access logs).
    #[arg(long, env = "KEYWARD_EDGE_KEY_QUERY")]
    pub edge_key_query: Option<String>,
    /// Serve both edge endpoints (ext_authz over gRPC and `/v1/forwardAuth`, one port)
    /// on a listener of their own, e.g. an address only the proxy reaches; they then
    /// leave the gRPC and HTTP listeners. Plain text (h2c and HTTP/1.1).
    #[arg(long, env = "KEYWARD_EDGE_ADDR")]
    pub edge_addr: Option<std::net::SocketAddr>,
}

/// The edge's settings, read and checked.
#[derive(Debug, Clone)]
pub(crate) struct EdgeSettings {
    pub(crate) routes: RouteTable,
    pub(crate) keys: KeySource,
}

impl EdgeConfig {
    /// The edge's routes and key source, or `None` when no routes file is configured; a
    /// bad file or setting is refused with the file, line and reason.
    pub(crate) fn settings(&self) -> anyhow::Result<Option<EdgeSettings>> {
        let Some(path) = &self.edge_routes else {
            anyhow::ensure!(
                self.edge_addr.is_none(),
                "KEYWARD_EDGE_ADDR is set but KEYWARD_EDGE_ROUTES is not: the edge needs a routes file"
            );
            return Ok(None);
        };
        let keys = KeySource::new(&self.edge_key_header, self.edge_key_query.as_deref())
            .map_err(|problem| anyhow::anyhow!("KEYWARD_EDGE_KEY_HEADER / KEYWARD_EDGE_KEY_QUERY: {problem}"))?;
        Ok(Some(EdgeSettings { routes: read_routes(path)?, keys }))
    }
}

/// What tells a changed routes file from the one read: its modification time and length
/// (`None` while it cannot be read).
pub(crate) fn routes_stamp(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// Reads and checks a routes file.
pub(crate) fn read_routes(path: &std::path::Path) -> anyhow::Result<RouteTable> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| anyhow::anyhow!("cannot read KEYWARD_EDGE_ROUTES {}: {err}", path.display()))?;
    RouteTable::parse(&text).map_err(|err| anyhow::anyhow!("KEYWARD_EDGE_ROUTES {}: {err}", path.display()))
}
