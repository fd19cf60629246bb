//! `cnapi [-f|--config FILE] [--check-config]`: reads its config, connects to Moray,
//! serves until SIGTERM or SIGINT; every config key can also be set as `CNAPI_<KEY>` (see
//! `triton_common::service`). A failed server is exit code 1.

use std::process::ExitCode;

triton_common::global_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    triton_common::service::Service::new("cnapi", "Triton CNAPI: compute nodes and allocation")
        .run(|config: cnapi::config::Config, shutdown| async move {
            let running = cnapi::app::start_configured(config, shutdown).await?;
            println!("cnapi listening on {}", running.addr);
            Ok(running.task.await??)
        })
        .await
}
