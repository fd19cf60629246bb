//! The gRPC service: thin handlers that call the [`Store`] and map errors once.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use triton_proto::moray::v1 as pb;
use triton_proto::moray::v1::moray_server::Moray;

use crate::error::MorayError;
use crate::feed::WATCH_CHANNEL;
use crate::store::Store;

/// The Moray protocol version, as Triton's (`API_VERSION`).
pub const API_VERSION: u32 = 2;
/// Rows buffered per streaming call before the reader waits for the client.
const STREAM_CHANNEL: usize = 64;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub struct MorayService {
    store: Arc<Store>,
    shutdown: CancellationToken,
}

impl MorayService {
    pub fn new(store: Arc<Store>, shutdown: CancellationToken) -> MorayService {
        MorayService { store, shutdown }
    }
}

fn req_id(options: Option<&pb::RequestOptions>) -> String {
    options
        .map(|o| o.req_id.clone())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(new_req_id)
}

/// A request id for a request that brought none: a random (version 4) UUID drawn from a
/// per-thread SplitMix64 generator seeded from the OS, rather than from the OS for every
/// request (a system call per request on the hot path). Request ids must be unique, not
/// unpredictable.
fn new_req_id() -> String {
    use std::cell::Cell;
    fn next(state: &Cell<u64>) -> u64 {
        let mut z = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    thread_local! {
        static STATE: Cell<u64> = Cell::new(uuid::Uuid::new_v4().as_u64_pair().0);
    }
    let (a, b) = STATE.with(|s| (next(s), next(s)));
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_le_bytes());
    bytes[8..].copy_from_slice(&b.to_le_bytes());
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// The request's span; its id (generated when the request has none) only when the span is
/// recorded, so unlogged requests cost no random number.
fn span(rpc: &'static str, options: Option<&pb::RequestOptions>, bucket: &str) -> tracing::Span {
    let span = tracing::info_span!("moray", rpc, req_id = tracing::field::Empty, bucket);
    if !span.is_disabled() {
        span.record("req_id", req_id(options).as_str());
    }
    span
}

/// Streams what a task sends; an error before the first item becomes the call's status.
async fn stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<Result<T, Status>>,
) -> Result<Response<BoxStream<T>>, Status> {
    match rx.recv().await {
        None => Ok(Response::new(Box::pin(tokio_stream::empty()))),
        Some(Err(status)) => Err(status),
        Some(Ok(first)) => Ok(Response::new(Box::pin(
            tokio_stream::once(Ok(first)).chain(ReceiverStream::new(rx)),
        ))),
    }
}

/// The streamed answer of a call whose rows a task sends (FindObjects, Sql): `run` gets the
/// sender; its error, before the first row, is the call's status, after it the stream's
/// last item.
async fn spawn_stream<T, F, Fut>(
    span: tracing::Span,
    run: F,
) -> Result<Response<BoxStream<T>>, Status>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: Future<Output = Result<(), MorayError>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(STREAM_CHANNEL);
    let task = run(tx.clone());
    tokio::spawn(
        async move {
            if let Err(e) = task.await {
                let _ = tx.send(Err(e.into())).await;
            }
        }
        .instrument(span),
    );
    stream_from(rx).await
}

/// A streamed answer that is all in memory already (ListBuckets, Snapshot).
fn iter_stream<I>(items: I) -> Response<BoxStream<I::Item>>
where
    I: IntoIterator,
    I::IntoIter: Send + 'static,
    I::Item: Send + 'static,
{
    Response::new(Box::pin(tokio_stream::iter(items.into_iter().map(Ok))))
}

