//! IP allocation against a real Moray: concurrent provisions never share an address,
//! a full network says so, and released addresses are handed out again.

mod common;

use std::collections::HashSet;
use std::net::Ipv4Addr;

use common::{TestNapi, assert_error, new_uuid, nic_on};
use triton_proto::napi::v1 as proto;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_provisions_get_distinct_ips_until_the_network_is_full() {
    let napi = TestNapi::start().await;
    let net = napi.network("net24", "10.20.30", "external").await;
    // 10.20.30.0/24, range .1-.254, gateway .1: 253 addresses to hand out.

    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let mut client = napi.client();
            let req = nic_on(&net.uuid, &new_uuid());
            tokio::spawn(async move { client.create_nic(req).await })
        })
        .collect();
    let mut ips = HashSet::new();
    let mut macs = HashSet::new();
    for t in tasks {
        let nic = t.await.expect("task").expect("provision").into_inner();
        let ip: Ipv4Addr = nic.ip.parse().expect("an IPv4 address");
        assert_eq!(ip.octets()[..3], [10, 20, 30]);
        assert!(
            ip.octets()[3] >= 2 && ip.octets()[3] <= 254,
            "{ip} outside the range or the gateway"
        );
        assert!(nic.mac.starts_with("90:b8:d0:"), "{}", nic.mac);
        assert_eq!(nic.netmask, "255.255.255.0");
        assert_eq!(nic.gateway, "10.20.30.1");
        assert_eq!(nic.network_uuid, net.uuid);
        assert!(ips.insert(nic.ip.clone()), "{} handed out twice", nic.ip);
        assert!(macs.insert(nic.mac.clone()), "{} handed out twice", nic.mac);
    }
    assert_eq!(ips.len(), 200);

    // The remaining 53, concurrently too, then nothing.
    let tasks: Vec<_> = (0..60)
        .map(|_| {
            let mut client = napi.client();
            let req = nic_on(&net.uuid, &new_uuid());
            tokio::spawn(async move { client.create_nic(req).await })
        })
        .collect();
    let mut full = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(nic) => assert!(ips.insert(nic.into_inner().ip), "an IP handed out twice"),
            Err(status) => {
                assert_eq!(
                    triton_common::status::error_name(&status),
                    Some("SubnetFull"),
                    "{status:?}"
                );
                assert!(status.message().contains("no more free IPs"), "{status:?}");
                full += 1;
            }
        }
    }
    assert_eq!(ips.len(), 253);
    assert_eq!(full, 7);
    assert_error(
        napi.client()
            .create_nic(nic_on(&net.uuid, &new_uuid()))
            .await,
        "SubnetFull",
        &["no more free IPs", &net.uuid],
    );

    // What Moray holds agrees: one IP record per NIC, none shared.
    let listed = napi
        .client()
        .list_ips(proto::ListIpsRequest {
            network_uuid: net.uuid.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ips;
    assert_eq!(listed.len(), 253);
    let nics = napi
        .client()
        .list_nics(proto::ListNicsRequest {
            network_uuid: Some(net.uuid.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .nics;
    assert_eq!(nics.len(), 253);
    let nic_ips: HashSet<_> = nics.iter().map(|n| n.ip.clone()).collect();
    assert_eq!(nic_ips, ips);

    // Releasing makes an address reusable: the freed one is the only one left.
    let victim = nics
        .iter()
        .find(|n| n.ip == "10.20.30.77")
        .expect("a NIC holds .77");
    napi.client()
        .delete_nic(proto::DeleteNicRequest {
            mac: victim.mac.replace(':', ""),
        })
        .await
        .expect("delete the NIC (MAC without colons)");
    let free = napi
        .client()
        .get_ip(proto::GetIpRequest {
            network_uuid: net.uuid.clone(),
            ip: "10.20.30.77".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(free.free);
    let again = napi
        .client()
        .create_nic(nic_on(&net.uuid, &new_uuid()))
        .await
        .expect("provision after a release")
        .into_inner();
    assert_eq!(again.ip, "10.20.30.77");
    assert_error(
        napi.client()
            .get_nic(proto::GetNicRequest {
                mac: victim.mac.clone(),
            })
            .await,
        "ResourceNotFound",
        &[&victim.mac],
    );
}

#[tokio::test]
async fn lowest_free_first_reservations_and_requested_ips() {
    let napi = TestNapi::start().await;
    let net = napi.network("small", "192.168.7", "external").await;
    let mut client = napi.client();

    let first = client
        .create_nic(nic_on(&net.uuid, &new_uuid()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.ip, "192.168.7.2", "lowest address after the gateway");

    // A reserved address is skipped by automatic allocation.
    let reserved = client
        .update_ip(proto::UpdateIpRequest {
            network_uuid: net.uuid.clone(),
            ip: "192.168.7.3".into(),
            reserved: Some(true),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reserved.reserved && !reserved.free);
    let second = client
        .create_nic(nic_on(&net.uuid, &new_uuid()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.ip, "192.168.7.4");

    // A requested address is taken as asked, once.
    let mut req = nic_on(&net.uuid, &new_uuid());
    req.ip = Some("192.168.7.100".into());
    let asked = client.create_nic(req.clone()).await.unwrap().into_inner();
    assert_eq!(asked.ip, "192.168.7.100");
    req.belongs_to_uuid = new_uuid();
    let status = assert_error(
        client.create_nic(req).await,
        "InvalidParameters",
        &["ip", "in use"],
    );
    assert_eq!(status.code(), tonic::Code::AlreadyExists);

    let ip = client
        .get_ip(proto::GetIpRequest {
            network_uuid: net.uuid.clone(),
            ip: "192.168.7.100".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ip.mac, asked.mac);
    assert_eq!(ip.belongs_to_uuid, asked.belongs_to_uuid);
    assert!(!ip.free);

    // A network with NICs cannot go; without them it can, and its IPs go with it.
    assert_error(
        client
            .delete_network(proto::DeleteNetworkRequest {
                uuid: net.uuid.clone(),
            })
            .await,
        "InUse",
        &[&net.uuid],
    );
    for nic in [first, second, asked] {
        client
            .delete_nic(proto::DeleteNicRequest { mac: nic.mac })
            .await
            .unwrap();
    }
    // The reserved address stays reserved after the NICs are gone.
    let still = client
        .get_ip(proto::GetIpRequest {
            network_uuid: net.uuid.clone(),
            ip: "192.168.7.3".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(still.reserved);
    client
        .delete_network(proto::DeleteNetworkRequest {
            uuid: net.uuid.clone(),
        })
        .await
        .unwrap();
    assert_error(
        client
            .get_network(proto::GetNetworkRequest {
                uuid: net.uuid.clone(),
            })
            .await,
        "ResourceNotFound",
        &[&net.uuid],
    );
}
