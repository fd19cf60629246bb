//! Bad input through CNAPI to a simulated cn-agent: each is refused with an error that
//! names the field (or what is missing), and the instances already there are untouched.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cn_agent::agent::AgentOptions;
use cn_agent::sim::{SimBackend, SimConfig};
use cn_agent::sysinfo::NodeFacts;
use cnapi::service::Settings;
use cnapi::store::MemoryStore;
use dc_testkit::services::cn_agent;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use triton_common::status::error_name;
use triton_proto::cnagent::v1 as agent_pb;
use triton_proto::cnagent::v1::create_task_request::Task;
use triton_proto::cnapi::v1 as pb;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;
use uuid::Uuid;

fn spec(uuid: &str, nic_tag: &str, ram: u64) -> agent_pb::InstanceSpec {
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

async fn run_task(
    c: &mut CnapiClient<Channel>,
    server: Uuid,
    task: Task,
) -> Result<agent_pb::Task, tonic::Status> {
    let t = c
        .server_task(pb::ServerTaskRequest {
            server_uuid: server.to_string(),
            task: Some(agent_pb::CreateTaskRequest {
                req_id: String::new(),
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

fn alloc(ram: u64, nic_tag: &str) -> pb::AllocateRequest {
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

async fn instance(c: &mut CnapiClient<Channel>, server: Uuid, vm: &str) -> Option<pb::ServerVm> {
    c.get_server(pb::GetServerRequest {
        uuid: server.to_string(),
    })
    .await
    .unwrap()
    .into_inner()
    .vms
    .get(vm)
    .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_by_field_and_leaves_others_alone() {
    let shutdown = CancellationToken::new();
    let cnapi = cnapi::app::start(
        MemoryStore::default(),
        Settings {
            auto_setup: true,
            ..Default::default()
        },
        "127.0.0.1:0",
        shutdown.clone(),
    )
    .await
    .unwrap();
    let url = format!("http://{}", cnapi.addr);
    let server = Uuid::new_v4();
    cn_agent::agent::start(
        Arc::new(SimBackend::in_memory(SimConfig::default())),
        move |agent_port| NodeFacts::Sim {
            uuid: server,
            hostname: "sim0".into(),
            ram_mib: 16384,
            cpus: 8,
            disk_bytes: 1 << 40,
            nic_tags: vec!["admin".into()],
            datacenter: "test".into(),
            agent_port,
            boot_time: 1_700_000_000,
        },
        AgentOptions {
            cnapi_url: url.clone(),
            heartbeat_interval: Duration::from_millis(200),
            ..Default::default()
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    let mut c = CnapiClient::connect(url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c
        .get_server(pb::GetServerRequest {
            uuid: server.to_string(),
        })
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the server never registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An instance that must survive everything below.
    let keep = Uuid::new_v4().to_string();
    let created = run_task(
        &mut c,
        server,
        Task::MachineCreate(agent_pb::MachineCreate {
            spec: Some(spec(&keep, "admin", 1024)),
            image_source: "/images/base.tar.gz".into(),
        }),
    )
    .await
    .unwrap();
    assert_eq!(created.status, "complete", "{created:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while instance(&mut c, server, &keep).await.is_none() {
        assert!(Instant::now() < deadline, "the instance never heartbeated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A NIC on a nic tag the server lacks: refused by allocation and by the agent.
    let err = c.allocate(alloc(1024, "storage")).await.unwrap_err();
    assert_eq!(error_name(&err), Some("NoAllocatableServersError"));
    assert!(
        err.message().contains("nic tag storage"),
        "{}",
        err.message()
    );
    let other = Uuid::new_v4().to_string();
    let err = run_task(
        &mut c,
        server,
        Task::MachineCreate(agent_pb::MachineCreate {
            spec: Some(spec(&other, "storage", 1024)),
            image_source: "/images/base.tar.gz".into(),
        }),
    )
    .await;
    let message = match err {
        Err(status) => {
            assert_eq!(error_name(&status), Some("ValidationFailedError"));
            status.message().to_string()
        }
        Ok(task) => {
            assert_eq!(task.status, "failure", "{task:?}");
            assert_eq!(task.error_name, "ValidationFailedError");
            task.error_message
        }
    };
    assert!(message.contains("storage"), "{message}");

    // More RAM than any server has.
    let err = c.allocate(alloc(1 << 30, "admin")).await.unwrap_err();
    assert_eq!(error_name(&err), Some("NoAllocatableServersError"));
    assert!(err.message().contains("RAM"), "{}", err.message());
    assert!(
        err.message().contains(&server.to_string()),
        "{}",
        err.message()
    );

    // A task for an instance that does not exist.
    let missing = Uuid::new_v4().to_string();
    let failed = run_task(
        &mut c,
        server,
        Task::MachineShutdown(agent_pb::MachineShutdown {
            uuid: missing.clone(),
            timeout_seconds: 1,
        }),
    )
    .await
    .unwrap();
    assert_eq!(failed.status, "failure");
    assert_eq!(failed.error_name, "VmNotFoundError");
    assert!(failed.error_message.contains(&missing), "{failed:?}");

    // Malformed heartbeats: the field is named and the record keeps its instances.
    for (hb, field) in [
        (
            pb::HeartbeatRequest {
                server_uuid: "not-a-uuid".into(),
                ..Default::default()
            },
            "server_uuid",
        ),
        (
            pb::HeartbeatRequest {
                server_uuid: server.to_string(),
                vms: vec![pb::ServerVm {
                    uuid: "garbage".into(),
                    state: "running".into(),
                    max_physical_memory: 1 << 40,
                    ..Default::default()
                }],
                ..Default::default()
            },
            "vms[0].uuid",
        ),
    ] {
        let err = c.heartbeat(hb).await.unwrap_err();
        assert_eq!(error_name(&err), Some("ValidationFailedError"), "{err:?}");
        assert!(err.message().contains(field), "{field}: {}", err.message());
        let s = c
            .get_server(pb::GetServerRequest {
                uuid: server.to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!s.vms.contains_key("garbage"));
    }
    let err = c
        .heartbeat(pb::HeartbeatRequest {
            server_uuid: Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error_name(&err), Some("ResourceNotFoundError"), "{err:?}");

    // The instance from the start is still there and running.
    assert_eq!(
        instance(&mut c, server, &keep).await.map(|v| v.state),
        Some("running".to_string())
    );
    let listed = run_task(
        &mut c,
        server,
        Task::MachineBoot(agent_pb::MachineBoot { uuid: keep.clone() }),
    )
    .await
    .unwrap();
    assert_eq!(listed.status, "complete", "{listed:?}");
    assert_eq!(listed.instance.unwrap().state, "running");
    shutdown.cancel();
}
