//! The library against a real Moray and PostgreSQL.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::TestMoray;
use futures::StreamExt;
use futures::stream::BoxStream;
use moray_client::{
    BatchOp, BucketConfig, ChangeEvent, ChangeOp, Coalescing, ConnectOptions, EtagCondition,
    FindOptions, GetStats, IndexDef, MorayClient, PutStats,
};
use serde_json::json;

fn vms_config(version: u32) -> BucketConfig {
    BucketConfig::versioned(version)
        .with_index("owner_uuid", IndexDef::new("string"))
        .with_index("ram", IndexDef::new("number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_bucket_is_idempotent_and_survives_racing_creators() {
    let moray = TestMoray::start().await;
    let client = moray.client().await;
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.put_bucket("vmapi_vms", &vms_config(1)).await })
        })
        .collect();
    for racer in racers {
        racer
            .await
            .expect("racer task")
            .expect("every racer succeeds");
    }
    let bucket = client.get_bucket("vmapi_vms").await.expect("bucket exists");
    assert_eq!(bucket.options.version, 1);
    assert_eq!(bucket.index, vms_config(1).index);

    // Equal non-zero versions: no update, even with a different config.
    let other = BucketConfig::versioned(1).with_index("state", IndexDef::new("string"));
    client.put_bucket("vmapi_vms", &other).await.expect("no-op");
    assert_eq!(
        client.get_bucket("vmapi_vms").await.expect("get").index,
        vms_config(1).index
    );

    // Higher version: updated; lower: BucketVersionError.
    let v2 = vms_config(2).with_index("state", IndexDef::new("string"));
    client.put_bucket("vmapi_vms", &v2).await.expect("upgrade");
    assert!(
        client
            .get_bucket("vmapi_vms")
            .await
            .expect("get")
            .index
            .contains_key("state")
    );
    let err = client
        .put_bucket("vmapi_vms", &vms_config(1))
        .await
        .unwrap_err();
    assert_eq!(err.name(), "BucketVersionError", "{err}");
    assert!(!err.is_retryable());

    let err = client.create_bucket("vmapi_vms", &v2).await.unwrap_err();
    assert_eq!(err.name(), "BucketConflictError");
    let err = client.get_bucket("nope").await.unwrap_err();
    assert_eq!(err.name(), "BucketNotFoundError");
    let err = client.create_bucket("9bad", &v2).await.unwrap_err();
    assert_eq!(err.name(), "InvalidBucketNameError");
}

/// PostgreSQL as Moray sees it through a TCP relay that can be cut: while it is down,
/// connections in flight are dropped and new ones are closed at once.
struct Relay {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(to: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let relay = Relay {
            port,
            up: Default::default(),
            links: Default::default(),
        };
        relay.up.store(true, std::sync::atomic::Ordering::SeqCst);
        let (up, links) = (relay.up.clone(), relay.links.clone());
        tokio::spawn(async move {
            while let Ok((mut from, _)) = listener.accept().await {
                if !up.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut pg) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                        let _ = tokio::io::copy_bidirectional(&mut from, &mut pg).await;
                    }
                });
                links.lock().expect("links").push(link);
            }
        });
        relay
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
        if !up {
            for link in self.links.lock().expect("links").drain(..) {
                link.abort();
            }
        }
    }
}

