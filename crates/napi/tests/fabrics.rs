//! Fabrics as Portolan and tenants see them: UpdateFabricNetwork, the rows NAPI writes
//! to the `portolan_*` buckets with each fabric or underlay NIC (read back from the real
//! Moray), and every UFDS account's default fabric.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestNapi, assert_error, new_uuid};
use dc_testkit::assert_refused;
use moray_client::filter::Filter;
use moray_client::{EtagCondition, FindOptions};
use portolan_client::buckets::{self, CnNetEvent, LogRecord, UnderlayMapping, VnetMacIp};
use std::time::Duration;

use dc_testkit::{Dc, Options, Service, eventually, keep_no_change_log};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use triton_proto::napi::v1 as proto;
use triton_proto::napi::v1::napi_client::NapiClient;
use triton_proto::ufds::v1 as ufds_pb;
use triton_proto::ufds::v1::ufds_client::UfdsClient;

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
    let get_web = proto::GetFabricNetworkRequest {
        owner_uuid: alice.clone(),
        vlan_id: 10,
        uuid: web.uuid.clone(),
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
        .get_fabric_network(get_web.clone())
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

    // Refused, leaving the network unchanged: another account's network answers as one
    // that does not exist, and so does one on another VLAN of the same owner; bad values
    // name their fields; a name the owner already uses is refused.
    let refused = [
        (
            "another account's network",
            proto::UpdateFabricNetworkRequest {
                name: Some("mine".into()),
                ..update(&bob, &web.uuid)
            },
            "ResourceNotFound",
            &["fabric network"][..],
        ),
        (
            "the network on another VLAN",
            proto::UpdateFabricNetworkRequest {
                vlan_id: 11,
                name: Some("x".into()),
                ..update(&alice, &web.uuid)
            },
            "ResourceNotFound",
            &[],
        ),
        (
            "bad resolvers and a start outside the subnet",
            proto::UpdateFabricNetworkRequest {
                resolvers: Some(proto::StringList {
                    values: vec!["not-an-ip".into()],
                }),
                provision_start_ip: Some("10.0.0.1".into()),
                ..update(&alice, &web.uuid)
            },
            "InvalidParameters",
            &["resolvers", "provision_start_ip"],
        ),
        (
            "a start after the end",
            proto::UpdateFabricNetworkRequest {
                provision_start_ip: Some("192.168.10.40".into()),
                ..update(&alice, &web.uuid)
            },
            "InvalidParameters",
            &["provision_start_ip", "before provision_end_ip"],
        ),
        (
            "a name the owner uses",
            proto::UpdateFabricNetworkRequest {
                name: Some("net11".into()),
                ..update(&alice, &web.uuid)
            },
            "InvalidParameters",
            &["name", "already exists"],
        ),
    ];
    for (case, request, name, fragments) in refused {
        assert_refused(
            case,
            c.update_fabric_network(request).await,
            name,
            fragments,
        );
    }
    let after = c
        .get_fabric_network(get_web.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after, changed);
}

/// Portolan's view: the `portolan_*` rows read straight from Moray, as Portolan reads
/// them.
struct Rows(moray_client::MorayClient);

impl Rows {
    async fn connect(napi: &TestNapi) -> Rows {
        Rows(
            moray_client::MorayClient::connect(&napi.dc.moray_url())
                .await
                .unwrap(),
        )
    }

    /// The overlay row of `ip` on `vnet_id`.
    async fn overlay(&self, ip: &str, vnet_id: u32) -> Option<VnetMacIp> {
        let key = buckets::vnet_mac_ip_key(ip.parse().unwrap(), vnet_id);
        let o = self
            .0
            .get_object(buckets::VNET_MAC_IP, &key)
            .await
            .unwrap()?;
        Some(serde_json::from_value(o.value).unwrap())
    }

    async fn underlay(&self, cn: &str) -> Option<UnderlayMapping> {
        let o = self
            .0
            .get_object(buckets::UNDERLAY_MAPPINGS, cn)
            .await
            .unwrap()?;
        Some(serde_json::from_value(o.value).unwrap())
    }

