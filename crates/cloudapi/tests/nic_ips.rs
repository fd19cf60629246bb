//! Explicit IPs as a tenant asks for them: AddNic's `{ipv4_uuid, ipv4_ips}` and
//! CreateMachine's networks refuse the network's gateway, network and broadcast
//! addresses and addresses outside its provision range, each error naming the field and
//! the rule; and an address another tenant's instance holds is refused without naming
//! that instance, its account or its NIC.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use dc_testkit::cloudapi::TwoTenants;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_ips_follow_the_networks_rules_and_never_name_another_tenant() {
    let tenants = TwoTenants::start().await;
    let (stack, alice, bob) = (&tenants.dc, &tenants.alice, &tenants.bob);
    let image = &tenants.catalog.image;
    // A network both tenants may use.
    let shared = stack
        .external_network("shared", "10.212.0", |n| {
            n.provision_end_ip = "10.212.0.200".into();
            n.gateway = Some("10.212.0.1".into());
            n.owner_uuids = vec![alice.uuid.clone(), bob.uuid.clone()];
        })
        .await;
    let web0 = alice.create_instance("web0").await;
    let bob0 = bob.create_instance("bob0").await;

    // alice asks for .50 with the triton CLI, and gets it.
    let out = alice
        .ok(&[
            "instance",
            "nic",
            "create",
            "-j",
            "web0",
            &format!("ipv4_uuid={}", shared.uuid),
            "ipv4_ips=10.212.0.50",
        ])
        .await;
    let nic = out.json();
    assert_eq!(nic["ip"], "10.212.0.50", "{}", out.stdout);
    let alices_mac = nic["mac"].as_str().unwrap().to_string();

    // bob, by hand: each rule refused, with Triton's code and the field named.
    let by_hand = stack.hand_client("bob", &bob.uuid).await;
    let nics_path = format!("/bob/machines/{bob0}/nics");
    let add_nic = |ip: &str| json!({"network": {"ipv4_uuid": shared.uuid, "ipv4_ips": [ip]}});
    for (ip, rule) in [
        ("10.212.0.1", "is the gateway of 10.212.0.0/24"),
        ("10.212.0.0", "is the network address of 10.212.0.0/24"),
        ("10.212.0.255", "is the broadcast address of 10.212.0.0/24"),
        ("10.212.0.201", "is outside the provision range"),
        ("10.212.0.9", "is outside the provision range"),
        ("10.213.0.20", "is outside subnet"),
    ] {
        let r = by_hand
            .send("POST", &nics_path, &add_nic(ip).to_string())
            .await;
        let msg = r.assert_error(409, "InvalidArgument");
        assert!(msg.contains(&format!("ip: {ip} {rule}")), "{ip}: {msg}");
    }
    // The CLI shows the same to a tenant.
    let out = bob
        .fails(&[
            "instance",
            "nic",
            "create",
            "bob0",
            &format!("ipv4_uuid={}", shared.uuid),
            "ipv4_ips=10.212.0.1",
        ])
        .await;
    assert!(
        out.stderr.contains("InvalidArgument") && out.stderr.contains("gateway"),
        "{}",
        out.stderr
    );

    // alice's address: taken, and nothing says by whom.
    let secrets = [
        web0.as_str(),
        alice.uuid.as_str(),
        alices_mac.as_str(),
        "alice",
    ];
    let r = by_hand
        .send("POST", &nics_path, &add_nic("10.212.0.50").to_string())
        .await;
    let msg = r.assert_error(409, "InvalidArgument");
    assert!(msg.contains("ip 10.212.0.50 is already in use"), "{msg}");
    for s in secrets {
        assert!(!r.body.contains(s), "{s} in {}", r.body);
    }

    // CreateMachine with the same addresses: refused before any machine exists.
    let create_body = |ip: &str| {
        json!({
            "image": image.uuid,
            "package": "g1-small",
            "name": "bob1",
            "networks": [{"ipv4_uuid": shared.uuid, "ipv4_ips": [ip]}],
        })
        .to_string()
    };
    for (ip, words) in [
        ("10.212.0.50", &["ip 10.212.0.50 is already in use"][..]),
        (
            "10.212.0.1",
            &["ipv4_ips[0]: 10.212.0.1 is the gateway"][..],
        ),
        (
            "10.212.0.255",
            &["ipv4_ips[0]: 10.212.0.255 is the broadcast"][..],
        ),
        (
            "10.212.0.201",
            &["networks: ipv4_ips 10.212.0.201 is outside the provision range"][..],
        ),
    ] {
        let r = by_hand
            .send("POST", "/bob/machines", &create_body(ip))
            .await;
        let msg = r.assert_error(409, "InvalidArgument");
        for w in words {
            assert!(msg.contains(w), "{ip}: {msg}");
        }
        for s in secrets {
            assert!(!r.body.contains(s), "{s} in {}", r.body);
        }
    }
    let listed = bob.instances().await;
    assert_eq!(listed.len(), 1, "no machine was made: {listed:?}");
    assert_eq!(
        stack.vm(&bob0).await.nics.len(),
        1,
        "no NIC was added to bob0"
    );
}
