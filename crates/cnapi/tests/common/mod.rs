//! What CNAPI's tests share: a CNAPI on a loopback port and a client of it, simulated
//! cn-agents heartbeating to it, and the requests the tests send most.

// Each test uses its part of this module.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use cnapi::app::Running;
use cnapi::service::Settings;
use cnapi::store::{MemoryStore, MorayStore, Store};
use dc_testkit::node::SimNode;
use dc_testkit::services::cn_agent;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use triton_proto::cnagent::v1 as agent_pb;
use triton_proto::cnagent::v1::create_task_request::Task;
use triton_proto::cnapi::v1 as pb;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;
use uuid::Uuid;

/// A CNAPI on `store` with `settings` on a free loopback port until `shutdown`, and a
/// client of it.
pub async fn start_cnapi<S: Store>(
    store: S,
    settings: Settings,
    shutdown: &CancellationToken,
) -> (Running, CnapiClient<Channel>) {
    let running = cnapi::app::start(store, settings, "127.0.0.1:0", shutdown.clone())
        .await
        .expect("cnapi starts");
    let c = client(running.addr).await;
    (running, c)
}

/// A CNAPI keeping servers in memory that sets up every server that registers.
pub async fn start_auto_setup(shutdown: &CancellationToken) -> (Running, CnapiClient<Channel>) {
    let settings = Settings {
        auto_setup: true,
        ..Default::default()
    };
    start_cnapi(MemoryStore::default(), settings, shutdown).await
}

/// [`start_cnapi`] on a connection of its own to the Moray at `moray_url`.
pub async fn start_on_moray(
    moray_url: &str,
    settings: Settings,
    shutdown: &CancellationToken,
) -> (Running, CnapiClient<Channel>) {
    let store = MorayStore::connect(moray_url)
        .await
        .expect("connect to moray");
    start_cnapi(store, settings, shutdown).await
}

/// A client of the CNAPI on `addr`.
pub async fn client(addr: std::net::SocketAddr) -> CnapiClient<Channel> {
    CnapiClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to cnapi")
}

/// Starts a simulated node's cn-agent (in-memory sim backend) heartbeating to the CNAPI at
/// `cnapi_url` every `heartbeat` until `shutdown`; the node's server UUID.
pub async fn start_sim_agent(
    cnapi_url: &str,
    node: SimNode,
    heartbeat: Duration,
    shutdown: CancellationToken,
) -> Uuid {
    let backend = Arc::new(cn_agent::sim::SimBackend::in_memory(
        cn_agent::sim::SimConfig::default(),
    ));
    let options = cn_agent::agent::AgentOptions {
        cnapi_url: cnapi_url.to_string(),
        heartbeat_interval: heartbeat,
        ..Default::default()
    };
    node.start(backend, options, shutdown).await.server_uuid
}

/// An allocation of `ram` MiB (10 GiB of disk) for a new instance with one NIC on
/// `nic_tag`.
pub fn alloc(ram: u64, nic_tag: &str) -> pb::AllocateRequest {
    pb::AllocateRequest {
        vm: Some(pb::AllocVm {
            vm_uuid: Uuid::new_v4().to_string(),
            owner_uuid: Uuid::new_v4().to_string(),
            ram,
            quota: 10,
            ..Default::default()
        }),
        nic_tags: vec![nic_tag.into()],
        ..Default::default()
    }
}

/// Server `uuid` as GetServer answers.
pub async fn server(c: &mut CnapiClient<Channel>, uuid: Uuid) -> pb::Server {
    c.get_server(pb::GetServerRequest {
        uuid: uuid.to_string(),
    })
    .await
    .expect("get server")
    .into_inner()
}

/// Whether CNAPI has a record of server `uuid`.
pub async fn exists(c: &mut CnapiClient<Channel>, uuid: Uuid) -> bool {
    c.get_server(pb::GetServerRequest {
        uuid: uuid.to_string(),
    })
    .await
    .is_ok()
}

/// The servers ListServers answers for `filter`.
pub async fn list_servers(
    c: &mut CnapiClient<Channel>,
    filter: pb::ListServersRequest,
) -> Vec<pb::Server> {
    c.list_servers(filter)
        .await
        .expect("list servers")
        .into_inner()
        .servers
}

