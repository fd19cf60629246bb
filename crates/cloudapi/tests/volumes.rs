//! Volumes through the `triton` CLI (node-triton 7) and by hand, on VolAPI with
//! simulated compute nodes (a volume's storage VM and the instances run there), and what
//! a datacenter without VolAPI answers.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use dc_testkit::cloudapi::{Tenant, TwoTenants};
use dc_testkit::{Dc, Options, eventually};
use serde_json::{Value, json};

/// A CloudAPI with no `volapi_url`: every volume endpoint and a CreateMachine with
/// volumes answer that volumes are not available; no instance is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_volapi_volumes_are_not_enabled() {
    let tenants = TwoTenants::start().await;
    let (dc, alice) = (&tenants.dc, &tenants.alice);
    for args in [
        &["volume", "list"][..],
        &["volume", "sizes"],
        &["volume", "create", "-n", "v1"],
        &["volume", "get", "v1"],
    ] {
        let out = alice.fails(args).await;
        assert!(
            out.stderr.contains("VolumesNotEnabled"),
            "triton {}: {}",
            args.join(" "),
            out.stderr
        );
    }
    alice
        .fails_saying(
            &[
                "instance",
                "create",
                "-n",
                "web0",
                "-v",
                "v1:/data",
                "base-64-lts",
                "g1-small",
            ],
            "error creating instance: Support for automounting volumes is not enabled",
        )
        .await;
    let hand = dc.hand_client("alice", &alice.uuid).await;
    let raw = hand.send("GET", "/alice/volumesizes", "").await;
    let message = raw.assert_error(501, "VolumesNotEnabled");
    assert!(message.contains("volumes are not available"), "{message}");
    assert!(alice.instances().await.is_empty());
}

/// The datacenter of the volume tests: CloudAPI with compute (sim nodes run any image),
/// NAPI's default fabrics, VolAPI, the `nfsserver` image and the `sdc_volume_nfs_*`
/// packages; alice and bob with their default fabric networks.
async fn volume_dc() -> (Dc, Tenant, Tenant, String) {
    let dc = Dc::start(Options {
        volapi: true,
        default_fabrics: true,
        ..Options::cloudapi_compute()
    })
    .await;
    let image = dc.catalog(1024, b"simulated".to_vec()).await.image.uuid;
    let alice = dc.tenant("alice", "rsa").await;
    let bob = dc.tenant("bob", "ed25519").await;
    for t in [&alice, &bob] {
        eventually("the default fabric", Duration::from_secs(20), || async {
            t.json(&["network", "get-default", "-j"]).await["fabric"] == true
        })
        .await;
    }
    (dc, alice, bob, image)
}

/// The account's default network (its default fabric).
async fn default_network(t: &Tenant) -> String {
    let net = t.json(&["network", "get-default", "-j"]).await;
    assert_eq!(net["fabric"], true, "{net}");
    net["id"].as_str().unwrap().to_string()
}

