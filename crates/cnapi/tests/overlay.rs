//! CNAPI's side of fabrics: a node's underlay address (sysinfo) registered in a real NAPI
//! as the node's underlay NIC, and fabric NICs (nic tag `sdc_overlay`) placed only on
//! nodes that report that tag.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use cnapi::service::Settings;
use cnapi::store::MemoryStore;
use cnapi::underlay::UnderlaySettings;
use common::{alloc, register_sysinfo, start_auto_setup, start_cnapi, sysinfo};
use dc_testkit::{ADMIN_UUID, Dc, Options, Service, eventually};
use moray_client::MorayClient;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use triton_proto::cnapi::v1 as pb;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;
use triton_proto::napi::v1 as napi;
use triton_proto::napi::v1::napi_client::NapiClient;
use uuid::Uuid;

/// Registers server `cn<n>` as a linux node reports itself: its admin NIC, and, when
/// given, its underlay device with `underlay` and the tags the overlay adds (the
/// underlay bridge's member port carries the tag without an address).
async fn register(c: &mut CnapiClient<Channel>, uuid: Uuid, n: u32, underlay: Option<&str>) {
    let mut virtual_nics = serde_json::Map::new();
    if let Some(ip) = underlay {
        virtual_nics.insert(
            "coalcn-ul".into(),
            json!({"NIC Names": ["sdc_underlay"], "ip4addr": ""}),
        );
        virtual_nics.insert(
            "underlay0".into(),
            json!({"NIC Names": ["sdc_overlay", "sdc_underlay"], "ip4addr": ip}),
        );
    }
    let mut sysinfo = sysinfo(uuid, n);
    sysinfo["Network Interfaces"]["eth0"]["ip4addr"] = json!(format!("10.99.99.{}", 30 + n));
    sysinfo["Virtual Network Interfaces"] = virtual_nics.into();
    register_sysinfo(c, &sysinfo).await;
    // Its memory and disk, as its heartbeats give them.
    c.heartbeat(pb::HeartbeatRequest {
        server_uuid: uuid.to_string(),
        meminfo: Some(pb::MemoryInfo {
            total_bytes: 16384 << 20,
            ..Default::default()
        }),
        diskinfo: Some(pb::DiskInfo {
            pool_size_bytes: 1 << 40,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("heartbeat");
}

/// Every underlay NIC of servers in NAPI: (server, ip).
async fn underlay_nics(napi: &mut NapiClient<Channel>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = napi
        .list_nics(napi::ListNicsRequest {
            belongs_to_type: Some("server".into()),
            nic_tag: Some("sdc_underlay".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .nics
        .into_iter()
        .map(|n| (n.belongs_to_uuid, n.ip))
        .collect();
    out.sort();
    out
}

/// Waits (30 s at most) until NAPI's underlay NICs of servers are `pairs` (server, ip).
async fn underlay_nics_become(napi: &NapiClient<Channel>, what: &str, pairs: &[(Uuid, &str)]) {
    let mut want: Vec<(String, String)> = pairs
        .iter()
        .map(|(u, ip)| (u.to_string(), ip.to_string()))
        .collect();
    want.sort();
    eventually(what, Duration::from_secs(30), || {
        let mut napi = napi.clone();
        let want = want.clone();
        async move { underlay_nics(&mut napi).await == want }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_underlay_address_becomes_its_underlay_nic_in_napi() {
    let dc = Dc::start(Options::only(Service::Napi)).await;
    let mut napi = dc.napi();
    // What CoaL seeds: the nic tag now, the network only after the nodes registered.
    napi.create_nic_tag(napi::CreateNicTagRequest {
        name: "sdc_underlay".into(),
        mtu: None,
    })
    .await
    .unwrap();
    let shutdown = CancellationToken::new();
    let settings = Settings {
        reconcile_period: Duration::from_millis(100),
        auto_setup: true,
        underlay: Some(UnderlaySettings {
            napi_url: format!("http://{}", dc.addr(Service::Napi)),
            admin_uuid: ADMIN_UUID.into(),
        }),
        ..Default::default()
    };
    let (_cnapi, mut c) = start_cnapi(MemoryStore::default(), settings, &shutdown).await;
    let (a, b, plain) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    register(&mut c, a, 1, Some("10.99.100.22")).await;
    register(&mut c, b, 2, Some("10.99.100.23")).await;
    register(&mut c, plain, 3, None).await;

    let network = napi
        .create_network(napi::CreateNetworkRequest {
            name: "sdc_underlay".into(),
            subnet: "10.99.100.0/24".into(),
            provision_start_ip: "10.99.100.8".into(),
            provision_end_ip: "10.99.100.250".into(),
            nic_tag: "sdc_underlay".into(),
            owner_uuids: vec![ADMIN_UUID.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let both = [(a, "10.99.100.22"), (b, "10.99.100.23")];
    underlay_nics_become(&napi, "both nodes' underlay NICs in NAPI", &both).await;
    let nics = napi
        .list_nics(napi::ListNicsRequest {
            belongs_to_uuid: Some(a.to_string()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .nics;
    assert_eq!(nics.len(), 1, "{nics:?}");
    let nic = &nics[0];
    assert_eq!(nic.belongs_to_type, "server");
    assert_eq!(nic.cn_uuid, a.to_string());
    assert_eq!(nic.owner_uuid, ADMIN_UUID);
    assert_eq!(nic.network_uuid, network.uuid);
    assert_eq!(nic.nic_tag, "sdc_underlay");
    assert!(nic.underlay);
    // NAPI wrote Portolan's underlay row of each node with its NIC.
    let moray = MorayClient::connect(&dc.moray_url()).await.unwrap();
    let row = |server: Uuid| {
        let moray = moray.clone();
        async move {
            moray
                .get_object("portolan_underlay_mappings", &server.to_string())
                .await
                .unwrap()
                .map(|o| o.value["ip"].as_str().unwrap_or_default().to_string())
        }
    };
    assert_eq!(row(a).await.as_deref(), Some("::ffff:10.99.100.22"));
    assert_eq!(row(b).await.as_deref(), Some("::ffff:10.99.100.23"));
    assert_eq!(row(plain).await, None);

    // Node a comes back with another address: its old NIC (and address) go.
    register(&mut c, a, 1, Some("10.99.100.24")).await;
    let moved = [(a, "10.99.100.24"), (b, "10.99.100.23")];
    underlay_nics_become(&napi, "node a's underlay NIC moved", &moved).await;
    let old = napi
        .get_ip(napi::GetIpRequest {
            network_uuid: network.uuid.clone(),
            ip: "10.99.100.22".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(old.free, "{old:?}");
    assert_eq!(row(a).await.as_deref(), Some("::ffff:10.99.100.24"));
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fabric_nics_go_only_to_nodes_with_the_overlay() {
    let shutdown = CancellationToken::new();
    let (_cnapi, mut c) = start_auto_setup(&shutdown).await;
    let plain = Uuid::new_v4();
    register(&mut c, plain, 1, None).await;
    // No node has the overlay yet: the refusal says so for the node there is.
    let err = c.allocate(alloc(512, "sdc_overlay")).await.unwrap_err();
    assert_eq!(
        triton_common::status::error_name(&err),
        Some("NoAllocatableServersError")
    );
    assert!(
        err.message().contains(&format!(
            "{plain}: server does not provide nic tag sdc_overlay"
        )),
        "{}",
        err.message()
    );
    let overlay = Uuid::new_v4();
    register(&mut c, overlay, 2, Some("10.99.100.22")).await;
    for _ in 0..5 {
        let got = c
            .allocate(alloc(512, "sdc_overlay"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.server_uuid, overlay.to_string());
    }
    // An admin NIC may still go to either.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let got = c.allocate(alloc(512, "admin")).await.unwrap().into_inner();
        seen.insert(got.server_uuid);
    }
    assert!(seen.contains(&plain.to_string()), "{seen:?}");
    shutdown.cancel();
}
