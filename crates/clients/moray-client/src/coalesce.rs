//! Coalescing of concurrent [`MorayClient::get_object`](crate::MorayClient::get_object)
//! calls into `GetObjects` RPCs, and of concurrent
//! [`MorayClient::put_object`](crate::MorayClient::put_object) calls into `PutObjects`.
//!
//! A call is sent at once, as its own `GetObject` (`PutObject`), while fewer than
//! [`Coalescing::max_in_flight`] RPCs of its kind are in flight; so at low load nothing
//! waits. Beyond that it is queued, and whenever an RPC of its kind completes,
//! everything queued (up to [`Coalescing::max_batch`] items) goes out as one
//! `GetObjects` (`PutObjects`). A queued call is sent after it was queued, so each
//! caller still gets the object as committed at some point during its own call (its
//! put is applied after the call began), with the answer and the per-item error
//! (`ObjectNotFoundError`, `EtagConflictError`, `BucketNotFoundError`, ...) its own RPC
//! would have had. The kinds are [`Gets`] and [`Puts`]; [`Coalescer`] is shared.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tonic::Code;
use triton_proto::moray::v1 as proto;

use crate::client::Grpc;
use crate::error::{MorayError, Result};

/// Default of [`Coalescing::max_in_flight`]. Fewer make bigger batches (on the 2-core
/// development VM 2 did best, 8 worst; `docs/benchmarks.md`, "Moray"); 4 still lets one
/// busy client keep several of Moray's PostgreSQL connections working on a bigger host.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;
/// Default of [`Coalescing::max_batch`]: well under Moray's limit of 1000 keys per
/// `GetObjects`, and small enough that one batch's answer stays a modest message.
pub const DEFAULT_MAX_BATCH: usize = 128;

/// How concurrent gets (puts) share RPCs (see
/// [`ConnectOptions::coalesce_gets`](crate::ConnectOptions::coalesce_gets) and
/// [`ConnectOptions::coalesce_puts`](crate::ConnectOptions::coalesce_puts)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalescing {
    /// RPCs of the kind in flight before further calls wait to be sent together; at
    /// least 1.
    pub max_in_flight: usize,
    /// Most items in one `GetObjects` (`PutObjects`); at least 1.
    pub max_batch: usize,
}

impl Default for Coalescing {
    fn default() -> Self {
        Coalescing {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

/// How a client's gets (puts) were sent so far (see
/// [`MorayClient::get_stats`](crate::MorayClient::get_stats) and
/// [`MorayClient::put_stats`](crate::MorayClient::put_stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoalesceStats {
    /// Calls sent at once, each as its own `GetObject` (`PutObject`).
    pub direct: u64,
    /// Calls that waited and went out in a `GetObjects` (`PutObjects`).
    pub coalesced: u64,
    /// `GetObjects` (`PutObjects`) RPCs sent for them.
    pub batches: u64,
}

/// [`CoalesceStats`] of gets.
pub type GetStats = CoalesceStats;
/// [`CoalesceStats`] of puts.
pub type PutStats = CoalesceStats;

/// One kind of call that can be coalesced: its single RPC and its batched RPC.
pub(crate) trait Kind: Send + Sync + 'static {
    /// What one call asks for.
    type Item: Send + 'static;
    /// What one call resolves to before the caller post-processes it.
    type Out: Send + 'static;
    /// "get" or "put", for messages.
    const NAME: &'static str;
    /// The batched RPC's name, for messages.
    const BATCH_RPC: &'static str;

    /// The single RPC for one item.
    fn one(
        grpc: Grpc,
        options: Option<proto::RequestOptions>,
        item: Self::Item,
    ) -> impl Future<Output = Result<Self::Out>> + Send;

    /// The batched RPC for `items`: one answer per item, in order, or the status the
    /// call failed with.
    fn many(
        grpc: Grpc,
        options: Option<proto::RequestOptions>,
        items: &[Self::Item],
    ) -> impl Future<Output = std::result::Result<Vec<Result<Self::Out>>, tonic::Status>> + Send;
}

/// Gets: a (bucket, key) resolves to the object, `None` for `ObjectNotFoundError`. (The
/// caller parses the value, so that parsing a batch's objects is spread over the
/// callers' tasks.)
pub(crate) struct Gets;

impl Kind for Gets {
    type Item = (String, String);
    type Out = Option<proto::MorayObject>;
    const NAME: &'static str = "get";
    const BATCH_RPC: &'static str = "GetObjects";

