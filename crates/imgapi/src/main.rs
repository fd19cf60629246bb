//! `imgapi`: the IMGAPI service. Reads its config (`--config FILE`, `IMGAPI_*` variables),
//! starts, and runs until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(name = "imgapi", about = "Triton IMGAPI: image manifests and files")]
struct Args {
    /// TOML config file; every key can also be set with IMGAPI_<KEY>.
    #[arg(long, short = 'f', env = "IMGAPI_CONFIG")]
    config: Option<PathBuf>,
}

triton_common::global_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let _telemetry = triton_common::telemetry::init("imgapi");
    let config: imgapi::Config = match triton_common::config::load("imgapi", args.config.as_deref())
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("imgapi: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = triton_common::shutdown::on_signal();
    let running = match imgapi::start(config, shutdown).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "imgapi failed to start");
            return ExitCode::FAILURE;
        }
    };
    // Either server ending (after shutdown, or on failure) ends the process.
    let result = tokio::select! {
        r = running.task => ("gRPC", r),
        r = running.http_task => ("HTTP", r),
    };
    match result {
        (_, Ok(Ok(()))) => ExitCode::SUCCESS,
        (server, Ok(Err(e))) => {
            tracing::error!(server, error = %error_chain(&e), "imgapi failed");
            ExitCode::FAILURE
        }
        (server, Err(e)) => {
            tracing::error!(server, error = %e, "imgapi server task panicked");
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
