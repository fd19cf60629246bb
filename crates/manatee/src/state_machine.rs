//! The decision logic of one peer, free of I/O: Triton's `manatee-state-machine`
//! (`lib/manatee-peer.js`) as a pure machine. The sitter feeds it [`Event`]s (what etcd and
//! PostgreSQL said) and carries out the [`Action`]s it returns (write the cluster state,
//! reconfigure PostgreSQL, read the WAL position, retry later). Tests drive the same
//! machine against a simulated etcd and PostgreSQL (`tests/state_machine_sim.rs`).
//!
//! The rules are numbered as in `docs/manatee.md` (R0..R13, after the reference):
//! - only the primary and the sync of generation G may declare G+1, each by a
//!   compare-and-swap on the state's revision, so one of them wins;
//! - the sync takes over only when the primary is gone (or an operator asked for it), only
//!   when its WAL position is at least `initWal`, and only when an async is present to
//!   become the new sync: a new primary always has a sync;
//! - a primary that sees a new generation with another primary is deposed and stops
//!   PostgreSQL; a deposed peer takes no role until an operator rebuilds it.

use std::time::{Duration, SystemTime};

use manatee_client::Observed;
use manatee_client::state::{ClusterState, Freeze, Lsn, Peer, PromoteRole};

/// Pause before a failed state write, takeover or PostgreSQL reconfiguration is retried
/// (the reference's 1 s).
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Who this peer is.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub me: Peer,
    /// Configured for one-node-write mode (bootstrap and development only).
    pub one_node_write_mode: bool,
}

/// The role the machine has taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not evaluated yet.
    Unknown,
    /// Present but not placed in the chain.
    Unassigned,
    Primary,
    Sync,
    Async(usize),
    Deposed,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Unknown => f.write_str("unknown"),
            Role::Unassigned => f.write_str("unassigned"),
            Role::Primary => f.write_str("primary"),
            Role::Sync => f.write_str("sync"),
            Role::Async(_) => f.write_str("async"),
            Role::Deposed => f.write_str("deposed"),
        }
    }
}

/// What PostgreSQL should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgRole {
    Primary,
    Sync,
    Async,
    /// Stopped.
    None,
}

/// The desired PostgreSQL configuration of this peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgConfig {
    pub role: PgRole,
    /// Whom a standby replicates from.
    pub upstream: Option<Peer>,
    /// A primary's synchronous standby; `None` for a primary only in one-node-write mode,
    /// where it is writable alone.
    pub sync: Option<Peer>,
    /// For a primary and a sync: the generation they serve in. The sync connects with
    /// the replication name [`sync_name`]`(sync, generation)` and the primary waits for
    /// exactly that name, so a deposed primary that still runs can never have a commit
    /// acknowledged by a standby configured for a later generation. 0 otherwise.
    pub generation: u64,
}

/// The `application_name` a sync uses, and its primary lists in
/// `synchronous_standby_names`: the peer id and the generation.
pub fn sync_name(peer_id: &str, generation: u64) -> String {
    format!("{peer_id}/g{generation}")
}

/// The `application_name` of an async: never a sync's name.
pub fn async_name(peer_id: &str) -> String {
    format!("{peer_id}/async")
}

impl PgConfig {
    pub fn stopped() -> PgConfig {
        PgConfig {
            role: PgRole::None,
            upstream: None,
            sync: None,
            generation: 0,
        }
    }
}

/// What happened.
#[derive(Debug, Clone)]
pub enum Event {
    /// A (new) etcd session: the state and the live peers, read together. Also sent after
    /// a session expired and was re-established (R13).
    CoordInit { state: Observed, active: Vec<Peer> },
    /// The state key changed.
    StateChanged(Observed),
    /// The set of live peers changed.
    ActiveChanged(Vec<Peer>),
    /// PostgreSQL is ready to be managed; `setup`: it has a data directory.
    PgInit { setup: bool },
    /// Answer to [`Action::FenceWal`]: the WAL position, `None` when PostgreSQL is not
    /// online.
    WalPosition(Option<Lsn>),
    /// Answer to [`Action::WriteState`]: the state's new modification revision when the
    /// compare-and-swap succeeded, `None` when it did not (or the write failed).
    WriteDone(Option<i64>),
    /// Answer to [`Action::ApplyPg`].
    PgApplied { ok: bool },
    /// A [`Action::RetryAfter`] delay has passed.
    Timer,
    /// PostgreSQL, a standby, is streaming from `upstream` (peer id) and has flushed WAL
    /// up to `flushed`. Reported periodically by the sitter. A sync may take over only
    /// after it has seen itself streaming from the primary of the current generation at
    /// or past `initWal`: WAL received from anyone else (a deposed primary that a stale
    /// standby still followed) does not count, whatever its position.
    Streaming { upstream: String, flushed: Lsn },
}