    async fn one(
        mut grpc: Grpc,
        options: Option<proto::RequestOptions>,
        (bucket, key): Self::Item,
    ) -> Result<Self::Out> {
        answer_of_status(
            grpc.get_object(proto::GetObjectRequest {
                bucket,
                key,
                options,
            })
            .await,
        )
    }

    async fn many(
        mut grpc: Grpc,
        options: Option<proto::RequestOptions>,
        items: &[Self::Item],
    ) -> std::result::Result<Vec<Result<Self::Out>>, tonic::Status> {
        let request = proto::GetObjectsRequest {
            keys: items
                .iter()
                .map(|(bucket, key)| proto::ObjectKey {
                    bucket: bucket.clone(),
                    key: key.clone(),
                })
                .collect(),
            options,
        };
        let response = grpc.get_objects(request).await?.into_inner();
        Ok(response
            .results
            .into_iter()
            .zip(items)
            .map(|(result, (bucket, key))| answer_of(result, bucket, key))
            .collect())
    }
}

/// Puts: a `PutObjectRequest` (its `options` set by the coalescer) resolves to the new
/// etag.
pub(crate) struct Puts;

impl Kind for Puts {
    type Item = proto::PutObjectRequest;
    type Out = String;
    const NAME: &'static str = "put";
    const BATCH_RPC: &'static str = "PutObjects";

    async fn one(
        mut grpc: Grpc,
        options: Option<proto::RequestOptions>,
        mut item: Self::Item,
    ) -> Result<Self::Out> {
        item.options = options;
        Ok(grpc.put_object(item).await?.into_inner().etag)
    }

    async fn many(
        mut grpc: Grpc,
        options: Option<proto::RequestOptions>,
        items: &[Self::Item],
    ) -> std::result::Result<Vec<Result<Self::Out>>, tonic::Status> {
        let request = proto::PutObjectsRequest {
            requests: items
                .iter()
                .map(|p| proto::PutObjectRequest {
                    options: None,
                    ..p.clone()
                })
                .collect(),
            options,
        };
        let response = grpc.put_objects(request).await?.into_inner();
        Ok(response
            .results
            .into_iter()
            .zip(items)
            .map(|(result, p)| put_answer_of(result, &p.bucket, &p.key))
            .collect())
    }
}

struct Pending<K: Kind> {
    item: K::Item,
    reply: oneshot::Sender<Result<K::Out>>,
}

struct State<K: Kind> {
    in_flight: usize,
    queue: VecDeque<Pending<K>>,
}

pub(crate) struct Coalescer<K: Kind> {
    grpc: Grpc,
    options: Option<proto::RequestOptions>,
    limits: Coalescing,
    state: Mutex<State<K>>,
    /// Set when Moray answers the batched RPC with UNIMPLEMENTED (an older server):
    /// every call is then sent as its own RPC.
    unsupported: AtomicBool,
    direct: AtomicU64,
    coalesced: AtomicU64,
    batches: AtomicU64,
}

/// Either a slot to send the call at once, or a place in the queue.
pub(crate) enum Ticket<K: Kind> {
    Now(InFlight<K>),
    Queued(oneshot::Receiver<Result<K::Out>>),
}

/// An RPC counted in flight; dropping it (the call completed or was abandoned) hands
/// its slot to whatever is queued.
pub(crate) struct InFlight<K: Kind>(Arc<Coalescer<K>>);

impl<K: Kind> Drop for InFlight<K> {
    fn drop(&mut self) {
        self.0.finished();
    }
}

impl<K: Kind> std::fmt::Debug for Coalescer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("kind", &K::NAME)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<K: Kind> Coalescer<K> {
    pub(crate) fn new(
        grpc: Grpc,
        options: Option<proto::RequestOptions>,
        limits: Coalescing,
    ) -> Coalescer<K> {
        Coalescer {
            grpc,
            options,
            limits: Coalescing {
                max_in_flight: limits.max_in_flight.max(1),
                max_batch: limits.max_batch.max(1),
            },
            state: Mutex::new(State {
                in_flight: 0,
                queue: VecDeque::new(),
            }),
            unsupported: AtomicBool::new(false),
            direct: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            batches: AtomicU64::new(0),
        }
    }

