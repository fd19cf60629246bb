//! VMAPI end to end on simulated compute nodes: a real PostgreSQL and Moray, real
//! UFDS, PAPI, IMGAPI, NAPI, CNAPI and cn-agents (sim backend) over gRPC.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use cn_agent::ZoneBackend;
use cn_agent::sim::SimDelays;
use common::{
    action_on, all_vms, assert_no_ip_held, broken_network, delete_vm, restart_during, running_vm,
    sim_of, step_status, succeeds, text,
};
use dc_testkit::services::cn_agent;
use dc_testkit::{Dc, Options, assert_refused, error_of, eventually};
use triton_proto::vmapi::v1 as pb;
use uuid::Uuid;

async fn action(dc: &Dc, which: &str, uuid: &str) -> pb::Job {
    common::action(dc, which, action_on(uuid)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_lives_its_whole_life_through_jobs() {
    let dc = Dc::start(Options::vmapi()).await;
    let mut c = dc.vmapi();

    // Provision: answered at once with a job, the VM `provisioning` until it ends.
    let mut req = dc.create_request("web0");
    req.tags = [("role".to_string(), text("web"))].into();
    let r = c.create_vm(req).await.expect("create").into_inner();
    let job = dc.wait_job(&r.job_uuid).await;
    assert_eq!(job.execution, "succeeded", "{job:?}");
    let names: Vec<&str> = job.chain.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "validate",
            "volumes",
            "allocate",
            "provision_nics",
            "ensure_image",
            "machine_create",
            "record"
        ]
    );
    assert!(
        job.chain
            .iter()
            .all(|s| s.status == "succeeded" && !s.started_at.is_empty())
    );
    let vm = dc.vm(&r.vm_uuid).await;
    assert_eq!(vm.state, "running");
    assert_eq!(vm.ram, 256, "from the package");
    assert_eq!(vm.quota, 2, "package quota 2048 MiB is 2 GiB");
    assert_eq!(vm.billing_id, dc.seed().package_uuid);
    assert_eq!(vm.nics.len(), 1);
    assert!(vm.nics[0].ip.starts_with("10.200."), "{:?}", vm.nics);
    assert!(vm.nics[0].primary);
    let napi_nics = dc.napi_nics(&vm.uuid).await;
    assert_eq!(napi_nics.len(), 1);
    assert_eq!(napi_nics[0].ip, vm.nics[0].ip);
    assert_eq!(napi_nics[0].state, "running");
    // On the node: the instance, with what VMAPI asked for.
    let sim = sim_of(&dc, &vm.server_uuid);
    let vm_id: Uuid = vm.uuid.parse().unwrap();
    let instance = sim.get(vm_id).await.expect("instance on the node");
    assert_eq!(instance.state.as_str(), "running");
    assert_eq!(instance.spec.ram, 256);
    assert_eq!(
        instance.spec.nics[0].ip.map(|i| i.to_string()),
        Some(vm.nics[0].ip.clone())
    );

    // Stop, start, reboot.
    assert_eq!(action(&dc, "stop", &vm.uuid).await.execution, "succeeded");
    assert_eq!(dc.vm(&vm.uuid).await.state, "stopped");
    assert_eq!(sim.get(vm_id).await.unwrap().state.as_str(), "stopped");
    let (name, msg) = error_of(c.stop_vm(action_on(&vm.uuid)).await);
    assert_eq!(name, "VmStateError", "{msg}");
    assert!(msg.contains("already stopped"), "{msg}");
    let (name, msg) = error_of(c.reboot_vm(action_on(&vm.uuid)).await);
    assert_eq!(name, "VmStateError", "{msg}");
    assert_eq!(action(&dc, "start", &vm.uuid).await.execution, "succeeded");
    assert_eq!(dc.vm(&vm.uuid).await.state, "running");
    assert_eq!(sim.get(vm_id).await.unwrap().state.as_str(), "running");
    assert_eq!(action(&dc, "reboot", &vm.uuid).await.execution, "succeeded");
    assert_eq!(dc.vm(&vm.uuid).await.state, "running");

    // Resize, rename, tags and metadata.
    let update = pb::UpdateVmRequest {
        uuid: vm.uuid.clone(),
        ram: Some(512),
        alias: Some("web0-renamed".into()),
        set_tags: [("tier".to_string(), text("front"))].into(),
        remove_tags: vec!["role".into()],
        set_customer_metadata: [("motd".to_string(), "hi".to_string())].into(),
        ..Default::default()
    };
    succeeds(&dc, c.update_vm(update).await).await;
    let updated = dc.vm(&vm.uuid).await;
    assert_eq!(updated.ram, 512);
    assert_eq!(updated.max_physical_memory, 512);
    assert!(updated.max_swap >= 512);
    assert_eq!(updated.alias, "web0-renamed");
    assert_eq!(updated.tags.keys().collect::<Vec<_>>(), vec!["tier"]);
    assert_eq!(
        updated.customer_metadata.get("motd").map(String::as_str),
        Some("hi")
    );
    let on_node = sim.get(vm_id).await.unwrap();
    assert_eq!(on_node.spec.ram, 512);
    assert_eq!(on_node.spec.alias, "web0-renamed");

    // ListVms filters.
    let list = |req: pb::ListVmsRequest| {
        let mut c = dc.vmapi();
        async move { c.list_vms(req).await.expect("list").into_inner().vms }
    };
    let found = list(pb::ListVmsRequest {
        owner_uuid: dc.seed().owner.clone(),
        state: "active".into(),
        alias: "web0-*".into(),
        tags: [("tier".to_string(), "front".to_string())].into(),
        ..Default::default()
    })
    .await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].uuid, vm.uuid);
    // Values are taken literally (the alias keeps its `*` globs): `)(`, `\` and `*` in
    // them neither widen the filter nor break it.
    for (alias, brand, tag) in [
        ("web0-renamed)(owner_uuid=*", "", ""),
        ("web0-renamed)(|(alias=*", "", ""),
        ("web0-renamed\\", "", ""),
        ("", "*", ""),
        ("", "joyent-minimal)(brand=*", ""),
        ("", "", "*)(tag_keys=*"),
        ("", "", "fr*"),
    ] {
        let mut req = pb::ListVmsRequest {
            owner_uuid: dc.seed().owner.clone(),
            alias: alias.into(),
            brand: brand.into(),
            ..Default::default()
        };
        if !tag.is_empty() {
            req.tags = [("tier".to_string(), tag.to_string())].into();
        }
        assert!(
            list(req).await.is_empty(),
            "alias {alias:?} brand {brand:?} tag {tag:?}"
        );
    }
    assert!(
        list(pb::ListVmsRequest {
            tags: [("tier".to_string(), "back".to_string())].into(),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    assert_eq!(
        list(pb::ListVmsRequest {
            query: "(&(ram>=512)(brand=joyent-minimal))".into(),
            server_uuid: vm.server_uuid.clone(),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    let (name, msg) = error_of(
        c.list_vms(pb::ListVmsRequest {
            state: "sleeping".into(),
            owner_uuid: "nope".into(),
            ..Default::default()
        })
        .await,
    );
    assert_eq!(name, "ValidationFailed");
    assert!(
        msg.contains("state:") && msg.contains("owner_uuid:"),
        "{msg}"
    );

    // Jobs of the VM, newest first.
    let jobs = c
        .list_jobs(pb::ListJobsRequest {
            vm_uuid: vm.uuid.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["update", "reboot", "start", "stop", "provision"]);

    // Delete: the instance goes from the node, the IP back to the network.
    let delete = pb::DeleteVmRequest {
        uuid: vm.uuid.clone(),
        owner_uuid: dc.seed().owner.clone(),
    };
    succeeds(&dc, c.delete_vm(delete).await).await;
    let gone = dc.vm(&vm.uuid).await;
    assert_eq!(gone.state, "destroyed");
    assert!(!gone.destroyed.is_empty());
    assert!(sim.get(vm_id).await.is_err(), "instance still on the node");
    assert!(dc.napi_nics(&vm.uuid).await.is_empty());
    let (name, msg) = error_of(c.start_vm(action_on(&vm.uuid)).await);
    assert_eq!(name, "VmDestroyed", "{msg}");
    assert!(msg.contains(&vm.uuid), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_naming_the_field() {
    let dc = Dc::start(Options::vmapi()).await;
    let mut c = dc.vmapi();

    // Malformed and out of range: every field at once.
    assert_refused(
        "every field bad",
        c.create_vm(pb::CreateVmRequest {
            uuid: "not-a-uuid".into(),
            owner_uuid: "".into(),
            alias: "-bad alias".into(),
            brand: "bhyve".into(),
            image_uuid: "1234".into(),
            ram: Some(16),
            quota: Some(1_000_000),
            networks: vec![pb::NetworkSpec {
                ipv4_uuid: "x".into(),
                ipv4_ips: vec!["10.0.0.300".into()],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await,
        "ValidationFailed",
        &[
            "uuid:",
            "owner_uuid: is required",
            "alias:",
            "brand:",
            "image_uuid:",
            "ram: must be between 64 and 1048576 MiB (got 16)",
            "quota:",
            "networks[0].ipv4_uuid:",
            "networks[0].ipv4_ips[0]:",
        ],
    );

    // Unknown references.
    let mut req = dc.create_request("x");
    req.owner_uuid = Uuid::new_v4().to_string();
    req.image_uuid = Uuid::new_v4().to_string();
    req.billing_id = Uuid::new_v4().to_string();
    req.networks[0].ipv4_uuid = Uuid::new_v4().to_string();
    req.server_uuid = Uuid::new_v4().to_string();
    assert_refused(
        "unknown references",
        c.create_vm(req).await,
        "ValidationFailed",
        &[
            "owner_uuid: account",
            "image_uuid: image",
            "billing_id: package",
            "networks[0].ipv4_uuid: network does not exist",
            "server_uuid: server",
        ],
    );
    // Volumes on a VMAPI without VolAPI: refused, naming the field and why.
    let mut req = dc.create_request("x");
    req.volumes = vec![pb::VolumeMount {
        name: "v1".into(),
        mountpoint: "/data".into(),
        ..Default::default()
    }];
    let (name, msg) = error_of(c.create_vm(req).await);
    assert_eq!(name, "ValidationFailed");
    assert!(
        msg.contains("volumes: volumes are not available here (VMAPI has no volapi_url)"),
        "{msg}"
    );
    // Nothing was written.
    let all = all_vms(&dc, "").await;
    assert!(all.is_empty(), "{all:?}");

    // Unknown VM, job; malformed ids.
    let (name, _) = error_of(
        c.get_vm(pb::GetVmRequest {
            uuid: Uuid::new_v4().to_string(),
            owner_uuid: String::new(),
        })
        .await,
    );
    assert_eq!(name, "ResourceNotFound");
    let (name, msg) = error_of(c.stop_vm(action_on("zzz")).await);
    assert_eq!(name, "ValidationFailed");
    assert!(msg.contains("uuid:"), "{msg}");
    let (name, _) = error_of(
        c.get_job(pb::GetJobRequest {
            uuid: Uuid::new_v4().to_string(),
        })
        .await,
    );
    assert_eq!(name, "ResourceNotFound");

    // A VM of another owner is not found; an out-of-range resize names the field.
    let r = c
        .create_vm(dc.create_request("mine"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dc.wait_job(&r.job_uuid).await.execution, "succeeded");
    let (name, _) = error_of(
        c.get_vm(pb::GetVmRequest {
            uuid: r.vm_uuid.clone(),
            owner_uuid: Uuid::new_v4().to_string(),
        })
        .await,
    );
    assert_eq!(name, "ResourceNotFound");
    let (name, msg) = error_of(
        c.update_vm(pb::UpdateVmRequest {
            uuid: r.vm_uuid.clone(),
            ram: Some(u64::MAX),
            cpu_cap: Some(1_000_000),
            ..Default::default()
        })
        .await,
    );
    assert_eq!(name, "ValidationFailed");
    assert!(msg.contains("ram:") && msg.contains("cpu_cap:"), "{msg}");
    // A duplicate uuid.
    let mut dup = dc.create_request("dup");
    dup.uuid = r.vm_uuid.clone();
    let (name, _) = error_of(c.create_vm(dup).await);
    assert_eq!(name, "Duplicate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provision_failing_on_the_node_leaves_no_ip_and_no_capacity() {
    let dc = Dc::start(Options::vmapi()).await;
    let broken = broken_network(&dc).await;
    let before = dc.capacity().await;

    let mut req = dc.create_request("doomed");
    req.networks.push(pb::NetworkSpec {
        ipv4_uuid: broken.uuid.clone(),
        ..Default::default()
    });
    let r = dc.vmapi().create_vm(req).await.unwrap().into_inner();
    let job = dc.wait_job(&r.job_uuid).await;
    assert_eq!(job.execution, "failed");
    assert!(job.error.starts_with("machine_create: "), "{}", job.error);
    assert!(job.error.contains("broken"), "{}", job.error);
    for (step, status) in [
        ("machine_create", "undone"),
        ("provision_nics", "undone"),
        ("allocate", "undone"),
        ("record", "pending"),
    ] {
        assert_eq!(step_status(&job, step), status, "{step}");
    }

    let vm = dc.vm(&r.vm_uuid).await;
    assert_eq!(vm.state, "failed");
    assert!(
        vm.failure_reason.contains("machine_create"),
        "{}",
        vm.failure_reason
    );
    assert!(vm.nics.is_empty());
    // No IP held, on either network.
    assert!(dc.napi_nics(&r.vm_uuid).await.is_empty());
    for net in [&dc.seed().network_uuid, &broken.uuid] {
        assert_no_ip_held(&dc, net, &r.vm_uuid).await;
    }
    // No capacity held: every server has what it had.
    eventually("capacity back", Duration::from_secs(10), || async {
        dc.capacity().await == before
    })
    .await;
    // Actions on a failed VM are refused with the reason; delete works.
    let (name, msg) = error_of(dc.vmapi().start_vm(action_on(&r.vm_uuid)).await);
    assert_eq!(name, "VmStateError");
    assert!(msg.contains("failed to provision"), "{msg}");
    assert_eq!(delete_vm(&dc, &r.vm_uuid).await.execution, "succeeded");
    assert_eq!(dc.vm(&r.vm_uuid).await.state, "destroyed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_vmapi_mid_provision_finishes_the_job() {
    let mut dc = Dc::start(Options {
        sim_delays: SimDelays {
            create: Duration::from_millis(1500),
            ..Default::default()
        },
        ..Options::vmapi()
    })
    .await;
    let r = dc
        .vmapi()
        .create_vm(dc.create_request("phoenix"))
        .await
        .unwrap()
        .into_inner();
    // Restart VMAPI while the instance is being created on the node.
    let job = restart_during(&mut dc, &r.job_uuid, "machine_create").await;
    assert_eq!(job.execution, "succeeded", "{job:?}");
    let vm = dc.vm(&r.vm_uuid).await;
    assert_eq!(vm.state, "running");
    // One NIC, one instance: nothing was made twice.
    assert_eq!(dc.napi_nics(&vm.uuid).await.len(), 1);
    let vm_id: Uuid = vm.uuid.parse().unwrap();
    let on_nodes = dc
        .sims
        .iter()
        .map(|s| s.observe(vm_id).is_some() as usize)
        .sum::<usize>();
    assert_eq!(on_nodes, 1);

    // The state follows the node: an instance that dies shows `stopped`.
    let sim = sim_of(&dc, &vm.server_uuid);
    sim.shutdown(vm_id, Duration::ZERO).await.unwrap();
    eventually(
        "VM stopped from heartbeats",
        Duration::from_secs(20),
        || async { dc.vm(&vm.uuid).await.state == "stopped" },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_one_vm_run_one_at_a_time_in_order() {
    let dc = Dc::start(Options {
        sim_delays: SimDelays {
            update: Duration::from_millis(100),
            ..Default::default()
        },
        ..Options::vmapi()
    })
    .await;
    let vm = running_vm(&dc, "busy").await;
    // Five updates at once: accepted together, run one after another.
    let mut handles = Vec::new();
    for i in 0..5u64 {
        let mut c = dc.vmapi();
        let uuid = vm.uuid.clone();
        handles.push(tokio::spawn(async move {
            c.update_vm(pb::UpdateVmRequest {
                uuid,
                ram: Some(256 + 64 * i),
                set_tags: [(format!("t{i}"), text("x"))].into(),
                ..Default::default()
            })
            .await
        }));
    }
    let mut jobs = Vec::new();
    for h in handles {
        jobs.push(
            h.await
                .unwrap()
                .expect("update accepted")
                .into_inner()
                .job_uuid,
        );
    }
    let mut done = Vec::new();
    for j in &jobs {
        let job = dc.wait_job(j).await;
        assert_eq!(job.execution, "succeeded");
        done.push(job);
    }
    // No two jobs of the VM overlapped.
    let mut spans: Vec<(i64, i64)> = done
        .iter()
        .map(|j| {
            (
                triton_common::time::parse_rfc3339_millis(&j.started_at).unwrap(),
                triton_common::time::parse_rfc3339_millis(&j.finished_at).unwrap(),
            )
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "jobs overlapped: {spans:?}");
    }
    let vm = dc.vm(&vm.uuid).await;
    let tags: BTreeSet<&String> = vm.tags.keys().collect();
    assert_eq!(tags.len(), jobs.len());
}
