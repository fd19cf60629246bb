//! One agent, in-process: the task API on a listener, heartbeats to CNAPI, and the boot
//! of instances whose `autoboot` says they should run. The `cn-agent` binary starts one
//! (or, with the sim backend, many); tests start them on port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use triton_proto::cnagent::v1::cn_agent_server::CnAgentServer;
use uuid::Uuid;

use crate::backend::{InstanceState, ZoneBackend};
use crate::error::{Error, Result};
use crate::heartbeat::{HEARTBEAT_INTERVAL, Heartbeater};
use crate::service::AgentService;
use crate::sysinfo::NodeFacts;
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
    let listener = triton_common::grpc::bind(&options.listen)
        .await
        .map_err(|e| Error::Spawn {
            command: format!("listen on {}", options.listen),
            source: std::io::Error::other(e.to_string()),
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io(options.listen.clone(), e))?;
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
    let grpc = options.grpc.clone();
    let task = tokio::spawn(async move {
        let beats = heartbeater.map(|h| tokio::spawn(h.run(shutdown.clone())));
        if let Err(e) =
            triton_common::grpc::serve(listener, routes, &[SERVICE_NAME], &grpc, shutdown.clone())
                .await
        {
            tracing::error!(error = %e, "cn-agent's gRPC server failed");
        }
        shutdown.cancel();
        if let Some(beats) = beats {
            let _ = beats.await;
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
