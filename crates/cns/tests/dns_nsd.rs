//! Debian's NSD as a secondary of CNS's DNS server on loopback, by AXFR only: it gets the
//! zone, answers the same names as CNS, and after a commit (NOTIFY, then AXFR) the new
//! ones within 5 s.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dns_common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use dc_testkit::eventually;
use dns_common::{ACCOUNT, NSD_IP, Nsd, Server, ZONE, dig, inst, lines, require, zone};

/// The answer section of `name` `kind` from `addr`, sorted (`+noall +answer`, TTLs
/// left out), and the response code.
async fn answer(addr: SocketAddr, name: &str, kind: &str) -> (String, Vec<String>) {
    let out = dig(addr, &["+noall", "+answer", "+comments", name, kind]).await;
    let status = out
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split(',').next().unwrap_or("").to_string())
        .unwrap_or_default();
    let mut records: Vec<String> = lines(&out)
        .into_iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // name, TTL, class, type, data: the TTL left out (NSD counts it down).
            let mut kept = vec![f[0]];
            kept.extend(&f[2..]);
            kept.join(" ")
        })
        .collect();
    records.sort();
    (status, records)
}

#[tokio::test]
async fn nsd_transfers_by_axfr_and_answers_the_same_names() {
    require("dig");
    let server = Server::for_secondary(NSD_IP).await;
    let (zones, acl) = (server.zones.clone(), server.acl.clone());
    let nsd = Nsd::start(server.addr, ZONE).await;
    acl.set_notify_port(nsd.addr.port());

    let first = tokio::time::timeout(Duration::from_secs(20), async {
        while lines(&dig(nsd.addr, &["+short", &inst(1), "A"]).await) != ["10.0.1.1"] {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        first.is_ok(),
        "NSD answers vm 1 from its transfer; its log:\n{}",
        nsd.log()
    );
    let svc = format!("web.svc.{ACCOUNT}.{ZONE}");
    let missing = format!("nope.inst.{ACCOUNT}.{ZONE}");
    for (name, kind) in [
        (inst(0), "A"),
        (inst(2), "TXT"),
        (svc.clone(), "A"),
        (svc.clone(), "SRV"),
        (ZONE.to_string(), "NS"),
        (ZONE.to_string(), "SOA"),
        (missing.clone(), "A"),
        (inst(1), "AAAA"),
    ] {
        assert_eq!(
            answer(nsd.addr, &name, kind).await,
            answer(server.addr, &name, kind).await,
            "NSD and CNS answer {name} {kind} alike"
        );
    }

    // A commit: NOTIFY, then NSD's AXFR, within 5 s.
    zones.commit(zone(2, 1..5)).unwrap();
    eventually(
        "NSD answers vm 4 and no more vm 0 after serial 2",
        Duration::from_secs(5),
        || async {
            lines(&dig(nsd.addr, &["+short", &inst(4), "A"]).await) == ["10.0.1.4"]
                && lines(&dig(nsd.addr, &["+short", &inst(0), "A"]).await).is_empty()
        },
    )
    .await;
    assert_eq!(
        answer(nsd.addr, &svc, "SRV").await,
        answer(server.addr, &svc, "SRV").await
    );
    // Both transfers were AXFRs from NSD's address, recorded in the peers table.
    let peer = server.peers.get(IpAddr::V4(NSD_IP)).unwrap();
    assert_eq!(
        peer.counters.get("axfr"),
        Some(&2),
        "{peer:?}\n{}",
        nsd.log()
    );
    assert_eq!(peer.counters.get("ixfr"), None);
    server.stop().await;
}
