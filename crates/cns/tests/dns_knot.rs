//! A real secondary: Debian's Knot (knotd) as a secondary of CNS's DNS server on
//! loopback. It gets the zone by AXFR, follows commits by NOTIFY and IXFR, and keeps
//! following by IXFR after the server restarts from restored zones (as CNS does from
//! Moray).

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dns_common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cns::dns::TransferAcl;
use cns::zone::Zones;
use dc_testkit::eventually;
use dns_common::{Server, ZONE, dig, inst, lines, require, zone};

/// Knot's address: another loopback address than the server's, so that its transfers
/// come from an address that is not the local host (which gets no NOTIFY).
const KNOT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

struct Knot {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    child: tokio::process::Child,
}

impl Knot {
    async fn start(primary: SocketAddr) -> Knot {
        require("knotd");
        let dir = tempfile::tempdir().unwrap();
        // A free port for both UDP and TCP on Knot's address.
        let port = cns::dns::bind(SocketAddr::new(IpAddr::V4(KNOT_IP), 0))
            .await
            .unwrap()
            .local_addr()
            .port();
        let addr = SocketAddr::new(IpAddr::V4(KNOT_IP), port);
        let d = dir.path().display();
        let config = format!(
            r#"server:
    rundir: "{d}"
    listen: {KNOT_IP}@{port}
    identity: ""
log:
  - target: stderr
    any: info
database:
    storage: "{d}/db"
remote:
  - id: cns
    address: {ip}@{primary_port}
    via: {KNOT_IP}
acl:
  - id: notify_from_cns
    address: 127.0.0.0/8
    action: notify
template:
  - id: default
    storage: "{d}/zones"
    zonefile-sync: -1
    zonefile-load: none
    journal-content: none
zone:
  - domain: {ZONE}
    master: cns
    acl: notify_from_cns
"#,
            ip = primary.ip(),
            primary_port = primary.port(),
        );
        let conf = dir.path().join("knot.conf");
        std::fs::write(&conf, config).unwrap();
        let log = std::fs::File::create(dir.path().join("knot.log")).unwrap();
        let child = tokio::process::Command::new("knotd")
            .arg("-c")
            .arg(&conf)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("knotd starts");
        Knot { addr, dir, child }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("knot.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Knot's log lines of finished incoming transfers of `kind` (AXFR, IXFR).
    fn transfers(&self, kind: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(&format!("{kind}, incoming")) && l.contains("finished"))
            .count()
    }

    /// What Knot answers for `name` `A` (+short).
    async fn a(&self, name: &str) -> Vec<String> {
        lines(&dig(self.addr, &["+short", name, "A"]).await)
    }

    async fn serial(&self) -> Option<u32> {
        let out = dig(self.addr, &["+short", ZONE, "SOA"]).await;
        out.split_whitespace().nth(2).and_then(|s| s.parse().ok())
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test]
async fn knot_follows_by_axfr_then_notify_and_ixfr_across_a_restart() {
    require("dig");
    let zones = Arc::new(Zones::new(100));
    zones.commit(zone(1, 0..3)).unwrap();
    let acl = Arc::new(TransferAcl::new(&[KNOT_IP.to_string()], &[]).unwrap());
    let server = Server::start(zones.clone(), acl.clone(), 0).await;
    let knot = Knot::start(server.addr).await;
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
