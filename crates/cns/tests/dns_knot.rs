//! A real secondary: Debian's Knot (knotd) as a secondary of CNS's DNS server on
//! loopback. It gets the zone by AXFR, follows commits by NOTIFY and IXFR, and keeps
//! following by IXFR after the server restarts from restored zones (as CNS does from
//! Moray).

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dns_common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use cns::zone::Zones;
use dc_testkit::eventually;
use dns_common::{KNOT_IP, Knot, Server, ZONE, inst, require, zone};

#[tokio::test]
async fn knot_follows_by_axfr_then_notify_and_ixfr_across_a_restart() {
    require("dig");
    let server = Server::for_secondary(KNOT_IP).await;
    let (zones, acl) = (server.zones.clone(), server.acl.clone());
    let knot = Knot::start(server.addr, ZONE).await;
    acl.set_notify_port(knot.addr.port());

    // The first transfer is an AXFR, at Knot's start.
    eventually(
        "Knot answers vm 1 from its first transfer",
        Duration::from_secs(20),
        || async { knot.a(&inst(1)).await == ["10.0.1.1"] },
    )
    .await;
    assert_eq!(knot.transfers("AXFR"), 1, "{}", knot.log());
    assert_eq!(knot.serial().await, Some(1));

    // A commit: NOTIFY, then an IXFR of the one step, within 5 s.
    let step_2 = zones.commit(zone(2, 0..4)).unwrap();
    eventually(
        "Knot answers vm 3 after serial 2",
        Duration::from_secs(5),
        || async { knot.a(&inst(3)).await == ["10.0.1.3"] },
    )
    .await;
    assert_eq!(knot.serial().await, Some(2));
    assert_eq!(knot.transfers("IXFR"), 1, "{}", knot.log());
    assert_eq!(knot.transfers("AXFR"), 1, "{}", knot.log());
    let knot_ip = IpAddr::V4(KNOT_IP);
    // After the transfer CNS checks Knot's serial (goodxfer) and its version.
    eventually(
        "the peers table shows Knot current",
        Duration::from_secs(10),
        || async {
            server.peers.get(knot_ip).is_some_and(|p| {
                p.counters.get("goodxfer").is_some_and(|n| *n >= 1)
                    && p.serials.get("coal.example") == Some(&2)
                    && p.using_ixfr
            })
        },
    )
    .await;
    let peer = server.peers.get(knot_ip).unwrap();
    assert_eq!(peer.counters.get("axfr"), Some(&1));
    assert_eq!(peer.counters.get("ixfr"), Some(&1));

    // A restart from the restored state (the zone at 2 and its journal), on the same
    // port: Knot asks from serial 2 and gets an IXFR.
    let port = server.addr.port();
    server.stop().await;
    let current = zones.snapshot().zones[&dns_common::name(ZONE)]
        .as_ref()
        .clone();
    let restored = Arc::new(Zones::new(100));
    restored.restore(current, vec![step_2]);
    let server = Server::start(restored.clone(), acl.clone(), port).await;
    restored.commit(zone(3, 1..5)).unwrap();
    eventually(
        "Knot answers vm 4 and no more vm 0 after the restart",
        Duration::from_secs(5),
        || async { knot.a(&inst(4)).await == ["10.0.1.4"] && knot.a(&inst(0)).await.is_empty() },
    )
    .await;
    assert_eq!(knot.serial().await, Some(3));
    assert_eq!(knot.transfers("IXFR"), 2, "{}", knot.log());
    assert_eq!(knot.transfers("AXFR"), 1, "{}", knot.log());
    let peer = server.peers.get(knot_ip).unwrap();
    assert_eq!(peer.counters.get("ixfr"), Some(&1));
    assert_eq!(peer.counters.get("axfr"), None);
    server.stop().await;
}
