//! What VMAPI's tests and its bench do again and again on a test datacenter: a VM
//! made and run, an action or a delete through its job, a network, a step waited for,
//! a datacenter on a linux node, many provisions at once.

#![allow(dead_code)] // each test binary uses part of it

use std::time::Duration;

use dc_testkit::linux::LinuxHost;
use dc_testkit::services::cn_agent;
use dc_testkit::{Dc, Options, Seed, eventually};
use tonic::transport::Channel;
use triton_proto::napi::v1 as napi_pb;
use triton_proto::vmapi::v1 as pb;
use triton_proto::vmapi::v1::vmapi_client::VmapiClient;

/// `key` from the environment as a number, else `default`.
pub fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// VMAPI's datacenter on one linux compute node on `host`, and no sim nodes: the
/// seeded admin network is the host's bridge's subnet.
pub async fn linux_dc(host: &LinuxHost) -> Dc {
    let s = host.subnet();
    Dc::start(Options {
        sim_nodes: 0,
        seed: Some(Seed {
            subnet: format!("10.99.{s}.0/24"),
            first_ip: format!("10.99.{s}.10"),
            last_ip: format!("10.99.{s}.250"),
            gateway: Some(format!("10.99.{s}.1")),
            image_file: Some(host.image.path.clone()),
        }),
        linux: Some(host.node_options()),
        ..Options::vmapi()
    })
    .await
}

/// The sim node that is `server`.
pub fn sim_of<'a>(dc: &'a Dc, server: &str) -> &'a cn_agent::sim::SimBackend {
    let i = dc
        .servers
        .iter()
        .position(|s| s.to_string() == server)
        .expect("a known server");
    &dc.sims[i]
}

/// A VM of the seeded account made with `alias`, once its provision succeeded.
pub async fn running_vm(dc: &Dc, alias: &str) -> pb::Vm {
    let r = dc
        .vmapi()
        .create_vm(dc.create_request(alias))
        .await
        .expect("create")
        .into_inner();
    let job = dc.wait_job(&r.job_uuid).await;
    assert_eq!(job.execution, "succeeded", "{job:?}");
    dc.vm(&r.vm_uuid).await
}

/// The job a call started (which must have been accepted), once it has ended.
pub async fn job_of(
    dc: &Dc,
    started: Result<tonic::Response<pb::JobRef>, tonic::Status>,
) -> pb::Job {
    let r = started
        .unwrap_or_else(|s| panic!("refused: {s}"))
        .into_inner();
    dc.wait_job(&r.job_uuid).await
}

/// The job a call started, once it has succeeded.
pub async fn succeeds(
    dc: &Dc,
    started: Result<tonic::Response<pb::JobRef>, tonic::Status>,
) -> pb::Job {
    let job = job_of(dc, started).await;
    assert_eq!(job.execution, "succeeded", "{job:?}");
    job
}

/// A start, stop or reboot of VM `uuid` as the operator asks for it.
pub fn action_on(uuid: &str) -> pb::VmActionRequest {
    pb::VmActionRequest {
        uuid: uuid.to_string(),
        ..Default::default()
    }
}

/// `start`, `stop` or `reboot` (`which`) of `req`'s VM: the job once it has ended.
pub async fn action(dc: &Dc, which: &str, req: pb::VmActionRequest) -> pb::Job {
    let mut c = dc.vmapi();
    let r = match which {
        "start" => c.start_vm(req).await,
        "stop" => c.stop_vm(req).await,
        _ => c.reboot_vm(req).await,
    }
    .unwrap_or_else(|s| panic!("{which}: {s}"))
    .into_inner();
    dc.wait_job(&r.job_uuid).await
}

/// DeleteVm of `uuid` by the operator: the job once it has ended.
pub async fn delete_vm(dc: &Dc, uuid: &str) -> pb::Job {
    let r = dc
        .vmapi()
        .delete_vm(pb::DeleteVmRequest {
            uuid: uuid.to_string(),
            owner_uuid: String::new(),
        })
        .await
        .unwrap_or_else(|s| panic!("delete {uuid}: {s}"))
        .into_inner();
    dc.wait_job(&r.job_uuid).await
}

