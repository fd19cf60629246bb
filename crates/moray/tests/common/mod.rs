//! Test harness: a real PostgreSQL (triton-testkit) and a Moray started in-process on
//! 127.0.0.1:0, called through the generated gRPC client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::transport::Channel;
use triton_proto::moray::v1 as pb;
use triton_proto::moray::v1::change_event::Op;
use triton_proto::moray::v1::moray_client::MorayClient;
use triton_testkit::Postgres;

/// One index of every type Moray has, each named for the tests that store and find
/// values of all of them (`find.rs`, `objects.rs`).
pub const EVERY_INDEX_TYPE: &[(&str, &str)] = &[
    ("name", "string"),
    ("n", "number"),
    ("ok", "boolean"),
    ("d", "date"),
    ("u", "uuid"),
    ("ip", "ip"),
    ("mac", "mac"),
    ("net", "subnet"),
    ("nr", "numrange"),
    ("dr", "daterange"),
    ("tags", "[string]"),
    ("ns", "[number]"),
    ("oks", "[boolean]"),
    ("ds", "[date]"),
    ("ips", "[ip]"),
    ("macs", "[mac]"),
    ("nets", "[subnet]"),
];

pub struct TestMoray {
    pub client: MorayClient<Channel>,
    pub addr: SocketAddr,
    pub url: String,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), moray::MorayError>>,
    pub pg: Postgres,
}

impl Drop for TestMoray {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn start() -> TestMoray {
    start_with(|_| {}).await
}

pub async fn start_with(tune: impl FnOnce(&mut moray::Config)) -> TestMoray {
    let pg = Postgres::start().expect("start PostgreSQL");
    let url = pg.create_database("moray").expect("create database");
    let mut config = moray::Config {
        listen: "127.0.0.1:0".into(),
        postgres_url: url.clone(),
        // The tests set data up through Sql; tests/role.rs checks the read-only default.
        sql_allow_writes: true,
        ..Default::default()
    };
    tune(&mut config);
    let shutdown = CancellationToken::new();
    let running = moray::start(config, shutdown.clone())
        .await
        .expect("start moray");
    let client = connect(running.addr).await;
    TestMoray {
        client,
        addr: running.addr,
        url,
        shutdown,
        task: running.task,
        pg,
    }
}

pub async fn connect(addr: SocketAddr) -> MorayClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to moray");
    MorayClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// The Triton error name a status carries.
pub fn name(s: &Status) -> &str {
    triton_common::status::error_name(s).unwrap_or("<none>")
}

/// Asserts a result is an error with Triton's name `expected`; returns its message.
#[track_caller]
pub fn expect_err<T: std::fmt::Debug>(r: Result<T, Status>, expected: &str) -> String {
    match r {
        Ok(v) => panic!("expected {expected}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(name(&s), expected, "{s:?}");
            s.message().to_string()
        }
    }
}

pub fn index(defs: &[(&str, &str)]) -> std::collections::HashMap<String, pb::IndexDefinition> {
    defs.iter()
        .map(|(n, t)| {
            let (t, unique) = match t.strip_suffix('!') {
                Some(t) => (t, true),
                None => (*t, false),
            };
            (
                n.to_string(),
                pb::IndexDefinition {
                    r#type: t.to_string(),
                    unique,
                },
            )
        })
        .collect()
}

/// A bucket's config: its indexes (as [`index`]) and version.
pub fn bucket_config(defs: &[(&str, &str)], version: u32) -> Option<pb::BucketConfig> {
    Some(pb::BucketConfig {
        index: index(defs),
        options: Some(pb::BucketOptions {
            version,
            guarantee_order: false,
        }),
    })
}

/// An etag condition: `None` no check, `Some(None)` must not exist, `Some(Some(e))` must
/// match `e`.
pub fn etag_if(etag: Option<Option<&str>>) -> Option<pb::EtagCondition> {
    etag.map(|e| pb::EtagCondition {
        etag: e.map(String::from),
    })
}

/// A PutObject request (as PutObjects and Batch carry it too).
pub fn put_item(
    bucket: &str,
    key: &str,
    value: &str,
    etag: Option<Option<&str>>,
) -> pb::PutObjectRequest {
    pb::PutObjectRequest {
        bucket: bucket.into(),
        key: key.into(),
        value: value.into(),
        etag: etag_if(etag),
        options: None,
    }
}

/// Every message of a server stream.
pub async fn collect<T>(
    answer: impl Future<Output = Result<tonic::Response<tonic::Streaming<T>>, Status>>,
) -> Result<Vec<T>, Status> {
    let mut stream = answer.await?.into_inner();
    let mut out = Vec::new();
    while let Some(item) = stream.message().await? {
        out.push(item);
    }
    Ok(out)
}

/// A Ping request.
pub fn ping_request(deep: bool) -> pb::PingRequest {
    pb::PingRequest {
        deep,
        options: None,
    }
}

/// A GetBucket request.
pub fn get_bucket_request(name: impl Into<String>) -> pb::GetBucketRequest {
    pb::GetBucketRequest {
        name: name.into(),
        options: None,
    }
}

/// Find options that refuse a filter an index cannot serve (`require_indexes`).
pub fn indexed_only() -> pb::FindOptions {
    pb::FindOptions {
        require_indexes: true,
        ..Default::default()
    }
}

/// Starts `writers` tasks writing `writes` changes each to `bucket` on connections of
/// their own, each over 5 keys of its own (`w<writer>-k<n>`): puts of `{"i": i}`, every
/// 7th change a delete. Each task returns the changes Moray acknowledged (key, op, `i`),
/// in the order it made them; a failed put fails the test.
pub async fn spawn_writers(
    m: &TestMoray,
    bucket: &str,
    writers: usize,
    writes: usize,
) -> Vec<tokio::task::JoinHandle<Vec<(String, Op, usize)>>> {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut client = connect(m.addr).await;
        let bucket = bucket.to_string();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..writes {
                let key = format!("w{w}-k{}", i % 5);
                if i % 7 == 6 {
                    let r = client
                        .delete_object(pb::DeleteObjectRequest {
                            bucket: bucket.clone(),
                            key: key.clone(),
                            etag: None,
                            options: None,
                        })
                        .await;
                    if r.is_ok() {
                        acked.push((key, Op::Delete, i));
                    }
                } else {
                    let value = serde_json::json!({"i": i}).to_string();
                    client
                        .put_object(put_item(&bucket, &key, &value, None))
                        .await
                        .unwrap_or_else(|e| panic!("put {bucket}/{key}: {e:?}"));
                    acked.push((key, Op::Put, i));
                }
            }
            acked
        }));
    }
    tasks
}

