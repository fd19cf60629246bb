//! [`MorayClient`]: node-moray's calls over the generated gRPC client.
//!
//! Retries: the client resends nothing. Establishing the connection is retried with
//! backoff for a bounded time ([`ConnectOptions::connect_for`]); after that the gRPC
//! channel reconnects by itself on the next call, and a call made while Moray is away
//! fails with an error whose [`MorayError::is_retryable`] is true. Whether to send it
//! again is the caller's decision, because a write that timed out may have been applied.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use triton_common::channel::ChannelBuilder;
use triton_proto::moray::v1 as proto;

use crate::coalesce::{
    Coalescer, Coalescing, GetStats, Gets, Kind, PutStats, Puts, Ticket, answer_of_status, per_item,
};
use crate::error::{MorayError, Result};
use crate::types::{
    BatchOp, BatchResult, Bucket, BucketConfig, ChangeEvent, EtagCondition, FindOptions, Object,
    ReindexResult, UpdateResult, Version, parse_json,
};
use crate::url::MorayAddr;

/// How long [`MorayClient::connect`] keeps trying: services start beside Moray and
/// must ride out its start-up, but not hang forever on a wrong address.
pub const DEFAULT_CONNECT_FOR: Duration = Duration::from_secs(30);
/// Bound of one TCP + HTTP/2 connection attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// First pause between connection attempts; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Largest response message: an object, bucket or SQL row. gRPC's 4 MiB default is
/// smaller than objects Triton keeps (VM and image manifests with big metadata).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// HTTP/2 pings find a dead peer (a Moray zone gone without a FIN) in bounded time.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// How long to keep retrying the first connection; zero means one attempt.
    pub connect_for: Duration,
    /// Deadline of every call, enforced by the client and sent to Moray as the
    /// request's `timeout`. `None`: no deadline (Moray applies its own).
    pub request_timeout: Option<Duration>,
    /// How concurrent [`MorayClient::get_object`] calls are coalesced into `GetObjects`
    /// RPCs (see [`Coalescing`]); `None` sends one `GetObject` per call. On by default:
    /// below `max_in_flight` concurrent gets it changes nothing, and under load it pays
    /// one gRPC exchange and one SQL statement per batch instead of per get (less than
    /// half the CPU per get in `docs/benchmarks.md`, "Moray").
    pub coalesce_gets: Option<Coalescing>,
    /// How concurrent [`MorayClient::put_object`] calls are coalesced into `PutObjects`
    /// RPCs (see [`Coalescing`]); `None` sends one `PutObject` per call. On by default:
    /// below `max_in_flight` concurrent puts it changes nothing, and under load the puts
    /// of one batch commit in one PostgreSQL transaction (one WAL flush) instead of one
    /// each. Each put still gets its own etag or error; a put is acknowledged only after
    /// it committed. As with a lone put whose caller timed out, a coalesced put that was
    /// already sent may commit after its caller gave up.
    pub coalesce_puts: Option<Coalescing>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_for: DEFAULT_CONNECT_FOR,
            request_timeout: None,
            coalesce_gets: Some(Coalescing::default()),
            coalesce_puts: Some(Coalescing::default()),
        }
    }
}

