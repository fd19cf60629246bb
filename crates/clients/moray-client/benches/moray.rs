//! Moray throughput and latency against raw tokio-postgres on the same database.
//!
//! Starts a real PostgreSQL (fsync on) and a real Moray in-process (on a runtime of its
//! own), loads a bucket, then measures PutObject, GetObject and FindObjects (indexed
//! equality, 100 rows) at 1, 16 and 64 concurrent clients, each for a fixed time, through
//! moray-client and through tokio-postgres running the equivalent SQL on the same table
//! with as many PostgreSQL connections as Moray's pool. The two sides alternate in short
//! slices so that other load on the machine disturbs both alike. Prints a markdown
//! table on stdout (progress on stderr).
//!
//! Run: `cargo bench -p moray-client --bench moray`
//! Knobs (environment): MORAY_BENCH_SECS (per measurement, default 5),
//! MORAY_BENCH_CLIENTS (default "1,16,64"), MORAY_BENCH_OPS (default
//! "put,put-single,get,get-single,find"; `put` and `get` are the default client, which
//! coalesces concurrent puts into PutObjects and gets into GetObjects, `put-single` and
//! `get-single` a client sending one RPC per call), MORAY_BENCH_COALESCE ("N,M": at most
//! N put (get) RPCs in flight, M items per PutObjects (GetObjects); default the client's),
//! MORAY_BENCH_POOL (PostgreSQL connections for Moray and for the raw baseline,
//! default 16, Moray's default pool size), MORAY_BENCH_SERVER_THREADS (Moray's runtime:
//! 0 = multi-thread with a worker per core, as the `moray` binary; 1 = current-thread;
//! N = N workers), MORAY_BENCH_LOG (1: install the services' log subscriber, JSON
//! lines at `RUST_LOG`, default info, so that request spans are recorded as in
//! production; default 0: no subscriber).

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use moray_client::{
    BatchOp, BucketConfig, Coalescing, ConnectOptions, EtagCondition, FindOptions, IndexDef,
    MorayClient,
};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use triton_common::rng::Rng;
use triton_testkit::{Postgres, PostgresOptions};

const BUCKET: &str = "bench_vms";
/// The bucket is versioned, as Triton's services' buckets are (Moray then writes `_rver`).
const BUCKET_VERSION: u32 = 1;
/// Objects loaded before measuring; every key is read and rewritten during the run.
const OBJECTS: u64 = 10_000;
/// Objects per owner: FindObjects on one owner returns exactly this many.
const PER_OWNER: u64 = 100;
/// Unrecorded start of every slice, while the clients ramp up.
const WARMUP: Duration = Duration::from_millis(200);
/// Each measurement alternates Moray and raw slices this many times, so that load from
/// elsewhere on the machine hits both sides alike.
const ROUNDS: u32 = 5;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    /// PutObject through the default client: concurrent puts coalesced into PutObjects.
    Put,
    /// PutObject with coalescing off: one RPC per put.
    PutSingle,
    /// GetObject through the default client: concurrent gets coalesced into GetObjects.
    Get,
    /// GetObject with coalescing off: one RPC per get.
    GetSingle,
    Find,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "PutObject (coalesced)",
            Op::PutSingle => "PutObject (one RPC per put)",
            Op::Get => "GetObject (coalesced)",
            Op::GetSingle => "GetObject (one RPC per get)",
            Op::Find => "FindObjects (100 rows)",
        }
    }
}

fn owner(i: u64) -> String {
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        i % (OBJECTS / PER_OWNER),
        0xb0b
    )
}

fn key(i: u64) -> String {
    format!("vm-{i:06}")
}

/// A VM-like object of about 600 bytes, as vmapi stores them.
fn value(i: u64, generation: u64) -> Value {
    json!({
        "uuid": key(i),
        "owner_uuid": owner(i),
        "alias": format!("web-{i}"),
        "state": "running",
        "ram": 1024,
        "cpu_cap": 100,
        "quota": 25,
        "brand": "lx",
        "image_uuid": "2c5f5f5a-6f3a-4d4e-9b3c-5d1b0a1e2f3c",
        "server_uuid": "564d8d8c-1b2a-4b2c-8f2a-0e7c3b1f9a10",
        "billing_id": "7a7a7a7a-8b8b-4c4c-9d9d-0e0e0e0e0e0e",
        "nics": [{"mac": "90:b8:d0:11:22:33", "ip": "10.88.0.17", "nic_tag": "external"}],
        "customer_metadata": {"user-script": "#!/bin/sh\necho hello\n", "role": "web"},
        "tags": {"env": "bench", "tier": "frontend"},
        "generation": generation,
    })
}

