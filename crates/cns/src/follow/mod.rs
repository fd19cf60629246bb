//! The followers: one per owner's change feed (VMAPI `WatchVms`, UFDS `WatchAccounts`,
//! NAPI `WatchNetworks`, CNAPI `WatchServers`), each a background task that keeps its
//! table of [`Inputs`] as the feed says (docs/architecture.md, "Change feeds").
//!
//! A follower takes the snapshot into a fresh table and swaps it in at the snapshot's
//! marker, then applies each change; after a disconnect it resumes at the last position
//! it applied, after a resync answer it starts again from the snapshot. A change that
//! alters what CNS keeps of a record (not every field VMAPI or CNAPI change does) wakes
//! the zone builder (`app.rs`).
//!
//! After a restart the followers start from the snapshots: CNS rebuilds its zones from
//! the owners' state and diffs them against the zones restored from Moray, so a serial
//! moves only if something changed while CNS was away.

/// `impl Feed for $feed`: the feed `$watch` opens, kept as `$value` in `Inputs::$table`,
/// at `$index` of [`FEEDS`]. Records convert either by `keep` (every record kept, keyed
/// by the value's `uuid`) or by a `convert` of [`Feed::convert`]'s own; further items of
/// the impl (an [`Feed::after`]) follow in braces.
macro_rules! feed {
    ($feed:ty: $watch:ty => $value:ty, FEEDS[$index:literal], inputs.$table:ident,
     keep: |$record:ident| $keep:expr $(, { $($more:item)* })?) => {
        feed!($feed: $watch => $value, FEEDS[$index], inputs.$table, convert: |$record| {
            let value: $value = $keep;
            (value.uuid.clone(), Some(value))
        } $(, { $($more)* })?);
    };
    ($feed:ty: $watch:ty => $value:ty, FEEDS[$index:literal], inputs.$table:ident,
     convert: |$record:ident| $convert:expr $(, { $($more:item)* })?) => {
        impl $crate::follow::Feed for $feed {
            type Watch = $watch;
            type Value = $value;
            const INDEX: usize = $index;

            fn convert(
                $record: &triton_common::follow::Record<$watch>,
            ) -> (String, Option<$value>) {
                $convert
            }

            fn table(
                inputs: &mut $crate::build::Inputs,
            ) -> &mut std::collections::BTreeMap<String, $value> {
                &mut inputs.$table
            }

            $($($more)*)?
        }
    };
}

pub mod accounts;
pub mod networks;
pub mod servers;
pub mod vms;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use triton_common::follow::{Record, Watch};
use triton_common::periodic::{Periodic, Tasks};
use triton_proto::feed::{ChangeMessage, Event, WatchEvent};

use crate::build::Inputs;

/// The four feeds, in [`Shared::ready`]'s order.
pub const FEEDS: [&str; 4] = ["vms", "accounts", "networks", "servers"];

/// Between a follower's passes (a pass lasts while its stream does).
pub const RECONNECT: Duration = Duration::from_secs(1);

/// What the followers fill and the builder reads.
#[derive(Debug, Default)]
pub struct Shared {
    inputs: Mutex<State>,
    /// Woken when a follower changed something.
    pub changed: Notify,
}

#[derive(Debug, Default)]
pub struct State {
    pub inputs: Inputs,
    /// Which feeds have given their snapshot at least once.
    pub ready: [bool; 4],
    /// Bumped on every change (the builder compares it).
    pub version: u64,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        match self.inputs.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Whether every feed has given its snapshot.
    pub fn ready(&self) -> bool {
        self.lock().ready.iter().all(|r| *r)
    }

    fn touch(&self, state: &mut State) {
        state.version += 1;
        self.changed.notify_one();
    }
}

/// Why a pass ended with a failure.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("{feed}: {status}")]
    Watch {
        feed: &'static str,
        status: tonic::Status,
    },
}

/// One owner's feed ([`Watch`] opens it) and what CNS keeps of its records.
pub trait Feed: Send + 'static {
    type Watch: Watch;
    type Value: PartialEq + Send + 'static;
    /// Its index in [`FEEDS`].
    const INDEX: usize;

    /// The record's key and what CNS keeps of it; `None`: keep nothing (as a delete).
    fn convert(record: &Record<Self::Watch>) -> (String, Option<Self::Value>);

    /// Its table.
    fn table(inputs: &mut Inputs) -> &mut BTreeMap<String, Self::Value>;

    /// After the snapshot and after each change (NAPI's pools).
    fn after(&mut self, _shared: &Shared) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// A follower's state between passes.