type Interceptor = fn(tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status>;
pub(crate) type Grpc = proto::moray_client::MorayClient<InterceptedService<Channel, Interceptor>>;

/// A connection to one Moray server. Cheap to clone; clones share the connection,
/// and calls from many tasks are multiplexed over it.
#[derive(Debug, Clone)]
pub struct MorayClient {
    grpc: Grpc,
    addr: MorayAddr,
    timeout_ms: u32,
    request_timeout: Option<Duration>,
    /// How long [`MorayClient::ensure_bucket`] waits for Moray's database
    /// ([`ConnectOptions::connect_for`]).
    ready_for: Duration,
    /// Shared by clones, so that gets from every clone coalesce together.
    gets: Option<Arc<Coalescer<Gets>>>,
    /// Likewise for puts.
    puts: Option<Arc<Coalescer<Puts>>>,
}

impl MorayClient {
    /// Connects to `url` (`tcp://host:port` as in Triton's `MORAY_URL`, `http://host:port`,
    /// or `host:port`), retrying for [`DEFAULT_CONNECT_FOR`].
    pub async fn connect(url: &str) -> Result<MorayClient> {
        Self::connect_with(url, ConnectOptions::default()).await
    }

    /// `url` with `options` (timeouts, retries, channel settings).
    pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<MorayClient> {
        let addr = MorayAddr::parse(url)?;
        // The common channel settings; what is Moray's own is the retry of the first
        // connection below, for as long as `connect_for`.
        let endpoint = ChannelBuilder::new(&addr.endpoint_uri())
            .connect_timeout(ATTEMPT_TIMEOUT)
            .keepalive(Some(KEEPALIVE_INTERVAL), KEEPALIVE_TIMEOUT)
            .request_timeout(options.request_timeout)
            .endpoint()
            .map_err(|_| MorayError::InvalidUrl {
                url: url.to_string(),
                reason: "not a valid host",
            })?;

        let deadline = tokio::time::Instant::now() + options.connect_for;
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0;
        let channel = loop {
            attempts += 1;
            match endpoint.connect().await {
                Ok(channel) => break channel,
                Err(source) => {
                    if tokio::time::Instant::now() + backoff > deadline {
                        return Err(MorayError::Connect {
                            url: addr.to_string(),
                            attempts,
                            source,
                        });
                    }
                    tracing::debug!(moray = %addr, attempts, error = %source, "Moray not reachable yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        let interceptor: Interceptor = triton_common::telemetry::trace_interceptor;
        let grpc = proto::moray_client::MorayClient::with_interceptor(channel, interceptor)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let timeout_ms = options
            .request_timeout
            .map(|t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX))
            .unwrap_or(0);
        let mut client = MorayClient {
            grpc,
            addr,
            timeout_ms,
            request_timeout: options.request_timeout,
            ready_for: options.connect_for,
            gets: None,
            puts: None,
        };
        client.gets = options
            .coalesce_gets
            .map(|limits| Arc::new(Coalescer::new(client.grpc(), client.options(), limits)));
        client.puts = options
            .coalesce_puts
            .map(|limits| Arc::new(Coalescer::new(client.grpc(), client.options(), limits)));
        Ok(client)
    }

    /// The server this client talks to, `host:port`.
    pub fn addr(&self) -> &MorayAddr {
        &self.addr
    }

    pub(crate) fn grpc(&self) -> Grpc {
        self.grpc.clone()
    }

    pub(crate) fn options(&self) -> Option<proto::RequestOptions> {
        Some(proto::RequestOptions {
            req_id: String::new(),
            timeout_ms: self.timeout_ms,
        })
    }

    // ---- buckets

    /// createBucket: a new bucket; an existing one is a `BucketConflictError`.
    pub async fn create_bucket(&self, name: &str, config: &BucketConfig) -> Result<()> {
        self.grpc()
            .create_bucket(proto::CreateBucketRequest {
                name: name.to_string(),
                config: Some(config.to_proto()),
                options: self.options(),
            })
            .await?;
        Ok(())
    }

    /// getBucket: the bucket's config.
    pub async fn get_bucket(&self, name: &str) -> Result<Bucket> {
        let bucket = self
            .grpc()
            .get_bucket(proto::GetBucketRequest {
                name: name.to_string(),
                options: self.options(),
            })
            .await?;
        Ok(bucket.into_inner().into())
    }

    /// Replaces the bucket's indexes and options. Added indexes are recorded for
    /// reindexing unless `no_reindex`.
    pub async fn update_bucket(&self, name: &str, config: &BucketConfig) -> Result<()> {
        self.grpc()
            .update_bucket(proto::UpdateBucketRequest {
                name: name.to_string(),
                config: Some(config.to_proto()),
                options: self.options(),
                no_reindex: false,
            })
            .await?;
        Ok(())
    }

    /// Creates the bucket, or brings it to `config` (node-moray's `putBucket`): get it;
    /// create it if missing (a `BucketConflictError` from a racing creator counts as
    /// success); else update it, unless both versions are equal and non-zero. A bucket
    /// stored at a higher version fails with `BucketVersionError`.
    pub async fn put_bucket(&self, name: &str, config: &BucketConfig) -> Result<()> {
        match self.get_bucket(name).await {
            Ok(stored) => {
                let version = stored.options.version;
                if version != 0 && version == config.options.version {
                    return Ok(());
                }
                self.update_bucket(name, config).await
            }
            Err(e) if e.name() == "BucketNotFoundError" => {
                match self.create_bucket(name, config).await {
                    Err(e) if e.name() == "BucketConflictError" => Ok(()),
                    other => other,
                }
            }
            Err(e) => Err(e),
        }
    }

    /// [`MorayClient::put_bucket`] for a service's start-up: while Moray answers with a
    /// retryable error (its PostgreSQL still starting, the `moray` database not made
    /// yet, no Manatee primary yet) it tries again with backoff, for as long as the
    /// client's [`ConnectOptions::connect_for`]. Safe to repeat: a put of the same
    /// config changes nothing.
    pub async fn ensure_bucket(&self, name: &str, config: &BucketConfig) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.ready_for;
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.put_bucket(name, config).await {
                Err(e) if e.is_retryable() && tokio::time::Instant::now() + backoff <= deadline => {
                    tracing::info!(moray = %self.addr, bucket = name, error = %e, "Moray's database is not ready; waiting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                other => return other,
            }
        }
    }

    /// Drops the bucket and every object in it.
    pub async fn delete_bucket(&self, name: &str) -> Result<()> {
        self.grpc()
            .delete_bucket(proto::DeleteBucketRequest {
                name: name.to_string(),
                options: self.options(),
            })
            .await?;
        Ok(())
    }

    /// listBuckets: every bucket, by name.
    pub async fn list_buckets(&self) -> Result<Vec<Bucket>> {
        let stream = self
            .grpc()
            .list_buckets(proto::ListBucketsRequest {
                options: self.options(),
            })
            .await?
            .into_inner();
        stream
            .map_ok(Bucket::from)
            .map_err(MorayError::from)
            .try_collect()
            .await
    }

    // ---- objects

    /// Writes `value` (a JSON object) under `key`, if `etag` holds; returns the new etag.
    /// A failed condition is `EtagConflictError`. Concurrent calls are coalesced into
    /// `PutObjects` RPCs unless [`ConnectOptions::coalesce_puts`] is `None`; each still
    /// gets its own etag or error, and only after its write committed.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        value: &Value,
        etag: EtagCondition,
    ) -> Result<String> {
        let request = || proto::PutObjectRequest {
            bucket: bucket.to_string(),
            key: key.to_string(),
            value: value.to_string(),
            etag: etag.to_proto(),
            options: None,
        };
        match &self.puts {
            None => Puts::one(self.grpc(), self.options(), request()).await,
            Some(puts) => match puts.enter(request) {
                Ticket::Now(slot) => {
                    let answer = Puts::one(self.grpc(), self.options(), request()).await;
                    drop(slot);
                    answer
                }
                Ticket::Queued(answer) => self.queued_answer::<Puts>(answer).await,
            },
        }
    }

    /// How this client's (and its clones') puts were sent so far: at once, or coalesced
    /// into `PutObjects`; all zero with coalescing off.
    pub fn put_stats(&self) -> PutStats {
        self.puts
            .as_ref()
            .map_or_else(PutStats::default, |p| p.stats())
    }

    /// Several puts in one `PutObjects` RPC, each applied as its own `put_object` would
    /// be (not atomically: see [`MorayClient::batch`] for all-or-nothing): one result
    /// per item, in order, its new etag or its own error. Items for the same key are
    /// applied in order.
    pub async fn put_objects(
        &self,
        puts: &[(&str, &str, &Value, EtagCondition)],
    ) -> Result<Vec<Result<String>>> {
        let response = self
            .grpc()
            .put_objects(proto::PutObjectsRequest {
                requests: puts
                    .iter()
                    .map(|(bucket, key, value, etag)| proto::PutObjectRequest {
                        bucket: bucket.to_string(),
                        key: key.to_string(),
                        value: value.to_string(),
                        etag: etag.to_proto(),
                        options: None,
                    })
                    .collect(),
                options: self.options(),
            })
            .await?
            .into_inner();
        Ok(per_item("PutObjects", response.results, puts)?
            .map(|(result, (bucket, key, _, _))| {
                crate::coalesce::put_answer_of(result, bucket, key)
            })
            .collect())
    }

    /// The object under `key`, or `None` when there is none. (Moray's
    /// `ObjectNotFoundError` becomes `None`; a missing bucket stays an error,
    /// `BucketNotFoundError`.) Concurrent calls are coalesced into `GetObjects` RPCs
    /// unless [`ConnectOptions::coalesce_gets`] is `None`; each still returns its own
    /// object, as committed at some point during the call.
    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<Option<Object>> {
        let answer = match &self.gets {
            None => self.get_object_rpc(bucket, key).await,
            Some(gets) => match gets.enter(|| (bucket.to_string(), key.to_string())) {
                Ticket::Now(slot) => {
                    let answer = self.get_object_rpc(bucket, key).await;
                    drop(slot);
                    answer
                }
                Ticket::Queued(answer) => self.queued_answer::<Gets>(answer).await,
            },
        };
        answer?.map(Object::try_from).transpose()
    }

    /// How this client's (and its clones') gets were sent so far: at once, or coalesced
    /// into `GetObjects`; all zero with coalescing off.
    pub fn get_stats(&self) -> GetStats {
        self.gets
            .as_ref()
            .map_or_else(GetStats::default, |g| g.stats())
    }

    /// The objects under several keys (of one or several buckets), in the order asked,
    /// in one `GetObjects` RPC: `None` where there is none, a key's own error (e.g.
    /// `BucketNotFoundError`) where it failed.
    pub async fn get_objects(&self, keys: &[(&str, &str)]) -> Result<Vec<Result<Option<Object>>>> {
        let response = self
            .grpc()
            .get_objects(proto::GetObjectsRequest {
                keys: keys
                    .iter()
                    .map(|(bucket, key)| proto::ObjectKey {
                        bucket: bucket.to_string(),
                        key: key.to_string(),
                    })
                    .collect(),
                options: self.options(),
            })
            .await?
            .into_inner();
        Ok(per_item("GetObjects", response.results, keys)?
            .map(|(result, (bucket, key))| {
                crate::coalesce::answer_of(result, bucket, key)?
                    .map(Object::try_from)
                    .transpose()
            })
            .collect())
    }

    async fn get_object_rpc(&self, bucket: &str, key: &str) -> Result<Option<proto::MorayObject>> {
        answer_of_status(
            self.grpc()
                .get_object(proto::GetObjectRequest {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    options: self.options(),
                })
                .await,
        )
    }

    /// A queued call's answer, within the client's request timeout (which so bounds the
    /// wait in the queue too).
    async fn queued_answer<K: Kind>(
        &self,
        answer: tokio::sync::oneshot::Receiver<Result<K::Out>>,
    ) -> Result<K::Out> {
        let wait = async {
            answer.await.unwrap_or_else(|_| {
                Err(MorayError::Server {
                    name: "Cancelled".into(),
                    message: format!(
                        "the coalesced {} carrying this {} was abandoned",
                        K::BATCH_RPC,
                        K::NAME
                    ),
                    code: tonic::Code::Cancelled,
                })
            })
        };
        match self.request_timeout {
            None => wait.await,
            Some(timeout) => tokio::time::timeout(timeout, wait)
                .await
                .unwrap_or_else(|_| {
                    Err(MorayError::Server {
                        name: "DeadlineExceeded".into(),
                        message: format!(
                            "the {} did not complete within {} ms (queued for a coalesced {})",
                            K::NAME,
                            timeout.as_millis(),
                            K::BATCH_RPC
                        ),
                        code: tonic::Code::DeadlineExceeded,
                    })
                }),
        }
    }

    /// Deletes the object under `key`, if `etag` holds. A missing object is
    /// `ObjectNotFoundError`.
    pub async fn delete_object(&self, bucket: &str, key: &str, etag: EtagCondition) -> Result<()> {
        self.grpc()
            .delete_object(proto::DeleteObjectRequest {
                bucket: bucket.to_string(),
                key: key.to_string(),
                etag: etag.to_proto(),
                options: self.options(),
            })
            .await?;
        Ok(())
    }

    /// The objects matching the LDAP-style `filter`, as Moray streams them.
    pub async fn find_objects_stream(
        &self,
        bucket: &str,
        filter: &str,
        options: &FindOptions,
    ) -> Result<BoxStream<'static, Result<Object>>> {
        let stream = self.find_rpc(bucket, filter, options, false).await?;
        Ok(stream
            .map(|item| item.map_err(MorayError::from).and_then(Object::try_from))
            .boxed())
    }

    /// What FindObjects, UpdateObjects and DeleteMany act on, as their requests carry it:
    /// the bucket, the filter, the find options and the call's options.
    fn matching(
        &self,
        bucket: &str,
        filter: &str,
        options: &FindOptions,
    ) -> (
        String,
        String,
        Option<proto::FindOptions>,
        Option<proto::RequestOptions>,
    ) {
        (
            bucket.to_string(),
            filter.to_string(),
            Some(options.to_proto()),
            self.options(),
        )
    }

    /// FindObjects: the objects matching `filter`, or with `sql_only` the SQL Moray would
    /// run for them.
    async fn find_rpc(
        &self,
        bucket: &str,
        filter: &str,
        options: &FindOptions,
        sql_only: bool,
    ) -> Result<tonic::Streaming<proto::MorayObject>> {
        let (bucket, filter, find, options) = self.matching(bucket, filter, options);
        let request = proto::FindObjectsRequest {
            bucket,
            filter,
            find,
            options,
            sql_only,
        };
        Ok(self.grpc().find_objects(request).await?.into_inner())
    }

    /// The objects matching `filter`, collected (at most `options.limit`, by default 1000).
    pub async fn find_objects(
        &self,
        bucket: &str,
        filter: &str,
        options: &FindOptions,
    ) -> Result<Vec<Object>> {
        self.find_objects_stream(bucket, filter, options)
            .await?
            .try_collect()
            .await
    }

    /// The SQL Moray would run for a find, without running it (`findobjects -s`):
    /// `{"count": ..., "query": ..., "args": [...]}`.
    pub async fn find_objects_sql(
        &self,
        bucket: &str,
        filter: &str,
        options: &FindOptions,
    ) -> Result<Value> {
        let mut stream = self.find_rpc(bucket, filter, options, true).await?;
        match stream.message().await? {
            Some(object) => parse_json(&object.value, || "the SQL of a find".to_string()),
            None => Err(MorayError::InvalidResponse {
                what: "a find with sql_only returned nothing".to_string(),
                source: None,
            }),
        }
    }

    /// Sets indexed `fields` (a JSON object) on every object matching `filter`.
    pub async fn update_objects(
        &self,
        bucket: &str,
        fields: &Value,
        filter: &str,
        options: &FindOptions,
    ) -> Result<UpdateResult> {
        let (bucket, filter, find, options) = self.matching(bucket, filter, options);
        let request = proto::UpdateObjectsRequest {
            bucket,
            fields: fields.to_string(),
            filter,
            find,
            options,
        };
        let r = self.grpc().update_objects(request).await?.into_inner();
        Ok(UpdateResult {
            count: r.count,
            etag: r.etag,
        })
    }

    /// Deletes the objects matching `filter`; returns how many.
    pub async fn delete_many(
        &self,
        bucket: &str,
        filter: &str,
        options: &FindOptions,
    ) -> Result<u64> {
        let (bucket, filter, find, options) = self.matching(bucket, filter, options);
        let request = proto::DeleteManyRequest {
            bucket,
            filter,
            find,
            options,
        };
        let r = self.grpc().delete_many(request).await?.into_inner();
        Ok(r.count)
    }

    /// Reindexes up to `count` objects written before indexes were added. Call until
    /// `processed` is 0.
    pub async fn reindex_objects(&self, bucket: &str, count: u32) -> Result<ReindexResult> {
        let r = self
            .grpc()
            .reindex_objects(proto::ReindexObjectsRequest {
                bucket: bucket.to_string(),
                count,
                no_count: false,
                options: self.options(),
            })
            .await?
            .into_inner();
        Ok(ReindexResult {
            processed: r.processed,
            remaining: r.remaining,
        })
    }

    /// Runs `ops` in one transaction, in order: all or nothing.
    pub async fn batch(&self, ops: &[BatchOp]) -> Result<Vec<BatchResult>> {
        let r = self
            .grpc()
            .batch(proto::BatchRequest {
                requests: ops.iter().map(BatchOp::to_proto).collect(),
                options: self.options(),
            })
            .await?
            .into_inner();
        Ok(r.etags.into_iter().map(BatchResult::from).collect())
    }

    // ---- operator calls

    /// Runs one SQL statement with positional `values` (`$1`, ...); rows as JSON objects.
    pub async fn sql(&self, statement: &str, values: &[Value]) -> Result<Vec<Value>> {
        let stream = self
            .grpc()
            .sql(proto::SqlRequest {
                statement: statement.to_string(),
                values: Value::Array(values.to_vec()).to_string(),
                options: self.options(),
            })
            .await?
            .into_inner();
        stream
            .map(|row| {
                let row = row?;
                parse_json(&row.row, || "an SQL row".to_string())
            })
            .try_collect()
            .await
    }

    /// Checks that Moray answers; with `deep`, that it reaches PostgreSQL too.
    pub async fn ping(&self, deep: bool) -> Result<()> {
        self.grpc()
            .ping(proto::PingRequest {
                deep,
                options: self.options(),
            })
            .await?;
        Ok(())
    }

    /// version: the protocol version and the server's build.
    pub async fn version(&self) -> Result<Version> {
        let r = self
            .grpc()
            .version(proto::VersionRequest {})
            .await?
            .into_inner();
        Ok(Version {
            version: r.version,
            server: r.server,
        })
    }

    /// The change feed of `bucket`: every put and delete after sequence number `since`
    /// (0: from the oldest change kept), in commit order, until the stream breaks. To
    /// resume after a break, watch again from the last `seq` received.
    pub async fn watch(
        &self,
        bucket: &str,
        since: u64,
    ) -> Result<BoxStream<'static, Result<ChangeEvent>>> {
        let stream = self
            .grpc()
            .watch(proto::WatchRequest {
                bucket: bucket.to_string(),
                since,
            })
            .await?
            .into_inner();
        Ok(stream
            .map(|item| {
                item.map_err(MorayError::from)
                    .and_then(ChangeEvent::try_from)
            })
            .boxed())
    }
}
