//! Typed buckets and the one read-modify-write against a real Moray and PostgreSQL.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use common::TestMoray;
use moray_client::filter::Filter;
use moray_client::typed::{Bucket, Change, RetryPolicy, UpdateError};
use moray_client::{BucketConfig, EtagCondition, FindOptions, IndexDef, MorayClient};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Counter {
    name: String,
    count: u64,
    /// Which updater wrote each increment, in order.
    writers: Vec<String>,
}

fn counters(moray: MorayClient) -> Bucket<Counter> {
    let config = BucketConfig::versioned(1)
        .with_index("name", IndexDef::unique("string"))
        .with_index("count", IndexDef::new("number"));
    Bucket::new(moray, "typed_counters", config)
}

/// An update that writes `key`'s record back as it was read; Moray's error if it cannot.
async fn rewrite(
    bucket: &Bucket<Counter>,
    key: &str,
) -> Result<moray_client::typed::Versioned<Counter>, moray_client::MorayError> {
    bucket
        .update(key, |_| Ok::<_, std::convert::Infallible>(Change::Write))
        .await
        .map_err(UpdateError::into_moray)
}

/// Upserts `key` with `change` under the default policy (always written); what is
/// stored after.
async fn upsert(
    bucket: &Bucket<Counter>,
    key: &str,
    mut change: impl FnMut(&mut Option<Counter>),
) -> Option<moray_client::typed::Versioned<Counter>> {
    bucket
        .upsert(&RetryPolicy::DEFAULT, key, |slot| {
            change(slot);
            Ok::<_, std::convert::Infallible>(Change::Write)
        })
        .await
        .map_err(UpdateError::into_moray)
        .unwrap_or_else(|e| panic!("upsert {key}: {e}"))
}

async fn started() -> (TestMoray, Bucket<Counter>) {
    let moray = TestMoray::start().await;
    let bucket = counters(moray.client().await);
    bucket.ensure().await.expect("bucket made");
    (moray, bucket)
}

