//! The change feed: Watch delivers every put and delete of a bucket in commit order, and a
//! consumer resuming from the last seq it saw misses nothing while writes go on.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{TestMoray, expect_err, start, start_with};
use serde_json::json;
use tonic::Streaming;
use triton_proto::moray::v1 as pb;
use triton_proto::moray::v1::change_event::Op;

async fn watch(
    m: &mut TestMoray,
    bucket: &str,
    since: u64,
) -> Result<Streaming<pb::ChangeEvent>, tonic::Status> {
    m.client
        .watch(pb::WatchRequest {
            bucket: bucket.into(),
            since,
        })
        .await
        .map(|r| r.into_inner())
}

async fn next(stream: &mut Streaming<pb::ChangeEvent>) -> pb::ChangeEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event within 10 s")
        .expect("no stream error")
        .expect("the stream goes on")
}

#[tokio::test]
async fn puts_and_deletes_arrive_in_order() {
    let mut m = start().await;
    m.bucket("w", &[("n", "number")]).await;
    m.bucket("other", &[]).await;
    let mut stream = watch(&mut m, "w", 0).await.unwrap();
    let e1 = m.put_ok("w", "a", json!({"n": 1})).await;
    m.put_ok("other", "x", json!({})).await;
    m.put_ok("w", "b", json!({"n": 2})).await;
    m.delete("w", "a", None).await.unwrap();
    let upd = m
        .client
        .update_objects(pb::UpdateObjectsRequest {
            bucket: "w".into(),
            fields: json!({"n": 5}).to_string(),
            filter: "(n=2)".into(),
            find: None,
            options: None,
        })
        .await
        .unwrap()
        .into_inner();
    m.client
        .delete_many(pb::DeleteManyRequest {
            bucket: "w".into(),
            filter: "(n=5)".into(),
            find: None,
            options: None,
        })
        .await
        .unwrap();

    let events: Vec<pb::ChangeEvent> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(next(&mut stream).await);
        }
        v
    };
    let summary: Vec<(Op, &str)> = events.iter().map(|e| (e.op(), e.key.as_str())).collect();
    assert_eq!(
        summary,
        vec![
            (Op::Put, "a"),
            (Op::Put, "b"),
            (Op::Delete, "a"),
            (Op::Put, "b"),
            (Op::Delete, "b")
        ]
    );
    assert!(
        events.windows(2).all(|w| w[0].seq < w[1].seq),
        "seq increases"
    );
    assert!(events.iter().all(|e| e.bucket == "w"));
    assert_eq!(events[0].etag, e1);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&events[0].value).unwrap(),
        json!({"n": 1})
    );
    assert_eq!(events[2].value, "", "a delete carries no value");
    assert_eq!(events[3].etag, upd.etag);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&events[3].value).unwrap(),
        json!({"n": 5})
    );

    // Resuming after the second event replays exactly the rest.
    let mut again = watch(&mut m, "w", events[1].seq).await.unwrap();
    for want in &events[2..] {
        assert_eq!(next(&mut again).await, *want);
    }
    // A failed write (etag conflict, rolled back batch) records nothing.
    m.put_raw("w", "c", "{}", Some(Some("00000000")))
        .await
        .unwrap_err();
    m.put_ok("w", "d", json!({})).await;
    assert_eq!(next(&mut again).await.key, "d");
}

