//! The sitter's side of etcd: its registration (a key under `election/` attached to a
//! lease it keeps alive), the events the state machine consumes (the state and the live
//! peers, read together and then watched from that revision so nothing is missed), and
//! compare-and-swap writes of the state with their history entries.
//!
//! A lost lease (the sitter was paused, or cut off from etcd, for longer than its TTL) is
//! a new session (R13): a new lease, a new registration, and a fresh `CoordInit`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use manatee_client::etcd::{Etcd, EventType, KeyValue, prefix_end};
use manatee_client::state::{ClusterState, HistoryEntry, Peer, ShardKeys};
use manatee_client::{Observed, error_chain};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::state_machine::Event;

/// Pause between attempts to reach etcd.
pub const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Writes a new state if the state key is still at `expected_revision` (0: absent), with
/// a history entry. `Ok(Some(rev))` when written, `Ok(None)` when someone else wrote first.
pub async fn write_state(
    etcd: &Etcd,
    keys: &ShardKeys,
    expected_revision: i64,
    state: &ClusterState,
    writer: &str,
    reason: &str,
) -> Result<Option<i64>, Error> {
    state
        .validate()
        .map_err(|reason| Error::InvalidState { reason })?;
    let history = HistoryEntry {
        time: triton_common::time::now_rfc3339(),
        writer: writer.to_string(),
        reason: reason.to_string(),
        state: state.clone(),
    };
    let history_json = serde_json::to_vec(&history).map_err(|e| Error::InvalidState {
        reason: format!("its history entry does not serialize: {e}"),
    })?;
    let puts = vec![
        (keys.state(), state.to_json()),
        (
            keys.history(state.generation, expected_revision),
            history_json,
        ),
    ];
    Ok(etcd
        .put_if_mod_revision(&keys.state(), expected_revision, puts)
        .await?)
}

/// What the shard's prefix holds at one revision.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: Observed,
    pub active: Vec<Peer>,
    pub revision: i64,
}

/// Reads the state and the registrations together.
pub async fn snapshot(etcd: &Etcd, keys: &ShardKeys) -> Result<Snapshot, Error> {
    let (kvs, revision) = etcd.get_prefix(keys.prefix()).await?;
    let state_key = keys.state();
    let mut state = Observed::Absent;
    let mut active = BTreeMap::new();
    for kv in &kvs {
        let key = String::from_utf8_lossy(&kv.key);
        if key == state_key {
            state = Observed::from_kv(Some(kv));
        } else if let Some(peer) = registration(keys, kv) {
            active.insert(peer.id.clone(), peer);
        }
    }
    Ok(Snapshot {
        state,
        active: active.into_values().collect(),
        revision,
    })
}

/// The peer a registration key announces, if `kv` is one (and is readable).
fn registration(keys: &ShardKeys, kv: &KeyValue) -> Option<Peer> {
    let key = String::from_utf8_lossy(&kv.key);
    let id = key.strip_prefix(&keys.election_prefix())?;
    match serde_json::from_slice::<Peer>(&kv.value) {
        Ok(p) if p.id == id => Some(p),
        _ => {
            tracing::warn!(key = %key, "ignoring an unreadable peer registration");
            None
        }
    }
}

/// Runs the sitter's etcd session until `cancel`: registers `me`, feeds `events`, and
/// starts a new session whenever the lease is lost. Revokes the lease on the way out,
/// so a stopped sitter's peers notice at once.
pub async fn run_session(
    etcd: Etcd,
    keys: ShardKeys,
    me: Peer,
    ttl: Duration,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
) {
    let mut warned = false;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let lease = match register(&etcd, &keys, &me, ttl).await {
            Ok(lease) => {
                if warned {
                    tracing::info!(etcd = etcd.endpoints(), "etcd reachable again");
                    warned = false;
                }
                lease
            }
            Err(e) => {
                // Logged once per outage at ERROR (an operator must act), then quietly.
                if !warned {
                    tracing::error!(error = %error_chain(&e), "cannot register with etcd; retrying every second");
                    warned = true;
                } else {
                    tracing::debug!(error = %error_chain(&e), "cannot register with etcd");
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_PAUSE) => continue,
                }
            }
        };
        tracing::info!(
            lease = lease,
            ttl_s = ttl.as_secs_f64(),
            "registered in etcd"
        );
        let end = tokio::select! {
            _ = cancel.cancelled() => None,
            r = session(&etcd, &keys, lease, ttl, &events) => Some(r),
        };
        match end {
            None => {
                // Shutting down: drop the registration now rather than at lease expiry.
                let _ = etcd.lease_revoke(lease).await;
                return;
            }
            Some(e) => {
                tracing::warn!(error = %error_chain(&e), "etcd session ended; starting a new one");
                let _ = etcd.lease_revoke(lease).await;
            }
        }
    }
}