    /// Takes `cn`'s log entries, as a node draining its log (LOG, then LOG_RM) would.
    async fn drain(&self, cn: &str) -> Vec<(u32, LogRecord)> {
        let found = self
            .0
            .find_objects(
                buckets::CN_NET_EVENTS,
                &Filter::eq("cn_uuid", cn).to_string(),
                &FindOptions {
                    no_limit: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let mut out = Vec::new();
        for o in found {
            let e: CnNetEvent = serde_json::from_value(o.value).unwrap();
            assert_eq!(e.cn_uuid.to_string(), cn);
            assert_eq!(e.version, buckets::RECORD_VERSION);
            out.push((e.vnet_id, e.record));
            self.0
                .delete_object(buckets::CN_NET_EVENTS, &o.key, EtagCondition::Any)
                .await
                .unwrap();
        }
        out
    }
}

fn mac_number(mac: &str) -> u64 {
    u64::from_str_radix(&mac.replace(':', ""), 16).unwrap()
}

fn vl3(nic: &proto::Nic, vlan: u16) -> (u32, LogRecord) {
    let vnet_id = nic.vnet_id.unwrap();
    let ip = buckets::ip_text(nic.ip.parse().unwrap());
    let mac = mac_number(&nic.mac);
    (
        vnet_id,
        LogRecord::Vl3 {
            ip,
            mac,
            vlan,
            vnet_id,
        },
    )
}

fn vl2(nic: &proto::Nic) -> (u32, LogRecord) {
    let vnet_id = nic.vnet_id.unwrap();
    (
        vnet_id,
        LogRecord::Vl2 {
            mac: mac_number(&nic.mac),
            vnet_id,
        },
    )
}

fn zone_nic(owner: &str, network: &str, cn: Option<&str>) -> proto::CreateNicRequest {
    proto::CreateNicRequest {
        owner_uuid: owner.into(),
        belongs_to_uuid: new_uuid(),
        belongs_to_type: "zone".into(),
        network_uuid: Some(network.into()),
        cn_uuid: cn.map(Into::into),
        ..Default::default()
    }
}

#[tokio::test]
async fn fabric_nics_keep_portolan_rows_and_other_nodes_logs_with_them() {
    let napi = TestNapi::start().await;
    let rows = Rows::connect(&napi).await;
    let mut c = napi.client();
    let (alice, bob) = (new_uuid(), new_uuid());
    let (cn1, cn2, cn3) = (new_uuid(), new_uuid(), new_uuid());
    let net = fabric_network(&napi, &alice, 10, 10).await;
    let vnet = net.vnet_id.unwrap();
    let create = |req| {
        let mut c = napi.client();
        async move { c.create_nic(req).await.unwrap().into_inner() }
    };
    let set_cn = |mac: &str, cn: &str| {
        let mut c = napi.client();
        let req = proto::UpdateNicRequest {
            mac: mac.into(),
            cn_uuid: Some(cn.into()),
            ..Default::default()
        };
        async move { c.update_nic(req).await.unwrap().into_inner() }
    };

    // The first NIC on the vnet: its row, no one to tell.
    let a = create(zone_nic(&alice, &net.uuid, Some(&cn1))).await;
    let row = rows.overlay(&a.ip, vnet).await.expect("a's row");
    assert_eq!(
        row,
        VnetMacIp {
            mac: mac_number(&a.mac),
            ip: buckets::ip_text(a.ip.parse().unwrap()),
            cn_uuid: cn1.parse().unwrap(),
            vnet_id: vnet,
            vlan_id: 10,
            version: buckets::RECORD_VERSION,
            deleted: false,
        }
    );
    assert_eq!(rows.drain(&cn1).await, vec![]);

    // A second on another node: cn1 is told of its address (VL3); cn2 of nothing.
    let b = create(zone_nic(&alice, &net.uuid, Some(&cn2))).await;
    assert_eq!(
        rows.overlay(&b.ip, vnet).await.unwrap().cn_uuid.to_string(),
        cn2
    );
    assert_eq!(rows.drain(&cn1).await, vec![vl3(&b, 10)]);
    assert_eq!(rows.drain(&cn2).await, vec![]);

    // Not placed yet: no row until it gets a node, then cn1 and cn2 are told.
    let d = create(zone_nic(&alice, &net.uuid, None)).await;
    assert_eq!(rows.overlay(&d.ip, vnet).await, None);
    assert_eq!(rows.drain(&cn1).await, vec![]);
    set_cn(&d.mac, &cn3).await;
    assert_eq!(
        rows.overlay(&d.ip, vnet).await.unwrap().cn_uuid.to_string(),
        cn3
    );
    assert_eq!(rows.drain(&cn1).await, vec![vl3(&d, 10)]);
    assert_eq!(rows.drain(&cn2).await, vec![vl3(&d, 10)]);
    assert_eq!(rows.drain(&cn3).await, vec![]);

    // b moves from cn2 to cn3: its row follows; cn1 forgets where b's MAC was (VL2);
    // cn3 (where it is now) and cn2 (nothing else of the vnet there) hear nothing.
    set_cn(&b.mac, &cn3).await;
    let moved = rows.overlay(&b.ip, vnet).await.unwrap();
    assert_eq!(moved.cn_uuid.to_string(), cn3);
    assert!(!moved.deleted);
    assert_eq!(rows.drain(&cn1).await, vec![vl2(&b)]);
    assert_eq!(rows.drain(&cn2).await, vec![]);
    assert_eq!(rows.drain(&cn3).await, vec![]);
    // An update that does not move it writes nothing for Portolan.
    c.update_nic(proto::UpdateNicRequest {
        mac: b.mac.clone(),
        state: Some("stopped".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(rows.drain(&cn1).await, vec![]);

    // Other accounts' NICs, and NICs on plain networks, tell alice's nodes nothing,
    // even on the same VLAN id and subnet.
    let theirs = fabric_network(&napi, &bob, 10, 10).await;
    assert_ne!(theirs.vnet_id, Some(vnet));
    let e = create(zone_nic(&bob, &theirs.uuid, Some(&cn1))).await;
    let f = create(zone_nic(&bob, &theirs.uuid, Some(&cn2))).await;
    assert_eq!(e.ip, a.ip);
    assert_eq!(
        rows.overlay(&e.ip, vnet).await.unwrap().mac,
        mac_number(&a.mac)
    );
    let bob_row = rows.overlay(&e.ip, theirs.vnet_id.unwrap()).await.unwrap();
    assert_eq!(bob_row.mac, mac_number(&e.mac));
    assert_eq!(rows.drain(&cn1).await, vec![vl3(&f, 10)]);
    assert_eq!(rows.drain(&cn3).await, vec![]);
    let plain = napi.network("plain", "10.50.0", "external").await;
    create(zone_nic(&alice, &plain.uuid, Some(&cn1))).await;
    assert_eq!(rows.drain(&cn2).await, vec![]);
    assert_eq!(rows.drain(&cn3).await, vec![]);

    // a goes: its row is marked deleted, and the nodes still on the vnet forget its MAC.
    c.delete_nic(proto::DeleteNicRequest { mac: a.mac.clone() })
        .await
        .unwrap();
    let gone = rows.overlay(&a.ip, vnet).await.unwrap();
    assert!(gone.deleted);
    assert_eq!(gone.mac, mac_number(&a.mac));
    assert_eq!(rows.drain(&cn3).await, vec![vl2(&a)]);
    assert_eq!(rows.drain(&cn1).await, vec![]);
    assert_eq!(rows.drain(&cn2).await, vec![]);

    // A new NIC that takes a's address is the row's again.
    let mut again = zone_nic(&alice, &net.uuid, Some(&cn2));
    again.ip = Some(a.ip.clone());
    let g = create(again).await;
    let row = rows.overlay(&a.ip, vnet).await.unwrap();
    assert_eq!((row.mac, row.deleted), (mac_number(&g.mac), false));
    assert_eq!(row.cn_uuid.to_string(), cn2);
    assert_eq!(rows.drain(&cn3).await, vec![vl3(&g, 10)]);

    // b moves again, from cn3 to cn2: cn3 still hosts d, so it forgets where b is.
    set_cn(&b.mac, &cn2).await;
    assert_eq!(
        rows.overlay(&b.ip, vnet).await.unwrap().cn_uuid.to_string(),
        cn2
    );
    assert_eq!(rows.drain(&cn3).await, vec![vl2(&b)]);
    assert_eq!(rows.drain(&cn2).await, vec![]);
    assert_eq!(rows.drain(&cn1).await, vec![]);

    // Taken off its node (cn3): the row is deleted and the other nodes forget it.
    set_cn(&d.mac, "").await;
    assert!(rows.overlay(&d.ip, vnet).await.unwrap().deleted);
    assert_eq!(rows.drain(&cn2).await, vec![vl2(&d)]);
    assert_eq!(rows.drain(&cn3).await, vec![]);
}

#[tokio::test]
async fn a_servers_underlay_nic_is_its_underlay_mapping() {
    let napi = TestNapi::start().await;
    let rows = Rows::connect(&napi).await;
    let mut c = napi.client();
    // What an operator creates: the nic tag and a network on it (docs/napi.md).
    let underlay = napi
        .network("sdc_underlay", "10.77.0", "sdc_underlay")
        .await;
    let (cn1, cn2) = (new_uuid(), new_uuid());
    let server_nic = |cn: &str| proto::CreateNicRequest {
        owner_uuid: common::ADMIN.into(),
        belongs_to_uuid: cn.into(),
        belongs_to_type: "server".into(),
        network_uuid: Some(underlay.uuid.clone()),
        underlay: true,
        ..Default::default()
    };
    let n1 = c.create_nic(server_nic(&cn1)).await.unwrap().into_inner();
    let n2 = c.create_nic(server_nic(&cn2)).await.unwrap().into_inner();
    assert_eq!(n1.nic_tag, "sdc_underlay");
    assert_eq!(
        rows.underlay(&cn1).await,
        Some(UnderlayMapping {
            cn_uuid: cn1.parse().unwrap(),
            ip: format!("::ffff:{}", n1.ip),
            port: 4789,
        })
    );
    assert_eq!(
        rows.underlay(&cn2).await.unwrap().ip,
        format!("::ffff:{}", n2.ip)
    );
    // A zone's NIC on the underlay network is no node's underlay address.
    let vm = new_uuid();
    c.create_nic(proto::CreateNicRequest {
        belongs_to_uuid: vm.clone(),
        belongs_to_type: "zone".into(),
        ..server_nic(&cn1)
    })
    .await
    .unwrap();
    assert_eq!(rows.underlay(&vm).await, None);
    assert_eq!(
        rows.underlay(&cn1).await.unwrap().ip,
        format!("::ffff:{}", n1.ip)
    );

    c.delete_nic(proto::DeleteNicRequest { mac: n1.mac })
        .await
        .unwrap();
    assert_eq!(rows.underlay(&cn1).await, None);
    assert!(rows.underlay(&cn2).await.is_some());
}

/// A NIC create racing the delete of the NIC holding the same fabric IP: whichever
/// order Moray takes them in, the row ends as NAPI's NICs say.
#[tokio::test]
async fn a_create_racing_a_delete_of_the_same_ip_leaves_the_row_as_napi_has_it() {
    let napi = TestNapi::start().await;
    let rows = Rows::connect(&napi).await;
    let owner = new_uuid();
    let net = fabric_network(&napi, &owner, 2, 20).await;
    let vnet = net.vnet_id.unwrap();
    let ip = "192.168.20.77".to_string();
    let (cn1, cn2) = (new_uuid(), new_uuid());
    let on = |cn: &str| {
        let mut r = zone_nic(&owner, &net.uuid, Some(cn));
        r.ip = Some(ip.clone());
        r
    };
    let mut holder = napi
        .client()
        .create_nic(on(&cn1))
        .await
        .unwrap()
        .into_inner();
    for round in 0..20 {
        let next_cn = if round % 2 == 0 { &cn2 } else { &cn1 };
        let mut del = napi.client();
        let old = holder.mac.clone();
        let deleting = tokio::spawn(async move {
            del.delete_nic(proto::DeleteNicRequest { mac: old })
                .await
                .unwrap();
        });
        // Keep trying until the address is free (the delete committed).
        let create = on(next_cn);
        let mut c = napi.client();
        let created = loop {
            match c.create_nic(create.clone()).await {
                Ok(n) => break n.into_inner(),
                Err(s) if s.message().contains("already in use") => tokio::task::yield_now().await,
                Err(s) => panic!("round {round}: {s:?}"),
            }
        };
        deleting.await.unwrap();
        let row = rows.overlay(&ip, vnet).await.unwrap();
        assert_eq!(
            (row.mac, row.cn_uuid.to_string(), row.deleted),
            (mac_number(&created.mac), next_cn.clone(), false),
            "round {round}"
        );
        holder = created;
    }
    // NAPI and the row agree at the end too.
    let nics = napi.nics_on(&net.uuid).await;
    assert_eq!(nics.len(), 1);
    assert_eq!(nics[0].mac, holder.mac);
}

/// NAPI with fabrics on, following the test datacenter's UFDS.
async fn start_napi_following(dc: &Dc, shutdown: CancellationToken) -> napi::Running {
    let mut config = napi::Config::default();
    config.service.listen = "127.0.0.1:0".into();
    config.service.moray_url = dc.moray_url();
    config.fabrics.enabled = true;
    config.fabrics.ufds_url = format!("http://{}", dc.addr(Service::Ufds));
    config.fabrics.resolvers = vec!["10.99.99.11".into()];
    config.fabrics.follow_interval_ms = 100;
    napi::start(config, shutdown).await.expect("NAPI starts")
}

async fn account(ufds: &mut UfdsClient<Channel>, login: &str) -> ufds_pb::Account {
    ufds.create_account(ufds_pb::CreateAccountRequest {
        login: login.into(),
        email: format!("{login}@example.com"),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

/// The account's default network, once NAPI set it.
async fn default_network_of(ufds: &UfdsClient<Channel>, uuid: &str) -> String {
    let found = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    eventually(
        "the account's default_network set",
        Duration::from_secs(30),
        || {
            let (ufds, uuid, found) = (ufds.clone(), uuid.to_string(), found.clone());
            async move {
                let a = get(&ufds, &uuid).await;
                let set = !a.default_network.is_empty();
                *found.lock().unwrap() = a.default_network;
                set
            }
        },
    )
    .await;
    found.lock().unwrap().clone()
}

#[tokio::test]
async fn every_account_gets_its_default_fabric_and_default_network() {
    let dc = Dc::start(Options::only(Service::Ufds)).await;
    let mut ufds = dc.ufds();
    // Accounts from before NAPI started: one with no default network, one whose
    // default network is already chosen.
    let early = account(&mut ufds, "early").await;
    let chosen = account(&mut ufds, "chosen").await;
    let elsewhere = new_uuid();
    ufds.update_account(ufds_pb::UpdateAccountRequest {
        account: chosen.uuid.clone(),
        default_network: Some(elsewhere.clone()),
        ..Default::default()
    })
    .await
    .unwrap();

    let shutdown = CancellationToken::new();
    let running = start_napi_following(&dc, shutdown.clone()).await;
    let mut napi = NapiClient::new(
        Endpoint::from_shared(format!("http://{}", running.addr))
            .unwrap()
            .connect_lazy(),
    );
    let net_uuid = default_network_of(&ufds, &early.uuid).await;
    let vlan = napi
        .get_fabric_vlan(proto::GetFabricVlanRequest {
            owner_uuid: early.uuid.clone(),
            vlan_id: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(vlan.name, "My-Fabric-VLAN");
    let net = napi
        .get_fabric_network(proto::GetFabricNetworkRequest {
            owner_uuid: early.uuid.clone(),
            vlan_id: 2,
            uuid: net_uuid.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(net.name, "My-Fabric-Network");
    assert_eq!(net.subnet, "192.168.128.0/22");
    assert_eq!(net.gateway, "192.168.128.1");
    assert_eq!(
        (
            net.provision_start_ip.as_str(),
            net.provision_end_ip.as_str()
        ),
        ("192.168.128.5", "192.168.131.250")
    );
    assert_eq!(net.resolvers, vec!["10.99.99.11".to_string()]);
    assert!(net.fabric && net.internet_nat);
    assert_eq!(net.owner_uuids, vec![early.uuid.clone()]);

    // An account made while NAPI runs gets its own, on its own vnet.
    let late = account(&mut ufds, "late").await;
    let late_net = default_network_of(&ufds, &late.uuid).await;
    assert_ne!(late_net, net_uuid);
    let late_vnet = napi
        .get_fabric(proto::GetFabricRequest {
            owner_uuid: late.uuid.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .vnet_id;
    assert_ne!(Some(late_vnet), net.vnet_id);

    // The account that had chosen its default network keeps it, and gets no fabric.
    assert_eq!(get(&ufds, &chosen.uuid).await.default_network, elsewhere);
    assert_error(
        napi.get_fabric(proto::GetFabricRequest {
            owner_uuid: chosen.uuid.clone(),
        })
        .await,
        "ResourceNotFound",
        &[],
    );

    // The follower's state is in the health service.
    let mut health = HealthClient::new(
        Endpoint::from_shared(format!("http://{}", running.addr))
            .unwrap()
            .connect_lazy(),
    );
    let status = health
        .check(HealthCheckRequest {
            service: "task:default_fabrics".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    // A NAPI started again (the snapshot again) makes nothing twice. The tenant clears
    // the default network first: it is set again to the same network.
    shutdown.cancel();
    running.task.await.unwrap().unwrap();
    ufds.update_account(ufds_pb::UpdateAccountRequest {
        account: early.uuid.clone(),
        default_network: Some(String::new()),
        ..Default::default()
    })
    .await
    .unwrap();
    let again = start_napi_following(&dc, CancellationToken::new()).await;
    assert_eq!(default_network_of(&ufds, &early.uuid).await, net_uuid);
    let mut napi = NapiClient::new(
        Endpoint::from_shared(format!("http://{}", again.addr))
            .unwrap()
            .connect_lazy(),
    );
    let vlans = napi
        .list_fabric_vlans(proto::ListFabricVlansRequest {
            owner_uuid: early.uuid.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .vlans;
    assert_eq!(vlans.len(), 1);
    let nets = napi
        .list_fabric_networks(proto::ListFabricNetworksRequest {
            owner_uuid: early.uuid.clone(),
            vlan_id: 2,
        })
        .await
        .unwrap()
        .into_inner()
        .networks;
    assert_eq!(nets.len(), 1);
}

#[tokio::test]
async fn fabrics_on_without_a_ufds_url_is_a_config_error() {
    let dc = Dc::start(Options::default()).await;
    let mut config = napi::Config::default();
    config.service.listen = "127.0.0.1:0".into();
    config.service.moray_url = dc.moray_url();
    config.fabrics.enabled = true;
    let Err(e) = napi::start(config, CancellationToken::new()).await else {
        panic!("NAPI started without fabrics.ufds_url");
    };
    assert!(e.to_string().contains("fabrics.ufds_url"), "{e}");
}

async fn get(ufds: &UfdsClient<Channel>, uuid: &str) -> ufds_pb::Account {
    ufds.clone()
        .get_account(ufds_pb::GetAccountRequest {
            account: uuid.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// The default-fabrics follower of `dc`'s NAPI, following its UFDS, for a test to run
/// its passes by hand.
fn follower_by_hand(dc: &Dc) -> napi::default_fabrics::Follower {
    let config = napi::config::FabricsConfig {
        enabled: true,
        ufds_url: format!("http://{}", dc.addr(Service::Ufds)),
        ..Default::default()
    };
    let app = dc.napi_app.clone().unwrap();
    napi::default_fabrics::Follower::new(app, &config, CancellationToken::new()).unwrap()
}

/// The follower's passes by hand, on a Moray that keeps no change log: a position older
/// than the log is answered with resync, and the next pass reads the snapshot again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_resync_the_follower_reads_every_account_again() {
    let dc = Dc::start(Options {
        ufds: true,
        napi: true,
        configure_moray: Box::new(keep_no_change_log),
        ..Default::default()
    })
    .await;
    let mut follower = follower_by_hand(&dc);
    let mut ufds = dc.ufds();
    // The first pass: the snapshot (one account), then the feed is quiet.
    let zed = account(&mut ufds, "zed").await;
    follower.pass().await.unwrap();
    assert_ne!(get(&ufds, &zed.uuid).await.default_network, "");

    let ann = account(&mut ufds, "ann").await;
    let ben = account(&mut ufds, "ben").await;
    let mut feed = dc_testkit::feed::Feed::from(
        ufds.watch_accounts(ufds_pb::WatchAccountsRequest::default())
            .await
            .unwrap()
            .into_inner(),
    );
    let (_, at) = feed.snapshot().await;
    dc.change_log_trimmed_through(at).await;

    // The follower's position is gone from the log: this pass only learns so.
    follower.pass().await.unwrap();
    assert_eq!(get(&ufds, &ann.uuid).await.default_network, "");
    // The next reads the snapshot: both accounts get their default fabric.
    follower.pass().await.unwrap();
    for a in [&ann, &ben] {
        let network = get(&ufds, &a.uuid).await.default_network;
        let net = dc
            .napi()
            .get_network(proto::GetNetworkRequest { uuid: network })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(net.name, "My-Fabric-Network");
        assert_eq!(net.owner_uuids, vec![a.uuid.clone()]);
    }
}

/// An account whose default fabric cannot be made fails the pass (so the health shows
/// it), naming the account, and is tried again at every pass until it works.
#[tokio::test]
async fn an_account_that_fails_is_named_and_tried_again() {
    let dc = Dc::start(Options {
        ufds: true,
        napi: true,
        ..Default::default()
    })
    .await;
    let mut follower = follower_by_hand(&dc);
    let mut ufds = dc.ufds();
    let mut napi = dc.napi();
    // The tenant already has a network named My-Fabric-Network, on VLAN 3: the name is
    // taken on the account's fabric, so none can be made on VLAN 2.
    let dan = account(&mut ufds, "dan").await;
    napi.create_fabric_vlan(proto::CreateFabricVlanRequest {
        owner_uuid: dan.uuid.clone(),
        vlan_id: 3,
        name: "three".into(),
        description: String::new(),
    })
    .await
    .unwrap();
    let theirs = napi
        .create_fabric_network(proto::CreateFabricNetworkRequest {
            owner_uuid: dan.uuid.clone(),
            vlan_id: 3,
            name: "My-Fabric-Network".into(),
            subnet: "10.3.0.0/24".into(),
            provision_start_ip: "10.3.0.5".into(),
            provision_end_ip: "10.3.0.250".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let eve = account(&mut ufds, "eve").await;

    let e = follower.pass().await.unwrap_err().to_string();
    assert!(e.contains(&dan.uuid) && e.contains("name"), "{e}");
    // Others are not held up.
    assert_ne!(get(&ufds, &eve.uuid).await.default_network, "");
    assert_eq!(get(&ufds, &dan.uuid).await.default_network, "");
    // Still failing, with no change to the account.
    let e = follower.pass().await.unwrap_err().to_string();
    assert!(e.contains(&dan.uuid), "{e}");

    // The tenant renames theirs: the next pass makes the default fabric.
    napi.update_fabric_network(proto::UpdateFabricNetworkRequest {
        owner_uuid: dan.uuid.clone(),
        vlan_id: 3,
        uuid: theirs.uuid.clone(),
        name: Some("mine".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    follower.pass().await.unwrap();
    let network = get(&ufds, &dan.uuid).await.default_network;
    assert_ne!(network, "");
    assert_ne!(network, theirs.uuid);
}
