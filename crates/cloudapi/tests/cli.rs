//! The `triton` CLI (npm `triton@7`) against CloudAPI, as a tenant uses it: what it
//! prints, and what changed behind CloudAPI.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use dc_testkit::cloudapi::{TwoTenants, ssh_keygen};
use dc_testkit::services::cn_agent;
use dc_testkit::{Dc, Options, eventually};
use serde_json::json;
use triton_proto::napi::v1 as napi;
use triton_proto::ufds::v1 as ufds;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_get_and_update() {
    let stack = Dc::start(Options::cloudapi()).await;
    let alice = stack.tenant("alice", "rsa").await;

    let out = alice.ok(&["account", "get", "-j"]).await;
    let account = out.json();
    assert_eq!(account["login"], "alice");
    assert_eq!(account["id"], alice.uuid.as_str());
    assert_eq!(account["email"], "alice@example.com");

    alice.prints(&["account", "get"], &["login: alice"]).await;

    alice
        .ok(&["account", "update", "companyName=Acme", "firstName=Alice"])
        .await;
    let stored = stack
        .ufds()
        .get_account(ufds::GetAccountRequest {
            account: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.company, "Acme");
    assert_eq!(stored.givenname, "Alice");
    let account = alice.json(&["account", "get", "-j"]).await;
    assert_eq!(account["companyName"], "Acme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_type_signs_requests() {
    let stack = Dc::start(Options::cloudapi()).await;
    // P-384 is verified too (unit tests), but node-triton 7 cannot sign with it
    // ("SHA384 is not a supported hash algorithm"), so the CLI cannot show it.
    for (i, key_type) in ["rsa", "ecdsa-256", "ecdsa-521", "ed25519"]
        .iter()
        .enumerate()
    {
        let tenant = stack.tenant(&format!("user{i}"), key_type).await;
        let out = tenant.triton(&["account", "get", "-j"]).await;
        assert!(out.success, "{key_type}: {}", out.stderr);
        assert_eq!(out.json()["login"], tenant.login.as_str(), "{key_type}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_add_list_delete() {
    let stack = Dc::start(Options::cloudapi()).await;
    let alice = stack.tenant("alice", "ed25519").await;

    let keys = alice.json_lines(&["key", "list", "-j"]).await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["fingerprint"], alice.fingerprint.as_str());

    // A second key, from a file, with a name.
    let extra = alice.home.path().join("extra");
    ssh_keygen(&extra, "ed25519");
    let pubfile = format!("{}.pub", extra.display());
    alice
        .prints(&["key", "add", "-n", "laptop", &pubfile], &["laptop"])
        .await;

    let listed = alice.json_lines(&["key", "list", "-j"]).await;
    let names: Vec<&str> = listed.iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"laptop"), "{names:?}");
    assert_eq!(stack.keys_of(&alice.uuid).await.len(), 2);

    let got = alice.json(&["key", "get", "-j", "laptop"]).await;
    assert_eq!(got["name"], "laptop");

    alice.ok(&["key", "delete", "-y", "laptop"]).await;
    let listed = alice.json_lines(&["key", "list", "-j"]).await;
    assert_eq!(listed.len(), 1);
    let out = alice.fails(&["key", "get", "laptop"]).await;
    assert!(
        out.stderr.contains("ResourceNotFound") || out.stderr.contains("does not exist"),
        "{}",
        out.stderr
    );

    // A key that does not parse is refused with the reason.
    let bad = alice.home.path().join("bad.pub");
    std::fs::write(&bad, "ssh-rsa AAAAnotakey x\n").unwrap();
    alice.fails(&["key", "add", bad.to_str().unwrap()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_images_and_networks() {
    let stack = Dc::start(Options::cloudapi()).await;
    let alice = stack.tenant("alice", "rsa").await;
    let bob = stack.tenant("bob", "rsa").await;
    stack.package("g1-small", 1024, &[]).await;
    stack.package("g1-large", 4096, &[]).await;
    stack.package("alice-only", 2048, &[&alice.uuid]).await;

    let pkgs = alice.json_lines(&["package", "list", "-j"]).await;
    let names: Vec<&str> = pkgs.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"g1-small") && names.contains(&"alice-only"),
        "{names:?}"
    );
    let small = pkgs.iter().find(|p| p["name"] == "g1-small").unwrap();
    assert_eq!(small["memory"], 1024);
    assert_eq!(small["disk"], 10240);
    let bobs = bob.json_lines(&["package", "list", "-j"]).await;
    assert!(!bobs.iter().any(|p| p["name"] == "alice-only"));
    alice
        .prints(&["package", "list"], &["g1-large", "4G"])
        .await;
    let got = alice.json(&["package", "get", "-j", "g1-small"]).await;
    assert_eq!(got["name"], "g1-small");

    let public = stack
        .image(
            "base-64-lts",
            "24.4.1",
            true,
            dc_testkit::ADMIN_UUID,
            b"base".to_vec(),
        )
        .await;
    let private = stack
        .image("alice-app", "1.0.0", false, &alice.uuid, b"app".to_vec())
        .await;
    let imgs = alice.json_lines(&["image", "list", "-j"]).await;
    let ids: Vec<&str> = imgs.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert!(
        ids.contains(&public.uuid.as_str()) && ids.contains(&private.uuid.as_str()),
        "{ids:?}"
    );
    let bobs = bob.json_lines(&["image", "list", "-j"]).await;
    let ids: Vec<&str> = bobs.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert!(
        ids.contains(&public.uuid.as_str()) && !ids.contains(&private.uuid.as_str()),
        "{ids:?}"
    );
    let got = alice.json(&["image", "get", "-j", "base-64-lts"]).await;
    assert_eq!(got["id"], public.uuid.as_str());
    assert_eq!(got["version"], "24.4.1");
    bob.fails(&["image", "get", &private.uuid]).await;

    let nets = alice.json_lines(&["network", "list", "-j"]).await;
    let names: Vec<&str> = nets.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        vec!["external"],
        "the admin network is the operator's"
    );
    let external = &nets[0];
    assert_eq!(external["public"], true);
    let got = alice.json(&["network", "get", "-j", "external"]).await;
    assert_eq!(got["id"], external["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fabric_vlans_and_networks() {
    let stack = Dc::start(Options::cloudapi()).await;
    let alice = stack.tenant("alice", "ed25519").await;
    let bob = stack.tenant("bob", "ed25519").await;

    let out = alice
        .ok(&["vlan", "create", "-n", "web", "-D", "web tier", "-j", "100"])
        .await;
    assert_eq!(out.json()["vlan_id"], 100);
    let vlans = alice.json_lines(&["vlan", "list", "-j"]).await;
    assert!(
        vlans
            .iter()
            .any(|v| v["vlan_id"] == 100 && v["name"] == "web")
    );
    let in_napi = stack
        .napi()
        .list_fabric_vlans(napi::ListFabricVlansRequest {
            owner_uuid: alice.uuid.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .vlans;
    assert!(in_napi.iter().any(|v| v.vlan_id == 100));
    assert!(
        bob.json_lines(&["vlan", "list", "-j"])
            .await
            .iter()
            .all(|v| v["vlan_id"] != 100)
    );

    let out = alice
        .ok(&[
            "network",
            "create",
            "-j",
            "--name",
            "web-net",
            "--subnet",
            "192.168.100.0/24",
            "--start-ip",
            "192.168.100.10",
            "--end-ip",
            "192.168.100.250",
            "--gateway",
            "192.168.100.1",
            "-r",
            "8.8.8.8",
            "100",
        ])
        .await;
    let net = out.json();
    assert_eq!(net["name"], "web-net");
    assert_eq!(net["fabric"], true);
    assert_eq!(net["subnet"], "192.168.100.0/24");
    assert_eq!(net["resolvers"], serde_json::json!(["8.8.8.8"]));
    assert_eq!(net["vlan_id"], 100);
    let id = net["id"].as_str().unwrap().to_string();

    let nets = alice.json_lines(&["network", "list", "-j"]).await;
    assert!(nets.iter().any(|n| n["id"] == id.as_str()));
    let bobs = bob.json_lines(&["network", "list", "-j"]).await;
    assert!(!bobs.iter().any(|n| n["id"] == id.as_str()));
    bob.fails(&["network", "get", &id]).await;
    let listed = alice.json_lines(&["vlan", "networks", "-j", "100"]).await;
    assert!(listed.iter().any(|n| n["id"] == id.as_str()));

    // A VLAN with networks cannot go; deleting the network first works.
    alice.fails(&["vlan", "delete", "100"]).await;
    alice.ok(&["network", "delete", &id]).await;
    alice.ok(&["vlan", "delete", "100"]).await;
    let vlans = alice.json_lines(&["vlan", "list", "-j"]).await;
    assert!(vlans.iter().all(|v| v["vlan_id"] != 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_self_made_certificate() {
    let stack = Dc::start(Options {
        tls: true,
        ..Options::cloudapi()
    })
    .await;
    let mut alice = stack.tenant("alice", "rsa").await;
    alice.url = format!("https://{}", stack.tls().expect("HTTPS listener"));
    alice.insecure = true;
    let out = alice.ok(&["account", "get", "-j"]).await;
    assert_eq!(out.json()["login"], "alice");
    // Without TRITON_TLS_INSECURE the CLI refuses the self-made certificate.
    alice.insecure = false;
    alice.fails(&["account", "get"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_nics_create_list_get_delete() {
    let tenants = TwoTenants::start().await;
    let (stack, alice, bob) = (&tenants.dc, &tenants.alice, &tenants.bob);
    // A second public network on a nic tag the node has, and one only bob may use.
    let internal = stack.external_network("internal", "10.210.0", |_| {}).await;
    let bobs = stack
        .external_network("bobs", "10.211.0", |n| {
            n.owner_uuids = vec![bob.uuid.clone()]
        })
        .await;
    let mut napi_client = stack.napi();
    let inst = alice.create_instance("web0").await;
    let vm = stack.vm(&inst).await;
    assert_eq!(vm.nics.len(), 1);
    let primary_mac = vm.nics[0].mac.clone();

    // create: answered at once with the NIC, `provisioning`, by network name.
    let out = alice
        .ok(&["instance", "nic", "create", "-j", "web0", "internal"])
        .await;
    let nic = out.json();
    assert_eq!(nic["state"], "provisioning", "{}", out.stdout);
    assert_eq!(nic["network"], internal.uuid.as_str());
    assert_eq!(nic["primary"], false);
    let ip = nic["ip"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.210.0."), "{ip}");
    let mac = nic["mac"].as_str().unwrap().to_string();
    let bare = mac.replace(':', "");
    // ... and `running` once the job has put it on the instance.
    eventually("the NIC runs", Duration::from_secs(60), || async {
        alice
            .json(&["instance", "nic", "get", "-j", &inst, &bare])
            .await["state"]
            == "running"
    })
    .await;
    let vm = stack.vm(&inst).await;
    assert_eq!(vm.nics.len(), 2, "{:?}", vm.nics);
    assert!(vm.nics.iter().any(|n| n.mac == mac && n.ip == ip));
    let in_napi = napi_client
        .get_nic(napi::GetNicRequest { mac: mac.clone() })
        .await
        .expect("the NIC in NAPI")
        .into_inner();
    assert_eq!(in_napi.belongs_to_uuid, inst);
    assert_eq!(in_napi.owner_uuid, alice.uuid);
    assert_eq!(in_napi.state, "running");

    // list, and get with the MAC's colons.
    let out = alice.ok(&["instance", "nic", "list", "-j", "web0"]).await;
    let listed = out.json_lines();
    assert_eq!(listed.len(), 2, "{}", out.stdout);
    let macs: Vec<&str> = listed.iter().filter_map(|n| n["mac"].as_str()).collect();
    assert!(macs.contains(&mac.as_str()) && macs.contains(&primary_mac.as_str()));
    alice
        .prints(&["instance", "nic", "list", "web0"], &[&ip])
        .await;
    let got = alice
        .json(&["instance", "nic", "get", "-j", &inst, &mac])
        .await;
    assert_eq!(got["ip"], ip.as_str());
    assert_eq!(got["network"], internal.uuid.as_str());

    // Triton's answers, by hand: 302 to the NIC already on a network, and the codes
    // of bad input.
    let by_hand = stack.hand_client("alice", &alice.uuid).await;
    let nics_path = format!("/alice/machines/{inst}/nics");
    let r = by_hand
        .send_json("POST", &nics_path, &json!({ "network": internal.uuid }))
        .await;
    assert_eq!(r.status, 302, "{}", r.body);
    assert_eq!(
        r.header("location"),
        Some(format!("{nics_path}/{bare}").as_str())
    );
    let r = by_hand.send("POST", &nics_path, "{}").await;
    let msg = r.assert_error(409, "MissingParameter");
    assert!(msg.contains("network"), "{msg}");
    let r = by_hand
        .send("POST", &nics_path, r#"{"network": "nope"}"#)
        .await;
    let msg = r.assert_error(409, "InvalidArgument");
    assert!(msg.contains("network"), "{msg}");
    let r = by_hand.send("DELETE", &format!("{nics_path}/zz"), "").await;
    let msg = r.assert_error(409, "InvalidArgument");
    assert!(msg.contains("mac"), "{msg}");
    assert_eq!(stack.vm(&inst).await.nics.len(), 2, "nothing was added");

    // Refusals: a network alice may not use, one that does not exist, another
    // account's instance, an unknown NIC, the primary NIC while others remain.
    let out = alice
        .fails(&["instance", "nic", "create", &inst, &bobs.uuid])
        .await;
    assert!(
        out.stderr.contains("InvalidArgument") && out.stderr.contains("not found"),
        "{}",
        out.stderr
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    alice
        .fails_saying(
            &[
                "instance",
                "nic",
                "create",
                &inst,
                &format!("ipv4_uuid={unknown}"),
            ],
            &format!("network {unknown} not found"),
        )
        .await;
    bob.fails_saying(&["instance", "nic", "list", &inst], "ResourceNotFound")
        .await;
    bob.fails_saying(
        &["instance", "nic", "create", &inst, &bobs.uuid],
        "ResourceNotFound",
    )
    .await;
    bob.fails_saying(
        &["instance", "nic", "delete", "-f", &inst, &bare],
        "ResourceNotFound",
    )
    .await;
    alice
        .fails_saying(
            &["instance", "nic", "get", &inst, "90b8d0000001"],
            "ResourceNotFound",
        )
        .await;
    let out = alice
        .fails(&["instance", "nic", "delete", "-f", &inst, &primary_mac])
        .await;
    assert!(
        out.stderr.contains("InvalidArgument") && out.stderr.contains("primary"),
        "{}",
        out.stderr
    );
    assert_eq!(
        stack.vm(&inst).await.nics.len(),
        2,
        "refusals change nothing"
    );

    // delete: gone from VMAPI and NAPI, the IP free again.
    alice
        .ok(&["instance", "nic", "delete", "-f", &inst, &mac])
        .await;
    eventually("the NIC is removed", Duration::from_secs(60), || async {
        stack.vm(&inst).await.nics.len() == 1
    })
    .await;
    assert_eq!(stack.vm(&inst).await.nics[0].mac, primary_mac);
    let gone = napi_client
        .get_nic(napi::GetNicRequest { mac: mac.clone() })
        .await
        .expect_err("the NIC is deleted in NAPI");
    assert_eq!(gone.code(), tonic::Code::NotFound);
    let ips = stack.ips_of(&internal.uuid).await;
    assert!(
        ips.iter().all(|i| i.ip != ip || i.free),
        "{ip} still held: {ips:?}"
    );
    alice
        .fails_saying(
            &["instance", "nic", "get", &inst, &bare],
            "ResourceNotFound",
        )
        .await;
    let out = alice.ok(&["instance", "nic", "list", "-j", &inst]).await;
    assert_eq!(out.json_lines().len(), 1);

    // create -w waits until the NIC runs.
    let out = alice
        .ok(&[
            "instance",
            "nic",
            "create",
            "-w",
            "-j",
            &inst,
            &internal.uuid,
        ])
        .await;
    let waited = out.json_lines();
    assert_eq!(waited.last().unwrap()["state"], "running", "{}", out.stdout);
    assert_eq!(stack.vm(&inst).await.nics.len(), 2);
}

/// The names of the instance's snapshots as its (simulated) node has them.
async fn node_snapshots(sim: &cn_agent::sim::SimBackend, uuid: uuid::Uuid) -> Vec<String> {
    use cn_agent::ZoneBackend;
    sim.get(uuid)
        .await
        .expect("the instance on its node")
        .snapshots
        .into_iter()
        .map(|s| s.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_snapshots_create_list_get_start_from_delete() {
    let tenants = TwoTenants::start().await;
    let (stack, alice, bob) = (&tenants.dc, &tenants.alice, &tenants.bob);
    let inst = alice.create_instance("snappy").await;
    let sim = stack.sims[0].clone();
    let vm_id: uuid::Uuid = inst.parse().unwrap();
    sim.disk_write(vm_id, "/etc/motd", "before").unwrap();

    // create -w with a name: done when the CLI returns.
    alice
        .prints(
            &[
                "instance", "snapshot", "create", "-w", "-n", "first", "snappy",
            ],
            &["first"],
        )
        .await;
    let got = alice
        .json(&["instance", "snapshot", "get", "-j", "snappy", "first"])
        .await;
    assert_eq!(got["name"], "first");
    assert_eq!(got["state"], "created");
    assert!(got["created"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(node_snapshots(&sim, vm_id).await, ["first"]);

    // create without a name or -w: Triton names it from the time; it is `created` soon.
    let out = alice
        .ok(&["instance", "snapshot", "create", "snappy"])
        .await;
    let auto = out
        .stdout
        .split_whitespace()
        .nth(2)
        .expect("\"Creating snapshot NAME of instance ...\"")
        .to_string();
    assert!(
        auto.len() > 10 && auto.chars().all(|c| c.is_ascii_alphanumeric()),
        "{}",
        out.stdout
    );
    eventually(
        "the unnamed snapshot is created",
        Duration::from_secs(60),
        || async {
            alice
                .json(&["instance", "snapshot", "get", "-j", "snappy", &auto])
                .await["state"]
                == "created"
        },
    )
    .await;

    // list, as JSON and as a table.
    let listed = alice
        .json_lines(&["instance", "snapshot", "list", "-j", "snappy"])
        .await;
    let names: Vec<&str> = listed.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["first", auto.as_str()]);
    assert!(listed.iter().all(|s| s["state"] == "created"), "{listed:?}");
    alice
        .prints(
            &["instance", "snapshot", "list", "snappy"],
            &["NAME", "first", "created"],
        )
        .await;

    // Refused: a name in use, a bad name (InvalidArgument naming `name`), an unknown
    // snapshot.
    alice
        .refuses(&[
            (
                &["instance", "snapshot", "create", "-n", "first", "snappy"],
                "already",
            ),
            (
                &["instance", "snapshot", "create", "-n", "no/slash", "snappy"],
                "name",
            ),
            (
                &["instance", "snapshot", "get", "snappy", "nope"],
                "not found",
            ),
        ])
        .await;

    // start --snapshot: the instance goes back to the snapshot's disk and runs.
    sim.disk_write(vm_id, "/etc/motd", "changed").unwrap();
    sim.disk_write(vm_id, "/after", "after").unwrap();
    alice
        .ok(&["instance", "start", "--snapshot=first", "snappy"])
        .await;
    eventually("the rollback ran", Duration::from_secs(60), || async {
        sim.disk_read(vm_id, "/after").is_none()
    })
    .await;
    assert_eq!(sim.disk_read(vm_id, "/etc/motd").as_deref(), Some("before"));
    eventually(
        "the instance runs again",
        Duration::from_secs(60),
        || async { alice.json(&["instance", "get", "-j", "snappy"]).await["state"] == "running" },
    )
    .await;
    let audit = alice
        .json_lines(&["instance", "audit", "-j", "snappy"])
        .await;
    let actions: Vec<&str> = audit.iter().filter_map(|a| a["action"].as_str()).collect();
    assert!(actions.contains(&"rollback_snapshot"), "{actions:?}");
    assert!(actions.contains(&"create_snapshot"), "{actions:?}");

    // Another account sees none of it.
    bob.fails_saying(
        &["instance", "snapshot", "list", &inst],
        &format!("{inst} does not exist"),
    )
    .await;
    bob.fails_saying(
        &["instance", "snapshot", "delete", "-f", &inst, "first"],
        &format!("{inst} does not exist"),
    )
    .await;

    // Triton's status codes, by hand.
    let by_hand = stack.hand_client("alice", &alice.uuid).await;
    let snaps = format!("/alice/machines/{inst}/snapshots");
    let r = by_hand.send("POST", &snaps, r#"{"name": "by-hand"}"#).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.header("location"),
        Some(format!("{snaps}/by-hand").as_str())
    );
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["name"], "by-hand");
    assert!(
        body["state"] == "creating" || body["state"] == "created",
        "{body}"
    );
    let r = by_hand
        .send_json("POST", &snaps, &json!({ "name": "x".repeat(65) }))
        .await;
    let msg = r.assert_error(409, "InvalidArgument");
    assert!(msg.contains("name"), "{msg}");
    let r = by_hand.send("POST", &format!("{snaps}/nope"), "").await;
    r.assert_error(404, "ResourceNotFound");

    // delete -w: gone from the list and from the node.
    eventually(
        "the hand-made snapshot is created",
        Duration::from_secs(60),
        || async {
            alice
                .json(&["instance", "snapshot", "get", "-j", "snappy", "by-hand"])
                .await["state"]
                == "created"
        },
    )
    .await;
    alice
        .ok(&[
            "instance", "snapshot", "delete", "-w", "-f", "snappy", "first",
        ])
        .await;
    let listed = alice
        .json_lines(&["instance", "snapshot", "list", "-j", "snappy"])
        .await;
    let names: Vec<&str> = listed.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, [auto.as_str(), "by-hand"]);
    assert_eq!(
        node_snapshots(&sim, vm_id).await,
        [auto.as_str(), "by-hand"]
    );
    let r = by_hand
        .send("DELETE", &format!("{snaps}/by-hand"), "")
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    alice
        .fails_saying(
            &["instance", "snapshot", "delete", "-f", "snappy", "first"],
            "not found",
        )
        .await;
}
