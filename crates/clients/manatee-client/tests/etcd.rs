//! The etcd client and the primary watch against a real etcd.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use manatee_client::etcd::Etcd;
use manatee_client::state::{ClusterState, Lsn, Peer, ShardKeys};
use manatee_client::watch_primary;
use tokio_util::sync::CancellationToken;

fn peer(n: u8) -> Peer {
    Peer {
        id: format!("127.0.0.{n}:5432:5433"),
        ip: format!("127.0.0.{n}"),
        pg_url: format!("postgresql://postgres@127.0.0.{n}:5432/postgres"),
        zone_id: format!("z{n}"),
        backup_url: None,
    }
}

fn state(generation: u64, primary: u8, sync: u8) -> ClusterState {
    ClusterState {
        generation,
        primary: peer(primary),
        sync: Some(peer(sync)),
        asyncs: vec![],
        deposed: vec![],
        init_wal: Lsn(0),
        freeze: None,
        one_node_write_mode: false,
        promote: None,
    }
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
    let rev = etcd
        .put_if_mod_revision(
            &keys.state(),
            0,
            vec![(keys.state(), state(1, 1, 2).to_json())],
        )
        .await
        .expect("txn")
        .expect("created");
    changed_to(
        &mut primary,
        Some("postgresql://postgres@127.0.0.1:5432/moray"),
    )
    .await;
    assert!(
        etcd.put_if_mod_revision(
            &keys.state(),
            0,
            vec![(keys.state(), state(1, 2, 1).to_json())]
        )
        .await
        .expect("txn")
        .is_none(),
        "a second create must lose"
    );
    etcd.put_if_mod_revision(
        &keys.state(),
        rev,
        vec![(keys.state(), state(2, 2, 3).to_json())],
    )
    .await
    .expect("txn")
    .expect("swapped");
    changed_to(
        &mut primary,
        Some("postgresql://postgres@127.0.0.2:5432/moray"),
    )
    .await;
    assert!(
        etcd.put_if_mod_revision(
            &keys.state(),
            rev,
            vec![(keys.state(), state(3, 3, 1).to_json())]
        )
        .await
        .expect("txn")
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
