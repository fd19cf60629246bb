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

#[tonic::async_trait]
impl Moray for MorayService {
    async fn create_bucket(
        &self,
        request: Request<pb::CreateBucketRequest>,
    ) -> Result<Response<pb::CreateBucketResponse>, Status> {
        let req = request.into_inner();
        let span = span("CreateBucket", req.options.as_ref(), &req.name);
        self.store.create_bucket(req).instrument(span).await?;
        Ok(Response::new(pb::CreateBucketResponse {}))
    }

    async fn get_bucket(
        &self,
        request: Request<pb::GetBucketRequest>,
    ) -> Result<Response<pb::Bucket>, Status> {
        let req = request.into_inner();
        let span = span("GetBucket", req.options.as_ref(), &req.name);
        Ok(Response::new(
            self.store.get_bucket(req).instrument(span).await?,
        ))
    }

    async fn update_bucket(
        &self,
        request: Request<pb::UpdateBucketRequest>,
    ) -> Result<Response<pb::UpdateBucketResponse>, Status> {
        let req = request.into_inner();
        let span = span("UpdateBucket", req.options.as_ref(), &req.name);
        self.store.update_bucket(req).instrument(span).await?;
        Ok(Response::new(pb::UpdateBucketResponse {}))
    }

    async fn delete_bucket(
        &self,
        request: Request<pb::DeleteBucketRequest>,
    ) -> Result<Response<pb::DeleteBucketResponse>, Status> {
        let req = request.into_inner();
        let span = span("DeleteBucket", req.options.as_ref(), &req.name);
        self.store.delete_bucket(req).instrument(span).await?;
        Ok(Response::new(pb::DeleteBucketResponse {}))
    }

    type ListBucketsStream = BoxStream<pb::Bucket>;

    async fn list_buckets(
        &self,
        request: Request<pb::ListBucketsRequest>,
    ) -> Result<Response<Self::ListBucketsStream>, Status> {
        let req = request.into_inner();
        let span = span("ListBuckets", req.options.as_ref(), "");
        let buckets = self.store.list_buckets(req).instrument(span).await?;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            buckets.into_iter().map(Ok),
        ))))
    }

    async fn put_object(
        &self,
        request: Request<pb::PutObjectRequest>,
    ) -> Result<Response<pb::PutObjectResponse>, Status> {
        let req = request.into_inner();
        let span = span("PutObject", req.options.as_ref(), &req.bucket);
        Ok(Response::new(
            self.store.put_object(req).instrument(span).await?,
        ))
    }

    async fn get_object(
        &self,
        request: Request<pb::GetObjectRequest>,
    ) -> Result<Response<pb::MorayObject>, Status> {
        let req = request.into_inner();
        let span = span("GetObject", req.options.as_ref(), &req.bucket);
        Ok(Response::new(
            self.store.get_object(req).instrument(span).await?,
        ))
    }

    async fn get_objects(
        &self,
        request: Request<pb::GetObjectsRequest>,
    ) -> Result<Response<pb::GetObjectsResponse>, Status> {
        let req = request.into_inner();
        let bucket = req.keys.first().map_or("", |k| k.bucket.as_str());
        let span = span("GetObjects", req.options.as_ref(), bucket);
        Ok(Response::new(
            self.store.get_objects(req).instrument(span).await?,
        ))
    }

    async fn put_objects(
        &self,
        request: Request<pb::PutObjectsRequest>,
    ) -> Result<Response<pb::PutObjectsResponse>, Status> {
        let req = request.into_inner();
        let bucket = req.requests.first().map_or("", |p| p.bucket.as_str());
        let span = span("PutObjects", req.options.as_ref(), bucket);
        Ok(Response::new(
            self.store.put_objects(req).instrument(span).await?,
        ))
    }

    async fn delete_object(
        &self,
        request: Request<pb::DeleteObjectRequest>,
    ) -> Result<Response<pb::DeleteObjectResponse>, Status> {
        let req = request.into_inner();
        let span = span("DeleteObject", req.options.as_ref(), &req.bucket);
        self.store.delete_object(req).instrument(span).await?;
        Ok(Response::new(pb::DeleteObjectResponse {}))
    }

    type FindObjectsStream = BoxStream<pb::MorayObject>;

    async fn find_objects(
        &self,
        request: Request<pb::FindObjectsRequest>,
    ) -> Result<Response<Self::FindObjectsStream>, Status> {
        let req = request.into_inner();
        let span = span("FindObjects", req.options.as_ref(), &req.bucket);
        let (tx, rx) = mpsc::channel(STREAM_CHANNEL);
        let store = self.store.clone();
        tokio::spawn(
            async move {
                if let Err(e) = store.find(req, &tx).await {
                    let _ = tx.send(Err(e.into())).await;
                }
            }
            .instrument(span),
        );
        stream_from(rx).await
    }

    async fn update_objects(
        &self,
        request: Request<pb::UpdateObjectsRequest>,
    ) -> Result<Response<pb::UpdateObjectsResponse>, Status> {
        let req = request.into_inner();
        let span = span("UpdateObjects", req.options.as_ref(), &req.bucket);
        Ok(Response::new(
            self.store.update_objects(req).instrument(span).await?,
        ))
    }

    async fn delete_many(
        &self,
        request: Request<pb::DeleteManyRequest>,
    ) -> Result<Response<pb::DeleteManyResponse>, Status> {
        let req = request.into_inner();
        let span = span("DeleteMany", req.options.as_ref(), &req.bucket);
        Ok(Response::new(
            self.store.delete_many(req).instrument(span).await?,
        ))
    }

    async fn reindex_objects(
        &self,
        request: Request<pb::ReindexObjectsRequest>,
    ) -> Result<Response<pb::ReindexObjectsResponse>, Status> {
        let req = request.into_inner();
        let span = span("ReindexObjects", req.options.as_ref(), &req.bucket);
        Ok(Response::new(
            self.store.reindex_objects(req).instrument(span).await?,
        ))
    }

    async fn batch(
        &self,
        request: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        let req = request.into_inner();
        let span = span("Batch", req.options.as_ref(), "");
        Ok(Response::new(self.store.batch(req).instrument(span).await?))
    }

    type SqlStream = BoxStream<pb::SqlRow>;

    async fn sql(
        &self,
        request: Request<pb::SqlRequest>,
    ) -> Result<Response<Self::SqlStream>, Status> {
        let req = request.into_inner();
        let span = span("Sql", req.options.as_ref(), "");
        let (tx, rx) = mpsc::channel(STREAM_CHANNEL);
        let store = self.store.clone();
        tokio::spawn(
            async move {
                if let Err(e) = store.sql(req, &tx).await {
                    let _ = tx.send(Err(e.into())).await;
                }
            }
            .instrument(span),
        );
        stream_from(rx).await
    }

    async fn ping(
        &self,
        request: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        let req = request.into_inner();
        let span = span("Ping", req.options.as_ref(), "");
        self.store.ping(req).instrument(span).await?;
        Ok(Response::new(pb::PingResponse {}))
    }

    async fn version(
        &self,
        _request: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        Ok(Response::new(pb::VersionResponse {
            version: API_VERSION,
            server: format!("triton-rs moray {}", env!("CARGO_PKG_VERSION")),
        }))
    }

    type WatchStream = BoxStream<pb::ChangeEvent>;

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

    type SnapshotStream = BoxStream<pb::SnapshotPage>;

    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let req = request.into_inner();
        let span = span("Snapshot", req.options.as_ref(), &req.bucket);
        let snapshot = self.store.snapshot(req).instrument(span).await?;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            snapshot.into_pages().into_iter().map(Ok),
        ))))
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
