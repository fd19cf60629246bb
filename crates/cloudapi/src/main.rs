//! `cloudapi`: parse the config, start, run until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "cloudapi", about = "CloudAPI: Triton's public REST API")]
struct Args {
    /// TOML config file; every key can also be set as CLOUDAPI_<KEY>.
    #[arg(short = 'f', long = "config", env = "CLOUDAPI_CONFIG")]
    config: Option<PathBuf>,
}

triton_common::global_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let _telemetry = triton_common::telemetry::init("cloudapi");
    let config: cloudapi::Config =
        match triton_common::config::load("cloudapi", args.config.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cloudapi: {e}");
                return ExitCode::FAILURE;
            }
        };
    if let Err(e) = config.check() {
        eprintln!("cloudapi: bad config: {e}");
        return ExitCode::FAILURE;
    }
    let shutdown = triton_common::shutdown::on_signal();
    let running = match cloudapi::start(config, shutdown).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "cloudapi failed to start");
            return ExitCode::FAILURE;
        }
    };
    match running.task.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cloudapi server task panicked");
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
