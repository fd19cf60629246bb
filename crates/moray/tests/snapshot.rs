//! Snapshot: a bucket's objects at a change feed position, so that a follower that takes a
//! snapshot and then watches from its position ends with exactly the bucket's state.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{TestMoray, expect_err, start};
use serde_json::{Value, json};
use triton_proto::moray::v1 as pb;
use triton_proto::moray::v1::change_event::Op;

async fn snapshot(
    m: &mut TestMoray,
    bucket: &str,
    filter: &str,
) -> Result<Vec<pb::SnapshotPage>, tonic::Status> {
    common::collect(m.client.snapshot(pb::SnapshotRequest {
        bucket: bucket.into(),
        filter: filter.into(),
        options: None,
    }))
    .await
}

/// Key -> (etag, value) of a snapshot's objects; checks the pages on the way.
fn state_of(pages: &[pb::SnapshotPage]) -> (u64, BTreeMap<String, (String, Value)>) {
    let position = pages.first().expect("at least one page").position;
    assert!(pages.iter().all(|p| p.position == position));
    assert!(pages.last().unwrap().last, "the last page says so");
    assert!(pages[..pages.len() - 1].iter().all(|p| !p.last));
    let mut state = BTreeMap::new();
    for o in pages.iter().flat_map(|p| &p.objects) {
        let value: Value = serde_json::from_str(&o.value).unwrap();
        assert!(
            state
                .insert(o.key.clone(), (o.etag.clone(), value))
                .is_none(),
            "{} twice in one snapshot",
            o.key
        );
    }
    (position, state)
}

#[tokio::test]
async fn pages_carry_the_position_and_the_filter_applies() {
    let mut m = start().await;
    m.bucket("s", &[("n", "number")]).await;

    let pages = snapshot(&mut m, "s", "").await.unwrap();
    assert_eq!(pages.len(), 1, "an empty bucket is one empty last page");
    assert!(pages[0].objects.is_empty() && pages[0].last);

    m.batch_put(
        "s",
        (0..1201).map(|i| (format!("k{i:04}"), json!({"n": i}))),
    )
    .await;

    let pages = snapshot(&mut m, "s", "").await.unwrap();
    let sizes: Vec<usize> = pages.iter().map(|p| p.objects.len()).collect();
    assert_eq!(sizes, vec![500, 500, 201]);
    let (position, state) = state_of(&pages);
    assert_eq!(state.len(), 1201);
    // The position is the feed's: the last of those puts.
    let mut watch = m
        .client
        .watch(pb::WatchRequest {
            bucket: "s".into(),
            since: position - 1,
        })
        .await
        .unwrap()
        .into_inner();
    let last = watch.message().await.unwrap().unwrap();
    assert_eq!((last.seq, last.key.as_str()), (position, "k1200"));

    let pages = snapshot(&mut m, "s", "(n>=1195)").await.unwrap();
    let (_, state) = state_of(&pages);
    assert_eq!(
        state.keys().cloned().collect::<Vec<_>>(),
        (1195..1201).map(|i| format!("k{i:04}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_bad_bucket_or_filter_is_refused() {
    let mut m = start().await;
    m.bucket("s", &[("n", "number")]).await;
    let msg = expect_err(snapshot(&mut m, "nope", "").await, "BucketNotFoundError");
    assert!(msg.contains("nope"), "{msg}");
    let msg = expect_err(snapshot(&mut m, "s", "(n>=").await, "InvalidQueryError");
    assert!(msg.contains("(n>="), "{msg}");
    // The sequencer is not left locked by the failures: the feed goes on.
    let mut watch = m
        .client
        .watch(pb::WatchRequest {
            bucket: "s".into(),
            since: 0,
        })
        .await
        .unwrap()
        .into_inner();
    m.put_ok("s", "a", json!({"n": 1})).await;
    let e = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("an event within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(e.key, "a");
}

/// Writers put and delete while snapshots are taken; each snapshot, followed from its
/// position, ends with exactly the final state, and no change after the position is
/// already in the snapshot: each key's puts carry a counter that only grows, so a change
/// applied twice (or a delete of what the snapshot no longer has) shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_then_follow_misses_and_repeats_nothing_under_concurrent_writes() {
    let mut m = start().await;
    m.bucket("s", &[]).await;
    // Four writers of 80 changes each, over 5 keys of their own: puts, some deletes.
    let writers = common::spawn_writers(&m, "s", 4, 80).await;
    let mut snapshots = Vec::new();
    while writers.iter().any(|w| !w.is_finished()) {
        snapshots.push(state_of(&snapshot(&mut m, "s", "").await.unwrap()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    assert!(snapshots.len() >= 3, "{} snapshots", snapshots.len());
    let (end, want) = state_of(&snapshot(&mut m, "s", "").await.unwrap());

    for (position, mut state) in snapshots {
        let mut stream = m
            .client
            .watch(pb::WatchRequest {
                bucket: "s".into(),
                since: position,
            })
            .await
            .unwrap()
            .into_inner();
        let mut last = position;
        while last < end {
            let e = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("changes up to the final position")
                .unwrap()
                .unwrap();
            assert!(e.seq > last, "seq {} after {last}", e.seq);
            last = e.seq;
            match e.op() {
                Op::Put => {
                    let value: Value = serde_json::from_str(&e.value).unwrap();
                    if let Some((_, old)) = state.get(&e.key) {
                        assert!(
                            value["i"].as_u64() > old["i"].as_u64(),
                            "change {} of {} is already in the snapshot at {position}",
                            e.seq,
                            e.key
                        );
                    }
                    state.insert(e.key, (e.etag, value));
                }
                _ => {
                    assert!(
                        state.remove(&e.key).is_some(),
                        "delete {} of {} is already in the snapshot at {position}",
                        e.seq,
                        e.key
                    );
                }
            }
        }
        assert_eq!(last, end);
        assert_eq!(state, want, "followed from {position}");
    }
}
