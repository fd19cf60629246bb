//! CNS's DNS server on real sockets, asked with `dig` as an operator or a resolver
//! would: answers over UDP and TCP, TC and the retry over TCP, transfers only for the
//! addresses allowed, and bad packets that leave it answering.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dns_common;

use std::sync::Arc;

use cns::dns::TransferAcl;
use cns::zone::Zones;
use dns_common::{ACCOUNT, Server, ZONE, inst, lines, require, zone};

fn is_soa(line: &str) -> bool {
    line.split_whitespace().nth(3) == Some("SOA")
}

fn acl(allow: &[&str]) -> Arc<TransferAcl> {
    let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
    Arc::new(TransferAcl::new(&allow, &[]).unwrap())
}

async fn server(vms: u32, allow: &[&str]) -> Server {
    require("dig");
    let zones = Arc::new(Zones::new(10));
    zones.commit(zone(100, 0..vms)).unwrap();
    Server::start(zones, acl(allow), 0).await
}

#[tokio::test]
async fn dig_gets_the_names_over_udp_and_tcp() {
    let s = server(3, &[]).await;
    assert_eq!(
        lines(&s.dig(&["+short", &inst(1), "A"]).await),
        ["10.0.1.1"]
    );
    assert_eq!(
        lines(&s.dig(&["+short", "+tcp", &inst(2), "TXT"]).await),
        ["\"vm 2\""]
    );
    // SRV: the targets' addresses in the additional section.
    let srv = s
        .dig(&[
            "+noall",
            "+answer",
            "+additional",
            &format!("web.svc.{ACCOUNT}.{ZONE}"),
            "SRV",
        ])
        .await;
    let srv = lines(&srv);
    assert_eq!(
        srv.iter()
            .filter(|l| l.split_whitespace().nth(3) == Some("SRV"))
            .count(),
        3,
        "{srv:?}"
    );
    for i in 0..3 {
        assert!(
            srv.iter()
                .any(|l| l.starts_with(&inst(i)) && l.ends_with(&format!("10.0.1.{i}"))),
            "no additional A for vm {i}: {srv:?}"
        );
    }
    let full = s.dig(&[&inst(1), "A"]).await;
    assert!(full.contains("flags: qr aa rd;"), "{full}");
    assert!(full.contains("status: NOERROR"), "{full}");
    // NXDOMAIN and NODATA with the SOA; SERVFAIL outside the zones.
    let missing = s.dig(&[&format!("nope.inst.{ACCOUNT}.{ZONE}"), "A"]).await;
    assert!(missing.contains("status: NXDOMAIN"), "{missing}");
    assert!(missing.contains("AUTHORITY: 1"), "{missing}");
    let nodata = s.dig(&[&inst(1), "AAAA"]).await;
    assert!(
        nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"),
        "{nodata}"
    );
    let outside = s.dig(&["www.example.org", "A"]).await;
    assert!(outside.contains("status: SERVFAIL"), "{outside}");
    let version = s.dig(&["+short", "version._cns_meta", "TXT"]).await;
    assert!(version.contains("cns"), "{version}");
    s.stop().await;
}

#[tokio::test]
async fn a_big_answer_sets_tc_and_dig_retries_over_tcp() {
    // 120 addresses on the service name: more than 1232 bytes.
    let s = server(120, &[]).await;
    let svc = format!("web.svc.{ACCOUNT}.{ZONE}");
    let cut = s.dig(&["+ignore", "+bufsize=4096", &svc, "A"]).await;
    assert!(cut.contains("flags: qr aa tc rd;"), "{cut}");
    assert!(cut.contains("ANSWER: 0"), "{cut}");
    assert!(
        cut.contains("; EDNS: version: 0, flags:; udp: 1232"),
        "{cut}"
    );
    let retried = s.dig(&["+short", &svc, "A"]).await;
    assert_eq!(lines(&retried).len(), 120);
    s.stop().await;
}

