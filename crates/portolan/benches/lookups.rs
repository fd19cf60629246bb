//! `cargo bench -p portolan --bench lookups [-- ping vl3 uncached]`: SVP round trips per second
//! and their p50/p99 from `PORTOLAN_BENCH_CLIENTS` (64) concurrent clients, each with
//! one request outstanding on its own connection (as varpd keeps it), for
//! `PORTOLAN_BENCH_SECS` (10) per part:
//!
//! * ping: PING → PONG, the baseline: the transport alone (Moray is not asked);
//! * vl3: VL3 lookups of `PORTOLAN_BENCH_IPS` (1000) overlay addresses on one vnet,
//!   with Portolan's default cache (an answer kept 1 s, so each address is read from
//!   Moray about once a second and the rest are answered from memory);
//! * uncached: the same with the cache off (`cache_ttl_ms = 0`): each lookup a Moray
//!   read of the address's row and one of its node's underlay row.
//!
//! Portolan, Moray and PostgreSQL run in this one process (PostgreSQL in its own) on
//! loopback; the numbers include all of it.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use dc_testkit::bench::{Parts, env_or, runtime};
use dc_testkit::{Dc, Options, Service};
use hdrhistogram::Histogram;
use moray_client::{EtagCondition, MorayClient};
use portolan_client::buckets::{
    Buckets, RECORD_VERSION, UnderlayMapping, VXLAN_PORT, VnetMacIp, ip_text, vnet_mac_ip_key,
};
use portolan_client::client::SvpClient;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const VNET: u32 = 4242;

fn overlay_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 200, (i / 250) as u8, (i % 250 + 1) as u8))
}

/// Two nodes and `ips` NICs on one vnet, half on each.
async fn fill(dc: &Dc, ips: usize) {
    let moray = MorayClient::connect(&dc.moray_url()).await.unwrap();
    let buckets = Buckets::new(moray);
    let nodes = [Uuid::new_v4(), Uuid::new_v4()];
    for (n, cn) in nodes.iter().enumerate() {
        let row = UnderlayMapping {
            cn_uuid: *cn,
            ip: ip_text(IpAddr::V4(Ipv4Addr::new(10, 88, 0, n as u8 + 1))),
            port: VXLAN_PORT,
        };
        buckets
            .underlay_mappings
            .put(&cn.to_string(), &row, EtagCondition::Any)
            .await
            .unwrap();
    }
    for i in 0..ips {
        let ip = overlay_ip(i);
        let row = VnetMacIp {
            mac: 0x90b8_d000_0000 + i as u64,
            ip: ip_text(ip),
            cn_uuid: nodes[i % 2],
            vnet_id: VNET,
            vlan_id: 0,
            version: RECORD_VERSION,
            deleted: false,
        };
        buckets
            .vnet_mac_ip
            .put(&vnet_mac_ip_key(ip, VNET), &row, EtagCondition::Any)
            .await
            .unwrap();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ping,
    Vl3,
}

/// Runs `clients` clients for `secs` seconds; prints requests/s, p50 and p99.
async fn run(addr: SocketAddr, kind: Kind, clients: usize, secs: u64, ips: usize, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        tasks.push(tokio::spawn(async move {
            let mut svp = SvpClient::connect(addr).await.unwrap();
            let mut hist = Histogram::<u64>::new(3).unwrap();
            let mut i = c * 7919;
            while Instant::now() < deadline {
                let t = Instant::now();
                match kind {
                    Kind::Ping => svp.ping().await.unwrap(),
                    Kind::Vl3 => {
                        let found = svp.vl3(overlay_ip(i % ips), VNET).await.unwrap();
                        assert!(found.is_some(), "every address is found");
                        i += 1;
                    }
                }
                hist.record(t.elapsed().as_micros() as u64).unwrap();
            }
            hist
        }));
    }
    let mut all = Histogram::<u64>::new(3).unwrap();
    for t in tasks {
        all.add(t.await.unwrap()).unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "| {name}, {clients} clients | {:.0} requests/s | p50 {:.2} ms | p99 {:.2} ms | {} requests |",
        all.len() as f64 / elapsed,
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0,
        all.len()
    );
}

triton_common::global_allocator!();

fn main() {
    let parts = Parts::from_args();
    let clients = env_or("PORTOLAN_BENCH_CLIENTS", 64);
    let secs = env_or("PORTOLAN_BENCH_SECS", 10) as u64;
    let ips = env_or("PORTOLAN_BENCH_IPS", 1000).max(1);
    runtime().block_on(async {
        let dc = Dc::start(Options::only(Service::Portolan)).await;
        fill(&dc, ips).await;
        let addr = dc.addr(Service::Portolan);
        if parts.wants("ping") {
            run(
                addr,
                Kind::Ping,
                clients,
                secs,
                ips,
                "ping (baseline): PING → PONG",
            )
            .await;
        }
        if parts.wants("vl3") {
            let name = format!("vl3: VL3 lookups of {ips} addresses, cached 1 s");
            run(addr, Kind::Vl3, clients, secs, ips, &name).await;
        }
        if parts.wants("uncached") {
            let mut config = portolan::Config {
                svp_listen: "127.0.0.1:0".into(),
                cache_ttl_ms: 0,
                ..Default::default()
            };
            config.service.listen = "127.0.0.1:0".into();
            config.service.moray_url = dc.moray_url();
            let uncached = portolan::start(config, CancellationToken::new())
                .await
                .expect("a second Portolan starts");
            let name = format!("uncached: VL3 lookups of {ips} addresses, each from Moray");
            run(uncached.svp_addr, Kind::Vl3, clients, secs, ips, &name).await;
        }
    });
}
