//! The task API over gRPC, as CNAPI uses it, on a simulated node.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use cn_agent::agent::AgentOptions;
use cn_agent::sim::{SimBackend, SimConfig, SimDelays};
use dc_testkit::node::SimNode;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use triton_proto::cnagent::v1 as pb;
use triton_proto::cnagent::v1::cn_agent_client::CnAgentClient;
use triton_proto::cnagent::v1::create_task_request::Task;
use uuid::Uuid;

fn spec(uuid: &str, image: &str) -> pb::InstanceSpec {
    pb::InstanceSpec {
        uuid: uuid.into(),
        hostname: "web0".into(),
        image_uuid: image.into(),
        ram: 256,
        cpu_cap: 100,
        autoboot: true,
        nics: vec![pb::Nic {
            nic_tag: "admin".into(),
            mac: "02:00:00:00:00:01".into(),
            ip: "10.99.0.5".into(),
            netmask: "255.255.255.0".into(),
            primary: true,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Submits `task` as request `req_id`; the task as accepted.
async fn submit(c: &mut CnAgentClient<Channel>, req_id: &str, task: Task) -> pb::Task {
    c.create_task(pb::CreateTaskRequest {
        req_id: req_id.into(),
        task: Some(task),
    })
    .await
    .unwrap()
    .into_inner()
}

/// Task `id` once it has ended (waiting up to 5 s).
async fn wait(c: &mut CnAgentClient<Channel>, id: &str) -> pb::Task {
    c.wait_task(pb::WaitTaskRequest {
        id: id.into(),
        timeout_ms: 5000,
    })
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_over_grpc_with_ids_progress_and_results() {
    let shutdown = CancellationToken::new();
    let server_uuid = Uuid::new_v4();
    let backend = Arc::new(SimBackend::in_memory(SimConfig {
        delays: SimDelays {
            create: Duration::from_millis(300),
            ..Default::default()
        },
        ..Default::default()
    }));
    let running = SimNode {
        uuid: server_uuid,
        ram_mib: 4096,
        cpus: 4,
        ..SimNode::default()
    }
    .start(backend, AgentOptions::default(), shutdown.clone())
    .await;
    let mut c = CnAgentClient::connect(running.agent_url.clone())
        .await
        .unwrap();

    let sysinfo = c
        .get_sysinfo(pb::GetSysinfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sysinfo.server_uuid, server_uuid.to_string());
    let json: serde_json::Value = serde_json::from_str(&sysinfo.sysinfo_json).unwrap();
    assert_eq!(json["MiB of Memory"], "4096");
    assert_eq!(json["CN Agent Port"], running.addr.port());

    // Bad input names the field.
    let err = c
        .create_task(pb::CreateTaskRequest {
            req_id: String::new(),
            task: Some(Task::MachineCreate(pb::MachineCreate {
                spec: Some(spec("nope", &Uuid::new_v4().to_string())),
                image_source: String::new(),
            })),
        })
        .await
        .unwrap_err();
    assert_eq!(
        triton_common::status::error_name(&err),
        Some("ValidationFailedError")
    );
    assert!(err.message().contains("uuid"), "{}", err.message());

    let vm = Uuid::new_v4().to_string();
    let created = submit(
        &mut c,
        "req-1",
        Task::MachineCreate(pb::MachineCreate {
            spec: Some(spec(&vm, &Uuid::new_v4().to_string())),
            image_source: "/images/base.tar.gz".into(),
        }),
    )
    .await;
    assert_eq!(created.status, "active");
    assert_eq!(created.task, "machine_create");
    assert_eq!(created.target_uuid, vm);
    // Queued right behind the create: waits its turn, then sees a running instance.
    let stop = submit(
        &mut c,
        "req-2",
        Task::MachineShutdown(pb::MachineShutdown {
            uuid: vm.clone(),
            timeout_seconds: 1,
        }),
    )
    .await;
    let mid = c
        .get_task(pb::GetTaskRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mid.status, "active");
    assert!(mid.progress >= 10, "{mid:?}");
    let done = wait(&mut c, &created.id).await;
    assert_eq!(done.status, "complete");
    assert_eq!(done.progress, 100);
    assert_eq!(done.req_id, "req-1");
    assert_eq!(done.instance.as_ref().unwrap().state, "running");
    assert!(!done.finished.is_empty());
    let stopped = wait(&mut c, &stop.id).await;
    assert_eq!(stopped.status, "complete", "{stopped:?}");
    assert_eq!(stopped.instance.unwrap().state, "stopped");

    // Resize, and a failure with its Triton name.
    let update = submit(
        &mut c,
        "",
        Task::MachineUpdate(pb::MachineUpdate {
            uuid: vm.clone(),
            ram: Some(512),
            ..Default::default()
        }),
    )
    .await;
    let update = wait(&mut c, &update.id).await;
    assert_eq!(update.instance.unwrap().spec.unwrap().ram, 512);
    let boot_missing = submit(
        &mut c,
        "",
        Task::MachineBoot(pb::MachineBoot {
            uuid: Uuid::new_v4().to_string(),
        }),
    )
    .await;
    let failed = wait(&mut c, &boot_missing.id).await;
    assert_eq!(failed.status, "failure");
    assert_eq!(failed.error_name, "VmNotFoundError");
    assert_eq!(failed.history.last().unwrap().name, "error");

    let instances = c
        .list_instances(pb::ListInstancesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(instances.instances.len(), 1);
    let usage = c
        .get_usage(pb::GetUsageRequest {
            uuid: String::new(),
            node: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(usage.usage.len(), 1);
    assert_eq!(usage.usage[0].memory_limit_bytes, 512 << 20);
    let tasks = c
        .list_tasks(pb::ListTasksRequest { limit: 10 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tasks.tasks.len(), 4);
    let err = c
        .get_task(pb::GetTaskRequest {
            id: "missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        triton_common::status::error_name(&err),
        Some("TaskNotFoundError")
    );

    shutdown.cancel();
    running.task.await.unwrap();
}
