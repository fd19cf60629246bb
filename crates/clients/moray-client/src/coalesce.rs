//! Coalescing of concurrent [`MorayClient::get_object`](crate::MorayClient::get_object)
//! calls into `GetObjects` RPCs.
//!
//! A get is sent at once, as its own `GetObject`, while fewer than
//! [`Coalescing::max_in_flight`] get RPCs are in flight; so at low load nothing waits.
//! Beyond that it is queued, and whenever a get RPC completes, everything queued (up to
//! [`Coalescing::max_batch`] keys) goes out as one `GetObjects`. A queued get is sent
//! after it was queued, so each caller still gets the object as committed at some point
//! during its own call, with the envelope and the per-key error (`ObjectNotFoundError`,
//! `BucketNotFoundError`, ...) its own `GetObject` would have had.

use std::collections::VecDeque;
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

/// How concurrent gets share RPCs (see [`ConnectOptions::coalesce_gets`](crate::ConnectOptions::coalesce_gets)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalescing {
    /// Get RPCs in flight before further gets wait to be sent together; at least 1.
    pub max_in_flight: usize,
    /// Most keys in one `GetObjects`; at least 1.
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

/// How a client's gets were sent so far (see [`MorayClient::get_stats`](crate::MorayClient::get_stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GetStats {
    /// Gets sent at once, each as its own `GetObject`.
    pub direct: u64,
    /// Gets that waited and went out in a `GetObjects`.
    pub coalesced: u64,
    /// `GetObjects` RPCs sent for them.
    pub batches: u64,
}

/// What a get resolves to before its value is parsed (the caller parses it, so that
/// parsing a batch's objects is spread over the callers' tasks).
pub(crate) type Answer = Result<Option<proto::MorayObject>>;

struct Pending {
    bucket: String,
    key: String,
    reply: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct State {
    in_flight: usize,
    queue: VecDeque<Pending>,
}

pub(crate) struct Coalescer {
    grpc: Grpc,
    options: Option<proto::RequestOptions>,
    limits: Coalescing,
    state: Mutex<State>,
    /// Set when Moray answers `GetObjects` with UNIMPLEMENTED (an older server): every
    /// get is then sent as its own `GetObject`.
    unsupported: AtomicBool,
    direct: AtomicU64,
    coalesced: AtomicU64,
    batches: AtomicU64,
}

/// Either a slot to send a get at once, or a place in the queue.
pub(crate) enum Ticket {
    Now(InFlight),
    Queued(oneshot::Receiver<Answer>),
}

/// A get RPC counted in flight; dropping it (the call completed or was abandoned) hands
/// its slot to whatever is queued.
pub(crate) struct InFlight(Arc<Coalescer>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finished();
    }
}

impl std::fmt::Debug for Coalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Coalescer {
    pub(crate) fn new(
        grpc: Grpc,
        options: Option<proto::RequestOptions>,
        limits: Coalescing,
    ) -> Coalescer {
        Coalescer {
            grpc,
            options,
            limits: Coalescing {
                max_in_flight: limits.max_in_flight.max(1),
                max_batch: limits.max_batch.max(1),
            },
            state: Mutex::new(State::default()),
            unsupported: AtomicBool::new(false),
            direct: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            batches: AtomicU64::new(0),
        }
    }

    pub(crate) fn stats(&self) -> GetStats {
        GetStats {
            direct: self.direct.load(Ordering::Relaxed),
            coalesced: self.coalesced.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
        }
    }

    /// Where the get of `bucket`/`key` goes: sent now by the caller, or queued.
    pub(crate) fn enter(self: &Arc<Self>, bucket: &str, key: &str) -> Ticket {
        let mut state = lock(&self.state);
        if state.in_flight < self.limits.max_in_flight || self.unsupported.load(Ordering::Relaxed) {
            state.in_flight += 1;
            self.direct.fetch_add(1, Ordering::Relaxed);
            return Ticket::Now(InFlight(self.clone()));
        }
        let (reply, answer) = oneshot::channel();
        state.queue.push_back(Pending {
            bucket: bucket.to_string(),
            key: key.to_string(),
            reply,
        });
        Ticket::Queued(answer)
    }

