//! VMAPI's side of volumes with VolAPI on a test datacenter (dc-testkit): a VM created
//! with `volumes` is checked at the request, its provision job reserves each volume
//! (undone when the job fails) and writes `sdc:volumes`; VolAPI's updater turns the
//! reservation into a reference once the VM is active and drops it once it is gone, and
//! a referenced volume is not deleted unless forced.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use dc_testkit::{Dc, Options, assert_error, eventually};
use serde_json::{Value, json};
use triton_proto::vmapi::v1 as vm;
use triton_proto::volapi::v1 as pb;

const WAIT: Duration = Duration::from_secs(60);

/// A datacenter with VolAPI and default fabric networks.
async fn dc() -> Dc {
    Dc::start(Options {
        volapi: true,
        default_fabrics: true,
        ..Options::vmapi()
    })
    .await
}

async fn volume(dc: &Dc, uuid: &str) -> pb::Volume {
    dc.volume(uuid).await.unwrap()
}

async fn reservations_of_job(dc: &Dc, job_uuid: &str) -> Vec<pb::VolumeReservation> {
    dc.volume_reservations(pb::ListVolumeReservationsRequest {
        job_uuid: job_uuid.into(),
        ..Default::default()
    })
    .await
}

fn mount(name: &str, mode: &str, mountpoint: &str) -> vm::VolumeMount {
    vm::VolumeMount {
        name: name.into(),
        r#type: String::new(),
        mode: mode.into(),
        mountpoint: mountpoint.into(),
    }
}

/// The whole life of a mount: bad mounts and unknown volumes refused with nothing
/// written; a VM with two mounts of one volume gets Triton's `sdc:volumes`, and is in
/// the volume's refs once it runs (its reservation gone); the volume is not deleted
/// while the VM is there, its ref goes with the VM, and a forced delete of a referenced
/// volume goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_mounts_a_ready_volume_and_refers_to_it() {
    let dc = dc().await;
    let v1 = dc.ready_volume("v1").await;
    assert!(v1.filesystem_path.ends_with(":/exports/data"), "{v1:?}");

    // Refused at the request, nothing written.
    let mut bad = dc.create_request("bad0");
    bad.volumes = vec![mount("v1", "rw", "/proc/x"), mount("v1", "rx", "/a")];
    let r = dc.vmapi().create_vm(bad).await;
    assert_error(
        r,
        "ValidationFailed",
        &[
            "volumes[0].mountpoint",
            "reserved",
            "volumes[1].mode",
            "ro, rw",
        ],
    );
    let mut bad = dc.create_request("bad0");
    bad.volumes = vec![mount("v1", "rw", "/a"), mount("nope", "rw", "/b")];
    let r = dc.vmapi().create_vm(bad).await;
    assert_error(r, "VolumeNotFound", &["nope"]);
    assert!(dc.vms_with_alias("bad0").await.is_empty());

    // A VM with two mounts of v1.
    let mut req = dc.create_request("web0");
    req.volumes = vec![mount("v1", "", "/data"), mount("v1", "ro", "/ro")];
    let job = dc.vmapi().create_vm(req).await.unwrap().into_inner();
    let done = dc.wait_job(&job.job_uuid).await;
    assert_eq!(done.execution, "succeeded", "{}", done.error);
    let web0 = dc.vm(&job.vm_uuid).await;
    let mounts: Value =
        serde_json::from_str(web0.internal_metadata.get("sdc:volumes").unwrap()).unwrap();
    let path = v1.filesystem_path.clone();
    assert_eq!(
        mounts,
        json!([
            {"name": "v1", "type": "tritonnfs", "mode": "rw", "mountpoint": "/data", "nfsvolume": path},
            {"name": "v1", "type": "tritonnfs", "mode": "ro", "mountpoint": "/ro", "nfsvolume": path},
        ])
    );
    eventually("web0 in v1's refs, its reservation gone", WAIT, || async {
        volume(&dc, &v1.uuid).await.refs == vec![web0.uuid.clone()]
            && reservations_of_job(&dc, &job.job_uuid).await.is_empty()
    })
    .await;

    // Not deleted while web0 is there.
    let r = dc
        .volapi()
        .delete_volume(pb::DeleteVolumeRequest {
            uuid: v1.uuid.clone(),
            owner_uuid: String::new(),
            force: false,
        })
        .await;
    assert_error(r, "VolumeInUse", &[&web0.uuid]);
    assert_eq!(volume(&dc, &v1.uuid).await.state, "ready");

    // web0 goes: so does its ref.
    let del = dc
        .vmapi()
        .delete_vm(vm::DeleteVmRequest {
            uuid: web0.uuid.clone(),
            owner_uuid: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dc.wait_job(&del.job_uuid).await.execution, "succeeded");
    eventually("v1's refs empty", WAIT, || async {
        volume(&dc, &v1.uuid).await.refs.is_empty()
    })
    .await;

    // A referenced volume goes when forced.
    let mut req = dc.create_request("web1");
    req.volumes = vec![mount("v1", "rw", "/data")];
    let job = dc.vmapi().create_vm(req).await.unwrap().into_inner();
    assert_eq!(dc.wait_job(&job.job_uuid).await.execution, "succeeded");
    eventually("web1 in v1's refs", WAIT, || async {
        volume(&dc, &v1.uuid).await.refs == vec![job.vm_uuid.clone()]
    })
    .await;
    dc.volapi()
        .delete_volume(pb::DeleteVolumeRequest {
            uuid: v1.uuid.clone(),
            owner_uuid: String::new(),
            force: true,
        })
        .await
        .unwrap();
    eventually("v1 gone", WAIT, || async {
        matches!(dc.volume(&v1.uuid).await, Err(s) if s.code() == tonic::Code::NotFound)
    })
    .await;
    let storage = dc.vm(&v1.vm_uuid).await;
    assert_eq!(storage.state, "destroyed");
}

