//! `cargo bench -p portolan --bench first_packet`: first-packet latency across two
//! compute nodes, the time from an instance's first ping to its reply on a cold overlay,
//! as p50/p99 of `PORTOLAN_BENCH_COLD` (50) cold starts, against the named baseline of a
//! warm ping between the same two instances right after each.
//!
//! The two nodes are network namespaces running cn-agent's overlay
//! (`cn_agent::linux::overlay`, through `dc_testkit::fabric::TwoNodes`), with Portolan on Moray
//! answering from rows written as NAPI writes them. Before each cold ping both nodes
//! forget both instances (their VXLAN devices' neighbour and forwarding entries) and both
//! instances empty their neighbour tables, so the ping waits for: instance 1's ARP
//! request, node 1's L3 miss, a VL3 lookup, the entries and the gratuitous ARP; the
//! echo crosses; then the same on node 2 for the reply. Portolan's answer cache (1 s)
//! is left on, as deployed. The third line, one SVP VL3 round trip from this process,
//! is the part of each of those two lookups spent at Portolan.
//!
//! Needs root.

// Benches fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use dc_testkit::bench::{env_or, runtime};
use dc_testkit::fabric::{Instance, TwoNodes, flush_neighbours, forget, nic_row, ping};
use hdrhistogram::Histogram;
use portolan_client::client::SvpClient;

const VNET: u32 = 4300;

fn line(name: &str, h: &Histogram<u64>, lost: usize) {
    println!(
        "| {name} | p50 {:.2} ms | p99 {:.2} ms | max {:.2} ms | {} pings, {lost} unanswered |",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        h.len()
    );
}

triton_common::global_allocator!();

fn main() {
    let rounds = env_or("PORTOLAN_BENCH_COLD", 50).max(1);
    runtime().block_on(async {
        let mut t = TwoNodes::start().await;
        let svp = t.svp;
        let buckets = t.buckets.clone();
        let (n1, cn1) = (t.nodes[0].ns.clone(), t.nodes[0].cn);
        let (n2, cn2) = (t.nodes[1].ns.clone(), t.nodes[1].cn);
        let i1 = t.lab.instance(
            "i1",
            &n1,
            &t.nodes[0].overlay,
            Instance::new(Ipv4Addr::new(10, 43, 0, 1), [0x02, 0xfc, 0, 0, 0, 1], VNET),
        );
        let i2 = t.lab.instance(
            "i2",
            &n2,
            &t.nodes[1].overlay,
            Instance::new(Ipv4Addr::new(10, 43, 0, 2), [0x02, 0xfc, 0, 0, 0, 2], VNET),
        );
        nic_row(&buckets, &i1, cn1, false).await;
        nic_row(&buckets, &i2, cn2, false).await;

        let mut cold = Histogram::<u64>::new(3).unwrap();
        let mut warm = Histogram::<u64>::new(3).unwrap();
        let (mut cold_lost, mut warm_lost) = (0, 0);
        for round in 0..rounds {
            for (node, i) in [(&n1, &i2), (&n2, &i1)] {
                forget(node, VNET, i);
            }
            flush_neighbours(&i1.ns);
            flush_neighbours(&i2.ns);
            let seq = (round * 2) as u16;
            let (ns, ip) = (i1.ns.clone(), i2.ip);
            let timeout = Duration::from_secs(3);
            let first = tokio::task::spawn_blocking(move || ping(&ns, ip, seq, timeout))
                .await
                .unwrap();
            match first {
                Some(t) => cold.record(t.as_micros() as u64).unwrap(),
                None => cold_lost += 1,
            }
            let (ns, ip) = (i1.ns.clone(), i2.ip);
            let again = tokio::task::spawn_blocking(move || ping(&ns, ip, seq + 1, timeout))
                .await
                .unwrap();
            match again {
                Some(t) => warm.record(t.as_micros() as u64).unwrap(),
                None => warm_lost += 1,
            }
        }
        let mut client = SvpClient::connect(svp).await.unwrap();
        let mut lookups = Histogram::<u64>::new(3).unwrap();
        for _ in 0..rounds {
            let t = Instant::now();
            let found = client.vl3(IpAddr::V4(i2.ip), VNET).await.unwrap();
            assert!(found.is_some(), "i2 is found");
            lookups.record(t.elapsed().as_micros() as u64).unwrap();
        }
        line(
            "warm (baseline): a ping between the same instances, entries in place",
            &warm,
            warm_lost,
        );
        line(
            "cold: first ping to its reply, nothing learned on either node",
            &cold,
            cold_lost,
        );
        line(
            "one SVP VL3 round trip (two per cold ping), one connection",
            &lookups,
            0,
        );
    });
}