/// The 1-minute load average, to tell a quiet run from a disturbed one.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Measured {
    ops: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
    errors: u64,
    /// Operations including the warm-up, and the CPU they took.
    all_ops: u64,
    cpu: Cpu,
}

/// CPU seconds used by Moray's threads, the client threads and PostgreSQL.
#[derive(Clone, Copy, Default)]
struct Cpu {
    server: f64,
    client: f64,
    postgres: f64,
}

impl Cpu {
    /// CPU time so far (Linux /proc, in USER_HZ = 1/100 s ticks).
    fn now(postgres_pid: u32) -> Cpu {
        let ticks = |stat: &str| -> Option<(String, u32, f64)> {
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ppid = f.get(1)?.parse().ok()?;
            let t: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some((comm, ppid, t / 100.0))
        };
        let mut cpu = Cpu::default();
        for task in std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Some((comm, _, t)) = std::fs::read_to_string(task.path().join("stat"))
                .ok()
                .and_then(|s| ticks(&s))
            {
                match comm.as_str() {
                    "moray-server" => cpu.server += t,
                    "bench-client" => cpu.client += t,
                    _ => {}
                }
            }
        }
        for proc in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = proc
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((_, ppid, t)) = std::fs::read_to_string(proc.path().join("stat"))
                .ok()
                .and_then(|s| ticks(&s))
                && (pid == postgres_pid || ppid == postgres_pid)
            {
                cpu.postgres += t;
            }
        }
        cpu
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            server: self.server - before.server,
            client: self.client - before.client,
            postgres: self.postgres - before.postgres,
        }
    }
}

impl Measured {
    fn empty() -> Measured {
        Measured {
            ops: 0,
            elapsed: Duration::ZERO,
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            errors: 0,
            all_ops: 0,
            cpu: Cpu::default(),
        }
    }

    fn add(&mut self, other: Measured) {
        self.ops += other.ops;
        self.all_ops += other.all_ops;
        self.cpu.server += other.cpu.server;
        self.cpu.client += other.cpu.client;
        self.cpu.postgres += other.cpu.postgres;
        self.elapsed += other.elapsed;
        self.errors += other.errors;
        self.hist.add(other.hist).expect("same histogram bounds");
    }

    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    /// CPU microseconds per operation of (server, client, postgres).
    fn cpu_us(&self) -> (f64, f64, f64) {
        let n = self.all_ops.max(1) as f64 / 1e6;
        (
            self.cpu.server / n,
            self.cpu.client / n,
            self.cpu.postgres / n,
        )
    }

    fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs `op(random)` in `clients` concurrent loops for `run_for`, after a warm-up.
async fn measure<F, Fut>(clients: usize, run_for: Duration, postgres_pid: u32, op: F) -> Measured
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send,
{
    let op = Arc::new(op);
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let cpu_before = Cpu::now(postgres_pid);
    let start = Instant::now();
    let measure_from = start + WARMUP;
    let end = measure_from + run_for;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let op = op.clone();
            let errors = errors.clone();
            let first_error = first_error.clone();
            tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                    .expect("valid histogram bounds");
                let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15 ^ ((c as u64 + 1) * 0x1000_0001));
                let (mut ops, mut all_ops) = (0u64, 0u64);
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let result = op(rng.next_u64()).await;
                    let t1 = Instant::now();
                    match result {
                        Ok(()) if t0 >= measure_from => {
                            ops += 1;
                            all_ops += 1;
                            let _ = hist.record((t1 - t0).as_micros().max(1) as u64);
                        }
                        Ok(()) => all_ops += 1,
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut first) = first_error.lock() {
                                first.get_or_insert_with(|| e.to_string());
                            }
                        }
                    }
                }
                (ops, all_ops, hist)
            })
        })
        .collect();
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let (mut ops, mut all_ops) = (0, 0);
    for task in tasks {
        let (n, all, hist) = task.await.expect("bench client task");
        ops += n;
        all_ops += all;
        total.add(hist).expect("same bounds");
    }
    let cpu = Cpu::now(postgres_pid).since(cpu_before);
    let errors = errors.load(Ordering::Relaxed);
    if let Ok(first) = first_error.lock()
        && let Some(e) = first.as_ref()
    {
        eprintln!("  {errors} errors, first: {e}");
    }
    Measured {
        ops,
        elapsed: run_for,
        hist: total,
        errors,
        all_ops,
        cpu,
    }
}

