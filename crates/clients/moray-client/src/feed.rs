//! "Snapshot then follow": a bucket's objects at a change feed position, then every change
//! after that position, in order. Every owner's Watch RPC (VMAPI's `WatchVms`, ...) is
//! built on [`MorayClient::follow`]; the owner maps the objects and changes to its public
//! records.
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
use serde_json::Value;
use tonic::{Status, Streaming};
use triton_proto::moray::v1 as proto;

use crate::MorayClient;
use crate::error::{MorayError, Result};
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

fn resync(e: MorayError, since: u64) -> FeedItem {
    FeedItem::ResyncRequired {
        since,
        message: e.message(),
    }
}

fn is_resync(e: &MorayError) -> bool {
    e.name() == RESYNC_REQUIRED
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
                Err(status) => {
                    let e = MorayError::from(status);
                    if is_resync(&e) {
                        Some((Ok(resync(e, since)), State::Done))
                    } else {
                        Some((Err(e), State::Done))
                    }
                }
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
            Err(status) => {
                let e = MorayError::from(status);
                if is_resync(&e) {
                    Some((Ok(resync(e, last)), State::Done))
                } else {
                    Some((Err(e), State::Done))
                }
            }
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

/// An owner's Watch RPC answer: its messages, or the status that ended the stream.
pub type WatchStream<T> = BoxStream<'static, std::result::Result<T, Status>>;

/// A change as an owner's change message carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedChange<R> {
    /// Strictly increasing along the stream; a follower resumes from it.
    pub position: u64,
    /// The object's key in the bucket.
    pub key: String,
    /// The record after a PUT; `None` for a DELETE.
    pub record: Option<R>,
}

impl<R> FeedChange<R> {
    /// The op as every owner's proto numbers it: `PUT` 1, `DELETE` 2.
    pub fn op(&self) -> i32 {
        if self.record.is_some() { 1 } else { 2 }
    }
}

/// How an owner's Watch messages are made from its feed, for [`serve_follow`]: each owner
/// (VMAPI's `WatchVms`, NAPI's `WatchNics`, ...) has its own proto messages of the same
/// shape (a snapshot page, the snapshot-complete marker, a change, the resync answer).
pub trait FeedMessages: Send + Sync + 'static {
    /// The public record, as the owner's Get and List return it (e.g. VMAPI's `Vm`).
    type Record: Send + 'static;
    /// The stream's message (e.g. `WatchVmsEvent`).
    type Message: Send + 'static;
    /// Records per snapshot message: a page stays far below gRPC's 4 MiB message limit.
    const PAGE: usize = 100;

    /// The record stored under `key` with `etag`, or `None` for one this watcher did not
    /// ask for (another owner's: changes are the whole bucket's).
    fn record(
        &self,
        key: &str,
        value: Value,
        etag: &str,
    ) -> impl Future<Output = std::result::Result<Option<Self::Record>, Status>> + Send;
    /// A snapshot page: records as they are at `position`.
    fn page(&self, records: Vec<Self::Record>, position: u64) -> Self::Message;
    /// Every page has been sent; the changes after `position` follow.
    fn snapshot_done(&self, position: u64) -> Self::Message;
    /// A PUT (with the record after it) or a DELETE.
    fn change(&self, change: FeedChange<Self::Record>) -> Self::Message;
    /// `position` is older than the feed keeps; `message` starts with
    /// [`RESYNC_REQUIRED`].
    fn resync(&self, position: u64, message: String) -> Self::Message;
    /// The status of a failure following the feed (it ends the stream).
    fn error(&self, e: MorayError) -> Status;
}

