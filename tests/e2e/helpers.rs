//! Starting servers and talking to them.

use std::{
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use keyward_proto::v1::{self, api_key_service_client::ApiKeyServiceClient};
use keyward_server::{Config, Running, config::Clock};
use sea_orm::{ConnectionTrait, Database};
use secrecy::SecretString;
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::{Code, Request, Status, transport::Channel};
use tonic_types::StatusExt;

/// Runs an async test body once per backend: `both!(name);` makes `name::sqlite` and
/// `name::postgres` from `async fn name(backend: Backend)`.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    };
}
pub(crate) use both;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

pub(crate) const ADMIN_KEY: &str = "kwtest_bootstrap_admin_key_0001";
/// Master key of RPC provider keys in tests (base64 of 32 bytes).
pub(crate) const MASTER_KEY: &str = "a2V5d2FyZCB0ZXN0IG1hc3RlciBrZXkgMzIgYnl0ZXM=";

/// The PostgreSQL server tests create their databases on.
fn postgres_base() -> String {
    std::env::var("KEYWARD_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

pub(crate) struct TestApp {
    pub(crate) running: Option<Running>,
    pub(crate) client: ApiKeyServiceClient<Channel>,
    pub(crate) channel: Channel,
    pub(crate) config: Config,
    _data_dir: tempfile::TempDir,
    postgres_database: Option<String>,
}

pub(crate) async fn spawn(backend: Backend) -> TestApp {
    spawn_with(backend, |_| {}).await
}

/// Starts a server on a fresh SQLite database with `adjust`ed settings; the start's
/// error, if it fails.
pub(crate) async fn try_start(adjust: impl FnOnce(&mut Config)) -> Result<Running, String> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::defaults();
    config.store.data_dir = dir.path().to_owned();
    config.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.hash_secret = Some(SecretString::from("e2e hash secret"));
    config.master_key.master_key = Some(SecretString::from(MASTER_KEY));
    adjust(&mut config);
    // A guard against a hang, not a measure of time: the start must end on its own.
    let started = tokio::time::timeout(std::time::Duration::from_secs(60), keyward_server::start(config)).await;
    started.expect("the start ends").map_err(|err| format!("{err:#}"))
}

/// Creates a new, empty PostgreSQL database of this test run and returns its name.
pub(crate) async fn empty_postgres_database() -> String {
    static DATABASES: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "kw_test_{}_{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::Relaxed),
        uuid::Uuid::new_v4().simple()
    );
    let admin = Database::connect(format!("{}/postgres", postgres_base())).await.expect("connect to PostgreSQL");
    admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create test database");
    admin.close().await.ok();
    name
}

/// Refuses new connections to PostgreSQL database `name` and ends the open ones, or
/// lets them in again: an outage of that database alone.
pub(crate) async fn set_database_reachable(name: &str, reachable: bool) {
    let admin = Database::connect(format!("{}/postgres", postgres_base())).await.expect("connect");
    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {reachable}"))
        .await
        .expect("alter database");
    if !reachable {
        let terminate = format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'");
        admin.execute_unprepared(&terminate).await.expect("end connections");
    }
    admin.close().await.ok();
}

/// The URL of database `name` on the test PostgreSQL server.
pub(crate) fn postgres_url(name: &str) -> String {
    format!("{}/{name}", postgres_base())
}

pub(crate) async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::defaults();
    config.store.data_dir = data_dir.path().to_owned();
    config.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_admin_key = Some(SecretString::from(ADMIN_KEY));
    config.hash_secret = Some(SecretString::from("e2e hash secret"));
    config.master_key.master_key = Some(SecretString::from(MASTER_KEY));
    config.health_interval = std::time::Duration::from_millis(200);
    let postgres_database = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            let name = empty_postgres_database().await;
            config.store.database_url = Some(postgres_url(&name));
            Some(name)
        }
    };
    adjust(&mut config);
    let running = keyward_server::start(config.clone()).await.expect("server starts");
    let channel = Channel::from_shared(format!("http://{}", running.grpc_addr)).unwrap().connect_lazy();
    TestApp {
        running: Some(running),
        client: ApiKeyServiceClient::new(channel.clone()),
        channel,
        config,
        _data_dir: data_dir,
        postgres_database,
    }
}

impl TestApp {
    pub(crate) fn running(&self) -> &Running {
        self.running.as_ref().expect("server running")
    }