/// What to do.
#[allow(clippy::large_enum_variant)] // a few per event, consumed at once
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Fence PostgreSQL, then answer [`Event::WalPosition`] with its WAL position: a
    /// standby stops receiving WAL from its upstream, a primary stops acknowledging
    /// commits (read-only, synchronous standby cleared). Done before declaring a new
    /// generation so that `initWal` is final: no commit can be acknowledged past it by
    /// a peer that is about to leave the chain. The next [`Action::ApplyPg`] undoes it.
    FenceWal,
    /// Write `state` if the state key's modification revision is still
    /// `expected_revision` (0: the key must not exist), with a history entry; answer
    /// [`Event::WriteDone`].
    WriteState {
        expected_revision: i64,
        state: ClusterState,
        reason: String,
    },
    /// Bring PostgreSQL to `config`; answer [`Event::PgApplied`].
    ApplyPg(PgConfig),
    /// Send [`Event::Timer`] after the delay.
    RetryAfter(Duration),
    /// The peer cannot go on (a configuration that contradicts the state); the sitter
    /// exits with this message.
    Fatal(String),
}

/// A new generation waiting for the WAL position to fill in `initWal`.
#[derive(Debug, Clone)]
struct PendingGeneration {
    state: ClusterState,
    expected_revision: i64,
    min_wal: Option<Lsn>,
    reason: String,
}

/// The generation after `z`: `primary` takes writes with `sync` and `asyncs` behind
/// it and `deposed` waiting for a rebuild; no freeze, no promotion pending, not in
/// one-node-write mode.
fn next_generation(
    z: &ClusterState,
    primary: Peer,
    sync: Peer,
    asyncs: Vec<Peer>,
    deposed: Vec<Peer>,
) -> ClusterState {
    ClusterState {
        deposed,
        ..ClusterState::new(z.generation + 1, primary, sync, asyncs)
    }
}

/// Why a takeover was not attempted; logged by the sitter, visible in its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoAsyncPresent,
    ClusterFrozen,
    PostgresOffline,
    PeerNotCaughtUp { wal: Lsn, init_wal: Lsn },
    NotStreamedThisGeneration,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoAsyncPresent => f.write_str("would take over but no async peer is present"),
            Refusal::ClusterFrozen => f.write_str("ClusterFrozenError: the cluster is frozen"),
            Refusal::PostgresOffline => f.write_str("PostgresOfflineError: PostgreSQL is not online"),
            Refusal::NotStreamedThisGeneration => f.write_str(
                "PeerNotCaughtUpError: not seen streaming from this generation's primary up to initWal",
            ),
            Refusal::PeerNotCaughtUp { wal, init_wal } => write!(
                f,
                "PeerNotCaughtUpError: WAL position {wal} is behind initWal {init_wal}"
            ),
        }
    }
}

/// One peer's state machine.
#[derive(Debug)]
pub struct PeerMachine {
    cfg: PeerConfig,
    coord_ready: bool,
    pg_ready: bool,
    pg_setup: bool,
    zk: Observed,
    active: Vec<Peer>,
    role: Role,
    last_gen: Option<u64>,
    /// A state write (or the WAL read before one) is in flight (R1).
    updating: bool,
    pending: Option<PendingGeneration>,
    /// The state of the write in flight, taken as current once the write succeeds.
    written: Option<ClusterState>,
    /// PostgreSQL config being applied, and the last one applied.
    applying: Option<(PgConfig, u64)>,
    applied: Option<PgConfig>,
    /// Counts fences: an apply issued before the latest fence does not count as applied.
    fences: u64,
    /// Waiting for [`Event::Timer`] before retrying a failed write or apply.
    write_backoff: bool,
    pg_backoff: bool,
    timer_armed: bool,
    fatal: bool,
    /// The generation in which this peer, as sync, was seen streaming from that
    /// generation's primary at or past its `initWal` (see [`Event::Streaming`]).
    caught_up_gen: Option<u64>,
    /// The last reason a takeover was refused, for the status endpoint.
    pub last_refusal: Option<Refusal>,
}

