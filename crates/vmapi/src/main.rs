//! `vmapi`: parse the config, start, run until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "vmapi", about = "VMAPI: instances and their durable jobs")]
struct Args {
    /// TOML config file; every key can also be set as VMAPI_<KEY>.
    #[arg(short = 'f', long = "config", env = "VMAPI_CONFIG")]
    config: Option<PathBuf>,
}

triton_common::global_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let _telemetry = triton_common::telemetry::init("vmapi");
    let config: vmapi::Config = match triton_common::config::load("vmapi", args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vmapi: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = triton_common::shutdown::on_signal();
    let running = match vmapi::start(config, shutdown).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e.full_message(), "vmapi failed to start");
            return ExitCode::FAILURE;
        }
    };
    match running.task.await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            tracing::error!(error = %e.full_message(), "vmapi stopped");
            ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!(error = %e, "vmapi server task panicked");
            ExitCode::FAILURE
        }
    }
}
