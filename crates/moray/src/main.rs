//! `moray [-f|--config FILE] [--check-config]`: serves until SIGTERM or SIGINT; every
//! config key can also be set as `MORAY_<KEY>` (see `triton_common::service`).

use std::process::ExitCode;

triton_common::global_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    triton_common::service::Service::new(
        "moray",
        "Moray: JSON objects with typed indexes on PostgreSQL",
    )
    .run(|config: moray::Config, shutdown| async move {
        let running = moray::start(config, shutdown).await?;
        Ok(running.task.await??)
    })
    .await
}
