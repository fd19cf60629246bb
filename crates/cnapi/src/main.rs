//! `cnapi [-f|--config FILE] [--check-config]`: reads its config, connects to Moray,
//! serves until SIGTERM or SIGINT; every config key can also be set as `CNAPI_<KEY>` (see
//! `triton_common::service`). A failed server is exit code 1.

triton_common::service_main!(
    "cnapi",
    "Triton CNAPI: compute nodes and allocation",
    |config: cnapi::config::Config, shutdown| async move {
        let running = cnapi::app::start_configured(config, shutdown).await?;
        println!("cnapi listening on {}", running.addr);
        Ok(running.task.await??)
    }
);
