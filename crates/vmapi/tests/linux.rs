//! VMAPI driving a real `linux` cn-agent: instances are real containers on a test
//! bridge, their addresses answer ping from the host, resizes show in the cgroups, and
//! the image comes from IMGAPI over HTTP. Needs root and /bin/busybox (busybox-static).

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use cn_agent::ZoneBackend;
use cn_agent::linux::LinuxBackend;
use cn_agent::linux::leftovers::kill_cgroup;
use common::{action_on, delete_vm, job_of, linux_dc, network, succeeds, text};
use dc_testkit::linux::{LinuxHost, pings};
use dc_testkit::services::cn_agent;
use dc_testkit::{Dc, eventually, run};
use triton_proto::vmapi::v1 as pb;
use uuid::Uuid;

/// `which` of VM `uuid`, which must succeed.
async fn act(dc: &Dc, which: &str, uuid: &str) {
    let req = pb::VmActionRequest {
        timeout_seconds: 1,
        ..action_on(uuid)
    };
    let job = common::action(dc, which, req).await;
    assert_eq!(job.execution, "succeeded", "{which}: {job:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linux_instances_through_vmapi() {
    let host = LinuxHost::node("v", "admin");
    let s = host.subnet();
    let dc = linux_dc(&host).await;
    let node = LinuxBackend::new(host.config.clone()).unwrap();
    let mut c = dc.vmapi();

    // Provision: the image comes from IMGAPI, the IP from NAPI, and it answers.
    let started = Instant::now();
    let job = job_of(&dc, c.create_vm(dc.create_request("linux0")).await).await;
    let took = started.elapsed();
    assert_eq!(job.execution, "succeeded", "{job:?}");
    eprintln!("first provision on linux (image download included): {took:?}");
    let vm = dc.vm(&job.vm_uuid).await;
    assert_eq!(vm.state, "running");
    let ip = vm.nics[0].ip.clone();
    assert!(ip.starts_with(&format!("10.99.{s}.")), "{ip}");
    assert!(pings(&ip), "{ip} answers ping");
    let id: Uuid = vm.uuid.parse().unwrap();
    assert_eq!(node.get(id).await.unwrap().state.as_str(), "running");
    assert_eq!(host.memory_limit(&vm.uuid), Some(256 << 20));

    // stop / start / reboot, in VMAPI and on the node.
    act(&dc, "stop", &vm.uuid).await;
    assert_eq!(dc.vm(&vm.uuid).await.state, "stopped");
    assert_eq!(node.get(id).await.unwrap().state.as_str(), "stopped");
    assert!(!pings(&ip), "a stopped instance answers ping");
    act(&dc, "start", &vm.uuid).await;
    assert_eq!(dc.vm(&vm.uuid).await.state, "running");
    assert!(pings(&ip));
    let boot_before = node.get(id).await.unwrap().last_boot;
    act(&dc, "reboot", &vm.uuid).await;
    assert_eq!(dc.vm(&vm.uuid).await.state, "running");
    assert!(node.get(id).await.unwrap().last_boot >= boot_before);
    assert!(pings(&ip));

    // resize + rename + tag.
    let update = pb::UpdateVmRequest {
        uuid: vm.uuid.clone(),
        ram: Some(128),
        alias: Some("linux0-renamed".into()),
        set_tags: [("env".to_string(), text("test"))].into(),
        ..Default::default()
    };
    succeeds(&dc, c.update_vm(update).await).await;
    let after = dc.vm(&vm.uuid).await;
    assert_eq!((after.ram, after.alias.as_str()), (128, "linux0-renamed"));
    assert!(after.tags.contains_key("env"));
    assert_eq!(host.memory_limit(&vm.uuid), Some(128 << 20));
    assert_eq!(node.get(id).await.unwrap().spec.alias, "linux0-renamed");

    // An instance that dies shows `stopped` (from the node's heartbeats).
    for dir in host.cgroup_dirs() {
        kill_cgroup(&dir.join(&vm.uuid));
    }
    eventually(
        "VM stopped after its processes died",
        Duration::from_secs(30),
        || async { dc.vm(&vm.uuid).await.state == "stopped" },
    )
    .await;
    act(&dc, "start", &vm.uuid).await;
    assert!(pings(&ip));

    // A second provision, image already on the node: the speed target.
    let started = Instant::now();
    let job = succeeds(&dc, c.create_vm(dc.create_request("linux1")).await).await;
    eprintln!("provision on linux, image present: {:?}", started.elapsed());
    let vm2 = dc.vm(&job.vm_uuid).await;
    assert_ne!(vm2.nics[0].ip, ip, "two VMs, two IPs");
    assert!(pings(&vm2.nics[0].ip));

    // A second NIC on another network: the instance gets the interface at once;
    // removed, it goes from the instance, VMAPI and NAPI.
    let second = network(&dc, "second", &format!("10.98.{s}.0/24"), "admin", vec![]).await;
    let add = pb::AddNicsRequest {
        uuid: vm.uuid.clone(),
        networks: vec![pb::NetworkSpec {
            ipv4_uuid: second.uuid.clone(),
            ..Default::default()
        }],
        ..Default::default()
    };
    succeeds(&dc, c.add_nics(add).await).await;
    let with_two = dc.vm(&vm.uuid).await;
    assert_eq!(with_two.nics.len(), 2);
    let nic = with_two.nics[1].clone();
    assert!(nic.ip.starts_with(&format!("10.98.{s}.")), "{nic:?}");
    let napi_nics = dc.napi_nics(&vm.uuid).await;
    assert!(
        napi_nics
            .iter()
            .any(|n| n.mac == nic.mac && n.belongs_to_uuid == vm.uuid && n.state == "running"),
        "{napi_nics:?}"
    );
    let netns = format!("{}{}", host.config.netns_prefix, vm.uuid);
    let addrs = run("ip", &["-n", &netns, "-o", "addr", "show", "dev", "eth1"]);
    assert!(addrs.contains(&format!("{}/24", nic.ip)), "{addrs}");
    let link = run("ip", &["-n", &netns, "-o", "link", "show", "dev", "eth1"]);
    assert!(link.contains(&nic.mac), "{link}");
    // Both NICs hang off one bridge: asked anew, the host must learn the first
    // address at the first NIC's MAC (the instance does not answer ARP for it on eth1).
    run("ip", &["neigh", "flush", "to", &ip, "dev", host.bridge()]);
    assert!(pings(&ip), "the first NIC still answers");
    let neigh = run("ip", &["neigh", "show", "to", &ip, "dev", host.bridge()]);
    assert!(
        neigh.contains(&with_two.nics[0].mac),
        "{ip} learnt as {neigh}, not at {}",
        with_two.nics[0].mac
    );
    let remove = pb::RemoveNicsRequest {
        uuid: vm.uuid.clone(),
        macs: vec![nic.mac.clone()],
        ..Default::default()
    };
    succeeds(&dc, c.remove_nics(remove).await).await;
    assert_eq!(dc.vm(&vm.uuid).await.nics.len(), 1);
    assert!(
        dc.napi_nics(&vm.uuid)
            .await
            .iter()
            .all(|n| n.mac != nic.mac)
    );
    let addrs = run("ip", &["-n", &netns, "-o", "addr", "show"]);
    assert!(!addrs.contains(&nic.ip), "{addrs}");
    assert!(pings(&ip));

    // A snapshot of the running instance, and a rollback to it: files inside the
    // instance are as they were when it was taken.
    let inside = |pid: u32, path: &str| format!("/proc/{pid}/root{path}");
    let pid = node.get(id).await.unwrap().pid.expect("running");
    std::fs::write(inside(pid, "/kept"), "before").unwrap();
    let snap = |name: &str, start: bool| pb::SnapshotRequest {
        uuid: vm.uuid.clone(),
        name: name.into(),
        start,
        ..Default::default()
    };
    succeeds(&dc, c.create_snapshot(snap("before-change", false)).await).await;
    assert_eq!(dc.vm(&vm.uuid).await.snapshots[0].state, "created");
    let on_disk = node.disk(id).snapshots().join("before-change");
    assert!(on_disk.join("kept").exists(), "{}", on_disk.display());
    assert!(pings(&ip), "runs on after the snapshot");
    std::fs::write(inside(pid, "/kept"), "changed").unwrap();
    std::fs::write(inside(pid, "/new"), "new").unwrap();
    succeeds(&dc, c.rollback_snapshot(snap("before-change", true)).await).await;
    assert_eq!(dc.vm(&vm.uuid).await.state, "running");
    let pid = node.get(id).await.unwrap().pid.expect("booted again");
    assert_eq!(
        std::fs::read_to_string(inside(pid, "/kept")).unwrap(),
        "before"
    );
    assert!(!std::path::Path::new(&inside(pid, "/new")).exists());
    assert!(pings(&ip), "answers after the rollback");
    succeeds(&dc, c.delete_snapshot(snap("before-change", false)).await).await;
    assert!(dc.vm(&vm.uuid).await.snapshots.is_empty());
    assert!(!on_disk.exists(), "{} is gone", on_disk.display());

    // An instance destroyed on the node behind VMAPI's back shows `destroyed`, its
    // IP back in NAPI.
    let vm2_id: Uuid = vm2.uuid.parse().unwrap();
    node.destroy(vm2_id).await.unwrap();
    eventually(
        "VM destroyed from heartbeats",
        Duration::from_secs(60),
        || async { dc.vm(&vm2.uuid).await.state == "destroyed" },
    )
    .await;
    assert!(dc.napi_nics(&vm2.uuid).await.is_empty());

    // delete: gone from the node, IP released.
    assert_eq!(delete_vm(&dc, &vm.uuid).await.execution, "succeeded");
    assert_eq!(dc.vm(&vm.uuid).await.state, "destroyed");
    assert!(node.get(id).await.is_err());
    assert!(dc.napi_nics(&vm.uuid).await.is_empty());
    assert!(!pings(&ip));
}
