//! `keyward-bench seed`: creates keys through the API and writes their secrets to a file.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Context;
use keyward_proto::v1::{self, api_key_service_client::ApiKeyServiceClient};
use tonic::{Request, metadata::MetadataValue};

use crate::connect;

#[derive(Debug, clap::Args)]
pub(crate) struct SeedArgs {
    /// Server address, host:port.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    /// Admin key that creates the keys.
    #[arg(long, env = "KEYWARD_BENCH_AUTH", hide_env_values = true)]
    auth: String,
    /// How many keys.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Owner of the keys (its environment quota must allow --count).
    #[arg(long, default_value = "bench")]
    owner: String,
    /// Scopes of the keys, comma-separated.
    #[arg(long, value_delimiter = ',')]
    scopes: Vec<String>,
    /// Make the keys usage-limited, each holding this many credits of the default unit.
    #[arg(long)]
    credits: Option<i64>,
    /// Where to write the secrets.
    #[arg(long)]
    out: PathBuf,
}

pub(crate) async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let channel = connect(&args.addr, 1).await?.remove(0);
    let auth: MetadataValue<_> =
        format!("Bearer {}", args.auth).parse().context("--auth is not a valid header value")?;
    let next = Arc::new(AtomicU64::new(0));
    let count = u64::try_from(args.count)?;
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (mut client, auth, next, owner, scopes) = (
            ApiKeyServiceClient::new(channel.clone()),
            auth.clone(),
            Arc::clone(&next),
            args.owner.clone(),
            args.scopes.clone(),
        );
        let credits = args.credits;
        workers.push(tokio::spawn(async move {
            let mut secrets = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let mut request = Request::new(v1::CreateApiKeyRequest {
                    api_key: Some(v1::ApiKey {
                        name: "bench".into(),
                        owner: owner.clone(),
                        scopes: scopes.clone(),
                        usage_limited: credits.is_some(),
                        credits: credits
                            .map(|amount| vec![v1::CreditAmount { unit: String::new(), amount }])
                            .unwrap_or_default(),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                request.metadata_mut().insert("authorization", auth.clone());
                secrets.push(client.create_api_key(request).await?.into_inner().secret);
            }
            anyhow::Ok(secrets)
        }));
    }
    let mut lines = String::new();
    for worker in workers {
        for secret in worker.await?? {
            lines.push_str(&secret);
            lines.push('\n');
        }
    }
    std::fs::write(&args.out, lines).with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("wrote {} keys to {}", args.count, args.out.display());
    Ok(())
}
