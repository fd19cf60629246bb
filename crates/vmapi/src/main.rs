//! `vmapi [-f|--config FILE] [--check-config]`: serves until SIGTERM or SIGINT; every
//! config key can also be set as `VMAPI_<KEY>` (see `triton_common::service`).

use std::process::ExitCode;

triton_common::global_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    triton_common::service::Service::new("vmapi", "VMAPI: instances and their durable jobs")
        .check(vmapi::Config::check)
        .run(|config: vmapi::Config, shutdown| async move {
            let running = vmapi::start(config, shutdown).await?;
            Ok(running.task.await??)
        })
        .await
}
