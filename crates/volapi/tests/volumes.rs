//! VolAPI on a test datacenter (dc-testkit): real Moray, PAPI, NAPI with default
//! fabrics, IMGAPI, UFDS, VMAPI and sim compute nodes (which run any image), VolAPI
//! in-process with its updater following VMAPI.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use dc_testkit::{Dc, Options, assert_error, eventually};
use triton_proto::ufds::v1 as ufds;
use triton_proto::vmapi::v1 as vm;
use triton_proto::volapi::v1 as pb;

const WAIT: Duration = Duration::from_secs(60);

/// A datacenter with VolAPI and the seeded account's default fabric network.
async fn dc() -> (Dc, String) {
    let dc = Dc::start(Options {
        volapi: true,
        default_fabrics: true,
        ..Options::vmapi()
    })
    .await;
    let owner = dc.seed().owner.clone();
    let net = default_network(&dc, &owner).await;
    (dc, net)
}

async fn default_network(dc: &Dc, owner: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let a = dc
            .ufds()
            .get_account(ufds::GetAccountRequest {
                account: owner.to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        if !a.default_network.is_empty() {
            return a.default_network;
        }
        assert!(Instant::now() < deadline, "no default network for {owner}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn create(owner: &str, name: &str) -> pb::CreateVolumeRequest {
    pb::CreateVolumeRequest {
        owner_uuid: owner.into(),
        name: name.into(),
        ..Default::default()
    }
}

async fn get(dc: &Dc, uuid: &str) -> Result<pb::Volume, tonic::Status> {
    dc.volapi()
        .get_volume(pb::GetVolumeRequest {
            uuid: uuid.into(),
            owner_uuid: String::new(),
        })
        .await
        .map(|r| r.into_inner())
}

/// Waits until the volume is in `state` and gives it.
async fn wait_state(dc: &Dc, uuid: &str, state: &str) -> pb::Volume {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = get(dc, uuid).await.unwrap();
        if v.state == state {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "volume {uuid} not {state}: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_gone(dc: &Dc, uuid: &str) {
    eventually(&format!("volume {uuid} gone"), WAIT, || async move {
        matches!(get(dc, uuid).await, Err(s) if s.code() == tonic::Code::NotFound)
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

async fn vms_with_alias(dc: &Dc, alias: &str) -> Vec<vm::Vm> {
    dc.vmapi()
        .list_vms(vm::ListVmsRequest {
            alias: alias.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .vms
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

    let ready = wait_state(&dc, &v.uuid, "ready").await;
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
    let foreign = default_network(&dc, &other.uuid).await;
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
    assert!(vms_with_alias(&dc, "nfs-shared-volume-*").await.is_empty());

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
    assert_eq!(vms_with_alias(&dc, "nfs-shared-volume-*").await.len(), 2);
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
