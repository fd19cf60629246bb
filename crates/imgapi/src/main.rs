//! `imgapi [-f|--config FILE] [--check-config]`: the IMGAPI service; serves until SIGTERM
//! or SIGINT; every config key can also be set as `IMGAPI_<KEY>` (see
//! `triton_common::service`).

triton_common::service_main!(
    "imgapi",
    "Triton IMGAPI: image manifests and files",
    |config: imgapi::Config, shutdown| async move {
        Ok(imgapi::start(config, shutdown).await?.wait().await?)
    }
);
