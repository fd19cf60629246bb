//! VolAPI on a test datacenter (dc-testkit): real Moray, PAPI, NAPI with default
//! fabrics, IMGAPI, UFDS, VMAPI and sim compute nodes (which run any image), VolAPI
//! in-process with its updater following VMAPI.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use dc_testkit::{Dc, Options, assert_error, eventually, wait_for};
use triton_proto::ufds::v1 as ufds;
use triton_proto::vmapi::v1 as vm;
use triton_proto::volapi::v1 as pb;

const WAIT: Duration = Duration::from_secs(60);

/// A datacenter with VolAPI and the seeded account's default fabric network.
async fn dc() -> (Dc, String) {
    dc_with(Options::vmapi()).await
}

async fn dc_with(options: Options) -> (Dc, String) {
    let dc = Dc::start(Options {
        volapi: true,
        default_fabrics: true,
        ..options
    })
    .await;
    let owner = dc.seed().owner.clone();
    let net = dc.default_network(&owner).await;
    (dc, net)
}

fn create(owner: &str, name: &str) -> pb::CreateVolumeRequest {
    pb::CreateVolumeRequest {
        owner_uuid: owner.into(),
        name: name.into(),
        ..Default::default()
    }
}

async fn wait_gone(dc: &Dc, uuid: &str) {
    eventually(&format!("volume {uuid} gone"), WAIT, || async move {
        matches!(dc.volume(uuid).await, Err(s) if s.code() == tonic::Code::NotFound)
    })
    .await;
}

async fn all_volumes(dc: &Dc) -> Vec<pb::Volume> {
    dc.volapi()
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .volumes
}

