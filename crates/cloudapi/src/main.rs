//! `cloudapi [-f|--config FILE] [--check-config]`: serves until SIGTERM or SIGINT; every
//! config key can also be set as `CLOUDAPI_<KEY>` (see `triton_common::service`).

use std::process::ExitCode;

triton_common::global_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    triton_common::service::Service::new("cloudapi", "CloudAPI: Triton's public REST API")
        .check(cloudapi::Config::check)
        .run(|config: cloudapi::Config, shutdown| async move {
            let running = cloudapi::start(config, shutdown).await?;
            Ok(running.task.await?)
        })
        .await
}