/// Create, list, get, rename, delete through the CLI and by hand; sizes; the errors of
/// bad names, sizes, types and networks, each leaving nothing behind; another account
/// gets 404 for every call on the volume; CreateMachine with `volumes` passes them to
/// VMAPI (the VM's `sdc:volumes` names the volume's server) and the volume cannot be
/// deleted while the instance refers to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_through_the_cli() {
    let (dc, alice, bob, image) = volume_dc().await;
    let alice_net = default_network(&alice).await;
    let bob_net = default_network(&bob).await;
    let hand = dc.hand_client("alice", &alice.uuid).await;
    let bob_hand = dc.hand_client("bob", &bob.uuid).await;

    // Sizes: ascending, tritonnfs, the smallest 10 GiB.
    let sizes = alice.json_lines(&["volume", "sizes", "-j"]).await;
    assert!(!sizes.is_empty());
    assert_eq!(sizes[0], json!({"size": 10240, "type": "tritonnfs"}));
    let mib: Vec<u64> = sizes.iter().map(|s| s["size"].as_u64().unwrap()).collect();
    assert!(mib.windows(2).all(|w| w[0] < w[1]), "{mib:?}");
    let largest = *mib.last().unwrap();

    // Create -w: ready, on the default fabric, with a filesystem_path.
    let out = alice
        .ok(&["volume", "create", "-n", "v1", "-w", "-j"])
        .await;
    let v1 = out.json_lines().pop().unwrap();
    assert_eq!(v1["state"], "ready", "{v1}");
    assert_eq!(v1["name"], "v1");
    assert_eq!(v1["type"], "tritonnfs");
    assert_eq!(v1["size"], 10240);
    assert_eq!(v1["owner_uuid"], alice.uuid.as_str());
    assert_eq!(v1["networks"], json!([alice_net]));
    assert!(v1.get("vm_uuid").is_none(), "{v1}");
    let id = v1["id"].as_str().unwrap().to_string();
    let path = v1["filesystem_path"].as_str().unwrap().to_string();
    let (ip, export) = path.split_once(':').unwrap();
    assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "{path}");
    assert_eq!(export, "/exports/data");

    // Its storage VM is the VolAPI's business: not among alice's instances, not
    // reachable as a machine.
    let listed = alice.instances().await;
    assert!(listed.is_empty(), "{listed:?}");
    let storage = dc.volume(&id).await.unwrap().vm_uuid;
    assert_eq!(dc.vm(&storage).await.owner_uuid, alice.uuid);
    for (method, path) in [
        ("GET", format!("/alice/machines/{storage}")),
        ("POST", format!("/alice/machines/{storage}?action=stop")),
        ("DELETE", format!("/alice/machines/{storage}")),
    ] {
        hand.send(method, &path, "")
            .await
            .assert_error(404, "ResourceNotFound");
    }

    // list, get by name and id, list with filters (node-triton sends predicates).
    let list = alice.json_lines(&["volume", "list", "-j"]).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(
        alice.json(&["volume", "get", "v1"]).await["id"],
        id.as_str()
    );
    assert_eq!(alice.json(&["volume", "get", &id]).await["name"], "v1");
    assert_eq!(
        alice
            .json_lines(&["volume", "list", "-j", "name=v1", "size=10240"])
            .await
            .len(),
        1
    );
    assert!(
        alice
            .json_lines(&["volume", "list", "-j", "size=20480"])
            .await
            .is_empty()
    );
    let r = hand.send("GET", "/alice/volumes?name=v*", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    assert_eq!(r.header("x-resource-count"), Some("1"));
    let r = hand.send("GET", "/alice/volumes?name=x*", "").await;
    assert_eq!(r.json(), json!([]));
    let r = hand
        .send(
            "GET",
            "/alice/volumes?name=v1&predicate=%7B%22eq%22%3A%5B%22name%22%2C%22v1%22%5D%7D",
            "",
        )
        .await;
    let m = r.assert_error(409, "InvalidArgument");
    assert!(m.contains("conflicts with parameter"), "{m}");
    let r = hand.send("GET", "/alice/volumes?owner_uuid=x", "").await;
    let m = r.assert_error(409, "InvalidArgument");
    assert!(m.contains("invalid parameter: owner_uuid"), "{m}");
    let r = hand.send("GET", "/alice/volumes?state=gone", "").await;
    r.assert_error(409, "InvalidArgument");

    // Rename (UpdateVolume, 204), and back.
    let r = hand
        .send("POST", &format!("/alice/volumes/{id}"), r#"{"name":"v2"}"#)
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(alice.json(&["volume", "get", &id]).await["name"], "v2");
    let r = hand
        .send("POST", &format!("/alice/volumes/{id}"), r#"{"name":"v1"}"#)
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = hand
        .send(
            "POST",
            &format!("/alice/volumes/{id}"),
            r#"{"name":"bad name"}"#,
        )
        .await;
    let m = r.assert_error(409, "InvalidArgument");
    assert!(m.contains("Invalid volume name: bad name"), "{m}");
    let r = hand
        .send("POST", &format!("/alice/volumes/{id}"), r#"{"size":20480}"#)
        .await;
    let m = r.assert_error(409, "InvalidArgument");
    assert!(m.contains("invalid parameter: size"), "{m}");

    // Bad input: each refused with its code, naming the rule; nothing is made.
    let too_big = format!("{}G", largest / 1024 + 1);
    alice
        .refuses(&[
            (
                &["volume", "create", "-n", "!foo!"],
                "error (InvalidArgument): Error: Invalid volume name: !foo!. Volume name should match",
            ),
            (
                &["volume", "create", "-n", "v3", "--type", "foobar"],
                "error (InvalidArgument): Error: Invalid volume type: foobar",
            ),
            (
                &["volume", "create", "-n", "v3", "-s", &too_big],
                "volume size not available",
            ),
        ])
        .await;
    let r = hand
        .send(
            "POST",
            "/alice/volumes",
            r#"{"name":"v3","type":"tritonnfs","size":12345}"#,
        )
        .await;
    let m = r.assert_error(409, "VolumeSizeNotAvailable");
    assert!(m.contains("10240"), "the sizes are listed: {m}");
    let r = hand
        .send(
            "POST",
            "/alice/volumes",
            r#"{"name":"v3","type":"tritonnfs","size":"10G"}"#,
        )
        .await;
    let m = r.assert_error(409, "InvalidArgument");
    assert!(m.contains("Invalid volume size"), "{m}");
    let external = alice.json(&["network", "get", "-j", "external"]).await;
    for (networks, says) in [
        (
            json!([external["id"]]),
            "not a fabric network of this account",
        ),
        (json!([bob_net]), "no such network"),
        (json!(["nope"]), "is not a network uuid"),
    ] {
        let body = json!({"name": "v3", "type": "tritonnfs", "networks": networks});
        let r = hand.send_json("POST", "/alice/volumes", &body).await;
        let m = r.assert_error(409, "InvalidArgument");
        assert!(
            m.contains("Invalid networks") && m.contains(says),
            "{networks}: {m}"
        );
    }
    alice
        .fails_saying(
            &["volume", "create", "-n", "v1", "-w"],
            "VolumeAlreadyExists",
        )
        .await;
    let names: Vec<Value> = alice
        .json_lines(&["volume", "list", "-j"])
        .await
        .iter()
        .map(|v| v["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("v1")]);

    // Another account: 404 for everything on alice's volume, an empty list.
    bob.fails_saying(&["volume", "get", "v1"], "ResourceNotFound")
        .await;
    // By id, node-triton prints the error body of any code but ResourceNotFound (its
    // getVolume); CloudAPI answers VolumeNotFound as Triton's does (`volume delete -w`
    // waits for that name).
    let out = bob.triton(&["volume", "get", &id]).await;
    assert!(
        out.stdout.contains("\"VolumeNotFound\"") && !out.stdout.contains("\"v1\""),
        "{}",
        out.stdout
    );
    assert!(bob.json_lines(&["volume", "list", "-j"]).await.is_empty());
    for (method, body) in [("GET", ""), ("POST", r#"{"name":"mine"}"#), ("DELETE", "")] {
        let r = bob_hand
            .send(method, &format!("/bob/volumes/{id}"), body)
            .await;
        r.assert_error(404, "VolumeNotFound");
    }
    let r = hand.send("GET", "/alice/volumes/not-a-uuid", "").await;
    r.assert_error(409, "InvalidArgument");

    // CreateMachine with volumes: bad mounts refused naming the volume and the rule.
    for (mount, says) in [("v1:/proc", "reserved"), ("v1:/data/../etc", "normalized")] {
        let out = alice
            .fails(&[
                "instance",
                "create",
                "-n",
                "bad",
                "-v",
                mount,
                "base-64-lts",
                "g1-small",
            ])
            .await;
        assert!(
            out.stderr.contains("volume v1") && out.stderr.contains(says),
            "{mount}: {}",
            out.stderr
        );
    }
    let body = json!({"image": image, "package": "g1-small", "name": "bad",
        "volumes": [{"name": "v1", "mountpoint": "/a", "mode": "rx"}]});
    let r = hand.send_json("POST", "/alice/machines", &body).await;
    let m = r.assert_error(409, "InvalidArgument");
    assert!(m.contains("mode \"rx\" must be one of ro, rw"), "{m}");
    let body = json!({"image": image, "package": "g1-small", "name": "bad",
        "volumes": [{"name": "v1", "mountpoint": "/a"}, {"name": "v1", "mountpoint": "/a"}]});
    let r = hand.send_json("POST", "/alice/machines", &body).await;
    let m = r.assert_error(409, "InvalidArgument");
    assert!(m.contains("already that of volume v1"), "{m}");
    assert!(alice.instances().await.is_empty());

    // A real one: VMAPI gets the mounts, writes sdc:volumes with the volume's server.
    let vm_id = alice
        .create_instance_with("web0", &["-v", "v1:/data", "-v", "v1:/ro:ro"], "g1-small")
        .await;
    let vm = dc.vm(&vm_id).await;
    let mounts: Value = serde_json::from_str(
        vm.internal_metadata
            .get("sdc:volumes")
            .expect("sdc:volumes"),
    )
    .unwrap();
    assert_eq!(
        mounts,
        json!([
            {"name": "v1", "type": "tritonnfs", "mode": "rw", "mountpoint": "/data", "nfsvolume": path},
            {"name": "v1", "type": "tritonnfs", "mode": "ro", "mountpoint": "/ro", "nfsvolume": path},
        ])
    );
    eventually("the instance in refs", Duration::from_secs(20), || async {
        alice.json(&["volume", "get", "v1"]).await["refs"] == json!([vm_id])
    })
    .await;
    alice
        .fails_saying(&["volume", "delete", "-y", "v1"], "VolumeInUse")
        .await;
    assert_eq!(alice.json(&["volume", "get", "v1"]).await["state"], "ready");
    // bob cannot mount alice's volume by name: his provision fails, nothing runs.
    let out = bob
        .triton(&[
            "instance",
            "create",
            "-w",
            "-n",
            "b0",
            "-v",
            "v1:/data",
            "base-64-lts",
            "g1-small",
        ])
        .await;
    assert!(!out.success, "{}", out.stdout);
    assert!(
        bob.json_lines(&["instance", "list", "-j", "state=running"])
            .await
            .is_empty()
    );

    // Once the instance is gone, the volume deletes; -w waits until it is gone.
    alice.ok(&["instance", "delete", "-f", "-w", "web0"]).await;
    eventually("no refs", Duration::from_secs(20), || async {
        alice.json(&["volume", "get", "v1"]).await["refs"] == json!([])
    })
    .await;
    alice.ok(&["volume", "delete", "-y", "-w", "v1"]).await;
    alice
        .fails_saying(&["volume", "get", "v1"], "ResourceNotFound")
        .await;
    let r = hand.send("GET", &format!("/alice/volumes/{id}"), "").await;
    r.assert_error(404, "VolumeNotFound");
    assert!(alice.json_lines(&["volume", "list", "-j"]).await.is_empty());

    // Tags and an affinity rule, as node-triton's cli-volumes test makes its volume: the
    // tags read back through `volume get`. That test checks them only when the Server
    // header names cloudapi 9.8.6 or later (its cloudapiVersionGtrOrEq), so the header
    // must say so for the check to run at all.
    let out = alice.ok(&["cloudapi", "/--ping", "-i"]).await;
    let version = out
        .stderr
        .lines()
        .chain(out.stdout.lines())
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("server: cloudapi/")
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no Server header: {} {}", out.stdout, out.stderr));
    let parts: Vec<u64> = version.split('.').map(|p| p.parse().unwrap()).collect();
    assert!(
        parts.as_slice() >= [9, 8, 6].as_slice(),
        "Server: cloudapi/{version}"
    );
    // node-triton types `tier=2` as a number; Triton's volumes take string values only.
    alice
        .fails_saying(
            &["volume", "create", "-n", "tagged", "--tag", "tier=2"],
            "Invalid tags: tags must be an object of key/value strings",
        )
        .await;
    assert!(alice.json_lines(&["volume", "list", "-j"]).await.is_empty());
    alice
        .ok(&[
            "volume",
            "create",
            "-n",
            "tagged",
            "--tag",
            "role=volume",
            "--tag",
            "tier=gold",
            "--affinity",
            "sometag!=nosuchtag",
            "-w",
        ])
        .await;
    let got = alice.json(&["volume", "get", "--json", "tagged"]).await;
    assert_eq!(got["state"], "ready", "{got}");
    assert_eq!(
        got["tags"],
        json!({"role": "volume", "tier": "gold"}),
        "{got}"
    );
    let listed = alice.json_lines(&["volume", "list", "-j"]).await;
    assert_eq!(listed[0]["tags"], got["tags"], "{listed:?}");
    alice.ok(&["volume", "delete", "-y", "-w", "tagged"]).await;
}
