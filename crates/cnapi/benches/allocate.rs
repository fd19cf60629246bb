//! `cargo bench -p cnapi --bench allocate [-- pure|memory|moray]`: allocations per second
//! with `CNAPI_BENCH_SERVERS` (1000) set-up, running 16 GiB servers. Target: 1000/s.
//!
//! * pure: the DAPI chain alone (`allocation::allocate`), reservations accumulating in
//!   memory as they would in CNAPI;
//! * memory: `Allocate` through CNAPI's gRPC service on its in-memory store, 16 clients;
//! * moray: the same on a real Moray and PostgreSQL (started here), each allocation
//!   reading the servers and reservations and writing its reservation etag-conditionally.
//!
//! Each case stops after `CNAPI_BENCH_ALLOCS` (2000) allocations or 20 s.
//! Each line also gives the CPU time per allocation of this process and everything it
//! started (PostgreSQL included), and how busy the machine's CPUs were meanwhile (other
//! work included), since on a shared machine the rate alone says little.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use cnapi::allocation::{AllocConfig, allocate};
use cnapi::model::ServerRecord;
use cnapi::service::{Settings, allocation_request_from_pb};
use cnapi::store::{Cond, MemoryStore, MorayStore, Store};
use dc_testkit::bench::{Parts, env_or};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use triton_proto::cnapi::v1 as pb;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;
use triton_testkit::cpu::Cpu;
use uuid::Uuid;

const BUDGET: Duration = Duration::from_secs(20);
const CLIENTS: usize = 16;

fn server(n: usize) -> ServerRecord {
    let mut s = ServerRecord {
        uuid: Uuid::new_v4(),
        hostname: format!("cn{n:04}"),
        status: "running".into(),
        setup: true,
        sysinfo: json!({"MiB of Memory": "16384", "CPU Online Count": 8, "CPU Total Cores": 8}),
        ram: 16384,
        memory_total_bytes: 16 << 30,
        disk_pool_size_bytes: 1 << 40,
        nic_tags: vec!["admin".into(), "external".into()],
        current_platform: "20240101T000000Z".into(),
        last_heartbeat_ms: cnapi::status::unix_ms(SystemTime::now()),
        ..Default::default()
    };
    cnapi::capacity::refresh(&mut s);
    s
}

const OWNER: &str = "930896af-bf8c-48d4-885c-6573a94b1853";

fn pb_request() -> pb::AllocateRequest {
    pb::AllocateRequest {
        vm: Some(pb::AllocVm {
            vm_uuid: Uuid::new_v4().to_string(),
            owner_uuid: OWNER.into(),
            ram: 1024,
            quota: 10,
            ..Default::default()
        }),
        nic_tags: vec!["admin".into()],
        ..Default::default()
    }
}

fn pure(servers: usize, allocs: usize) {
    let records: Vec<ServerRecord> = (0..servers).map(server).collect();
    let config = AllocConfig::default();
    let mut reservations = BTreeMap::new();
    let cpu = Cpu::now();
    let started = Instant::now();
    let mut done = 0;
    while done < allocs && started.elapsed() < BUDGET {
        // The request the gRPC benches send, as CNAPI's handler decodes it.
        let req = allocation_request_from_pb(&pb_request()).expect("a valid request");
        let chosen = allocate(&records, &reservations, &req, &config, done as u64 + 1)
            .expect("room for every allocation");
        reservations
            .entry(chosen.server)
            .or_insert_with(Vec::new)
            .push(req.as_server_vm());
        done += 1;
    }
    report(
        "pure allocation function",
        servers,
        done,
        started.elapsed(),
        cpu,
    );
}

async fn service<S: Store>(what: &str, store: S, servers: usize, allocs: usize) {
    for n in 0..servers {
        store
            .put_server(&server(n), Cond::MustNotExist)
            .await
            .expect("put server");
    }
    let shutdown = CancellationToken::new();
    let settings = Settings {
        heartbeat_lifetime: Duration::from_secs(3600),
        ..Default::default()
    };
    let cnapi = cnapi::app::start(store, settings, "127.0.0.1:0", shutdown.clone())
        .await
        .expect("start cnapi");
    let c = CnapiClient::connect(format!("http://{}", cnapi.addr))
        .await
        .expect("connect");
    let cpu = Cpu::now();
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let mut c = c.clone();
        let mine = allocs / CLIENTS + usize::from(i < allocs % CLIENTS);
        clients.spawn(async move {
            let mut done = 0;
            while done < mine && started.elapsed() < BUDGET {
                c.allocate(pb_request()).await.expect("allocate");
                done += 1;
            }
            done
        });
    }
    let mut done = 0;
    while let Some(n) = clients.join_next().await {
        done += n.expect("client");
    }
    report(what, servers, done, started.elapsed(), cpu);
    shutdown.cancel();
    let _ = cnapi.task.await;
}

fn report(what: &str, servers: usize, done: usize, took: Duration, cpu: Cpu) {
    let (ours, busy) = cpu.since();
    println!(
        "| {what}, {servers} servers | {:.0} allocations/s | {done} in {:.2} s | CPU {:.0} µs/allocation (this process and PostgreSQL) | machine CPUs {:.0}% busy |",
        done as f64 / took.as_secs_f64(),
        took.as_secs_f64(),
        ours.as_secs_f64() * 1e6 / done.max(1) as f64,
        busy * 100.0
    );
}

triton_common::global_allocator!();

fn main() {
    let parts = Parts::from_args();
    let servers = env_or("CNAPI_BENCH_SERVERS", 1000);
    let runtime = dc_testkit::bench::runtime();
    if parts.wants("pure") {
        pure(servers, env_or("CNAPI_BENCH_ALLOCS", 2000));
    }
    runtime.block_on(async {
        if parts.wants("memory") {
            let allocs = env_or("CNAPI_BENCH_ALLOCS", 2000);
            service(
                "Allocate via gRPC, in-memory store",
                MemoryStore::default(),
                servers,
                allocs,
            )
            .await;
        }
        if parts.wants("moray") {
            let moray = triton_testkit::MorayFixture::start().await;
            let shutdown = CancellationToken::new();
            let store = MorayStore::connect(moray.url())
                .await
                .expect("connect moray");
            let allocs = env_or("CNAPI_BENCH_ALLOCS", 2000);
            service("Allocate via gRPC, Moray store", store, servers, allocs).await;
            shutdown.cancel();
        }
    });
}
