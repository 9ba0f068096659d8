//! The one place configuration is read: a clap struct whose every flag also has a
//! `KEYWARD_*` environment variable. Tests build it directly.

mod edge;
mod events;
mod file;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use keyward_core::environment::Environment;
use secrecy::SecretString;

pub(crate) use self::edge::{EdgeSettings, read_routes, routes_stamp};
pub use self::{edge::EdgeConfig, events::EventConfig, file::parse_args};

/// keyward: a self-hosted API key service.
#[derive(Debug, Parser)]
#[command(name = "keyward", version, about)]
pub struct Cli {
    /// What to do; `serve` when omitted (configured from the environment only).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands of the `keyward` binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server (migrates the database first).
    Serve(Box<Config>),
    /// Apply pending database migrations and exit.
    Migrate(StoreConfig),
    /// Run the REST gateway alone, calling a keyward server's gRPC API over the network.
    Gateway(GatewayConfig),
    /// Re-encrypt every RPC provider key under a new master key, in one transaction.
    /// Afterwards start the server with the new key; the old one is no longer needed.
    RotateMasterKey(RotateMasterKeyArgs),
}

/// Arguments of `keyward rotate-master-key`.
#[derive(Debug, Clone, Args)]
pub struct RotateMasterKeyArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub store: StoreConfig,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub master_key: MasterKeyConfig,
    /// File holding the new master key (base64 of 32 bytes).
    #[arg(long)]
    pub new_key_file: PathBuf,
}

