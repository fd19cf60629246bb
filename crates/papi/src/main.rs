//! `papi [-f|--config FILE] [--check-config]`: serves until SIGTERM or SIGINT; every
//! config key can also be set as `PAPI_<KEY>` (see `triton_common::service`).

use std::process::ExitCode;

triton_common::global_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    triton_common::service::Service::new("papi", "PAPI: packages, stored in Moray")
        .run(|config: papi::Config, shutdown| async move {
            let running = papi::start(config, shutdown).await?;
            Ok(running.task.await??)
        })
        .await
}