/// `impl Moray for MorayService`: the RPCs that run a [`Store`] method of the same name
/// from one line each, then the rest as written. Each decodes its request and runs the
/// method in the request's span (named for the RPC, with the bucket `on` picks); how it
/// answers:
///
/// - `unary`: with what the method returns;
/// - `empty`: with the empty response (the method returns nothing);
/// - `listed`: streams the items the method returns;
/// - `spawned`: streams the rows the method sends from a task of its own.
macro_rules! moray_service {
    (
        rpcs {$(
            $how:ident $method:ident($req:ident) -> $answer:ty
            as $rpc:literal on |$r:ident| $bucket:expr;
        )*}
        $($rest:tt)*
    ) => {
        #[tonic::async_trait]
        impl Moray for MorayService {
            $(
                async fn $method(
                    &self,
                    request: Request<pb::$req>,
                ) -> Result<Response<$answer>, Status> {
                    let $r = request.into_inner();
                    let span = span($rpc, $r.options.as_ref(), $bucket);
                    moray_service!(@$how self, $method, $r, span)
                }
            )*
            $($rest)*
        }
    };
    (@unary $self:ident, $method:ident, $req:ident, $span:ident) => {
        Ok(Response::new($self.store.$method($req).instrument($span).await?))
    };
    (@empty $self:ident, $method:ident, $req:ident, $span:ident) => {{
        $self.store.$method($req).instrument($span).await?;
        Ok(Response::new(Default::default()))
    }};
    (@listed $self:ident, $method:ident, $req:ident, $span:ident) => {
        Ok(iter_stream($self.store.$method($req).instrument($span).await?))
    };
    (@spawned $self:ident, $method:ident, $req:ident, $span:ident) => {{
        let store = $self.store.clone();
        spawn_stream($span, |tx| async move { store.$method($req, &tx).await }).await
    }};
}

moray_service! {
    rpcs {
        empty create_bucket(CreateBucketRequest) -> pb::CreateBucketResponse
            as "CreateBucket" on |req| &req.name;
        unary get_bucket(GetBucketRequest) -> pb::Bucket as "GetBucket" on |req| &req.name;
        empty update_bucket(UpdateBucketRequest) -> pb::UpdateBucketResponse
            as "UpdateBucket" on |req| &req.name;
        empty delete_bucket(DeleteBucketRequest) -> pb::DeleteBucketResponse
            as "DeleteBucket" on |req| &req.name;
        listed list_buckets(ListBucketsRequest) -> Self::ListBucketsStream
            as "ListBuckets" on |req| "";
        unary put_object(PutObjectRequest) -> pb::PutObjectResponse
            as "PutObject" on |req| &req.bucket;
        unary get_object(GetObjectRequest) -> pb::MorayObject
            as "GetObject" on |req| &req.bucket;
        unary get_objects(GetObjectsRequest) -> pb::GetObjectsResponse
            as "GetObjects" on |req| req.keys.first().map_or("", |k| k.bucket.as_str());
        unary put_objects(PutObjectsRequest) -> pb::PutObjectsResponse
            as "PutObjects" on |req| req.requests.first().map_or("", |p| p.bucket.as_str());
        empty delete_object(DeleteObjectRequest) -> pb::DeleteObjectResponse
            as "DeleteObject" on |req| &req.bucket;
        spawned find_objects(FindObjectsRequest) -> Self::FindObjectsStream
            as "FindObjects" on |req| &req.bucket;
        unary update_objects(UpdateObjectsRequest) -> pb::UpdateObjectsResponse
            as "UpdateObjects" on |req| &req.bucket;
        unary delete_many(DeleteManyRequest) -> pb::DeleteManyResponse
            as "DeleteMany" on |req| &req.bucket;
        unary reindex_objects(ReindexObjectsRequest) -> pb::ReindexObjectsResponse
            as "ReindexObjects" on |req| &req.bucket;
        unary batch(BatchRequest) -> pb::BatchResponse as "Batch" on |req| "";
        spawned sql(SqlRequest) -> Self::SqlStream as "Sql" on |req| "";
        empty ping(PingRequest) -> pb::PingResponse as "Ping" on |req| "";
        listed snapshot(SnapshotRequest) -> Self::SnapshotStream
            as "Snapshot" on |req| &req.bucket;
    }

    type ListBucketsStream = BoxStream<pb::Bucket>;
    type FindObjectsStream = BoxStream<pb::MorayObject>;
    type SqlStream = BoxStream<pb::SqlRow>;
    type SnapshotStream = BoxStream<pb::SnapshotPage>;
    type WatchStream = BoxStream<pb::ChangeEvent>;

    async fn version(
        &self,
        _request: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        Ok(Response::new(pb::VersionResponse {
            version: API_VERSION,
            server: format!("triton-rs moray {}", env!("CARGO_PKG_VERSION")),
        }))
    }

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        let span = span("Watch", None, &req.bucket);
        let since = self
            .store
            .watch_start(&req)
            .instrument(span.clone())
            .await?;
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL);
        let store = self.store.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(
            store
                .watch(req.bucket, since, tx, shutdown)
                .instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_are_distinct_v4_uuids() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_req_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in ids.iter().take(10) {
            let parsed = uuid::Uuid::parse_str(id).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 4, "{id}");
        }
    }
}
