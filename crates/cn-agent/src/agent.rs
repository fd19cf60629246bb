//! One agent, in-process: the task API on a listener, heartbeats to CNAPI, and the boot
//! of instances whose `autoboot` says they should run. The `cn-agent` binary starts one
//! (or, with the sim backend, many); tests start them on port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use triton_common::grpc;
use triton_common::periodic::Tasks;
use triton_proto::cnagent::v1::cn_agent_server::CnAgentServer;
use uuid::Uuid;

use crate::backend::{InstanceState, ZoneBackend};
use crate::config::{BackendKind, Config};
use crate::error::{Error, Result};
use crate::heartbeat::{HEARTBEAT_INTERVAL, Heartbeater};
use crate::linux::overlay::{self, Overlay};
use crate::linux::{LinuxBackend, LinuxConfig};
use crate::service::AgentService;
use crate::sim::{SimBackend, SimConfig};
use crate::sysinfo::{NodeFacts, server_uuid};
use crate::tasks::{TaskKind, TaskQueue};

/// Full name of the gRPC service, as the health service reports it.
pub const SERVICE_NAME: &str = "triton.cnagent.v1.CnAgent";

#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// "host:port" to listen on; port 0 picks one.
    pub listen: String,
    /// How CNAPI reaches this agent; empty means `http://<listen address>`.
    pub advertise_url: String,
    /// CNAPI's gRPC URL; empty means no registration and no heartbeats.
    pub cnapi_url: String,
    pub datacenter: String,
    pub heartbeat_interval: Duration,
    /// Boot the instances whose autoboot is set that are not running.
    pub autoboot: bool,
    /// Who may connect to the task API, and reflection (the config's `[grpc]`).
    pub grpc: triton_common::grpc::ServerConfig,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            listen: "127.0.0.1:0".into(),
            advertise_url: String::new(),
            cnapi_url: String::new(),
            datacenter: "coal".into(),
            heartbeat_interval: HEARTBEAT_INTERVAL,
            autoboot: true,
            grpc: triton_common::grpc::ServerConfig::default(),
        }
    }
}

pub struct Running {
    pub addr: SocketAddr,
    pub server_uuid: Uuid,
    pub agent_url: String,
    /// Ends when the agent has stopped (after `shutdown` is cancelled).
    pub task: JoinHandle<()>,
}

