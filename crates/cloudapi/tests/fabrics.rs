//! The account's default network and its fabrics through the `triton` CLI and by hand:
//! `triton network set-default/get-default` (UpdateConfig refuses another account's
//! network, naming the field), UpdateFabricNetwork and UpdateFabricVLAN (the fields
//! they change, the ones they refuse), the default network that cannot be deleted, and
//! the networks CreateMachine gives when none is named, with and without a default
//! fabric network.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use dc_testkit::cloudapi::Tenant;
use std::time::Duration;

use dc_testkit::{Dc, Options, eventually, package_fields};
use serde_json::{Value, json};
use triton_proto::napi::v1 as napi;
use triton_proto::papi::v1 as papi;
use triton_proto::ufds::v1 as ufds;

/// `triton vlan create <vlan_id>` and `triton network create` of a /24 on it, `web-net`
/// style: the network as the CLI printed it.
async fn fabric_network(tenant: &Tenant, vlan_id: u32, name: &str, prefix: &str) -> Value {
    let vlan = vlan_id.to_string();
    tenant
        .ok(&["vlan", "create", "-n", &format!("vlan{vlan}"), "-j", &vlan])
        .await;
    tenant
        .ok(&[
            "network",
            "create",
            "-j",
            "--name",
            name,
            "--subnet",
            &format!("{prefix}.0/24"),
            "--start-ip",
            &format!("{prefix}.10"),
            "--end-ip",
            &format!("{prefix}.250"),
            "--gateway",
            &format!("{prefix}.1"),
            &vlan,
        ])
        .await
        .json()
}