/// Settings of `keyward gateway`.
#[derive(Debug, Clone, Args)]
pub struct GatewayConfig {
    /// gRPC address of the keyward server the gateway calls, e.g. `http://keyward:50051`.
    #[arg(long, env = "KEYWARD_UPSTREAM")]
    pub upstream: String,
    /// Listen address of the standalone gateway; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "KEYWARD_GATEWAY_ADDR", default_value = "0.0.0.0:8080")]
    pub gateway_addr: SocketAddr,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub rest: RestConfig,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connections: ConnectionConfig,
    /// Log filter in tracing EnvFilter syntax.
    #[arg(long, env = "KEYWARD_LOG", default_value = "info")]
    pub log: String,
    /// Log lines as `text` or `json` (one object per line).
    #[arg(long, env = "KEYWARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Settings of the REST surfaces, in `serve` and in `gateway` alike.
#[derive(Debug, Clone, Args)]
pub struct RestConfig {
    /// Environment the PSP routes create keys in and count them for; empty means the
    /// server's default environment.
    #[arg(long, env = "KEYWARD_PSP_ENVIRONMENT", default_value = "")]
    pub psp_environment: String,
    /// Browser origins allowed to call the REST routes (CORS), comma-separated, or `*` for
    /// any; empty answers no CORS headers.
    #[arg(long, env = "KEYWARD_CORS_ALLOWED_ORIGINS", default_value = "")]
    pub cors_allowed_origins: keyward_gateway::CorsOrigins,
}

impl RestConfig {
    /// The gateway's settings.
    pub fn gateway_settings(&self) -> keyward_gateway::Settings {
        keyward_gateway::Settings {
            psp_environment: self.psp_environment.clone(),
            cors_allowed_origins: self.cors_allowed_origins.clone(),
            field_rules: Vec::new(),
        }
    }
}

/// What one client connection may cost, on each listener (`serve`'s gRPC and HTTP, and
/// the standalone gateway's).
#[derive(Debug, Clone, Args)]
pub struct ConnectionConfig {
    /// A connection with no call in flight and none started for this long is closed (a
    /// client that went quiet, an unused keep-alive connection); HTTP/2 pings do not
    /// count as use.
    #[arg(long, env = "KEYWARD_IDLE_TIMEOUT", default_value = "2m", value_parser = parse_positive_duration)]
    pub idle_timeout: Duration,
    /// Longest a new connection may take to start its first request (TLS handshake,
    /// HTTP/2 preface and headers included), and an HTTP/1 client to send a request's
    /// headers; a client that trickles them (slowloris) is closed then.
    #[arg(long, env = "KEYWARD_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub header_read_timeout: Duration,
    /// Most connections one client address may hold open on each listener; a connection
    /// beyond it is closed at once.
    #[arg(long, env = "KEYWARD_MAX_CONNECTIONS_PER_PEER", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_peer: u32,
    /// Most concurrent HTTP/2 streams (calls) on one connection.
    #[arg(long, env = "KEYWARD_MAX_CONCURRENT_STREAMS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,
    /// Most bytes of not yet complete gRPC request messages held across all connections,
    /// each call left waiting on its client (but the first of each connection) counting
    /// 32 KiB and its headers besides; a call that would need more is refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "KEYWARD_REQUEST_BUFFER_BYTES", default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1_048_576..=(1 << 40)))]
    pub request_buffer_bytes: u64,
    /// How often an HTTP/2 connection is pinged; a peer that does not answer within
    /// --http2-keepalive-timeout is dropped.
    #[arg(long, env = "KEYWARD_HTTP2_KEEPALIVE_INTERVAL", default_value = "60s", value_parser = parse_positive_duration)]
    pub http2_keepalive_interval: Duration,
    /// How long an HTTP/2 ping may go unanswered before the connection is dropped.
    #[arg(long, env = "KEYWARD_HTTP2_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = parse_positive_duration)]
    pub http2_keepalive_timeout: Duration,
    /// Most connections open at once on each listener; further clients wait in the
    /// listen backlog until one closes.
    #[arg(long, env = "KEYWARD_MAX_CONNECTIONS", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// TLS of the gRPC listener (off unless a certificate and key are given).
#[derive(Debug, Clone, Args)]
pub struct TlsConfig {
    /// PEM certificate chain of the gRPC listener; with --tls-key, serves TLS only.
    #[arg(long, env = "KEYWARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "KEYWARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle; when set, clients must present a certificate it signed (mTLS).
    #[arg(long, env = "KEYWARD_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Longest a client may take to complete the TLS handshake on either listener; a
    /// connection still shaking hands then is closed.
    #[arg(long, env = "KEYWARD_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub tls_handshake_timeout: Duration,
}

/// JWT callers: people authenticated by their identity provider (off unless an issuer or
/// a JWKS is given).
///
/// Claim settings name a claim by its exact name first (`cognito:groups`,
/// `https://example.com/roles`), and otherwise as a dotted path through nested objects
/// (`realm_access.roles`).
#[derive(Debug, Clone, Args)]
pub struct JwtConfig {
    /// JWKS of the identity provider: a file path or an https:// URL (http:// only on
    /// loopback). Without it, the JWKS is found through OIDC discovery from the issuer.
    #[arg(long, env = "KEYWARD_JWT_JWKS")]
    pub jwt_jwks: Option<String>,
    /// Required `iss` of caller JWTs; alone, it turns JWT callers on and its
    /// `/.well-known/openid-configuration` names the JWKS.
    #[arg(long, env = "KEYWARD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Accepted audiences, comma-separated (required with JWT callers): matched against
    /// `aud` (a string or a list), or against `client_id` in a Cognito access token.
    #[arg(long, env = "KEYWARD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Accepted Cognito token kinds (`token_use`), comma-separated: `id`, `access`.
    /// Setting it, or an issuer that is a Cognito user pool, makes the claim required.
    #[arg(long, env = "KEYWARD_JWT_TOKEN_USE", value_enum, value_delimiter = ',')]
    pub jwt_token_use: Option<Vec<TokenUse>>,
    /// Claim naming the caller (the owner of the keys it creates).
    #[arg(long, env = "KEYWARD_JWT_OWNER_CLAIM", default_value = "sub")]
    pub jwt_owner_claim: String,
    /// Claim holding the caller's roles: a list, or a space- or comma-separated string.
    #[arg(long, env = "KEYWARD_JWT_ROLES_CLAIM", default_value = "cognito:groups")]
    pub jwt_roles_claim: String,
    /// Claim holding the caller's organisation id.
    #[arg(long, env = "KEYWARD_JWT_ORG_ID_CLAIM", default_value = "custom:organisation_id")]
    pub jwt_org_id_claim: String,
    /// Claim holding the caller's organisation display name.
    #[arg(long, env = "KEYWARD_JWT_ORG_NAME_CLAIM", default_value = "custom:organisation_name")]
    pub jwt_org_name_claim: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[arg(long, env = "KEYWARD_JWT_LEEWAY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub jwt_leeway: Duration,
    /// How often the JWKS is fetched again.
    #[arg(long, env = "KEYWARD_JWT_JWKS_REFRESH", default_value = "10m", value_parser = humantime::parse_duration)]
    pub jwt_jwks_refresh: Duration,
    /// Least time between fetches caused by tokens naming an unknown key, so a flood of
    /// random `kid`s cannot hammer the identity provider.
    #[arg(long, env = "KEYWARD_JWT_KID_REFRESH_COOLDOWN", default_value = "30s", value_parser = humantime::parse_duration)]
    pub jwt_kid_refresh_cooldown: Duration,
    /// Longest a JWKS fetch over HTTP may take, body included (connecting: at most 5 s of it).
    #[arg(long, env = "KEYWARD_JWT_JWKS_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub jwt_jwks_timeout: Duration,
}

/// The kinds of token Amazon Cognito issues to a signed-in person (its `token_use` claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum TokenUse {
    /// An ID token: its audience is `aud`.
    Id,
    /// An access token: its audience is `client_id`.
    Access,
}

/// Where the master key of RPC provider keys comes from.
#[derive(Debug, Clone, Args)]
pub struct MasterKeyConfig {
    /// AES-256-GCM master key of RPC provider keys, base64 of 32 bytes. Generated into
    /// the data dir when neither it nor a key file is given on SQLite; required (or a
    /// key file) on PostgreSQL.
    #[arg(long, env = "KEYWARD_MASTER_KEY", value_parser = parse_secret, hide_env_values = true, conflicts_with = "master_key_file")]
    pub master_key: Option<SecretString>,
    /// File holding the master key (base64 of 32 bytes), e.g. a mounted Kubernetes Secret.
    #[arg(long, env = "KEYWARD_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
}

/// Where the data lives.
#[derive(Debug, Clone, Args)]
pub struct StoreConfig {
    /// Directory of the embedded SQLite database and of generated secrets.
    #[arg(long, env = "KEYWARD_DATA_DIR", default_value = "./keyward-data")]
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; defaults to `sqlite://<data dir>/keyward.db`.
    #[arg(long, env = "KEYWARD_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Most database connections per replica; from 2 up, half serve only cache misses' reads.
    #[arg(long, env = "KEYWARD_DATABASE_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,
    /// Longest a call waits for a database connection, and the longest health probe.
    #[arg(long, env = "KEYWARD_DATABASE_ACQUIRE_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub database_acquire_timeout: Duration,
    /// Longest wait to open a new database connection.
    #[arg(long, env = "KEYWARD_DATABASE_CONNECT_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub database_connect_timeout: Duration,
    /// PostgreSQL LISTEN/NOTIFY channel on which replicas announce key changes to each other.
    #[arg(long, env = "KEYWARD_NOTIFY_CHANNEL", default_value = "keyward_key_changes", value_parser = parse_channel)]
    pub notify_channel: String,
}

impl StoreConfig {
    /// The database URL, the embedded default filled in.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}/keyward.db", self.data_dir.display()),
        }
    }