/// What CNAPI says is left on `server` for allocations.
pub async fn capacity(c: &mut CnapiClient<Channel>, server: Uuid) -> pb::ServerCapacity {
    let mut cap = c
        .capacity(pb::CapacityRequest {
            servers: vec![server.to_string()],
        })
        .await
        .expect("capacity")
        .into_inner();
    cap.capacities.remove(0)
}

/// Releases instance `vm`'s reservation on `server` (empty: wherever it is); whether
/// there was one.
pub async fn release(
    c: &mut CnapiClient<Channel>,
    vm: &str,
    server: &str,
) -> Result<bool, tonic::Status> {
    Ok(c.release_reservation(pb::ReleaseReservationRequest {
        vm_uuid: vm.into(),
        server_uuid: server.into(),
    })
    .await?
    .into_inner()
    .released)
}

/// Registers a 16 GiB / 8 CPU server named `cn<n>` directly (no agent); its UUID.
pub async fn register(c: &mut CnapiClient<Channel>, n: u32) -> Uuid {
    let uuid = Uuid::new_v4();
    register_sysinfo(c, &sysinfo(uuid, n)).await;
    uuid
}

/// The sysinfo of server `uuid` named `cn<n>`: 16 GiB, 8 CPUs, `eth0` on `admin`.
pub fn sysinfo(uuid: Uuid, n: u32) -> serde_json::Value {
    json!({
        "UUID": uuid.to_string(),
        "Hostname": format!("cn{n}"),
        "MiB of Memory": "16384",
        "CPU Online Count": 8,
        "Network Interfaces": {"eth0": {"NIC Names": ["admin"]}},
    })
}

/// RegisterServer of a node reporting `sysinfo`.
pub async fn register_sysinfo(c: &mut CnapiClient<Channel>, sysinfo: &serde_json::Value) {
    c.register_server(pb::RegisterServerRequest {
        sysinfo_json: sysinfo.to_string(),
        agent_url: String::new(),
        datacenter: String::new(),
    })
    .await
    .expect("register server");
}

/// An instance `uuid` of `ram` MiB named `web0` with one NIC on `nic_tag`.
pub fn instance_spec(uuid: &str, nic_tag: &str, ram: u64) -> agent_pb::InstanceSpec {
    agent_pb::InstanceSpec {
        uuid: uuid.into(),
        hostname: "web0".into(),
        image_uuid: Uuid::new_v4().to_string(),
        ram,
        autoboot: true,
        nics: vec![agent_pb::Nic {
            nic_tag: nic_tag.into(),
            ip: "10.99.0.5".into(),
            netmask: "24".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// `machine_create` of [`instance_spec`] (from the sim's image path) sent to `server`
/// as [`run_task`] sends it.
pub async fn run_create(
    c: &mut CnapiClient<Channel>,
    server: Uuid,
    req_id: &str,
    uuid: &str,
    nic_tag: &str,
    ram: u64,
) -> Result<agent_pb::Task, tonic::Status> {
    let create = Task::MachineCreate(agent_pb::MachineCreate {
        spec: Some(instance_spec(uuid, nic_tag, ram)),
        image_source: "/images/base.tar.gz".into(),
    });
    run_task(c, server, req_id, create).await
}

/// Sends `task` to `server`'s agent through CNAPI and waits (up to 10 s) for its end.
pub async fn run_task(
    c: &mut CnapiClient<Channel>,
    server: Uuid,
    req_id: &str,
    task: Task,
) -> Result<agent_pb::Task, tonic::Status> {
    let t = c
        .server_task(pb::ServerTaskRequest {
            server_uuid: server.to_string(),
            task: Some(agent_pb::CreateTaskRequest {
                req_id: req_id.into(),
                task: Some(task),
            }),
        })
        .await?
        .into_inner();
    Ok(c.wait_task(pb::WaitServerTaskRequest {
        server_uuid: server.to_string(),
        task_id: t.id,
        timeout_ms: 10_000,
    })
    .await?
    .into_inner())
}
