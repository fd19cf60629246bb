//! Bad input through CNAPI to a simulated cn-agent: each is refused with an error that
//! names the field (or what is missing), and the instances already there are untouched.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use dc_testkit::node::SimNode;
use dc_testkit::{assert_error, eventually};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use triton_common::status::error_name;
use triton_proto::cnagent::v1 as agent_pb;
use triton_proto::cnagent::v1::create_task_request::Task;
use triton_proto::cnapi::v1 as pb;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;
use uuid::Uuid;

mod common;

use common::{alloc, exists, run_create, run_task, start_auto_setup, start_sim_agent};

/// Instance `vm` in `server`'s record, as its heartbeats put it there.
async fn instance(c: &mut CnapiClient<Channel>, server: Uuid, vm: &str) -> Option<pb::ServerVm> {
    common::server(c, server).await.vms.get(vm).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_by_field_and_leaves_others_alone() {
    let shutdown = CancellationToken::new();
    let (cnapi, mut c) = start_auto_setup(&shutdown).await;
    let server = start_sim_agent(
        &format!("http://{}", cnapi.addr),
        SimNode::default(),
        Duration::from_millis(200),
        shutdown.clone(),
    )
    .await;
    eventually("the server registered", Duration::from_secs(10), || {
        let mut c = c.clone();
        async move { exists(&mut c, server).await }
    })
    .await;

    // An instance that must survive everything below.
    let keep = Uuid::new_v4().to_string();
    let created = run_create(&mut c, server, "", &keep, "admin", 1024)
        .await
        .unwrap();
    assert_eq!(created.status, "complete", "{created:?}");
    eventually("the instance heartbeated", Duration::from_secs(5), || {
        let mut c = c.clone();
        let keep = keep.clone();
        async move { instance(&mut c, server, &keep).await.is_some() }
    })
    .await;

    // A NIC on a nic tag the server lacks: refused by allocation and by the agent.
    assert_error(
        c.allocate(alloc(1024, "storage")).await,
        "NoAllocatableServersError",
        &["nic tag storage"],
    );
    let other = Uuid::new_v4().to_string();
    let err = run_create(&mut c, server, "", &other, "storage", 1024).await;
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
    assert_error(
        c.allocate(alloc(1 << 30, "admin")).await,
        "NoAllocatableServersError",
        &["RAM", &server.to_string()],
    );

    // A task for an instance that does not exist.
    let missing = Uuid::new_v4().to_string();
    let failed = run_task(
        &mut c,
        server,
        "",
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
        let s = common::server(&mut c, server).await;
        assert!(!s.vms.contains_key("garbage"), "{field}");
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
        "",
        Task::MachineBoot(agent_pb::MachineBoot { uuid: keep.clone() }),
    )
    .await
    .unwrap();
    assert_eq!(listed.status, "complete", "{listed:?}");
    assert_eq!(listed.instance.unwrap().state, "running");
    shutdown.cancel();
}