/// A service starting while Moray cannot reach its database (compose starts every
/// container without waiting for health): `ensure_bucket` waits for the database
/// instead of failing the start-up, and gives up with the retryable error once
/// `connect_for` has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_bucket_waits_for_morays_database() {
    let postgres = tokio::task::spawn_blocking(|| {
        let pg = triton_testkit::Postgres::start().expect("PostgreSQL starts");
        pg.create_database("moray").expect("createdb moray");
        pg
    })
    .await
    .expect("start-up task");
    let relay = Relay::start(postgres.port()).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = moray::start(
        moray::Config {
            listen: "127.0.0.1:0".into(),
            postgres_url: format!("postgres://postgres@127.0.0.1:{}/moray", relay.port),
            ..Default::default()
        },
        shutdown.clone(),
    )
    .await
    .expect("Moray starts");
    let url = format!("tcp://{}", running.addr);
    let connect = |secs| {
        MorayClient::connect_with(
            &url,
            ConnectOptions {
                connect_for: Duration::from_secs(secs),
                ..Default::default()
            },
        )
    };
    relay.set_up(false);

    let impatient = connect(1).await.expect("client connects");
    let err = impatient
        .ensure_bucket("vmapi_vms", &vms_config(1))
        .await
        .expect_err("no database");
    assert!(err.is_retryable(), "{err}");

    let patient = connect(60).await.expect("client connects");
    let waiting =
        tokio::spawn(async move { patient.ensure_bucket("vmapi_vms", &vms_config(1)).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !waiting.is_finished(),
        "ensure_bucket waits for the database"
    );
    relay.set_up(true);
    waiting
        .await
        .expect("task")
        .expect("the bucket is made once the database answers");
    let bucket = impatient.get_bucket("vmapi_vms").await.expect("bucket");
    assert_eq!(bucket.options.version, 1);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_put_get_find_delete_with_etags() {
    let moray = TestMoray::start().await;
    let (client, _) = vms_client(&moray, ConnectOptions::default(), std::iter::empty()).await;

    assert_eq!(client.get_object("vms", "vm1").await.expect("get"), None);
    let value = json!({"owner_uuid": "o1", "ram": 1024, "alias": "web"});
    let etag = client
        .put_object("vms", "vm1", &value, EtagCondition::MustNotExist)
        .await
        .expect("create");
    let object = client
        .get_object("vms", "vm1")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(object.value, value);
    assert_eq!(object.etag, etag);

    let err = client
        .put_object("vms", "vm1", &value, EtagCondition::MustNotExist)
        .await
        .unwrap_err();
    assert_eq!(err.name(), "EtagConflictError");
    let err = client
        .put_object("vms", "vm1", &value, EtagCondition::Is("00000000".into()))
        .await
        .unwrap_err();
    assert_eq!(err.name(), "EtagConflictError");
    let newer = json!({"owner_uuid": "o1", "ram": 2048});
    let etag2 = client
        .put_object("vms", "vm1", &newer, EtagCondition::Is(etag.clone()))
        .await
        .expect("conditional update");
    assert_ne!(etag, etag2);

    for i in 2..=5 {
        let v = json!({"owner_uuid": "o2", "ram": i * 256});
        client
            .put_object("vms", &format!("vm{i}"), &v, EtagCondition::Any)
            .await
            .expect("put");
    }
    let found = client
        .find_objects("vms", "(owner_uuid=o2)", &FindOptions::limit(3))
        .await
        .expect("find");
    assert_eq!(found.len(), 3);
    assert!(
        found
            .iter()
            .all(|o| o.count == Some(4) && o.value["owner_uuid"] == "o2")
    );
    let mut stream = client
        .find_objects_stream("vms", "(ram>=1024)", &FindOptions::default())
        .await
        .expect("find stream");
    let mut keys = Vec::new();
    while let Some(object) = stream.next().await {
        keys.push(object.expect("object").key);
    }
    keys.sort();
    assert_eq!(keys, ["vm1", "vm4", "vm5"]);
    // The same find as SQL only (`findobjects -s`): the query and its arguments, run on
    // nothing.
    let sql = client
        .find_objects_sql("vms", "(ram>=1024)", &FindOptions::default())
        .await
        .expect("find SQL");
    let query = sql["query"].as_str().expect("a query");
    assert!(
        query.starts_with("SELECT ") && query.contains("ram"),
        "{sql}"
    );
    assert_eq!(sql["args"], json!(["1024"]), "{sql}");

    let err = client
        .delete_object("vms", "vm1", EtagCondition::Is(etag))
        .await
        .unwrap_err();
    assert_eq!(err.name(), "EtagConflictError");
    client
        .delete_object("vms", "vm1", EtagCondition::Is(etag2))
        .await
        .expect("conditional delete");
    let err = client
        .delete_object("vms", "vm1", EtagCondition::Any)
        .await
        .unwrap_err();
    assert_eq!(err.name(), "ObjectNotFoundError");

    let updated = client
        .update_objects(
            "vms",
            &json!({"ram": 1}),
            "(owner_uuid=o2)",
            &FindOptions::default(),
        )
        .await
        .expect("update");
    assert_eq!(updated.count, 4);
    assert_eq!(
        client
            .delete_many("vms", "(ram=1)", &FindOptions::default())
            .await
            .expect("delete many"),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_is_all_or_nothing() {
    let moray = TestMoray::start().await;
    let (client, _) = vms_client(&moray, ConnectOptions::default(), std::iter::empty()).await;
    let put = |key: &str, etag| BatchOp::Put {
        bucket: "vms".into(),
        key: key.into(),
        value: json!({"owner_uuid": "o", "ram": 1}),
        etag,
    };

    let results = client
        .batch(&[
            put("a", EtagCondition::Any),
            put("b", EtagCondition::MustNotExist),
        ])
        .await
        .expect("batch");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].key, "a");
    assert_eq!(results[0].etag.len(), 8);

    // The second op fails: the first must not be applied.
    let err = client
        .batch(&[
            put("c", EtagCondition::Any),
            put("b", EtagCondition::MustNotExist),
        ])
        .await
        .unwrap_err();
    assert_eq!(err.name(), "EtagConflictError");
    assert_eq!(client.get_object("vms", "c").await.expect("get"), None);

    let results = client
        .batch(&[
            BatchOp::Update {
                bucket: "vms".into(),
                fields: json!({"ram": 2}),
                filter: "(owner_uuid=o)".into(),
                options: FindOptions::default(),
            },
            BatchOp::Delete {
                bucket: "vms".into(),
                key: "a".into(),
                etag: EtagCondition::Any,
            },
        ])
        .await
        .expect("update + delete");
    assert_eq!(results[0].count, 2);
    assert_eq!(client.get_object("vms", "a").await.expect("get"), None);
}

/// The next change of a feed, within 10 s.
async fn next(feed: &mut BoxStream<'static, moray_client::Result<ChangeEvent>>) -> ChangeEvent {
    tokio::time::timeout(Duration::from_secs(10), feed.next())
        .await
        .expect("a change within 10 s")
        .expect("feed open")
        .expect("a valid change")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_puts_and_deletes_and_resumes() {
    let moray = TestMoray::start().await;
    let (client, _) = vms_client(&moray, ConnectOptions::default(), std::iter::empty()).await;
    let mut feed = client.watch("vms", 0).await.expect("watch");
    let v = json!({"owner_uuid": "o", "ram": 1});
    client
        .put_object("vms", "a", &v, EtagCondition::Any)
        .await
        .expect("put");
    client
        .delete_object("vms", "a", EtagCondition::Any)
        .await
        .expect("delete");

    let put = next(&mut feed).await;
    assert_eq!((put.op, put.key.as_str()), (ChangeOp::Put, "a"));
    assert_eq!(put.value, Some(v));
    let del = next(&mut feed).await;
    assert_eq!((del.op, del.value), (ChangeOp::Delete, None));
    assert!(del.seq > put.seq);

    // Resuming after the put delivers the delete again, and nothing before it.
    let mut resumed = client.watch("vms", put.seq).await.expect("watch");
    let first = next(&mut resumed).await;
    assert_eq!(first.seq, del.seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_waits_for_a_late_server_within_its_bound() {
    // Nothing listens: one attempt fails at once, retryably.
    let port = triton_testkit::free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let once = ConnectOptions {
        connect_for: Duration::ZERO,
        ..Default::default()
    };
    let err = MorayClient::connect_with(&url, once).await.unwrap_err();
    assert_eq!(err.name(), "ConnectionError");
    assert!(err.is_retryable());

    let err = MorayClient::connect("ftp://x").await.unwrap_err();
    assert_eq!(err.name(), "InvalidUrlError");

    // A Moray that goes away: calls fail retryably, without the client resending them.
    let moray = TestMoray::start().await;
    let client = moray.client().await;
    client.ping(true).await.expect("deep ping");
    assert_eq!(client.version().await.expect("version").version, 2);
    drop(moray);
    let mut last = None;
    for _ in 0..50 {
        match client.ping(false).await {
            Ok(()) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => {
                last = Some(e);
                break;
            }
        }
    }
    let err = last.expect("ping fails once Moray is gone");
    assert!(err.is_retryable(), "{err} ({:?})", err.code());
}

/// Coalescing with one RPC in flight at most: whatever comes meanwhile waits and goes
/// together.
const ONE_IN_FLIGHT: Coalescing = Coalescing {
    max_in_flight: 1,
    max_batch: 16,
};

/// A client of `moray` with one kind of coalescing turned off by `off`.
async fn without_coalescing(
    moray: &TestMoray,
    off: impl FnOnce(&mut ConnectOptions),
) -> MorayClient {
    let mut options = ConnectOptions::default();
    off(&mut options);
    MorayClient::connect_with(&moray.url, options)
        .await
        .expect("connect")
}

/// A client of `moray` with `options`, bucket `vms` (version 1) made and `objects` (key,
/// value) put in it; their etags.
async fn vms_client(
    moray: &TestMoray,
    options: ConnectOptions,
    objects: impl Iterator<Item = (String, serde_json::Value)>,
) -> (MorayClient, Vec<String>) {
    let client = MorayClient::connect_with(&moray.url, options)
        .await
        .expect("connect");
    client
        .put_bucket("vms", &vms_config(1))
        .await
        .expect("put bucket vms");
    let mut etags = Vec::new();
    for (key, value) in objects {
        let etag = client
            .put_object("vms", &key, &value, EtagCondition::Any)
            .await
            .unwrap_or_else(|e| panic!("put vms/{key}: {e}"));
        etags.push(etag);
    }
    (client, etags)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gets_are_coalesced_and_each_returns_its_own_object() {
    let moray = TestMoray::start().await;
    let options = ConnectOptions {
        coalesce_gets: Some(ONE_IN_FLIGHT),
        ..Default::default()
    };
    let objects = (0..40).map(|i| (format!("vm{i}"), json!({"i": i, "ram": i * 128})));
    let (client, _) = vms_client(&moray, options, objects).await;

    // 120 concurrent gets: existing keys, missing keys, and keys of a missing bucket.
    let gets: Vec<_> = (0..120u64)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move {
                let (i, bucket) = (n % 60, if n % 6 == 5 { "nope" } else { "vms" });
                (
                    i,
                    bucket,
                    client.get_object(bucket, &format!("vm{i}")).await,
                )
            })
        })
        .collect();
    for get in gets {
        let (i, bucket, result) = get.await.unwrap();
        match (bucket, result) {
            ("nope", Err(e)) => assert_eq!(e.name(), "BucketNotFoundError"),
            ("vms", Ok(Some(object))) if i < 40 => {
                assert_eq!(object.key, format!("vm{i}"));
                assert_eq!(object.bucket, "vms");
                assert_eq!(object.value, json!({"i": i, "ram": i * 128}));
                assert_eq!(object.etag.len(), 8);
            }
            ("vms", Ok(None)) if i >= 40 => {}
            (bucket, other) => panic!("{bucket}/vm{i}: {other:?}"),
        }
    }
    let stats = client.get_stats();
    assert_eq!(stats.direct + stats.coalesced, 120, "{stats:?}");
    assert!(stats.coalesced > 0, "some gets waited: {stats:?}");
    assert!(
        stats.batches < stats.coalesced,
        "a GetObjects carried several gets: {stats:?}"
    );
    assert!(
        stats.batches * 16 >= stats.coalesced,
        "batches are capped: {stats:?}"
    );

    // Gets abandoned while in flight or queued neither wedge nor confuse the others.
    let abandoned: Vec<_> = (0..50)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.get_object("vms", &format!("vm{i}")).await })
        })
        .collect();
    for get in &abandoned {
        get.abort();
    }
    let after: Vec<_> = (0..20u64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { (i, client.get_object("vms", &format!("vm{i}")).await) })
        })
        .collect();
    for get in after {
        let (i, result) = get.await.unwrap();
        assert_eq!(result.unwrap().unwrap().value["i"], i);
    }

    // Off: one RPC per get, nothing counted.
    let single = without_coalescing(&moray, |o| o.coalesce_gets = None).await;
    assert_eq!(
        single
            .get_object("vms", "vm3")
            .await
            .unwrap()
            .unwrap()
            .value["i"],
        3
    );
    assert_eq!(single.get_stats(), GetStats::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_objects_returns_one_result_per_key() {
    let moray = TestMoray::start().await;
    let (client, _) = vms_client(&moray, ConnectOptions::default(), std::iter::empty()).await;
    let etag = client
        .put_object("vms", "a", &json!({"ram": 256}), EtagCondition::Any)
        .await
        .unwrap();
    let results = client
        .get_objects(&[("vms", "a"), ("vms", "b"), ("nope", "a")])
        .await
        .unwrap();
    assert_eq!(results.len(), 3);
    let a = results[0].as_ref().unwrap().as_ref().unwrap();
    assert_eq!((a.key.as_str(), a.etag.as_str()), ("a", etag.as_str()));
    assert_eq!(a.value, json!({"ram": 256}));
    assert!(matches!(results[1], Ok(None)));
    assert_eq!(
        results[2].as_ref().unwrap_err().name(),
        "BucketNotFoundError"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_are_coalesced_and_each_gets_its_own_result() {
    let moray = TestMoray::start().await;
    let options = ConnectOptions {
        coalesce_puts: Some(ONE_IN_FLIGHT),
        ..Default::default()
    };
    let objects = (0..40).map(|i| (format!("q{i}"), json!({"v": 0})));
    let (client, etags) = vms_client(&moray, options, objects).await;
    let before = client.put_stats();

    // 100 concurrent puts: right etags (q0..q19), wrong etags (q20..q39), new keys, and
    // keys of a missing bucket.
    let puts: Vec<_> = (0..100usize)
        .map(|n| {
            let client = client.clone();
            let etag = etags.get(n).cloned();
            tokio::spawn(async move {
                let (bucket, key, condition) = match n {
                    0..20 => ("vms", format!("q{n}"), EtagCondition::Is(etag.unwrap())),
                    20..40 => ("vms", format!("q{n}"), EtagCondition::Is("WRONGTAG".into())),
                    _ if n % 10 == 9 => ("nope", format!("n{n}"), EtagCondition::Any),
                    _ => ("vms", format!("n{n}"), EtagCondition::MustNotExist),
                };
                let value = json!({"v": n});
                let result = client.put_object(bucket, &key, &value, condition).await;
                (n, bucket, key, result)
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for put in puts {
        let (n, bucket, key, result) = put.await.unwrap();
        match (n, bucket, result) {
            (0..20, "vms", Ok(etag)) | (40.., "vms", Ok(etag)) => {
                assert_eq!(etag.len(), 8);
                acknowledged.push((n, key, etag));
            }
            (20..40, "vms", Err(e)) => {
                assert_eq!(e.name(), "EtagConflictError", "{key}: {e}");
                assert!(e.to_string().contains(&etags[n]), "{key}: {e}");
            }
            (_, "nope", Err(e)) => assert_eq!(e.name(), "BucketNotFoundError", "{key}: {e}"),
            (n, bucket, other) => panic!("{n} {bucket}/{key}: {other:?}"),
        }
    }
    assert_eq!(acknowledged.len(), 20 + 54);
    // Every acknowledged put is readable; the rejected ones changed nothing.
    for (n, key, etag) in &acknowledged {
        let object = client.get_object("vms", key).await.unwrap().unwrap();
        assert_eq!(object.value, json!({"v": n}), "{key}");
        assert_eq!(&object.etag, etag, "{key}");
    }
    for i in 20..40 {
        let object = client.get_object("vms", &format!("q{i}")).await.unwrap();
        assert_eq!(object.unwrap().value, json!({"v": 0}));
    }
    let stats = client.put_stats();
    let calls = stats.direct + stats.coalesced - before.direct - before.coalesced;
    assert_eq!(calls, 100, "{stats:?}");
    let rpcs = stats.direct + stats.batches - before.direct - before.batches;
    assert!(rpcs < 100, "fewer RPCs than puts: {stats:?}");
    assert!(
        stats.batches < stats.coalesced,
        "a PutObjects carried several puts: {stats:?}"
    );

    // Puts abandoned while in flight or queued neither wedge nor confuse the others.
    let abandoned: Vec<_> = (0..50)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .put_object("vms", &format!("a{i}"), &json!({}), EtagCondition::Any)
                    .await
            })
        })
        .collect();
    for put in &abandoned {
        put.abort();
    }
    let after: Vec<_> = (0..20)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let key = format!("b{i}");
                let r = client
                    .put_object("vms", &key, &json!({"b": i}), EtagCondition::Any)
                    .await;
                (key, r)
            })
        })
        .collect();
    for put in after {
        let (key, result) = put.await.unwrap();
        let etag = result.unwrap();
        assert_eq!(
            client.get_object("vms", &key).await.unwrap().unwrap().etag,
            etag
        );
    }

    // Off: one RPC per put, nothing counted.
    let single = without_coalescing(&moray, |o| o.coalesce_puts = None).await;
    single
        .put_object("vms", "s", &json!({}), EtagCondition::Any)
        .await
        .unwrap();
    assert_eq!(single.put_stats(), PutStats::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_objects_returns_one_result_per_item() {
    let moray = TestMoray::start().await;
    let (client, _) = vms_client(&moray, ConnectOptions::default(), std::iter::empty()).await;
    let v = json!({"ram": 256});
    let results = client
        .put_objects(&[
            ("vms", "a", &v, EtagCondition::MustNotExist),
            ("vms", "a", &v, EtagCondition::MustNotExist),
            ("nope", "a", &v, EtagCondition::Any),
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 3);
    let etag = results[0].as_ref().unwrap();
    assert_eq!(results[1].as_ref().unwrap_err().name(), "EtagConflictError");
    assert_eq!(
        results[2].as_ref().unwrap_err().name(),
        "BucketNotFoundError"
    );
    let a = client.get_object("vms", "a").await.unwrap().unwrap();
    assert_eq!((&a.etag, &a.value), (etag, &v));
}

/// Values built into filters with `moray_client::filter` match only themselves: `*`, `)(`
/// and `\` in a value neither widen the filter nor break it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_values_with_special_characters_match_only_themselves() {
    use moray_client::filter::Filter;

    let moray = TestMoray::start().await;
    let client = moray.client().await;
    let config = vms_config(1).with_index("alias", IndexDef::new("string"));
    client.put_bucket("vms", &config).await.expect("bucket");
    let aliases = [
        "web",
        "*",
        "a)(owner_uuid=*",
        "back\\slash",
        "star*",
        "paren(s)",
    ];
    for (i, alias) in aliases.iter().enumerate() {
        let value = json!({"owner_uuid": format!("o{}", i % 2), "alias": alias});
        client
            .put_object("vms", &format!("vm{i}"), &value, EtagCondition::Any)
            .await
            .expect("put");
    }
    let keys = |filter: Filter| {
        let client = client.clone();
        async move {
            let mut keys: Vec<String> = client
                .find_objects("vms", &filter.to_string(), &FindOptions::limit(100))
                .await
                .unwrap_or_else(|e| panic!("{filter}: {e}"))
                .into_iter()
                .map(|o| o.key)
                .collect();
            keys.sort();
            keys
        }
    };
    for (i, alias) in aliases.iter().enumerate() {
        assert_eq!(
            keys(Filter::eq("alias", alias)).await,
            vec![format!("vm{i}")],
            "{alias:?}"
        );
        // Scoped to one owner, a value can't reach the other owner's objects.
        let owner = format!("o{}", 1 - i % 2);
        assert!(
            keys(Filter::and([
                Filter::eq("owner_uuid", &owner),
                Filter::eq("alias", alias)
            ]))
            .await
            .is_empty(),
            "{alias:?} as {owner}"
        );
    }
    assert_eq!(keys(Filter::contains("alias", ")(")).await, vec!["vm2"]);
    assert_eq!(keys(Filter::glob("alias", "star*")).await, vec!["vm4"]);
    assert_eq!(
        keys(Filter::eq("alias", "nothing*")).await,
        Vec::<String>::new()
    );
}