async fn register(etcd: &Etcd, keys: &ShardKeys, me: &Peer, ttl: Duration) -> Result<i64, Error> {
    let (lease, _) = etcd.lease_grant(ttl.as_secs().max(1) as i64).await?;
    // A peer is strings and a number: it always serializes.
    #[allow(clippy::expect_used)]
    let value = serde_json::to_vec(me).expect("a peer always serializes");
    etcd.put(&keys.election(&me.id), value, lease).await?;
    Ok(lease)
}

/// One session: the keep-alive loop and the watch, until either fails.
async fn session(
    etcd: &Etcd,
    keys: &ShardKeys,
    lease: i64,
    ttl: Duration,
    events: &mpsc::Sender<Event>,
) -> Error {
    tokio::select! {
        e = keep_alive(etcd, lease, ttl) => e,
        e = follow(etcd, keys, events) => e,
    }
}

/// Refreshes the lease every third of its TTL; returns when it is lost.
async fn keep_alive(etcd: &Etcd, lease: i64, ttl: Duration) -> Error {
    let interval = ttl / 3;
    let mut last_ok = Instant::now();
    let mut stream = None;
    loop {
        tokio::time::sleep(interval).await;
        if stream.is_none() {
            match etcd.lease_keep_alive(lease).await {
                Ok(s) => stream = Some(s),
                Err(e) => tracing::warn!(error = %error_chain(&e), "lease keep-alive"),
            }
        }
        if let Some(s) = stream.as_mut() {
            match s.keep_alive().await {
                Ok(remaining) if remaining > 0 => last_ok = Instant::now(),
                Ok(_) => return Error::LeaseExpired,
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "lease keep-alive");
                    stream = None;
                }
            }
        }
        // Past the TTL without a refresh, etcd has dropped the lease (or will before
        // we can refresh it): our peers see us gone, so behave as a new session.
        if last_ok.elapsed() > ttl {
            return Error::LeaseExpired;
        }
    }
}

/// Sends `CoordInit`, then `StateChanged`/`ActiveChanged` for every change.
async fn follow(etcd: &Etcd, keys: &ShardKeys, events: &mpsc::Sender<Event>) -> Error {
    let snap = match snapshot(etcd, keys).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    let mut active: BTreeMap<String, Peer> = snap
        .active
        .iter()
        .map(|p| (p.id.clone(), p.clone()))
        .collect();
    if events
        .send(Event::CoordInit {
            state: snap.state,
            active: snap.active,
        })
        .await
        .is_err()
    {
        return Error::Stopped;
    }
    let prefix = keys.prefix().as_bytes().to_vec();
    let mut stream = match etcd
        .watch(&prefix, prefix_end(&prefix), snap.revision + 1)
        .await
    {
        Ok(s) => s,
        Err(e) => return e.into(),
    };
    let state_key = keys.state();
    loop {
        let resp = match stream.next().await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Error::Etcd(manatee_client::Error::WatchCanceled {
                    reason: "etcd closed the watch".into(),
                });
            }
            Err(e) => return e.into(),
        };
        if resp.canceled || resp.compact_revision != 0 {
            return Error::Etcd(manatee_client::Error::WatchCanceled {
                reason: resp.cancel_reason,
            });
        }
        let mut active_changed = false;
        for ev in resp.events {
            let Some(kv) = ev.kv.as_ref() else { continue };
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            let deleted = ev.r#type() == EventType::Delete;
            if key == state_key {
                let observed = if deleted {
                    Observed::Absent
                } else {
                    Observed::from_kv(Some(kv))
                };
                if let Observed::Corrupt { reason, .. } = &observed {
                    tracing::error!(%reason, "the cluster state in etcd is not valid; ignoring it until an operator fixes it");
                }
                if events.send(Event::StateChanged(observed)).await.is_err() {
                    return Error::Stopped;
                }
            } else if let Some(id) = key.strip_prefix(&keys.election_prefix()) {
                if deleted {
                    active_changed |= active.remove(id).is_some();
                } else if let Some(peer) = registration(keys, kv) {
                    active_changed |= active.insert(peer.id.clone(), peer.clone()) != Some(peer);
                }
            }
        }
        if active_changed
            && events
                .send(Event::ActiveChanged(active.values().cloned().collect()))
                .await
                .is_err()
        {
            return Error::Stopped;
        }
    }
}