/// A network `name` on `subnet` (a /24, e.g. `10.202.0.0/24`; addresses .10 to .250),
/// on `nic_tag`, public or for `owners` only.
pub async fn network(
    dc: &Dc,
    name: &str,
    subnet: &str,
    nic_tag: &str,
    owners: Vec<String>,
) -> napi_pb::Network {
    let base = subnet.trim_end_matches("0/24");
    dc.napi()
        .create_network(napi_pb::CreateNetworkRequest {
            name: name.into(),
            subnet: subnet.into(),
            provision_start_ip: format!("{base}10"),
            provision_end_ip: format!("{base}250"),
            nic_tag: nic_tag.into(),
            owner_uuids: owners,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("network {name}: {s}"))
        .into_inner()
}

/// A network on the nic tag `broken`, which the sim nodes of [`Options::vmapi`] claim
/// but lack: a NIC on it fails on the node.
pub async fn broken_network(dc: &Dc) -> napi_pb::Network {
    dc.napi()
        .create_nic_tag(napi_pb::CreateNicTagRequest {
            name: "broken".into(),
            mtu: None,
        })
        .await
        .expect("nic tag broken");
    network(dc, "broken", "10.201.0.0/24", "broken", vec![]).await
}

/// Asserts that `vm` holds no address on `network`.
pub async fn assert_no_ip_held(dc: &Dc, network: &str, vm: &str) {
    let ips = dc.ips_of(network).await;
    assert!(
        ips.iter().all(|ip| ip.free || ip.belongs_to_uuid != vm),
        "{vm} holds an address on {network}: {ips:?}"
    );
}

/// The status of step `name` of `job`.
pub fn step_status(job: &pb::Job, name: &str) -> String {
    job.chain
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.status.clone())
        .unwrap_or_else(|| panic!("job {} has no step {name}", job.name))
}

/// Waits (up to 30 s) until step `step` of job `job_uuid` is `running`.
pub async fn step_running(dc: &Dc, job_uuid: &str, step: &str) {
    eventually(&format!("{step} running"), Duration::from_secs(30), || {
        let mut c = dc.vmapi();
        let uuid = job_uuid.to_string();
        async move {
            let job = c
                .get_job(pb::GetJobRequest { uuid })
                .await
                .unwrap()
                .into_inner();
            step_status(&job, step) == "running"
        }
    })
    .await;
}

/// Restarts VMAPI once step `step` of job `job_uuid` is running: the job once it has
/// ended.
pub async fn restart_during(dc: &mut Dc, job_uuid: &str, step: &str) -> pb::Job {
    step_running(dc, job_uuid, step).await;
    dc.restart_vmapi().await;
    dc.wait_job(job_uuid).await
}

/// A tag's (or metadata's) value: the string `s`.
pub fn text(s: &str) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(s.into())),
    }
}

/// `call` for each of `items` (a VM's uuid, or a new VM's alias), all at once; a call
/// refused as unavailable (under load) is sent again after a pause that doubles from
/// `pause` up to `max_pause`, anything else fails the test naming `what` and the item.
/// The answers, in the order they came.
pub async fn all_at_once<F, Fut>(
    dc: &Dc,
    what: &str,
    items: &[String],
    (pause, max_pause): (Duration, Duration),
    call: F,
) -> Vec<pb::JobRef>
where
    F: Fn(VmapiClient<Channel>, String) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<tonic::Response<pb::JobRef>, tonic::Status>> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for item in items {
        let (vmapi, item, call) = (dc.vmapi(), item.clone(), call.clone());
        tasks.spawn(async move {
            let mut backoff = pause;
            loop {
                match call(vmapi.clone(), item.clone()).await {
                    Ok(r) => return Ok(r.into_inner()),
                    Err(s) if s.code() == tonic::Code::Unavailable => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(max_pause);
                    }
                    Err(s) => return Err(format!("{item}: {s}")),
                }
            }
        });
    }
    let mut refs = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r.expect("a call's task") {
            Ok(r) => refs.push(r),
            Err(e) => panic!("{what} {e}"),
        }
    }
    refs
}

/// CreateVm of `vms` VMs (`vm0`, `vm1`, ...) all at once ([`all_at_once`], pausing from
/// `pause` up to `max_pause`). The answers, in the order they came.
pub async fn create_all(
    dc: &Dc,
    vms: usize,
    pause: Duration,
    max_pause: Duration,
) -> Vec<pb::JobRef> {
    let aliases: Vec<String> = (0..vms).map(|i| format!("vm{i}")).collect();
    let template = dc.create_request("");
    all_at_once(
        dc,
        "create",
        &aliases,
        (pause, max_pause),
        move |mut c, alias| {
            let req = pb::CreateVmRequest {
                alias,
                ..template.clone()
            };
            async move { c.create_vm(req).await }
        },
    )
    .await
}

/// Every VM of `owner_uuid` (empty: every VM), as ListVms pages them.
pub async fn all_vms(dc: &Dc, owner_uuid: &str) -> Vec<pb::Vm> {
    let mut all = Vec::new();
    let mut marker = String::new();
    loop {
        let page = dc
            .vmapi()
            .list_vms(pb::ListVmsRequest {
                owner_uuid: owner_uuid.to_string(),
                limit: 1000,
                marker: marker.clone(),
                ..Default::default()
            })
            .await
            .expect("list VMs")
            .into_inner()
            .vms;
        let Some(last) = page.last() else {
            return all;
        };
        marker = last.uuid.clone();
        all.extend(page);
    }
}
