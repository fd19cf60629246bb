//! Instances through the `triton` CLI: create (waiting on `provisioning`), list, get,
//! ip, tags, rename, resize, stop/start/reboot, deletion protection and delete, on a
//! simulated compute node and on a real linux one (the instance runs, answers on its
//! IP, stops); and a second account that can see or touch none of it.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use dc_testkit::cloudapi::{Catalog, TwoTenants};
use dc_testkit::linux::{LinuxHost, answers_http};
use dc_testkit::{Dc, Options, eventually};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_lifecycle_through_the_cli() {
    let tenants = TwoTenants::start().await;
    let (stack, alice, bob) = (&tenants.dc, &tenants.alice, &tenants.bob);
    let Catalog {
        package: small,
        image,
    } = &tenants.catalog;
    let large = stack.package("g1-large", 2048, &[]).await;

    // Create: answers at once in `provisioning`; -w waits until it runs.
    let out = alice
        .ok(&[
            "instance",
            "create",
            "-j",
            "-n",
            "web0",
            "-t",
            "role=web",
            "-t",
            "count=3",
            "-m",
            "foo=bar",
            "base-64-lts",
            "g1-small",
        ])
        .await;
    let created = out.json_lines();
    assert_eq!(created[0]["state"], "provisioning", "{}", out.stdout);
    assert_eq!(created[0]["name"], "web0");
    let id = created[0]["id"].as_str().unwrap().to_string();
    alice.ok(&["instance", "wait", &id]).await;
    let vm = stack.vm(&id).await;
    assert_eq!(vm.state, "running");
    assert_eq!(vm.owner_uuid, alice.uuid);
    assert_eq!(vm.billing_id, small.uuid);
    assert_eq!(vm.image_uuid, image.uuid);
    assert_eq!(
        vm.customer_metadata.get("foo").map(String::as_str),
        Some("bar")
    );

    // And one made with -w from the start.
    let db_id = alice.create_instance("db0").await;

    // List, get, ip.
    let list = alice.instances().await;
    let names: Vec<&str> = list.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"web0") && names.contains(&"db0"));
    // Filters are exact: `*`, `)(` and `\` in a name neither match every instance nor
    // widen the filter.
    let by_name = alice.ok(&["instance", "list", "-j", "name=web0"]).await;
    assert_eq!(by_name.json_lines().len(), 1, "{}", by_name.stdout);
    for name in [
        "*",
        "web*",
        "web0)(alias=*",
        "web0)(|(owner_uuid=*",
        "web0\\",
    ] {
        let out = alice
            .ok(&["instance", "list", "-j", &format!("name={name}")])
            .await;
        assert!(out.json_lines().is_empty(), "name={name}: {}", out.stdout);
    }
    alice
        .prints(&["instance", "list"], &["web0", "running"])
        .await;
    let got = alice.json(&["instance", "get", "-j", "web0"]).await;
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["state"], "running");
    assert_eq!(got["package"], "g1-small");
    assert_eq!(got["memory"], 1024);
    assert_eq!(got["image"], image.uuid.as_str());
    assert_eq!(got["tags"], json!({"role": "web", "count": 3}));
    assert_eq!(got["metadata"]["foo"], "bar");
    let ip = alice.text(&["instance", "ip", "web0"]).await;
    assert!(ip.starts_with("10.88.88."), "{ip}");
    assert_eq!(got["primaryIp"], ip.as_str());
    assert_eq!(vm.nics.len(), 1);
    let vm = stack.vm(&id).await;
    assert_eq!(vm.nics[0].ip, ip);

    // Tags.
    alice
        .ok(&["instance", "tag", "set", "-w", "web0", "env=prod", "tier=1"])
        .await;
    let tags = alice.json(&["instance", "tag", "list", "-j", "web0"]).await;
    assert_eq!(
        tags,
        json!({"role": "web", "count": 3, "env": "prod", "tier": 1})
    );
    assert_eq!(
        alice.text(&["instance", "tag", "get", "web0", "env"]).await,
        "prod"
    );
    alice
        .ok(&["instance", "tag", "delete", "-w", "web0", "env"])
        .await;
    let tags = alice.json(&["instance", "tag", "list", "-j", "web0"]).await;
    assert_eq!(tags, json!({"role": "web", "count": 3, "tier": 1}));
    let vm = stack.vm(&id).await;
    assert!(!vm.tags.contains_key("env"));

    // Metadata.
    alice
        .ok(&["instance", "metadata", "set", "-w", "web0", "color=blue"])
        .await;
    let md = alice
        .json(&["instance", "metadata", "list", "-j", "web0"])
        .await;
    assert_eq!(md["color"], "blue");
    assert_eq!(md["foo"], "bar");

    // Rename and resize.
    alice
        .ok(&["instance", "rename", "-w", "web0", "web1"])
        .await;
    assert_eq!(stack.vm(&id).await.alias, "web1");
    alice
        .ok(&["instance", "resize", "-w", "web1", "g1-large"])
        .await;
    let got = alice.json(&["instance", "get", "-j", "web1"]).await;
    assert_eq!(got["package"], "g1-large");
    assert_eq!(got["memory"], 2048);
    assert_eq!(stack.vm(&id).await.billing_id, large.uuid);

    // Stop, start, reboot.
    alice
        .prints(&["instance", "stop", "-w", "web1"], &["Stop instance web1"])
        .await;
    assert_eq!(stack.vm(&id).await.state, "stopped");
    assert_eq!(
        alice.json(&["instance", "get", "-j", "web1"]).await["state"],
        "stopped"
    );
    alice.ok(&["instance", "start", "-w", "web1"]).await;
    assert_eq!(stack.vm(&id).await.state, "running");
    let boot = stack.vm(&id).await.boot_timestamp;
    alice
        .prints(
            &["instance", "reboot", "-w", "web1"],
            &["Rebooted instance"],
        )
        .await;
    assert_eq!(stack.vm(&id).await.state, "running");
    let _ = boot;

    // Bob sees and touches none of it: 404s, as Triton answers.
    let bobs = bob.instances().await;
    assert!(bobs.is_empty(), "{bobs:?}");
    let out = bob.fails(&["instance", "get", &id]).await;
    assert!(
        out.stderr.contains("ResourceNotFound") || out.stderr.contains("not found"),
        "{}",
        out.stderr
    );
    bob.fails(&["instance", "stop", &id]).await;
    bob.fails(&["instance", "delete", "-f", &id]).await;
    bob.fails(&["instance", "tag", "set", &id, "owner=bob"])
        .await;
    let vm = stack.vm(&id).await;
    assert_eq!(vm.state, "running");
    assert!(!vm.tags.contains_key("owner"));

    // Deletion protection.
    alice
        .ok(&["instance", "enable-deletion-protection", "-w", "web1"])
        .await;
    assert_eq!(
        alice.json(&["instance", "get", "-j", "web1"]).await["deletion_protection"],
        true
    );
    alice
        .fails_saying(&["instance", "delete", "-f", "web1"], "deletion_protection")
        .await;
    alice
        .ok(&["instance", "disable-deletion-protection", "-w", "web1"])
        .await;

    // Delete.
    alice
        .prints(
            &["instance", "delete", "-f", "-w", "web1", &db_id],
            &["Delete instance"],
        )
        .await;
    assert_eq!(stack.vm(&id).await.state, "destroyed");
    assert_eq!(stack.vm(&db_id).await.state, "destroyed");
    let list = alice.instances().await;
    assert!(list.is_empty(), "{list:?}");
    alice.fails(&["instance", "get", &id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_instance_runs_answers_and_stops() {
    let host = LinuxHost::node("c", "external");
    let tarball = host.image_tarball();
    let stack = Dc::start(Options {
        compute: true,
        sim_nodes: 0,
        linux: Some(host.node_options()),
        ..Options::cloudapi()
    })
    .await;
    let alice = stack.tenant("alice", "ed25519").await;
    stack.catalog(256, tarball).await;

    let id = alice.create_instance("www").await;
    let ip = alice.text(&["instance", "ip", "www"]).await;
    let subnet = host.subnet();
    assert!(ip.starts_with(&format!("10.99.{subnet}.")), "{ip}");
    answers_eventually(&ip, true, &format!("the instance answers HTTP on {ip}")).await;

    alice.ok(&["instance", "stop", "-w", "www"]).await;
    answers_eventually(&ip, false, "a stopped instance does not answer").await;
    alice.ok(&["instance", "start", "-w", "www"]).await;
    answers_eventually(&ip, true, "a started instance answers again").await;

    // A snapshot, the page changed inside the instance, and the instance started from
    // the snapshot: it serves the page as it was.
    alice
        .ok(&[
            "instance", "snapshot", "create", "-w", "-n", "pristine", "www",
        ])
        .await;
    let root = host.instance_root(&id).expect("the instance runs");
    std::fs::write(root.join("www/index.html"), "defaced\n").unwrap();
    answers_eventually(&ip, false, "the changed page is served").await;
    alice
        .ok(&["instance", "start", "--snapshot=pristine", "www"])
        .await;
    answers_eventually(
        &ip,
        true,
        "started from the snapshot, the instance serves the page as it was",
    )
    .await;
    let listed = alice
        .json_lines(&["instance", "snapshot", "list", "-j", "www"])
        .await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["state"], "created");
    alice
        .ok(&[
            "instance", "snapshot", "delete", "-f", "-w", "www", "pristine",
        ])
        .await;
    assert!(
        alice
            .json_lines(&["instance", "snapshot", "list", "-j", "www"])
            .await
            .is_empty()
    );

    alice.ok(&["instance", "delete", "-f", "-w", "www"]).await;
    answers_eventually(&ip, false, "a deleted instance is gone").await;
}

/// Waits until the instance at `ip` answers HTTP (`want`) or does not, failing the
/// test with `what` after 30 s.
async fn answers_eventually(ip: &str, want: bool, what: &str) {
    eventually(what, Duration::from_secs(30), || async move {
        answers_http(ip).await == want
    })
    .await;
}
