//! Following a shard's cluster state: a background task that reads the state key, then
//! watches it from the revision it read (so no change is missed), and publishes what it
//! sees on `tokio::sync::watch` channels. On any etcd error it starts over after a short
//! pause, keeping the last value it published: a consumer keeps talking to the primary it
//! knows while etcd is unreachable, which is right because a primary that loses its own
//! lease is deposed and stops, and the consumer then gets connection errors.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::etcd::{Etcd, EventType, KeyValue};
use crate::state::{ClusterState, ShardKeys};

/// Pause before re-reading after an etcd error: short, because a consumer waits on it
/// after a takeover, but long enough not to spin against a dead etcd.
pub const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// What the state key holds, as last seen.
// Only a handful exist at a time; boxing the state would burden every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// Not read yet.
    Unknown,
    /// The shard has no state yet (it was never set up).
    Absent,
    /// The key holds something that is not a valid state; nothing acts on it.
    Corrupt {
        /// The etcd modification revision of the bad value.
        revision: i64,
        /// Why it is not a state.
        reason: String,
    },
    /// A valid state at etcd modification revision `revision`.
    State {
        /// The state.
        state: ClusterState,
        /// Its etcd modification revision.
        revision: i64,
    },
}

impl Observed {
    /// The state, when there is a valid one.
    pub fn state(&self) -> Option<&ClusterState> {
        match self {
            Observed::State { state, .. } => Some(state),
            _ => None,
        }
    }

    /// Interprets a stored key (None: absent).
    pub fn from_kv(kv: Option<&KeyValue>) -> Observed {
        match kv {
            None => Observed::Absent,
            Some(kv) => match ClusterState::parse(&kv.value) {
                Ok(state) => Observed::State {
                    state,
                    revision: kv.mod_revision,
                },
                Err(reason) => Observed::Corrupt {
                    revision: kv.mod_revision,
                    reason,
                },
            },
        }
    }
}

/// Reads the state once.
pub async fn read_state(etcd: &Etcd, keys: &ShardKeys) -> Result<Observed, Error> {
    let (kv, _) = etcd.get(&keys.state()).await?;
    Ok(Observed::from_kv(kv.as_ref()))
}

/// Follows the state of the shard at `keys` until `cancel`; the receiver always holds the
/// latest [`Observed`].
pub fn watch_state(
    etcd: Etcd,
    keys: ShardKeys,
    cancel: CancellationToken,
) -> (watch::Receiver<Observed>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(Observed::Unknown);
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = follow(&etcd, &keys, &tx) => {
                    if let Err(e) = r {
                        tracing::warn!(error = %crate::error_chain(&e), "following the manatee cluster state; retrying");
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(RETRY_PAUSE) => {}
            }
        }
    });
    (rx, task)
}

async fn follow(etcd: &Etcd, keys: &ShardKeys, tx: &watch::Sender<Observed>) -> Result<(), Error> {
    let key = keys.state();
    let (kv, rev) = etcd.get(&key).await?;
    publish(tx, Observed::from_kv(kv.as_ref()));
    let mut stream = etcd.watch(key.as_bytes(), Vec::new(), rev + 1).await?;
    while let Some(resp) = stream.next().await? {
        if resp.canceled || resp.compact_revision != 0 {
            return Err(Error::WatchCanceled {
                reason: resp.cancel_reason,
            });
        }
        for ev in resp.events {
            let observed = match ev.r#type() {
                EventType::Delete => Observed::Absent,
                EventType::Put => Observed::from_kv(ev.kv.as_ref()),
            };
            publish(tx, observed);
        }
    }
    Err(Error::WatchCanceled {
        reason: "etcd closed the watch".into(),
    })
}

fn publish(tx: &watch::Sender<Observed>, observed: Observed) {
    if let Observed::Corrupt { reason, revision } = &observed {
        tracing::error!(%reason, revision, "the manatee cluster state in etcd is not valid; nothing acts on it until an operator fixes it");
    }
    tx.send_if_modified(|cur| {
        if *cur == observed {
            false
        } else {
            *cur = observed;
            true
        }
    });
}

/// `url` with its database replaced by `database`; Triton's `tcp://` scheme becomes
/// `postgresql://`.
pub fn with_database(url: &str, database: &str) -> String {
    let url = match url.strip_prefix("tcp://") {
        Some(rest) => format!("postgresql://{rest}"),
        None => url.to_string(),
    };
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgresql", &url));
    let (authority, query) = match rest.split_once('/') {
        Some((authority, path)) => (
            authority,
            path.split_once('?')
                .map(|(_, q)| format!("?{q}"))
                .unwrap_or_default(),
        ),
        None => (rest, String::new()),
    };
    format!("{scheme}://{authority}/{database}{query}")
}

/// The primary's PostgreSQL URL in `observed` (with `database`, when given): `None` while
/// there is no valid state.
pub fn primary_url(observed: &Observed, database: Option<&str>) -> Option<String> {
    let url = &observed.state()?.primary.pg_url;
    Some(match database {
        Some(db) => with_database(url, db),
        None => match url.strip_prefix("tcp://") {
            Some(rest) => format!("postgresql://{rest}"),
            None => url.clone(),
        },
    })
}

/// Follows the shard and publishes the primary's PostgreSQL URL (with its database set to
/// `database` when given): what Moray's connection pool follows. `None` while the shard
/// has no valid state; the last known URL is kept while etcd is unreachable.
pub fn watch_primary(
    etcd: Etcd,
    keys: ShardKeys,
    database: Option<String>,
    cancel: CancellationToken,
) -> (watch::Receiver<Option<String>>, JoinHandle<()>) {
    let (mut states, follow_task) = watch_state(etcd, keys, cancel.clone());
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(async move {
        loop {
            let url = primary_url(&states.borrow_and_update(), database.as_deref());
            tx.send_if_modified(|cur| {
                if *cur == url {
                    false
                } else {
                    tracing::info!(primary = ?url, "manatee primary");
                    *cur = url;
                    true
                }
            });
            tokio::select! {
                _ = cancel.cancelled() => break,
                changed = states.changed() => if changed.is_err() { break },
            }
        }
        let _ = follow_task.await;
    });
    (rx, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_replaced() {
        assert_eq!(
            with_database("tcp://postgres@10.0.0.2:5432/postgres", "moray"),
            "postgresql://postgres@10.0.0.2:5432/moray"
        );
        assert_eq!(
            with_database(
                "postgresql://postgres@h:1/postgres?sslmode=disable",
                "moray"
            ),
            "postgresql://postgres@h:1/moray?sslmode=disable"
        );
        assert_eq!(
            with_database("postgresql://postgres@h:1", "moray"),
            "postgresql://postgres@h:1/moray"
        );
    }
}
