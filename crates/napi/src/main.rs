//! `napi [-f|--config FILE] [--check-config]`: serves until SIGTERM or SIGINT; every
//! config key can also be set as `NAPI_<KEY>` (see `triton_common::service`).

use std::process::ExitCode;

triton_common::global_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    triton_common::service::Service::new(
        "napi",
        "Triton NAPI: nic tags, networks, IPs, NICs and fabrics",
    )
    .run(|config: napi::Config, shutdown| async move {
        let running = napi::start(config, shutdown).await?;
        Ok(running.task.await??)
    })
    .await
}
