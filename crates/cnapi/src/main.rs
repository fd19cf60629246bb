//! The `cnapi` binary: reads its config, connects to Moray, serves until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cnapi::config::{Config, Storage};
use cnapi::store::{MemoryStore, MorayStore};

#[derive(Parser)]
#[command(
    name = "cnapi",
    about = "Triton CNAPI: compute nodes and allocation",
    version
)]
struct Args {
    /// TOML config file; every key can also be set with CNAPI_<KEY>.
    #[arg(long, short, env = "CNAPI_CONFIG")]
    config: Option<PathBuf>,
}

triton_common::global_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let _telemetry = triton_common::telemetry::init("cnapi");
    let config: Config = match triton_common::config::load("cnapi", args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cnapi: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = triton_common::shutdown::on_signal();
    let started = match config.storage {
        Storage::Moray => match MorayStore::connect(&config.moray_url).await {
            Ok(store) => {
                cnapi::app::start(store, config.settings(), &config.listen, shutdown).await
            }
            Err(e) => Err(e),
        },
        Storage::Memory => {
            tracing::warn!("storage = memory: nothing survives a restart");
            cnapi::app::start(
                MemoryStore::default(),
                config.settings(),
                &config.listen,
                shutdown,
            )
            .await
        }
    };
    match started {
        Ok(running) => {
            println!("cnapi listening on {}", running.addr);
            let _ = running.task.await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "cnapi failed to start");
            eprintln!("cnapi: {e}");
            ExitCode::FAILURE
        }
    }
}
