//! `cargo bench -p vmapi --bench provision [-- linux|sim]`: CreateVm to `running`.
//!
//! * linux: p50/p99 of 50 provisions one after another on a real `linux` cn-agent
//!   (needs root and /bin/busybox; skipped otherwise), image already on the node
//!   after the first. Target: p50 under 2 s.
//! * sim: provisions per second with `VMAPI_BENCH_VMS` (1000) concurrent CreateVm on
//!   `VMAPI_BENCH_NODES` (200) simulated nodes, CreateVm to every job ended. Target:
//!   200/s. `VMAPI_SCALE_CNAPI_MORAY=1` keeps CNAPI's servers in Moray.
//!
//! Everything (PostgreSQL, Moray, UFDS, PAPI, IMGAPI, NAPI, CNAPI, agents, VMAPI) runs
//! in this one process on loopback; the numbers include all of it.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::host::Host;
use common::{Dc, LinuxNode, Options};
use hdrhistogram::Histogram;

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn linux() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/bin/busybox").exists() {
        println!("| linux | skipped: needs root and /bin/busybox |");
        return;
    }
    let host = Host::new();
    let s = host.subnet;
    let dc = Dc::start(Options {
        sim_nodes: 0,
        subnet: format!("10.99.{s}.0/24"),
        first_ip: format!("10.99.{s}.10"),
        last_ip: format!("10.99.{s}.250"),
        gateway: Some(format!("10.99.{s}.1")),
        linux: Some(LinuxNode {
            config: host.config.clone(),
        }),
        image_file: Some(host.image.clone()),
        ..Default::default()
    })
    .await;
    let runs = env_or("VMAPI_BENCH_LINUX_RUNS", 50);
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let mut first = Duration::ZERO;
    for i in 0..runs {
        let started = Instant::now();
        let r = dc
            .vmapi
            .clone()
            .create_vm(dc.create_request(&format!("bench{i}")))
            .await
            .expect("create")
            .into_inner();
        let job = dc.wait_job(&r.job_uuid).await;
        assert_eq!(job.execution, "succeeded", "{}", job.error);
        let took = started.elapsed();
        if i == 0 {
            first = took;
        }
        hist.record(took.as_micros() as u64).expect("record");
        // Not timed: make room for the next (a small CI host fits only a few).
        let d = dc
            .vmapi
            .clone()
            .delete_vm(triton_proto::vmapi::v1::DeleteVmRequest {
                uuid: r.vm_uuid.clone(),
                owner_uuid: String::new(),
            })
            .await
            .expect("delete")
            .into_inner();
        assert_eq!(dc.wait_job(&d.job_uuid).await.execution, "succeeded");
    }
    println!(
        "| linux: CreateVm to running, {runs} in a row | p50 {:.0} ms | p99 {:.0} ms | first (image download) {:.0} ms |",
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        first.as_secs_f64() * 1000.0
    );
}

async fn sim() {
    let nodes = env_or("VMAPI_BENCH_NODES", 200);
    let vms = env_or("VMAPI_BENCH_VMS", 1000);
    let dc = Dc::start(Options {
        sim_nodes: nodes,
        node_ram_mib: 1900,
        heartbeat: Duration::from_secs(2),
        cnapi_in_memory: std::env::var("VMAPI_SCALE_CNAPI_MORAY").is_err(),
        vmapi: Box::new(|c| c.max_running_jobs = 512),
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..vms {
        let mut c = dc.vmapi.clone();
        let req = dc.create_request(&format!("vm{i}"));
        tasks.spawn(async move {
            loop {
                match c.create_vm(req.clone()).await {
                    Ok(r) => return r.into_inner(),
                    Err(s) if s.code() == tonic::Code::Unavailable => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(s) => panic!("create: {s}"),
                }
            }
        });
    }
    let mut refs = Vec::new();
    while let Some(r) = tasks.join_next().await {
        refs.push(r.expect("task"));
    }
    let accepted = started.elapsed();
    let mut failed = 0;
    for r in &refs {
        if dc.wait_job(&r.job_uuid).await.execution != "succeeded" {
            failed += 1;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "| sim: {vms} concurrent CreateVm on {nodes} nodes | {:.1} provisions/s | all accepted after {:.1} s | all done after {:.1} s | {failed} failed |",
        vms as f64 / elapsed.as_secs_f64(),
        accepted.as_secs_f64(),
        elapsed.as_secs_f64()
    );
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let all = which.is_empty();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        if all || which.iter().any(|w| w == "linux") {
            linux().await;
        }
        if all || which.iter().any(|w| w == "sim") {
            sim().await;
        }
    });
}