/// Raw baseline: a fixed set of PostgreSQL connections with prepared statements,
/// each used by one request at a time (like Moray's pool).
struct RawPool {
    conns: Mutex<Vec<Arc<RawConn>>>,
    available: tokio::sync::Semaphore,
}

struct RawConn {
    client: tokio_postgres::Client,
    put: tokio_postgres::Statement,
    get: tokio_postgres::Statement,
    find: tokio_postgres::Statement,
}

impl RawPool {
    async fn connect(url: &str, size: usize) -> Result<RawPool, BoxError> {
        let mut conns = Vec::new();
        for _ in 0..size {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    eprintln!("raw connection failed: {e}");
                }
            });
            // Moray's put writes every column of the row (and so every index); the
            // upsert writes the same columns in one statement. Get and find select
            // whole rows, and find counts the matches (`_count`) and orders by `_id`,
            // as Moray's default find does.
            let put = client
                .prepare(&format!(
                    "INSERT INTO {BUCKET} \
                     (_key, _value, _etag, _mtime, _vnode, _rver, owner_uuid, state) \
                     VALUES ($1, $2, $3, $4, NULL, $5, $6, $7) \
                     ON CONFLICT (_key) DO UPDATE SET _value = EXCLUDED._value, \
                     _etag = EXCLUDED._etag, _mtime = EXCLUDED._mtime, \
                     _vnode = EXCLUDED._vnode, _rver = EXCLUDED._rver, \
                     owner_uuid = EXCLUDED.owner_uuid, state = EXCLUDED.state"
                ))
                .await?;
            let get = client
                .prepare(&format!("SELECT * FROM {BUCKET} WHERE _key = $1"))
                .await?;
            let find = client
                .prepare(&format!(
                    "SELECT *, count(1) OVER () AS _count FROM {BUCKET} \
                     WHERE owner_uuid = $1 AND owner_uuid IS NOT NULL ORDER BY _id LIMIT 100"
                ))
                .await?;
            conns.push(Arc::new(RawConn {
                client,
                put,
                get,
                find,
            }));
        }
        Ok(RawPool {
            conns: Mutex::new(conns),
            available: tokio::sync::Semaphore::new(size),
        })
    }

    async fn with<T>(
        &self,
        f: impl AsyncFnOnce(&RawConn) -> Result<T, BoxError>,
    ) -> Result<T, BoxError> {
        let _permit = self.available.acquire().await?;
        let conn = self.conns.lock().await.pop().ok_or("raw pool empty")?;
        let result = f(&conn).await;
        self.conns.lock().await.push(conn);
        result
    }
}

async fn raw_op(pool: &RawPool, op: Op, r: u64) -> Result<(), BoxError> {
    let i = r % OBJECTS;
    match op {
        Op::Put | Op::PutSingle => {
            let text = value(i, r).to_string();
            let etag = format!("{:08X}", crc32fast::hash(text.as_bytes()));
            let mtime = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as i64;
            pool.with(async |c| {
                let (rver, state) = (BUCKET_VERSION as i32, "running");
                c.client
                    .execute(
                        &c.put,
                        &[&key(i), &text, &etag, &mtime, &rver, &owner(i), &state],
                    )
                    .await?;
                Ok(())
            })
            .await
        }
        Op::Get | Op::GetSingle => {
            let row = pool
                .with(async |c| Ok(c.client.query_opt(&c.get, &[&key(i)]).await?))
                .await?
                .ok_or("raw get: no row")?;
            let _: Value = serde_json::from_str(row.try_get::<_, &str>("_value")?)?;
            Ok(())
        }
        Op::Find => {
            let rows = pool
                .with(async |c| Ok(c.client.query(&c.find, &[&owner(i)]).await?))
                .await?;
            if rows.len() as u64 != PER_OWNER {
                return Err(format!("raw find: {} rows", rows.len()).into());
            }
            for row in rows {
                let _: Value = serde_json::from_str(row.try_get::<_, &str>("_value")?)?;
            }
            Ok(())
        }
    }
}

async fn moray_op(moray: &MorayClient, op: Op, r: u64) -> Result<(), BoxError> {
    let i = r % OBJECTS;
    match op {
        Op::Put | Op::PutSingle => {
            moray
                .put_object(BUCKET, &key(i), &value(i, r), EtagCondition::Any)
                .await?;
        }
        Op::Get | Op::GetSingle => {
            moray
                .get_object(BUCKET, &key(i))
                .await?
                .ok_or("moray get: no object")?;
        }
        Op::Find => {
            let filter = format!("(owner_uuid={})", owner(i));
            let found = moray
                .find_objects(BUCKET, &filter, &FindOptions::limit(PER_OWNER))
                .await?;
            if found.len() as u64 != PER_OWNER {
                return Err(format!("moray find: {} objects", found.len()).into());
            }
        }
    }
    Ok(())
}

