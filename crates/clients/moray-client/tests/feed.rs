//! `MorayClient::follow` against a real Moray and PostgreSQL: snapshot then follow,
//! resume from a position, and the explicit resync answer.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use moray_client::{BucketConfig, EtagCondition, FeedItem, IndexDef, MorayClient, Result};
use serde_json::json;
use triton_testkit::{MorayFixture, keep_no_change_log};

async fn next(feed: &mut BoxStream<'static, Result<FeedItem>>) -> FeedItem {
    tokio::time::timeout(Duration::from_secs(10), feed.next())
        .await
        .expect("an item within 10 s")
        .expect("the feed goes on")
        .expect("no error")
}

async fn client(moray: &MorayFixture) -> MorayClient {
    let client = MorayClient::connect(moray.url()).await.expect("connects");
    let config = BucketConfig::versioned(1).with_index("n", IndexDef::new("number"));
    client.put_bucket("things", &config).await.expect("bucket");
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_gives_the_snapshot_then_every_change_and_resumes() {
    let moray = MorayFixture::start().await;
    let client = client(&moray).await;
    for (i, key) in ["a", "b", "c"].iter().enumerate() {
        client
            .put_object("things", key, &json!({"n": i}), EtagCondition::Any)
            .await
            .unwrap();
    }

    let mut feed = client.follow("things", None, 0);
    let FeedItem::Snapshot { position, objects } = next(&mut feed).await else {
        panic!("the snapshot comes first");
    };
    let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["a", "b", "c"]);
    assert_eq!(objects[2].value, json!({"n": 2}));
    assert_eq!(next(&mut feed).await, FeedItem::SnapshotDone { position });

    let etag = client
        .put_object("things", "d", &json!({"n": 3}), EtagCondition::Any)
        .await
        .unwrap();
    client
        .delete_object("things", "a", EtagCondition::Any)
        .await
        .unwrap();
    let put = next(&mut feed).await;
    let FeedItem::Put { seq, .. } = put else {
        panic!("a put, not {put:?}");
    };
    assert!(seq > position);
    assert_eq!(
        put,
        FeedItem::Put {
            seq,
            key: "d".into(),
            value: json!({"n": 3}),
            etag,
        }
    );
    let delete = next(&mut feed).await;
    assert!(
        matches!(&delete, FeedItem::Delete { seq: s, key } if *s > seq && key == "a"),
        "{delete:?}"
    );
    drop(feed);

    // From a position: no snapshot, the changes after it.
    let mut resumed = client.follow("things", None, seq);
    assert_eq!(
        next(&mut resumed).await,
        FeedItem::SnapshotDone { position: seq }
    );
    assert_eq!(next(&mut resumed).await, delete);

    // A filter narrows the snapshot.
    let mut filtered = client.follow("things", Some("(n>=2)"), 0);
    let FeedItem::Snapshot { objects, position } = next(&mut filtered).await else {
        panic!("the snapshot comes first");
    };
    let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["c", "d"]);
    assert_eq!(position, delete.position());

    // A bad filter or bucket is an error naming it, and ends the feed.
    let mut bad = client.follow("things", Some("(n>="), 0);
    let e = bad.next().await.expect("an item").expect_err("an error");
    assert_eq!(e.name(), "InvalidQueryError", "{e}");
    assert!(bad.next().await.is_none());
    let mut bad = client.follow("nope", None, 0);
    let e = bad.next().await.expect("an item").expect_err("an error");
    assert_eq!(e.name(), "BucketNotFoundError", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_the_feed_no_longer_has_is_answered_with_resync() {
    let moray = MorayFixture::start_with(keep_no_change_log).await;
    let client = client(&moray).await;
    let mut last = 0;
    for key in ["a", "b", "c"] {
        client
            .put_object("things", key, &json!({"n": 1}), EtagCondition::Any)
            .await
            .unwrap();
    }
    let mut feed = client.follow("things", None, 0);
    while let FeedItem::Snapshot { position, .. } = next(&mut feed).await {
        last = position;
    }
    drop(feed);
    // With no retention, the next trim deletes those changes.
    moray.change_log_trimmed_through(last).await;
    let mut old = client.follow("things", None, 1);
    let item = next(&mut old).await;
    assert!(
        matches!(&item, FeedItem::ResyncRequired { since: 1, message } if message.contains("resync")),
        "{item:?}"
    );
    assert!(old.next().await.is_none(), "the feed ends after a resync");
    // From 0 a follower starts again with the whole state.
    let mut again = client.follow("things", None, 0);
    let FeedItem::Snapshot { objects, .. } = next(&mut again).await else {
        panic!("the snapshot comes first");
    };
    assert_eq!(objects.len(), 3);
}
