//! `ufds`: parse the config, start, run until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "ufds", about = "UFDS: accounts and SSH keys, stored in Moray")]
struct Args {
    /// TOML config file; every key can also be set as UFDS_<KEY>.
    #[arg(short = 'f', long = "config", env = "UFDS_CONFIG")]
    config: Option<PathBuf>,
}

triton_common::global_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let _telemetry = triton_common::telemetry::init("ufds");
    let config: ufds::Config = match triton_common::config::load("ufds", args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ufds: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = triton_common::shutdown::on_signal();
    let running = match ufds::start(config, shutdown).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "ufds failed to start");
            return ExitCode::FAILURE;
        }
    };
    match running.task.await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            tracing::error!(error = %error_chain(&e), "ufds stopped");
            ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!(error = %e, "ufds server task panicked");
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