    /// Whether the database is PostgreSQL (and so possibly shared by replicas).
    pub fn is_postgres(&self) -> bool {
        let url = self.database_url();
        url.starts_with("postgres://") || url.starts_with("postgresql://")
    }
}

/// A source of the current time.
#[derive(Clone, Default)]
pub struct Clock(Option<std::sync::Arc<dyn Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync>>);

impl Clock {
    /// A clock that reads `now` (for tests that move time).
    pub fn from_fn(now: impl Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync + 'static) -> Self {
        Self(Some(std::sync::Arc::new(now)))
    }

    /// The current time.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.as_ref().map_or_else(chrono::Utc::now, |now| now())
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Clock(custom)" } else { "Clock(wall)" })
    }
}

/// Settings of `keyward serve`.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// TOML file of settings, keyed by the env var names without `KEYWARD_` in lower case
    /// (e.g. `grpc_addr = "0.0.0.0:50051"`); flags and env vars take precedence over it.
    #[arg(long, env = "KEYWARD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub store: StoreConfig,
    /// gRPC listen address; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "KEYWARD_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub master_key: MasterKeyConfig,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub jwt: JwtConfig,
    /// HTTP listen address of the REST gateway and `/metrics`; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "KEYWARD_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub rest: RestConfig,
    /// Admin key (15–550 characters) imported at start when no active admin key exists.
    #[arg(long, env = "KEYWARD_BOOTSTRAP_ADMIN_KEY", value_parser = parse_secret, hide_env_values = true)]
    pub bootstrap_admin_key: Option<SecretString>,
    /// Server secret of the keyed hash of API keys. Generated into the data dir when
    /// unset on SQLite; required on PostgreSQL, where every replica must share it.
    #[arg(long, env = "KEYWARD_HASH_SECRET", value_parser = parse_secret, hide_env_values = true)]
    pub hash_secret: Option<SecretString>,
    /// Environments as `name:prefix:max_live_keys[:default_ttl]`, comma-separated.
    #[arg(
        long = "environment",
        env = "KEYWARD_ENVIRONMENTS",
        value_delimiter = ',',
        default_value = "production:kw_live:100,sandbox:kw_test:100"
    )]
    pub environments: Vec<Environment>,
    /// Environment of keys whose request names none.
    #[arg(long, env = "KEYWARD_DEFAULT_ENVIRONMENT", default_value = "production")]
    pub default_environment: String,
    /// How long a revoked key can still be undeleted.
    #[arg(long, env = "KEYWARD_UNDELETE_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub undelete_retention: Duration,
    /// Longest grace period RotateApiKey grants the old secret.
    #[arg(long, env = "KEYWARD_MAX_ROTATION_GRACE", default_value = "7d", value_parser = humantime::parse_duration)]
    pub max_rotation_grace: Duration,
    /// How often the database is probed for the health status; once two probes in a row
    /// fail, calls that need the database fail at once with UNAVAILABLE.
    #[arg(long, env = "KEYWARD_HEALTH_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,
    /// How long shutdown waits for in-flight calls.
    #[arg(long, env = "KEYWARD_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
    /// Most keys (and, separately, most secret hashes) the verification cache holds; 0 disables it.
    #[arg(long, env = "KEYWARD_CACHE_CAPACITY", default_value_t = 100_000)]
    pub cache_capacity: u64,
    /// Longest a cached key is trusted without a reread: the bound on staleness when a
    /// change notification from another replica is missed.
    #[arg(long, env = "KEYWARD_CACHE_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub cache_ttl: Duration,
    /// How long "no key has this secret" is cached, sparing the database floods of bad keys.
    #[arg(long, env = "KEYWARD_NEGATIVE_CACHE_TTL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub negative_cache_ttl: Duration,
    /// How often last-use times and verification counters are written; a crash loses at most this much of them.
    #[arg(long, env = "KEYWARD_USAGE_FLUSH_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub usage_flush_interval: Duration,
    /// Units, besides the default one, that the cost of a key which is not usage-limited
    /// may name (comma-separated, at most 32): each is a usage row per key and hour, so a
    /// verifier cannot make up others.
    #[arg(long, env = "KEYWARD_USAGE_UNITS", value_delimiter = ',')]
    pub usage_units: Vec<String>,
    /// How often this replica applies due credit refills; a refill lands within this
    /// long of its period start, and once however many replicas run.
    #[arg(long, env = "KEYWARD_REFILL_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub refill_interval: Duration,
    /// Lease window of rate-limit tokens: a replica spends the tokens it leased only
    /// within the window it leased them in, and a bucket forgets a lease one window after
    /// that, so a replica that dies strands its share of a bucket for at most two windows.
    /// Shorter means more database statements per bucket.
    #[arg(long, env = "KEYWARD_RATE_LIMIT_LEASE", default_value = "1s", value_parser = humantime::parse_duration)]
    pub rate_limit_lease: Duration,
    /// Most charges grouped into one database transaction.
    #[arg(long, env = "KEYWARD_CHARGE_BATCH", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub charge_batch: u32,
    /// Charge batches in flight at once, each over its own share of the keys; 0 picks 1
    /// (a batch gathers while the one before commits). More can hide a distant database's
    /// round trips; on SQLite they wait for its one writer anyway.
    #[arg(long, env = "KEYWARD_CHARGE_WORKERS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub charge_workers: u32,
    /// The time refills, deliveries and expiry sweeps go by; the wall clock unless a test embeds the server.
    #[arg(skip)]
    pub clock: Clock,
    /// Log filter in tracing EnvFilter syntax, e.g. `info,keyward_server=debug`.
    #[arg(long, env = "KEYWARD_LOG", default_value = "info")]
    pub log: String,
    /// Log lines as `text` or `json` (one object per line).
    #[arg(long, env = "KEYWARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub tls: TlsConfig,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connections: ConnectionConfig,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub events: EventConfig,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub edge: EdgeConfig,
}

fn parse_channel(value: &str) -> Result<String, String> {
    let valid = (1..=63).contains(&value.len())
        && value.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(value.to_owned())
    } else {
        Err("must be 1-63 characters of a-z, 0-9 and _, not starting with a digit".to_owned())
    }
}

fn parse_positive_duration(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err("must be longer than zero".to_owned()),
        Err(err) => Err(err.to_string()),
    }
}

fn parse_secret(value: &str) -> Result<SecretString, String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(SecretString::from(value.to_owned()))
}

impl Config {
    /// Defaults for everything, as `keyward serve` with no flags and no environment.
    pub fn defaults() -> Self {
        match Cli::parse_from(["keyward", "serve"]).command {
            Some(Command::Serve(config)) => *config,
            Some(Command::Migrate(_) | Command::Gateway(_) | Command::RotateMasterKey(_)) | None => {
                unreachable!("`serve` parses as Serve")
            }
        }
    }
}
