//! WatchNics and WatchNetworks: the snapshot equals List's answer, changes follow in
//! order with increasing positions, a resume gets each later change once, the filters
//! hold, and a bad filter is refused naming the field.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{OWNER, TestNapi, assert_error, new_uuid, nic_on};
use dc_testkit::feed::Feed;
use dc_testkit::keep_no_change_log;
use dc_testkit::watched::{lifecycle, resumes_over, resync_then_snapshot};
use triton_proto::napi::v1 as proto;

async fn watch_nics(napi: &TestNapi, req: proto::WatchNicsRequest) -> Feed<proto::WatchNicsEvent> {
    napi.client()
        .watch_nics(req)
        .await
        .expect("WatchNics")
        .into_inner()
        .into()
}

/// The snapshot's NICs, sorted by MAC, and its position.
async fn nic_snapshot(feed: &mut Feed<proto::WatchNicsEvent>) -> (Vec<proto::Nic>, u64) {
    let (mut nics, at) = feed.snapshot().await;
    nics.sort_by(|a, b| a.mac.cmp(&b.mac));
    (nics, at)
}

async fn list_nics(napi: &TestNapi, req: proto::ListNicsRequest) -> Vec<proto::Nic> {
    let mut nics = napi
        .client()
        .list_nics(req)
        .await
        .expect("ListNics")
        .into_inner()
        .nics;
    nics.sort_by(|a, b| a.mac.cmp(&b.mac));
    nics
}

async fn create_nic(napi: &TestNapi, network: &str, vm: &str) -> proto::Nic {
    napi.client()
        .create_nic(nic_on(network, vm))
        .await
        .expect("create NIC")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nics_snapshot_then_changes_in_order_and_resume() {
    let (napi, network) = TestNapi::with_network("watched", "10.7.0", "external").await;
    let (vm_a, vm_b) = (new_uuid(), new_uuid());
    for vm in [&vm_a, &vm_a, &vm_b] {
        create_nic(&napi, &network.uuid, vm).await;
    }

    // From an empty start: the snapshot is ListNics's answer.
    let mut all = watch_nics(&napi, Default::default()).await;
    let (snapshot, at) = nic_snapshot(&mut all).await;
    assert_eq!(snapshot.len(), 3);
    assert_eq!(snapshot, list_nics(&napi, Default::default()).await);
    assert_eq!(snapshot[0].network_uuid, network.uuid);
    assert_eq!(
        snapshot[0].gateway, "10.7.0.1",
        "with the network's settings"
    );

    // Only VM A's NICs with its filter.
    let mut of_a = watch_nics(
        &napi,
        proto::WatchNicsRequest {
            belongs_to_uuid: Some(vm_a.clone()),
            ..Default::default()
        },
    )
    .await;
    let (snapshot_a, _) = nic_snapshot(&mut of_a).await;
    let list_a = list_nics(
        &napi,
        proto::ListNicsRequest {
            belongs_to_uuid: Some(vm_a.clone()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(snapshot_a.len(), 2);
    assert_eq!(snapshot_a, list_a);

    // A create, an update and a delete arrive in order with increasing positions.
    let created = create_nic(&napi, &network.uuid, &vm_b).await;
    let updated = napi
        .client()
        .update_nic(proto::UpdateNicRequest {
            mac: created.mac.clone(),
            state: Some("stopped".into()),
            ..Default::default()
        })
        .await
        .expect("update NIC")
        .into_inner();
    napi.client()
        .delete_nic(proto::DeleteNicRequest {
            mac: created.mac.clone(),
        })
        .await
        .expect("delete NIC");

    assert_eq!(updated.state, "stopped");
    let life = lifecycle(&mut all, at, &created.mac, &created, &updated).await;

    // VM B's PUTs are not VM A's watcher's; every DELETE is (the owner of a deleted NIC
    // is not stored); then VM A's new NIC.
    let of_a_new = create_nic(&napi, &network.uuid, &vm_a).await;
    assert_eq!(of_a.change().await, life.delete);
    let later = of_a
        .put(life.delete.position, &of_a_new.mac, &of_a_new)
        .await;

    // Resuming from the create's position: the update and the delete once, then on.
    let resume = |position| {
        let request = proto::WatchNicsRequest {
            position,
            ..Default::default()
        };
        watch_nics(&napi, request)
    };
    resumes_over(life, &later, &mut all, resume).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_older_than_what_is_kept_is_answered_with_resync() {
    let napi = TestNapi::start_with_moray(keep_no_change_log).await;
    let network = napi.network("trimmed", "10.9.0", "external").await;
    for _ in 0..3 {
        create_nic(&napi, &network.uuid, &new_uuid()).await;
    }
    // With no retention, the next trim deletes those changes.
    napi.dc.change_log_trimmed_through(3).await;

    // From 0 the whole state comes again: ListNics's answer.
    let mut nics = resync_then_snapshot(|position| {
        let request = proto::WatchNicsRequest {
            position,
            ..Default::default()
        };
        watch_nics(&napi, request)
    })
    .await;
    nics.sort_by(|a, b| a.mac.cmp(&b.mac));
    assert_eq!(nics.len(), 3);
    assert_eq!(nics, list_nics(&napi, Default::default()).await);
}

#[tokio::test]
async fn a_bad_filter_is_refused_naming_the_field() {
    let napi = TestNapi::start().await;
    let mut c = napi.client();
    assert_error(
        c.watch_nics(proto::WatchNicsRequest {
            belongs_to_uuid: Some("not-a-uuid".into()),
            owner_uuid: Some(OWNER.into()),
            ..Default::default()
        })
        .await,
        "InvalidParameters",
        &["belongs_to_uuid"],
    );
    assert_error(
        c.watch_networks(proto::WatchNetworksRequest {
            owner_uuid: Some("nope".into()),
            ..Default::default()
        })
        .await,
        "InvalidParameters",
        &["owner_uuid"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_snapshot_then_changes() {
    let napi = TestNapi::start().await;
    napi.network("first", "10.8.0", "external").await;
    napi.network("second", "10.9.0", "external").await;

    let mut stream: Feed<_> = napi
        .client()
        .watch_networks(proto::WatchNetworksRequest::default())
        .await
        .expect("WatchNetworks")
        .into_inner()
        .into();
    let (mut snapshot, at) = stream.snapshot().await;
    snapshot.sort_by(|a, b| a.name.cmp(&b.name));
    let list = napi
        .client()
        .list_networks(proto::ListNetworksRequest::default())
        .await
        .expect("ListNetworks")
        .into_inner()
        .networks;
    assert_eq!(snapshot, list);
    assert_eq!(snapshot.len(), 2);

    let third = napi.network("third", "10.10.0", "external").await;
    napi.client()
        .delete_network(proto::DeleteNetworkRequest {
            uuid: third.uuid.clone(),
        })
        .await
        .expect("delete network");
    let put = stream.put(at, &third.uuid, &third).await;
    stream.delete(put.position, &third.uuid).await;
}