async fn load(moray: &MorayClient) -> Result<(), BoxError> {
    let config = BucketConfig::versioned(BUCKET_VERSION)
        .with_index("owner_uuid", IndexDef::new("string"))
        .with_index("state", IndexDef::new("string"));
    moray.put_bucket(BUCKET, &config).await?;
    let batches: Vec<Vec<BatchOp>> = (0..OBJECTS)
        .collect::<Vec<_>>()
        .chunks(500)
        .map(|chunk| {
            chunk
                .iter()
                .map(|&i| BatchOp::Put {
                    bucket: BUCKET.to_string(),
                    key: key(i),
                    value: value(i, 0),
                    etag: EtagCondition::Any,
                })
                .collect()
        })
        .collect();
    for batch in batches {
        moray.batch(&batch).await?;
    }
    Ok(())
}

triton_common::global_allocator!();

fn main() -> Result<(), BoxError> {
    let pool_size: usize = env_or("MORAY_BENCH_POOL", 16);
    // As the services log (JSON lines, `RUST_LOG`, default info): every request then has
    // its spans recorded. Off by default, so that runs compare with earlier ones.
    let _telemetry =
        (env_or("MORAY_BENCH_LOG", 0) == 1).then(|| triton_common::telemetry::init("moray-bench"));
    eprintln!("starting PostgreSQL (fsync on) ...");
    let postgres = Postgres::start_with(PostgresOptions {
        fsync: true,
        ..Default::default()
    })?;
    let url = postgres.create_database("moray")?;
    let postgres_pid = postgres.pid().ok_or("PostgreSQL is not running")?;

    // Moray gets a runtime (and threads) of its own, as in its own process, so the
    // clients do not run on its threads and a profile tells the two apart by name.
    let shutdown = CancellationToken::new();
    let config = moray::Config {
        listen: "127.0.0.1:0".into(),
        postgres_url: url.clone(),
        max_connections: pool_size,
        ..Default::default()
    };
    let server_threads: usize = env_or("MORAY_BENCH_SERVER_THREADS", 0);
    let (server, moray_addr) = start_moray(config, server_threads, shutdown.clone())?;

    let clients = tokio::runtime::Builder::new_multi_thread()
        .thread_name("bench-client")
        .enable_all()
        .build()?;
    let result = clients.block_on(bench(
        moray_addr,
        &url,
        pool_size,
        server_threads,
        postgres_pid,
    ));
    shutdown.cancel();
    let _ = server.join();
    result
}

