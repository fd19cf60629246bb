//! `imgapi [-f|--config FILE] [--check-config]`: the IMGAPI service; serves until SIGTERM
//! or SIGINT; every config key can also be set as `IMGAPI_<KEY>` (see
//! `triton_common::service`).

use std::process::ExitCode;

triton_common::global_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    triton_common::service::Service::new("imgapi", "Triton IMGAPI: image manifests and files")
        .run(|config: imgapi::Config, shutdown| async move {
            let running = imgapi::start(config, shutdown).await?;
            // Either server ending (after shutdown, or on failure) ends the process.
            let (server, ended) = tokio::select! {
                r = running.task => ("gRPC", r),
                r = running.http_task => ("HTTP", r),
            };
            ended
                .map_err(|e| format!("{server} server task failed: {e}"))?
                .map_err(|e| format!("{server} server: {}", triton_common::service::chain(&e)))?;
            Ok(())
        })
        .await
}
