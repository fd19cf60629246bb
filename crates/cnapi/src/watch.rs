//! WatchServers: the servers' change feed, Moray's snapshot then follow
//! ([`moray_client::MorayClient::follow`]) over the `cnapi_servers` bucket, each record
//! mapped to the `Server` GetServer returns. The position is Moray's change feed
//! sequence. The stream ends when the caller goes away (or with the gRPC server's drain).

use moray_client::typed::Bucket;
use moray_client::{FeedObject, FeedRecords, MorayError, WatchStream};
use tonic::{Code, Status};
use triton_proto::cnapi::v1 as pb;

use crate::error::Error;
use crate::model::ServerRecord;
use crate::service::server_to_pb;
use crate::store::Store;

pub type WatchServersStream = WatchStream<pb::WatchServersEvent>;

/// WatchServers's records, decoded as the store decodes them.
struct ServerRecords(Bucket<ServerRecord>);

impl FeedRecords for ServerRecords {
    type Event = pb::WatchServersEvent;

    async fn record(&self, object: FeedObject) -> Result<Option<pb::Server>, Status> {
        let record = self
            .0
            .decode(&object.key, object.value)
            .map_err(|e| Error::Store(e.to_string()))?;
        Ok(Some(server_to_pb(&record, &object.etag)))
    }

    fn error(&self, e: MorayError) -> Status {
        Error::Store(format!("follow the servers' change feed: {e}")).into()
    }
}

/// Starts following; a failure before the first event is the call's error.
pub async fn watch_servers<S: Store>(
    store: &S,
    req: pb::WatchServersRequest,
) -> Result<WatchServersStream, Status> {
    let Some(bucket) = store.servers_bucket() else {
        return Err(triton_common::status::named(
            Code::FailedPrecondition,
            "PreconditionFailedError",
            "WatchServers needs the servers in Moray; this CNAPI keeps them in memory",
        ));
    };
    let feed = bucket.follow(None, req.position);
    moray_client::serve_follow(feed, ServerRecords(bucket.clone()), std::future::pending()).await
}
