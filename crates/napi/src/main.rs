//! `napi`: the NAPI service. Reads its config (`--config FILE`, `NAPI_*` variables),
//! starts, and runs until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "napi",
    about = "Triton NAPI: nic tags, networks, IPs, NICs and fabrics"
)]
struct Args {
    /// TOML config file; every key can also be set with NAPI_<KEY>.
    #[arg(long, short = 'f', env = "NAPI_CONFIG")]
    config: Option<PathBuf>,
}

triton_common::global_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let _telemetry = triton_common::telemetry::init("napi");
    let config: napi::Config = match triton_common::config::load("napi", args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("napi: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = triton_common::shutdown::on_signal();
    let running = match napi::start(config, shutdown).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "napi failed to start");
            return ExitCode::FAILURE;
        }
    };
    match running.task.await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            tracing::error!(error = %error_chain(&e), "napi failed");
            ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!(error = %e, "napi server task panicked");
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
