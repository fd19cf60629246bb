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
use triton_proto::moray::v1::moray_client::MorayClient;
use triton_testkit::Postgres;

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

impl TestMoray {
    /// Creates a bucket; index types ending in `!` are unique.
    pub async fn create_bucket(
        &mut self,
        name: &str,
        defs: &[(&str, &str)],
        version: u32,
    ) -> Result<(), Status> {
        self.client
            .create_bucket(pb::CreateBucketRequest {
                name: name.into(),
                config: Some(pb::BucketConfig {
                    index: index(defs),
                    options: Some(pb::BucketOptions {
                        version,
                        guarantee_order: false,
                    }),
                }),
                options: None,
            })
            .await
            .map(|_| ())
    }

    pub async fn update_bucket(
        &mut self,
        name: &str,
        defs: &[(&str, &str)],
        version: u32,
    ) -> Result<(), Status> {
        self.client
            .update_bucket(pb::UpdateBucketRequest {
                name: name.into(),
                config: Some(pb::BucketConfig {
                    index: index(defs),
                    options: Some(pb::BucketOptions {
                        version,
                        guarantee_order: false,
                    }),
                }),
                options: None,
                no_reindex: false,
            })
            .await
            .map(|_| ())
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
            .put_object(pb::PutObjectRequest {
                bucket: bucket.into(),
                key: key.into(),
                value: value.into(),
                etag: etag.map(|e| pb::EtagCondition {
                    etag: e.map(String::from),
                }),
                options: None,
            })
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
                etag: etag.map(|e| pb::EtagCondition {
                    etag: e.map(String::from),
                }),
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
        let mut stream = self
            .client
            .find_objects(pb::FindObjectsRequest {
                bucket: bucket.into(),
                filter: filter.into(),
                find: Some(find),
                options: None,
                sql_only: false,
            })
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(o) = stream.message().await? {
            out.push(o);
        }
        Ok(out)
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
        let mut stream = self
            .client
            .sql(pb::SqlRequest {
                statement: statement.into(),
                values: values.to_string(),
                options: None,
            })
            .await?
            .into_inner();
        let mut rows = Vec::new();
        while let Some(r) = stream.message().await? {
            rows.push(serde_json::from_str(&r.row).expect("row is JSON"));
        }
        Ok(rows)
    }
}
