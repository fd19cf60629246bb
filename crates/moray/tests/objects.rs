//! Objects: put, get, delete, etags, unique indexes, value checks, every index type stored
//! and merged back, updateObjects, deleteMany and batch.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{EVERY_INDEX_TYPE, expect_err, put_item, start, start_with};
use serde_json::{Value, json};
use triton_proto::moray::v1 as pb;

#[tokio::test]
async fn put_get_delete_round_trip_with_envelope() {
    let mut m = start().await;
    m.bucket("vms", &[("owner", "string")]).await;
    let value = json!({"owner": "alice", "ram": 1024, "nested": {"a": [1, 2]}});
    let etag = m.put_ok("vms", "vm1", value.clone()).await;
    assert_eq!(etag.len(), 8);
    assert_eq!(etag, format!("{:08X}", crc32fast_hash(&value.to_string())));

    let o = m.get("vms", "vm1").await.unwrap();
    assert_eq!(o.bucket, "vms");
    assert_eq!(o.key, "vm1");
    assert_eq!(o.etag, etag);
    assert!(o.id > 0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        (now - o.mtime).abs() < 60_000,
        "mtime {} is now-ish",
        o.mtime
    );
    assert_eq!(o.txn_snap, None);
    assert_eq!(serde_json::from_str::<Value>(&o.value).unwrap(), value);

    // An update keeps _id and changes etag; delete then put gives a new _id.
    let etag2 = m.put_ok("vms", "vm1", json!({"owner": "bob"})).await;
    assert_ne!(etag2, etag);
    let o2 = m.get("vms", "vm1").await.unwrap();
    assert_eq!(o2.id, o.id);
    m.delete("vms", "vm1", None).await.unwrap();
    expect_err(m.get("vms", "vm1").await, "ObjectNotFoundError");
    expect_err(m.delete("vms", "vm1", None).await, "ObjectNotFoundError");
    m.put_ok("vms", "vm1", json!({"owner": "carol"})).await;
    assert!(m.get("vms", "vm1").await.unwrap().id > o.id);

    expect_err(m.get("nope", "x").await, "BucketNotFoundError");
    expect_err(m.put("nope", "x", json!({})).await, "BucketNotFoundError");
}