    pub(crate) fn stats(&self) -> CoalesceStats {
        CoalesceStats {
            direct: self.direct.load(Ordering::Relaxed),
            coalesced: self.coalesced.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
        }
    }

    /// Where a call goes: sent now by the caller, or queued. `item` is built only when
    /// the call is queued (the caller sends its own RPC otherwise).
    pub(crate) fn enter(self: &Arc<Self>, item: impl FnOnce() -> K::Item) -> Ticket<K> {
        let mut state = lock(&self.state);
        if state.in_flight < self.limits.max_in_flight || self.unsupported.load(Ordering::Relaxed) {
            state.in_flight += 1;
            self.direct.fetch_add(1, Ordering::Relaxed);
            return Ticket::Now(InFlight(self.clone()));
        }
        let (reply, answer) = oneshot::channel();
        state.queue.push_back(Pending {
            item: item(),
            reply,
        });
        Ticket::Queued(answer)
    }

    /// An RPC completed: its slot goes to the next batch, if anything is queued.
    fn finished(self: &Arc<Self>) {
        let Some(mut batch) = self.next_batch() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.clone().send_batches(batch));
            return;
        }
        // Only when a client is dropped outside any runtime with calls queued.
        loop {
            for p in batch {
                let _ = p.reply.send(Err(MorayError::Server {
                    name: "Unavailable".into(),
                    message: format!("no runtime left to send the coalesced {}", K::NAME),
                    code: Code::Unavailable,
                }));
            }
            match self.next_batch() {
                Some(next) => batch = next,
                None => return,
            }
        }
    }

    /// Up to `max_batch` queued calls whose callers still wait, keeping the in-flight
    /// slot for them; or None, releasing the slot, when nothing waits. A caller that
    /// gave up (timed out, dropped its future) while queued is skipped: its call is
    /// never sent.
    fn next_batch(&self) -> Option<Vec<Pending<K>>> {
        let mut state = lock(&self.state);
        let mut batch = Vec::new();
        while batch.len() < self.limits.max_batch {
            match state.queue.pop_front() {
                Some(p) if p.reply.is_closed() => {}
                Some(p) => batch.push(p),
                None => break,
            }
        }
        if batch.is_empty() {
            state.in_flight -= 1;
            None
        } else {
            Some(batch)
        }
    }

    /// Sends `batch`, then whatever was queued meanwhile, until the queue is empty.
    async fn send_batches(self: Arc<Self>, mut batch: Vec<Pending<K>>) {
        loop {
            if self.unsupported.load(Ordering::Relaxed) {
                self.send_one_by_one(batch).await;
            } else {
                self.send_batch(batch).await;
            }
            match self.next_batch() {
                Some(next) => batch = next,
                None => return,
            }
        }
    }

    async fn send_batch(&self, batch: Vec<Pending<K>>) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.coalesced
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let (items, replies): (Vec<K::Item>, Vec<_>) =
            batch.into_iter().map(|p| (p.item, p.reply)).unzip();
        let answers = match K::many(self.grpc.clone(), self.options.clone(), &items).await {
            Ok(answers) => answers,
            Err(status) if status.code() == Code::Unimplemented => {
                self.unsupported.store(true, Ordering::Relaxed);
                let batch = items
                    .into_iter()
                    .zip(replies)
                    .map(|(item, reply)| Pending { item, reply })
                    .collect();
                return self.send_one_by_one(batch).await;
            }
            Err(status) => {
                for reply in replies {
                    let _ = reply.send(Err(MorayError::from(status.clone())));
                }
                return;
            }
        };
        if answers.len() != replies.len() {
            let asked = replies.len();
            for reply in replies {
                let _ = reply.send(Err(miscounted(K::BATCH_RPC, answers.len(), asked)));
            }
            return;
        }
        for (reply, answer) in replies.into_iter().zip(answers) {
            let _ = reply.send(answer);
        }
    }

    /// For a server without the batched RPC: each queued call as its own RPC, all at
    /// once.
    async fn send_one_by_one(&self, batch: Vec<Pending<K>>) {
        let calls = batch.into_iter().map(|p| {
            let call = K::one(self.grpc.clone(), self.options.clone(), p.item);
            async move {
                let _ = p.reply.send(call.await);
            }
        });
        futures::future::join_all(calls).await;
    }
}

