//! CNAPI at scale on a real Moray: `CNAPI_SCALE_NODES` (500) simulated cn-agents register
//! and heartbeat until every server is `running`; `CNAPI_SCALE_ALLOCS` (1000) concurrent
//! allocations, twice as many as fit, never over-commit a server, which is checked from
//! the reservations in Moray against each server's provisionable memory as CNAPI reports
//! it; and a server whose agent stops goes `unknown` while the others stay `running`.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cnapi::service::Settings;
use cnapi::store::{MorayStore, Store};
use dc_testkit::bench::env_or;
use dc_testkit::node::SimNode;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use triton_proto::cnapi::v1 as pb;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;

mod common;

use common::{alloc, list_servers, server, start_on_moray, start_sim_agent};

const MIB: i64 = 1 << 20;
const NODE_RAM_MIB: u64 = 16384;
/// Eight GiB: one fits in a 16 GiB server's 13926 MiB, two do not.
const VM_RAM_MIB: u64 = 8192;

async fn list(c: &mut CnapiClient<Channel>) -> Vec<pb::Server> {
    list_servers(c, pb::ListServersRequest::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_nodes_on_moray_never_overcommit() {
    let nodes = env_or("CNAPI_SCALE_NODES", 500);
    let allocs = env_or("CNAPI_SCALE_ALLOCS", 1000);
    let began = Instant::now();

    let moray = triton_testkit::MorayFixture::start().await;
    let shutdown = CancellationToken::new();
    let moray_url = moray.url().to_string();
    let settings = Settings {
        // Seven heartbeats (every 2 s) missed before a node is `unknown`: 500 agents on a
        // loaded 2-core machine send some beats late, and a node that flapped to `unknown`
        // during the burst would be left out of the placements the test counts.
        heartbeat_lifetime: Duration::from_secs(15),
        reconcile_period: Duration::from_millis(500),
        auto_setup: true,
        ..Default::default()
    };
    let (cnapi, mut c) = start_on_moray(&moray_url, settings, &shutdown).await;
    let cnapi_url = format!("http://{}", cnapi.addr);

    // The agents: each its own listener, heartbeats every 2 s.
    let mut agents = Vec::new();
    for n in 0..nodes {
        let token = shutdown.child_token();
        let node = SimNode {
            hostname: format!("sim{n:04}"),
            ram_mib: NODE_RAM_MIB,
            ..SimNode::default()
        };
        let uuid = start_sim_agent(&cnapi_url, node, Duration::from_secs(2), token.clone()).await;
        agents.push((uuid, token));
    }
    // A guard against a hang, not a speed check: registering 500 agents takes about 50 s on
    // the 2-core VM alone and longer beside the rest of the suite.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let servers = list(&mut c).await;
        let running = servers.iter().filter(|s| s.status == "running").count();
        if servers.len() == nodes && running == nodes {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{running} of {nodes} servers running ({} registered)",
            servers.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let registered = began.elapsed();

    eprintln!(
        "{nodes} nodes running after {:.1} s",
        registered.as_secs_f64()
    );

    // Twice as many allocations as fit, all at once, from 32 connections (a burst of
    // more streams than a connection allows at first is reset by HTTP/2).
    let mut conns = Vec::new();
    for _ in 0..32 {
        conns.push(CnapiClient::connect(cnapi_url.clone()).await.unwrap());
    }
    let alloc_started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..allocs {
        let mut c = conns[i % conns.len()].clone();
        calls.spawn(async move {
            let request = alloc(VM_RAM_MIB, "admin");
            let vm_uuid = request.vm.as_ref().unwrap().vm_uuid.clone();
            (vm_uuid, c.allocate(request).await)
        });
    }
    let mut placed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut refused = 0;
    while let Some(r) = calls.join_next().await {
        let (vm_uuid, r) = r.unwrap();
        match r {
            Ok(ok) => placed
                .entry(ok.into_inner().server_uuid)
                .or_default()
                .push(vm_uuid),
            Err(status) => {
                assert_eq!(
                    triton_common::status::error_name(&status),
                    Some("NoAllocatableServersError"),
                    "{status:?}"
                );
                assert!(status.message().len() < 4096, "{}", status.message());
                refused += 1;
            }
        }
    }
    let allocated = alloc_started.elapsed();
    let fit = nodes.min(allocs);
    assert_eq!(placed.values().map(Vec::len).sum::<usize>(), fit);
    assert_eq!(refused, allocs - fit);

    // From the data: the reservations in Moray (read on a connection of our own) against
    // each server's provisionable memory as CNAPI reports it.
    let store = MorayStore::connect(&moray_url).await.unwrap();
    let docs = store.list_reservations().await.unwrap();
    let mut reserved: BTreeMap<String, (i64, Vec<String>)> = BTreeMap::new();
    for doc in &docs {
        let e = reserved
            .entry(doc.value.server_uuid.to_string())
            .or_default();
        for r in &doc.value.reservations {
            e.0 += r.vm.max_physical_memory as i64 * MIB;
            e.1.push(r.vm.uuid.clone());
        }
    }
    let servers = list(&mut c).await;
    assert_eq!(servers.len(), nodes);
    for s in &servers {
        let (bytes, vms) = reserved.get(&s.uuid).cloned().unwrap_or_default();
        let vm_bytes: i64 = s
            .vms
            .values()
            .map(|v| v.max_physical_memory as i64 * MIB)
            .sum();
        // Provisionable memory already has the instances' RAM taken out.
        assert!(
            bytes <= s.memory_provisionable_bytes,
            "{} over-committed: {bytes} reserved, {} provisionable",
            s.uuid,
            s.memory_provisionable_bytes
        );
        let budget = (s.ram as f64 * (1.0 - s.reservation_ratio)) as i64 * MIB;
        assert!(
            bytes + vm_bytes <= budget,
            "{} over-committed: {bytes} reserved + {vm_bytes} in instances > {budget}",
            s.uuid
        );
        let mut expected = placed.get(&s.uuid).cloned().unwrap_or_default();
        let mut vms = vms;
        expected.sort();
        vms.sort();
        assert_eq!(vms, expected, "reservations on {} as answered", s.uuid);
    }

    // One agent stops: its server goes unknown; the others stay running. (The deadline
    // guards against a hang: the lifetime is 15 s.)
    let (stopped, token) = &agents[nodes / 2];
    token.cancel();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = server(&mut c, *stopped).await;
        if s.status == "unknown" {
            break;
        }
        assert!(Instant::now() < deadline, "{stopped} still {}", s.status);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let servers = list(&mut c).await;
    let unknown: Vec<&str> = servers
        .iter()
        .filter(|s| s.status != "running")
        .map(|s| s.uuid.as_str())
        .collect();
    assert_eq!(unknown, vec![stopped.to_string().as_str()]);

    eprintln!(
        "{nodes} nodes running after {:.1} s; {allocs} allocations in {:.1} s ({fit} placed); total {:.1} s",
        registered.as_secs_f64(),
        allocated.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    shutdown.cancel();
}
