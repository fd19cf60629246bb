//! manatee-sitter: runs one PostgreSQL peer of a Manatee shard.
//!
//! `manatee-sitter --config /etc/manatee/sitter.toml`; every key can also be set as
//! `MANATEE_SITTER_<KEY>` (see docs/manatee.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "manatee-sitter",
    version,
    about = "Runs one PostgreSQL peer of a Manatee shard"
)]
struct Args {
    /// The sitter's TOML configuration file.
    #[arg(short, long, env = "MANATEE_SITTER_CONFIG")]
    config: Option<PathBuf>,
}

triton_common::global_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let _telemetry = triton_common::telemetry::init("manatee-sitter");
    let cfg: manatee::SitterConfig =
        match triton_common::config::load("manatee-sitter", args.config.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("manatee-sitter: {}", manatee_client::error_chain(&e));
                return ExitCode::from(2);
            }
        };
    let cancel = triton_common::shutdown::on_signal();
    let running = match manatee::run_sitter(cfg, cancel).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("manatee-sitter: {}", manatee_client::error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(peer = %running.peer.id, status = %running.status_addr, "manatee-sitter running");
    match running.wait().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = manatee_client::error_chain(&e);
            tracing::error!(error = %msg, "manatee-sitter stopped");
            eprintln!("manatee-sitter: {msg}");
            ExitCode::FAILURE
        }
    }
}