/// A provision that fails after reserving its volumes gives the reservations back: the
/// VM is failed, the volume has no reservation of the job and no ref.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_provision_gives_its_reservations_back() {
    let dc = dc().await;
    let v1 = dc.ready_volume("v1").await;

    // No server has 1 TiB of memory: the job fails at `allocate`, after `volumes`.
    let mut req = dc.create_request("huge");
    req.billing_id = String::new();
    req.ram = Some(1024 * 1024);
    req.volumes = vec![mount("v1", "rw", "/data")];
    let job = dc.vmapi().create_vm(req).await.unwrap().into_inner();
    let done = dc.wait_job(&job.job_uuid).await;
    assert_eq!(done.execution, "failed");
    let steps: Vec<(&str, &str)> = done
        .chain
        .iter()
        .map(|s| (s.name.as_str(), s.status.as_str()))
        .collect();
    assert!(steps.contains(&("volumes", "undone")), "{steps:?}");
    assert_eq!(dc.vm(&job.vm_uuid).await.state, "failed");
    assert!(reservations_of_job(&dc, &job.job_uuid).await.is_empty());
    eventually("v1 without refs", WAIT, || async {
        volume(&dc, &v1.uuid).await.refs.is_empty()
    })
    .await;
}

/// A volume still `creating` (its storage VM takes a minute to create here) is found at the
/// request but cannot be mounted: the provision fails at `volumes` naming the volume and
/// its state, the VM is `failed` and holds no reservation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_not_ready_fails_the_provision() {
    let mut options = Options {
        volapi: true,
        default_fabrics: true,
        ..Options::vmapi()
    };
    options.sim_delays.create = Duration::from_secs(60);
    let dc = Dc::start(options).await;
    let owner = dc.seed().owner.clone();
    dc.default_network(&owner).await;
    dc.volapi()
        .create_volume(pb::CreateVolumeRequest {
            owner_uuid: owner,
            name: "v2".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut req = dc.create_request("early");
    req.volumes = vec![mount("v2", "rw", "/data")];
    let job = dc.vmapi().create_vm(req).await.unwrap().into_inner();
    let done = dc.wait_job(&job.job_uuid).await;
    assert_eq!(done.execution, "failed");
    assert!(
        done.error.starts_with("volumes: ")
            && done.error.contains("volume v2 is creating, not ready"),
        "{}",
        done.error
    );
    assert_eq!(dc.vm(&job.vm_uuid).await.state, "failed");
    assert!(reservations_of_job(&dc, &job.job_uuid).await.is_empty());
}
