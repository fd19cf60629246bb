//! A rough throughput comparison, not part of the normal run:
//! `cargo nextest run -p moray --release --test bench --run-ignored only --no-capture`.
//! PutObject and GetObject at 64 concurrent clients against raw tokio-postgres running the
//! equivalent statements on the same table.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use triton_proto::moray::v1 as pb;

const DURATION: Duration = Duration::from_secs(5);
const KEYS: usize = 1000;

async fn run<F, Fut>(label: &str, op: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let clients: usize = std::env::var("BENCH_CLIENTS").ok().and_then(|c| c.parse().ok()).unwrap_or(64);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (op, done) = (op.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while start.elapsed() < DURATION {
                op(c, i).await;
                i += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    println!("{label:>12}: {rate:>8.0} ops/s");
    rate
}

#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn put_get_against_raw_postgres() {
    let mut m = common::start().await;
    m.create_bucket("bench", &[("owner", "string"), ("n", "number")], 0).await.unwrap();
    let value = |c: usize, i: u64| json!({"owner": format!("o{c}"), "n": i, "name": "some vm", "ram": 1024}).to_string();

    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(common::connect(m.addr).await);
    }
    let clients = Arc::new(clients);
    let c2 = clients.clone();
    run("grpc version", move |c, _| {
        let mut client = c2[c % 8].clone();
        async move {
            client.version(pb::VersionRequest {}).await.unwrap();
        }
    })
    .await;
    let c2 = clients.clone();
    let moray_put = run("moray put", move |c, i| {
        let mut client = c2[c % 8].clone();
        let v = value(c, i);
        async move {
            client
                .put_object(pb::PutObjectRequest {
                    bucket: "bench".into(),
                    key: format!("k{}", (c * 7919 + i as usize) % KEYS),
                    value: v,
                    etag: None,
                    options: None,
                })
                .await
                .unwrap();
        }
    })
    .await;
    let c2 = clients.clone();
    let moray_get = run("moray get", move |c, i| {
        let mut client = c2[c % 8].clone();
        async move {
            client
                .get_object(pb::GetObjectRequest {
                    bucket: "bench".into(),
                    key: format!("k{}", (c * 7919 + i as usize) % KEYS),
                    options: None,
                })
                .await
                .unwrap();
        }
    })
    .await;

    let mut conns = Vec::new();
    for _ in 0..16 {
        let (db, conn) = tokio_postgres::connect(&m.url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        conns.push(Arc::new(db));
    }
    let put_sql = "INSERT INTO bench (_key, _value, _etag, _mtime, owner, n) VALUES ($1, $2, $3, $4, $5, $6::text::numeric) \
                   ON CONFLICT (_key) DO UPDATE SET _value = EXCLUDED._value, _etag = EXCLUDED._etag, \
                   _mtime = EXCLUDED._mtime, owner = EXCLUDED.owner, n = EXCLUDED.n";
    let get_sql = "SELECT _id, _key, _etag, _mtime, _txn_snap, _value, n, owner FROM bench WHERE _key = $1";
    let mut puts = Vec::new();
    let mut gets = Vec::new();
    for db in &conns {
        puts.push(db.prepare(put_sql).await.unwrap());
        gets.push(db.prepare(get_sql).await.unwrap());
    }
    let (conns, puts, gets) = (Arc::new(conns), Arc::new(puts), Arc::new(gets));
    let (c2, p2) = (conns.clone(), puts.clone());
    let raw_put = run("raw put", move |c, i| {
        let (db, st) = (c2[c % 16].clone(), p2[c % 16].clone());
        let v = value(c, i);
        async move {
            let key = format!("k{}", (c * 7919 + i as usize) % KEYS);
            let etag = format!("{:08X}", i);
            let owner = format!("o{c}");
            let n = i.to_string();
            db.execute(&st, &[&key, &v, &etag, &(i as i64), &owner, &n]).await.unwrap();
        }
    })
    .await;
    let (c2, g2) = (conns.clone(), gets.clone());
    let raw_get = run("raw get", move |c, i| {
        let (db, st) = (c2[c % 16].clone(), g2[c % 16].clone());
        async move {
            let key = format!("k{}", (c * 7919 + i as usize) % KEYS);
            db.query_opt(&st, &[&key]).await.unwrap();
        }
    })
    .await;
    println!("put ratio {:.2}, get ratio {:.2}", moray_put / raw_put, moray_get / raw_get);
}
