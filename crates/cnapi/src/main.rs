//! `cnapi [-f|--config FILE] [--check-config]`: reads its config, connects to Moray,
//! serves until SIGTERM or SIGINT; every config key can also be set as `CNAPI_<KEY>` (see
//! `triton_common::service`). A failed server is exit code 1.

use std::process::ExitCode;

use cnapi::config::{Config, Storage};
use cnapi::store::{MemoryStore, MorayStore};

triton_common::global_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    triton_common::service::Service::new("cnapi", "Triton CNAPI: compute nodes and allocation")
        .run(|config: Config, shutdown| async move {
            let running = match config.storage {
                Storage::Moray => {
                    let store = MorayStore::connect(&config.moray_url).await?;
                    cnapi::app::start(store, config.settings(), &config.listen, shutdown).await?
                }
                Storage::Memory => {
                    tracing::warn!("storage = memory: nothing survives a restart");
                    let store = MemoryStore::default();
                    cnapi::app::start(store, config.settings(), &config.listen, shutdown).await?
                }
            };
            println!("cnapi listening on {}", running.addr);
            Ok(running.task.await??)
        })
        .await
}