async fn account(dc: &Dc, uuid: &str) -> ufds::Account {
    dc.ufds()
        .get_account(ufds::GetAccountRequest {
            account: uuid.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_network_fabric_network_and_vlan_updates() {
    let dc = Dc::start(Options::cloudapi()).await;
    let alice = dc.tenant("alice", "ed25519").await;
    let bob = dc.tenant("bob", "ed25519").await;
    let external = alice.json(&["network", "get", "-j", "external"]).await;

    // With none set, the default is the external network a provision gets.
    let got = alice.json(&["network", "get-default", "-j"]).await;
    assert_eq!(got["id"], external["id"]);

    // set-default to a fabric network of alice's: kept in UFDS, shown by get-default.
    let net = fabric_network(&alice, 100, "web-net", "192.168.100").await;
    let id = net["id"].as_str().unwrap().to_string();
    alice
        .prints(
            &["network", "set-default", "web-net"],
            &["Set network web-net", &id],
        )
        .await;
    let got = alice.json(&["network", "get-default", "-j"]).await;
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["fabric"], true);
    assert_eq!(account(&dc, &alice.uuid).await.default_network, id);

    // bob may not take alice's network (nor learn it exists), nor pass anything but a
    // network uuid; his default stays his.
    let bobs = dc.hand_client("bob", &bob.uuid).await;
    let refused = |body: Value, words: &'static [&'static str]| {
        let bobs = bobs.clone();
        async move {
            let r = bobs.send_json("PUT", "/bob/config", &body).await;
            let msg = r.assert_error(409, "InvalidArgument");
            for w in words {
                assert!(msg.contains(w), "{body}: {msg}");
            }
        }
    };
    refused(
        json!({"default_network": id}),
        &["default_network", "unknown network"],
    )
    .await;
    refused(
        json!({"default_network": "web-net"}),
        &["default_network", "must be a UUID"],
    )
    .await;
    refused(json!({}), &["default_network", "required"]).await;
    refused(
        json!({"default_network": external["id"], "colour": "red"}),
        &["colour", "unsupported"],
    )
    .await;
    assert_eq!(account(&dc, &bob.uuid).await.default_network, "");
    let r = bobs.send("GET", "/bob/config", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"default_network": external["id"]}));
    // A public network is his to choose.
    let r = bobs
        .send_json(
            "PUT",
            "/bob/config",
            &json!({"default_network": external["id"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"default_network": external["id"]}));
    assert_eq!(
        account(&dc, &bob.uuid).await.default_network,
        external["id"].as_str().unwrap()
    );

    // The default network cannot be deleted.
    alice
        .fails_saying(
            &["network", "delete", "web-net"],
            "cannot delete default network",
        )
        .await;

    // UpdateFabricNetwork: what it changes shows in the CLI and in NAPI.
    let alices = dc.hand_client("alice", &alice.uuid).await;
    let path = format!("/alice/fabrics/default/vlans/100/networks/{id}");
    let r = alices
        .send_json(
            "PUT",
            &path,
            &json!({
                "name": "web-net2",
                "description": "the web tier",
                "resolvers": ["1.1.1.1", "8.8.4.4"],
                "routes": {"10.50.0.0/16": "192.168.100.5"},
                "provision_end_ip": "192.168.100.200",
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let updated = r.json();
    assert_eq!(updated["id"], id.as_str());
    assert_eq!(updated["name"], "web-net2");
    assert_eq!(updated["provision_end_ip"], "192.168.100.200");
    let shown = alice.json(&["network", "get", "-j", "web-net2"]).await;
    assert_eq!(shown["description"], "the web tier");
    assert_eq!(shown["resolvers"], json!(["1.1.1.1", "8.8.4.4"]));
    assert_eq!(shown["routes"], json!({"10.50.0.0/16": "192.168.100.5"}));
    assert_eq!(shown["subnet"], "192.168.100.0/24");
    let in_napi = dc
        .napi()
        .get_network(napi::GetNetworkRequest { uuid: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(in_napi.name, "web-net2");
    assert_eq!(in_napi.provision_end_ip, "192.168.100.200");
    assert_eq!(in_napi.provision_start_ip, "192.168.100.10");

    // What cannot change is refused naming the property; nothing changed.
    for (body, words) in [
        (
            json!({"gateway": "192.168.100.2"}),
            &["gateway", "unsupported"],
        ),
        (
            json!({"subnet": "192.168.7.0/24"}),
            &["subnet", "unsupported"],
        ),
        (json!({"id": id}), &["id", "cannot be set"]),
        (
            json!({"resolvers": ["1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4", "9.9.9.9"]}),
            &["resolvers", "maximum of 4"],
        ),
    ] {
        let r = alices.send_json("PUT", &path, &body).await;
        let msg = r.assert_error(409, "InvalidArgument");
        for w in words {
            assert!(msg.contains(w), "{body}: {msg}");
        }
    }
    let shown = alice.json(&["network", "get", "-j", "web-net2"]).await;
    assert_eq!(shown["gateway"], "192.168.100.1");
    assert_eq!(shown["resolvers"], json!(["1.1.1.1", "8.8.4.4"]));
    // bob reaches neither alice's network nor her VLAN.
    for path in [
        format!("/bob/fabrics/default/vlans/100/networks/{id}"),
        "/bob/fabrics/default/vlans/100".to_string(),
    ] {
        let r = bobs.send_json("PUT", &path, &json!({"name": "mine"})).await;
        r.assert_error(404, "ResourceNotFound");
    }

    // UpdateFabricVLAN: PUT as Triton routes it, POST as node-triton's client sends it.
    let r = alices
        .send_json(
            "PUT",
            "/alice/fabrics/default/vlans/100",
            &json!({"name": "web", "description": "web tier"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["name"], "web");
    let r = alices
        .send_json(
            "POST",
            "/alice/fabrics/default/vlans/100",
            &json!({"description": "the web tier"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let vlan = alice.json(&["vlan", "get", "-j", "100"]).await;
    assert_eq!(
        (&vlan["vlan_id"], &vlan["name"], &vlan["description"]),
        (&json!(100), &json!("web"), &json!("the web tier"))
    );
    // `triton vlan update` of triton@7 fails in the CLI itself; its raw form works.
    alice
        .ok(&[
            "cloudapi",
            "-X",
            "PUT",
            "/my/fabrics/default/vlans/100",
            "-d",
            r#"{"name": "front"}"#,
        ])
        .await;
    let vlan = alice.json(&["vlan", "get", "-j", "100"]).await;
    assert_eq!(vlan["name"], "front");
    let r = alices
        .send_json(
            "PUT",
            "/alice/fabrics/default/vlans/100",
            &json!({"vnet_id": 7}),
        )
        .await;
    let msg = r.assert_error(409, "InvalidArgument");
    assert!(msg.contains("vnet_id"), "{msg}");

    // A VLAN with a network cannot go (InvalidArgument, as Triton's fabric endpoints
    // answer NAPI's refusals).
    let r = alices
        .send("DELETE", "/alice/fabrics/default/vlans/100", "")
        .await;
    let msg = r.assert_error(409, "InvalidArgument");
    assert!(msg.contains("has networks"), "{msg}");

    // `?fabric=true` lists the account's fabric networks alone.
    let r = alices.send("GET", "/alice/networks?fabric=true", "").await;
    let ids: Vec<Value> = r.assert_list().iter().map(|n| n["id"].clone()).collect();
    assert_eq!(ids, [json!(id)]);
    let r = bobs.send("GET", "/bob/networks?fabric=true", "").await;
    assert_eq!(r.json(), json!([]));

    // Another default: the old one can now go.
    let other = fabric_network(&alice, 200, "db-net", "192.168.200").await;
    alice.ok(&["network", "set-default", "db-net"]).await;
    assert_eq!(
        account(&dc, &alice.uuid).await.default_network,
        other["id"].as_str().unwrap()
    );
    alice.ok(&["network", "delete", "web-net2"]).await;
    let nets = alice.json_lines(&["network", "list", "-j"]).await;
    assert!(nets.iter().all(|n| n["id"] != id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_machine_default_networks_with_and_without_a_default_fabric() {
    // One sim node that carries the overlay (`sdc_overlay`) besides admin and external.
    let dc = Dc::start(Options {
        compute: true,
        nic_tags: vec!["admin".into(), "external".into(), "sdc_overlay".into()],
        ..Options::cloudapi()
    })
    .await;
    let alice = dc.tenant("alice", "rsa").await;
    let bob = dc.tenant("bob", "ed25519").await;
    let catalog = dc.catalog(1024, b"simulated".to_vec()).await;
    let external = alice.json(&["network", "get", "-j", "external"]).await;

    // No fabric: the external network alone, primary.
    let plain = alice.create_instance("plain").await;
    let vm = dc.vm(&plain).await;
    assert_eq!(vm.nics.len(), 1, "{:?}", vm.nics);
    assert_eq!(vm.nics[0].network_uuid, external["id"].as_str().unwrap());
    assert!(vm.nics[0].primary);

    // A default fabric network: external (primary) and the fabric one, on the overlay
    // with the VLAN's id.
    let fabric = fabric_network(&alice, 300, "my-net", "192.168.30").await;
    let fabric_id = fabric["id"].as_str().unwrap().to_string();
    // A second fabric network listed first does not displace the default.
    fabric_network(&alice, 301, "a-net", "192.168.31").await;
    alice.ok(&["network", "set-default", "my-net"]).await;
    let id = alice.create_instance("both").await;
    let vm = dc.vm(&id).await;
    let on = |net: &str| vm.nics.iter().find(|n| n.network_uuid == net);
    assert_eq!(vm.nics.len(), 2, "{:?}", vm.nics);
    let ext = on(external["id"].as_str().unwrap()).expect("an external NIC");
    assert!(ext.primary);
    let fab = on(&fabric_id).expect("a NIC on the default fabric network");
    assert!(!fab.primary);
    assert!(fab.nic_tag.starts_with("sdc_overlay"), "{}", fab.nic_tag);
    assert_eq!(fab.vlan_id, 300);
    assert!(fab.ip.starts_with("192.168.30."), "{}", fab.ip);
    let got = alice.json(&["instance", "get", "-j", "both"]).await;
    assert_eq!(got["primaryIp"], ext.ip.as_str());

    // Named explicitly, the fabric network alone.
    let id = alice
        .create_instance_with("inside", &["--network", "my-net"], "g1-small")
        .await;
    let vm = dc.vm(&id).await;
    assert_eq!(vm.nics.len(), 1, "{:?}", vm.nics);
    assert_eq!(vm.nics[0].network_uuid, fabric_id);
    assert!(vm.nics[0].nic_tag.starts_with("sdc_overlay"));
    assert_eq!(vm.nics[0].vlan_id, 300);

    // Named after a fabric network, the external network is still the primary one.
    let networks = ["--network", "my-net", "--network", "external"];
    let id = alice
        .create_instance_with("two", &networks, "g1-small")
        .await;
    let vm = dc.vm(&id).await;
    let primary: Vec<&str> = vm
        .nics
        .iter()
        .filter(|n| n.primary)
        .map(|n| n.network_uuid.as_str())
        .collect();
    assert_eq!(vm.nics.len(), 2, "{:?}", vm.nics);
    assert_eq!(primary, [external["id"].as_str().unwrap()]);

    // default_networks picks which of the two; anything else is refused naming it.
    let alices = dc.hand_client("alice", &alice.uuid).await;
    let create = |extra: Value| {
        let mut body = json!({"image": catalog.image.uuid, "package": "g1-small"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let alices = alices.clone();
        async move { alices.send_json("POST", "/alice/machines", &body).await }
    };
    let r = create(json!({"name": "inner", "default_networks": ["internal"]})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    alice.ok(&["instance", "wait", &id]).await;
    let vm = dc.vm(&id).await;
    let nets: Vec<&str> = vm.nics.iter().map(|n| n.network_uuid.as_str()).collect();
    assert_eq!(nets, [fabric_id.as_str()]);
    let r = create(json!({"default_networks": ["external", "dmz"]})).await;
    let msg = r.assert_error(409, "InvalidArgument");
    assert!(msg.contains("default_networks"), "{msg}");

    // A NIC on a fabric network added to the instance made without one.
    let a_net = alice.json(&["network", "get", "-j", "a-net"]).await;
    let out = alice
        .ok(&["instance", "nic", "create", "-w", "-j", "plain", "a-net"])
        .await;
    let nic = out.json();
    assert!(
        nic["ip"].as_str().unwrap().starts_with("192.168.31."),
        "{}",
        out.stdout
    );
    let vm = dc.vm(&plain).await;
    let added = vm
        .nics
        .iter()
        .find(|n| n.network_uuid == a_net["id"].as_str().unwrap())
        .expect("the fabric NIC on the VM");
    assert!(
        added.nic_tag.starts_with("sdc_overlay"),
        "{}",
        added.nic_tag
    );
    assert_eq!(added.vlan_id, 301);
    assert!(!added.primary);

    // A package with networks gives those.
    dc.create_package(papi::PackageFields {
        networks: Some(papi::UuidList {
            uuids: vec![a_net["id"].as_str().unwrap().to_string()],
        }),
        ..package_fields("g1-fabric", 1024)
    })
    .await;
    let id = alice.create_instance_with("pkg", &[], "g1-fabric").await;
    let vm = dc.vm(&id).await;
    let nets: Vec<&str> = vm.nics.iter().map(|n| n.network_uuid.as_str()).collect();
    assert_eq!(nets, [a_net["id"].as_str().unwrap()]);
    assert_eq!(vm.nics[0].vlan_id, 301);

    // bob, with no fabric, still gets the external network alone; alice's fabric
    // network is not his to name.
    let id = bob.create_instance("bobs").await;
    let vm = dc.vm(&id).await;
    assert_eq!(vm.nics.len(), 1, "{:?}", vm.nics);
    assert_eq!(vm.nics[0].network_uuid, external["id"].as_str().unwrap());
    let by_hand = dc.hand_client("bob", &bob.uuid).await;
    let r = by_hand
        .send_json(
            "POST",
            "/bob/machines",
            &json!({
                "image": catalog.image.uuid,
                "package": "g1-small",
                "networks": [fabric_id],
            }),
        )
        .await;
    let msg = r.assert_error(409, "InvalidArgument");
    assert!(msg.contains(&fabric_id), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_with_napis_default_fabric_provisions_on_it() {
    let dc = Dc::start(Options::cloudapi_fabrics()).await;
    let carol = dc.tenant("carol", "ed25519").await;
    dc.catalog(1024, b"simulated".to_vec()).await;
    let external = carol.json(&["network", "get", "-j", "external"]).await;

    // NAPI gives the new account Triton's default fabric and makes it the default.
    eventually(
        "carol's default network is her fabric's",
        Duration::from_secs(30),
        || async { !account(&dc, &carol.uuid).await.default_network.is_empty() },
    )
    .await;
    let default = carol.json(&["network", "get-default", "-j"]).await;
    assert_eq!(default["name"], "My-Fabric-Network");
    assert_eq!(default["fabric"], true);
    let vlans = carol.json_lines(&["vlan", "list", "-j"]).await;
    assert!(
        vlans
            .iter()
            .any(|v| v["name"] == "My-Fabric-VLAN" && v["vlan_id"] == default["vlan_id"]),
        "{vlans:?}"
    );

    // An instance with no network named: the external network (primary) and the
    // default fabric network.
    let id = carol.create_instance("web0").await;
    let vm = dc.vm(&id).await;
    assert_eq!(vm.nics.len(), 2, "{:?}", vm.nics);
    assert!(vm.nics[0].primary);
    assert_eq!(vm.nics[0].network_uuid, external["id"].as_str().unwrap());
    assert_eq!(vm.nics[1].network_uuid, default["id"].as_str().unwrap());
    assert!(vm.nics[1].nic_tag.starts_with("sdc_overlay"));
    assert_eq!(
        u64::from(vm.nics[1].vlan_id),
        default["vlan_id"].as_u64().unwrap()
    );
}
