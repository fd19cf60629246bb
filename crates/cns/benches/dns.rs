//! `cargo bench -p cns --bench dns`: CNS's DNS server against NSD serving the same zone,
//! both asked by `dnsperf` with the same query file in the same run.
//!
//! The zone is `coal.example` with `CNS_BENCH_NAMES` (10000) instances, each an A and a
//! TXT record as CNS makes them, and a service name over all of them. CNS serves it from
//! `Zones` in this process; NSD (Debian's, `server-count` = the number of CPUs, response rate limiting off) serves
//! the zone file written from CNS's AXFR (`dig axfr`), so both hold the same records.
//! The queries: each instance's A (80%), TXT (10%), and names that do not exist (10%),
//! shuffled.
//!
//! Two runs per server, each `CNS_BENCH_SECS` (10) long:
//! * throughput: as fast as `dnsperf` goes (`-c CNS_BENCH_CLIENTS` (8) clients, at most
//!   `-q 200` queries outstanding): queries per second and lost queries;
//! * latency: at a fixed `CNS_BENCH_QPS` (20000) queries per second, each query's
//!   latency as `dnsperf -v` reports it: p50, p99 and lost queries.
//!
//! Everything runs on this machine: dnsperf takes CPU from both servers alike.

// Benches fail by panicking, as tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

triton_common::global_allocator!();

#[path = "../tests/dns_common/mod.rs"]
mod dns_common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cns::dns::{self, TransferAcl};
use cns::peers::Peers;
use cns::zone::{NS_TTL, SoaFields, TTL, Zone, Zones};
use dc_testkit::bench::{env_or, runtime};
use hickory_proto::rr::rdata::{A, NS, TXT};
use hickory_proto::rr::{Name, RData, Record};
use tokio_util::sync::CancellationToken;

const ZONE: &str = "coal.example.";
const ACCOUNT: &str = "930896af-bf8c-48d4-885c-6573a94b1853";
const NSD_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);

fn inst(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-000000000000.inst.{ACCOUNT}.{ZONE}")
}

fn zone(names: usize) -> Zone {
    let name = |s: &str| Name::from_str(s).unwrap();
    let origin = name(ZONE);
    let svc = name(&format!("web.svc.{ACCOUNT}.{ZONE}"));
    let mut records = vec![Record::from_rdata(
        origin.clone(),
        NS_TTL,
        RData::NS(NS(name("cns.coal.example."))),
    )];
    for i in 0..names {
        let owner = name(&inst(i));
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 1)) + i as u32);
        records.push(Record::from_rdata(owner.clone(), TTL, RData::A(A(ip))));
        records.push(Record::from_rdata(
            owner,
            TTL,
            RData::TXT(TXT::new(vec![format!("vm {i}")])),
        ));
        if i < 8 {
            records.push(Record::from_rdata(svc.clone(), TTL, RData::A(A(ip))));
        }
    }
    let soa = SoaFields {
        mname: name("cns.coal.example."),
        rname: name("hostmaster.example."),
    };
    Zone::new(origin, 2026120601, soa).with_records(records)
}

/// The query file: A (80%), TXT (10%), missing names (10%), in a fixed shuffle.
fn queries(names: usize) -> String {
    let mut lines: Vec<String> = (0..names)
        .map(|i| match i % 10 {
            0 => format!("{} TXT", inst(i)),
            1 => format!("nope-{i}.inst.{ACCOUNT}.{ZONE} A"),
            _ => format!("{} A", inst(i)),
        })
        .collect();
    // A fixed linear congruential shuffle: the same file every run.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..lines.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let j = (state >> 33) as usize % (i + 1);
        lines.swap(i, j);
    }
    lines.join("\n") + "\n"
}

async fn run(cmd: &str, args: &[String]) -> String {
    let out = tokio::process::Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("{cmd} (scripts/lib.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn dig(addr: SocketAddr, args: &[&str]) -> String {
    let mut a = vec![
        format!("@{}", addr.ip()),
        "-p".into(),
        addr.port().to_string(),
    ];
    a.extend(args.iter().map(|s| s.to_string()));
    run("dig", &a).await
}

/// The zone file NSD loads: CNS's AXFR as dig prints it, without the closing SOA.
async fn export(cns: SocketAddr, path: &Path) -> usize {
    let axfr = dig(cns, &["+nocmd", "+nostats", "+nocomments", ZONE, "AXFR"]).await;
    let mut lines: Vec<&str> = axfr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .collect();
    let last = lines.pop().unwrap_or_default();
    assert!(last.contains("SOA"), "the AXFR ends with its SOA: {last}");
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    lines.len()
}

/// NSD on NSD_IP serving `zonefile`, in `dir`.
async fn start_nsd(dir: &Path, zonefile: &Path) -> (SocketAddr, tokio::process::Child) {
    let port = dns::bind(SocketAddr::new(IpAddr::V4(NSD_IP), 0))
        .await
        .unwrap()
        .local_addr()
        .port();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let server = dns_common::nsd_server(dir, NSD_IP, port, cpus, 1);
    let conf = format!(
        r#"{server}zone:
    name: {ZONE}
    zonefile: "{zonefile}"
"#,
        zonefile = zonefile.display()
    );
    let child = dns_common::spawn_nsd(dir, &conf);
    (SocketAddr::new(IpAddr::V4(NSD_IP), port), child)
}

struct Throughput {
    qps: f64,
    sent: u64,
    lost: u64,
    /// How much `/proc/net/snmp`'s Udp RcvbufErrors grew over the run (datagrams the
    /// kernel dropped from a full receive buffer, any socket of this namespace).
    rcvbuf_errors: u64,
}

/// `/proc/net/snmp`'s Udp RcvbufErrors.
fn rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == "RcvbufErrors")
        .unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

