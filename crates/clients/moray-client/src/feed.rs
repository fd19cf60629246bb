//! "Snapshot then follow": a bucket's objects at a change feed position, then every change
//! after that position, in order. Every owner's Watch RPC (VMAPI's `WatchVms`, ...) is
//! built on [`MorayClient::follow`] and [`serve_follow`]; the owner maps the objects to
//! its public records ([`FeedRecords`]).
//!
//! ```no_run
//! # async fn example(moray: moray_client::MorayClient) -> Result<(), moray_client::MorayError> {
//! use futures::StreamExt;
//! use moray_client::FeedItem;
//!
//! let mut position = 0; // kept by the follower across restarts
//! let mut feed = moray.follow("vmapi_vms", None, position);
//! while let Some(item) = feed.next().await {
//!     match item? {
//!         FeedItem::Snapshot { objects, .. } => { /* replace the state, page by page */ }
//!         FeedItem::SnapshotDone { position: p } => position = p,
//!         FeedItem::Put { seq, .. } | FeedItem::Delete { seq, .. } => position = seq,
//!         FeedItem::ResyncRequired { .. } => position = 0, // start again from a snapshot
//!     }
//! }
//! // The stream ended (Moray went away): follow again from `position`.
//! # let _ = position;
//! # Ok(())
//! # }
//! ```

use std::future::{Future, ready};
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tonic::{Status, Streaming};
use triton_proto::feed::WatchEvent;
use triton_proto::moray::v1 as proto;

use crate::MorayClient;
use crate::error::{MorayError, Result};
use crate::typed::Bucket;
use crate::types::{ChangeEvent, ChangeOp, Object};

/// Triton's name of the answer to a position the feed no longer has.
pub const RESYNC_REQUIRED: &str = "ResyncRequiredError";

/// One item of [`MorayClient::follow`].
#[derive(Debug, Clone, PartialEq)]
pub enum FeedItem {
    /// A page of the snapshot: objects as they are at `position`. Pages come first, all
    /// with the same position; together they are the whole state (matching the filter).
    Snapshot { position: u64, objects: Vec<Object> },
    /// The snapshot is complete; the changes after `position` follow.
    SnapshotDone { position: u64 },
    /// The object `key` was written; its value and etag after the write.
    Put {
        seq: u64,
        key: String,
        value: Value,
        etag: String,
    },
    /// The object `key` was deleted.
    Delete { seq: u64, key: String },
    /// The position followed from is older than the oldest change Moray keeps (or is
    /// not of this feed): changes were lost to the follower, which must start again from
    /// a snapshot (follow from 0). The stream ends after it.
    ResyncRequired { since: u64, message: String },
}

impl FeedItem {
    /// The position a follower is at once it has applied this item (for a snapshot
    /// page: only once it has applied every page, i.e. at `SnapshotDone`).
    pub fn position(&self) -> u64 {
        match self {
            FeedItem::Snapshot { position, .. } | FeedItem::SnapshotDone { position } => *position,
            FeedItem::Put { seq, .. } | FeedItem::Delete { seq, .. } => *seq,
            FeedItem::ResyncRequired { since, .. } => *since,
        }
    }
}

enum State {
    Start {
        client: MorayClient,
        bucket: String,
        filter: String,
    },
    Pages {
        client: MorayClient,
        bucket: String,
        pages: Box<Streaming<proto::SnapshotPage>>,
    },
    Watch {
        client: MorayClient,
        bucket: String,
        since: u64,
    },
    Follow {
        events: Box<Streaming<proto::ChangeEvent>>,
        last: u64,
    },
    Done,
}

/// The last item of a feed that failed following from `since`: the resync answer when
/// Moray no longer has that position, else the error.
fn failed(status: Status, since: u64) -> Option<(Result<FeedItem>, State)> {
    let e = MorayError::from(status);
    let item = if e.name() == RESYNC_REQUIRED {
        Ok(FeedItem::ResyncRequired {
            since,
            message: e.message(),
        })
    } else {
        Err(e)
    };
    Some((item, State::Done))
}