/// Writers run concurrently while a consumer disconnects every few events and resumes from
/// the last seq it saw: at the end it has seen every acknowledged write, once, in an order
/// where each key's changes come in the order they were made.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resuming_consumer_misses_nothing_under_concurrent_writes() {
    let mut m = start().await;
    m.bucket("w", &[]).await;
    // Four writers of 60 changes each, over 5 keys of their own: puts, some deletes.
    let writers = common::spawn_writers(&m, "w", 4, 60).await;

    let expected_total = async {
        let mut all = Vec::new();
        for w in writers {
            all.extend(w.await.unwrap());
        }
        all
    };
    let consumer = async {
        let mut seen: Vec<pb::ChangeEvent> = Vec::new();
        let mut last = 0u64;
        let mut reconnects = 0;
        // Until writers are done and we have caught up (checked by the caller via count).
        loop {
            let mut stream = watch(&mut m, "w", last).await.unwrap();
            for _ in 0..7 {
                match tokio::time::timeout(Duration::from_secs(3), stream.message()).await {
                    Ok(Ok(Some(e))) => {
                        assert!(e.seq > last, "seq {} after {last}", e.seq);
                        last = e.seq;
                        seen.push(e);
                    }
                    Ok(other) => panic!("stream ended: {other:?}"),
                    Err(_) => return (seen, reconnects),
                }
            }
            drop(stream);
            reconnects += 1;
        }
    };
    let (acked, (seen, reconnects)) = tokio::join!(expected_total, consumer);
    assert!(
        reconnects > 10,
        "the consumer reconnected {reconnects} times"
    );
    assert_eq!(
        seen.len(),
        acked.len(),
        "every acknowledged write is seen exactly once"
    );
    let seqs: HashSet<u64> = seen.iter().map(|e| e.seq).collect();
    assert_eq!(seqs.len(), seen.len(), "no duplicates");
    // Per key, the feed's order is the order of the writes.
    let mut by_key: HashMap<String, Vec<(Op, String)>> = HashMap::new();
    for e in &seen {
        let i = if e.op() == Op::Put {
            serde_json::from_str::<serde_json::Value>(&e.value).unwrap()["i"].to_string()
        } else {
            String::new()
        };
        by_key.entry(e.key.clone()).or_default().push((e.op(), i));
    }
    let mut want: HashMap<String, Vec<(Op, String)>> = HashMap::new();
    for (key, op, i) in &acked {
        let i = if *op == Op::Put {
            i.to_string()
        } else {
            String::new()
        };
        want.entry(key.clone()).or_default().push((*op, i));
    }
    assert_eq!(by_key, want);
}

#[tokio::test]
async fn since_beyond_what_is_kept_needs_a_resync() {
    let mut m = start_with(|c| {
        c.change_retention_secs = 0;
        c.change_trim_interval_secs = 1;
    })
    .await;
    m.bucket("w", &[]).await;
    expect_err(watch(&mut m, "nope", 0).await, "BucketNotFoundError");
    let status = watch(&mut m, "w", 1000).await.unwrap_err();
    assert_eq!(
        common::name(&status),
        "ResyncRequiredError",
        "since ahead of the feed"
    );
    let mut stream = watch(&mut m, "w", 0).await.unwrap();
    m.put_all("w", (0..3).map(|i| (format!("k{i}"), json!({}))))
        .await;
    let mut last = 0;
    for _ in 0..3 {
        last = next(&mut stream).await.seq;
    }
    drop(stream);
    // With no retention, the next trim deletes those changes.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let rows = m
            .sql("SELECT purged_through FROM moray_changes_state", json!([]))
            .await
            .unwrap();
        if rows[0]["purged_through"].as_i64().unwrap() as u64 >= last {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the change log was not trimmed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = watch(&mut m, "w", 1).await.unwrap_err();
    assert_eq!(common::name(&status), "ResyncRequiredError");
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    assert!(status.message().contains("resync"), "{status:?}");
    // From the end, or from 0 (the oldest kept), a consumer follows on.
    let mut stream = watch(&mut m, "w", last).await.unwrap();
    m.put_ok("w", "after", json!({})).await;
    let e = next(&mut stream).await;
    assert_eq!(e.key, "after");
    assert!(e.seq > last);
}

/// The case a plain sequence gets wrong: a transaction that took its change row first but
/// commits last. A consumer that already saw the later write and resumes from its seq must
/// still get the slow one.
#[tokio::test]
async fn a_write_committing_late_is_not_skipped() {
    let mut m = start().await;
    m.bucket("w", &[]).await;
    let (db, conn) = tokio_postgres::connect(&m.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    // A slow writer: its change row is inserted (lower id), its commit comes later.
    db.batch_execute(
        "BEGIN; INSERT INTO moray_changes (bucket, key, op, value, etag, mtime) VALUES ('w', 'slow', 1, '{}', 'SLOWSLOW', 0)",
    )
    .await
    .unwrap();
    let mut stream = watch(&mut m, "w", 0).await.unwrap();
    m.put_ok("w", "fast", json!({})).await;
    let fast = next(&mut stream).await;
    assert_eq!(fast.key, "fast");
    drop(stream);
    db.batch_execute("COMMIT").await.unwrap();
    let mut resumed = watch(&mut m, "w", fast.seq).await.unwrap();
    let slow = next(&mut resumed).await;
    assert_eq!(slow.key, "slow");
    assert!(slow.seq > fast.seq);
}
