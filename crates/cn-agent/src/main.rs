//! `cn-agent [-f|--config FILE] [--check-config]`: reads its config, starts the agent on
//! the configured backend, and runs until SIGTERM or SIGINT; every config key can also be
//! set as `CN_AGENT_<KEY>` (see `triton_common::service`). Instances keep running when it
//! stops.

use std::process::ExitCode;

triton_common::global_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    triton_common::service::Service::new("cn-agent", "Triton compute node agent")
        .run(|config: cn_agent::config::Config, shutdown| async move {
            let running = cn_agent::agent::start_configured(config, shutdown).await?;
            for r in &running {
                println!("cn-agent {} listening on {}", r.server_uuid, r.addr);
            }
            for r in running {
                let _ = r.task.await;
            }
            Ok(())
        })
        .await
}