pub struct Follower<F: Feed> {
    feed: F,
    client: <F::Watch as Watch>::Client,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    position: u64,
}

/// What every follower shares: the tables, the shutdown and the health tasks.
pub struct Followers<'a> {
    pub shared: &'a Arc<Shared>,
    pub shutdown: &'a CancellationToken,
    pub tasks: &'a Tasks,
}

impl Followers<'_> {
    /// Runs `feed`'s follower through `client`, pass after pass, until shutdown (health:
    /// `task:<name>`).
    pub fn spawn<F: Feed>(
        &self,
        feed: F,
        client: <F::Watch as Watch>::Client,
        name: &'static str,
    ) -> tokio::task::JoinHandle<()> {
        let follower = Follower {
            feed,
            client,
            shared: self.shared.clone(),
            shutdown: self.shutdown.clone(),
            position: 0,
        };
        Periodic::new(name, RECONNECT).at_start().spawn(
            self.tasks,
            self.shutdown.clone(),
            follower,
            |f| Box::pin(f.pass()),
        )
    }
}

impl<F: Feed> Follower<F> {
    fn apply(&self, key: String, value: Option<F::Value>) {
        let mut state = self.shared.lock();
        let table = F::table(&mut state.inputs);
        let changed = match value {
            Some(v) => {
                if table.get(&key) == Some(&v) {
                    false
                } else {
                    table.insert(key, v);
                    true
                }
            }
            None => table.remove(&key).is_some(),
        };
        if changed {
            self.shared.touch(&mut state);
        }
    }

    /// One pass: the feed from the last position applied until it ends, fails or
    /// shutdown.
    pub async fn pass(&mut self) -> Result<(), FollowError> {
        let feed = FEEDS[F::INDEX];
        let mut stream = F::Watch::open(&mut self.client, self.position)
            .await
            .map_err(|status| FollowError::Watch { feed, status })?;
        let mut snapshot: Option<BTreeMap<String, F::Value>> =
            (self.position == 0).then(BTreeMap::new);
        loop {
            let message = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                m = stream.message() => m,
            };
            let Some(event) = message.map_err(|status| FollowError::Watch { feed, status })? else {
                tracing::info!(feed, position = self.position, "feed ended; resuming");
                return Ok(());
            };
            match event.into_event() {
                Some(Event::Page(records, _)) => {
                    for r in &records {
                        let (key, value) = F::convert(r);
                        match (&mut snapshot, value) {
                            (Some(s), Some(v)) => {
                                s.insert(key, v);
                            }
                            (Some(_), None) => {}
                            (None, value) => self.apply(key, value),
                        }
                    }
                }
                Some(Event::SnapshotDone(position)) => {
                    self.position = position;
                    {
                        let mut state = self.shared.lock();
                        if let Some(s) = snapshot.take() {
                            let table = F::table(&mut state.inputs);
                            if *table != s {
                                *table = s;
                            }
                            tracing::info!(
                                feed,
                                position,
                                records = table.len(),
                                "snapshot applied"
                            );
                        }
                        state.ready[F::INDEX] = true;
                        self.shared.touch(&mut state);
                    }
                    self.feed.after(&self.shared).await;
                }
                Some(Event::Change(change)) => {
                    match change.record() {
                        Some(r) => {
                            let (key, value) = F::convert(r);
                            self.apply(key, value);
                        }
                        None => self.apply(change.key().to_string(), None),
                    }
                    self.position = change.position();
                    self.feed.after(&self.shared).await;
                }
                Some(Event::Resync(position, message)) => {
                    tracing::info!(feed, position, %message, "following again from the snapshot");
                    self.position = 0;
                    return Ok(());
                }
                None => {}
            }
        }
    }
}

/// A lazily connected channel to `url` for a feed (no request timeout: the stream lasts).
pub fn feed_channel(
    url: &str,
    key: &str,
) -> Result<tonic::transport::Channel, crate::error::Error> {
    triton_common::channel::ChannelBuilder::new(url)
        .request_timeout(None)
        .lazy()
        .map_err(|e| crate::error::Error::Start(format!("{key}: {e}")))
}
