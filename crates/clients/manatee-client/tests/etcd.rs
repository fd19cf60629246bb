//! The etcd client and the primary watch against a real etcd.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use manatee_client::etcd::Etcd;
use manatee_client::state::{ClusterState, Peer, ShardKeys};
use manatee_client::watch_primary;
use tokio_util::sync::CancellationToken;

fn peer(n: u8) -> Peer {
    Peer::new(&format!("127.0.0.{n}"), 5432, 5433, &format!("z{n}"))
}

fn state(generation: u64, primary: u8, sync: u8) -> ClusterState {
    ClusterState::new(generation, peer(primary), peer(sync), vec![])
}

/// Writes `state` as the shard's state if its key's modification revision is `rev` (0:
/// if there is none); the new revision, or None when the guard did not hold.
async fn swap_state(etcd: &Etcd, keys: &ShardKeys, rev: i64, state: ClusterState) -> Option<i64> {
    etcd.put_if_mod_revision(&keys.state(), rev, vec![(keys.state(), state.to_json())])
        .await
        .expect("txn")
}

async fn changed_to(rx: &mut tokio::sync::watch::Receiver<Option<String>>, want: Option<&str>) {
    let r = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if rx.borrow_and_update().as_deref() == want {
                return;
            }
            if rx.changed().await.is_err() {
                panic!("the watch ended");
            }
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "primary never became {want:?}; it is {:?}",
        *rx.borrow()
    );
}

#[tokio::test]
async fn compare_and_swap_and_primary_watch() {
    let server = triton_testkit::Etcd::start().expect("etcd");
    let etcd = Etcd::new(&[server.endpoint()]).expect("client");
    let keys = ShardKeys::new("1");

    let cancel = CancellationToken::new();
    let (mut primary, task) = watch_primary(
        etcd.clone(),
        keys.clone(),
        Some("moray".into()),
        cancel.clone(),
    );
    changed_to(&mut primary, None).await;

    // Create-if-absent, then a stale compare-and-swap loses.
    let rev = swap_state(&etcd, &keys, 0, state(1, 1, 2))
        .await
        .expect("created");
    changed_to(
        &mut primary,
        Some("postgresql://postgres@127.0.0.1:5432/moray"),
    )
    .await;
    assert!(
        swap_state(&etcd, &keys, 0, state(1, 2, 1)).await.is_none(),
        "a second create must lose"
    );
    swap_state(&etcd, &keys, rev, state(2, 2, 3))
        .await
        .expect("swapped");
    changed_to(
        &mut primary,
        Some("postgresql://postgres@127.0.0.2:5432/moray"),
    )
    .await;
    assert!(
        swap_state(&etcd, &keys, rev, state(3, 3, 1))
            .await
            .is_none(),
        "a write on an old revision must lose"
    );

    // A corrupt state: no primary (consumers answer with a retryable error).
    etcd.put(&keys.state(), b"not json".to_vec(), 0)
        .await
        .expect("put");
    changed_to(&mut primary, None).await;
    etcd.put(&keys.state(), state(3, 3, 1).to_json(), 0)
        .await
        .expect("put");
    changed_to(
        &mut primary,
        Some("postgresql://postgres@127.0.0.3:5432/moray"),
    )
    .await;

    // Leases: a key attached to a revoked lease disappears.
    let (lease, ttl) = etcd.lease_grant(5).await.expect("lease");
    assert!(ttl >= 5);
    etcd.put("/manatee/1/election/x", b"{}".to_vec(), lease)
        .await
        .expect("put");
    let mut ka = etcd.lease_keep_alive(lease).await.expect("keep-alive");
    assert!(ka.keep_alive().await.expect("refresh") > 0);
    assert!(ka.keep_alive().await.expect("refresh") > 0);
    etcd.lease_revoke(lease).await.expect("revoke");
    let (kv, _) = etcd.get("/manatee/1/election/x").await.expect("get");
    assert!(kv.is_none());

    cancel.cancel();
    let _ = task.await;
}

#[tokio::test]
async fn unreachable_etcd_is_reported_quickly() {
    let port = triton_testkit::free_port();
    let etcd = Etcd::new(&[format!("http://127.0.0.1:{port}")])
        .expect("client")
        .with_timeout(Duration::from_secs(2));
    let err = etcd.get("/x").await.expect_err("nothing listens there");
    let msg = manatee_client::error_chain(&err);
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
}
