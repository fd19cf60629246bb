//! Moray throughput and latency against raw tokio-postgres on the same database.
//!
//! Starts a real PostgreSQL (fsync on) and a real Moray in-process, loads a bucket,
//! then measures PutObject, GetObject and FindObjects (indexed equality, 100 rows) at
//! 1, 16 and 64 concurrent clients, each for a fixed time, through moray-client and
//! through tokio-postgres running the equivalent SQL on the same table with as many
//! PostgreSQL connections as Moray's pool. Prints a markdown table on stdout.
//!
//! Run: `cargo bench -p moray-client --bench moray`
//! Knobs (environment): MORAY_BENCH_SECS (per measurement, default 5),
//! MORAY_BENCH_CLIENTS (default "1,16,64"), MORAY_BENCH_OPS (default "put,get,find"),
//! MORAY_BENCH_POOL (PostgreSQL connections for Moray and for the raw baseline,
//! default 16, Moray's default pool size).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use moray_client::{BatchOp, BucketConfig, EtagCondition, FindOptions, IndexDef, MorayClient};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use triton_testkit::{Postgres, PostgresOptions};

const BUCKET: &str = "bench_vms";
/// Objects loaded before measuring; every key is read and rewritten during the run.
const OBJECTS: u64 = 10_000;
/// Objects per owner: FindObjects on one owner returns exactly this many.
const PER_OWNER: u64 = 100;
const WARMUP: Duration = Duration::from_millis(500);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Put,
    Get,
    Find,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "PutObject",
            Op::Get => "GetObject",
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

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: a fast, deterministic key picker per client.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

struct Measured {
    ops: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
    errors: u64,
}

impl Measured {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs `op(random)` in `clients` concurrent loops for `run_for`, after a warm-up.
async fn measure<F, Fut>(clients: usize, run_for: Duration, op: F) -> Measured
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send,
{
    let op = Arc::new(op);
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
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
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((c as u64 + 1) * 0x1000_0001));
                let mut ops = 0u64;
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let result = op(rng.next()).await;
                    let t1 = Instant::now();
                    match result {
                        Ok(()) if t0 >= measure_from => {
                            ops += 1;
                            let _ = hist.record((t1 - t0).as_micros().max(1) as u64);
                        }
                        Ok(()) => {}
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut first) = first_error.lock() {
                                first.get_or_insert_with(|| e.to_string());
                            }
                        }
                    }
                }
                (ops, hist)
            })
        })
        .collect();
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut ops = 0;
    for task in tasks {
        let (n, hist) = task.await.expect("bench client task");
        ops += n;
        total.add(hist).expect("same bounds");
    }
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
            // Moray's put writes every column of the row; the upsert does the same in
            // one statement. Get and find select whole rows, as Moray does.
            let put = client
                .prepare(&format!(
                    "INSERT INTO {BUCKET} (_key, _value, _etag, _mtime, _vnode, owner_uuid) \
                     VALUES ($1, $2, $3, $4, NULL, $5) \
                     ON CONFLICT (_key) DO UPDATE SET _value = EXCLUDED._value, \
                     _etag = EXCLUDED._etag, _mtime = EXCLUDED._mtime, \
                     _vnode = EXCLUDED._vnode, owner_uuid = EXCLUDED.owner_uuid"
                ))
                .await?;
            let get = client
                .prepare(&format!("SELECT * FROM {BUCKET} WHERE _key = $1"))
                .await?;
            let find = client
                .prepare(&format!(
                    "SELECT * FROM {BUCKET} WHERE owner_uuid = $1 AND owner_uuid IS NOT NULL \
                     LIMIT 100"
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
        Op::Put => {
            let text = value(i, r).to_string();
            let etag = format!("{:08X}", crc32fast::hash(text.as_bytes()));
            let mtime = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as i64;
            pool.with(async |c| {
                c.client
                    .execute(&c.put, &[&key(i), &text, &etag, &mtime, &owner(i)])
                    .await?;
                Ok(())
            })
            .await
        }
        Op::Get => {
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
        Op::Put => {
            moray
                .put_object(BUCKET, &key(i), &value(i, r), EtagCondition::Any)
                .await?;
        }
        Op::Get => {
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
    let config = BucketConfig::versioned(1)
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

fn main() -> Result<(), BoxError> {
    eprintln!("starting PostgreSQL (fsync on) ...");
    // On the main thread: the testkit ties PostgreSQL's life to the spawning thread.
    let postgres = Postgres::start_with(PostgresOptions {
        fsync: true,
        ..Default::default()
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(&postgres))
}

async fn bench(postgres: &Postgres) -> Result<(), BoxError> {
    let run_for = Duration::from_secs(env_or("MORAY_BENCH_SECS", 5));
    let pool_size: usize = env_or("MORAY_BENCH_POOL", 16);
    let client_counts: Vec<usize> = std::env::var("MORAY_BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,16,64".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();

    let url = postgres.create_database("moray")?;
    let shutdown = CancellationToken::new();
    let running = moray::start(
        moray::Config {
            listen: "127.0.0.1:0".into(),
            postgres_url: url.clone(),
            max_connections: pool_size,
            ..Default::default()
        },
        shutdown.clone(),
    )
    .await?;
    let moray = MorayClient::connect(&format!("tcp://{}", running.addr)).await?;
    eprintln!("loading {OBJECTS} objects ...");
    load(&moray).await?;
    let raw = Arc::new(RawPool::connect(&url, pool_size).await?);

    let ops: Vec<Op> = std::env::var("MORAY_BENCH_OPS")
        .unwrap_or_else(|_| "put,get,find".into())
        .split(',')
        .filter_map(|o| match o.trim() {
            "put" => Some(Op::Put),
            "get" => Some(Op::Get),
            "find" => Some(Op::Find),
            _ => None,
        })
        .collect();
    let mut rows = Vec::new();
    for op in ops {
        for &clients in &client_counts {
            eprintln!("{} x{clients}: moray ...", op.name());
            let m = {
                let moray = moray.clone();
                measure(clients, run_for, move |r| {
                    let moray = moray.clone();
                    async move { moray_op(&moray, op, r).await }
                })
                .await
            };
            eprintln!("{} x{clients}: raw ...", op.name());
            let r = {
                let raw = raw.clone();
                measure(clients, run_for, move |r| {
                    let raw = raw.clone();
                    async move { raw_op(&raw, op, r).await }
                })
                .await
            };
            rows.push((op, clients, m, r));
        }
    }

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "Moray vs raw tokio-postgres: PostgreSQL with fsync on, {pool_size} PostgreSQL \
         connections for each, {} s per measurement after {} ms warm-up, {cores} cores, \
         {OBJECTS} objects of ~600 bytes; latencies in ms.\n",
        run_for.as_secs(),
        WARMUP.as_millis()
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
    shutdown.cancel();
    let _ = running.task.await;
    Ok(())
}