/// The next item and the state after it; `None` ends the stream.
async fn step(state: State) -> Option<(Result<FeedItem>, State)> {
    match state {
        State::Done => None,
        State::Start {
            client,
            bucket,
            filter,
        } => {
            let request = proto::SnapshotRequest {
                bucket: bucket.clone(),
                filter,
                options: client.options(),
            };
            match client.grpc().snapshot(request).await {
                Ok(pages) => {
                    let pages = Box::new(pages.into_inner());
                    Box::pin(step(State::Pages {
                        client,
                        bucket,
                        pages,
                    }))
                    .await
                }
                Err(status) => Some((Err(status.into()), State::Done)),
            }
        }
        State::Pages {
            client,
            bucket,
            mut pages,
        } => match pages.message().await {
            Ok(Some(page)) => {
                let objects = match page
                    .objects
                    .into_iter()
                    .map(Object::try_from)
                    .collect::<Result<Vec<_>>>()
                {
                    Ok(objects) => objects,
                    Err(e) => return Some((Err(e), State::Done)),
                };
                let item = FeedItem::Snapshot {
                    position: page.position,
                    objects,
                };
                let next = if page.last {
                    State::Watch {
                        client,
                        bucket,
                        since: page.position,
                    }
                } else {
                    State::Pages {
                        client,
                        bucket,
                        pages,
                    }
                };
                Some((Ok(item), next))
            }
            Ok(None) => Some((
                Err(MorayError::InvalidResponse {
                    what: format!("the snapshot of {bucket} ended before its last page"),
                    source: None,
                }),
                State::Done,
            )),
            Err(status) => Some((Err(status.into()), State::Done)),
        },
        State::Watch {
            client,
            bucket,
            since,
        } => {
            let request = proto::WatchRequest {
                bucket: bucket.clone(),
                since,
            };
            match client.grpc().watch(request).await {
                Ok(events) => Some((
                    Ok(FeedItem::SnapshotDone { position: since }),
                    State::Follow {
                        events: Box::new(events.into_inner()),
                        last: since,
                    },
                )),
                Err(status) => failed(status, since),
            }
        }
        State::Follow { mut events, last } => match events.message().await {
            Ok(Some(event)) => match ChangeEvent::try_from(event) {
                Ok(e) => {
                    let seq = e.seq;
                    let item = match (e.op, e.value) {
                        (ChangeOp::Put, Some(value)) => FeedItem::Put {
                            seq,
                            key: e.key,
                            value,
                            etag: e.etag,
                        },
                        _ => FeedItem::Delete { seq, key: e.key },
                    };
                    Some((Ok(item), State::Follow { events, last: seq }))
                }
                Err(e) => Some((Err(e), State::Done)),
            },
            Ok(None) => None,
            Err(status) => failed(status, last),
        },
    }
}

impl MorayClient {
    /// Snapshot then follow `bucket`'s change feed.
    ///
    /// From `position` 0 (nothing seen yet) the stream starts with the snapshot: pages of
    /// the objects matching `filter` (every object without one) at a position `P`, then
    /// [`FeedItem::SnapshotDone`] at `P`, then every put and delete after `P`, in order.
    /// From any other position it skips the snapshot: `SnapshotDone` at that position,
    /// then the changes after it. The filter applies to the snapshot only: changes are
    /// the whole bucket's, and a follower that wants part of it drops the rest itself.
    ///
    /// A position the feed no longer has is answered with [`FeedItem::ResyncRequired`]
    /// (never a silent gap). Any other failure is an `Err` item; after it, and when the
    /// stream ends (Moray went away), follow again from the last position applied: the
    /// changes after it come once each, in order.
    pub fn follow(
        &self,
        bucket: &str,
        filter: Option<&str>,
        position: u64,
    ) -> BoxStream<'static, Result<FeedItem>> {
        let (client, bucket) = (self.clone(), bucket.to_string());
        let start = if position == 0 {
            State::Start {
                client,
                bucket,
                filter: filter.unwrap_or_default().to_string(),
            }
        } else {
            State::Watch {
                client,
                bucket,
                since: position,
            }
        };
        stream::unfold(start, step).boxed()
    }
}

impl<T: Serialize + DeserializeOwned> Bucket<T> {
    /// Snapshot then follow this bucket ([`MorayClient::follow`]).
    pub fn follow(
        &self,
        filter: Option<&str>,
        position: u64,
    ) -> BoxStream<'static, Result<FeedItem>> {
        self.client().follow(self.name(), filter, position)
    }
}

/// An owner's Watch RPC answer: its events, or the status that ended the stream.
pub type WatchStream<T> = BoxStream<'static, std::result::Result<T, Status>>;

/// A stored object as the feed carries it (in a snapshot page or a PUT).
#[derive(Debug, Clone, PartialEq)]
pub struct FeedObject {
    /// The object's key in the bucket.
    pub key: String,
    /// The stored value.
    pub value: Value,
    /// The object's etag after the write.
    pub etag: String,
}