/// Create: the volume is `creating`, its storage VM is made as Triton makes it (alias,
/// owner, the size's package, the image, the volume's networks, the role), and once the
/// VM runs the volume is `ready` with `<ip>:/exports/data`. Sizes are Triton's set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_makes_a_storage_vm_and_becomes_ready() {
    let (dc, net) = dc().await;
    let owner = dc.seed().owner.clone();

    let sizes = dc
        .volapi()
        .list_volume_sizes(pb::ListVolumeSizesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sizes;
    let mib: Vec<u64> = sizes.iter().map(|s| s.size).collect();
    let mut want: Vec<u64> = (1..=10).map(|n| n * 10 * 1024).collect();
    want.extend((2..=10).map(|n| n * 100 * 1024));
    assert_eq!(mib, want);
    assert!(sizes.iter().all(|s| s.r#type == "tritonnfs"));

    let mut request = create(&owner, "data1");
    request.size = Some(20480);
    request.labels = [("role".to_string(), "db".to_string())].into();
    let v = dc
        .volapi()
        .create_volume(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.state, "creating");
    assert_eq!(v.size, 20480);
    assert_eq!(v.r#type, "tritonnfs");
    assert_eq!(v.networks, vec![net.clone()]);
    assert!(v.filesystem_path.is_empty());

    let storage = dc.vm(&v.vm_uuid).await;
    assert_eq!(storage.alias, format!("nfs-shared-volume-{}", v.uuid));
    assert_eq!(storage.owner_uuid, owner);
    assert_eq!(
        storage
            .internal_metadata
            .get("sdc:system_role")
            .map(String::as_str),
        Some("nfsvolumestorage")
    );
    let package = dc
        .papi()
        .get_package(triton_proto::papi::v1::GetPackageRequest {
            uuid: storage.billing_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(package.name, "sdc_volume_nfs_20");
    let images = dc
        .imgapi()
        .get_image(triton_proto::imgapi::v1::ImageRequest {
            uuid: storage.image_uuid.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(images.name, "nfsserver");
    assert!(storage.tags.contains_key("role"));

    let ready = dc.wait_volume(&v.uuid, "ready").await;
    let storage = dc.vm(&v.vm_uuid).await;
    assert_eq!(storage.state, "running");
    assert_eq!(storage.nics[0].network_uuid, net);
    assert_eq!(
        ready.filesystem_path,
        format!("{}:/exports/data", storage.nics[0].ip)
    );
    assert_eq!(ready.labels.get("role").map(String::as_str), Some("db"));
}

/// Bad input is refused naming the field and the rule, and nothing is written: no
/// volume row and no storage VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_writes_nothing() {
    let (dc, net) = dc().await;
    let owner = dc.seed().owner.clone();
    let mut volapi = dc.volapi();

    let r = volapi.create_volume(create(&owner, "bad name")).await;
    assert_error(
        r,
        "ValidationError",
        &["name", "^[a-zA-Z0-9][a-zA-Z0-9_.-]+$"],
    );

    let mut request = create(&owner, "v1");
    request.size = Some(12345);
    let r = volapi.create_volume(request).await;
    assert_error(
        r,
        "VolumeSizeNotAvailable",
        &["12345", "10240, 20480", "1024000"],
    );

    let mut request = create(&owner, "v1");
    request.r#type = "nfs".into();
    assert_error(
        volapi.create_volume(request).await,
        "ValidationError",
        &["type"],
    );

    // The admin network (not a fabric, not the owner's), another account's fabric
    // and a network that does not exist.
    let admin = dc.seed().network_uuid.clone();
    let other = dc
        .ufds()
        .create_account(ufds::CreateAccountRequest {
            login: "other".into(),
            email: "other@example.com".into(),
            approved_for_provisioning: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let foreign = dc.default_network(&other.uuid).await;
    let missing = "00000000-0000-4000-8000-000000000001".to_string();
    let mut request = create(&owner, "v1");
    request.networks = vec![admin.clone(), foreign.clone(), missing.clone()];
    let s = assert_error(volapi.create_volume(request).await, "InvalidNetworks", &[]);
    let m = s.message();
    assert!(m.contains(&format!("missing: [{missing}]")), "{m}");
    assert!(
        m.contains(&format!("nonOwned: [{admin}, {foreign}]")),
        "{m}"
    );
    assert!(m.contains(&format!("nonFabric: [{admin}]")), "{m}");

    assert!(all_volumes(&dc).await.is_empty());
    assert!(dc.vms_with_alias("nfs-shared-volume-*").await.is_empty());

    // A duplicate name of the owner: VolumeAlreadyExists, one volume and one VM.
    let v = volapi
        .create_volume(create(&owner, "v1"))
        .await
        .unwrap()
        .into_inner();
    let r = volapi.create_volume(create(&owner, "v1")).await;
    assert_error(r, "VolumeAlreadyExists", &["v1"]);
    // Another owner may use the name.
    let mut request = create(&other.uuid, "v1");
    request.networks = vec![foreign.clone()];
    volapi.create_volume(request).await.unwrap();
    assert_eq!(all_volumes(&dc).await.len(), 2);
    assert_eq!(dc.vms_with_alias("nfs-shared-volume-*").await.len(), 2);
    assert_eq!(net, v.networks[0]);

    // Two racing creates of one name: one wins.
    let (mut c1, mut c2) = (dc.volapi(), dc.volapi());
    let (a, b) = tokio::join!(
        c1.create_volume(create(&owner, "race")),
        c2.create_volume(create(&owner, "race"))
    );
    assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
    let list = volapi
        .list_volumes(pb::ListVolumesRequest {
            owner_uuid: owner.clone(),
            name: "race".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .volumes;
    assert_eq!(list.len(), 1);
}

/// A VM of the seeded account mounting `volumes` (name, mountpoint) on its default
/// fabric; its job's uuid and the VM's.
async fn vm_with_volumes(dc: &Dc, net: &str, alias: &str, volumes: &[(&str, &str)]) -> vm::JobRef {
    let mut request = dc.create_request(alias);
    request.networks = vec![vm::NetworkSpec {
        ipv4_uuid: net.to_string(),
        ..Default::default()
    }];
    request.volumes = volumes
        .iter()
        .map(|(name, mountpoint)| vm::VolumeMount {
            name: name.to_string(),
            mountpoint: mountpoint.to_string(),
            ..Default::default()
        })
        .collect();
    dc.vmapi().create_vm(request).await.unwrap().into_inner()
}

async fn reservations(dc: &Dc, name: &str) -> Vec<pb::VolumeReservation> {
    dc.volume_reservations(pb::ListVolumeReservationsRequest {
        volume_name: name.into(),
        ..Default::default()
    })
    .await
}

/// Waits until the volume's refs are `want`.
async fn wait_refs(dc: &Dc, uuid: &str, want: &[&str]) {
    let read = || async { dc.volume(uuid).await.unwrap() };
    let what = format!("refs of {uuid}: {want:?}");
    wait_for(&what, WAIT, read, |v| v.refs == want).await;
}

async fn delete(dc: &Dc, uuid: &str, force: bool) -> Result<(), tonic::Status> {
    dc.volapi()
        .delete_volume(pb::DeleteVolumeRequest {
            uuid: uuid.into(),
            owner_uuid: String::new(),
            force,
        })
        .await
        .map(|_| ())
}

async fn wait_destroyed(dc: &Dc, vm_uuid: &str) {
    let what = format!("VM {vm_uuid} destroyed");
    wait_for(&what, WAIT, || dc.vm(vm_uuid), |v| v.state == "destroyed").await;
}

/// A VM made with a volume: its `sdc:volumes` names the volume's server, it holds a
/// reservation while provisioning and is a reference once running (the reservation
/// then goes); the volume cannot be deleted (VolumeInUse names the VM) until the VM is
/// destroyed, which removes the reference; then the delete goes through `deleting`,
/// destroys the storage VM and the volume is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_follow_the_vms_that_mount_a_volume() {
    let (dc, net) = dc().await;
    let v = dc.ready_volume("shared").await;

    let job = vm_with_volumes(&dc, &net, "web0", &[("shared", "/data")]).await;
    // The reservation exists from the job's volumes step until the VM is a reference.
    let finished = dc.wait_job(&job.job_uuid).await;
    assert_eq!(finished.execution, "succeeded", "{}", finished.error);
    let web0 = dc.vm(&job.vm_uuid).await;
    let mounted: serde_json::Value =
        serde_json::from_str(&web0.internal_metadata["sdc:volumes"]).unwrap();
    assert_eq!(
        mounted,
        serde_json::json!([{
            "name": "shared",
            "type": "tritonnfs",
            "mode": "rw",
            "mountpoint": "/data",
            "nfsvolume": v.filesystem_path,
        }])
    );
    wait_refs(&dc, &v.uuid, &[&job.vm_uuid]).await;
    eventually("the reservation gone", WAIT, || async {
        reservations(&dc, "shared").await.is_empty()
    })
    .await;
    let refs = dc
        .volapi()
        .get_volume_references(pb::GetVolumeReferencesRequest {
            uuid: v.uuid.clone(),
            owner_uuid: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refs.vm_uuids, vec![job.vm_uuid.clone()]);
    let listed = dc
        .volapi()
        .list_volumes(pb::ListVolumesRequest {
            r#ref: job.vm_uuid.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .volumes;
    assert_eq!(listed.len(), 1);

    // In use: refused, naming the VM; a rename is refused too.
    assert_error(
        dc.volapi()
            .delete_volume(pb::DeleteVolumeRequest {
                uuid: v.uuid.clone(),
                owner_uuid: String::new(),
                force: false,
            })
            .await,
        "VolumeInUse",
        &[&job.vm_uuid],
    );
    let rename = |name: &str| pb::UpdateVolumeRequest {
        uuid: v.uuid.clone(),
        owner_uuid: String::new(),
        name: name.into(),
    };
    let r = dc.volapi().update_volume(rename("other")).await;
    assert_error(r, "VolumeInUse", &[&job.vm_uuid]);
    assert_eq!(dc.volume(&v.uuid).await.unwrap().state, "ready");

    // The VM goes: so does the reference; then the volume can be deleted.
    let del = dc
        .vmapi()
        .delete_vm(vm::DeleteVmRequest {
            uuid: job.vm_uuid.clone(),
            owner_uuid: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    dc.wait_job(&del.job_uuid).await;
    wait_refs(&dc, &v.uuid, &[]).await;
    // Unused: it may be renamed (and back).
    let renamed = dc
        .volapi()
        .update_volume(rename("other"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.name, "other");
    dc.volapi().update_volume(rename("shared")).await.unwrap();
    delete(&dc, &v.uuid, false).await.unwrap();
    let state = dc.volume(&v.uuid).await.map(|v| v.state);
    assert!(
        matches!(state.as_deref(), Ok("deleting") | Err(_)),
        "{state:?}"
    );
    wait_gone(&dc, &v.uuid).await;
    wait_destroyed(&dc, &v.vm_uuid).await;
}

/// The storage VM's provision job: one VMAPI knows and that has ended.
async fn ended_job(dc: &Dc, vm_uuid: &str) -> String {
    let jobs = dc
        .vmapi()
        .list_jobs(vm::ListJobsRequest {
            vm_uuid: vm_uuid.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    jobs[0].uuid.clone()
}

fn reserve(owner: &str, name: &str, job: &str, vm_uuid: &str) -> pb::AddVolumeReservationRequest {
    pb::AddVolumeReservationRequest {
        volume_name: name.into(),
        job_uuid: job.into(),
        owner_uuid: owner.into(),
        vm_uuid: vm_uuid.into(),
    }
}

/// A reservation puts its VM among the refs and blocks a delete (VolumeInUse names the
/// VM) until it is removed; reserving an unknown volume or with a bad job uuid is
/// refused. (No GC in this datacenter.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_blocks_a_delete_until_removed() {
    let (dc, _net) = dc_with(Options {
        configure_volapi: Box::new(|c| c.reservation_gc_ms = 3_600_000),
        ..Options::vmapi()
    })
    .await;
    let owner = dc.seed().owner.clone();
    let v = dc.ready_volume("held").await;
    let job = ended_job(&dc, &v.vm_uuid).await;
    let waiting = uuid::Uuid::new_v4().to_string();
    let mut volapi = dc.volapi();

    let r = volapi
        .add_volume_reservation(reserve(&owner, "held", &job, &waiting))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.volume_name.as_str(), r.job_uuid.as_str()),
        ("held", job.as_str())
    );
    assert_eq!(
        dc.volume(&v.uuid).await.unwrap().refs,
        vec![waiting.clone()]
    );
    assert_eq!(reservations(&dc, "held").await, vec![r.clone()]);
    assert_error(
        delete(&dc, &v.uuid, false).await.map(tonic::Response::new),
        "VolumeInUse",
        &[&waiting],
    );

    let r2 = volapi
        .add_volume_reservation(reserve(&owner, "nope", &job, &waiting))
        .await;
    assert_error(r2, "VolumeNotFound", &["nope"]);
    let r3 = volapi
        .add_volume_reservation(reserve(&owner, "held", "x", &waiting))
        .await;
    assert_error(r3, "ValidationError", &["job_uuid"]);

    volapi
        .remove_volume_reservation(pb::RemoveVolumeReservationRequest {
            uuid: r.uuid.clone(),
            owner_uuid: owner.clone(),
        })
        .await
        .unwrap();
    assert!(dc.volume(&v.uuid).await.unwrap().refs.is_empty());
    assert!(reservations(&dc, "held").await.is_empty());
    let again = volapi
        .remove_volume_reservation(pb::RemoveVolumeReservationRequest {
            uuid: r.uuid.clone(),
            owner_uuid: owner.clone(),
        })
        .await;
    assert_error(again, "VolumeReservationNotFound", &[&r.uuid]);
    delete(&dc, &v.uuid, false).await.unwrap();
    wait_gone(&dc, &v.uuid).await;
}

/// The reservation GC (every 500 ms here): a reservation whose job has ended goes, and
/// its VM (not active in VMAPI) leaves the refs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_of_ended_jobs_go() {
    let (dc, _net) = dc().await;
    let owner = dc.seed().owner.clone();
    let v = dc.ready_volume("gc").await;
    let job = ended_job(&dc, &v.vm_uuid).await;
    let waiting = uuid::Uuid::new_v4().to_string();
    dc.volapi()
        .add_volume_reservation(reserve(&owner, "gc", &job, &waiting))
        .await
        .unwrap();
    wait_refs(&dc, &v.uuid, &[]).await;
    assert!(reservations(&dc, "gc").await.is_empty());
}

/// A storage VM that fails leaves its volume `failed` with the reason, and the VM is
/// destroyed; deleting the failed volume removes it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_storage_vm_fails_the_volume_and_is_removed() {
    // The nodes claim the overlay but lack it: the VM fails on its node.
    let dc = Dc::start(Options {
        volapi: true,
        default_fabrics: true,
        broken_nic_tags: vec!["sdc_overlay".into()],
        ..Options::vmapi()
    })
    .await;
    let owner = dc.seed().owner.clone();
    dc.default_network(&owner).await;
    let v = dc
        .volapi()
        .create_volume(create(&owner, "doomed"))
        .await
        .unwrap()
        .into_inner();
    let failed = dc.wait_volume(&v.uuid, "failed").await;
    assert!(
        failed.error.contains("storage VM failed"),
        "{}",
        failed.error
    );
    assert!(failed.filesystem_path.is_empty());
    wait_destroyed(&dc, &v.vm_uuid).await;
    // The name is free again.
    let again = dc
        .volapi()
        .create_volume(create(&owner, "doomed"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(again.uuid, v.uuid);
    delete(&dc, &v.uuid, false).await.unwrap();
    assert_error(
        dc.volapi()
            .get_volume(pb::GetVolumeRequest {
                uuid: v.uuid.clone(),
                owner_uuid: String::new(),
            })
            .await,
        "VolumeNotFound",
        &[&v.uuid],
    );
}

/// VolAPI stopped while a volume is being made and while one is being deleted: once it
/// is back, the updater catches up from VMAPI's feed (the one ready, the other gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_volapi_loses_nothing() {
    let (mut dc, _net) = dc().await;
    let owner = dc.seed().owner.clone();
    let gone = dc.ready_volume("old").await;
    let v = dc
        .volapi()
        .create_volume(create(&owner, "fresh"))
        .await
        .unwrap()
        .into_inner();
    delete(&dc, &gone.uuid, false).await.unwrap();
    dc.stop_volapi().await;
    // Meanwhile the storage VMs run and are destroyed.
    let running = |vm: &vm::Vm| vm.state == "running";
    wait_for(
        "the storage VM running",
        WAIT,
        || dc.vm(&v.vm_uuid),
        running,
    )
    .await;
    wait_destroyed(&dc, &gone.vm_uuid).await;
    dc.start_volapi_again().await;
    let ready = dc.wait_volume(&v.uuid, "ready").await;
    assert!(ready.filesystem_path.ends_with(":/exports/data"));
    wait_gone(&dc, &gone.uuid).await;
}
