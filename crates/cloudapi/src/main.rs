//! `cloudapi [-f|--config FILE] [--check-config]`: serves until SIGTERM or SIGINT; every
//! config key can also be set as `CLOUDAPI_<KEY>` (see `triton_common::service`).

triton_common::service_main!(
    "cloudapi",
    "CloudAPI: Triton's public REST API",
    |config: cloudapi::Config, shutdown| async move {
        let running = cloudapi::start(config, shutdown).await?;
        Ok(running.task.await?)
    },
    check = cloudapi::Config::check
);
