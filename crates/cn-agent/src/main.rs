//! `cn-agent [-f|--config FILE] [--check-config]`: reads its config, starts the agent on
//! the configured backend, and runs until SIGTERM or SIGINT; every config key can also be
//! set as `CN_AGENT_<KEY>` (see `triton_common::service`). Instances keep running when it
//! stops.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cn_agent::agent::{AgentOptions, Running, start};
use cn_agent::config::{BackendKind, Config};
use cn_agent::linux::{LinuxBackend, LinuxConfig};
use cn_agent::sim::{SimBackend, SimConfig};
use cn_agent::sysinfo::{NodeFacts, server_uuid};
use tokio_util::sync::CancellationToken;

triton_common::global_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    triton_common::service::Service::new("cn-agent", "Triton compute node agent")
        .run(|config: Config, shutdown| async move { Ok(run(config, shutdown).await?) })
        .await
}

fn options(config: &Config, listen: String) -> AgentOptions {
    AgentOptions {
        listen,
        advertise_url: config.advertise_url.clone(),
        cnapi_url: config.cnapi_url.clone(),
        datacenter: config.datacenter.clone(),
        heartbeat_interval: Duration::from_millis(config.heartbeat_interval_ms.max(100)),
        autoboot: config.autoboot,
        grpc: config.grpc.clone(),
    }
}

async fn run(config: Config, shutdown: CancellationToken) -> cn_agent::Result<()> {
    let bridges = config.bridges()?;
    let configured = if config.server_uuid.is_empty() {
        None
    } else {
        Some(cn_agent::convert::parse_uuid(
            "server_uuid",
            &config.server_uuid,
        )?)
    };
    let mut running: Vec<Running> = Vec::new();
    match config.backend {
        BackendKind::Linux => {
            let uuid = server_uuid(&config.state_dir, configured)?;
            let backend = LinuxBackend::new(LinuxConfig {
                state_dir: config.state_dir.clone(),
                cgroup_root: config.linux.cgroup_root.clone(),
                cgroup_parent: config.linux.cgroup_parent.clone(),
                netns_prefix: config.linux.netns_prefix.clone(),
                link_prefix: config.linux.link_prefix.clone(),
                bridges: bridges.clone(),
                create_bridges: config.linux.create_bridges,
            })?;
            let state_dir = config.state_dir.clone();
            let datacenter = config.datacenter.clone();
            running.push(
                start(
                    Arc::new(backend),
                    move |agent_port| NodeFacts::Real {
                        uuid,
                        state_dir,
                        nic_tags: bridges,
                        datacenter,
                        agent_port,
                    },
                    options(&config, config.listen.clone()),
                    shutdown.clone(),
                )
                .await?,
            );
        }
        BackendKind::Sim => {
            let (host, base_port) = config
                .listen
                .rsplit_once(':')
                .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_string(), p)))
                .ok_or_else(|| cn_agent::Error::invalid("listen", "must be host:port"))?;
            if base_port == 0 && !config.advertise_url.is_empty() {
                return Err(cn_agent::Error::invalid(
                    "advertise_url",
                    "needs a fixed listen port with the sim backend (node i is on port + i)",
                ));
            }
            let tags: Vec<String> = bridges.keys().cloned().collect();
            for i in 0..config.sim.nodes {
                let dir = config.state_dir.join("sim").join(i.to_string());
                std::fs::create_dir_all(&dir).map_err(|e| cn_agent::Error::Io {
                    path: dir.clone(),
                    source: e,
                })?;
                // A fixed UUID only makes sense for a single node.
                let uuid = server_uuid(&dir, configured.filter(|_| config.sim.nodes == 1))?;
                let backend = SimBackend::persistent(
                    dir.join("zones.json"),
                    SimConfig {
                        delays: config.sim.delays,
                        nic_tags: tags.clone(),
                    },
                )?;
                let port = if base_port == 0 {
                    0
                } else {
                    base_port.saturating_add(i as u16)
                };
                let sim = config.sim.clone();
                let datacenter = config.datacenter.clone();
                let tags = tags.clone();
                let boot_time = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let hostname = format!("{}{i:04}", sim.hostname_prefix);
                let mut opts = options(&config, format!("{host}:{port}"));
                // One URL for every node would send CNAPI to node 0 for all of them.
                opts.advertise_url = config.sim_advertise_url(i)?;
                running.push(
                    start(
                        Arc::new(backend),
                        move |agent_port| NodeFacts::Sim {
                            uuid,
                            hostname,
                            ram_mib: sim.ram_mib,
                            cpus: sim.cpus,
                            disk_bytes: sim.disk_gib << 30,
                            nic_tags: tags,
                            datacenter,
                            agent_port,
                            boot_time,
                        },
                        opts,
                        shutdown.clone(),
                    )
                    .await?,
                );
            }
            tracing::info!(nodes = config.sim.nodes, "simulated compute nodes running");
        }
    }
    for r in &running {
        println!("cn-agent {} listening on {}", r.server_uuid, r.addr);
    }
    for r in running {
        let _ = r.task.await;
    }
    Ok(())
}
