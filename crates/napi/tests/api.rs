//! NAPI's records through its gRPC API on a real Moray: nic tags, networks, NICs, and
//! bad input refused with the field named.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ADMIN, OWNER, TestNapi, assert_error, new_uuid, nic_on};
use dc_testkit::assert_refused;
use triton_proto::napi::v1 as proto;

fn network_req(name: &str) -> proto::CreateNetworkRequest {
    proto::CreateNetworkRequest {
        name: name.into(),
        subnet: "10.1.0.0/24".into(),
        provision_start_ip: "10.1.0.10".into(),
        provision_end_ip: "10.1.0.250".into(),
        nic_tag: "external".into(),
        gateway: Some("10.1.0.1".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn nic_tags_and_networks_refuse_bad_input_naming_the_field() {
    let napi = TestNapi::start().await;
    let mut c = napi.client();

    // Nic tags.
    let tag = napi.nic_tag("external").await;
    assert_eq!(tag.mtu, 1500);
    let s = assert_error(
        c.create_nic_tag(proto::CreateNicTagRequest {
            name: "external".into(),
            mtu: None,
        })
        .await,
        "InvalidParameters",
        &["name", "already exists"],
    );
    assert_eq!(s.code(), tonic::Code::AlreadyExists);
    assert_error(
        c.create_nic_tag(proto::CreateNicTagRequest {
            name: "bad-name!".into(),
            mtu: Some(10_000),
        })
        .await,
        "InvalidParameters",
        &["name:", "mtu:"],
    );
    let big = c
        .update_nic_tag(proto::UpdateNicTagRequest {
            name: "external".into(),
            mtu: Some(9000),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(big.mtu, 9000);
    assert_error(
        c.get_nic_tag(proto::GetNicTagRequest {
            name: "nope".into(),
        })
        .await,
        "ResourceNotFound",
        &["nope"],
    );

    // Networks: every bad field at once.
    let s = assert_error(
        c.create_network(proto::CreateNetworkRequest {
            name: "".into(),
            vlan_id: 4095,
            subnet: "10.1.0.0".into(),
            nic_tag: "missing_tag".into(),
            mtu: Some(100),
            owner_uuids: vec!["not-a-uuid".into()],
            ..Default::default()
        })
        .await,
        "InvalidParameters",
        &[
            "name:",
            "vlan_id:",
            "subnet:",
            "nic_tag:",
            "mtu:",
            "owner_uuids:",
        ],
    );
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    let mut req = network_req("n1");
    req.provision_start_ip = "10.2.0.10".into();
    req.provision_end_ip = "10.1.0.255".into();
    req.gateway = Some("10.1.5.1".into());
    assert_error(
        c.create_network(req).await,
        "InvalidParameters",
        &[
            "provision_start_ip: 10.2.0.10 is outside",
            "provision_end_ip: 10.1.0.255 is the broadcast",
            "gateway:",
        ],
    );
    let mut req = network_req("n1");
    req.provision_start_ip = "10.1.0.200".into();
    req.provision_end_ip = "10.1.0.100".into();
    assert_error(
        c.create_network(req).await,
        "InvalidParameters",
        &["provision_start_ip must be before provision_end_ip"],
    );
    let mut req = network_req("n1");
    req.nic_tag = "unknown".into();
    assert_error(
        c.create_network(req).await,
        "InvalidParameters",
        &["nic_tag", "does not exist"],
    );

    let n1 = c
        .create_network(network_req("n1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n1.netmask, "255.255.255.0");
    assert_eq!(n1.family, "ipv4");
    assert!(n1.public);
    assert_eq!(n1.mtu, 1500);
    let s = assert_error(
        c.create_network(network_req("n1")).await,
        "InvalidParameters",
        &["name", "already exists"],
    );
    assert_eq!(s.code(), tonic::Code::AlreadyExists);

    assert_error(
        c.get_network(proto::GetNetworkRequest {
            uuid: "12345".into(),
        })
        .await,
        "InvalidParameters",
        &["uuid", "not a UUID"],
    );
    assert_error(
        c.get_network(proto::GetNetworkRequest { uuid: new_uuid() })
            .await,
        "ResourceNotFound",
        &["network"],
    );
    let got = c
        .get_network(proto::GetNetworkRequest {
            uuid: n1.uuid.to_uppercase(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, n1);

    // Updates are validated too, and a nic tag's mtu cannot drop under its networks'.
    let updated = c
        .update_network(proto::UpdateNetworkRequest {
            uuid: n1.uuid.clone(),
            description: Some("the first".into()),
            resolvers: Some(proto::StringList {
                values: vec!["1.1.1.1".into()],
            }),
            owner_uuids: Some(proto::StringList {
                values: vec![OWNER.into()],
            }),
            mtu: Some(9000),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.resolvers, vec!["1.1.1.1"]);
    assert!(!updated.public);
    assert_error(
        c.update_network(proto::UpdateNetworkRequest {
            uuid: n1.uuid.clone(),
            gateway: Some("192.168.0.1".into()),
            ..Default::default()
        })
        .await,
        "InvalidParameters",
        &["gateway", "outside"],
    );
    assert_error(
        c.update_nic_tag(proto::UpdateNicTagRequest {
            name: "external".into(),
            mtu: Some(1500),
        })
        .await,
        "InvalidParameters",
        &["mtu", &n1.uuid],
    );
    assert_error(
        c.delete_nic_tag(proto::DeleteNicTagRequest {
            name: "external".into(),
        })
        .await,
        "InUse",
        &["external", &n1.uuid],
    );

    // Listing: provisionable_by sees public networks and the owner's.
    let mut public = network_req("public");
    public.subnet = "10.3.0.0/24".into();
    public.provision_start_ip = "10.3.0.5".into();
    public.provision_end_ip = "10.3.0.9".into();
    public.gateway = None;
    c.create_network(public).await.unwrap();
    let names = |r: proto::ListNetworksResponse| -> Vec<String> {
        r.networks.into_iter().map(|n| n.name).collect()
    };
    let all = c
        .list_networks(proto::ListNetworksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(all), vec!["n1", "public"]);
    let other = c
        .list_networks(proto::ListNetworksRequest {
            provisionable_by: Some(new_uuid()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(other), vec!["public"]);
    let mine = c
        .list_networks(proto::ListNetworksRequest {
            provisionable_by: Some(OWNER.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(mine), vec!["n1", "public"]);
    let by_name = c
        .list_networks(proto::ListNetworksRequest {
            name: Some("public".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(by_name), vec!["public"]);
    // Filter values are taken literally: a `*`, `)(` or `\` neither matches every
    // network nor widens the filter.
    for name in [
        "*",
        "p*",
        "public)(name=n1",
        "public)(|(name=*",
        "\\",
        "n1\\",
    ] {
        for req in [
            proto::ListNetworksRequest {
                name: Some(name.into()),
                ..Default::default()
            },
            proto::ListNetworksRequest {
                nic_tag: Some(name.into()),
                ..Default::default()
            },
        ] {
            let found = c.list_networks(req).await.unwrap().into_inner();
            assert_eq!(names(found), Vec::<String>::new(), "{name:?}");
        }
    }
    assert_error(
        c.list_networks(proto::ListNetworksRequest {
            limit: Some(0),
            owner_uuid: Some("x".into()),
            ..Default::default()
        })
        .await,
        "InvalidParameters",
        &["limit", "owner_uuid"],
    );

    // NICs: references must exist, owners must be allowed.
    let stranger = new_uuid();
    let mut req = nic_on(&n1.uuid, &new_uuid());
    req.owner_uuid = stranger.clone();
    assert_error(
        c.create_nic(req).await,
        "InvalidParameters",
        &["owner_uuid", "cannot provision"],
    );
    let mut req = nic_on(&n1.uuid, &new_uuid());
    req.owner_uuid = ADMIN.into();
    c.create_nic(req)
        .await
        .expect("the admin provisions anywhere");
    assert_error(
        c.create_nic(nic_on(&new_uuid(), &new_uuid())).await,
        "InvalidParameters",
        &["network_uuid", "does not exist"],
    );
    let mut req = nic_on(&n1.uuid, "nope");
    req.belongs_to_type = "vm".into();
    req.state = Some("exploded".into());
    req.ip = Some("10.9.9.9".into());
    req.mac = Some("xx".into());
    assert_error(
        c.create_nic(req).await,
        "InvalidParameters",
        &[
            "mac:",
            "belongs_to_uuid:",
            "belongs_to_type:",
            "state:",
            "ip: 10.9.9.9 is outside",
        ],
    );
    let mut req = nic_on(&n1.uuid, &new_uuid());
    req.network_uuid = None;
    req.ip = Some("10.1.0.20".into());
    assert_error(
        c.create_nic(req).await,
        "InvalidParameters",
        &["ip", "requires network_uuid"],
    );

    // A given MAC is kept and unique.
    let vm = new_uuid();
    let mut req = nic_on(&n1.uuid, &vm);
    req.mac = Some("02:08:20:AA:BB:01".into());
    req.primary = true;
    let first = c.create_nic(req.clone()).await.unwrap().into_inner();
    assert_eq!(first.mac, "02:08:20:aa:bb:01");
    assert!(first.primary);
    assert_eq!(first.state, "running");
    assert_error(
        c.create_nic(req).await,
        "InvalidParameters",
        &["mac", "already exists"],
    );

    // One primary NIC per VM: a new primary clears the old one.
    let mut req = nic_on(&n1.uuid, &vm);
    req.primary = true;
    let second = c.create_nic(req).await.unwrap().into_inner();
    assert!(second.primary);
    let first_now = c
        .get_nic(proto::GetNicRequest {
            mac: "020820aabb01".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!first_now.primary);
    let back = c
        .update_nic(proto::UpdateNicRequest {
            mac: first.mac.clone(),
            primary: Some(true),
            state: Some("stopped".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(back.primary);
    assert_eq!(back.state, "stopped");
    let vm_nics = napi.dc.napi_nics(&vm).await;
    assert_eq!(vm_nics.len(), 2);
    assert_eq!(vm_nics.iter().filter(|n| n.primary).count(), 1);
    assert_error(
        c.update_nic(proto::UpdateNicRequest {
            mac: first.mac.clone(),
            state: Some("gone".into()),
            ..Default::default()
        })
        .await,
        "InvalidParameters",
        &["state"],
    );

    // A server NIC: no network, a nic tag that must exist.
    let mut server_nic = proto::CreateNicRequest {
        owner_uuid: ADMIN.into(),
        belongs_to_uuid: new_uuid(),
        belongs_to_type: "server".into(),
        nic_tags_provided: vec!["external".into(), "nosuch".into()],
        ..Default::default()
    };
    assert_error(
        c.create_nic(server_nic.clone()).await,
        "InvalidParameters",
        &["nic_tags_provided", "nosuch"],
    );
    server_nic.nic_tags_provided = vec!["external".into()];
    let s = c.create_nic(server_nic).await.unwrap().into_inner();
    assert_eq!(s.ip, "");
    assert_eq!(s.nic_tags_provided, vec!["external"]);
}

#[tokio::test]
async fn fabric_vnet_ids_are_unique_per_account() {
    let napi = TestNapi::start().await;

    // Twenty accounts create their first VLAN at once: twenty distinct vnet_ids.
    let accounts: Vec<String> = (0..20).map(|_| new_uuid()).collect();
    let tasks: Vec<_> = accounts
        .iter()
        .map(|owner| {
            let mut c = napi.client();
            let owner = owner.clone();
            tokio::spawn(async move {
                c.create_fabric_vlan(proto::CreateFabricVlanRequest {
                    owner_uuid: owner,
                    vlan_id: 2,
                    name: "default".into(),
                    description: String::new(),
                })
                .await
            })
        })
        .collect();
    let mut vnets = std::collections::HashSet::new();
    for t in tasks {
        let vlan = t.await.unwrap().expect("create VLAN").into_inner();
        assert!(vlan.vnet_id >= 1 && vlan.vnet_id < (1 << 24));
        assert!(
            vnets.insert(vlan.vnet_id),
            "vnet_id {} given twice",
            vlan.vnet_id
        );
    }

    // One account creating many VLANs at once gets one fabric, one vnet_id.
    let owner = new_uuid();
    let tasks: Vec<_> = (10..20)
        .map(|vlan_id| {
            let mut c = napi.client();
            let owner = owner.clone();
            tokio::spawn(async move {
                c.create_fabric_vlan(proto::CreateFabricVlanRequest {
                    owner_uuid: owner,
                    vlan_id,
                    name: format!("vlan{vlan_id}"),
                    description: String::new(),
                })
                .await
            })
        })
        .collect();
    let mut own = std::collections::HashSet::new();
    for t in tasks {
        own.insert(t.await.unwrap().expect("create VLAN").into_inner().vnet_id);
    }
    assert_eq!(own.len(), 1);
    let vnet_id = *own.iter().next().unwrap();
    assert!(!vnets.contains(&vnet_id));
    let mut c = napi.client();
    let fabric = c
        .get_fabric(proto::GetFabricRequest {
            owner_uuid: owner.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fabric.vnet_id, vnet_id);
    let listed = c
        .list_fabric_vlans(proto::ListFabricVlansRequest {
            owner_uuid: owner.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.vlans.iter().map(|v| v.vlan_id).collect::<Vec<_>>(),
        (10..20).collect::<Vec<_>>()
    );

    // Bad VLANs.
    let s = assert_error(
        c.create_fabric_vlan(proto::CreateFabricVlanRequest {
            owner_uuid: owner.clone(),
            vlan_id: 10,
            name: "again".into(),
            description: String::new(),
        })
        .await,
        "InvalidParameters",
        &["vlan_id", "already in use"],
    );
    assert_eq!(s.code(), tonic::Code::AlreadyExists);
    assert_error(
        c.create_fabric_vlan(proto::CreateFabricVlanRequest {
            owner_uuid: "x".into(),
            vlan_id: 4095,
            name: "".into(),
            description: String::new(),
        })
        .await,
        "InvalidParameters",
        &["owner_uuid", "vlan_id", "name"],
    );

    // Fabric networks: private subnets only, on an existing VLAN.
    let mut req = proto::CreateFabricNetworkRequest {
        owner_uuid: owner.clone(),
        vlan_id: 10,
        name: "web".into(),
        subnet: "8.8.0.0/24".into(),
        provision_start_ip: "8.8.0.5".into(),
        provision_end_ip: "8.8.0.250".into(),
        gateway: Some("8.8.0.1".into()),
        ..Default::default()
    };
    assert_error(
        c.create_fabric_network(req.clone()).await,
        "InvalidParameters",
        &["subnet", "private"],
    );
    req.subnet = "192.168.128.0/24".into();
    req.provision_start_ip = "192.168.128.5".into();
    req.provision_end_ip = "192.168.128.250".into();
    req.gateway = Some("192.168.128.1".into());
    let mut missing = req.clone();
    missing.vlan_id = 99;
    assert_error(
        c.create_fabric_network(missing).await,
        "ResourceNotFound",
        &["fabric VLAN"],
    );
    let web = c
        .create_fabric_network(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(web.fabric);
    assert_eq!(web.vnet_id, Some(vnet_id));
    assert_eq!(web.vlan_id, 10);
    assert_eq!(web.mtu, 1400);
    assert!(web.internet_nat);
    assert_eq!(web.owner_uuids, vec![owner.clone()]);
    assert!(!web.public);
    assert_error(
        c.create_fabric_network(req.clone()).await,
        "InvalidParameters",
        &["name", "already exists"],
    );
    // Another account may use the same name and subnet on its own fabric.
    let mut theirs = req.clone();
    theirs.owner_uuid = accounts[0].clone();
    theirs.vlan_id = 2;
    c.create_fabric_network(theirs)
        .await
        .expect("same name on another fabric");

    // Provisioning on a fabric network: only its owner.
    let mut nic = nic_on(&web.uuid, &new_uuid());
    nic.owner_uuid = owner.clone();
    let on_fabric = c.create_nic(nic.clone()).await.unwrap().into_inner();
    assert_eq!(on_fabric.ip, "192.168.128.5");
    assert_eq!(on_fabric.vnet_id, Some(vnet_id));
    assert!(on_fabric.fabric);
    nic.owner_uuid = OWNER.into();
    assert_error(
        c.create_nic(nic).await,
        "InvalidParameters",
        &["owner_uuid"],
    );

    let nets = c
        .list_fabric_networks(proto::ListFabricNetworksRequest {
            owner_uuid: owner.clone(),
            vlan_id: 10,
        })
        .await
        .unwrap()
        .into_inner()
        .networks;
    assert_eq!(nets.len(), 1);
    assert_error(
        c.get_fabric_network(proto::GetFabricNetworkRequest {
            owner_uuid: accounts[1].clone(),
            vlan_id: 2,
            uuid: web.uuid.clone(),
        })
        .await,
        "ResourceNotFound",
        &[],
    );

    // A VLAN with networks cannot go; a network with NICs cannot go.
    assert_error(
        c.delete_fabric_vlan(proto::DeleteFabricVlanRequest {
            owner_uuid: owner.clone(),
            vlan_id: 10,
        })
        .await,
        "InUse",
        &[],
    );
    assert_error(
        c.delete_fabric_network(proto::DeleteFabricNetworkRequest {
            owner_uuid: owner.clone(),
            vlan_id: 10,
            uuid: web.uuid.clone(),
        })
        .await,
        "InUse",
        &[],
    );
    c.delete_nic(proto::DeleteNicRequest { mac: on_fabric.mac })
        .await
        .unwrap();
    c.delete_fabric_network(proto::DeleteFabricNetworkRequest {
        owner_uuid: owner.clone(),
        vlan_id: 10,
        uuid: web.uuid.clone(),
    })
    .await
    .unwrap();
    c.delete_fabric_vlan(proto::DeleteFabricVlanRequest {
        owner_uuid: owner.clone(),
        vlan_id: 10,
    })
    .await
    .unwrap();
    let renamed = c
        .update_fabric_vlan(proto::UpdateFabricVlanRequest {
            owner_uuid: owner.clone(),
            vlan_id: 11,
            name: Some("eleven".into()),
            description: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.name, "eleven");
    assert_eq!(renamed.vnet_id, vnet_id);
}

#[tokio::test]
async fn coal_seeds_admin_and_external_networks_once() {
    let napi = TestNapi::start_with(|c| c.seed.enabled = true).await;
    let mut c = napi.client();
    let nets = c
        .list_networks(proto::ListNetworksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .networks;
    let names: Vec<_> = nets.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, vec!["admin", "external"]);
    let admin = &nets[0];
    assert_eq!(admin.subnet, "10.99.99.0/24");
    assert_eq!(admin.nic_tag, "admin");
    assert_eq!(admin.owner_uuids, vec![ADMIN]);
    let external = &nets[1];
    assert_eq!(external.gateway, "10.88.88.2");
    assert_eq!(external.provision_start_ip, "10.88.88.3");
    assert!(external.public);

    // Seeding again (a restart) changes nothing.
    napi.app
        .seed(&napi::config::SeedConfig {
            enabled: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let again = c
        .list_networks(proto::ListNetworksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .networks;
    assert_eq!(again, nets);
    let tags = c
        .list_nic_tags(proto::ListNicTagsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nic_tags;
    assert_eq!(
        tags.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        vec!["admin", "external"]
    );

    // An instance on the external network gets CoaL's first external address.
    let nic = napi.new_nic(&external.uuid).await;
    assert_eq!(nic.ip, "10.88.88.3");
    assert_eq!(nic.resolvers, vec!["8.8.8.8", "8.8.4.4"]);
    let ping = c.ping(proto::PingRequest {}).await.unwrap().into_inner();
    assert_eq!(ping.status, "OK");
}

#[tokio::test]
async fn network_pools_provision_on_the_first_network_with_room() {
    let napi = TestNapi::start().await;
    let mut c = napi.client();
    napi.nic_tag("external").await;
    napi.nic_tag("internal").await;
    let small = |name: &str, prefix: &str, tag: &str| proto::CreateNetworkRequest {
        name: name.into(),
        subnet: format!("{prefix}.0/24"),
        provision_start_ip: format!("{prefix}.10"),
        provision_end_ip: format!("{prefix}.11"),
        nic_tag: tag.into(),
        ..Default::default()
    };
    let a = c
        .create_network(small("a", "10.5.1", "external"))
        .await
        .unwrap()
        .into_inner();
    let b = c
        .create_network(small("b", "10.5.2", "external"))
        .await
        .unwrap()
        .into_inner();
    let other = c
        .create_network(small("other", "10.5.3", "internal"))
        .await
        .unwrap()
        .into_inner();

    // Refused pools name the fields at fault: networks of two nic tags, no network, a
    // network that does not exist with a bad owner.
    let refused = [
        (
            "mixed",
            vec![a.uuid.clone(), other.uuid.clone()],
            vec![],
            &["networks", "nic tags"],
        ),
        ("empty", vec![], vec![], &["networks", "at least one"]),
        (
            "ghost",
            vec![new_uuid()],
            vec!["bad".into()],
            &["networks", "owner_uuids"],
        ),
    ];
    for (name, networks, owner_uuids, fragments) in refused {
        let request = proto::CreateNetworkPoolRequest {
            name: name.into(),
            networks,
            owner_uuids,
            ..Default::default()
        };
        let result = c.create_network_pool(request).await;
        assert_refused(name, result, "InvalidParameters", fragments);
    }
    let pool = c
        .create_network_pool(proto::CreateNetworkPoolRequest {
            name: "public".into(),
            networks: vec![a.uuid.clone(), b.uuid.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pool.nic_tag, "external");
    assert_error(
        c.create_network_pool(proto::CreateNetworkPoolRequest {
            name: "public".into(),
            networks: vec![b.uuid.clone()],
            ..Default::default()
        })
        .await,
        "InvalidParameters",
        &["name", "already exists"],
    );

    // Two addresses per network: a, a, b, b, then full.
    let mut got = Vec::new();
    for _ in 0..4 {
        let nic = napi.new_nic(&pool.uuid).await;
        got.push((nic.network_uuid, nic.ip));
    }
    assert_eq!(
        got,
        vec![
            (a.uuid.clone(), "10.5.1.10".to_string()),
            (a.uuid.clone(), "10.5.1.11".to_string()),
            (b.uuid.clone(), "10.5.2.10".to_string()),
            (b.uuid.clone(), "10.5.2.11".to_string()),
        ]
    );
    assert_error(
        c.create_nic(nic_on(&pool.uuid, &new_uuid())).await,
        "SubnetFull",
        &["network pool", &pool.uuid],
    );
    let mut with_ip = nic_on(&pool.uuid, &new_uuid());
    with_ip.ip = Some("10.5.1.10".into());
    assert_error(
        c.create_nic(with_ip).await,
        "InvalidParameters",
        &["ip", "network pool"],
    );

    // A network in a pool cannot be deleted; the pool can, then the network's turn.
    assert_error(
        c.delete_network(proto::DeleteNetworkRequest {
            uuid: b.uuid.clone(),
        })
        .await,
        "InUse",
        &[&pool.uuid],
    );
    let updated = c
        .update_network_pool(proto::UpdateNetworkPoolRequest {
            uuid: pool.uuid.clone(),
            networks: Some(proto::StringList {
                values: vec![a.uuid.clone()],
            }),
            owner_uuids: Some(proto::StringList {
                values: vec![OWNER.into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.networks, vec![a.uuid.clone()]);
    let visible = |who: String| proto::ListNetworkPoolsRequest {
        provisionable_by: Some(who),
        ..Default::default()
    };
    assert_eq!(
        c.list_network_pools(visible(OWNER.into()))
            .await
            .unwrap()
            .into_inner()
            .pools
            .len(),
        1
    );
    assert_eq!(
        c.list_network_pools(visible(new_uuid()))
            .await
            .unwrap()
            .into_inner()
            .pools
            .len(),
        0
    );
    c.delete_network_pool(proto::DeleteNetworkPoolRequest {
        uuid: pool.uuid.clone(),
    })
    .await
    .unwrap();
    assert_error(
        c.get_network_pool(proto::GetNetworkPoolRequest {
            uuid: pool.uuid.clone(),
        })
        .await,
        "ResourceNotFound",
        &[],
    );
}
