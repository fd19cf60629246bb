//! `cargo bench -p cloudapi --bench cloudapi`: requests per second and latency of
//! CloudAPI at `CLOUDAPI_BENCH_CLIENTS` (32) concurrent clients, each on its own
//! keep-alive HTTP/1.1 connection, for `CLOUDAPI_BENCH_SECS` (10) per case after a
//! second of warm-up:
//!
//! * `GET /--ping`: no auth, no backend; the HTTP stack alone;
//! * `GET /:login`: authentication alone (UFDS GetAccount and GetKey, Ed25519 verify);
//! * `GET /:login/packages`: authentication and PAPI ListPackages (10 packages);
//! * `GET /:login/machines`: authentication, VMAPI ListVms (the account's 100 machines,
//!   made beforehand through CloudAPI on a simulated compute node) and the package
//!   names from PAPI;
//!
//! and, as baselines, what those requests ask the backends, sent straight over gRPC by
//! as many clients: UFDS GetAccount + GetKey, PAPI ListPackages, VMAPI ListVms.
//!
//! Every authenticated request is signed on its own (a fresh `Date`, an
//! `Authorization: Signature ...` over it), as the `triton` CLI signs. Everything
//! (PostgreSQL, Moray, UFDS, PAPI, IMGAPI, NAPI, CNAPI, a sim cn-agent, VMAPI,
//! CloudAPI, and the clients) runs on this one host; the numbers include all of it.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dc_testkit::bench::env_or;
use dc_testkit::cloudapi::HandKey;
use dc_testkit::{ADMIN_UUID, Dc, Options, package_fields};
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use triton_proto::papi::v1 as papi;
use triton_proto::ufds::v1 as ufds;
use triton_proto::vmapi::v1 as vmapi;

const WARM_UP: Duration = Duration::from_secs(1);
const MACHINES: usize = 100;
const PACKAGES: usize = 10;

/// One keep-alive HTTP/1.1 connection, as a client library keeps one per socket.
struct Conn {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        Conn { addr, stream: None }
    }

    /// `GET path` with `headers`; the status and the body.
    async fn get(&mut self, path: &str, headers: &[(&'static str, String)]) -> (u16, Vec<u8>) {
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nAccept-Version: ~9||~8\r\nUser-Agent: cloudapi-bench\r\n",
            self.addr
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let stream = match &mut self.stream {
            Some(s) => s,
            None => {
                let s = TcpStream::connect(self.addr).await.expect("connect");
                s.set_nodelay(true).expect("TCP_NODELAY");
                self.stream.insert(BufReader::new(s))
            }
        };
        stream
            .get_mut()
            .write_all(req.as_bytes())
            .await
            .expect("write request");
        let mut line = String::new();
        stream.read_line(&mut line).await.expect("status line");
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {line:?}"));
        let mut length = None;
        let mut close = false;
        loop {
            line.clear();
            stream.read_line(&mut line).await.expect("header line");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("connection") {
                    close = v.eq_ignore_ascii_case("close");
                }
            }
        }
        let mut body = vec![0; length.expect("CloudAPI answers with Content-Length")];
        stream.read_exact(&mut body).await.expect("body");
        if close {
            self.stream = None;
        }
        (status, body)
    }
}

/// What one client does, again and again.
#[derive(Clone)]
enum Case {
    Http {
        path: String,
        /// Sign each request as `key_id`.
        signed: Option<(Arc<HandKey>, String)>,
    },
    UfdsAuth {
        client: triton_proto::ufds::v1::ufds_client::UfdsClient<tonic::transport::Channel>,
        login: String,
        fingerprint: String,
    },
    PapiList {
        client: triton_proto::papi::v1::papi_client::PapiClient<tonic::transport::Channel>,
        owner: String,
    },
    VmapiList {
        client: triton_proto::vmapi::v1::vmapi_client::VmapiClient<tonic::transport::Channel>,
        owner: String,
    },
}

impl Case {
    async fn once(&mut self, conn: &mut Conn) {
        match self {
            Case::Http { path, signed } => {
                let headers = match signed {
                    Some((key, key_id)) => key.sign(key_id, 0),
                    None => Vec::new(),
                };
                let (status, body) = conn.get(path, &headers).await;
                assert_eq!(
                    status,
                    200,
                    "GET {path}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            Case::UfdsAuth {
                client,
                login,
                fingerprint,
            } => {
                let account = client
                    .get_account(ufds::GetAccountRequest {
                        account: login.clone(),
                    })
                    .await
                    .expect("GetAccount")
                    .into_inner();
                client
                    .get_key(ufds::GetKeyRequest {
                        account: account.uuid,
                        key: fingerprint.clone(),
                    })
                    .await
                    .expect("GetKey");
            }
            Case::PapiList { client, owner } => {
                client
                    .list_packages(papi::ListPackagesRequest {
                        active: Some(true),
                        visible_to: owner.clone(),
                        ..Default::default()
                    })
                    .await
                    .expect("ListPackages");
            }
            Case::VmapiList { client, owner } => {
                let vms = client
                    .list_vms(vmapi::ListVmsRequest {
                        owner_uuid: owner.clone(),
                        limit: 1000,
                        ..Default::default()
                    })
                    .await
                    .expect("ListVms")
                    .into_inner()
                    .vms;
                assert_eq!(vms.len(), MACHINES);
            }
        }
    }
}

/// Runs `case` on `clients` clients for `secs` after the warm-up; prints a table row.
async fn run(what: &str, case: Case, addr: SocketAddr, clients: usize, secs: Duration) {
    let start = Instant::now();
    let measure_from = start + WARM_UP;
    let end = measure_from + secs;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let mut case = case.clone();
        tasks.spawn(async move {
            let mut conn = Conn::new(addr);
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                case.once(&mut conn).await;
                if t >= measure_from {
                    hist.record(t.elapsed().as_micros() as u64).expect("record");
                }
            }
            hist
        });
    }
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    while let Some(h) = tasks.join_next().await {
        hist.add(h.expect("client task")).expect("merge histograms");
    }
    // Requests that started in the window; the last ones may end a little after it.
    let rps = hist.len() as f64 / secs.as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "| {what} | {clients} | {rps:.0} | {:.2} | {:.2} |",
        ms(0.5),
        ms(0.99)
    );
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

