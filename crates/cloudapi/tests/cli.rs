//! The `triton` CLI (npm `triton@7`) against CloudAPI, as a tenant uses it: what it
//! prints, and what changed behind CloudAPI.

mod common;

use common::{Options, Stack};
use triton_proto::napi::v1 as napi;
use triton_proto::ufds::v1 as ufds;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_get_and_update() {
    let stack = Stack::start().await;
    let alice = stack.tenant("alice", "rsa").await;

    let out = alice.ok(&["account", "get", "-j"]).await;
    let account = out.json();
    assert_eq!(account["login"], "alice");
    assert_eq!(account["id"], alice.uuid.as_str());
    assert_eq!(account["email"], "alice@example.com");

    let out = alice.ok(&["account", "get"]).await;
    assert!(out.stdout.contains("login: alice"), "{}", out.stdout);

    alice
        .ok(&["account", "update", "companyName=Acme", "firstName=Alice"])
        .await;
    let stored = stack
        .ufds
        .clone()
        .get_account(ufds::GetAccountRequest {
            account: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.company, "Acme");
    assert_eq!(stored.givenname, "Alice");
    let account = alice.ok(&["account", "get", "-j"]).await.json();
    assert_eq!(account["companyName"], "Acme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_type_signs_requests() {
    let stack = Stack::start().await;
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
    let stack = Stack::start().await;
    let alice = stack.tenant("alice", "ed25519").await;

    let keys = alice.ok(&["key", "list", "-j"]).await.json_lines();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["fingerprint"], alice.fingerprint.as_str());

    // A second key, from a file, with a name.
    let extra = alice.home.path().join("extra");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "ed25519", "-C", "extra", "-f"])
        .arg(&extra)
        .status()
        .unwrap();
    assert!(st.success());
    let pubfile = format!("{}.pub", extra.display());
    let out = alice.ok(&["key", "add", "-n", "laptop", &pubfile]).await;
    assert!(out.stdout.contains("laptop"), "{}", out.stdout);

    let listed = alice.ok(&["key", "list", "-j"]).await.json_lines();
    let names: Vec<&str> = listed.iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"laptop"), "{names:?}");
    let in_ufds = stack
        .ufds
        .clone()
        .list_keys(ufds::ListKeysRequest {
            account: alice.uuid.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(in_ufds.len(), 2);

    let got = alice.ok(&["key", "get", "-j", "laptop"]).await.json();
    assert_eq!(got["name"], "laptop");

    alice.ok(&["key", "delete", "-y", "laptop"]).await;
    let listed = alice.ok(&["key", "list", "-j"]).await.json_lines();
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
    let stack = Stack::start().await;
    let alice = stack.tenant("alice", "rsa").await;
    let bob = stack.tenant("bob", "rsa").await;
    stack.package("g1-small", 1024, &[]).await;
    stack.package("g1-large", 4096, &[]).await;
    stack.package("alice-only", 2048, &[&alice.uuid]).await;

    let pkgs = alice.ok(&["package", "list", "-j"]).await.json_lines();
    let names: Vec<&str> = pkgs.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"g1-small") && names.contains(&"alice-only"),
        "{names:?}"
    );
    let small = pkgs.iter().find(|p| p["name"] == "g1-small").unwrap();
    assert_eq!(small["memory"], 1024);
    assert_eq!(small["disk"], 10240);
    let bobs = bob.ok(&["package", "list", "-j"]).await.json_lines();
    assert!(!bobs.iter().any(|p| p["name"] == "alice-only"));
    let out = alice.ok(&["package", "list"]).await;
    assert!(
        out.stdout.contains("g1-large") && out.stdout.contains("4G"),
        "{}",
        out.stdout
    );
    let got = alice.ok(&["package", "get", "-j", "g1-small"]).await.json();
    assert_eq!(got["name"], "g1-small");

    let public = stack
        .image(
            "base-64-lts",
            "24.4.1",
            true,
            common::ADMIN_UUID,
            b"base".to_vec(),
        )
        .await;
    let private = stack
        .image("alice-app", "1.0.0", false, &alice.uuid, b"app".to_vec())
        .await;
    let imgs = alice.ok(&["image", "list", "-j"]).await.json_lines();
    let ids: Vec<&str> = imgs.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert!(
        ids.contains(&public.uuid.as_str()) && ids.contains(&private.uuid.as_str()),
        "{ids:?}"
    );
    let bobs = bob.ok(&["image", "list", "-j"]).await.json_lines();
    let ids: Vec<&str> = bobs.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert!(
        ids.contains(&public.uuid.as_str()) && !ids.contains(&private.uuid.as_str()),
        "{ids:?}"
    );
    let got = alice
        .ok(&["image", "get", "-j", "base-64-lts"])
        .await
        .json();
    assert_eq!(got["id"], public.uuid.as_str());
    assert_eq!(got["version"], "24.4.1");
    bob.fails(&["image", "get", &private.uuid]).await;

    let nets = alice.ok(&["network", "list", "-j"]).await.json_lines();
    let names: Vec<&str> = nets.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        vec!["external"],
        "the admin network is the operator's"
    );
    let external = &nets[0];
    assert_eq!(external["public"], true);
    let got = alice.ok(&["network", "get", "-j", "external"]).await.json();
    assert_eq!(got["id"], external["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fabric_vlans_and_networks() {
    let stack = Stack::start().await;
    let alice = stack.tenant("alice", "ed25519").await;
    let bob = stack.tenant("bob", "ed25519").await;

    let out = alice
        .ok(&["vlan", "create", "-n", "web", "-D", "web tier", "-j", "100"])
        .await;
    assert_eq!(out.json()["vlan_id"], 100);
    let vlans = alice.ok(&["vlan", "list", "-j"]).await.json_lines();
    assert!(
        vlans
            .iter()
            .any(|v| v["vlan_id"] == 100 && v["name"] == "web")
    );
    let in_napi = stack
        .napi
        .clone()
        .list_fabric_vlans(napi::ListFabricVlansRequest {
            owner_uuid: alice.uuid.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .vlans;
    assert!(in_napi.iter().any(|v| v.vlan_id == 100));
    assert!(
        bob.ok(&["vlan", "list", "-j"])
            .await
            .json_lines()
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

    let nets = alice.ok(&["network", "list", "-j"]).await.json_lines();
    assert!(nets.iter().any(|n| n["id"] == id.as_str()));
    let bobs = bob.ok(&["network", "list", "-j"]).await.json_lines();
    assert!(!bobs.iter().any(|n| n["id"] == id.as_str()));
    bob.fails(&["network", "get", &id]).await;
    let listed = alice
        .ok(&["vlan", "networks", "-j", "100"])
        .await
        .json_lines();
    assert!(listed.iter().any(|n| n["id"] == id.as_str()));

    // A VLAN with networks cannot go; deleting the network first works.
    alice.fails(&["vlan", "delete", "100"]).await;
    alice.ok(&["network", "delete", &id]).await;
    alice.ok(&["vlan", "delete", "100"]).await;
    let vlans = alice.ok(&["vlan", "list", "-j"]).await.json_lines();
    assert!(vlans.iter().all(|v| v["vlan_id"] != 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_self_made_certificate() {
    let stack = Stack::start_with(Options {
        tls: true,
        ..Default::default()
    })
    .await;
    let mut alice = stack.tenant("alice", "rsa").await;
    alice.url = format!("https://{}", stack.tls.expect("HTTPS listener"));
    alice.insecure = true;
    let out = alice.ok(&["account", "get", "-j"]).await;
    assert_eq!(out.json()["login"], "alice");
    // Without TRITON_TLS_INSECURE the CLI refuses the self-made certificate.
    alice.insecure = false;
    alice.fails(&["account", "get"]).await;
}
