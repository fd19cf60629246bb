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
//! in this one process on loopback; the numbers include all of it. The sim case also
//! prints the CPU time per provision of this process and PostgreSQL, how busy the
//! machine was (other work included), and where a job's time went: waiting to start,
//! and each step (from the jobs' records).

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::{create_all, delete_vm, env_or, linux_dc};
use dc_testkit::linux::LinuxHost;
use dc_testkit::{Dc, Options};
use hdrhistogram::Histogram;
use triton_testkit::cpu::Cpu;

async fn linux() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/bin/busybox").exists() {
        println!("| linux | skipped: needs root and /bin/busybox |");
        return;
    }
    let host = LinuxHost::node("v", "admin");
    let dc = linux_dc(&host).await;
    let runs = env_or("VMAPI_BENCH_LINUX_RUNS", 50);
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let mut first = Duration::ZERO;
    for i in 0..runs {
        let started = Instant::now();
        let r = dc
            .vmapi()
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
        assert_eq!(delete_vm(&dc, &r.vm_uuid).await.execution, "succeeded");
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
        configure_vmapi: Box::new(|c| c.max_running_jobs = 512),
        ..Options::vmapi()
    })
    .await;
    let moray = moray_client::MorayClient::connect(&dc.moray_url())
        .await
        .expect("connect to Moray");
    let before = table_stats(&moray).await;
    let cpu = Cpu::now();
    let started = Instant::now();
    // A refused CreateVm is sent again every 100 ms.
    let pause = Duration::from_millis(100);
    let refs = create_all(&dc, vms, pause, pause).await;
    let accepted = started.elapsed();
    let mut failed = 0;
    let mut jobs = Vec::new();
    for r in &refs {
        let job = dc.wait_job(&r.job_uuid).await;
        if job.execution != "succeeded" {
            failed += 1;
        }
        jobs.push(job);
    }
    let elapsed = started.elapsed();
    let (ours, busy) = cpu.since();
    println!(
        "| sim: {vms} concurrent CreateVm on {nodes} nodes | {:.1} provisions/s | all accepted after {:.1} s | all done after {:.1} s | {failed} failed | CPU {:.1} ms/provision (this process and PostgreSQL) | machine CPUs {:.0}% busy |",
        vms as f64 / elapsed.as_secs_f64(),
        accepted.as_secs_f64(),
        elapsed.as_secs_f64(),
        ours.as_secs_f64() * 1e3 / vms.max(1) as f64,
        busy * 100.0
    );
    step_times(&jobs);
    let after = table_stats(&moray).await;
    for (table, now) in &after {
        let was = before.get(table).copied().unwrap_or_default();
        let per = |i: usize| (now[i] - was[i]) as f64 / vms as f64;
        if per(0) + per(1) + per(2) + per(3) >= 0.05 {
            println!(
                "|   {table} | {:.1} writes/provision | {:.1} index scans/provision | {:.1} rows read/provision ({:.1} by sequential scans) |",
                per(0),
                per(1),
                per(2) + per(3),
                per(3),
            );
        }
    }
}

/// Per table: rows written (inserted, updated, deleted), index scans, rows fetched by
/// them, rows read by sequential scans (PostgreSQL's statistics, which lag by up to
/// half a second).
async fn table_stats(moray: &moray_client::MorayClient) -> BTreeMap<String, [i64; 4]> {
    tokio::time::sleep(Duration::from_millis(700)).await;
    let rows = moray
        .sql(
            "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del AS w, coalesce(idx_scan, 0) AS i, \
             coalesce(idx_tup_fetch, 0) AS f, coalesce(seq_tup_read, 0) AS s \
             FROM pg_stat_user_tables",
            &[],
        )
        .await
        .unwrap_or_default();
    rows.iter()
        .filter_map(|r| {
            let n = |k: &str| {
                r.get(k)
                    .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
            };
            Some((
                r.get("relname")?.as_str()?.to_string(),
                [n("w")?, n("i")?, n("f")?, n("s")?],
            ))
        })
        .collect()
}

/// Where the jobs' time went, from their records: queued (created to started) and each
/// step (started to finished), mean and p50/p99 in ms.
fn step_times(jobs: &[triton_proto::vmapi::v1::Job]) {
    let ms = |t: &str| triton_common::time::parse_rfc3339_millis(t);
    let mut spans: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut order: HashMap<String, usize> = HashMap::new();
    for j in jobs {
        if let (Some(c), Some(s)) = (ms(&j.created_at), ms(&j.started_at)) {
            spans.entry("(queued)".into()).or_default().push(s - c);
            order.insert("(queued)".into(), 0);
        }
        for (i, step) in j.chain.iter().enumerate() {
            if let (Some(s), Some(f)) = (ms(&step.started_at), ms(&step.finished_at)) {
                spans.entry(step.name.clone()).or_default().push(f - s);
                order.insert(step.name.clone(), i + 1);
            }
        }
    }
    let mut spans: Vec<(String, Vec<i64>)> = spans.into_iter().collect();
    spans.sort_by_key(|(n, _)| order.get(n).copied().unwrap_or(usize::MAX));
    for (name, mut v) in spans {
        v.sort_unstable();
        let mean = v.iter().sum::<i64>() as f64 / v.len() as f64;
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        println!(
            "|   {name} | mean {mean:.0} ms | p50 {} ms | p99 {} ms |",
            at(0.5),
            at(0.99)
        );
    }
}

triton_common::global_allocator!();

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
