//! `papi`: parse the config, start, run until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "papi", about = "PAPI: packages, stored in Moray")]
struct Args {
    /// TOML config file; every key can also be set as PAPI_<KEY>.
    #[arg(short = 'f', long = "config", env = "PAPI_CONFIG")]
    config: Option<PathBuf>,
}

triton_common::global_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let _telemetry = triton_common::telemetry::init("papi");
    let config: papi::Config = match triton_common::config::load("papi", args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("papi: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = triton_common::shutdown::on_signal();
    let running = match papi::start(config, shutdown).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "papi failed to start");
            return ExitCode::FAILURE;
        }
    };
    match running.task.await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            tracing::error!(error = %error_chain(&e), "papi stopped");
            ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!(error = %e, "papi server task panicked");
            ExitCode::FAILURE
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
