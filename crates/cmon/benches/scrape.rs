//! `cargo bench -p cmon --bench scrape`: Prometheus-style scrapes of CMon, against the
//! floor of a plain HTTP server serving a static text of the same size, in one run.
//!
//! A test datacenter (PostgreSQL, Moray, UFDS, PAPI, IMGAPI, NAPI, CNAPI, VMAPI and
//! `CMON_BENCH_NODES` (10) simulated compute nodes (each takes about 60 of the
//! 256 MiB, 25 % CPU instances)) runs in this process, with
//! `CMON_BENCH_INSTANCES` (500) running instances of one account made through VMAPI.
//! CMon runs as its own process (the release binary), so its CPU time is its own: read
//! from `/proc/<pid>/stat` before and after each case. Then, for `CMON_BENCH_SECS` (10)
//! per case after a second of warm-up, `CMON_BENCH_CLIENTS` (32) clients, each on its
//! own keep-alive connection, scrape the instances round-robin:
//!
//! * `cmon`: HTTPS with the account's client certificate, `GET /metrics` with
//!   `Host: <vm uuid>.<suffix>`, CMon's usage cache off (`usage_cache_ms = 0`), so
//!   every scrape is a `GetUsage` call to the instance's node, as when Prometheus
//!   scrapes each instance once per interval;
//! * `cmon-cached`: the same with CMon's default 1 s usage cache (most scrapes hit it);
//! * `floor`: plain HTTP/1.1 from this binary in another process (axum, the same HTTP
//!   stack), `GET /metrics` answering a static text as long as an instance's metrics.
//!
//! Printed per case: scrapes/s, p50 and p99 latency, and the server process's CPU per
//! scrape. The simulated agents and the clients run in this process and are not in the
//! server's CPU.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dc_testkit::bench::{env_or, runtime};
use dc_testkit::monitor::{CMON_SUFFIX, CmonClient};
use dc_testkit::{Dc, Options, Seed};
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use triton_proto::ufds::v1 as ufds;

const WARM_UP: Duration = Duration::from_secs(1);
const FLOOR_ARG: &str = "--floor-server";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == FLOOR_ARG) {
        let size: usize = args[i + 1].parse().unwrap();
        runtime().block_on(floor_server(size));
        return;
    }
    runtime().block_on(bench());
}

/// The floor: `GET /metrics` answers `size` bytes of static text; prints its port.
async fn floor_server(size: usize) {
    let line = "metric_name{label=\"value\"} 1234567890\n";
    let text: String = line.repeat(size / line.len() + 1)[..size].to_string();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text = text.clone();
            async move {
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    text,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    axum::serve(listener, app).await.unwrap();
}

/// Utime + stime of `pid`, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3) here.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ: 100 on Linux.
    ticks as f64 / 100.0
}

struct Case {
    scrapes: u64,
    secs: f64,
    hist: Histogram<u64>,
}

async fn run_clients<C, F, Fut>(clients: usize, secs: u64, make: C) -> Case
where
    C: Fn(usize) -> F,
    F: FnMut(u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut scrape = make(c);
        let stop = stop.clone();
        let measuring = measuring.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).unwrap();
            let mut n = 0u64;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                scrape(i).await;
                i += 1;
                if measuring.load(Ordering::Relaxed) {
                    hist.record(t.elapsed().as_micros() as u64).unwrap();
                    n += 1;
                }
            }
            (n, hist)
        }));
    }
    tokio::time::sleep(WARM_UP).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = Histogram::<u64>::new(3).unwrap();
    let mut scrapes = 0;
    for t in tasks {
        let (n, h) = t.await.unwrap();
        scrapes += n;
        all.add(h).unwrap();
    }
    Case {
        scrapes,
        secs: elapsed,
        hist: all,
    }
}

fn report(name: &str, case: &Case, cpu: f64, bytes: usize) {
    println!(
        "| {name} | {:.0} | {:.2} | {:.2} | {:.0} | {bytes} |",
        case.scrapes as f64 / case.secs,
        case.hist.value_at_quantile(0.5) as f64 / 1000.0,
        case.hist.value_at_quantile(0.99) as f64 / 1000.0,
        cpu / case.scrapes.max(1) as f64 * 1e6,
    );
}

