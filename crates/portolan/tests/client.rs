//! `portolan_client::client::SvpClient`, the compute node's client, against a real
//! Portolan on real Moray.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;

use common::*;
use portolan_client::buckets::{LogRecord, VXLAN_PORT, mac_number};
use portolan_client::client::{SvpClient, SvpError, Vl3Answer};
use portolan_client::svp::{LogEntry, Op, Status, Underlay};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn underlay(s: &str) -> Underlay {
    Underlay {
        ip: ip(s),
        port: VXLAN_PORT,
    }
}

#[tokio::test]
async fn lookups_follow_the_buckets_without_the_cache() {
    let f = Fabric::start_with(|c| c.cache_ttl_ms = 0).await;
    let mut svp = f.dc.svp().await;
    svp.ping().await.unwrap();
    assert_eq!(
        svp.vl2(MAC_1, VNET_A).await.unwrap(),
        Some(underlay(UNDERLAY_1))
    );
    assert_eq!(svp.vl2(MAC_GONE, VNET_A).await.unwrap(), None);
    assert_eq!(
        svp.vl3(ip(IP_1), VNET_A).await.unwrap(),
        Some(Vl3Answer {
            mac: MAC_1,
            underlay: underlay(UNDERLAY_1)
        })
    );
    assert_eq!(svp.vl3(ip(IP_B), VNET_A).await.unwrap(), None);
    assert_eq!(
        svp.vl3(ip(IP_6), VNET_A).await.unwrap().map(|a| a.mac),
        Some(MAC_6)
    );

    // NAPI moves A's instance to node 2: the next answer says so.
    let cn_2 = f.cn_2;
    f.nic(IP_1, MAC_1, VNET_A, cn_2, false).await;
    assert_eq!(
        svp.vl3(ip(IP_1), VNET_A).await.unwrap().map(|a| a.underlay),
        Some(underlay(UNDERLAY_2))
    );
    // ... and deletes it.
    f.nic(IP_1, MAC_1, VNET_A, cn_2, true).await;
    assert_eq!(svp.vl3(ip(IP_1), VNET_A).await.unwrap(), None);
    assert_eq!(svp.vl2(MAC_1, VNET_A).await.unwrap(), None);
}

#[tokio::test]
async fn a_drained_log_entry_makes_the_next_answer_fresh() {
    // The default config: answers cached for 1 s.
    let f = Fabric::start().await;
    let mut svp = f.dc.svp().await;
    let on_1 = Some(Vl3Answer {
        mac: MAC_1,
        underlay: underlay(UNDERLAY_1),
    });
    assert_eq!(svp.vl3(ip(IP_1), VNET_A).await.unwrap(), on_1);
    assert_eq!(
        svp.vl2(MAC_1, VNET_A).await.unwrap(),
        Some(underlay(UNDERLAY_1))
    );

    // NAPI moves the NIC to node 2 and tells node 2's log; node 2 drains it, then asks.
    f.nic(IP_1, MAC_1, VNET_A, f.cn_2, false).await;
    f.event(
        f.cn_2,
        LogRecord::Vl3 {
            ip: portolan_client::buckets::ip_text(ip(IP_1)),
            mac: mac_number(MAC_1),
            vlan: VLAN,
            vnet_id: VNET_A,
        },
    )
    .await;
    let log = svp.log(ip(UNDERLAY_2), 4096).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        svp.vl3(ip(IP_1), VNET_A).await.unwrap().map(|a| a.underlay),
        Some(underlay(UNDERLAY_2))
    );

    // NAPI deletes it and tells node 1 to forget the MAC: VL2 and VL3 both answer
    // NOTFOUND once node 1 has drained its log.
    f.nic(IP_1, MAC_1, VNET_A, f.cn_2, true).await;
    f.vl2_event(f.cn_1, MAC_1, VNET_A).await;
    let log = svp.log(ip(UNDERLAY_1), 4096).await.unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(svp.vl2(MAC_1, VNET_A).await.unwrap(), None);
    assert_eq!(svp.vl3(ip(IP_1), VNET_A).await.unwrap(), None);
}

#[tokio::test]
async fn the_log_drains() {
    let f = Fabric::start().await;
    let mut svp = SvpClient::connect(f.svp_addr()).await.unwrap();
    let log = svp.log(ip(UNDERLAY_1), 4096).await.unwrap();
    assert_eq!(
        log,
        vec![
            LogEntry::Vl2 {
                id: f.log_1[0],
                mac: MAC_GONE,
                vnet_id: VNET_A
            },
            LogEntry::Vl3 {
                id: f.log_1[1],
                ip: ip(IP_GONE),
                vlan: VLAN,
                vnet_id: VNET_A
            },
        ]
    );
    svp.log_rm(&f.log_1).await.unwrap();
    assert_eq!(svp.log(ip(UNDERLAY_1), 4096).await.unwrap(), vec![]);

    // A new event comes after the drain.
    let id = f.vl2_event(f.cn_1, MAC_B, VNET_B).await;
    let log = svp.log(ip(UNDERLAY_1), 4096).await.unwrap();
    assert_eq!(log.iter().map(LogEntry::id).collect::<Vec<_>>(), vec![id]);

    // An address no node has: Portolan answers FATAL, an error here, and the client is
    // spent (the protocol has the client close the connection on FATAL).
    let e = svp.log(ip(UNDERLAY_NONE), 4096).await.unwrap_err();
    assert!(
        matches!(
            e,
            SvpError::Status {
                op: Op::LogAck,
                status: Status::Fatal
            }
        ),
        "{e}"
    );
    assert!(matches!(svp.ping().await, Err(SvpError::Broken)));
    let mut again = f.dc.svp().await;
    again.ping().await.unwrap();
}

#[tokio::test]
async fn many_clients_at_once() {
    let f = Fabric::start().await;
    let addr = f.svp_addr();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        tasks.push(tokio::spawn(async move {
            let mut svp = SvpClient::connect(addr).await.unwrap();
            for _ in 0..20 {
                assert_eq!(
                    svp.vl3(ip(IP_1), VNET_A).await.unwrap().map(|a| a.mac),
                    Some(MAC_1)
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn the_health_port_answers_serving() {
    let f = Fabric::start().await;
    let addr = f.dc.addr(dc_testkit::Service::PortolanHealth);
    // grpc.health.v1 SERVING is 1.
    assert_eq!(dc_testkit::health(addr, "").await, 1);
}
