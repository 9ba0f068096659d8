//! `keyward-bench`: a small ghz-like load tool for keyward. It keeps a fixed number of
//! calls in flight over a fixed number of HTTP/2 connections, records each latency in
//! an HDR histogram, and can run two targets back to back to report their ratio.

mod raw;
mod report;
mod seed;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use keyward_proto::v1::{
    self, api_key_service_client::ApiKeyServiceClient, audit_service_client::AuditServiceClient,
    credit_service_client::CreditServiceClient,
};
use report::{Tally, print_report, summarize};
use serde::Serialize;
use tonic::{
    Request,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[derive(Debug, Parser)]
#[command(name = "keyward-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load one or two targets, back to back with the same settings.
    Run(RunArgs),
    /// Create keys to verify, one secret per line in a file.
    Seed(seed::SeedArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Target {
    /// grpc.health.v1.Health/Check: tonic's floor on this machine.
    Health,
    /// VerifyApiKey with the one key of --key.
    Verify,
    /// VerifyApiKey cycling through the keys of --keys-file.
    VerifyKeys,
    /// ListApiKeys (first page) as --auth, of --list-owner's keys if given.
    ListKeys,
    /// ListAuditEvents (first page) as --auth: the events of the keys in its reach.
    ListAudit,
    /// GetCallerApiKey as --auth.
    CallerKey,
    /// REST: GET /api/v1/psp/product-manager/customer-user-api-keys as --auth, on --http-addr.
    RestPspList,
    /// REST: GET /api/v1/api-key-status with `token: <--auth>`, on --http-addr.
    RestKeyStatus,
    /// CreateApiKey for --owner as --auth (its environment quota must allow the calls).
    Create,
    /// VerifyApiKey cycling through the keys of --keys-file with a `hold` of --cost.
    Hold,
    /// A hold of --cost as `hold` does, then CaptureCreditHold of all of it: one call
    /// counted per pair, so captures/s follow from the two rates.
    HoldCapture,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Server address, host:port.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    /// What to call; give it twice to compare (ratio = first / second).
    #[arg(long = "target", required = true, num_args = 1)]
    targets: Vec<Target>,
    /// Key to verify (target `verify`).
    #[arg(long, env = "KEYWARD_BENCH_KEY", hide_env_values = true)]
    key: Option<String>,
    /// File of keys to verify, one per line (target `verify-keys`).
    #[arg(long)]
    keys_file: Option<PathBuf>,
    /// Caller key sent as `authorization: Bearer` (needs the `verify` scope).
    #[arg(long, env = "KEYWARD_BENCH_AUTH", hide_env_values = true)]
    auth: Option<String>,
    /// Credits of the default unit each verification costs (0: none); usage-limited
    /// keys are charged them.
    #[arg(long, default_value_t = 0)]
    cost: i64,
    /// Owner of the keys the `create` target creates.
    #[arg(long, default_value = "bench-create")]
    owner: String,
    /// Owner whose keys the `list-keys` target lists (all in reach if not given).
    #[arg(long)]
    list_owner: Option<String>,
    /// Send the health and verify targets' calls as gRPC frames encoded before the run,
    /// over HTTP/2 driven directly (no tonic client): cheap enough per call that
    /// rotating through many keys leaves the client with headroom.
    #[arg(long)]
    raw: bool,
    /// REST gateway address, host:port (the rest-* targets; HTTP/1.1 keep-alive).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_addr: String,
    /// Calls kept in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the calls are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// How long each target is measured (ignored with --requests).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop after this many measured calls instead of after --duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Runs of every target, alternating (A B A B …), so drift on a shared machine
    /// weighs on both alike; figures are over all rounds.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Unmeasured calls before each run, to warm connections and caches.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Also write the reports as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::Seed(args) => seed::seed(args).await,
    }
}

async fn connect(addr: &str, connections: usize) -> anyhow::Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        channels.push(endpoint.connect().await.with_context(|| format!("cannot connect to {addr}"))?);
    }
    Ok(channels)
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.targets.len() > 2 {
        bail!("give --target once, or twice to compare");
    }
    let keys: Arc<Vec<String>> = Arc::new(match &args.keys_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect(),
        None => args.key.iter().cloned().collect(),
    });
    let auth: Option<MetadataValue<_>> = match &args.auth {
        Some(key) => Some(format!("Bearer {key}").parse().context("--auth is not a valid header value")?),
        None => None,
    };
    if args
        .targets
        .iter()
        .any(|t| matches!(t, Target::Verify | Target::VerifyKeys | Target::Hold | Target::HoldCapture))
        && keys.is_empty()
    {
        bail!("the verify targets need --key or --keys-file");
    }
    let channels = connect(&args.addr, args.connections).await?;
    let mut raw_connections = Vec::new();
    if args.raw {
        for _ in 0..args.connections.max(1) {
            raw_connections.push(raw::connect(&args.addr).await?);
        }
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;
    let mut totals = Vec::new();
    for _ in 0..args.targets.len() {
        totals.push((Tally::new()?, 0.0));
    }
    for _ in 0..args.rounds {
        for (&target, (tally, seconds)) in args.targets.iter().zip(totals.iter_mut()) {
            let raw = raw_frames(target, &args, &keys, &raw_connections)?;
            let (round, elapsed) = load(target, &args, &channels, raw, &http, &keys, auth.as_ref()).await?;
            tally.merge(round)?;
            *seconds += elapsed;
        }
    }
    let mut reports = Vec::new();
    for (&target, (tally, seconds)) in args.targets.iter().zip(totals) {
        let report = summarize(target, tally, seconds)?;
        print_report(&report);
        reports.push(report);
    }
    if let [first, second] = reports.as_slice() {
        println!(
            "ratio {:?}/{:?}: rate {:.3}, p99 {:.3}",
            first.target,
            second.target,
            first.rate / second.rate,
            first.p99_ms / second.p99_ms
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&reports)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The raw connections and frames of `target`, when --raw applies to it.
fn raw_frames(
    target: Target,
    args: &RunArgs,
    keys: &[String],
    connections: &[h2::client::SendRequest<bytes::Bytes>],
) -> anyhow::Result<Option<(Vec<h2::client::SendRequest<bytes::Bytes>>, raw::Frames)>> {
    let frames = match target {
        _ if !args.raw => return Ok(None),
        Target::Health => raw::Frames::health(&args.addr)?,
        Target::Verify | Target::VerifyKeys => raw::Frames::verify(&args.addr, keys, args.auth.as_deref())?,
        Target::ListKeys
        | Target::ListAudit
        | Target::CallerKey
        | Target::RestPspList
        | Target::RestKeyStatus
        | Target::Create
        | Target::Hold
        | Target::HoldCapture => bail!("--raw sends only the health and verify targets"),
    };
    Ok(Some((connections.to_vec(), frames)))
}

async fn load(
    target: Target,
    args: &RunArgs,
    channels: &[Channel],
    raw: Option<(Vec<h2::client::SendRequest<bytes::Bytes>>, raw::Frames)>,
    http: &reqwest::Client,
    keys: &Arc<Vec<String>>,
    auth: Option<&MetadataValue<tonic::metadata::Ascii>>,
) -> anyhow::Result<(Tally, f64)> {
    let started = Instant::now();
    let measure_from = started + args.warmup;
    let stop_at = measure_from + args.duration;
    let budget = Arc::new(AtomicU64::new(args.requests.unwrap_or(u64::MAX)));
    let next_key = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(args.concurrency);
    for worker in 0..args.concurrency.max(1) {
        let channel = channels[worker % channels.len()].clone();
        let (keys, budget, next_key, auth) =
            (Arc::clone(keys), Arc::clone(&budget), Arc::clone(&next_key), auth.cloned());
        let bounded = args.requests.is_some();
        let cost: Vec<v1::CreditAmount> =
            if args.cost > 0 { vec![v1::CreditAmount { unit: String::new(), amount: args.cost }] } else { vec![] };
        let http = http.clone();
        let base = format!("http://{}", args.http_addr);
        let secret = args.auth.clone().unwrap_or_default();
        let owner = args.owner.clone();
        let list_owner = args.list_owner.clone().unwrap_or_default();
        let raw =
            raw.as_ref().map(|(connections, frames)| (connections[worker % connections.len()].clone(), frames.clone()));
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::new()?;
            let mut health = HealthClient::new(channel.clone());
            let mut keyward = ApiKeyServiceClient::new(channel.clone());
            let mut audit = AuditServiceClient::new(channel.clone());
            let mut credits = CreditServiceClient::new(channel);
            loop {
                let now = Instant::now();
                let measuring = now >= measure_from;
                if measuring {
                    if bounded {
                        if budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err() {
                            break;
                        }
                    } else if now >= stop_at {
                        break;
                    }
                }
                let begun = Instant::now();
                let (code, verification) = match (&raw, target) {
                    (Some((connection, frames)), _) => {
                        let index =
                            usize::try_from(next_key.fetch_add(1, Ordering::Relaxed)).unwrap_or(0) % frames.len();
                        let (code, verdict) = raw::call(connection, frames, index).await?;
                        let verdict = verdict.map(|code| {
                            v1::VerificationCode::try_from(code)
                                .map_or_else(|_| code.to_string(), |c| c.as_str_name().to_owned())
                        });
                        ((code != 0).then(|| tonic::Code::from_i32(code)), verdict)
                    }
                    (None, Target::Health) => {
                        let result = health.check(HealthCheckRequest { service: String::new() }).await;
                        (result.map(drop).err().map(|s| s.code()), None)
                    }
                    (None, Target::ListKeys) => {
                        let mut request =
                            Request::new(v1::ListApiKeysRequest { owner: list_owner.clone(), ..Default::default() });
                        if let Some(auth) = &auth {
                            request.metadata_mut().insert("authorization", auth.clone());
                        }
                        (keyward.list_api_keys(request).await.map(drop).err().map(|s| s.code()), None)
                    }
                    (None, Target::ListAudit) => {
                        let mut request = Request::new(v1::ListAuditEventsRequest::default());
                        if let Some(auth) = &auth {
                            request.metadata_mut().insert("authorization", auth.clone());
                        }
                        (audit.list_audit_events(request).await.map(drop).err().map(|s| s.code()), None)
                    }
                    (None, Target::CallerKey) => {
                        let mut request = Request::new(v1::GetCallerApiKeyRequest {});
                        if let Some(auth) = &auth {
                            request.metadata_mut().insert("authorization", auth.clone());
                        }
                        (keyward.get_caller_api_key(request).await.map(drop).err().map(|s| s.code()), None)
                    }
                    (None, Target::Create) => {
                        let mut request = Request::new(v1::CreateApiKeyRequest {
                            api_key: Some(v1::ApiKey {
                                name: "bench".into(),
                                owner: owner.clone(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        });
                        if let Some(auth) = &auth {
                            request.metadata_mut().insert("authorization", auth.clone());
                        }
                        (keyward.create_api_key(request).await.map(drop).err().map(|s| s.code()), None)
                    }
                    (None, Target::RestPspList | Target::RestKeyStatus) => {
                        let request = if target == Target::RestPspList {
                            http.get(format!("{base}/api/v1/psp/product-manager/customer-user-api-keys"))
                                .header("authorization", format!("Bearer {secret}"))
                        } else {
                            http.get(format!("{base}/api/v1/api-key-status")).header("token", secret.as_str())
                        };
                        let outcome = match request.send().await {
                            Ok(response) => {
                                let status = response.status();
                                // The whole body is read, as a client would.
                                let _ = response.bytes().await;
                                status.is_success().then_some(()).ok_or(tonic::Code::Unknown)
                            }
                            Err(_) => Err(tonic::Code::Unavailable),
                        };
                        (outcome.err(), None)
                    }
                    (None, Target::Hold | Target::HoldCapture) => {
                        let index = usize::try_from(next_key.fetch_add(1, Ordering::Relaxed)).unwrap_or(0) % keys.len();
                        let mut request = Request::new(v1::VerifyApiKeyRequest {
                            key: keys[index].clone(),
                            hold: cost.clone(),
                            ..Default::default()
                        });
                        if let Some(auth) = &auth {
                            request.metadata_mut().insert("authorization", auth.clone());
                        }
                        match keyward.verify_api_key(request).await {
                            Ok(answer) => {
                                let answer = answer.into_inner();
                                let verdict = Some(answer.code().as_str_name().to_owned());
                                if target == Target::HoldCapture && answer.code() == v1::VerificationCode::Valid {
                                    let mut request = Request::new(v1::CaptureCreditHoldRequest {
                                        hold_id: answer.hold_id,
                                        amounts: cost.clone(),
                                        request_id: String::new(),
                                    });
                                    if let Some(auth) = &auth {
                                        request.metadata_mut().insert("authorization", auth.clone());
                                    }
                                    (credits.capture_credit_hold(request).await.err().map(|s| s.code()), verdict)
                                } else {
                                    (None, verdict)
                                }
                            }
                            Err(status) => (Some(status.code()), None),
                        }
                    }
                    (None, Target::Verify | Target::VerifyKeys) => {
                        let index = usize::try_from(next_key.fetch_add(1, Ordering::Relaxed)).unwrap_or(0) % keys.len();
                        let mut request = Request::new(v1::VerifyApiKeyRequest {
                            key: keys[index].clone(),
                            required_scopes: vec![],
                            network: String::new(),
                            cost: cost.clone(),
                            request_id: String::new(),
                            rate_limits: vec![],
                            scope_query: String::new(),
                            hold: vec![],
                            hold_ttl: None,
                        });
                        if let Some(auth) = &auth {
                            request.metadata_mut().insert("authorization", auth.clone());
                        }
                        match keyward.verify_api_key(request).await {
                            Ok(answer) => (None, Some(answer.into_inner().code().as_str_name().to_owned())),
                            Err(status) => (Some(status.code()), None),
                        }
                    }
                };
                if measuring {
                    let micros = u64::try_from(begun.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
                    if let Some(histogram) = tally.histogram.as_mut() {
                        histogram.saturating_record(micros);
                    }
                    let code = code.map_or_else(|| "OK".to_owned(), |c| format!("{c:?}"));
                    *tally.codes.entry(code).or_default() += 1;
                    if let Some(verification) = verification {
                        *tally.verification_codes.entry(verification).or_default() += 1;
                    }
                }
            }
            anyhow::Ok(tally)
        }));
    }
    let mut total = Tally::new()?;
    for worker in workers {
        total.merge(worker.await??)?;
    }
    Ok((total, measure_from.elapsed().as_secs_f64()))
}