/// Starts an agent for `backend`. `facts` gets the bound port.
pub async fn start<B: ZoneBackend>(
    backend: Arc<B>,
    facts: impl FnOnce(u16) -> NodeFacts,
    options: AgentOptions,
    shutdown: CancellationToken,
) -> Result<Running> {
    let (listener, addr) = grpc::bind_addr(&options.listen)
        .await
        .map_err(|e| Error::Spawn {
            command: format!("listen on {}", options.listen),
            source: std::io::Error::other(triton_common::service::chain(&e)),
        })?;
    let facts = Arc::new(facts(addr.port()));
    let server_uuid = facts.uuid();
    let agent_url = if options.advertise_url.is_empty() {
        format!("http://{addr}")
    } else {
        options.advertise_url.clone()
    };
    // Before any task: a create the last agent did not finish is undone, so the task
    // VMAPI sends again finds no half-made instance (and none stays `provisioning`).
    let removed = backend.reconcile().await?;
    if !removed.is_empty() {
        tracing::warn!(?removed, "removed instances whose create did not finish");
    }
    let queue = TaskQueue::new(backend.clone());

    if options.autoboot {
        for instance in backend.list().await? {
            if instance.spec.autoboot && instance.state == InstanceState::Stopped {
                tracing::info!(uuid = %instance.spec.uuid, "booting (autoboot)");
                queue.submit(
                    "autoboot",
                    TaskKind::MachineBoot {
                        uuid: instance.spec.uuid,
                    },
                )?;
            }
        }
    }

    let routes =
        tonic::service::Routes::new(CnAgentServer::new(AgentService::new(queue, facts.clone())));
    let heartbeater = (!options.cnapi_url.is_empty()).then(|| Heartbeater {
        backend: backend.clone(),
        facts: facts.clone(),
        cnapi_url: options.cnapi_url.clone(),
        agent_url: agent_url.clone(),
        datacenter: options.datacenter.clone(),
        interval: options.heartbeat_interval,
    });
    let beats = heartbeater.map(|h| tokio::spawn(h.run(shutdown.clone())));
    let server = grpc::spawn_with_tasks(
        listener,
        routes,
        &[SERVICE_NAME],
        &options.grpc,
        &Tasks::new(),
        shutdown,
        beats,
    );
    let task = tokio::spawn(async move {
        if let Ok(Err(e)) = server.await {
            let error = triton_common::service::chain(&e);
            tracing::error!(%error, "cn-agent's gRPC server failed");
        }
    });
    tracing::info!(%addr, %server_uuid, "cn-agent started");
    Ok(Running {
        addr,
        server_uuid,
        agent_url,
        task,
    })
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

/// Starts the agents `config` describes: one on the linux backend, or `sim.nodes`
/// simulated nodes (node i on the listen port + i). What the `cn-agent` binary runs.
pub async fn start_configured(config: Config, shutdown: CancellationToken) -> Result<Vec<Running>> {
    let bridges = config.bridges()?;
    let configured = if config.server_uuid.is_empty() {
        None
    } else {
        Some(crate::convert::parse_uuid(
            "server_uuid",
            &config.server_uuid,
        )?)
    };
    let mut running: Vec<Running> = Vec::new();
    match config.backend {
        BackendKind::Linux => {
            let uuid = server_uuid(&config.state_dir, configured)?;
            let overlay = match &config.overlay {
                Some(c) => Some(Overlay::new(c.clone(), None)?),
                None => None,
            };
            let backend = LinuxBackend::with_overlay(
                LinuxConfig {
                    state_dir: config.state_dir.clone(),
                    cgroup_root: config.linux.cgroup_root.clone(),
                    cgroup_parent: config.linux.cgroup_parent.clone(),
                    netns_prefix: config.linux.netns_prefix.clone(),
                    link_prefix: config.linux.link_prefix.clone(),
                    bridges: bridges.clone(),
                    create_bridges: config.linux.create_bridges,
                    tenant_services: config.linux.tenant_services.clone(),
                    volmount_bin: Some(config.linux.volmount_bin.clone())
                        .filter(|p| !p.as_os_str().is_empty()),
                },
                overlay.clone(),
            )?;
            // The node provides the fabrics' nic tag once its overlay is up, on the
            // interface of its underlay address (CNAPI places fabric NICs by it).
            let mut node_tags = bridges.clone();
            if let Some(overlay) = &overlay {
                let underlay = overlay::interface_of(overlay.config().underlay_ip)?;
                overlay.start(shutdown.clone())?;
                node_tags.insert(overlay::OVERLAY_TAG.into(), underlay.clone());
                node_tags.insert(overlay::UNDERLAY_TAG.into(), underlay);
            }
            let state_dir = config.state_dir.clone();
            let datacenter = config.datacenter.clone();
            running.push(
                start(
                    Arc::new(backend),
                    move |agent_port| NodeFacts::Real {
                        uuid,
                        state_dir,
                        nic_tags: node_tags,
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
                .ok_or_else(|| Error::invalid("listen", "must be host:port"))?;
            if base_port == 0 && !config.advertise_url.is_empty() {
                return Err(Error::invalid(
                    "advertise_url",
                    "needs a fixed listen port with the sim backend (node i is on port + i)",
                ));
            }
            let tags: Vec<String> = bridges.keys().cloned().collect();
            for i in 0..config.sim.nodes {
                let dir = config.state_dir.join("sim").join(i.to_string());
                std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
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
    Ok(running)
}
