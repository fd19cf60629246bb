//! NICs added to and removed from VMs through jobs (AddNics, RemoveNics), and VMs
//! destroyed behind VMAPI's back, on simulated compute nodes: real PostgreSQL, Moray,
//! UFDS, PAPI, IMGAPI, NAPI, CNAPI and cn-agents (sim backend) over gRPC.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use cn_agent::ZoneBackend;
use common::{
    assert_no_ip_held, broken_network, job_of, network, restart_during, running_vm, sim_of,
    step_status, succeeds,
};
use dc_testkit::services::cn_agent;
use dc_testkit::{Dc, Options, error_of, eventually};
use triton_proto::napi::v1 as napi_pb;
use triton_proto::vmapi::v1 as pb;
use uuid::Uuid;

fn on_network(net: &napi_pb::Network) -> pb::NetworkSpec {
    pb::NetworkSpec {
        ipv4_uuid: net.uuid.clone(),
        ..Default::default()
    }
}

/// AddNics of VM `uuid` on `networks`.
fn add_to(uuid: &str, networks: Vec<pb::NetworkSpec>) -> pb::AddNicsRequest {
    pb::AddNicsRequest {
        uuid: uuid.to_string(),
        networks,
        ..Default::default()
    }
}

/// Who holds `ip` on `network` in NAPI (empty when it is free).
async fn ip_holder(dc: &Dc, network: &str, ip: &str) -> String {
    dc.ips_of(network)
        .await
        .iter()
        .find(|i| i.ip == ip && !i.free)
        .map(|i| i.belongs_to_uuid.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nic_is_added_to_and_removed_from_a_running_vm() {
    let dc = Dc::start(Options::vmapi()).await;
    let mut c = dc.vmapi();
    let data = network(&dc, "data", "10.202.0.0/24", "admin", vec![]).await;
    let vm = running_vm(&dc, "web0").await;
    let vm_id: Uuid = vm.uuid.parse().unwrap();
    let sim = sim_of(&dc, &vm.server_uuid);

    // Add: a NIC with the address asked for, on the node and in NAPI.
    let add = pb::AddNicsRequest {
        uuid: vm.uuid.clone(),
        owner_uuid: dc.seed().owner.clone(),
        networks: vec![pb::NetworkSpec {
            ipv4_ips: vec!["10.202.0.77".into()],
            ..on_network(&data)
        }],
        ..Default::default()
    };
    let job = succeeds(&dc, c.add_nics(add).await).await;
    assert_eq!(job.name, "add_nics");
    let names: Vec<&str> = job.chain.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["check", "provision_nics", "machine_update", "record"]
    );
    let after = dc.vm(&vm.uuid).await;
    assert_eq!(after.nics.len(), 2, "{:?}", after.nics);
    let added = after.nics[1].clone();
    assert_eq!(added.ip, "10.202.0.77");
    assert_eq!(added.network_uuid, data.uuid);
    assert_eq!(added.interface, "net1");
    assert!(!added.primary);
    assert!(after.nics[0].primary, "the first NIC stays primary");
    let napi_nics = dc.napi_nics(&vm.uuid).await;
    assert_eq!(napi_nics.len(), 2);
    let in_napi = napi_nics
        .iter()
        .find(|n| n.mac == added.mac)
        .expect("the new NIC in NAPI");
    assert_eq!(in_napi.belongs_to_uuid, vm.uuid);
    assert_eq!(in_napi.belongs_to_type, "zone");
    assert_eq!(in_napi.owner_uuid, dc.seed().owner);
    assert_eq!(in_napi.state, "running");
    assert_eq!(ip_holder(&dc, &data.uuid, "10.202.0.77").await, vm.uuid);
    let on_node = sim.get(vm_id).await.unwrap();
    assert_eq!(on_node.spec.nics.len(), 2);
    assert_eq!(on_node.spec.nics[1].mac, added.mac);
    assert_eq!(
        on_node.spec.nics[1].ip.map(|i| i.to_string()).as_deref(),
        Some("10.202.0.77")
    );
    assert_eq!(on_node.spec.nics[1].interface, "eth1");

    // Refused, each naming the field: a second NIC on the network, a network of
    // another account, an unknown one, a second primary.
    let someone = Uuid::new_v4().to_string();
    let private = network(&dc, "private", "10.204.0.0/24", "admin", vec![someone]).await;
    let primary = |ips: &[&str], spec: pb::NetworkSpec| pb::NetworkSpec {
        primary: Some(true),
        ipv4_ips: ips.iter().map(|ip| ip.to_string()).collect(),
        ..spec
    };
    let refusals = [
        (
            "another account's network, an unknown one",
            add_to(
                &vm.uuid,
                vec![
                    on_network(&data),
                    on_network(&private),
                    pb::NetworkSpec {
                        ipv4_uuid: Uuid::new_v4().to_string(),
                        ..Default::default()
                    },
                ],
            ),
            "ValidationFailed",
            &[
                "networks[1]: network",
                "is not available to owner",
                "networks[2].ipv4_uuid: network does not exist",
            ][..],
        ),
        (
            "a second NIC on a network",
            add_to(&vm.uuid, vec![on_network(&data)]),
            "ValidationFailed",
            &["networks[0]: VM", "already has a NIC on network"],
        ),
        (
            "a second primary NIC",
            add_to(&vm.uuid, vec![primary(&[], on_network(&private))]),
            "ValidationFailed",
            &["networks[0].primary:"],
        ),
        (
            "no network, two primaries, two addresses, a bad address",
            add_to(
                &vm.uuid,
                vec![
                    pb::NetworkSpec::default(),
                    primary(&["10.202.0.78", "10.202.0.79"], on_network(&data)),
                    primary(&["10.202.0.300"], on_network(&private)),
                ],
            ),
            "ValidationFailed",
            &[
                "networks[0]: needs ipv4_uuid or name",
                "networks: at most one network may be primary",
                "networks[1].ipv4_ips: at most one address per NIC",
                "networks[2].ipv4_ips[0]:",
            ],
        ),
        // Another owner's VM is not found.
        (
            "another owner's VM",
            pb::AddNicsRequest {
                owner_uuid: Uuid::new_v4().to_string(),
                ..add_to(&vm.uuid, vec![on_network(&data)])
            },
            "ResourceNotFound",
            &[],
        ),
    ];
    for (case, req, want, parts) in refusals {
        let (name, msg) = error_of(c.add_nics(req).await);
        assert_eq!(name, want, "{case}: {msg}");
        for part in parts {
            assert!(msg.contains(part), "{case}: {part} missing in {msg}");
        }
    }
    assert_eq!(
        dc.napi_nics(&vm.uuid).await.len(),
        2,
        "refusals reserve nothing"
    );

    // Remove: an unknown MAC is named; the primary NIC stays while others remain.
    for (case, mac, want, parts) in [
        (
            "an unknown MAC",
            "90:b8:d0:00:00:01",
            "ResourceNotFound",
            &["90:b8:d0:00:00:01"][..],
        ),
        (
            "a malformed MAC",
            "not-a-mac",
            "ValidationFailed",
            &["macs[0]:"],
        ),
        (
            "the primary NIC",
            after.nics[0].mac.as_str(),
            "ValidationFailed",
            &["macs:", "primary"],
        ),
    ] {
        let (name, msg) = error_of(
            c.remove_nics(pb::RemoveNicsRequest {
                uuid: vm.uuid.clone(),
                macs: vec![mac.to_string()],
                ..Default::default()
            })
            .await,
        );
        assert_eq!(name, want, "{case}: {msg}");
        for part in parts {
            assert!(msg.contains(part), "{case}: {part} missing in {msg}");
        }
    }

    // The MAC in CloudAPI's form, without colons.
    let remove = pb::RemoveNicsRequest {
        uuid: vm.uuid.clone(),
        owner_uuid: dc.seed().owner.clone(),
        macs: vec![added.mac.replace(':', "").to_uppercase()],
    };
    let job = succeeds(&dc, c.remove_nics(remove).await).await;
    assert_eq!(job.name, "remove_nics");
    let after = dc.vm(&vm.uuid).await;
    assert_eq!(after.nics.len(), 1);
    assert!(after.nics.iter().all(|n| n.mac != added.mac));
    let napi_nics = dc.napi_nics(&vm.uuid).await;
    assert_eq!(napi_nics.len(), 1);
    assert_ne!(napi_nics[0].mac, added.mac);
    assert_eq!(
        ip_holder(&dc, &data.uuid, "10.202.0.77").await,
        "",
        "the IP is free"
    );
    let on_node = sim.get(vm_id).await.unwrap();
    assert_eq!(on_node.spec.nics.len(), 1);
    assert_ne!(on_node.spec.nics[0].mac, added.mac);

    // The last NIC, primary or not, may go.
    let remove = pb::RemoveNicsRequest {
        uuid: vm.uuid.clone(),
        macs: vec![after.nics[0].mac.clone()],
        ..Default::default()
    };
    succeeds(&dc, c.remove_nics(remove).await).await;
    assert!(dc.vm(&vm.uuid).await.nics.is_empty());
    assert!(dc.napi_nics(&vm.uuid).await.is_empty());
    // ... and a NIC added to a VM without NICs is its primary.
    let add = add_to(&vm.uuid, vec![on_network(&data)]);
    succeeds(&dc, c.add_nics(add).await).await;
    let after = dc.vm(&vm.uuid).await;
    assert_eq!(after.nics.len(), 1);
    assert!(after.nics[0].primary);
    assert_eq!(after.nics[0].interface, "net0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nic_the_node_cannot_take_leaves_no_nic_in_napi() {
    let dc = Dc::start(Options::vmapi()).await;
    let mut napi = dc.napi();
    // The nodes claim the `broken` tag, but their backend has no such bridge: the
    // node's machine_update fails.
    let broken = broken_network(&dc).await;
    let vm = running_vm(&dc, "web0").await;
    let sim = sim_of(&dc, &vm.server_uuid);
    let vm_id: Uuid = vm.uuid.parse().unwrap();

    let add = add_to(&vm.uuid, vec![on_network(&broken)]);
    let job = job_of(&dc, dc.vmapi().add_nics(add).await).await;
    assert_eq!(job.execution, "failed", "{job:?}");
    assert!(job.error.starts_with("machine_update: "), "{}", job.error);
    assert_eq!(step_status(&job, "provision_nics"), "undone");
    assert_eq!(step_status(&job, "machine_update"), "undone");
    assert_eq!(step_status(&job, "record"), "pending");
    // As it was: one NIC on the VM, in NAPI and on the node; no IP held on `broken`.
    let after = dc.vm(&vm.uuid).await;
    assert_eq!(after.state, "running");
    assert_eq!(after.nics, vm.nics);
    let napi_nics = dc.napi_nics(&vm.uuid).await;
    assert_eq!(napi_nics.len(), 1);
    assert_eq!(napi_nics[0].network_uuid, dc.seed().network_uuid);
    assert_no_ip_held(&dc, &broken.uuid, &vm.uuid).await;
    assert_eq!(sim.get(vm_id).await.unwrap().spec.nics.len(), 1);

    // The same with a NIC reserved beforehand (CloudAPI's way): it is deleted too.
    let reserved = napi
        .create_nic(napi_pb::CreateNicRequest {
            owner_uuid: dc.seed().owner.clone(),
            belongs_to_uuid: vm.uuid.clone(),
            belongs_to_type: "zone".into(),
            network_uuid: Some(broken.uuid.clone()),
            state: Some("provisioning".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let r = dc
        .vmapi()
        .add_nics(pb::AddNicsRequest {
            uuid: vm.uuid.clone(),
            macs: vec![reserved.mac.clone()],
            ..Default::default()
        })
        .await
        .expect("accepted")
        .into_inner();
    assert_eq!(dc.wait_job(&r.job_uuid).await.execution, "failed");
    let gone = napi
        .get_nic(napi_pb::GetNicRequest {
            mac: reserved.mac.clone(),
        })
        .await
        .expect_err("the reserved NIC is deleted");
    assert_eq!(gone.code(), tonic::Code::NotFound);
    assert_eq!(dc.napi_nics(&vm.uuid).await.len(), 1);
    assert_eq!(dc.vm(&vm.uuid).await.nics, vm.nics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_destroyed_behind_vmapis_back_is_marked_destroyed() {
    let dc = Dc::start(Options::vmapi()).await;
    let gone = running_vm(&dc, "doomed").await;
    let kept = running_vm(&dc, "kept").await;
    let gone_id: Uuid = gone.uuid.parse().unwrap();
    let ip = gone.nics[0].ip.clone();
    assert_eq!(
        ip_holder(&dc, &dc.seed().network_uuid, &ip).await,
        gone.uuid
    );

    // The instance goes from its node without VMAPI knowing.
    sim_of(&dc, &gone.server_uuid)
        .destroy(gone_id)
        .await
        .expect("destroyed on the node");
    eventually(
        "VM destroyed from heartbeats",
        Duration::from_secs(60),
        || async { dc.vm(&gone.uuid).await.state == "destroyed" },
    )
    .await;
    let vm = dc.vm(&gone.uuid).await;
    assert!(!vm.destroyed.is_empty());
    assert!(vm.nics.is_empty());
    // Its NIC and IP are released in NAPI.
    assert!(dc.napi_nics(&gone.uuid).await.is_empty());
    assert_eq!(ip_holder(&dc, &dc.seed().network_uuid, &ip).await, "");
    // By a job, which says why.
    let mark_destroyed_jobs = |vm_uuid: &str| {
        let mut c = dc.vmapi();
        let req = pb::ListJobsRequest {
            vm_uuid: vm_uuid.to_string(),
            name: "mark_destroyed".into(),
            ..Default::default()
        };
        async move { c.list_jobs(req).await.unwrap().into_inner().jobs }
    };
    let jobs = mark_destroyed_jobs(&gone.uuid).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].execution, "succeeded");
    // The other VM, still on its node, is left alone.
    let other = dc.vm(&kept.uuid).await;
    assert_eq!(other.state, "running");
    assert_eq!(dc.napi_nics(&kept.uuid).await.len(), 1);
    let kept_jobs = mark_destroyed_jobs(&kept.uuid).await;
    assert!(kept_jobs.is_empty(), "{kept_jobs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_vmapi_mid_add_finishes_the_job_once() {
    let mut dc = Dc::start(Options {
        sim_delays: cn_agent::sim::SimDelays {
            update: Duration::from_millis(1500),
            ..Default::default()
        },
        ..Options::vmapi()
    })
    .await;
    let data = network(&dc, "data", "10.202.0.0/24", "admin", vec![]).await;
    let vm = running_vm(&dc, "phoenix").await;
    let r = dc
        .vmapi()
        .add_nics(add_to(&vm.uuid, vec![on_network(&data)]))
        .await
        .expect("add nics")
        .into_inner();
    // Restart VMAPI while the node is adding the NIC.
    let job = restart_during(&mut dc, &r.job_uuid, "machine_update").await;
    assert_eq!(job.execution, "succeeded", "{job:?}");
    // One new NIC everywhere: nothing reserved or added twice.
    let after = dc.vm(&vm.uuid).await;
    assert_eq!(after.nics.len(), 2, "{:?}", after.nics);
    assert_eq!(dc.napi_nics(&vm.uuid).await.len(), 2);
    let on_node = sim_of(&dc, &vm.server_uuid)
        .get(vm.uuid.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(on_node.spec.nics.len(), 2);
    assert_eq!(on_node.spec.nics[1].mac, after.nics[1].mac);
}

/// An explicit address is checked before any job: not the gateway, the network or the
/// broadcast address, not outside the subnet, and free; a taken one is refused without
/// naming the VM or owner that holds it. Outside the provision range, NAPI refuses it
/// when the job makes the NIC, and the job fails saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_ips_follow_the_networks_rules() {
    let dc = Dc::start(Options::vmapi()).await;
    let mut c = dc.vmapi();
    let shared = dc
        .napi()
        .create_network(napi_pb::CreateNetworkRequest {
            name: "shared".into(),
            subnet: "10.203.0.0/24".into(),
            provision_start_ip: "10.203.0.10".into(),
            provision_end_ip: "10.203.0.200".into(),
            gateway: Some("10.203.0.1".into()),
            nic_tag: "admin".into(),
            ..Default::default()
        })
        .await
        .expect("network")
        .into_inner();
    let on = |ip: &str| {
        let mut req = dc.create_request("asked");
        req.networks = vec![pb::NetworkSpec {
            ipv4_uuid: shared.uuid.clone(),
            ipv4_ips: vec![ip.into()],
            ..Default::default()
        }];
        req
    };
    for (ip, rule) in [
        ("10.203.0.1", "is the gateway of 10.203.0.0/24"),
        ("10.203.0.0", "is the network address"),
        ("10.203.0.255", "is the broadcast address"),
        ("10.204.0.5", "is outside subnet"),
    ] {
        let (name, msg) = error_of(c.create_vm(on(ip)).await);
        assert_eq!(name, "ValidationFailed", "{ip}: {msg}");
        assert!(
            msg.contains(&format!("networks[0].ipv4_ips[0]: {ip} {rule}")),
            "{ip}: {msg}"
        );
    }

    // One VM holds .50; another owner asking for it learns only that it is taken.
    let job = succeeds(&dc, c.create_vm(on("10.203.0.50")).await).await;
    let holder = dc.vm(&job.vm_uuid).await;
    assert_eq!(holder.nics[0].ip, "10.203.0.50");
    let mut req = on("10.203.0.50");
    req.owner_uuid = Uuid::new_v4().to_string();
    let (name, msg) = error_of(c.create_vm(req).await);
    assert_eq!(name, "ValidationFailed", "{msg}");
    assert!(
        msg.contains("networks[0].ipv4_ips[0]: ip 10.203.0.50 is already in use"),
        "{msg}"
    );
    assert!(!msg.contains(&holder.uuid), "{msg}");
    assert!(!msg.contains(&holder.owner_uuid), "{msg}");

    // Outside the provision range: NAPI's refusal ends the job.
    let job = job_of(&dc, c.create_vm(on("10.203.0.201")).await).await;
    assert_eq!(job.execution, "failed", "{job:?}");
    let text = format!("{job:?}");
    assert!(
        text.contains("10.203.0.201 is outside the provision range"),
        "{text}"
    );
}
