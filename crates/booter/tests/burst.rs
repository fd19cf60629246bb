//! First contact in a burst: many new MACs at once, several DISCOVERs each, against a
//! test datacenter's NAPI and CNAPI. Each MAC gets one admin NIC and its own address,
//! the same in every answer; the NICs are made in `CreateNics` calls of many MACs.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use booter::dhcp::leases::Leases;
use booter::dhcp::packet::Mac;
use dc_testkit::Service;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use triton_proto::napi::v1 as napi_pb;

mod common;

const MACS: usize = 300;
const DISCOVERS_EACH: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_new_macs_gets_one_address_each() {
    let dc = common::napi_dc::start(&["admin"]).await;
    let mut napi = dc.napi();
    let admin = napi
        .create_network(napi_pb::CreateNetworkRequest {
            name: "admin".into(),
            subnet: "10.97.0.0/22".into(),
            provision_start_ip: "10.97.0.10".into(),
            provision_end_ip: "10.97.3.250".into(),
            nic_tag: "admin".into(),
            gateway: Some("10.97.0.1".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let macs: Vec<Mac> = (0..MACS)
        .map(|i| Mac([2, 0xbe, 0, 0, (i >> 8) as u8, i as u8]))
        .collect();
    // One of them NAPI has already (made by someone else, maybe not yet in dhcpd's
    // memory when the burst comes): its address is the one NAPI gave.
    let made_before = napi
        .create_nic(napi_pb::CreateNicRequest {
            mac: Some(macs[7].to_string()),
            owner_uuid: dc_testkit::ADMIN_UUID.into(),
            belongs_to_uuid: dc_testkit::ADMIN_UUID.into(),
            belongs_to_type: "server".into(),
            network_uuid: Some(admin.uuid.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let channel = |s: Service| {
        Channel::from_shared(format!("http://{}", dc.addr(s)))
            .unwrap()
            .connect_lazy()
    };
    let leases = Arc::new(Leases::new(
        channel(Service::Napi),
        channel(Service::Cnapi),
        "admin",
        dc_testkit::ADMIN_UUID,
        None,
    ));
    let stop = CancellationToken::new();
    let follower = tokio::spawn(leases.clone().run(stop.clone()));

    // Every DISCOVER of every MAC at once.
    let asks: Vec<_> = (0..DISCOVERS_EACH)
        .flat_map(|_| macs.iter().copied())
        .map(|mac| {
            let leases = leases.clone();
            tokio::spawn(async move {
                let lease = leases.lease(mac, Ipv4Addr::UNSPECIFIED, true).await;
                (mac, lease)
            })
        })
        .collect();
    let mut answers: HashMap<Mac, HashSet<Ipv4Addr>> = HashMap::new();
    for ask in asks {
        let (mac, lease) = ask.await.unwrap();
        let lease = lease.unwrap_or_else(|e| panic!("{mac}: no lease: {e}"));
        answers.entry(mac).or_default().insert(lease.ip);
    }
    assert_eq!(answers.len(), MACS);
    let mut ips = HashSet::new();
    for (mac, got) in &answers {
        assert_eq!(got.len(), 1, "{mac} was given {got:?}");
        let ip = *got.iter().next().unwrap();
        assert!(ips.insert(ip), "{ip} given to two MACs");
    }
    assert_eq!(
        answers[&macs[7]],
        HashSet::from([made_before.ip.parse().unwrap()])
    );

    // NAPI holds one NIC per MAC, with the address dhcpd gave.
    let nics = napi
        .list_nics(napi_pb::ListNicsRequest {
            network_uuid: Some(admin.uuid.clone()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .nics;
    assert_eq!(nics.len(), MACS);
    for nic in &nics {
        let mac = Mac::parse(&nic.mac).unwrap();
        let ip: Ipv4Addr = nic.ip.parse().unwrap();
        assert_eq!(answers[&mac], HashSet::from([ip]), "{mac}");
        assert_eq!(nic.belongs_to_type, "server");
        assert_eq!(nic.belongs_to_uuid, dc_testkit::ADMIN_UUID);
    }
    stop.cancel();
    follower.await.unwrap();
}