async fn bench() {
    let clients = env_or("CLOUDAPI_BENCH_CLIENTS", 32);
    let secs = Duration::from_secs(env_or("CLOUDAPI_BENCH_SECS", 10) as u64);
    let stack = Dc::start(Options::cloudapi_compute()).await;

    // The tenant, with an Ed25519 key the bench signs with.
    let tenant = stack.hand_account("bench").await;
    let login = tenant.login.clone();

    // The machines' package caps CPU at half a core, so that 100 fit the one simulated
    // node (16 CPUs); the others as the tests make them.
    let small = stack
        .create_package(papi::PackageFields {
            cpu_cap: Some(50),
            ..package_fields("bench-small", 256)
        })
        .await;
    for i in 1..PACKAGES {
        stack
            .package(&format!("bench-{i}"), 256 * (i as u64 + 1), &[])
            .await;
    }
    let image = stack
        .image(
            "base-64-lts",
            "24.4.1",
            true,
            ADMIN_UUID,
            b"simulated".to_vec(),
        )
        .await;

    // 100 machines, made through CloudAPI, 10 at a time.
    let made = Instant::now();
    for batch in 0..MACHINES / 10 {
        let mut creates = tokio::task::JoinSet::new();
        for i in 0..10 {
            let body = serde_json::json!({
                "image": image.uuid,
                "package": small.uuid,
                "name": format!("bench{}", batch * 10 + i),
            })
            .to_string();
            let tenant = tenant.clone();
            creates.spawn(async move {
                let r = tenant.send("POST", "/bench/machines", &body).await;
                assert_eq!(r.status, 201, "CreateMachine: {}", r.body);
            });
        }
        while let Some(r) = creates.join_next().await {
            r.expect("create task");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let r = tenant.send("GET", "/bench/machines", "").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let listed = r.json();
        let states: Vec<&str> = listed
            .as_array()
            .expect("a list")
            .iter()
            .map(|m| m["state"].as_str().unwrap_or(""))
            .collect();
        assert!(
            !states.contains(&"failed"),
            "a machine failed to provision: {}",
            r.body
        );
        if states.iter().filter(|s| **s == "running").count() == MACHINES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the machines did not all run within 10 minutes: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let made = made.elapsed();

    // What the timed requests answer, checked once.
    let mut conn = Conn::new(stack.cloudapi());
    let (_, body) = conn.get("/bench/machines", &tenant.sign()).await;
    let machines: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(machines.as_array().map(Vec::len), Some(MACHINES));
    let machines_bytes = body.len();
    let (_, body) = conn.get("/bench/packages", &tenant.sign()).await;
    let listed: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(PACKAGES));
    let packages_bytes = body.len();

    println!(
        "{MACHINES} machines made and running through CloudAPI in {:.1} s; {} CPUs, load average {}",
        made.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load()
    );
    println!();
    println!("| request | clients | requests/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    let signed = Some((tenant.key.clone(), tenant.key_id()));
    let http = |path: &str, signed: Option<(Arc<HandKey>, String)>| Case::Http {
        path: path.to_string(),
        signed,
    };
    let cases = [
        ("`GET /--ping` (no auth)".to_string(), http("/--ping", None)),
        (
            "`GET /:login` (auth alone)".to_string(),
            http("/bench", signed.clone()),
        ),
        (
            format!("`GET /:login/packages` ({PACKAGES}, {packages_bytes} B)"),
            http("/bench/packages", signed.clone()),
        ),
        (
            format!("`GET /:login/machines` ({MACHINES}, {machines_bytes} B)"),
            http("/bench/machines", signed.clone()),
        ),
        (
            "gRPC UFDS GetAccount + GetKey".to_string(),
            Case::UfdsAuth {
                client: stack.ufds(),
                login: login.clone(),
                fingerprint: tenant.fingerprint.clone(),
            },
        ),
        (
            "gRPC PAPI ListPackages".to_string(),
            Case::PapiList {
                client: stack.papi(),
                owner: tenant.account.clone(),
            },
        ),
        (
            "gRPC VMAPI ListVms".to_string(),
            Case::VmapiList {
                client: stack.vmapi(),
                owner: tenant.account.clone(),
            },
        ),
    ];
    for (what, case) in cases {
        run(&what, case, stack.cloudapi(), clients, secs).await;
    }
    println!();
    println!("load average after: {}", load());
}

triton_common::global_allocator!();

fn main() {
    dc_testkit::bench::runtime().block_on(bench());
}