/// A started CMon process and what reaches it.
struct CmonProcess {
    child: std::process::Child,
    addr: SocketAddr,
    cert: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_cmon(dc: &Dc, usage_cache_ms: u64) -> CmonProcess {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = |s| format!("http://{}", dc.addr(s));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cmon"))
        .env("CMON_LISTEN", format!("127.0.0.1:{port}"))
        .env("CMON_DATA_DIR", dir.path())
        .env("CMON_DNS_SUFFIX", CMON_SUFFIX)
        .env("CMON_UFDS_URL", url(dc_testkit::Service::Ufds))
        .env("CMON_VMAPI_URL", url(dc_testkit::Service::Vmapi))
        .env("CMON_CNAPI_URL", url(dc_testkit::Service::Cnapi))
        .env("CMON_USAGE_CACHE_MS", usage_cache_ms.to_string())
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("the cmon binary runs");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let cert = dir.path().join("tls").join("cert.pem");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(cert.exists() && TcpStream::connect(addr).await.is_ok()) {
        assert!(Instant::now() < deadline, "CMon did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    CmonProcess {
        child,
        addr,
        cert,
        _dir: dir,
    }
}

/// One keep-alive plain HTTP/1.1 connection.
struct Plain {
    stream: BufReader<TcpStream>,
}

impl Plain {
    async fn get(&mut self, path: &str) -> usize {
        let req = format!("GET {path} HTTP/1.1\r\nHost: floor\r\n\r\n");
        self.stream
            .get_mut()
            .write_all(req.as_bytes())
            .await
            .unwrap();
        let mut line = String::new();
        self.stream.read_line(&mut line).await.unwrap();
        assert!(line.contains(" 200 "), "{line}");
        let mut length = 0;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.unwrap();
            if line.trim_end().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await.unwrap();
        length
    }
}

async fn bench() {
    let instances = env_or("CMON_BENCH_INSTANCES", 500);
    let nodes = env_or("CMON_BENCH_NODES", 10);
    let clients = env_or("CMON_BENCH_CLIENTS", 32);
    let secs = env_or("CMON_BENCH_SECS", 10) as u64;

    eprintln!("starting the datacenter ({nodes} simulated compute nodes)");
    let dc = Dc::start(Options {
        compute: true,
        seed: Some(Seed::default()),
        sim_nodes: nodes,
        node_ram_mib: 1 << 20,
        ..Options::default()
    })
    .await;

    eprintln!("creating {instances} instances through VMAPI");
    let mut created = Vec::new();
    for batch in (0..instances).collect::<Vec<_>>().chunks(50) {
        let jobs = futures_join(batch.iter().map(|i| {
            let mut vmapi = dc.vmapi();
            let request = dc.create_request(&format!("bench{i}"));
            async move { vmapi.create_vm(request).await.unwrap().into_inner() }
        }))
        .await;
        for r in jobs {
            let job = dc.wait_job(&r.job_uuid).await;
            assert_eq!(job.execution, "succeeded", "{job:?}");
            created.push(r.vm_uuid);
        }
        eprintln!("  {} of {instances} running", created.len());
    }

    // The account's key and an old-style certificate made with it.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut blob = Vec::new();
    for part in [
        &b"ecdsa-sha2-nistp256"[..],
        &b"nistp256"[..],
        key.public_key_raw(),
    ] {
        blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
        blob.extend_from_slice(part);
    }
    use base64::Engine as _;
    let openssh = format!(
        "ecdsa-sha2-nistp256 {}",
        base64::engine::general_purpose::STANDARD.encode(&blob)
    );
    dc.ufds()
        .create_key(ufds::CreateKeyRequest {
            account: dc.seed().owner.clone(),
            name: "cmon".into(),
            key: openssh,
        })
        .await
        .unwrap();
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, dc.seed().login.clone());
    let cert = params.self_signed(&key).unwrap().pem();
    let key_pem = key.serialize_pem();
    let created = Arc::new(created);

    println!("| case | scrapes/s | p50 ms | p99 ms | server CPU µs/scrape | bytes |");
    println!("|---|---|---|---|---|---|");
    let mut size = 0;
    for (name, cache_ms) in [("cmon", 0u64), ("cmon-cached", 1000)] {
        let mut cmon = start_cmon(&dc, cache_ms).await;
        eprintln!("{name}: waiting for CMon to discover the {instances} instances");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut c = CmonClient::connect(cmon.addr, &cmon.cert, Some((&cert, &key_pem))).await;
            let r = c.get(&format!("cmon.{CMON_SUFFIX}"), "/v1/discover").await;
            let n = r.json()["containers"].as_array().map_or(0, |a| a.len());
            if n == instances {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "CMon discovered {n} of {instances}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut c = CmonClient::connect(cmon.addr, &cmon.cert, Some((&cert, &key_pem))).await;
        let r = c
            .get(&format!("{}.{CMON_SUFFIX}", created[0]), "/metrics")
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        size = r.body.len();

        let mut conns = Vec::new();
        for _ in 0..clients {
            conns.push(CmonClient::connect(cmon.addr, &cmon.cert, Some((&cert, &key_pem))).await);
        }
        let conns: Vec<_> = conns
            .into_iter()
            .map(|c| Arc::new(tokio::sync::Mutex::new(c)))
            .collect();
        eprintln!("{name}: {clients} clients for {secs} s");
        let pid = cmon.child.id();
        let before = cpu_secs(pid);
        let case = run_clients(clients, secs, |c| {
            let conn = conns[c].clone();
            let created = created.clone();
            move |i| {
                let conn = conn.clone();
                let vm = created[(c + i as usize * clients) % created.len()].clone();
                async move {
                    let r = conn
                        .lock()
                        .await
                        .get(&format!("{vm}.{CMON_SUFFIX}"), "/metrics")
                        .await;
                    assert_eq!(r.status, 200, "{}", r.body);
                }
            }
        })
        .await;
        let cpu = cpu_secs(pid) - before;
        report(name, &case, cpu, size);
        cmon.child.kill().ok();
        cmon.child.wait().ok();
    }

    // The floor, in another process of this binary.
    let mut floor = std::process::Command::new(std::env::current_exe().unwrap())
        .args([FLOOR_ARG, &size.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let port: u16 = {
        use std::io::BufRead as _;
        let mut line = String::new();
        std::io::BufReader::new(floor.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim().parse().unwrap()
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut conns = Vec::new();
    for _ in 0..clients {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        conns.push(Arc::new(tokio::sync::Mutex::new(Plain {
            stream: BufReader::new(s),
        })));
    }
    eprintln!("floor: {clients} clients for {secs} s");
    let before = cpu_secs(floor.id());
    let case = run_clients(clients, secs, |c| {
        let conn = conns[c].clone();
        move |_| {
            let conn = conn.clone();
            async move {
                let n = conn.lock().await.get("/metrics").await;
                assert_eq!(n, size);
            }
        }
    })
    .await;
    let cpu = cpu_secs(floor.id()) - before;
    report("floor (plain HTTP, static text)", &case, cpu, size);
    floor.kill().ok();
    floor.wait().ok();
}

/// Every future of `futures`, run concurrently.
async fn futures_join<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