fn crc32fast_hash(s: &str) -> u32 {
    // The etag rule, computed independently of the server: CRC-32 (IEEE).
    let mut crc: u32 = 0xFFFF_FFFF;
    for b in s.bytes() {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test]
async fn etag_conditions() {
    let mut m = start().await;
    m.bucket("b", &[]).await;
    // etag null: must not exist.
    let e1 = m.put_raw("b", "k", "{\"v\":1}", Some(None)).await.unwrap();
    let msg = expect_err(
        m.put_raw("b", "k", "{\"v\":2}", Some(None)).await,
        "EtagConflictError",
    );
    assert!(msg.contains("expected null") && msg.contains(&e1), "{msg}");
    // etag string: must match.
    let msg = expect_err(
        m.put_raw("b", "k", "{\"v\":2}", Some(Some("AAAAAAAA")))
            .await,
        "EtagConflictError",
    );
    assert!(
        msg.contains("expected AAAAAAAA") && msg.contains(&e1),
        "{msg}"
    );
    let e2 = m
        .put_raw("b", "k", "{\"v\":2}", Some(Some(&e1)))
        .await
        .unwrap();
    assert_eq!(m.get_value("b", "k").await, json!({"v": 2}));
    // A missing object counts as etag "null".
    let msg = expect_err(
        m.put_raw("b", "new", "{}", Some(Some("AAAAAAAA"))).await,
        "EtagConflictError",
    );
    assert!(msg.contains("found null"), "{msg}");
    // Conditional deletes.
    expect_err(
        m.delete("b", "k", Some(Some(&e1))).await,
        "EtagConflictError",
    );
    expect_err(m.delete("b", "k", Some(None)).await, "EtagConflictError");
    m.delete("b", "k", Some(Some(&e2))).await.unwrap();
    expect_err(m.get("b", "k").await, "ObjectNotFoundError");
    let status = m
        .put_raw("b", "k", "{}", Some(Some("X")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Aborted);
}

#[tokio::test]
async fn unique_indexes_name_the_attribute_and_value() {
    let mut m = start().await;
    m.bucket("users", &[("email", "string!")]).await;
    m.put_ok("users", "a", json!({"email": "x@y.z"})).await;
    let status = m
        .put("users", "b", json!({"email": "x@y.z"}))
        .await
        .unwrap_err();
    assert_eq!(common::name(&status), "UniqueAttributeError");
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
    assert!(
        status.message().contains("email") && status.message().contains("x@y.z"),
        "{status:?}"
    );
    expect_err(m.get("users", "b").await, "ObjectNotFoundError");
    // Re-putting the holder of the value is fine.
    m.put_ok("users", "a", json!({"email": "x@y.z", "n": 1}))
        .await;
}

#[tokio::test]
async fn values_are_checked() {
    let mut m = start_with(|c| c.max_value_bytes = 1000).await;
    m.bucket("b", &[("n", "number"), ("ok", "boolean")]).await;
    let msg = expect_err(
        m.put_raw("b", "k", "{not json", None).await,
        "InvalidArgumentError",
    );
    assert!(
        msg.contains("value") && msg.contains("not valid JSON"),
        "{msg}"
    );
    let msg = expect_err(
        m.put_raw("b", "k", "[1,2]", None).await,
        "InvalidArgumentError",
    );
    assert!(msg.contains("JSON object"), "{msg}");
    let big = json!({"blob": "x".repeat(2000)});
    let status = m.put("b", "k", big).await.unwrap_err();
    assert_eq!(common::name(&status), "ValueTooLargeError");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("1000"), "{status:?}");
    let msg = expect_err(
        m.put("b", "k", json!({"ok": "maybe"})).await,
        "InvalidIndexTypeError",
    );
    assert!(msg.contains("\"ok\"") && msg.contains("boolean"), "{msg}");
    expect_err(m.put("b", "", json!({})).await, "InvalidArgumentError");
    // Nothing was written by any of these.
    expect_err(m.get("b", "k").await, "ObjectNotFoundError");
}

/// Every index type: a value is stored in its column (findable by equality) and read back
/// normalized.
#[tokio::test]
async fn every_index_type_is_stored_and_merged_back() {
    let mut m = start().await;
    m.bucket("t", EVERY_INDEX_TYPE).await;
    let value = json!({
        "name": "hello", "n": 42.5, "ok": "TRUE", "d": "2012-01-02T03:04:05Z",
        "u": "4a8e1d8b-34a5-4b5a-9f6a-000000000001", "ip": "::ffff:10.0.0.1",
        "mac": "AA-BB-CC-DD-EE-0F", "net": "10.1.2.3/8", "nr": "[1,10)",
        "dr": "[2012-01-01T00:00:00Z,2013-01-01T00:00:00Z)",
        "tags": ["a", "b"], "ns": [1, 2.5], "oks": [true, false],
        "ds": ["2012-01-01T00:00:00.123Z"], "ips": ["192.168.0.1", "fd00::1"],
        "macs": ["00:00:00:00:00:01"], "nets": ["192.168.0.0/16"],
        "other": {"kept": true}
    });
    m.put_ok("t", "k", value).await;
    let got = m.get_value("t", "k").await;
    assert_eq!(
        got,
        json!({
            "name": "hello", "n": 42.5, "ok": true, "d": "2012-01-02T03:04:05.000Z",
            "u": "4a8e1d8b-34a5-4b5a-9f6a-000000000001", "ip": "10.0.0.1",
            "mac": "aa:bb:cc:dd:ee:0f", "net": "10.0.0.0/8", "nr": "[1,10)",
            "dr": "[2012-01-01T00:00:00.000Z,2013-01-01T00:00:00.000Z)",
            "tags": ["a", "b"], "ns": [1, 2.5], "oks": [true, false],
            "ds": ["2012-01-01T00:00:00.123Z"], "ips": ["192.168.0.1", "fd00::1"],
            "macs": ["00:00:00:00:00:01"], "nets": ["192.168.0.0/16"],
            "other": {"kept": true}
        })
    );
    for f in [
        "(name=hello)",
        "(n=42.5)",
        "(ok=true)",
        "(d=2012-01-02T03:04:05.000Z)",
        "(u=4a8e1d8b-34a5-4b5a-9f6a-000000000001)",
        "(ip=10.0.0.1)",
        "(mac=aa:bb:cc:dd:ee:0f)",
        "(net=10.0.0.0/8)",
        "(tags=b)",
        "(ns=2.5)",
        "(oks=false)",
        "(ds=2012-01-01T00:00:00.123Z)",
        "(ips=fd00::1)",
        "(macs=00:00:00:00:00:01)",
        "(nets=192.168.0.0/16)",
    ] {
        assert_eq!(m.keys("t", f).await, vec!["k"], "{f}");
    }
    // Values the type cannot hold are refused, naming the field.
    for (field, bad) in [
        ("d", json!("yesterday")),
        ("u", json!("not-a-uuid")),
        ("ip", json!("300.1.1.1")),
        ("mac", json!("zz")),
        ("net", json!("10.0.0.0")),
        ("nr", json!("1..2")),
        ("dr", json!("[x,y)")),
        ("ips", json!(["1.2.3.4", "nope"])),
    ] {
        let msg = expect_err(
            m.put("t", "bad", json!({ field: bad })).await,
            "InvalidIndexTypeError",
        );
        assert!(msg.contains(&format!("\"{field}\"")), "{msg}");
    }
    // Triton quirks: an unparseable number is NULL (the field disappears on read), an
    // array under a scalar string index is stored joined and left alone in the value.
    m.put_ok("t", "q", json!({"n": "abc", "name": ["x", "y"]}))
        .await;
    assert_eq!(m.get_value("t", "q").await, json!({"name": ["x", "y"]}));
    assert_eq!(m.keys("t", "(name=x,y)").await, vec!["q"]);
}

#[tokio::test]
async fn update_objects_and_delete_many() {
    let mut m = start().await;
    m.bucket("vms", &[("state", "string"), ("ram", "number")])
        .await;
    m.put_all(
        "vms",
        (0..5).map(|i| {
            (
                format!("vm{i}"),
                json!({"state": "running", "ram": i * 100, "x": i}),
            )
        }),
    )
    .await;
    let r = m
        .client
        .update_objects(pb::UpdateObjectsRequest {
            bucket: "vms".into(),
            fields: json!({"state": "stopped"}).to_string(),
            filter: "(ram>=200)".into(),
            find: None,
            options: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.count, 3);
    assert!(r.etag.starts_with('u') && r.etag.len() == 8, "{}", r.etag);
    assert_eq!(
        m.keys("vms", "(state=stopped)").await,
        vec!["vm2", "vm3", "vm4"]
    );
    let o = m.get("vms", "vm3").await.unwrap();
    assert_eq!(o.etag, r.etag);
    assert_eq!(
        serde_json::from_str::<Value>(&o.value).unwrap(),
        json!({"state": "stopped", "ram": 300, "x": 3})
    );

    let update = |fields: Value, filter: &str| pb::UpdateObjectsRequest {
        bucket: "vms".into(),
        fields: fields.to_string(),
        filter: filter.into(),
        find: None,
        options: None,
    };
    expect_err(
        m.client.update_objects(update(json!({}), "(ram>=0)")).await,
        "FieldUpdateError",
    );
    expect_err(
        m.client
            .update_objects(update(json!({"x": 1}), "(ram>=0)"))
            .await,
        "NotIndexedError",
    );
    expect_err(
        m.client
            .update_objects(update(json!({"state": null}), "(ram>=0)"))
            .await,
        "NotNullableError",
    );
    expect_err(
        m.client
            .update_objects(update(json!({"state": "a"}), "(x=1)"))
            .await,
        "NotIndexedError",
    );
    expect_err(
        m.client
            .update_objects(update(json!({"state": "a"}), "(ram>="))
            .await,
        "InvalidQueryError",
    );

    let r = m
        .client
        .delete_many(pb::DeleteManyRequest {
            bucket: "vms".into(),
            filter: "(state=stopped)".into(),
            find: Some(pb::FindOptions {
                limit: Some(2),
                ..Default::default()
            }),
            options: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.count, 2, "the limit applies to deleteMany");
    assert_eq!(m.keys("vms", "(ram>=0)").await.len(), 3);
    expect_err(
        m.client
            .delete_many(pb::DeleteManyRequest {
                bucket: "vms".into(),
                filter: "(x=1)".into(),
                find: None,
                options: None,
            })
            .await,
        "NotIndexedError",
    );
}

fn delete_op(bucket: &str, key: &str) -> pb::BatchOperation {
    pb::BatchOperation {
        operation: Some(pb::batch_operation::Operation::Delete(pb::BatchDelete {
            bucket: bucket.into(),
            key: key.into(),
            etag: None,
        })),
    }
}

fn put_op(bucket: &str, key: &str, value: Value, etag: Option<Option<&str>>) -> pb::BatchOperation {
    pb::BatchOperation {
        operation: Some(pb::batch_operation::Operation::Put(pb::BatchPut {
            bucket: bucket.into(),
            key: key.into(),
            value: value.to_string(),
            etag: common::etag_if(etag),
        })),
    }
}

#[tokio::test]
async fn batch_is_all_or_nothing() {
    let mut m = start().await;
    m.bucket("a", &[("n", "number")]).await;
    m.bucket("b", &[("email", "string!")]).await;
    m.put_ok("a", "old", json!({"n": 1})).await;
    m.put_ok("b", "taken", json!({"email": "e"})).await;

    // The last op fails (unique violation): nothing of the batch remains.
    let r = m
        .batch(vec![
            put_op("a", "x", json!({"n": 5}), None),
            delete_op("a", "old"),
            put_op("b", "y", json!({"email": "e"}), None),
        ])
        .await;
    expect_err(r, "UniqueAttributeError");
    expect_err(m.get("a", "x").await, "ObjectNotFoundError");
    m.get("a", "old").await.expect("the delete was rolled back");

    // An etag conflict in the middle also rolls back.
    let r = m
        .batch(vec![
            put_op("a", "x", json!({"n": 5}), None),
            put_op("a", "old", json!({"n": 2}), Some(Some("00000000"))),
        ])
        .await;
    expect_err(r, "EtagConflictError");
    expect_err(m.get("a", "x").await, "ObjectNotFoundError");

    // A good batch applies every op, in order, and reports each.
    let r = m
        .batch(vec![
            put_op("a", "x", json!({"n": 5}), Some(None)),
            put_op("a", "x", json!({"n": 6}), None),
            put_op("b", "y", json!({"email": "f"}), None),
            pb::BatchOperation {
                operation: Some(pb::batch_operation::Operation::Update(pb::BatchUpdate {
                    bucket: "a".into(),
                    fields: json!({"n": 7}).to_string(),
                    filter: "(n>=6)".into(),
                    find: None,
                })),
            },
            pb::BatchOperation {
                operation: Some(pb::batch_operation::Operation::DeleteMany(
                    pb::BatchDeleteMany {
                        bucket: "a".into(),
                        filter: "(n<=1)".into(),
                        find: None,
                    },
                )),
            },
        ])
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.etags.len(), 5);
    assert_eq!(r.etags[1].key, "x");
    assert_eq!(r.etags[3].count, 1);
    assert_eq!(r.etags[4].count, 1);
    assert_eq!(m.get_value("a", "x").await, json!({"n": 7}));
    expect_err(m.get("a", "old").await, "ObjectNotFoundError");
    assert_eq!(m.get_value("b", "y").await, json!({"email": "f"}));

    // A bad value anywhere refuses the batch before anything runs.
    let r = m
        .batch(vec![
            put_op("a", "z", json!({"n": 1}), None),
            pb::BatchOperation {
                operation: Some(pb::batch_operation::Operation::Put(pb::BatchPut {
                    bucket: "a".into(),
                    key: "w".into(),
                    value: "nope".into(),
                    etag: None,
                })),
            },
        ])
        .await;
    let msg = expect_err(r, "InvalidArgumentError");
    assert!(msg.contains("requests[1].value"), "{msg}");
    expect_err(m.get("a", "z").await, "ObjectNotFoundError");
}

#[tokio::test]
async fn guarantee_order_buckets_number_their_writes() {
    let mut m = start().await;
    m.client
        .create_bucket(pb::CreateBucketRequest {
            name: "ordered".into(),
            config: Some(pb::BucketConfig {
                index: common::index(&[("n", "number")]),
                options: Some(pb::BucketOptions {
                    version: 0,
                    guarantee_order: true,
                }),
            }),
            options: None,
        })
        .await
        .unwrap();
    m.put_ok("ordered", "a", json!({"n": 1})).await;
    m.put_ok("ordered", "b", json!({"n": 2})).await;
    let a = m
        .get("ordered", "a")
        .await
        .unwrap()
        .txn_snap
        .expect("txn_snap set");
    let b = m
        .get("ordered", "b")
        .await
        .unwrap()
        .txn_snap
        .expect("txn_snap set");
    assert!(b > a);
}

async fn get_objects(
    m: &mut common::TestMoray,
    keys: &[(&str, &str)],
) -> Result<Vec<pb::get_object_result::Result>, tonic::Status> {
    let response = m
        .client
        .get_objects(pb::GetObjectsRequest {
            keys: keys
                .iter()
                .map(|(bucket, key)| pb::ObjectKey {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                })
                .collect(),
            options: None,
        })
        .await?
        .into_inner();
    assert_eq!(response.results.len(), keys.len(), "one result per key");
    Ok(response
        .results
        .into_iter()
        .map(|r| r.result.expect("every result is an object or an error"))
        .collect())
}

/// Asserts that each GetObjects result is exactly what GetObject answers for its key:
/// the same envelope, or the same error name, code and message.
async fn assert_same_as_get_object(
    m: &mut common::TestMoray,
    keys: &[(&str, &str)],
    results: &[pb::get_object_result::Result],
) {
    use pb::get_object_result::Result as R;
    for ((bucket, key), result) in keys.iter().zip(results) {
        match (m.get(bucket, key).await, result) {
            (Ok(single), R::Object(batched)) => assert_eq!(&single, batched, "{bucket}/{key}"),
            (Err(status), R::Error(e)) => {
                assert_eq!(e.name, common::name(&status), "{bucket}/{key}");
                assert_eq!(e.code, status.code() as i32, "{bucket}/{key}");
                assert_eq!(status.message(), format!("{}: {}", e.name, e.message));
            }
            (single, batched) => {
                panic!("{bucket}/{key}: GetObject {single:?}, GetObjects {batched:?}")
            }
        }
    }
}

fn error_name(result: &pb::get_object_result::Result) -> &str {
    match result {
        pb::get_object_result::Result::Error(e) => &e.name,
        pb::get_object_result::Result::Object(o) => panic!("expected an error, got {o:?}"),
    }
}

fn object(result: &pb::get_object_result::Result) -> &pb::MorayObject {
    match result {
        pb::get_object_result::Result::Object(o) => o,
        pb::get_object_result::Result::Error(e) => panic!("expected an object, got {e:?}"),
    }
}

#[tokio::test]
async fn get_objects_answers_each_key_as_get_object_does() {
    let mut m = start().await;
    m.bucket("vms", &[("owner", "string"), ("ram", "number")])
        .await;
    m.bucket("nets", &[]).await;
    m.put_ok("vms", "vm1", json!({"owner": "alice", "ram": 1024}))
        .await;
    m.put_ok("vms", "vm2", json!({"owner": "bob", "ram": "2048"}))
        .await;
    m.put_ok("nets", "n1", json!({"vlan": 5})).await;

    // Found and missing keys, two buckets, a bucket that does not exist, a repeated key.
    let keys = [
        ("vms", "vm1"),
        ("vms", "nope"),
        ("nets", "n1"),
        ("missing", "x"),
        ("vms", "vm2"),
        ("missing", "y"),
        ("vms", "vm1"),
        ("vms", ""),
    ];
    let results = get_objects(&mut m, &keys).await.unwrap();
    assert_eq!(object(&results[0]).key, "vm1");
    assert_eq!(object(&results[0]).bucket, "vms");
    assert_eq!(error_name(&results[1]), "ObjectNotFoundError");
    assert_eq!(object(&results[2]).value, "{\"vlan\":5}");
    assert_eq!(error_name(&results[3]), "BucketNotFoundError");
    // The index column's normalized value is merged back, as GetObject does.
    assert_eq!(
        serde_json::from_str::<Value>(&object(&results[4]).value).unwrap()["ram"],
        json!(2048)
    );
    assert_eq!(error_name(&results[5]), "BucketNotFoundError");
    assert_eq!(object(&results[6]), object(&results[0]));
    assert_eq!(error_name(&results[7]), "ObjectNotFoundError");
    assert_same_as_get_object(&mut m, &keys, &results).await;

    // No keys: no results.
    assert!(get_objects(&mut m, &[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn get_objects_sees_writes_made_between_calls() {
    let mut m = start().await;
    m.bucket("b", &[("state", "string")]).await;
    let e1 = m.put_ok("b", "k1", json!({"state": "running"})).await;
    m.put_ok("b", "k2", json!({"state": "stopped"})).await;
    let keys = [("b", "k1"), ("b", "k2"), ("b", "k3")];
    let before = get_objects(&mut m, &keys).await.unwrap();
    assert_eq!(object(&before[0]).etag, e1);
    assert_eq!(error_name(&before[2]), "ObjectNotFoundError");

    let e1b = m.put_ok("b", "k1", json!({"state": "stopped"})).await;
    m.delete("b", "k2", None).await.unwrap();
    m.put_ok("b", "k3", json!({"state": "provisioning"})).await;
    let after = get_objects(&mut m, &keys).await.unwrap();
    assert_eq!(object(&after[0]).etag, e1b);
    assert_eq!(object(&after[0]).id, object(&before[0]).id);
    assert_eq!(object(&after[0]).value, "{\"state\":\"stopped\"}");
    assert_eq!(error_name(&after[1]), "ObjectNotFoundError");
    assert_eq!(object(&after[2]).key, "k3");
    assert_same_as_get_object(&mut m, &keys, &after).await;
}

#[tokio::test]
async fn get_objects_takes_up_to_a_thousand_keys() {
    let mut m = start().await;
    m.bucket("many", &[]).await;
    m.batch_put("many", (0..300).map(|i| (format!("k{i}"), json!({"i": i}))))
        .await;
    // k0..k999 in a scrambled order; k0..k299 exist.
    let names: Vec<String> = (0..moray::objects::MAX_GET_OBJECTS_KEYS)
        .map(|i| format!("k{}", i * 3 % 1000))
        .collect();
    let keys: Vec<(&str, &str)> = names.iter().map(|k| ("many", k.as_str())).collect();
    let results = get_objects(&mut m, &keys).await.unwrap();
    for ((_, key), result) in keys.iter().zip(&results) {
        let n: usize = key[1..].parse().unwrap();
        if n < 300 {
            let o = object(result);
            assert_eq!(o.key, *key);
            assert_eq!(o.value, json!({"i": n}).to_string());
        } else {
            assert_eq!(error_name(result), "ObjectNotFoundError", "{key}");
        }
    }

    let too_many: Vec<(&str, &str)> = (0..=moray::objects::MAX_GET_OBJECTS_KEYS)
        .map(|_| ("many", "k1"))
        .collect();
    expect_err(get_objects(&mut m, &too_many).await, "InvalidArgumentError");
}

async fn put_objects(
    m: &mut common::TestMoray,
    items: Vec<pb::PutObjectRequest>,
) -> Result<Vec<Result<String, pb::ObjectError>>, tonic::Status> {
    use pb::put_object_result::Result as R;
    let n = items.len();
    let response = m
        .client
        .put_objects(pb::PutObjectsRequest {
            requests: items,
            options: None,
        })
        .await?
        .into_inner();
    assert_eq!(response.results.len(), n, "one result per item");
    Ok(response
        .results
        .into_iter()
        .map(
            |r| match r.result.expect("every result is an etag or an error") {
                R::Object(o) => Ok(o.etag),
                R::Error(e) => Err(e),
            },
        )
        .collect())
}

/// The change-feed rows of `bucket` after change id `after`: (key, etag, writing
/// transaction), in id order.
async fn changes_after(
    m: &mut common::TestMoray,
    bucket: &str,
    after: i64,
) -> Vec<(String, String, String)> {
    m.sql(
        "SELECT key, etag, xmin::text AS xid FROM moray_changes WHERE bucket = $1 AND id > $2::int8 ORDER BY id",
        json!([bucket, after]),
    )
    .await
    .unwrap()
    .into_iter()
    .map(|r| {
        (
            r["key"].as_str().unwrap().to_string(),
            r["etag"].as_str().unwrap().to_string(),
            r["xid"].as_str().unwrap().to_string(),
        )
    })
    .collect()
}

async fn last_change_id(m: &mut common::TestMoray) -> i64 {
    let rows = m
        .sql(
            "SELECT coalesce(max(id), 0)::int8 AS id FROM moray_changes",
            json!([]),
        )
        .await
        .unwrap();
    rows[0]["id"].as_i64().unwrap()
}

/// PutObjects answered `results` for `values` put to `vms` as `{prefix}0`, `{prefix}1`,
/// ...: each its etag, and each stored.
async fn assert_items_stored(
    m: &mut common::TestMoray,
    results: &[Result<String, pb::ObjectError>],
    prefix: &str,
    values: &[String],
) {
    for (i, v) in values.iter().enumerate() {
        let key = format!("{prefix}{i}");
        assert_eq!(results[i].as_deref(), Ok(etag(v).as_str()), "{key}");
        let stored: Value = serde_json::from_str(v).unwrap();
        assert_eq!(m.get_value("vms", &key).await, stored, "{key}");
    }
}

/// Every change of `changes` (key, etag, xid) was made by one transaction.
fn assert_one_transaction(changes: &[(String, String, String)]) {
    let xids: std::collections::HashSet<_> = changes.iter().map(|(_, _, x)| x).collect();
    assert_eq!(xids.len(), 1, "one transaction: {changes:?}");
}

fn item_error_name(r: &Result<String, pb::ObjectError>) -> &str {
    match r {
        Err(e) => &e.name,
        Ok(etag) => panic!("expected an error, got etag {etag}"),
    }
}

/// The batch that cannot stay in one transaction (a unique index violation aborts
/// it): every item still gets exactly its own outcome and only the good ones are
/// stored, each with its change-feed row.
#[tokio::test]
async fn put_objects_answers_each_item_on_its_own() {
    let mut m = start().await;
    m.bucket("users", &[("email", "string!")]).await;
    m.put_ok("users", "holder", json!({"email": "taken@x"}))
        .await;
    let old = m.put_ok("users", "old", json!({"email": "old@x"})).await;
    let before = last_change_id(&mut m).await;

    let a = json!({"email": "a@x"}).to_string();
    let b = json!({"email": "b@x"}).to_string();
    let old2 = json!({"email": "old2@x"}).to_string();
    let old3 = json!({"email": "old3@x"}).to_string();
    let dup = json!({"email": "taken@x"}).to_string();
    let results = put_objects(
        &mut m,
        vec![
            put_item("users", "a", &a, None),
            put_item("users", "old", &old2, Some(Some("WRONGTAG"))),
            put_item("users", "dup", &dup, None),
            put_item("nope", "x", "{}", None),
            put_item("users", "b", &b, Some(None)),
            put_item("users", "old", &old3, Some(Some(&old))),
            put_item("users", "bad", "[1]", None),
            put_item("users", "", "{}", None),
            put_item("users", "holder", "{}", Some(None)),
        ],
    )
    .await
    .unwrap();

    assert_eq!(results[0].as_deref(), Ok(etag(&a).as_str()));
    let conflict = results[1].as_ref().unwrap_err();
    assert_eq!(conflict.name, "EtagConflictError");
    assert_eq!(conflict.code, tonic::Code::Aborted as i32);
    assert!(conflict.message.contains(&old), "{conflict:?}");
    let unique = results[2].as_ref().unwrap_err();
    assert_eq!(unique.name, "UniqueAttributeError");
    assert_eq!(unique.code, tonic::Code::AlreadyExists as i32);
    assert!(unique.message.contains("taken@x"), "{unique:?}");
    assert_eq!(item_error_name(&results[3]), "BucketNotFoundError");
    assert_eq!(results[4].as_deref(), Ok(etag(&b).as_str()));
    assert_eq!(results[5].as_deref(), Ok(etag(&old3).as_str()));
    assert_eq!(item_error_name(&results[6]), "InvalidArgumentError");
    assert_eq!(item_error_name(&results[7]), "InvalidArgumentError");
    assert_eq!(item_error_name(&results[8]), "EtagConflictError");

    // Only the good ones are stored.
    assert_eq!(m.get_value("users", "a").await, json!({"email": "a@x"}));
    assert_eq!(m.get_value("users", "b").await, json!({"email": "b@x"}));
    assert_eq!(
        m.get_value("users", "old").await,
        json!({"email": "old3@x"})
    );
    assert_eq!(
        m.get_value("users", "holder").await,
        json!({"email": "taken@x"})
    );
    expect_err(m.get("users", "dup").await, "ObjectNotFoundError");
    expect_err(m.get("users", "bad").await, "ObjectNotFoundError");

    // The change feed has a row for exactly those writes.
    let mut written: Vec<(String, String)> = changes_after(&mut m, "users", before)
        .await
        .into_iter()
        .map(|(key, etag, _)| (key, etag))
        .collect();
    written.sort();
    let mut expected = vec![
        ("a".to_string(), results[0].clone().unwrap()),
        ("b".to_string(), results[4].clone().unwrap()),
        ("old".to_string(), results[5].clone().unwrap()),
    ];
    expected.sort();
    assert_eq!(written, expected);
    assert!(changes_after(&mut m, "nope", before).await.is_empty());

    // Each error is the one PutObject answers alone.
    let status = m.put_raw("users", "dup2", &dup, None).await.unwrap_err();
    assert_eq!(
        status.message(),
        format!("{}: {}", unique.name, unique.message).replace("dup", "dup2")
    );
}

/// Without a failing statement all items commit in one transaction, etag conflicts
/// and missing buckets being results of their own; puts of one key apply in order.
#[tokio::test]
async fn put_objects_commits_its_items_together() {
    let mut m = start().await;
    m.bucket("vms", &[("owner", "string")]).await;
    let v1 = m.put_ok("vms", "k", json!({"owner": "v1"})).await;
    let before = last_change_id(&mut m).await;
    let v2 = json!({"owner": "v2"}).to_string();
    let v3 = json!({"owner": "v3"}).to_string();
    let items: Vec<_> = (0..20).map(|i| format!("{{\"owner\":\"o{i}\"}}")).collect();
    let mut batch = vec![
        put_item("vms", "k", &v2, Some(Some(&v1))),
        put_item("vms", "k", &v3, Some(Some(&etag(&v2)))),
        put_item("vms", "k", "{}", Some(Some(&v1))),
        put_item("nope", "k", "{}", None),
    ];
    for (i, v) in items.iter().enumerate() {
        batch.push(put_item("vms", &format!("z{i}"), v, Some(None)));
    }
    let results = put_objects(&mut m, batch).await.unwrap();
    assert_eq!(results[0].as_deref(), Ok(etag(&v2).as_str()));
    assert_eq!(results[1].as_deref(), Ok(etag(&v3).as_str()));
    assert_eq!(item_error_name(&results[2]), "EtagConflictError");
    assert_eq!(item_error_name(&results[3]), "BucketNotFoundError");
    assert_items_stored(&mut m, &results[4..], "z", &items).await;
    assert_eq!(m.get_value("vms", "k").await, json!({"owner": "v3"}));

    let changes = changes_after(&mut m, "vms", before).await;
    assert_eq!(changes.len(), 2 + items.len(), "{changes:?}");
    assert_eq!(
        changes
            .iter()
            .filter(|(key, _, _)| key == "k")
            .map(|(_, etag, _)| etag.clone())
            .collect::<Vec<_>>(),
        [etag(&v2), etag(&v3)],
        "puts of one key in request order"
    );
    assert_one_transaction(&changes);

    // All good (the pipelined path): one transaction too, puts of one key in order.
    let before = last_change_id(&mut m).await;
    let v4 = json!({"owner": "v4"}).to_string();
    let v5 = json!({"owner": "v5"}).to_string();
    let mut batch = vec![
        put_item("vms", "k", &v4, Some(Some(&etag(&v3)))),
        put_item("vms", "k", &v5, Some(Some(&etag(&v4)))),
    ];
    for (i, v) in items.iter().enumerate() {
        batch.push(put_item("vms", &format!("y{i}"), v, None));
    }
    let results = put_objects(&mut m, batch).await.unwrap();
    assert_eq!(results[0].as_deref(), Ok(etag(&v4).as_str()));
    assert_eq!(results[1].as_deref(), Ok(etag(&v5).as_str()));
    assert_items_stored(&mut m, &results[2..], "y", &items).await;
    assert_eq!(m.get_value("vms", "k").await, json!({"owner": "v5"}));
    let changes = changes_after(&mut m, "vms", before).await;
    assert_eq!(changes.len(), 2 + items.len(), "{changes:?}");
    assert_eq!(changes[0].1, etag(&v4));
    assert_eq!(changes[1].1, etag(&v5));
    assert_one_transaction(&changes);

    assert!(put_objects(&mut m, vec![]).await.unwrap().is_empty());
    let too_many: Vec<_> = (0..1001)
        .map(|i| put_item("vms", &format!("t{i}"), "{}", None))
        .collect();
    expect_err(put_objects(&mut m, too_many).await, "InvalidArgumentError");
}

fn etag(value: &str) -> String {
    format!("{:08X}", crc32fast_hash(value))
}