    /// Stops the server and drops its PostgreSQL database.
    pub(crate) async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("server stops cleanly");
        }
        if let Some(name) = self.postgres_database.take() {
            let admin = Database::connect(format!("{}/postgres", postgres_base())).await.expect("connect");
            admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.expect("drop");
        }
    }

    /// Cuts the server off its PostgreSQL database (refusing new connections and ending
    /// the open ones) or lets it back in: an outage of this test's database alone.
    pub(crate) async fn set_postgres_reachable(&self, reachable: bool) {
        set_database_reachable(self.postgres_database.as_ref().expect("a PostgreSQL test"), reachable).await;
    }

    /// Creates a key as admin with `scopes` for `owner`; returns it and its secret.
    pub(crate) async fn create_key(&self, owner: &str, scopes: &[&str]) -> (v1::ApiKey, String) {
        let request = v1::CreateApiKeyRequest {
            api_key: Some(v1::ApiKey {
                name: format!("key of {owner}"),
                owner: owner.to_owned(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let response = self.client.clone().create_api_key(admin(request)).await.expect("create key").into_inner();
        (response.api_key.expect("key"), response.secret)
    }

    /// Verifies `secret` as admin.
    pub(crate) async fn verify(&self, secret: &str, scopes: &[&str], network: &str) -> v1::VerifyApiKeyResponse {
        let request = v1::VerifyApiKeyRequest {
            key: secret.to_owned(),
            required_scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            network: network.to_owned(),
            ..Default::default()
        };
        self.client.clone().verify_api_key(admin(request)).await.expect("verify").into_inner()
    }

    pub(crate) async fn count_rows(&self, table: &str) -> i64 {
        self.try_count_rows(table).await.expect("count")
    }

    /// [`Self::count_rows`], or the error of a database too busy to answer in time.
    pub(crate) async fn try_count_rows(&self, table: &str) -> Result<i64, sea_orm::DbErr> {
        let row = self
            .running()
            .store
            .connection()
            .query_one_raw(sea_orm::Statement::from_string(
                self.running().store.connection().get_database_backend(),
                format!("SELECT COUNT(*) AS n FROM {table}"),
            ))
            .await?
            .expect("a row");
        Ok(row.try_get::<i64>("", "n").expect("count column"))
    }
}

/// `message` with `authorization: Bearer <key>`.
pub(crate) fn with_key<T>(key: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().expect("ascii key"));
    request
}

/// `message` as the bootstrap admin.
pub(crate) fn admin<T>(message: T) -> Request<T> {
    with_key(ADMIN_KEY, message)
}

/// Asserts the status code and the `ErrorInfo` reason every keyward error carries.
#[track_caller]
pub(crate) fn assert_status(status: &Status, code: Code, reason: &str) {
    assert_eq!(status.code(), code, "unexpected status: {status:?}");
    let info = status.get_details_error_info().unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "unexpected reason in {status:?}");
    assert_eq!(info.domain, "keyward.v1");
}

/// Asserts INVALID_ARGUMENT naming `field` among the BadRequest violations.
#[track_caller]
pub(crate) fn assert_invalid(status: &Status, field: &str) {
    assert_status(status, Code::InvalidArgument, "INVALID_ARGUMENT");
    let bad = status.get_details_bad_request().unwrap_or_else(|| panic!("no BadRequest in {status:?}"));
    assert!(
        bad.field_violations.iter().any(|v| v.field == field && !v.description.is_empty()),
        "no violation of {field} in {:?}",
        bad.field_violations
    );
}

pub(crate) fn key_with(name: &str) -> v1::ApiKey {
    v1::ApiKey { name: name.to_owned(), ..Default::default() }
}

pub(crate) fn create_request(api_key: v1::ApiKey) -> v1::CreateApiKeyRequest {
    v1::CreateApiKeyRequest { api_key: Some(api_key), ..Default::default() }
}

pub(crate) fn timestamp_in(seconds: i64) -> prost_types::Timestamp {
    let at = chrono::Utc::now() + chrono::Duration::seconds(seconds);
    prost_types::Timestamp { seconds: at.timestamp(), nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap() }
}

/// A `keyward serve` process of the binary built beside this test.
pub(crate) struct Replica {
    // Held for `kill_on_drop`: dropping the replica ends the process.
    process: tokio::process::Child,
    pub(crate) client: ApiKeyServiceClient<Channel>,
    pub(crate) channel: Channel,
    pub(crate) grpc_addr: std::net::SocketAddr,
    pub(crate) http_addr: std::net::SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

/// The address in a `<listener> listening` log line, plain or JSON.
fn listening(line: &str, listener: &str) -> Option<String> {
    let plain = format!("{listener} listening addr=");
    if let Some(at) = line.find(&plain) {
        return Some(line[at + plain.len()..].trim().to_owned());
    }
    if line.contains(&format!("\"{listener} listening\"")) {
        let at = line.find("\"addr\":\"")? + "\"addr\":\"".len();
        let rest = &line[at..];
        return Some(rest[..rest.find('"').unwrap_or(rest.len())].to_owned());
    }
    None
}

/// The `keyward` binary beside this test binary.
pub(crate) fn keyward_binary() -> std::path::PathBuf {
    let binary = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("keyward");
    assert!(binary.exists(), "{} is missing: run `cargo build --bin keyward` before the tests", binary.display());
    binary
}

impl Replica {
    /// Starts `keyward serve` on the database; `Err` holds its exit status and log when
    /// it exits instead of listening.
    pub(crate) async fn start(
        database_url: &str,
        data_dir: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let mut command = tokio::process::Command::new(keyward_binary());
        if env.iter().any(|(name, _)| *name == "KEYWARD_MASTER_KEY_FILE") {
            command.env_remove("KEYWARD_MASTER_KEY");
        } else {
            command.env("KEYWARD_MASTER_KEY", MASTER_KEY);
        }
        let mut child = command
            .arg("serve")
            .env("KEYWARD_DATABASE_URL", database_url)
            .env("KEYWARD_DATA_DIR", data_dir)
            .env("KEYWARD_GRPC_ADDR", "127.0.0.1:0")
            .env("KEYWARD_HTTP_ADDR", "127.0.0.1:0")
            .env("KEYWARD_HASH_SECRET", "e2e hash secret")
            .env("KEYWARD_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
            .env("KEYWARD_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut log = String::new();
        // Both listeners log their address.
        let (mut grpc, mut http) = (None, None);
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if grpc.is_none() {
                    grpc = listening(&line, "grpc");
                }
                if http.is_none() {
                    http = listening(&line, "http");
                }
                if grpc.is_some() && http.is_some() {
                    return;
                }
                log.push_str(&line);
                log.push('\n');
            }
        })
        .await
        .expect("the replica listens or exits within 30 s");
        let (Some(addr), Some(http)) = (grpc, http) else {
            let status = child.wait().await.unwrap();
            return Err(format!("{status}: {log}"));
        };
        let shared_log = std::sync::Arc::new(std::sync::Mutex::new(log));
        let sink = std::sync::Arc::clone(&shared_log);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        Ok(Self {
            process: child,
            client: ApiKeyServiceClient::new(channel.clone()),
            channel,
            grpc_addr: addr.parse().unwrap(),
            http_addr: http.parse().unwrap(),
            log: shared_log,
        })
    }

    /// The process's resident memory in KiB, as the kernel counts it.
    pub(crate) fn resident_kib(&self) -> u64 {
        let pid = self.process.id().expect("the replica is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS in /proc status");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub(crate) async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.process.id().expect("the replica is running");
        let sent = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await.unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        self.process.wait().await.unwrap()
    }

    /// What the process has logged so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// What the process has logged, once `ready` holds for it or after 10 s: the log is
    /// read from the process's pipe, so the line about a call just answered can arrive a
    /// moment after the answer.
    pub(crate) async fn log_when(&self, ready: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let log = self.log();
            if ready(&log) || std::time::Instant::now() > deadline {
                return log;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn code(&self, secret: &str) -> v1::VerificationCode {
        let request = admin(v1::VerifyApiKeyRequest { key: secret.to_owned(), ..Default::default() });
        self.client.clone().verify_api_key(request).await.unwrap().into_inner().code()
    }
}

/// A clock `step` ahead of real time for each count of the returned counter, which the
/// test moves forward; replicas given the same clock share its time.
pub(crate) fn movable_clock(step: chrono::Duration) -> (Clock, Arc<AtomicI64>) {
    let steps = Arc::new(AtomicI64::new(0));
    let counter = Arc::clone(&steps);
    (Clock::from_fn(move || chrono::Utc::now() + step * i32::try_from(counter.load(Ordering::SeqCst)).unwrap()), steps)
}