struct Latency {
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    lost: u64,
}

fn field(out: &str, label: &str) -> String {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("dnsperf printed no {label:?}:\n{out}"))
}

fn dnsperf_args(addr: SocketAddr, queries: &Path, secs: usize) -> Vec<String> {
    vec![
        "-s".into(),
        addr.ip().to_string(),
        "-p".into(),
        addr.port().to_string(),
        "-d".into(),
        queries.display().to_string(),
        "-l".into(),
        secs.to_string(),
    ]
}

async fn throughput(addr: SocketAddr, queries: &Path, secs: usize, clients: usize) -> Throughput {
    let mut args = dnsperf_args(addr, queries, secs);
    args.extend(["-c".into(), clients.to_string(), "-q".into(), "200".into()]);
    let before = rcvbuf_errors();
    let out = run("dnsperf", &args).await;
    Throughput {
        qps: field(&out, "Queries per second:").parse().unwrap(),
        sent: field(&out, "Queries sent:").parse().unwrap(),
        lost: field(&out, "Queries lost:").parse().unwrap(),
        rcvbuf_errors: rcvbuf_errors() - before,
    }
}

async fn latency(addr: SocketAddr, queries: &Path, secs: usize, qps: usize) -> Latency {
    let mut args = dnsperf_args(addr, queries, secs);
    args.extend(["-Q".into(), qps.to_string(), "-v".into()]);
    let out = run("dnsperf", &args).await;
    // `-v`: one line per answer, its latency in seconds last.
    let mut us: Vec<u64> = out
        .lines()
        .filter(|l| l.starts_with('>'))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|s| (s * 1e6) as u64)
        .collect();
    assert!(!us.is_empty(), "dnsperf -v printed no latencies:\n{out}");
    us.sort_unstable();
    let at = |q: f64| us[((us.len() as f64 * q) as usize).min(us.len() - 1)];
    Latency {
        p50_us: at(0.50),
        p99_us: at(0.99),
        max_us: us[us.len() - 1],
        lost: field(&out, "Queries lost:").parse().unwrap(),
    }
}

fn main() {
    let names = env_or("CNS_BENCH_NAMES", 10_000);
    let secs = env_or("CNS_BENCH_SECS", 10);
    let clients = env_or("CNS_BENCH_CLIENTS", 8);
    let fixed_qps = env_or("CNS_BENCH_QPS", 20_000);
    runtime().block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        eprintln!("[cns bench] building a zone of {names} instances");
        let zones = Arc::new(Zones::new(10));
        zones.commit(zone(names)).unwrap();
        let acl = Arc::new(TransferAcl::new(&[], &[]).unwrap());
        let listener = dns::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let cns = listener.local_addr();
        let buffers = listener.udp_buffers().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(listener.serve(zones, acl, Peers::new(), shutdown.clone()));

        eprintln!("[cns bench] exporting the zone from CNS by AXFR for NSD");
        let zonefile = dir.path().join("coal.example.zone");
        let records = export(cns, &zonefile).await;
        let (nsd, mut nsd_child) = start_nsd(dir.path(), &zonefile).await;
        let probe = inst(names / 2);
        let mut ready = false;
        for _ in 0..100 {
            let a = dig(nsd, &["+short", "+time=1", "+tries=1", &probe, "A"]).await;
            if !a.trim().is_empty() {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "NSD did not come up; its log: {:?}", std::fs::read_to_string(dir.path().join("nsd.log")));
        for name in [inst(0), inst(names - 1), format!("nope.{ZONE}")] {
            let a = dig(cns, &["+short", &name, "A"]).await;
            let b = dig(nsd, &["+short", &name, "A"]).await;
            assert_eq!(a, b, "CNS and NSD answer {name} alike");
        }
        eprintln!("[cns bench] {records} records in both; NSD at {nsd}, CNS at {cns}");

        let qfile = dir.path().join("queries");
        std::fs::write(&qfile, queries(names)).unwrap();
        let mut rows = Vec::new();
        for (label, addr) in [("NSD 4.6.1 (baseline)", nsd), ("CNS", cns)] {
            eprintln!("[cns bench] {label}: dnsperf as fast as it goes, {secs} s, {clients} clients");
            let t = throughput(addr, &qfile, secs, clients).await;
            eprintln!("[cns bench] {label}: dnsperf at {fixed_qps} queries/s, {secs} s, each latency");
            let l = latency(addr, &qfile, secs, fixed_qps).await;
            rows.push((label, t, l));
        }
        nsd_child.kill().await.ok();
        shutdown.cancel();
        server.await.unwrap().unwrap();

        println!("\n### CNS vs NSD, {names} names, dnsperf {secs} s per run\n");
        println!(
            "| server | queries/s (max) | lost (max) | RcvbufErrors (max) | p50 at {fixed_qps}/s | p99 at {fixed_qps}/s | max at {fixed_qps}/s | lost at {fixed_qps}/s |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for (label, t, l) in &rows {
            println!(
                "| {label} | {:.0} | {} of {} | {} | {} µs | {} µs | {} µs | {} |",
                t.qps, t.lost, t.sent, t.rcvbuf_errors, l.p50_us, l.p99_us, l.max_us, l.lost
            );
        }
        println!(
            "\nCNS's UDP socket buffers as the kernel reports them (twice the size asked): receive {} bytes, send {} bytes",
            buffers.recv, buffers.send
        );
        let ratio = rows[1].1.qps / rows[0].1.qps;
        println!("\nCNS / NSD queries per second: {ratio:.2}");
    });
}