/// Runs Moray on its own thread(s) until `shutdown`: a multi-thread runtime with
/// `threads` workers (0: one per core, as the `moray` binary), or with `threads` = 1 a
/// current-thread runtime (one thread does everything, like one node.js Moray process).
fn start_moray(
    config: moray::Config,
    threads: usize,
    shutdown: CancellationToken,
) -> Result<(std::thread::JoinHandle<()>, std::net::SocketAddr), BoxError> {
    let runtime = match threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                b.worker_threads(n);
            }
            b.thread_name("moray-server").enable_all().build()?
        }
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("moray-server".into())
        .spawn(move || {
            runtime.block_on(async move {
                match moray::start(config, shutdown.clone()).await {
                    Ok(running) => {
                        let _ = tx.send(Ok(running.addr));
                        let _ = running.task.await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            })
        })?;
    let addr = rx.recv()??;
    Ok((thread, addr))
}

async fn bench(
    moray_addr: std::net::SocketAddr,
    url: &str,
    pool_size: usize,
    server_threads: usize,
    postgres_pid: u32,
) -> Result<(), BoxError> {
    let run_for = Duration::from_secs(env_or("MORAY_BENCH_SECS", 5));
    let client_counts: Vec<usize> = std::env::var("MORAY_BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,16,64".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();

    // The default client coalesces concurrent puts and gets; `single` sends one RPC per
    // call.
    let coalescing = match std::env::var("MORAY_BENCH_COALESCE") {
        Ok(v) => {
            let (in_flight, batch) = v.split_once(',').ok_or("MORAY_BENCH_COALESCE=N,M")?;
            Coalescing {
                max_in_flight: in_flight.trim().parse()?,
                max_batch: batch.trim().parse()?,
            }
        }
        Err(_) => Coalescing::default(),
    };
    let moray = MorayClient::connect_with(
        &format!("tcp://{moray_addr}"),
        ConnectOptions {
            coalesce_gets: Some(coalescing),
            coalesce_puts: Some(coalescing),
            ..Default::default()
        },
    )
    .await?;
    let single = MorayClient::connect_with(
        &format!("tcp://{moray_addr}"),
        ConnectOptions {
            coalesce_gets: None,
            coalesce_puts: None,
            ..Default::default()
        },
    )
    .await?;
    eprintln!("loading {OBJECTS} objects ...");
    load(&moray).await?;
    let raw = Arc::new(RawPool::connect(url, pool_size).await?);

    let ops: Vec<Op> = std::env::var("MORAY_BENCH_OPS")
        .unwrap_or_else(|_| "put,put-single,get,get-single,find".into())
        .split(',')
        .filter_map(|o| match o.trim() {
            "put" => Some(Op::Put),
            "put-single" => Some(Op::PutSingle),
            "get" => Some(Op::Get),
            "get-single" => Some(Op::GetSingle),
            "find" => Some(Op::Find),
            _ => None,
        })
        .collect();
    let load_before = load_average();
    let mut rows = Vec::new();
    let slice = run_for / ROUNDS;
    for op in ops {
        for &clients in &client_counts {
            eprintln!("{} x{clients} ...", op.name());
            let (mut m, mut r) = (Measured::empty(), Measured::empty());
            for _ in 0..ROUNDS {
                let moray = if matches!(op, Op::GetSingle | Op::PutSingle) {
                    single.clone()
                } else {
                    moray.clone()
                };
                m.add(
                    measure(clients, slice, postgres_pid, move |r| {
                        let moray = moray.clone();
                        async move { moray_op(&moray, op, r).await }
                    })
                    .await,
                );
                let raw = raw.clone();
                r.add(
                    measure(clients, slice, postgres_pid, move |r| {
                        let raw = raw.clone();
                        async move { raw_op(&raw, op, r).await }
                    })
                    .await,
                );
            }
            rows.push((op, clients, m, r));
        }
    }

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "Moray (gRPC via moray-client) vs raw tokio-postgres (prepared statements) on the \
         same PostgreSQL (fsync on), {pool_size} PostgreSQL connections each; {} s per side \
         and cell, in {ROUNDS} alternating slices; {cores} cores shared by clients, Moray \
         and PostgreSQL; Moray runtime: {}; puts (gets) coalesced with at most {} RPCs in \
         flight and {} items per PutObjects (GetObjects); {OBJECTS} objects of ~600 bytes; FindObjects with _count (raw: count(1) OVER () too); \
         latencies in ms; load average {load_before} before, {} after.\n",
        run_for.as_secs(),
        match server_threads {
            0 => "multi-thread, a worker per core".to_string(),
            1 => "current-thread".to_string(),
            n => format!("multi-thread, {n} workers"),
        },
        coalescing.max_in_flight,
        coalescing.max_batch,
        load_average(),
    );
    println!(
        "| operation | clients | moray ops/s | p50 | p99 | raw ops/s | p50 | p99 | moray/raw |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (op, clients, m, r) in &rows {
        let errors = if m.errors + r.errors > 0 {
            format!(" ({} moray / {} raw errors)", m.errors, r.errors)
        } else {
            String::new()
        };
        println!(
            "| {} | {clients} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2}{errors} |",
            op.name(),
            m.ops_per_sec(),
            m.ms(0.5),
            m.ms(0.99),
            r.ops_per_sec(),
            r.ms(0.5),
            r.ms(0.99),
            m.ops_per_sec() / r.ops_per_sec().max(f64::MIN_POSITIVE),
        );
    }
    println!(
        "\nCPU per operation in µs (all cores; what bounds throughput when the cores are \
         saturated):\n"
    );
    println!(
        "| operation | clients | moray: server | moray: client | moray: postgres | moray: total \
         | raw: client | raw: postgres | raw: total |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (op, clients, m, r) in &rows {
        let (ms, mc, mp) = m.cpu_us();
        let (_, rc, rp) = r.cpu_us();
        println!(
            "| {} | {clients} | {ms:.0} | {mc:.0} | {mp:.0} | {:.0} | {rc:.0} | {rp:.0} | {:.0} |",
            op.name(),
            ms + mc + mp,
            rc + rp,
        );
    }
    Ok(())
}