#[tokio::test]
async fn transfers_only_for_allowed_addresses() {
    let s = server(700, &["127.0.0.3"]).await;
    // 127.0.0.1 is always allowed.
    let axfr = s.dig(&["+noall", "+answer", ZONE, "AXFR"]).await;
    let records = lines(&axfr);
    // SOA, NS, 700 x (A, TXT), 700 x (A, SRV) on the service, SOA.
    assert_eq!(records.len(), 3 + 4 * 700, "{}", records.len());
    assert!(is_soa(&records[0]) && is_soa(records.last().unwrap()));
    // 127.0.0.2 is not.
    let refused = s.dig(&["-b", "127.0.0.2", ZONE, "AXFR"]).await;
    assert!(refused.contains("Transfer failed"), "{refused}");
    let refused = s.dig(&["-b", "127.0.0.2", "+tcp", "ixfr=99", ZONE]).await;
    assert!(
        refused.contains("status: REFUSED") || refused.contains("Transfer failed"),
        "{refused}"
    );
    assert!(s.peers.get("127.0.0.2".parse().unwrap()).is_none());
    // 127.0.0.3 is listed: it gets the zone, and the peers table has it.
    let listed = s
        .dig(&["-b", "127.0.0.3", "+noall", "+answer", ZONE, "AXFR"])
        .await;
    assert_eq!(lines(&listed).len(), 3 + 4 * 700);
    let peer = s.peers.get("127.0.0.3".parse().unwrap()).unwrap();
    assert_eq!(peer.counters.get("axfr"), Some(&1));
    assert_eq!(peer.serials.get("coal.example"), Some(&100));
    s.stop().await;
}

#[tokio::test]
async fn ixfr_gives_the_changes_since_the_clients_serial() {
    let s = server(5, &[]).await;
    // 100 -> 101: vm 5 added; 101 -> 102: vm 0 removed.
    s.zones.commit(zone(101, 0..6)).unwrap();
    s.zones.commit(zone(102, 1..6)).unwrap();
    let ixfr = s.dig(&["+noall", "+answer", "ixfr=100", ZONE]).await;
    let records = lines(&ixfr);
    let soas: Vec<&String> = records.iter().filter(|l| is_soa(l)).collect();
    assert_eq!(soas.len(), 6, "{records:?}");
    assert!(
        records.iter().any(|l| l.starts_with(&inst(5))),
        "{records:?}"
    );
    // Each step adds or removes the instance's A, TXT and the service's A and SRV.
    assert_eq!(records.len(), 6 + 4 + 4, "{records:?}");
    // Current: the SOA alone.
    let current = s.dig(&["+noall", "+answer", "ixfr=102", ZONE]).await;
    assert_eq!(lines(&current).len(), 1, "{current}");
    // Over UDP: the SOA alone, whatever the serial.
    let udp = s
        .dig(&["+noall", "+answer", "+notcp", "ixfr=100", ZONE])
        .await;
    assert_eq!(lines(&udp).len(), 1, "{udp}");
    let peer = s.peers.get("127.0.0.1".parse().unwrap()).unwrap();
    assert!(peer.using_ixfr);
    assert_eq!(peer.counters.get("ixfr"), Some(&2));
    s.stop().await;
}

#[tokio::test]
async fn bad_packets_leave_the_server_answering() {
    let s = server(2, &[]).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(s.addr).await.unwrap();
    let header = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let mut looped = header.to_vec();
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let mut huge_label = header.to_vec();
    huge_label.extend_from_slice(&[63]);
    huge_label.extend_from_slice(&[b'a'; 10]);
    for packet in [
        &[][..],
        &[0u8; 5][..],
        &header[..],
        &looped[..],
        &huge_label[..],
        &[0xffu8; 600][..],
    ] {
        socket.send(packet).await.unwrap();
    }
    // The compression loop gets FORMERR with its id.
    let mut buf = [0u8; 512];
    let mut formerr = false;
    while let Ok(Ok(n)) =
        tokio::time::timeout(std::time::Duration::from_millis(500), socket.recv(&mut buf)).await
    {
        let m = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
        formerr |=
            m.id() == 0x1234 && m.response_code() == hickory_proto::op::ResponseCode::FormErr;
    }
    assert!(formerr);
    // Over TCP: a length prefix promising more than comes, then a good query on another
    // connection.
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(&[0x01, 0x00, 0x12]).await.unwrap();
    assert_eq!(
        lines(&s.dig(&["+short", "+tcp", &inst(1), "A"]).await),
        ["10.0.1.1"]
    );
    assert_eq!(
        lines(&s.dig(&["+short", &inst(0), "A"]).await),
        ["10.0.1.0"]
    );
    drop(tcp);
    s.stop().await;
}