/// A `GetObject` outcome as the caller sees it: `ObjectNotFoundError` is `None`.
pub(crate) fn answer_of_status(
    result: std::result::Result<tonic::Response<proto::MorayObject>, tonic::Status>,
) -> Result<Option<proto::MorayObject>> {
    match result {
        Ok(object) => Ok(Some(object.into_inner())),
        Err(status) => match MorayError::from(status) {
            e if e.name() == "ObjectNotFoundError" => Ok(None),
            e => Err(e),
        },
    }
}

fn item_error(e: proto::ObjectError) -> MorayError {
    MorayError::Server {
        name: e.name,
        message: e.message,
        code: Code::from(e.code),
    }
}

pub(crate) fn answer_of(
    result: proto::GetObjectResult,
    bucket: &str,
    key: &str,
) -> Result<Option<proto::MorayObject>> {
    use proto::get_object_result::Result as R;
    match result.result {
        Some(R::Object(object)) => Ok(Some(object)),
        Some(R::Error(e)) if e.name == "ObjectNotFoundError" => Ok(None),
        Some(R::Error(e)) => Err(item_error(e)),
        None => Err(MorayError::InvalidResponse {
            what: format!("GetObjects answered nothing for {bucket}/{key}"),
            source: None,
        }),
    }
}

/// A `PutObjects` result as the caller of `put_object` sees it: the new etag or the
/// item's error.
pub(crate) fn put_answer_of(
    result: proto::PutObjectResult,
    bucket: &str,
    key: &str,
) -> Result<String> {
    use proto::put_object_result::Result as R;
    match result.result {
        Some(R::Object(r)) => Ok(r.etag),
        Some(R::Error(e)) => Err(item_error(e)),
        None => Err(MorayError::InvalidResponse {
            what: format!("PutObjects answered nothing for {bucket}/{key}"),
            source: None,
        }),
    }
}

/// The error of a batch RPC (`rpc`) that answered `got` results for `asked` items (it
/// owes one per item, in order).
pub(crate) fn miscounted(rpc: &str, got: usize, asked: usize) -> MorayError {
    MorayError::InvalidResponse {
        what: format!("{rpc} answered {got} results for {asked} items"),
        source: None,
    }
}

/// A batch RPC's (`rpc`'s) results paired with the items asked, or [`miscounted`] when
/// it did not answer one per item.
pub(crate) fn per_item<'a, T, I>(
    rpc: &str,
    results: Vec<T>,
    items: &'a [I],
) -> Result<impl Iterator<Item = (T, &'a I)>> {
    if results.len() != items.len() {
        return Err(miscounted(rpc, results.len(), items.len()));
    }
    Ok(results.into_iter().zip(items))
}
