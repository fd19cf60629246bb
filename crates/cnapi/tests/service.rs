//! CNAPI end to end: real cn-agents (sim backend) registering and heartbeating over gRPC,
//! status going `unknown` when heartbeats stop, allocation with reservations that never
//! over-commit a server even with two CNAPIs, tasks forwarded to the agents, and the
//! records in a real Moray on a real PostgreSQL.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use cnapi::service::Settings;
use cnapi::store::{MemoryStore, MorayStore, Store};
use dc_testkit::eventually;
use dc_testkit::node::SimNode;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use triton_proto::cnagent::v1 as agent_pb;
use triton_proto::cnagent::v1::create_task_request::Task;
use triton_proto::cnapi::v1 as pb;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;
use uuid::Uuid;

mod common;

use common::{
    alloc, capacity, exists, list_servers, register, release, run_create, run_task, server,
    start_cnapi, start_on_moray, start_sim_agent,
};

const MIB: i64 = 1 << 20;

fn fast_settings() -> Settings {
    Settings {
        heartbeat_lifetime: Duration::from_millis(1500),
        reconcile_period: Duration::from_millis(200),
        ..Default::default()
    }
}

/// A cn-agent for a simulated 16 GiB node `sim<n>` with nic tags `admin` and `external`,
/// heartbeating to `cnapi_url` every 200 ms; its server UUID and its shutdown token.
async fn start_agent(cnapi_url: &str, n: u32) -> (Uuid, CancellationToken) {
    let shutdown = CancellationToken::new();
    let node = SimNode {
        hostname: format!("sim{n}"),
        nic_tags: vec!["admin".into(), "external".into()],
        ..SimNode::default()
    };
    let uuid = start_sim_agent(
        cnapi_url,
        node,
        Duration::from_millis(200),
        shutdown.clone(),
    )
    .await;
    (uuid, shutdown)
}