/// The message constructors of a [`FeedMessages`] impl (`page`, `snapshot_done`,
/// `change`, `resync`), for an owner whose Watch event has the common shape: `{ event }`, a
/// oneof of `Page { <records>, position }`, `SnapshotDone { position }`,
/// `Change { position, op, <key>, <record> }` and `Resync { position, message }`. The
/// first argument is the owner's proto module:
///
/// ```ignore
/// impl FeedMessages for NicMessages {
///     type Record = proto::Nic;
///     type Message = proto::WatchNicsEvent;
///     moray_client::feed_messages!(proto, WatchNicsEvent, watch_nics_event,
///         WatchNicsPage { nics }, WatchSnapshotDone, NicChange { mac, nic }, WatchResync);
///     async fn record(...) { ... }
///     fn error(...) { ... }
/// }
/// ```
#[macro_export]
macro_rules! feed_messages {
    ($pb:ident, $event:ident, $oneof:ident, $page:ident { $records:ident }, $done:ident,
     $change:ident { $key:ident, $record:ident }, $resync:ident $(,)?) => {
        fn page(&self, records: Vec<Self::Record>, position: u64) -> Self::Message {
            $pb::$event {
                event: Some($pb::$oneof::Event::Page($pb::$page {
                    $records: records,
                    position,
                })),
            }
        }

        fn snapshot_done(&self, position: u64) -> Self::Message {
            $pb::$event {
                event: Some($pb::$oneof::Event::SnapshotDone($pb::$done { position })),
            }
        }

        fn change(&self, c: $crate::FeedChange<Self::Record>) -> Self::Message {
            let op = c.op();
            $pb::$event {
                event: Some($pb::$oneof::Event::Change($pb::$change {
                    position: c.position,
                    op,
                    $key: c.key,
                    $record: c.record,
                })),
            }
        }

        fn resync(&self, position: u64, message: String) -> Self::Message {
            $pb::$event {
                event: Some($pb::$oneof::Event::Resync($pb::$resync {
                    position,
                    message,
                })),
            }
        }
    };
}

/// The messages one feed item becomes (none for a change this watcher did not ask for).
async fn messages_of<M: FeedMessages>(
    m: &M,
    item: Result<FeedItem>,
) -> std::result::Result<Vec<M::Message>, Status> {
    Ok(match item.map_err(|e| m.error(e))? {
        FeedItem::Snapshot { position, objects } => {
            let mut records = Vec::with_capacity(objects.len());
            for Object {
                key, value, etag, ..
            } in objects
            {
                records.extend(m.record(&key, value, &etag).await?);
            }
            if records.is_empty() {
                // An empty snapshot is still a page, so a follower knows it began.
                return Ok(vec![m.page(Vec::new(), position)]);
            }
            let mut pages = Vec::with_capacity(records.len().div_ceil(M::PAGE.max(1)));
            let mut records = records.into_iter().peekable();
            while records.peek().is_some() {
                let page = records.by_ref().take(M::PAGE.max(1)).collect();
                pages.push(m.page(page, position));
            }
            pages
        }
        FeedItem::SnapshotDone { position } => vec![m.snapshot_done(position)],
        FeedItem::Put {
            seq,
            key,
            value,
            etag,
        } => match m.record(&key, value, &etag).await? {
            Some(record) => vec![m.change(FeedChange {
                position: seq,
                key,
                record: Some(record),
            })],
            None => Vec::new(),
        },
        FeedItem::Delete { seq, key } => vec![m.change(FeedChange {
            position: seq,
            key,
            record: None,
        })],
        FeedItem::ResyncRequired { since, message } => {
            vec![m.resync(since, format!("{RESYNC_REQUIRED}: {message}"))]
        }
    })
}

/// An owner's Watch RPC answer built from [`MorayClient::follow`]: each item becomes the
/// owner's messages through `messages` ([`FeedMessages`]); a failure is sent as the
/// stream's last item. The stream ends when the feed does or when `stop` completes (the
/// service shuts down). The first message is awaited here, so a failure before it (an
/// unknown bucket, Moray away) is the call's status rather than a stream that fails at
/// once.
pub async fn serve_follow<M, S>(
    feed: BoxStream<'static, Result<FeedItem>>,
    messages: M,
    stop: S,
) -> std::result::Result<WatchStream<M::Message>, Status>
where
    M: FeedMessages,
    S: Future<Output = ()> + Send + 'static,
{
    let messages = Arc::new(messages);
    let mut out = feed
        .then(move |item| {
            let messages = Arc::clone(&messages);
            async move {
                let out: Vec<std::result::Result<M::Message, Status>> =
                    match messages_of(&*messages, item).await {
                        Ok(messages) => messages.into_iter().map(Ok).collect(),
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
