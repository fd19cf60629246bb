//! Instances through the `triton` CLI: create (waiting on `provisioning`), list, get,
//! ip, tags, rename, resize, stop/start/reboot, deletion protection and delete, on a
//! simulated compute node and on a real linux one (the instance runs, answers on its
//! IP, stops); and a second account that can see or touch none of it.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use dc_testkit::linux::{LinuxHost, answers_http};
use dc_testkit::{Dc, Options};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_lifecycle_through_the_cli() {
    let stack = Dc::start(Options {
        compute: true,
        ..Options::cloudapi()
    })
    .await;
    let alice = stack.tenant("alice", "rsa").await;
    let bob = stack.tenant("bob", "ed25519").await;
    let small = stack.package("g1-small", 1024, &[]).await;
    let large = stack.package("g1-large", 2048, &[]).await;
    let image = stack
        .image(
            "base-64-lts",
            "24.4.1",
            true,
            dc_testkit::ADMIN_UUID,
            b"simulated".to_vec(),
        )
        .await;

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
    let out = alice
        .ok(&[
            "instance",
            "create",
            "-w",
            "-j",
            "-n",
            "db0",
            "base-64-lts",
            "g1-small",
        ])
        .await;
    let lines = out.json_lines();
    let db = lines.last().unwrap();
    assert_eq!(db["state"], "running", "{}", out.stdout);
    let db_id = db["id"].as_str().unwrap().to_string();

    // List, get, ip.
    let list = alice.ok(&["instance", "list", "-j"]).await.json_lines();
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
    let out = alice.ok(&["instance", "list"]).await;
    assert!(
        out.stdout.contains("web0") && out.stdout.contains("running"),
        "{}",
        out.stdout
    );
    let got = alice.ok(&["instance", "get", "-j", "web0"]).await.json();
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["state"], "running");
    assert_eq!(got["package"], "g1-small");
    assert_eq!(got["memory"], 1024);
    assert_eq!(got["image"], image.uuid.as_str());
    assert_eq!(got["tags"], json!({"role": "web", "count": 3}));
    assert_eq!(got["metadata"]["foo"], "bar");
    let ip = alice
        .ok(&["instance", "ip", "web0"])
        .await
        .stdout
        .trim()
        .to_string();
    assert!(ip.starts_with("10.88.88."), "{ip}");
    assert_eq!(got["primaryIp"], ip.as_str());
    assert_eq!(vm.nics.len(), 1);
    let vm = stack.vm(&id).await;
    assert_eq!(vm.nics[0].ip, ip);

    // Tags.
    alice
        .ok(&["instance", "tag", "set", "-w", "web0", "env=prod", "tier=1"])
        .await;
    let tags = alice
        .ok(&["instance", "tag", "list", "-j", "web0"])
        .await
        .json();
    assert_eq!(
        tags,
        json!({"role": "web", "count": 3, "env": "prod", "tier": 1})
    );
    let out = alice.ok(&["instance", "tag", "get", "web0", "env"]).await;
    assert_eq!(out.stdout.trim(), "prod");
    alice
        .ok(&["instance", "tag", "delete", "-w", "web0", "env"])
        .await;
    let tags = alice
        .ok(&["instance", "tag", "list", "-j", "web0"])
        .await
        .json();
    assert_eq!(tags, json!({"role": "web", "count": 3, "tier": 1}));
    let vm = stack.vm(&id).await;
    assert!(!vm.tags.contains_key("env"));

    // Metadata.
    alice
        .ok(&["instance", "metadata", "set", "-w", "web0", "color=blue"])
        .await;
    let md = alice
        .ok(&["instance", "metadata", "list", "-j", "web0"])
        .await
        .json();
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
    let got = alice.ok(&["instance", "get", "-j", "web1"]).await.json();
    assert_eq!(got["package"], "g1-large");
    assert_eq!(got["memory"], 2048);
    assert_eq!(stack.vm(&id).await.billing_id, large.uuid);

    // Stop, start, reboot.
    let out = alice.ok(&["instance", "stop", "-w", "web1"]).await;
    assert!(out.stdout.contains("Stop instance web1"), "{}", out.stdout);
    assert_eq!(stack.vm(&id).await.state, "stopped");
    assert_eq!(
        alice.ok(&["instance", "get", "-j", "web1"]).await.json()["state"],
        "stopped"
    );
    alice.ok(&["instance", "start", "-w", "web1"]).await;
    assert_eq!(stack.vm(&id).await.state, "running");
    let boot = stack.vm(&id).await.boot_timestamp;
    let out = alice.ok(&["instance", "reboot", "-w", "web1"]).await;
    assert!(out.stdout.contains("Rebooted instance"), "{}", out.stdout);
    assert_eq!(stack.vm(&id).await.state, "running");
    let _ = boot;

    // Bob sees and touches none of it: 404s, as Triton answers.
    let bobs = bob.ok(&["instance", "list", "-j"]).await.json_lines();
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
        alice.ok(&["instance", "get", "-j", "web1"]).await.json()["deletion_protection"],
        true
    );
    let out = alice.fails(&["instance", "delete", "-f", "web1"]).await;
    assert!(out.stderr.contains("deletion_protection"), "{}", out.stderr);
    alice
        .ok(&["instance", "disable-deletion-protection", "-w", "web1"])
        .await;

    // Delete.
    let out = alice
        .ok(&["instance", "delete", "-f", "-w", "web1", &db_id])
        .await;
    assert!(out.stdout.contains("Delete instance"), "{}", out.stdout);
    assert_eq!(stack.vm(&id).await.state, "destroyed");
    assert_eq!(stack.vm(&db_id).await.state, "destroyed");
    let list = alice.ok(&["instance", "list", "-j"]).await.json_lines();
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
    stack.package("g1-small", 256, &[]).await;
    stack
        .image(
            "base-64-lts",
            "24.4.1",
            true,
            dc_testkit::ADMIN_UUID,
            tarball,
        )
        .await;

    let out = alice
        .ok(&[
            "instance",
            "create",
            "-w",
            "-j",
            "-n",
            "www",
            "base-64-lts",
            "g1-small",
        ])
        .await;
    let created = out.json_lines();
    assert_eq!(
        created.last().unwrap()["state"],
        "running",
        "{}",
        out.stdout
    );
    let ip = alice
        .ok(&["instance", "ip", "www"])
        .await
        .stdout
        .trim()
        .to_string();
    let subnet = host.subnet();
    assert!(ip.starts_with(&format!("10.99.{subnet}.")), "{ip}");
    assert!(
        eventually_http(&ip, true).await,
        "the instance answers HTTP on {ip}"
    );

    alice.ok(&["instance", "stop", "-w", "www"]).await;
    assert!(
        eventually_http(&ip, false).await,
        "a stopped instance does not answer"
    );
    alice.ok(&["instance", "start", "-w", "www"]).await;
    assert!(
        eventually_http(&ip, true).await,
        "a started instance answers again"
    );

    // A snapshot, the page changed inside the instance, and the instance started from
    // the snapshot: it serves the page as it was.
    alice
        .ok(&[
            "instance", "snapshot", "create", "-w", "-n", "pristine", "www",
        ])
        .await;
    let id = created.last().unwrap()["id"].as_str().unwrap().to_string();
    let root = host.instance_root(&id).expect("the instance runs");
    std::fs::write(root.join("www/index.html"), "defaced\n").unwrap();
    assert!(
        eventually_http(&ip, false).await,
        "the changed page is served"
    );
    alice
        .ok(&["instance", "start", "--snapshot=pristine", "www"])
        .await;
    assert!(
        eventually_http(&ip, true).await,
        "started from the snapshot, the instance serves the page as it was"
    );
    let listed = alice
        .ok(&["instance", "snapshot", "list", "-j", "www"])
        .await
        .json_lines();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["state"], "created");
    alice
        .ok(&[
            "instance", "snapshot", "delete", "-f", "-w", "www", "pristine",
        ])
        .await;
    assert!(
        alice
            .ok(&["instance", "snapshot", "list", "-j", "www"])
            .await
            .json_lines()
            .is_empty()
    );

    alice.ok(&["instance", "delete", "-f", "-w", "www"]).await;
    assert!(
        eventually_http(&ip, false).await,
        "a deleted instance is gone"
    );
}

async fn eventually_http(ip: &str, want: bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if answers_http(ip).await == want {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