impl PeerMachine {
    pub fn new(cfg: PeerConfig) -> PeerMachine {
        PeerMachine {
            cfg,
            coord_ready: false,
            pg_ready: false,
            pg_setup: false,
            zk: Observed::Unknown,
            active: Vec::new(),
            role: Role::Unknown,
            last_gen: None,
            updating: false,
            pending: None,
            written: None,
            applying: None,
            applied: None,
            fences: 0,
            write_backoff: false,
            pg_backoff: false,
            timer_armed: false,
            fatal: false,
            caught_up_gen: None,
            last_refusal: None,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn me(&self) -> &Peer {
        &self.cfg.me
    }

    /// The state last seen (or written) by this peer.
    pub fn observed(&self) -> &Observed {
        &self.zk
    }

    pub fn active(&self) -> &[Peer] {
        &self.active
    }

    /// The PostgreSQL configuration last applied successfully.
    pub fn applied(&self) -> Option<&PgConfig> {
        self.applied.as_ref()
    }

    /// True while nothing is in flight: no write, no WAL read, no reconfiguration.
    pub fn is_quiescent(&self) -> bool {
        !self.updating && self.applying.is_none()
    }

    /// Handles one event at time `now` (used only to check a promotion's expiry).
    pub fn handle(&mut self, event: Event, now: SystemTime) -> Vec<Action> {
        let mut out = Vec::new();
        if self.fatal {
            return out;
        }
        match event {
            Event::CoordInit { state, active } => {
                self.coord_ready = true;
                self.zk = state;
                self.set_active(active);
            }
            Event::StateChanged(state) => {
                // Watch events may trail our own successful write: never go back.
                if !older(&state, &self.zk) {
                    self.zk = state;
                }
            }
            Event::ActiveChanged(active) => self.set_active(active),
            Event::PgInit { setup } => {
                self.pg_ready = true;
                self.pg_setup = setup;
            }
            Event::WalPosition(wal) => {
                self.finish_generation(wal, &mut out);
            }
            Event::WriteDone(result) => {
                self.updating = false;
                match result {
                    Some(revision) => {
                        if let Some(state) = self.written.take() {
                            let candidate = Observed::State { state, revision };
                            if !older(&candidate, &self.zk) {
                                self.zk = candidate;
                            }
                        }
                    }
                    None => {
                        self.written = None;
                        self.write_backoff = true;
                        self.arm_timer(&mut out);
                    }
                }
            }
            Event::PgApplied { ok } => {
                let applying = self.applying.take();
                if ok {
                    if let Some((cfg, fences)) = applying {
                        if cfg.role != PgRole::None {
                            self.pg_setup = true;
                        }
                        if fences == self.fences {
                            self.applied = Some(cfg);
                        }
                    }
                } else {
                    self.pg_backoff = true;
                    self.arm_timer(&mut out);
                }
            }
            Event::Streaming { upstream, flushed } => {
                if let Some(z) = self.zk.state()
                    && self.role == Role::Sync
                    && z.sync.as_ref().is_some_and(|s| s.id == self.cfg.me.id)
                    && z.primary.id == upstream
                    && flushed >= z.init_wal
                {
                    self.caught_up_gen = Some(z.generation);
                }
            }
            Event::Timer => {
                self.timer_armed = false;
                self.write_backoff = false;
                self.pg_backoff = false;
            }
        }
        if self.coord_ready && self.pg_ready {
            self.evaluate(now, &mut out);
            self.apply_pg(&mut out);
        }
        out
    }
}

impl PeerMachine {
    fn set_active(&mut self, mut active: Vec<Peer>) {
        active.sort_by(|a, b| a.id.cmp(&b.id));
        active.dedup_by(|a, b| a.id == b.id);
        self.active = active;
    }

    fn present(&self, p: &Peer) -> bool {
        self.active.iter().any(|a| a.id == p.id)
    }

    /// The asyncs of `z` that are present, in their order.
    fn present_asyncs(&self, z: &ClusterState) -> Vec<Peer> {
        z.asyncs
            .iter()
            .filter(|p| self.present(p))
            .cloned()
            .collect()
    }

    fn arm_timer(&mut self, out: &mut Vec<Action>) {
        if !self.timer_armed {
            self.timer_armed = true;
            out.push(Action::RetryAfter(RETRY_DELAY));
        }
    }

    fn write(
        &mut self,
        expected_revision: i64,
        state: ClusterState,
        reason: String,
        out: &mut Vec<Action>,
    ) {
        debug_assert!(state.validate().is_ok(), "{state:?}");
        self.updating = true;
        self.written = Some(state.clone());
        out.push(Action::WriteState {
            expected_revision,
            state,
            reason,
        });
    }

    /// Starts declaring a new generation: first fence PostgreSQL and read its WAL
    /// position (R10e).
    fn declare(
        &mut self,
        state: ClusterState,
        expected_revision: i64,
        min_wal: Option<Lsn>,
        reason: String,
        out: &mut Vec<Action>,
    ) {
        self.updating = true;
        self.pending = Some(PendingGeneration {
            state,
            expected_revision,
            min_wal,
            reason,
        });
        // Whatever happens next, PostgreSQL must be configured again.
        self.applied = None;
        self.fences += 1;
        out.push(Action::FenceWal);
    }

    fn finish_generation(&mut self, wal: Option<Lsn>, out: &mut Vec<Action>) {
        let Some(mut pending) = self.pending.take() else {
            return;
        };
        self.updating = false;
        let refusal = match (wal, pending.min_wal) {
            (None, _) => Some(Refusal::PostgresOffline),
            (Some(wal), Some(init_wal)) if wal < init_wal => {
                Some(Refusal::PeerNotCaughtUp { wal, init_wal })
            }
            _ => None,
        };
        if let Some(r) = refusal {
            self.last_refusal = Some(r);
            self.write_backoff = true;
            self.arm_timer(out);
            return;
        }
        pending.state.init_wal = wal.unwrap_or_default();
        self.last_refusal = None;
        self.write(
            pending.expected_revision,
            pending.state,
            pending.reason,
            out,
        );
    }

    fn evaluate(&mut self, now: SystemTime, out: &mut Vec<Action>) {
        // R1: one write at a time; re-evaluated when it is answered.
        if self.updating {
            return;
        }
        let (z, revision) = match &self.zk {
            Observed::Unknown => return,
            Observed::Corrupt { .. } => return, // nothing acts on a corrupt state
            Observed::Absent => {
                self.no_state(out);
                return;
            }
            Observed::State { state, revision } => (state.clone(), *revision),
        };
        let me = self.cfg.me.id.clone();

        // R3
        if self.cfg.one_node_write_mode && !z.one_node_write_mode {
            self.fatal = true;
            out.push(Action::Fatal(
                "configured for one-node-write mode, but the cluster state is in normal mode"
                    .into(),
            ));
            return;
        }

        // R0: a deposed peer waits for an operator; it leaves the role only when it has
        // been removed from `deposed` (manatee-adm rebuild or reap).
        if self.role == Role::Deposed {
            let still = z.deposed.iter().any(|p| p.id == me) || z.primary.id == me;
            if still {
                return;
            }
            // Removed from `deposed` by an operator: take whatever the state gives us
            // (a primary may already have appended us). PostgreSQL rebuilds its data
            // before serving as a standby, as the data of a former primary may diverge.
            self.role = derive_role(&z, &me, self.cfg.one_node_write_mode);
            self.last_gen = Some(z.generation);
        }

        // R5: a new generation.
        if self.last_gen != Some(z.generation) {
            self.last_gen = Some(z.generation);
            if self.role == Role::Primary && z.primary.id != me {
                self.role = Role::Deposed;
                return;
            }
            self.role = derive_role(&z, &me, self.cfg.one_node_write_mode);
        }

        let backoff = self.write_backoff;

        // R4: a planned promotion.
        if let Some(promote) = &z.promote {
            match valid_promote(&z, now) {
                Ok(()) => {
                    let applies = match promote.role {
                        PromoteRole::Sync => self.role == Role::Sync,
                        PromoteRole::Async => self.role == Role::Primary,
                    };
                    if applies {
                        if !backoff {
                            self.promote(&z, revision, out);
                        }
                        return;
                    }
                }
                Err(why) => {
                    if self.role == Role::Primary && !backoff {
                        let mut next = z.clone();
                        next.promote = None;
                        self.write(
                            revision,
                            next,
                            format!("removing invalid promote request: {why}"),
                            out,
                        );
                        return;
                    }
                }
            }
        }

        match self.role {
            Role::Unknown => {}
            Role::Deposed => {}
            Role::Unassigned | Role::Async(_) => {
                // R6, R7: follow our place in the list (or leave it). Deriving the role
                // afresh also covers a peer that a state names sync while it had not
                // taken a role yet in this generation.
                self.role = derive_role(&z, &me, self.cfg.one_node_write_mode);
            }
            Role::Sync => {
                // R8
                if !self.present(&z.primary) && !backoff {
                    let plan = self.sync_takeover_plan(&z);
                    match plan {
                        Err(r) => self.last_refusal = Some(r),
                        Ok((sync, asyncs)) => {
                            let mut deposed = z.deposed.clone();
                            deposed.push(z.primary.clone());
                            let next =
                                next_generation(&z, self.cfg.me.clone(), sync, asyncs, deposed);
                            let reason =
                                format!("sync took over from primary {} (gone)", z.primary.id);
                            self.declare(next, revision, Some(z.init_wal), reason, out);
                        }
                    }
                }
            }
            Role::Primary => {
                if !backoff {
                    self.primary_duties(&z, revision, out);
                }
            }
        }
    }

    /// R2: no state yet.
    fn no_state(&mut self, out: &mut Vec<Action>) {
        if !matches!(self.role, Role::Unknown | Role::Unassigned) {
            // The state vanished under a running shard (an operator deleted the key):
            // keep every role as it is rather than stop PostgreSQL everywhere.
            return;
        }
        if self.write_backoff {
            return;
        }
        let first = self.active.first().is_some_and(|p| p.id == self.cfg.me.id);
        if !self.pg_setup && first && (self.active.len() > 1 || self.cfg.one_node_write_mode) {
            // R11: initial setup.
            let state = if self.cfg.one_node_write_mode {
                ClusterState {
                    generation: 1,
                    primary: self.cfg.me.clone(),
                    sync: None,
                    asyncs: Vec::new(),
                    deposed: Vec::new(),
                    init_wal: Lsn(0),
                    freeze: Some(Freeze {
                        date: Some(triton_common::time::now_rfc3339()),
                        reason: Some("manatee setup: one node write mode".into()),
                    }),
                    one_node_write_mode: true,
                    promote: None,
                }
            } else {
                ClusterState {
                    generation: 1,
                    primary: self.cfg.me.clone(),
                    sync: Some(self.active[1].clone()),
                    asyncs: self.active[2..].to_vec(),
                    deposed: Vec::new(),
                    init_wal: Lsn(0),
                    freeze: None,
                    one_node_write_mode: false,
                    promote: None,
                }
            };
            self.write(0, state, "initial setup".into(), out);
            return;
        }
        if !self.pg_setup || !first {
            self.role = Role::Unassigned;
        }
    }

    /// [`Self::takeover_plan`] for the sync replacing the primary: also requires that it
    /// streamed from this generation's primary up to `initWal` (R10e, made sound against
    /// WAL from a deposed primary).
    fn sync_takeover_plan(&self, z: &ClusterState) -> Result<(Peer, Vec<Peer>), Refusal> {
        let plan = self.takeover_plan(z)?;
        if self.caught_up_gen != Some(z.generation) {
            return Err(Refusal::NotStreamedThisGeneration);
        }
        Ok(plan)
    }

    /// R10a/b/d: the new sync (the first present async) and the new asyncs (the other
    /// present ones) of a new generation.
    fn takeover_plan(&self, z: &ClusterState) -> Result<(Peer, Vec<Peer>), Refusal> {
        let mut present = self.present_asyncs(z);
        if present.is_empty() {
            return Err(Refusal::NoAsyncPresent);
        }
        if z.freeze.is_some() {
            return Err(Refusal::ClusterFrozen);
        }
        let sync = present.remove(0);
        Ok((sync, present))
    }

    /// R9: the primary's duties.
    fn primary_duties(&mut self, z: &ClusterState, revision: i64, out: &mut Vec<Action>) {
        let me = &self.cfg.me;
        // R9b: a one-node-write primary ignores other peers.
        if self.cfg.one_node_write_mode {
            return;
        }
        // R9a: leave one-node-write mode once the operator unfroze the shard.
        if z.one_node_write_mode {
            if z.freeze.is_some() {
                self.last_refusal = Some(Refusal::ClusterFrozen);
                return;
            }
            let others: Vec<Peer> = self
                .active
                .iter()
                .filter(|p| p.id != me.id && !z.deposed.iter().any(|d| d.id == p.id))
                .cloned()
                .collect();
            let Some((sync, asyncs)) = others.split_first() else {
                return;
            };
            let next = next_generation(
                z,
                me.clone(),
                sync.clone(),
                asyncs.to_vec(),
                z.deposed.clone(),
            );
            self.declare(
                next,
                revision,
                None,
                "leaving one-node-write mode".into(),
                out,
            );
            return;
        }
        // R9c: the sync is gone: pick a new one in a new generation.
        if let Some(sync) = &z.sync
            && !self.present(sync)
        {
            match self.takeover_plan(z) {
                Ok((new_sync, asyncs)) => {
                    let next = next_generation(z, me.clone(), new_sync, asyncs, z.deposed.clone());
                    let reason = format!("primary replaced sync {} (gone)", sync.id);
                    self.declare(next, revision, None, reason, out);
                    return;
                }
                Err(r) => {
                    // Fall through to async maintenance (R9c).
                    self.last_refusal = Some(r);
                }
            }
        }
        // R9d: async maintenance in the same generation.
        let mut asyncs = self.present_asyncs(z);
        for p in &self.active {
            let known = p.id == z.primary.id
                || z.sync.as_ref().is_some_and(|s| s.id == p.id)
                || asyncs.iter().any(|a| a.id == p.id)
                || z.deposed.iter().any(|d| d.id == p.id);
            if !known {
                asyncs.push(p.clone());
            }
        }
        let same = asyncs.len() == z.asyncs.len()
            && asyncs.iter().zip(&z.asyncs).all(|(a, b)| a.id == b.id);
        if !same {
            let mut next = z.clone();
            next.asyncs = asyncs;
            self.write(revision, next, "primary updated the async list".into(), out);
        }
    }

    /// B8: carry out a valid promotion that applies to us.
    fn promote(&mut self, z: &ClusterState, revision: i64, out: &mut Vec<Action>) {
        let Some(promote) = z.promote.clone() else {
            return;
        };
        let me = self.cfg.me.clone();
        match (promote.role, promote.async_index.unwrap_or(0)) {
            (PromoteRole::Sync, _) => {
                // The sync takes over at once; the primary is deposed.
                match self.sync_takeover_plan(z) {
                    Err(r) => self.last_refusal = Some(r),
                    Ok((sync, asyncs)) => {
                        let mut deposed = z.deposed.clone();
                        deposed.push(z.primary.clone());
                        let next = next_generation(z, me, sync, asyncs, deposed);
                        self.declare(
                            next,
                            revision,
                            Some(z.init_wal),
                            "operator promoted the sync".into(),
                            out,
                        );
                    }
                }
            }
            (PromoteRole::Async, 0) => {
                if z.freeze.is_some() {
                    self.last_refusal = Some(Refusal::ClusterFrozen);
                    return;
                }
                let new_sync = z.asyncs[0].clone();
                let mut asyncs: Vec<Peer> = z.sync.iter().cloned().collect();
                asyncs.extend(z.asyncs[1..].iter().cloned());
                let next = next_generation(z, me, new_sync, asyncs, z.deposed.clone());
                self.declare(
                    next,
                    revision,
                    None,
                    "operator promoted async 0 to sync".into(),
                    out,
                );
            }
            (PromoteRole::Async, i) => {
                let mut next = z.clone();
                next.asyncs.swap(i, i - 1);
                next.promote = None;
                self.write(revision, next, format!("operator moved async {i} up"), out);
            }
        }
    }

    fn desired_pg(&self) -> Option<PgConfig> {
        let z = self.zk.state();
        Some(match self.role {
            Role::Unknown => return None,
            Role::Unassigned | Role::Deposed => PgConfig::stopped(),
            Role::Primary => PgConfig {
                role: PgRole::Primary,
                upstream: None,
                sync: z?.sync.clone(),
                generation: z?.generation,
            },
            Role::Sync => PgConfig {
                role: PgRole::Sync,
                upstream: Some(z?.primary.clone()),
                sync: None,
                generation: z?.generation,
            },
            Role::Async(i) => {
                let z = z?;
                let upstream = if i == 0 {
                    z.sync.clone()
                } else {
                    z.asyncs.get(i - 1).cloned()
                };
                PgConfig {
                    role: PgRole::Async,
                    upstream,
                    sync: None,
                    generation: 0,
                }
            }
        })
    }

    /// R12: bring PostgreSQL to the role's configuration, one change at a time.
    fn apply_pg(&mut self, out: &mut Vec<Action>) {
        // While a write is in flight the role may lag the state (R1): wait for it.
        if self.applying.is_some() || self.pg_backoff || self.fatal || self.updating {
            return;
        }
        let Some(desired) = self.desired_pg() else {
            return;
        };
        if self.applied.as_ref() == Some(&desired) {
            return;
        }
        self.applying = Some((desired.clone(), self.fences));
        out.push(Action::ApplyPg(desired));
    }
}

/// R5: the role a state gives peer `me`.
fn derive_role(z: &ClusterState, me: &str, onwm_configured: bool) -> Role {
    if z.primary.id == me {
        return Role::Primary;
    }
    if z.one_node_write_mode && onwm_configured {
        return Role::Unassigned;
    }
    if z.sync.as_ref().is_some_and(|s| s.id == me) {
        return Role::Sync;
    }
    if z.deposed.iter().any(|p| p.id == me) {
        return Role::Deposed;
    }
    match z.asyncs.iter().position(|p| p.id == me) {
        Some(i) => Role::Async(i),
        None => Role::Unassigned,
    }
}

/// B8: whether `z.promote` may be acted on.
pub fn valid_promote(z: &ClusterState, now: SystemTime) -> Result<(), String> {
    let Some(p) = &z.promote else {
        return Err("no promote request".into());
    };
    if p.generation != z.generation {
        return Err(format!(
            "it names generation {}, the cluster is at {}",
            p.generation, z.generation
        ));
    }
    match triton_common::time::parse_rfc3339(&p.expire_time) {
        Some(t) if t > now => {}
        Some(_) => return Err(format!("it expired at {}", p.expire_time)),
        None => return Err(format!("expireTime {:?} is not a time", p.expire_time)),
    }
    match p.role {
        PromoteRole::Sync => {
            if z.sync.as_ref().is_none_or(|s| s.id != p.id) {
                return Err(format!("{} is not the sync", p.id));
            }
        }
        PromoteRole::Async => {
            let i = p.async_index.unwrap_or(0);
            if z.asyncs.get(i).is_none_or(|a| a.id != p.id) {
                return Err(format!("{} is not async {i}", p.id));
            }
        }
    }
    Ok(())
}

/// Whether `a` is an older state than `b` (by etcd revision).
fn older(a: &Observed, b: &Observed) -> bool {
    let rev = |o: &Observed| match o {
        Observed::State { revision, .. } | Observed::Corrupt { revision, .. } => Some(*revision),
        _ => None,
    };
    matches!((rev(a), rev(b)), (Some(x), Some(y)) if x < y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> Peer {
        Peer::new(&format!("10.0.0.{n}"), 5432, 5433, &format!("z{n}"))
    }

    fn machine(n: u8, onwm: bool) -> PeerMachine {
        PeerMachine::new(PeerConfig {
            me: peer(n),
            one_node_write_mode: onwm,
        })
    }

    /// The sitter's PostgreSQL streams from peer `upstream`, flushed up to `flushed`.
    fn streaming(upstream: u8, flushed: u64) -> Event {
        Event::Streaming {
            upstream: peer(upstream).id,
            flushed: Lsn(flushed),
        }
    }

    fn state(generation: u64, p: u8, s: u8, asyncs: &[u8]) -> ClusterState {
        let asyncs = asyncs.iter().map(|n| peer(*n)).collect();
        ClusterState {
            init_wal: Lsn(100),
            ..ClusterState::new(generation, peer(p), peer(s), asyncs)
        }
    }

    fn init(m: &mut PeerMachine, z: Option<ClusterState>, active: &[u8]) -> Vec<Action> {
        let now = SystemTime::now();
        let state = match z {
            Some(state) => Observed::State {
                state,
                revision: 10,
            },
            None => Observed::Absent,
        };
        let mut a = m.handle(
            Event::CoordInit {
                state,
                active: active.iter().map(|n| peer(*n)).collect(),
            },
            now,
        );
        a.extend(m.handle(Event::PgInit { setup: true }, now));
        a
    }

    /// A new peer (no database yet) that finds no state and `active` peers registered.
    fn set_up(m: &mut PeerMachine, active: &[u8], now: SystemTime) -> Vec<Action> {
        m.handle(Event::PgInit { setup: false }, now);
        m.handle(
            Event::CoordInit {
                state: Observed::Absent,
                active: active.iter().map(|n| peer(*n)).collect(),
            },
            now,
        )
    }

    fn writes(actions: &[Action]) -> Vec<&ClusterState> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::WriteState { state, .. } => Some(state),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn first_peer_sets_the_shard_up_with_a_sync() {
        let mut m = machine(1, false);
        let now = SystemTime::now();
        let a = set_up(&mut m, &[2, 1, 3], now);
        let w = writes(&a);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].generation, 1);
        assert_eq!(w[0].primary.id, peer(1).id);
        assert_eq!(w[0].sync.as_ref().map(|s| s.id.clone()), Some(peer(2).id));
        // Alone, a normal peer waits.
        let mut alone = machine(1, false);
        alone.handle(Event::PgInit { setup: false }, now);
        let a = alone.handle(
            Event::CoordInit {
                state: Observed::Absent,
                active: vec![peer(1)],
            },
            now,
        );
        assert!(writes(&a).is_empty());
        assert_eq!(alone.role(), Role::Unassigned);
    }

    #[test]
    fn sync_takes_over_only_after_streaming_past_init_wal() {
        let mut m = machine(2, false);
        let z = state(3, 1, 2, &[3]);
        let a = init(&mut m, Some(z.clone()), &[2, 3]);
        assert_eq!(m.role(), Role::Sync);
        assert!(
            !a.contains(&Action::FenceWal),
            "never streamed in this generation: {a:?}"
        );
        assert_eq!(m.last_refusal, Some(Refusal::NotStreamedThisGeneration));
        let now = SystemTime::now();
        // Streaming from someone other than the primary does not count.
        let a = m.handle(streaming(3, 500), now);
        assert!(!a.contains(&Action::FenceWal));
        let a = m.handle(streaming(1, 100), now);
        assert!(a.contains(&Action::FenceWal), "{a:?}");
        let a = m.handle(Event::WalPosition(Some(Lsn(150))), now);
        let w = writes(&a);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].generation, 4);
        assert_eq!(w[0].primary.id, peer(2).id);
        assert_eq!(w[0].sync.as_ref().map(|s| s.id.clone()), Some(peer(3).id));
        assert_eq!(w[0].deposed.len(), 1);
        assert_eq!(w[0].init_wal, Lsn(150));
    }

    #[test]
    fn no_takeover_without_an_async_or_while_frozen() {
        let mut m = machine(2, false);
        init(&mut m, Some(state(3, 1, 2, &[])), &[2]);
        let a = m.handle(streaming(1, 100), SystemTime::now());
        assert!(!a.contains(&Action::FenceWal));
        assert_eq!(m.last_refusal, Some(Refusal::NoAsyncPresent));

        let mut m = machine(2, false);
        let mut z = state(3, 1, 2, &[3]);
        z.freeze = Some(Freeze::default());
        init(&mut m, Some(z), &[2, 3]);
        let a = m.handle(streaming(1, 100), SystemTime::now());
        assert!(!a.contains(&Action::FenceWal));
        assert_eq!(m.last_refusal, Some(Refusal::ClusterFrozen));
    }

    #[test]
    fn a_primary_that_sees_another_primary_is_deposed_and_stops() {
        let mut m = machine(1, false);
        init(&mut m, Some(state(3, 1, 2, &[3])), &[1, 2, 3]);
        assert_eq!(m.role(), Role::Primary);
        m.handle(Event::PgApplied { ok: true }, SystemTime::now());
        let mut next = state(4, 2, 3, &[]);
        next.deposed = vec![peer(1)];
        let a = m.handle(
            Event::StateChanged(Observed::State {
                state: next,
                revision: 20,
            }),
            SystemTime::now(),
        );
        assert_eq!(m.role(), Role::Deposed);
        assert!(a.contains(&Action::ApplyPg(PgConfig::stopped())), "{a:?}");
    }

    #[test]
    fn primary_replaces_a_lost_sync_and_appends_new_peers() {
        let mut m = machine(1, false);
        let a = init(&mut m, Some(state(3, 1, 2, &[3])), &[1, 3]);
        assert!(a.contains(&Action::FenceWal), "{a:?}");
        let a = m.handle(Event::WalPosition(Some(Lsn(900))), SystemTime::now());
        let w = writes(&a);
        assert_eq!(w[0].generation, 4);
        assert_eq!(w[0].sync.as_ref().map(|s| s.id.clone()), Some(peer(3).id));
        assert!(w[0].deposed.is_empty(), "a lost sync is not deposed");

        let mut m = machine(1, false);
        let a = init(&mut m, Some(state(3, 1, 2, &[])), &[1, 2, 4]);
        let w = writes(&a);
        assert_eq!(w[0].generation, 3, "same generation");
        assert_eq!(
            w[0].asyncs.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
            vec![peer(4).id]
        );
    }

    #[test]
    fn one_node_write_mode_setup_and_conflict() {
        let mut m = machine(1, true);
        let now = SystemTime::now();
        let a = set_up(&mut m, &[1], now);
        let w = writes(&a);
        assert!(w[0].one_node_write_mode && w[0].sync.is_none() && w[0].freeze.is_some());

        let mut m = machine(1, true);
        let a = init(&mut m, Some(state(3, 1, 2, &[])), &[1, 2]);
        assert!(matches!(a.last(), Some(Action::Fatal(_))), "{a:?}");
    }

    #[test]
    fn invalid_promote_is_removed_by_the_primary_and_async_swap_is_done_in_place() {
        let mut m = machine(1, false);
        let mut z = state(3, 1, 2, &[3, 4]);
        z.promote = Some(manatee_client::state::Promote {
            id: peer(4).id,
            role: PromoteRole::Async,
            async_index: Some(1),
            generation: 3,
            expire_time: triton_common::time::rfc3339(SystemTime::now() + Duration::from_secs(60)),
        });
        let a = init(&mut m, Some(z.clone()), &[1, 2, 3, 4]);
        let w = writes(&a);
        assert_eq!(w[0].generation, 3);
        assert_eq!(w[0].asyncs[0].id, peer(4).id);
        assert!(w[0].promote.is_none());

        let mut m = machine(1, false);
        if let Some(p) = z.promote.as_mut() {
            p.generation = 2;
        }
        let a = init(&mut m, Some(z), &[1, 2, 3, 4]);
        let w = writes(&a);
        assert!(w[0].promote.is_none());
        assert_eq!(
            w[0].asyncs[0].id,
            peer(3).id,
            "an invalid promote changes nothing else"
        );
    }
}