/// The owner's record of a [`FeedRecords`] impl.
pub type RecordOf<M> = <<M as FeedRecords>::Event as WatchEvent>::Record;

/// What an owner adds to its feed for [`serve_follow`]: which stored objects a watcher
/// gets and as what public record. The events themselves are the owner's proto messages,
/// built through their [`WatchEvent`] impl (every owner's have the shape of
/// proto/feed.proto).
pub trait FeedRecords: Send + Sync + 'static {
    /// The stream's event (e.g. VMAPI's `WatchVmsEvent`); its record is the public
    /// record, as the owner's Get and List return it.
    type Event: WatchEvent<Record: Send> + Send + 'static;
    /// Records per snapshot message: a page stays far below gRPC's 4 MiB message limit.
    const PAGE: usize = 100;

    /// The record of a stored object, or `None` for one this watcher did not ask for
    /// (another owner's: changes are the whole bucket's).
    fn record(
        &self,
        object: FeedObject,
    ) -> impl Future<Output = std::result::Result<Option<RecordOf<Self>>, Status>> + Send;
    /// The status of a failure following the feed (it ends the stream).
    fn error(&self, e: MorayError) -> Status;
}

/// The events one feed item becomes (none for a change this watcher did not ask for).
async fn events_of<M: FeedRecords>(
    m: &M,
    item: Result<FeedItem>,
) -> std::result::Result<Vec<M::Event>, Status> {
    Ok(match item.map_err(|e| m.error(e))? {
        FeedItem::Snapshot { position, objects } => {
            let mut records = Vec::with_capacity(objects.len());
            for Object {
                key, value, etag, ..
            } in objects
            {
                records.extend(m.record(FeedObject { key, value, etag }).await?);
            }
            if records.is_empty() {
                // An empty snapshot is still a page, so a follower knows it began.
                return Ok(vec![M::Event::page(Vec::new(), position)]);
            }
            let mut pages = Vec::with_capacity(records.len().div_ceil(M::PAGE.max(1)));
            let mut records = records.into_iter().peekable();
            while records.peek().is_some() {
                let page = records.by_ref().take(M::PAGE.max(1)).collect();
                pages.push(M::Event::page(page, position));
            }
            pages
        }
        FeedItem::SnapshotDone { position } => vec![M::Event::snapshot_done(position)],
        FeedItem::Put {
            seq,
            key,
            value,
            etag,
        } => {
            let object = FeedObject {
                key: key.clone(),
                value,
                etag,
            };
            match m.record(object).await? {
                Some(record) => vec![M::Event::change(seq, key, Some(record))],
                None => Vec::new(),
            }
        }
        FeedItem::Delete { seq, key } => vec![M::Event::change(seq, key, None)],
        FeedItem::ResyncRequired { since, message } => {
            vec![M::Event::resync(
                since,
                format!("{RESYNC_REQUIRED}: {message}"),
            )]
        }
    })
}

/// An owner's Watch RPC answer built from [`MorayClient::follow`]: each item becomes the
/// owner's events, with the records `records` makes ([`FeedRecords`]); a failure is sent
/// as the stream's last item. The stream ends when the feed does or when `stop` completes (the
/// service shuts down). The first message is awaited here, so a failure before it (an
/// unknown bucket, Moray away) is the call's status rather than a stream that fails at
/// once.
pub async fn serve_follow<M, S>(
    feed: BoxStream<'static, Result<FeedItem>>,
    records: M,
    stop: S,
) -> std::result::Result<WatchStream<M::Event>, Status>
where
    M: FeedRecords,
    S: Future<Output = ()> + Send + 'static,
{
    let records = Arc::new(records);
    let mut out = feed
        .then(move |item| {
            let records = Arc::clone(&records);
            async move {
                let out: Vec<std::result::Result<M::Event, Status>> =
                    match events_of(&*records, item).await {
                        Ok(events) => events.into_iter().map(Ok).collect(),
                        Err(status) => vec![Err(status)],
                    };
                stream::iter(out)
            }
        })
        .flatten()
        .scan(false, |failed, message| {
            if *failed {
                return ready(None);
            }
            *failed = message.is_err();
            ready(Some(message))
        })
        .take_until(Box::pin(stop))
        .boxed();
    match out.next().await {
        None => Ok(stream::empty().boxed()),
        Some(Err(status)) => Err(status),
        Some(Ok(first)) => Ok(stream::once(ready(Ok(first))).chain(out).boxed()),
    }
}
