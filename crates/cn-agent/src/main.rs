//! `cn-agent [-f|--config FILE] [--check-config]`: reads its config, starts the agent on
//! the configured backend, and runs until SIGTERM or SIGINT; every config key can also be
//! set as `CN_AGENT_<KEY>` (see `triton_common::service`). Instances keep running when it
//! stops.

triton_common::service_main!(
    "cn-agent",
    "Triton compute node agent",
    |config: cn_agent::config::Config, shutdown| async move {
        let running = cn_agent::agent::start_configured(config, shutdown).await?;
        for r in &running {
            println!("cn-agent {} listening on {}", r.server_uuid, r.addr);
        }
        for r in running {
            let _ = r.task.await;
        }
        Ok(())
    }
);