    /// A get RPC completed: its slot goes to the next batch, if anything is queued.
    fn finished(self: &Arc<Self>) {
        let Some(mut batch) = self.next_batch() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.clone().send_batches(batch));
            return;
        }
        // Only when a client is dropped outside any runtime with gets queued.
        loop {
            for p in batch {
                let _ = p.reply.send(Err(MorayError::Server {
                    name: "Unavailable".into(),
                    message: "no runtime left to send the coalesced get".into(),
                    code: Code::Unavailable,
                }));
            }
            match self.next_batch() {
                Some(next) => batch = next,
                None => return,
            }
        }
    }

    /// Up to `max_batch` queued gets whose callers still wait, keeping the in-flight
    /// slot for them; or None, releasing the slot, when nothing waits.
    fn next_batch(&self) -> Option<Vec<Pending>> {
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
    async fn send_batches(self: Arc<Self>, mut batch: Vec<Pending>) {
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

    async fn send_batch(&self, batch: Vec<Pending>) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.coalesced
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let request = proto::GetObjectsRequest {
            keys: batch
                .iter()
                .map(|p| proto::ObjectKey {
                    bucket: p.bucket.clone(),
                    key: p.key.clone(),
                })
                .collect(),
            options: self.options.clone(),
        };
        let response = match self.grpc.clone().get_objects(request).await {
            Ok(r) => r.into_inner(),
            Err(status) if status.code() == Code::Unimplemented => {
                self.unsupported.store(true, Ordering::Relaxed);
                return self.send_one_by_one(batch).await;
            }
            Err(status) => {
                for p in batch {
                    let _ = p.reply.send(Err(MorayError::from(status.clone())));
                }
                return;
            }
        };
        if response.results.len() != batch.len() {
            let what = format!(
                "GetObjects answered {} results for {} keys",
                response.results.len(),
                batch.len()
            );
            for p in batch {
                let _ = p.reply.send(Err(MorayError::InvalidResponse {
                    what: what.clone(),
                    source: None,
                }));
            }
            return;
        }
        for (p, result) in batch.into_iter().zip(response.results) {
            let _ = p.reply.send(answer_of(result, &p.bucket, &p.key));
        }
    }

    /// For a server without `GetObjects`: each queued get as its own `GetObject`, all
    /// at once.
    async fn send_one_by_one(&self, batch: Vec<Pending>) {
        let calls = batch.into_iter().map(|p| {
            let mut grpc = self.grpc.clone();
            let request = proto::GetObjectRequest {
                bucket: p.bucket,
                key: p.key,
                options: self.options.clone(),
            };
            async move {
                let answer = answer_of_status(grpc.get_object(request).await);
                let _ = p.reply.send(answer);
            }
        });
        futures::future::join_all(calls).await;
    }
}

/// A `GetObject` outcome as the caller sees it: `ObjectNotFoundError` is `None`.
pub(crate) fn answer_of_status(
    result: std::result::Result<tonic::Response<proto::MorayObject>, tonic::Status>,
) -> Answer {
    match result {
        Ok(object) => Ok(Some(object.into_inner())),
        Err(status) => match MorayError::from(status) {
            e if e.name() == "ObjectNotFoundError" => Ok(None),
            e => Err(e),
        },
    }
}

pub(crate) fn answer_of(result: proto::GetObjectResult, bucket: &str, key: &str) -> Answer {
    use proto::get_object_result::Result as R;
    match result.result {
        Some(R::Object(object)) => Ok(Some(object)),
        Some(R::Error(e)) if e.name == "ObjectNotFoundError" => Ok(None),
        Some(R::Error(e)) => Err(MorayError::Server {
            name: e.name,
            message: e.message,
            code: Code::from(e.code),
        }),
        None => Err(MorayError::InvalidResponse {
            what: format!("GetObjects answered nothing for {bucket}/{key}"),
            source: None,
        }),
    }
}
