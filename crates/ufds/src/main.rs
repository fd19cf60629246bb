//! `ufds [-f|--config FILE] [--check-config]`: serves until SIGTERM or SIGINT; every
//! config key can also be set as `UFDS_<KEY>` (see `triton_common::service`).

use std::process::ExitCode;

triton_common::global_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    triton_common::service::Service::new("ufds", "UFDS: accounts and SSH keys, stored in Moray")
        .run(|config: ufds::Config, shutdown| async move {
            let running = ufds::start(config, shutdown).await?;
            Ok(running.task.await??)
        })
        .await
}
