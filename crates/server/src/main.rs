//! The `keyward` binary: `serve` (the default), `gateway`, `migrate` and `rotate-master-key`.

use std::process::ExitCode;

use keyward_server::{
    config::{Command, Config, LogFormat},
    telemetry,
};

/// Every call allocates its messages, headers and buffers and frees them when it ends;
/// mimalloc's thread-local free lists serve that pattern with less work than glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match keyward_server::config::parse_args() {
        Ok(cli) => cli,
        Err(problem) => {
            eprintln!("keyward: {problem}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Some(Command::Serve(config)) => serve(*config).await,
        None => serve(Config::defaults()).await,
        Some(Command::Migrate(store)) => match telemetry::init("info", LogFormat::Text) {
            Ok(_telemetry) => keyward_server::open_store(&store).await.map(|_| tracing::info!("migrations applied")),
            Err(err) => Err(err),
        },
        Some(Command::Gateway(config)) => gateway(config).await,
        Some(Command::RotateMasterKey(args)) => match telemetry::init("info", LogFormat::Text) {
            Ok(_telemetry) => keyward_server::rotate_master_key(&args).await.map(|count| {
                tracing::info!(count, "re-encrypted every RPC provider key; start the server with the new master key")
            }),
            Err(err) => Err(err),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keyward: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Dropped last, so spans of the shutdown itself are flushed too.
    let _telemetry = telemetry::init(&config.log, config.log_format)?;
    let mut running = keyward_server::start(config).await?;
    tokio::select! {
        () = shutdown_signal() => {}
        result = running.wait() => return result,
    }
    tracing::info!("shutting down; finishing in-flight calls");
    running.stop().await
}

async fn gateway(config: keyward_server::config::GatewayConfig) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(&config.log, config.log_format)?;
    let mut running = keyward_server::start_gateway(config).await?;
    tokio::select! {
        () = shutdown_signal() => {}
        result = running.wait() => return result,
    }
    tracing::info!("shutting down; finishing in-flight requests");
    running.stop().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