fn counter(name: &str) -> Counter {
    Counter {
        name: name.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updaters_of_one_key_all_land_exactly_once() {
    let (_moray, bucket) = started().await;
    bucket.insert("c", &counter("c")).await.expect("created");
    const UPDATERS: usize = 12;
    const EACH: usize = 5;
    let tasks: Vec<_> = (0..UPDATERS)
        .map(|u| {
            let bucket = bucket.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    bucket
                        .update("c", |c| {
                            c.count += 1;
                            c.writers.push(format!("{u}-{i}"));
                            Ok::<_, std::convert::Infallible>(Change::Write)
                        })
                        .await
                        .map_err(UpdateError::into_moray)
                        .expect("update lands within the default policy");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("updater task");
    }
    let stored = bucket.fetch("c").await.expect("read back").value;
    assert_eq!(stored.count, (UPDATERS * EACH) as u64);
    let mut writers = stored.writers.clone();
    writers.sort();
    writers.dedup();
    assert_eq!(
        writers.len(),
        UPDATERS * EACH,
        "no update lost or applied twice"
    );
    // Each updater's own increments landed in its order.
    for u in 0..UPDATERS {
        let mine: Vec<_> = stored
            .writers
            .iter()
            .filter(|w| w.starts_with(&format!("{u}-")))
            .cloned()
            .collect();
        let expected: Vec<_> = (0..EACH).map(|i| format!("{u}-{i}")).collect();
        assert_eq!(mine, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_changed_under_every_attempt_ends_in_etag_conflict() {
    let (_moray, bucket) = started().await;
    bucket
        .insert("busy", &counter("busy"))
        .await
        .expect("created");
    let calls = AtomicU32::new(0);
    let rival = bucket.clone();
    let policy = RetryPolicy::DEFAULT.with_attempts(3);
    let err = bucket
        .update_with(&policy, "busy", |c| {
            calls.fetch_add(1, Ordering::SeqCst);
            // Another writer gets in between this read and its write, every time.
            let handle = tokio::runtime::Handle::current();
            tokio::task::block_in_place(|| {
                handle.block_on(async {
                    rival
                        .update("busy", |r| {
                            r.count += 100;
                            Ok::<_, std::convert::Infallible>(Change::Write)
                        })
                        .await
                        .map_err(UpdateError::into_moray)
                })
            })
            .expect("rival write");
            c.count += 1;
            Ok::<_, std::convert::Infallible>(Change::Write)
        })
        .await
        .map_err(UpdateError::into_moray)
        .expect_err("every attempt loses");
    assert_eq!(err.name(), "EtagConflictError", "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "one change per attempt");
    // Only the rival's writes are stored.
    assert_eq!(bucket.fetch("busy").await.expect("read").value.count, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_does_not_decode_names_bucket_key_and_field() {
    let (moray, bucket) = started().await;
    let client = moray.client().await;
    client
        .put_object(
            "typed_counters",
            "bad",
            &json!({"name": "bad", "count": 1, "writers": [1]}),
            EtagCondition::Any,
        )
        .await
        .expect("raw put");
    let err = bucket.get("bad").await.expect_err("does not decode");
    assert_eq!(err.name(), "InvalidRecordError");
    let text = err.to_string();
    assert!(text.contains("typed_counters"), "{text}");
    assert!(text.contains("\"bad\""), "{text}");
    assert!(text.contains("field writers[0]"), "{text}");
    // An update of it fails the same way, without writing.
    let err = rewrite(&bucket, "bad").await.expect_err("not decodable");
    assert_eq!(err.name(), "InvalidRecordError");
    // A find that meets it fails too, naming it.
    let err = bucket
        .find(&Filter::present("name"), &FindOptions::limit(10))
        .await
        .expect_err("not decodable");
    assert!(err.to_string().contains("field writers[0]"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_put_delete_find_and_batch_keep_morays_names() {
    let (moray, bucket) = started().await;
    assert!(bucket.get("none").await.expect("get").is_none());
    let err = bucket.fetch("none").await.expect_err("missing");
    assert_eq!(err.name(), "ObjectNotFoundError");
    let err = rewrite(&bucket, "none").await.expect_err("missing");
    assert_eq!(err.name(), "ObjectNotFoundError");

    let etag = bucket.insert("a", &counter("a")).await.expect("insert");
    let err = bucket.insert("a", &counter("a")).await.expect_err("exists");
    assert_eq!(err.name(), "EtagConflictError");
    let err = bucket
        .put("a", &counter("a"), EtagCondition::Is("stale".into()))
        .await
        .expect_err("stale etag");
    assert_eq!(err.name(), "EtagConflictError");
    let read = bucket.fetch("a").await.expect("read");
    assert_eq!(read.etag, etag);

    // Keep leaves the record and answers with it as read.
    let kept = bucket
        .update("a", |c| {
            c.count = 99;
            Ok::<_, std::convert::Infallible>(Change::Keep)
        })
        .await
        .map_err(UpdateError::into_moray)
        .expect("kept");
    assert_eq!(kept.etag, etag);
    assert_eq!(bucket.fetch("a").await.expect("read").value.count, 0);

    // A change's own error comes back as it is, nothing written.
    let err = bucket
        .update("a", |_| Err::<Change, _>("no, says the caller"))
        .await
        .expect_err("refused");
    assert!(matches!(err, UpdateError::Change("no, says the caller")));

    // Upsert creates, changes and deletes.
    let made = upsert(&bucket, "b", |slot| {
        assert!(slot.is_none());
        *slot = Some(counter("b"));
    })
    .await;
    assert_eq!(made.map(|v| v.value.name), Some("b".to_string()));
    let gone = upsert(&bucket, "b", |slot| {
        assert!(slot.is_some());
        *slot = None;
    })
    .await;
    assert!(gone.is_none());
    assert!(bucket.get("b").await.expect("get").is_none());

    // A batch of typed writes, in one transaction.
    let client = moray.client().await;
    let ops = vec![
        bucket
            .put_op("x", &counter("x"), EtagCondition::MustNotExist)
            .expect("op"),
        bucket
            .put_op("y", &counter("y"), EtagCondition::MustNotExist)
            .expect("op"),
        bucket.delete_op("a", EtagCondition::Is(etag)),
    ];
    client.batch(&ops).await.expect("batch");
    let found = bucket
        .find(
            &Filter::or([Filter::eq("name", "x"), Filter::eq("name", "y")]),
            &FindOptions::limit(10),
        )
        .await
        .expect("find");
    let mut names: Vec<_> = found.into_iter().map(|v| v.value.name).collect();
    names.sort();
    assert_eq!(names, ["x", "y"]);
    assert!(!bucket.remove("a").await.expect("remove"));
    assert!(bucket.remove("x").await.expect("remove"));
    let left = bucket
        .find_values(&Filter::present("name"), &FindOptions::limit(10))
        .await
        .expect("find");
    assert_eq!(left, [counter("y")]);
}
