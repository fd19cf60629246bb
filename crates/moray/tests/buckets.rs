//! Buckets: create, get, list, update (version gate, reindexing), delete; name rules.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{expect_err, start};
use serde_json::json;
use triton_proto::moray::v1 as pb;

#[tokio::test]
async fn create_get_list_delete() {
    let mut m = start().await;
    m.create_bucket(
        "vmapi_vms",
        &[
            ("owner_uuid", "uuid"),
            ("ram", "number"),
            ("alias", "string!"),
        ],
        3,
    )
    .await
    .unwrap();
    m.bucket("cnapi_servers", &[]).await;
    expect_err(
        m.create_bucket("vmapi_vms", &[], 0).await,
        "BucketConflictError",
    );
    // Tables are named in lower case, as Triton's: a name differing only in case conflicts.
    let status = m.create_bucket("VMAPI_VMS", &[], 0).await.unwrap_err();
    assert_eq!(common::name(&status), "BucketConflictError");
    assert_eq!(status.code(), tonic::Code::AlreadyExists);

    let b = m.get_bucket("vmapi_vms").await.unwrap();
    assert_eq!(b.name, "vmapi_vms");
    assert_eq!(b.index["ram"].r#type, "number");
    assert!(b.index["alias"].unique);
    assert!(!b.index["owner_uuid"].unique);
    assert_eq!(b.options.unwrap().version, 3);
    assert!(
        b.mtime.ends_with('Z') && b.mtime.contains('T'),
        "{}",
        b.mtime
    );
    assert!(b.reindex_active.is_empty());

    let mut names = Vec::new();
    let mut stream = m
        .client
        .list_buckets(pb::ListBucketsRequest { options: None })
        .await
        .unwrap()
        .into_inner();
    while let Some(b) = stream.message().await.unwrap() {
        names.push(b.name);
    }
    assert_eq!(names, vec!["cnapi_servers", "vmapi_vms"]);

    m.put_ok("vmapi_vms", "k", json!({"ram": 1})).await;
    m.client
        .delete_bucket(pb::DeleteBucketRequest {
            name: "vmapi_vms".into(),
            options: None,
        })
        .await
        .unwrap();
    expect_err(
        m.client
            .get_bucket(common::get_bucket_request("vmapi_vms"))
            .await,
        "BucketNotFoundError",
    );
    expect_err(m.get("vmapi_vms", "k").await, "BucketNotFoundError");
    expect_err(
        m.client
            .delete_bucket(pb::DeleteBucketRequest {
                name: "vmapi_vms".into(),
                options: None,
            })
            .await,
        "BucketNotFoundError",
    );
    // Recreated with another schema, it starts empty and serves the new schema.
    m.bucket("vmapi_vms", &[("ram", "string")]).await;
    expect_err(m.get("vmapi_vms", "k").await, "ObjectNotFoundError");
    m.put_ok("vmapi_vms", "k", json!({"ram": "big"})).await;
    assert_eq!(m.keys("vmapi_vms", "(ram=big)").await, vec!["k"]);
}

#[tokio::test]
async fn name_rules() {
    let mut m = start().await;
    for bad in [
        "1abc",
        "_abc",
        "a-b",
        "moray",
        "search",
        "buckets_config",
        "moray_changes",
        &"x".repeat(64),
    ] {
        let status = m.create_bucket(bad, &[], 0).await.unwrap_err();
        assert_eq!(
            common::name(&status),
            "InvalidBucketNameError",
            "{bad}: {status:?}"
        );
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
    for bad in [
        "_id", "_ETAG", "_value", "a_", "1a", "a-b", "moray_x", "_moray", "_",
    ] {
        let msg = expect_err(
            m.create_bucket("b", &[(bad, "string")], 0).await,
            "InvalidBucketConfigError",
        );
        assert!(msg.contains(bad), "{msg}");
    }
    expect_err(
        m.create_bucket("b", &[("a", "string"), ("A", "number")], 0)
            .await,
        "InvalidBucketConfigError",
    );
    let msg = expect_err(
        m.create_bucket("b", &[("a", "text")], 0).await,
        "InvalidIndexDefinitionError",
    );
    assert!(msg.contains("text"), "{msg}");
    expect_err(
        m.create_bucket("b", &[("a", "[uuid]")], 0).await,
        "InvalidIndexDefinitionError",
    );
    // None of these left a bucket behind.
    expect_err(
        m.client.get_bucket(common::get_bucket_request("b")).await,
        "BucketNotFoundError",
    );
    m.create_bucket(
        "b",
        &[("_ok1", "string"), ("A1", "number"), ("x_y", "boolean")],
        0,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn version_gate() {
    let mut m = start().await;
    m.create_bucket("v", &[("a", "string")], 2).await.unwrap();
    let status = m
        .update_bucket("v", &[("a", "string"), ("b", "string")], 2)
        .await
        .unwrap_err();
    assert_eq!(common::name(&status), "BucketVersionError");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    expect_err(
        m.update_bucket("v", &[("a", "string")], 1).await,
        "BucketVersionError",
    );
    expect_err(
        m.update_bucket("v", &[("a", "string")], 0).await,
        "BucketVersionError",
    );
    m.update_bucket("v", &[("a", "string"), ("b", "string")], 3)
        .await
        .unwrap();
    // An unversioned bucket is always replaced.
    m.bucket("u", &[("a", "string")]).await;
    m.update_bucket("u", &[("b", "number")], 0).await.unwrap();
    m.update_bucket("u", &[("c", "number")], 0).await.unwrap();
    let b = m.get_bucket("u").await.unwrap();
    assert_eq!(b.index.keys().collect::<Vec<_>>(), vec!["c"]);
    expect_err(m.update_bucket("nope", &[], 1).await, "BucketNotFoundError");
}

#[tokio::test]
async fn adding_an_index_reindexes_then_serves_filters() {
    let mut m = start().await;
    m.create_bucket("r", &[("a", "string")], 1).await.unwrap();
    m.put_all(
        "r",
        (0..25).map(|i| {
            (
                format!("k{i:02}"),
                json!({"a": "x", "size": i, "tags": ["t"]}),
            )
        }),
    )
    .await;
    m.update_bucket("r", &[("a", "string"), ("size", "number")], 2)
        .await
        .unwrap();
    let b = m.get_bucket("r").await.unwrap();
    assert_eq!(b.reindex_active[&2].fields, vec!["size"]);
    // While reindexing, the field is not usable as an index, and reads keep the value.
    assert_eq!(m.get_value("r", "k03").await["size"], json!(3));
    expect_err(
        m.find_with("r", "(size>=20)", common::indexed_only()).await,
        "NotIndexedError",
    );
    // ... but an AND with an indexed field still finds it, checked in-process.
    assert_eq!(m.keys("r", "(&(a=x)(size>=23))").await, vec!["k23", "k24"]);
    // Writes during reindexing are indexed at the new version.
    m.put_ok("r", "new", json!({"a": "y", "size": 99})).await;

    let mut rounds = 0;
    loop {
        let r = m
            .client
            .reindex_objects(pb::ReindexObjectsRequest {
                bucket: "r".into(),
                count: 10,
                no_count: false,
                options: None,
            })
            .await
            .unwrap()
            .into_inner();
        rounds += 1;
        if r.processed == 0 {
            assert_eq!(r.remaining, Some(0));
            break;
        }
        assert!(rounds < 10, "reindexing does not end");
    }
    assert_eq!(
        rounds, 4,
        "25 stale rows in batches of 10, then one empty round"
    );
    let b = m.get_bucket("r").await.unwrap();
    assert!(b.reindex_active.is_empty());
    let got = m
        .find_with("r", "(size>=20)", common::indexed_only())
        .await
        .unwrap();
    let mut keys: Vec<String> = got.into_iter().map(|o| o.key).collect();
    keys.sort();
    assert_eq!(keys, vec!["k20", "k21", "k22", "k23", "k24", "new"]);
    // Values are intact, other fields included.
    assert_eq!(
        m.get_value("r", "k05").await,
        json!({"a": "x", "size": 5, "tags": ["t"]})
    );
    expect_err(
        m.client
            .reindex_objects(pb::ReindexObjectsRequest {
                bucket: "r".into(),
                count: 0,
                no_count: false,
                options: None,
            })
            .await,
        "InvalidArgumentError",
    );
}

#[tokio::test]
async fn removing_an_index_drops_its_column() {
    let mut m = start().await;
    m.create_bucket("d", &[("a", "string"), ("b", "string")], 1)
        .await
        .unwrap();
    m.put_ok("d", "k", json!({"a": "1", "b": "2"})).await;
    m.update_bucket("d", &[("a", "string")], 2).await.unwrap();
    expect_err(
        m.find_with("d", "(b=2)", common::indexed_only()).await,
        "NotIndexedError",
    );
    // The value keeps the field; it is simply not indexed any more.
    assert_eq!(m.get_value("d", "k").await, json!({"a": "1", "b": "2"}));
    let cols = m
        .sql("SELECT column_name FROM information_schema.columns WHERE table_name = 'd' AND column_name = 'b'", json!([]))
        .await
        .unwrap();
    assert!(cols.is_empty(), "{cols:?}");
}

#[tokio::test]
async fn another_morays_bucket_change_is_seen_by_puts() {
    let mut m = start().await;
    m.create_bucket("shared", &[("a", "string")], 1)
        .await
        .unwrap();
    m.put_ok("shared", "k1", json!({"a": "x", "b": "y"})).await;
    // A second Moray on the same database changes the bucket; this one has it cached.
    let other_shutdown = tokio_util::sync::CancellationToken::new();
    let other = moray::start(
        moray::Config {
            listen: "127.0.0.1:0".into(),
            postgres_url: m.url.clone(),
            ..Default::default()
        },
        other_shutdown.clone(),
    )
    .await
    .unwrap();
    let mut other_client = common::connect(other.addr).await;
    other_client
        .update_bucket(pb::UpdateBucketRequest {
            name: "shared".into(),
            config: Some(pb::BucketConfig {
                index: common::index(&[("a", "string"), ("b", "string")]),
                options: Some(pb::BucketOptions {
                    version: 2,
                    guarantee_order: false,
                }),
            }),
            options: None,
            no_reindex: true,
        })
        .await
        .unwrap();
    // This Moray's put must write the new column although its cache is stale.
    m.put_ok("shared", "k2", json!({"a": "x", "b": "z"})).await;
    let rows = m
        .sql("SELECT b FROM shared WHERE _key = 'k2'", json!([]))
        .await
        .unwrap();
    assert_eq!(rows, vec![json!({"b": "z"})]);
    other_shutdown.cancel();
}
