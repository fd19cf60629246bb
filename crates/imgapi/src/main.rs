//! `imgapi [-f|--config FILE] [--check-config]`: the IMGAPI service; serves until SIGTERM
//! or SIGINT; every config key can also be set as `IMGAPI_<KEY>` (see
//! `triton_common::service`).

use std::process::ExitCode;

triton_common::global_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    triton_common::service::Service::new("imgapi", "Triton IMGAPI: image manifests and files")
        .run(|config: imgapi::Config, shutdown| async move {
            Ok(imgapi::start(config, shutdown).await?.wait().await?)
        })
        .await
}
