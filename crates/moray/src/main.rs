//! `moray [--config FILE]`: serves Moray until SIGTERM or SIGINT. Every config key can be
//! set by `MORAY_<KEY>` (see `moray::Config`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "moray",
    version,
    about = "Moray: JSON objects with typed indexes on PostgreSQL"
)]
struct Args {
    /// TOML config file.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

triton_common::global_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let _telemetry = triton_common::telemetry::init("moray");
    let config: moray::Config = match triton_common::config::load("moray", args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("moray: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = triton_common::shutdown::on_signal();
    let running = match moray::start(config, shutdown).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "moray failed to start");
            return ExitCode::FAILURE;
        }
    };
    match running.task.await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "moray stopped with an error");
            ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!(error = %e, "moray server task failed");
            ExitCode::FAILURE
        }
    }
}
