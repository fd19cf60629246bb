//! IP allocation against a real Moray: concurrent provisions never share an address,
//! a full network says so, and released addresses are handed out again.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::net::Ipv4Addr;

use common::{ADMIN, TestNapi, assert_error, new_uuid, nic_on};
use triton_proto::napi::v1 as proto;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_provisions_get_distinct_ips_until_the_network_is_full() {
    let (napi, net) = TestNapi::with_network("net24", "10.20.30", "external").await;
    // 10.20.30.0/24, range .1-.254, gateway .1: 253 addresses to hand out.

    let tasks = napi.spawn_nics(&net.uuid, 200);
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
    let tasks = napi.spawn_nics(&net.uuid, 60);
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
    let listed = napi.dc.ips_of(&net.uuid).await;
    assert_eq!(listed.len(), 253);
    let nics = napi.nics_on(&net.uuid).await;
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
    let free = napi.ip(&net.uuid, "10.20.30.77").await;
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
    let (napi, net) = TestNapi::with_network("small", "192.168.7", "external").await;
    let mut client = napi.client();

    let first = napi.new_nic(&net.uuid).await;
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
    let second = napi.new_nic(&net.uuid).await;
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

    let ip = napi.ip(&net.uuid, "192.168.7.100").await;
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
    let still = napi.ip(&net.uuid, "192.168.7.3").await;
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

/// An address asked for explicitly must be one a NIC may have: not the gateway, the
/// network or broadcast address, and inside the provision range (the operator's own
/// NICs may use the whole subnet). One already held is refused without saying by whom.
#[tokio::test]
async fn requested_ips_follow_the_networks_rules_and_never_name_the_holder() {
    let napi = TestNapi::start().await;
    let _ = napi.nic_tag("external").await;
    let net = napi
        .client()
        .create_network(proto::CreateNetworkRequest {
            name: "ranged".into(),
            subnet: "192.168.9.0/24".into(),
            provision_start_ip: "192.168.9.10".into(),
            provision_end_ip: "192.168.9.200".into(),
            gateway: Some("192.168.9.1".into()),
            nic_tag: "external".into(),
            resolvers: vec!["8.8.8.8".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut client = napi.client();
    let ask = |ip: &str| {
        let mut req = nic_on(&net.uuid, &new_uuid());
        req.ip = Some(ip.into());
        req
    };
    for (ip, rule) in [
        ("192.168.9.1", "is the gateway of 192.168.9.0/24"),
        ("192.168.9.0", "is the network address"),
        ("192.168.9.255", "is the broadcast address"),
        ("192.168.10.20", "is outside subnet"),
        ("192.168.9.201", "is outside the provision range"),
        ("192.168.9.9", "is outside the provision range"),
    ] {
        let status = assert_error(
            client.create_nic(ask(ip)).await,
            "InvalidParameters",
            &["ip: ", ip, rule],
        );
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{ip}");
    }
    // None of those left an IP record behind.
    let used = napi.dc.ips_of(&net.uuid).await;
    assert!(used.iter().all(|i| i.free), "{used:?}");

    // The operator may put its own NIC outside the range, never on the gateway.
    let mut admin = ask("192.168.9.250");
    admin.owner_uuid = ADMIN.into();
    let outside = client.create_nic(admin.clone()).await.unwrap().into_inner();
    assert_eq!(outside.ip, "192.168.9.250");
    admin.ip = Some("192.168.9.1".into());
    admin.belongs_to_uuid = new_uuid();
    assert_error(
        client.create_nic(admin).await,
        "InvalidParameters",
        &["ip: ", "gateway"],
    );

    // Held by one tenant's VM: another owner asking for it learns only that it is taken.
    let mut first = ask("192.168.9.50");
    first.owner_uuid = new_uuid();
    let held = client.create_nic(first.clone()).await.unwrap().into_inner();
    let mut second = ask("192.168.9.50");
    second.owner_uuid = new_uuid();
    let status = assert_error(
        client.create_nic(second).await,
        "InvalidParameters",
        &["ip: ", "ip 192.168.9.50 is already in use"],
    );
    let text = format!("{status:?}");
    for secret in [&first.belongs_to_uuid, &first.owner_uuid, &held.mac] {
        assert!(!text.contains(secret.as_str()), "{secret} in {text}");
    }
}