/// An allocation of `ram` MiB on the `admin` nic tag.
fn alloc_request(ram: u64) -> pb::AllocateRequest {
    alloc(ram, "admin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_register_heartbeat_run_tasks_and_go_unknown() {
    let shutdown = CancellationToken::new();
    let (cnapi, mut c) = start_cnapi(MemoryStore::default(), fast_settings(), &shutdown).await;
    let url = format!("http://{}", cnapi.addr);
    let mut agents = Vec::new();
    for n in 0..3 {
        agents.push(start_agent(&url, n).await);
    }

    // Registered, running, not set up.
    eventually("three servers running", Duration::from_secs(10), || {
        let mut c = c.clone();
        async move {
            let list = list_servers(&mut c, pb::ListServersRequest::default()).await;
            list.len() == 3 && list.iter().all(|s| s.status == "running")
        }
    })
    .await;
    let s0 = server(&mut c, agents[0].0).await;
    assert!(!s0.setup);
    assert_eq!(s0.hostname, "sim0");
    assert_eq!(s0.ram, 16384);
    assert_eq!(s0.nic_tags, vec!["admin", "external"]);
    assert_eq!(
        s0.memory_provisionable_bytes,
        (16384.0 * 0.85 * MIB as f64) as i64
    );
    assert!(s0.agent_url.starts_with("http://127.0.0.1:"));

    // Nothing is set up: no allocation, and the error says why for each server.
    let err = c.allocate(alloc_request(4096)).await.unwrap_err();
    assert_eq!(
        triton_common::status::error_name(&err),
        Some("NoAllocatableServersError")
    );
    for (uuid, _) in &agents {
        assert!(
            err.message()
                .contains(&format!("{uuid}: server is not set up")),
            "{}",
            err.message()
        );
    }

    for (uuid, _) in &agents {
        let s = c
            .server_setup(pb::ServerSetupRequest {
                uuid: uuid.to_string(),
                hostname: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(s.setup);
    }
    let listed = list_servers(
        &mut c,
        pb::ListServersRequest {
            setup: Some(true),
            hostname: "sim1".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].uuid, agents[1].0.to_string());

    // Allocate, then create the instance there through CNAPI's task pass-through.
    let req = alloc_request(4096);
    let vm_uuid = req.vm.as_ref().unwrap().vm_uuid.clone();
    let chosen = c.allocate(req).await.unwrap().into_inner();
    let target: Uuid = chosen.server_uuid.parse().unwrap();
    assert!(chosen.steps.iter().any(|s| s.step == "hard-filter-min-ram"));
    // The reservation already counts in the capacity.
    let cap = capacity(&mut c, target).await;
    assert_eq!(cap.ram, 13926 - 4096);
    assert_eq!(cap.cpu, 0, "an uncapped reservation takes every CPU");

    let done = run_create(&mut c, target, "test", &vm_uuid, "admin", 4096)
        .await
        .unwrap();
    assert_eq!(done.task, "machine_create");
    assert_eq!(done.req_id, "test");
    assert_eq!(done.status, "complete", "{done:?}");
    assert_eq!(done.instance.unwrap().state, "running");

    // The heartbeats bring the instance into the server record.
    eventually(
        "the instance in the heartbeat",
        Duration::from_secs(5),
        || {
            let mut c = c.clone();
            let vm_uuid = vm_uuid.clone();
            async move {
                let s = server(&mut c, target).await;
                s.vms.get(&vm_uuid).is_some_and(|vm| vm.state == "running")
            }
        },
    )
    .await;
    let s = server(&mut c, target).await;
    assert_eq!(
        s.memory_provisionable_bytes,
        (16384.0 * 0.85 * MIB as f64) as i64 - 4096 * MIB
    );
    // Seen in heartbeats, the reservation no longer counts twice.
    assert_eq!(capacity(&mut c, target).await.ram, 13926 - 4096);

    // A task error from the agent reaches the caller with its name.
    let err = run_task(
        &mut c,
        target,
        "",
        Task::MachineBoot(agent_pb::MachineBoot { uuid: "bad".into() }),
    )
    .await
    .unwrap_err();
    assert_eq!(
        triton_common::status::error_name(&err),
        Some("ValidationFailedError")
    );

    // An agent stops: its server goes unknown after the heartbeat lifetime; others stay.
    let stopped = agents[2].0;
    agents[2].1.cancel();
    eventually(
        "the stopped agent's server unknown",
        Duration::from_secs(6),
        || {
            let mut c = c.clone();
            async move { server(&mut c, stopped).await.status == "unknown" }
        },
    )
    .await;
    assert_eq!(server(&mut c, agents[0].0).await.status, "running");
    let unknown = list_servers(
        &mut c,
        pb::ListServersRequest {
            status: "unknown".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(unknown.len(), 1);

    // An operator deletes a server whose agent still runs: the agent registers again.
    let deleted = agents[0].0;
    c.delete_server(pb::DeleteServerRequest {
        uuid: deleted.to_string(),
    })
    .await
    .unwrap();
    let err = c
        .get_server(pb::GetServerRequest {
            uuid: deleted.to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        triton_common::status::error_name(&err),
        Some("ResourceNotFoundError")
    );
    eventually("the deleted server back", Duration::from_secs(5), || {
        let mut c = c.clone();
        async move { exists(&mut c, deleted).await }
    })
    .await;
    assert!(!server(&mut c, deleted).await.setup);

    for (_, token) in &agents {
        token.cancel();
    }
    shutdown.cancel();
}

/// Registers a 16 GiB / 8 CPU server directly (no agent) and sets it up.
async fn register_set_up(c: &mut CnapiClient<Channel>, n: u32) -> Uuid {
    let uuid = register(c, n).await;
    c.server_setup(pb::ServerSetupRequest {
        uuid: uuid.to_string(),
        hostname: String::new(),
    })
    .await
    .unwrap();
    // Give it a disk, as its heartbeats would.
    c.heartbeat(pb::HeartbeatRequest {
        server_uuid: uuid.to_string(),
        vms: vec![],
        meminfo: Some(pb::MemoryInfo {
            total_bytes: 16384 << 20,
            available_bytes: 0,
            arc_bytes: 0,
        }),
        diskinfo: Some(pb::DiskInfo {
            pool_size_bytes: 1 << 40,
            ..Default::default()
        }),
        boot_time: 1_700_000_000,
    })
    .await
    .unwrap();
    uuid
}

/// Two CNAPIs on one store take 16 concurrent allocations of 4 GiB for two servers
/// with room for three each: exactly six succeed, three per server.
async fn concurrent_allocations_never_overcommit<S: Store + Clone>(store: S, other: S) {
    let shutdown = CancellationToken::new();
    let settings = Settings {
        heartbeat_lifetime: Duration::from_secs(600),
        ..Default::default()
    };
    let (_a, mut ca) = start_cnapi(store, settings.clone(), &shutdown).await;
    let (_b, cb) = start_cnapi(other, settings, &shutdown).await;
    let s1 = register_set_up(&mut ca, 1).await;
    let s2 = register_set_up(&mut ca, 2).await;

    let mut calls = tokio::task::JoinSet::new();
    for i in 0..16 {
        let mut c = if i % 2 == 0 { ca.clone() } else { cb.clone() };
        calls.spawn(async move { c.allocate(alloc_request(4096)).await });
    }
    let mut placed: BTreeMap<String, usize> = BTreeMap::new();
    let mut refused = 0;
    while let Some(r) = calls.join_next().await {
        match r.unwrap() {
            Ok(ok) => *placed.entry(ok.into_inner().server_uuid).or_default() += 1,
            Err(status) => {
                assert_eq!(
                    triton_common::status::error_name(&status),
                    Some("NoAllocatableServersError"),
                    "{status:?}"
                );
                assert!(
                    status.message().contains("unreserved RAM"),
                    "{}",
                    status.message()
                );
                refused += 1;
            }
        }
    }
    assert_eq!(placed.get(&s1.to_string()), Some(&3), "{placed:?}");
    assert_eq!(placed.get(&s2.to_string()), Some(&3), "{placed:?}");
    assert_eq!(refused, 10);

    // The servers are full: one more is refused, and the capacity shows what is left.
    let mut one = alloc_request(4096);
    one.servers = vec![s1.to_string()];
    assert!(ca.allocate(one.clone()).await.is_err());
    assert_eq!(capacity(&mut ca, s1).await.ram, 13926 - 3 * 4096);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_allocations_in_memory() {
    let store = MemoryStore::default();
    concurrent_allocations_never_overcommit(store.clone(), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_release_and_expire() {
    let shutdown = CancellationToken::new();
    let (_cnapi, mut c) = start_cnapi(MemoryStore::default(), Settings::default(), &shutdown).await;
    let s = register_set_up(&mut c, 1).await;
    let mut big = alloc_request(12_000);
    let vm = big.vm.as_ref().unwrap().vm_uuid.clone();
    big.reservation_ttl_seconds = 600;
    c.allocate(big.clone()).await.unwrap();
    assert!(c.allocate(alloc_request(12_000)).await.is_err());
    assert!(release(&mut c, &vm, &s.to_string()).await.unwrap());
    assert!(!release(&mut c, &vm, "").await.unwrap());
    // A reservation with a 1 s lifetime stops counting after it.
    let mut short = alloc_request(12_000);
    short.reservation_ttl_seconds = 1;
    c.allocate(short).await.unwrap();
    assert!(c.allocate(alloc_request(12_000)).await.is_err());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.allocate(alloc_request(12_000)).await.unwrap();
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_live_in_moray() {
    let moray = triton_testkit::MorayFixture::start().await;
    let shutdown = CancellationToken::new();
    let moray_url = moray.url().to_string();

    // Two CNAPIs, each with its own Moray connection: etags are all that keeps them apart.
    let a = MorayStore::connect(&moray_url).await.unwrap();
    let b = MorayStore::connect(&moray_url).await.unwrap();
    concurrent_allocations_never_overcommit(a, b).await;

    // Operator updates and a restart of CNAPI: the record is in Moray.
    let (_first, mut c) = start_on_moray(&moray_url, Settings::default(), &shutdown).await;
    let uuid = register_set_up(&mut c, 9).await;
    let updated = c
        .update_server(pb::UpdateServerRequest {
            uuid: uuid.to_string(),
            reserved: Some(true),
            traits_json: Some(r#"{"ssd": true}"#.into()),
            reservation_ratio: Some(0.25),
            overprovision_ratios: Some(pb::OverprovisionRatios {
                cpu: 4.0,
                ram: 1.0,
                disk: 1.0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(updated.reserved);
    assert_eq!(updated.memory_provisionable_bytes, 16384 * 3 / 4 * MIB);
    let bad = c
        .update_server(pb::UpdateServerRequest {
            uuid: uuid.to_string(),
            traits_json: Some("[1]".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        triton_common::status::error_name(&bad),
        Some("ValidationFailedError")
    );

    let (_second, mut c2) = start_on_moray(&moray_url, Settings::default(), &shutdown).await;
    let s = server(&mut c2, uuid).await;
    assert!(s.reserved && s.setup);
    assert_eq!(s.traits_json, r#"{"ssd":true}"#);
    assert_eq!(s.reservation_ratio, 0.25);
    let reserved = list_servers(
        &mut c2,
        pb::ListServersRequest {
            reserved: Some(true),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(reserved.len(), 1);
    c2.delete_server(pb::DeleteServerRequest {
        uuid: uuid.to_string(),
    })
    .await
    .unwrap();
    assert!(
        c2.get_server(pb::GetServerRequest {
            uuid: uuid.to_string()
        })
        .await
        .is_err()
    );
    shutdown.cancel();
}

/// A reservation answered by one CNAPI is in Moray: a CNAPI started afterwards (a
/// restart) counts it and can release it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_survive_a_restart_of_cnapi() {
    let moray = triton_testkit::MorayFixture::start().await;
    let moray_url = moray.url().to_string();
    let first_down = CancellationToken::new();
    let (first, mut c) = start_on_moray(&moray_url, Settings::default(), &first_down).await;
    let s = register_set_up(&mut c, 1).await;
    let big = alloc_request(12_000);
    let vm = big.vm.as_ref().unwrap().vm_uuid.clone();
    let placed = c.allocate(big).await.unwrap().into_inner();
    assert_eq!(placed.server_uuid, s.to_string());
    first_down.cancel();
    let _ = first.task.await;

    let shutdown = CancellationToken::new();
    let (_second, mut c) = start_on_moray(&moray_url, Settings::default(), &shutdown).await;
    assert_eq!(capacity(&mut c, s).await.ram, 13926 - 12_000);
    // An instance uuid with filter characters finds no reservation: `*` or `)(` do not
    // release the other instance's.
    for other in ["*", "x)(vm_uuids=*", "\\", "x)(|(vm_uuids=*"] {
        let released = release(&mut c, other, "").await;
        assert!(!released.unwrap_or(false), "{other:?}");
    }
    assert!(c.allocate(alloc_request(12_000)).await.is_err());
    // Released through the CNAPI that did not make it (found by the instance's uuid).
    assert!(release(&mut c, &vm, "").await.unwrap());
    c.allocate(alloc_request(12_000)).await.unwrap();
    let refused = c.allocate(alloc_request(12_000)).await.unwrap_err();
    assert_eq!(
        triton_common::status::error_name(&refused),
        Some("NoAllocatableServersError")
    );
    shutdown.cancel();
}
