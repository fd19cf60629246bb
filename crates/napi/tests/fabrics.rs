//! Fabrics as Portolan and tenants see them: UpdateFabricNetwork, and the rows NAPI
//! writes to the `portolan_*` buckets with each fabric or underlay NIC (read back from
//! the real Moray).

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestNapi, assert_error, new_uuid};
use triton_proto::napi::v1 as proto;

/// A VLAN `vlan_id` on `owner`'s fabric and a /24 network `192.168.<third>.0` on it.
async fn fabric_network(napi: &TestNapi, owner: &str, vlan_id: u32, third: u8) -> proto::Network {
    let mut c = napi.client();
    let _ = c
        .create_fabric_vlan(proto::CreateFabricVlanRequest {
            owner_uuid: owner.into(),
            vlan_id,
            name: format!("vlan{vlan_id}"),
            description: String::new(),
        })
        .await;
    c.create_fabric_network(proto::CreateFabricNetworkRequest {
        owner_uuid: owner.into(),
        vlan_id,
        name: format!("net{third}"),
        subnet: format!("192.168.{third}.0/24"),
        provision_start_ip: format!("192.168.{third}.5"),
        provision_end_ip: format!("192.168.{third}.250"),
        gateway: Some(format!("192.168.{third}.1")),
        ..Default::default()
    })
    .await
    .expect("create fabric network")
    .into_inner()
}

#[tokio::test]
async fn update_fabric_network_changes_triton_fields_for_its_owner_only() {
    let napi = TestNapi::start().await;
    let mut c = napi.client();
    let (alice, bob) = (new_uuid(), new_uuid());
    let web = fabric_network(&napi, &alice, 10, 10).await;
    fabric_network(&napi, &alice, 10, 11).await;
    fabric_network(&napi, &bob, 10, 12).await;

    let update = |owner: &str, uuid: &str| proto::UpdateFabricNetworkRequest {
        owner_uuid: owner.into(),
        vlan_id: 10,
        uuid: uuid.into(),
        ..Default::default()
    };
    let changed = c
        .update_fabric_network(proto::UpdateFabricNetworkRequest {
            name: Some("frontend".into()),
            description: Some("the web tier".into()),
            resolvers: Some(proto::StringList {
                values: vec!["192.168.10.2".into()],
            }),
            routes: Some(proto::Routes {
                routes: [("10.0.0.0/8".to_string(), "192.168.10.3".to_string())].into(),
            }),
            provision_start_ip: Some("192.168.10.20".into()),
            provision_end_ip: Some("192.168.10.30".into()),
            ..update(&alice, &web.uuid)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.name, "frontend");
    assert_eq!(changed.description, "the web tier");
    assert_eq!(changed.resolvers, vec!["192.168.10.2".to_string()]);
    assert_eq!(changed.routes.get("10.0.0.0/8").unwrap(), "192.168.10.3");
    assert_eq!(
        (
            changed.provision_start_ip.as_str(),
            changed.provision_end_ip.as_str()
        ),
        ("192.168.10.20", "192.168.10.30")
    );
    // What was not named stays.
    assert_eq!(changed.subnet, web.subnet);
    assert_eq!(changed.gateway, web.gateway);
    assert_eq!(changed.vnet_id, web.vnet_id);
    let got = c
        .get_fabric_network(proto::GetFabricNetworkRequest {
            owner_uuid: alice.clone(),
            vlan_id: 10,
            uuid: web.uuid.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, changed);

    // A NIC now gets an address of the new range.
    let nic = c
        .create_nic(proto::CreateNicRequest {
            owner_uuid: alice.clone(),
            belongs_to_uuid: new_uuid(),
            belongs_to_type: "zone".into(),
            network_uuid: Some(web.uuid.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(nic.ip, "192.168.10.20");

    // Another account's network answers as one that does not exist, and is unchanged.
    assert_error(
        c.update_fabric_network(proto::UpdateFabricNetworkRequest {
            name: Some("mine".into()),
            ..update(&bob, &web.uuid)
        })
        .await,
        "ResourceNotFound",
        &["fabric network"],
    );
    // So does one on another VLAN of the same owner.
    assert_error(
        c.update_fabric_network(proto::UpdateFabricNetworkRequest {
            vlan_id: 11,
            name: Some("x".into()),
            ..update(&alice, &web.uuid)
        })
        .await,
        "ResourceNotFound",
        &[],
    );
    // Bad values name their fields; a name the owner already uses is refused.
    assert_error(
        c.update_fabric_network(proto::UpdateFabricNetworkRequest {
            resolvers: Some(proto::StringList {
                values: vec!["not-an-ip".into()],
            }),
            provision_start_ip: Some("10.0.0.1".into()),
            ..update(&alice, &web.uuid)
        })
        .await,
        "InvalidParameters",
        &["resolvers", "provision_start_ip"],
    );
    assert_error(
        c.update_fabric_network(proto::UpdateFabricNetworkRequest {
            provision_start_ip: Some("192.168.10.40".into()),
            ..update(&alice, &web.uuid)
        })
        .await,
        "InvalidParameters",
        &["provision_start_ip", "before provision_end_ip"],
    );
    assert_error(
        c.update_fabric_network(proto::UpdateFabricNetworkRequest {
            name: Some("net11".into()),
            ..update(&alice, &web.uuid)
        })
        .await,
        "InvalidParameters",
        &["name", "already exists"],
    );
    let after = c
        .get_fabric_network(proto::GetFabricNetworkRequest {
            owner_uuid: alice.clone(),
            vlan_id: 10,
            uuid: web.uuid.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after, changed);
}
