//! Many simulated compute nodes, many concurrent provisions: every CreateVm finishes,
//! no IP is handed out twice, no server holds more than it has.
//!
//! Size: `VMAPI_SCALE_NODES` (default 50) and `VMAPI_SCALE_VMS` (default 200), so the
//! suite stays within two minutes on two cores; the full 200 nodes / 1000 VMs run with
//! `VMAPI_SCALE_NODES=200 VMAPI_SCALE_VMS=1000` and in `cargo bench -p vmapi --bench provision`.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{all_vms, create_all, env_or};
use dc_testkit::services::cn_agent;
use dc_testkit::{Dc, Options};

/// MiB of each node: with CNAPI's 15 % reservation 1615 MiB are provisionable, room for
/// six 256 MiB VMs: 1000 VMs fill 200 nodes to 83 %.
const NODE_RAM_MIB: u64 = 1900;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_provisions_on_many_nodes() {
    let nodes = env_or("VMAPI_SCALE_NODES", 50);
    let vms = env_or("VMAPI_SCALE_VMS", 200);
    let dc = Dc::start(Options {
        sim_nodes: nodes,
        node_ram_mib: NODE_RAM_MIB,
        heartbeat: Duration::from_secs(2),
        // CNAPI's Moray store reads every server record for each allocation under one
        // lock (~250 ms at 200 nodes): that is CNAPI's limit, measured apart.
        cnapi_in_memory: std::env::var("VMAPI_SCALE_CNAPI_MORAY").is_err(),
        ..Options::vmapi()
    })
    .await;
    let started = Instant::now();
    // Only a transient refusal is sent again; anything else fails.
    let refs = create_all(&dc, vms, Duration::from_millis(50), Duration::from_secs(2)).await;
    let accepted = started.elapsed();
    let mut failed = Vec::new();
    for r in &refs {
        let job = dc.wait_job(&r.job_uuid).await;
        if job.execution != "succeeded" {
            failed.push(format!("{}: {}", r.vm_uuid, job.error));
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{vms} provisions on {nodes} nodes: accepted in {accepted:?}, done in {elapsed:?} ({:.0}/s)",
        vms as f64 / elapsed.as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );

    // Every VM running, each IP once, no server over its memory.
    let all = all_vms(&dc, &dc.seed().owner).await;
    assert_eq!(all.len(), vms);
    assert!(all.iter().all(|v| v.state == "running"));
    let ips: BTreeSet<&str> = all.iter().map(|v| v.nics[0].ip.as_str()).collect();
    assert_eq!(ips.len(), vms, "an IP was handed out twice");
    let mut per_server: BTreeMap<&str, u64> = BTreeMap::new();
    for v in &all {
        *per_server.entry(v.server_uuid.as_str()).or_default() += v.max_physical_memory;
    }
    let provisionable = (NODE_RAM_MIB as f64 * 0.85) as u64;
    for (server, ram) in &per_server {
        assert!(
            *ram <= provisionable,
            "server {server} holds {ram} MiB of {provisionable}"
        );
    }
    // And the nodes agree: each instance exists exactly once.
    let on_nodes: usize = {
        let mut n = 0;
        for s in &dc.sims {
            n += cn_agent::ZoneBackend::list(s.as_ref()).await.unwrap().len();
        }
        n
    };
    assert_eq!(on_nodes, vms);
}