/// `TestMoray::<method>(name, defs, version)`: the RPC `<method>` with `<Request>` for
/// the bucket `name` with the indexes `defs` at `version`, the other fields default.
macro_rules! bucket_calls {
    ($($(#[$doc:meta])* $method:ident($request:ident);)*) => {$(
        $(#[$doc])*
        pub async fn $method(
            &mut self,
            name: &str,
            defs: &[(&str, &str)],
            version: u32,
        ) -> Result<(), Status> {
            let config = bucket_config(defs, version);
            let request = pb::$request { name: name.into(), config, ..Default::default() };
            self.client.$method(request).await.map(|_| ())
        }
    )*};
}

impl TestMoray {
    /// Creates an unversioned bucket for a test, which fails if it cannot.
    pub async fn bucket(&mut self, name: &str, defs: &[(&str, &str)]) {
        self.create_bucket(name, defs, 0)
            .await
            .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
    }

    /// Each filter finds on `bucket` exactly the keys beside it, in key order.
    pub async fn assert_finds(&mut self, bucket: &str, cases: &[(&str, &[&str])]) {
        for (filter, want) in cases {
            assert_eq!(self.keys(bucket, filter).await, *want, "{filter}");
        }
    }

    /// Each filter is refused on `bucket` with the Triton error named beside it.
    pub async fn assert_refused(&mut self, bucket: &str, cases: &[(&str, &str)]) {
        for (filter, want) in cases {
            match self.find(bucket, filter).await {
                Ok(found) => panic!("{filter}: expected {want}, found {found:?}"),
                Err(s) => assert_eq!(name(&s), *want, "{filter}: {s:?}"),
            }
        }
    }

    /// Puts an object for a test, which fails if it cannot; its etag.
    pub async fn put_ok(&mut self, bucket: &str, key: &str, value: Value) -> String {
        self.put(bucket, key, value)
            .await
            .unwrap_or_else(|e| panic!("put {bucket}/{key}: {e:?}"))
    }

    /// Puts every (key, value) in order, failing the test on the first error.
    pub async fn put_all(
        &mut self,
        bucket: &str,
        items: impl IntoIterator<Item = (String, Value)>,
    ) {
        for (key, value) in items {
            self.put_ok(bucket, &key, value).await;
        }
    }

    /// Puts every (key, value) in one Batch (one transaction), failing the test if it fails.
    pub async fn batch_put(
        &mut self,
        bucket: &str,
        items: impl IntoIterator<Item = (String, Value)>,
    ) {
        let requests = items
            .into_iter()
            .map(|(key, value)| pb::BatchOperation {
                operation: Some(pb::batch_operation::Operation::Put(pb::BatchPut {
                    bucket: bucket.into(),
                    key,
                    value: value.to_string(),
                    etag: None,
                })),
            })
            .collect();
        self.client
            .batch(pb::BatchRequest {
                requests,
                options: None,
            })
            .await
            .unwrap_or_else(|e| panic!("batch of puts to {bucket}: {e:?}"));
    }

    /// A Batch of `requests`: all applied in one transaction, or none.
    pub async fn batch(
        &mut self,
        requests: Vec<pb::BatchOperation>,
    ) -> Result<tonic::Response<pb::BatchResponse>, Status> {
        self.client
            .batch(pb::BatchRequest {
                requests,
                options: None,
            })
            .await
    }

    /// The bucket as GetBucket returns it.
    pub async fn get_bucket(&mut self, name: &str) -> Result<pb::Bucket, Status> {
        self.client
            .get_bucket(get_bucket_request(name))
            .await
            .map(|r| r.into_inner())
    }

    bucket_calls! {
        /// Creates a bucket; index types ending in `!` are unique.
        create_bucket(CreateBucketRequest);
        /// Updates a bucket (reindexing).
        update_bucket(UpdateBucketRequest);
    }

    pub async fn put(&mut self, bucket: &str, key: &str, value: Value) -> Result<String, Status> {
        self.put_raw(bucket, key, &value.to_string(), None).await
    }

    pub async fn put_raw(
        &mut self,
        bucket: &str,
        key: &str,
        value: &str,
        etag: Option<Option<&str>>,
    ) -> Result<String, Status> {
        self.client
            .put_object(put_item(bucket, key, value, etag))
            .await
            .map(|r| r.into_inner().etag)
    }

    pub async fn get(&mut self, bucket: &str, key: &str) -> Result<pb::MorayObject, Status> {
        self.client
            .get_object(pb::GetObjectRequest {
                bucket: bucket.into(),
                key: key.into(),
                options: None,
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn get_value(&mut self, bucket: &str, key: &str) -> Value {
        let o = self.get(bucket, key).await.expect("get");
        serde_json::from_str(&o.value).expect("value is JSON")
    }

    pub async fn delete(
        &mut self,
        bucket: &str,
        key: &str,
        etag: Option<Option<&str>>,
    ) -> Result<(), Status> {
        self.client
            .delete_object(pb::DeleteObjectRequest {
                bucket: bucket.into(),
                key: key.into(),
                etag: etag_if(etag),
                options: None,
            })
            .await
            .map(|_| ())
    }

    pub async fn find_with(
        &mut self,
        bucket: &str,
        filter: &str,
        find: pb::FindOptions,
    ) -> Result<Vec<pb::MorayObject>, Status> {
        collect(self.client.find_objects(pb::FindObjectsRequest {
            bucket: bucket.into(),
            filter: filter.into(),
            find: Some(find),
            options: None,
            sql_only: false,
        }))
        .await
    }

    pub async fn find(
        &mut self,
        bucket: &str,
        filter: &str,
    ) -> Result<Vec<pb::MorayObject>, Status> {
        self.find_with(bucket, filter, pb::FindOptions::default())
            .await
    }

    /// Keys found, sorted.
    pub async fn keys(&mut self, bucket: &str, filter: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .find(bucket, filter)
            .await
            .unwrap_or_else(|e| panic!("find {filter}: {e:?}"))
            .into_iter()
            .map(|o| o.key)
            .collect();
        keys.sort();
        keys
    }

    pub async fn sql(&mut self, statement: &str, values: Value) -> Result<Vec<Value>, Status> {
        let rows = collect(self.client.sql(pb::SqlRequest {
            statement: statement.into(),
            values: values.to_string(),
            options: None,
        }))
        .await?;
        Ok(rows
            .iter()
            .map(|r| serde_json::from_str(&r.row).expect("row is JSON"))
            .collect())
    }
}
