//! The peer state machine against a simulated etcd and simulated PostgreSQL peers, with
//! randomized event orders: peers joining, crashing, pausing past their lease, losing
//! their etcd session, operators freezing, promoting and rebuilding, clients writing to
//! whatever PostgreSQL accepts writes, replication and acknowledgements at random moments.
//!
//! After every step it checks the invariants the reference promises:
//! - at most one peer is ever a writable primary in a generation, and it is the primary
//!   that generation's state names;
//! - within a generation, primary, sync and initWal never change; only the primary or
//!   the sync of G writes G+1; a sync takes over only at a WAL position >= initWal; a new
//!   primary always has a sync; a deposed peer has no role;
//! - every acknowledged write is on every PostgreSQL that becomes a writable primary,
//!   and on the final primary.
//!
//! And, once every fault is healed and the operator has rebuilt the deposed peers, that
//! the shard comes back to a writable primary, a streaming sync and every peer in the chain.
//!
//! A failure prints the seed and the last steps; `SIM_SEED=<seed>` replays one run.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, SystemTime};

use manatee::state_machine::{
    Action, Event, PeerConfig, PeerMachine, PgConfig, PgRole, Role, async_name, sync_name,
};
use manatee_client::Observed;
use manatee_client::state::{ClusterState, Freeze, Lsn, Peer, Promote, PromoteRole};

/// splitmix64: tiny, deterministic, good enough to shuffle events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Debug, Clone, PartialEq)]
enum PgMode {
    Stopped,
    /// `sync`: the replication name it waits for (`None`: one-node-write mode).
    Primary {
        writable: bool,
        sync: Option<String>,
        generation: u64,
    },
    /// `name`: the replication name it connects with.
    Standby {
        upstream: String,
        name: String,
    },
}

#[derive(Debug, Clone)]
struct SimPg {
    /// `None`: no data directory yet.
    log: Option<Vec<u64>>,
    mode: PgMode,
    /// The sitter's marker: this data was a primary's, so it may have diverged and is
    /// rebuilt before it serves as a standby.
    was_primary: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Life {
    Up,
    Paused,
    Down,
}

struct SimPeer {
    peer: Peer,
    machine: Option<PeerMachine>,
    life: Life,
    /// Registered in etcd (its lease is alive).
    registered: bool,
    /// Its session expired while it ran: it re-registers on its own.
    must_reregister: bool,
    inbox: VecDeque<Event>,
    /// Actions issued and not yet answered.
    pending: Vec<(Action, u64)>,
    pg: SimPg,
}

#[derive(Default)]
struct SimEtcd {
    state: Option<(ClusterState, i64)>,
    revision: i64,
    /// Every state ever written, in order.
    history: Vec<ClusterState>,
}

struct Sim {
    rng: Rng,
    peers: Vec<SimPeer>,
    etcd: SimEtcd,
    trace: VecDeque<String>,
    next_write: u64,
    /// Writes not yet acknowledged: (primary index, write id, its position in the log).
    unacked: Vec<(usize, u64, usize)>,
    acked: BTreeSet<u64>,
    /// Who was a writable primary in each generation.
    writable_in_gen: BTreeMap<u64, BTreeSet<String>>,
    seed: u64,
    now: SystemTime,
}

fn peer(i: usize) -> Peer {
    Peer {
        id: format!("10.0.0.{}:5432:5433", i + 1),
        ip: format!("10.0.0.{}", i + 1),
        pg_url: format!("postgresql://postgres@10.0.0.{}:5432/postgres", i + 1),
        zone_id: format!("zone-{i}"),
        backup_url: None,
    }
}

impl Sim {
    fn new(seed: u64, n: usize) -> Sim {
        let peers = (0..n)
            .map(|i| SimPeer {
                peer: peer(i),
                machine: None,
                life: Life::Down,
                registered: false,
                must_reregister: false,
                inbox: VecDeque::new(),
                pending: Vec::new(),
                pg: SimPg {
                    log: None,
                    mode: PgMode::Stopped,
                    was_primary: false,
                },
            })
            .collect();
        Sim {
            rng: Rng(seed),
            peers,
            etcd: SimEtcd::default(),
            trace: VecDeque::new(),
            next_write: 1,
            unacked: Vec::new(),
            acked: BTreeSet::new(),
            writable_in_gen: BTreeMap::new(),
            seed,
            now: SystemTime::now(),
        }
    }

    fn note(&mut self, s: String) {
        if self.trace.len() > 20000 {
            self.trace.pop_front();
        }
        self.trace.push_back(s);
    }

    fn fail(&self, why: String) -> ! {
        let trace: Vec<&str> = self.trace.iter().map(String::as_str).collect();
        panic!(
            "seed {} (replay with SIM_SEED={}): {why}\nstate: {:?}\nlast steps:\n  {}",
            self.seed,
            self.seed,
            self.etcd.state,
            trace.join("\n  ")
        );
    }

    fn observed(&self) -> Observed {
        match &self.etcd.state {
            None => Observed::Absent,
            Some((s, r)) => Observed::State {
                state: s.clone(),
                revision: *r,
            },
        }
    }

    fn active(&self) -> Vec<Peer> {
        self.peers
            .iter()
            .filter(|p| p.registered)
            .map(|p| p.peer.clone())
            .collect()
    }

    /// Delivers to every running or paused sitter (a paused one reads them on resume).
    fn broadcast(&mut self, ev: Event) {
        for p in &mut self.peers {
            if p.life != Life::Down && p.machine.is_some() {
                p.inbox.push_back(ev.clone());
            }
        }
    }

    fn lsn(&self, i: usize) -> u64 {
        self.peers[i].pg.log.as_ref().map_or(0, |l| l.len() as u64)
    }

    fn index_of(&self, id: &str) -> usize {
        self.find(id).expect("ids come from the sim's peers")
    }

    fn find(&self, id: &str) -> Option<usize> {
        self.peers.iter().position(|p| p.peer.id == id)
    }

    // ---- etcd ----

    fn cas(&mut self, writer: Option<usize>, expected: i64, next: ClusterState) -> Option<i64> {
        let current = self.etcd.state.as_ref().map_or(0, |(_, r)| *r);
        if current != expected {
            return None;
        }
        if let Err(e) = next.validate() {
            self.fail(format!("invalid state written: {e}: {next:?}"));
        }
        if let Some((prev, _)) = &self.etcd.state {
            let prev = prev.clone();
            if next.generation == prev.generation {
                if next.primary.id != prev.primary.id
                    || next.sync.as_ref().map(|s| &s.id) != prev.sync.as_ref().map(|s| &s.id)
                    || next.init_wal != prev.init_wal
                {
                    self.fail(format!(
                        "primary/sync/initWal changed within generation {}",
                        next.generation
                    ));
                }
            } else {
                if next.generation != prev.generation + 1 {
                    self.fail(format!(
                        "generation jumped from {} to {}",
                        prev.generation, next.generation
                    ));
                }
                let w = writer.map(|i| self.peers[i].peer.id.clone());
                let by_primary = w.as_deref() == Some(prev.primary.id.as_str());
                let by_sync = w.is_some() && prev.sync.as_ref().map(|s| &s.id) == w.as_ref();
                if !by_primary && !by_sync {
                    self.fail(format!(
                        "generation {} written by {w:?}, neither primary nor sync of {}",
                        next.generation, prev.generation
                    ));
                }
                if w.as_deref() != Some(next.primary.id.as_str()) {
                    self.fail("a new generation names a primary other than its writer".into());
                }
                if by_sync && next.init_wal < prev.init_wal {
                    self.fail(format!(
                        "sync took over at {} < initWal {}",
                        next.init_wal, prev.init_wal
                    ));
                }
                if next.sync.is_none() && !next.one_node_write_mode {
                    self.fail("new primary without a sync".into());
                }
            }
        }
        self.etcd.revision += 1;
        let rev = self.etcd.revision;
        self.etcd.history.push(next.clone());
        self.etcd.state = Some((next, rev));
        let obs = self.observed();
        self.broadcast(Event::StateChanged(obs));
        Some(rev)
    }

    fn set_registered(&mut self, i: usize, on: bool) {
        if self.peers[i].registered == on {
            return;
        }
        self.peers[i].registered = on;
        let active = self.active();
        self.broadcast(Event::ActiveChanged(active));
    }

    // ---- sitters ----

    fn start(&mut self, i: usize) {
        let cfg = PeerConfig {
            me: self.peers[i].peer.clone(),
            one_node_write_mode: false,
        };
        let setup = self.peers[i].pg.log.is_some();
        let p = &mut self.peers[i];
        p.machine = Some(PeerMachine::new(cfg));
        p.life = Life::Up;
        p.inbox.clear();
        p.pending.clear();
        p.must_reregister = false;
        p.pg.mode = PgMode::Stopped;
        self.set_registered(i, true);
        let init = Event::CoordInit {
            state: self.observed(),
            active: self.active(),
        };
        let p = &mut self.peers[i];
        p.inbox.push_back(init);
        p.inbox.push_back(Event::PgInit { setup });
        self.note(format!("start {i}"));
    }

    fn kill(&mut self, i: usize) {
        let p = &mut self.peers[i];
        p.machine = None;
        p.life = Life::Down;
        p.inbox.clear();
        p.pending.clear();
        p.pg.mode = PgMode::Stopped;
        self.unacked.retain(|(pi, _, _)| *pi != i);
        self.note(format!("kill {i}"));
    }

    fn deliver(&mut self, i: usize) {
        let Some(ev) = self.peers[i].inbox.pop_front() else {
            return;
        };
        let now = self.now;
        let gen_before = self.peers[i]
            .machine
            .as_ref()
            .and_then(|m| m.observed().state().map(|s| s.generation));
        let actions = match self.peers[i].machine.as_mut() {
            Some(m) => m.handle(ev.clone(), now),
            None => return,
        };
        let role = self.peers[i].machine.as_ref().map(|m| m.role());
        self.note(format!(
            "{i} <- {} => {:?} role {:?} gen {:?}",
            short(&ev),
            actions.iter().map(short_action).collect::<Vec<_>>(),
            role,
            gen_before
        ));
        for a in actions {
            if let Action::Fatal(msg) = &a {
                self.fail(format!("peer {i} fatal: {msg}"));
            }
            let g = self.peers[i]
                .machine
                .as_ref()
                .and_then(|m| m.observed().state().map(|s| s.generation))
                .unwrap_or(0);
            self.peers[i].pending.push((a, g));
        }
    }

    /// Carries out one pending action of peer `i` (chosen at random).
    fn complete(&mut self, i: usize) {
        if self.peers[i].pending.is_empty() {
            return;
        }
        // PostgreSQL actions run one at a time in order (the sitter serializes them);
        // state writes and timers complete in any order.
        let pg_action = |a: &Action| matches!(a, Action::ApplyPg(_) | Action::FenceWal);
        let eligible: Vec<usize> = {
            let pending = &self.peers[i].pending;
            let first_pg = pending.iter().position(|(a, _)| pg_action(a));
            (0..pending.len())
                .filter(|&k| !pg_action(&pending[k].0) || Some(k) == first_pg)
                .collect()
        };
        let k = eligible[self.rng.below(eligible.len())];
        let (action, generation) = self.peers[i].pending.remove(k);
        let answer = match action {
            Action::FenceWal => {
                let online = self.peers[i].pg.mode != PgMode::Stopped;
                match &mut self.peers[i].pg.mode {
                    PgMode::Standby { upstream, .. } => upstream.clear(),
                    PgMode::Primary { writable, sync, .. } => {
                        *writable = false;
                        *sync = Some(String::new());
                    }
                    PgMode::Stopped => {}
                }
                Event::WalPosition(online.then(|| Lsn(self.lsn(i))))
            }
            Action::WriteState {
                expected_revision,
                state,
                reason,
            } => {
                let r = self.cas(Some(i), expected_revision, state);
                self.note(format!("{i} write ({reason}) -> {r:?}"));
                Event::WriteDone(r)
            }
            Action::ApplyPg(cfg) => {
                let ok = self.apply_pg(i, &cfg, generation);
                self.note(format!(
                    "{i} apply {:?} up {:?} -> {ok}",
                    cfg.role,
                    cfg.upstream.as_ref().map(|p| &p.id)
                ));
                Event::PgApplied { ok }
            }
            Action::RetryAfter(_) => Event::Timer,
            Action::Fatal(_) => return,
        };
        self.peers[i].inbox.push_back(answer);
    }

    fn running_pg(&self, id: &str) -> Option<usize> {
        let j = self.find(id)?;
        let p = &self.peers[j];
        (p.life == Life::Up && p.pg.mode != PgMode::Stopped && p.pg.log.is_some()).then_some(j)
    }

    fn apply_pg(&mut self, i: usize, cfg: &PgConfig, generation: u64) -> bool {
        match cfg.role {
            PgRole::None => {
                self.peers[i].pg.mode = PgMode::Stopped;
                self.unacked.retain(|(pi, _, _)| *pi != i);
                true
            }
            PgRole::Primary => {
                let pg = &mut self.peers[i].pg;
                if pg.log.is_none() {
                    pg.log = Some(Vec::new()); // initdb
                }
                let sync = cfg.sync.as_ref().map(|s| sync_name(&s.id, cfg.generation));
                match &mut pg.mode {
                    PgMode::Primary {
                        writable,
                        sync: s,
                        generation: g,
                    } => {
                        if *s != sync {
                            *writable = false;
                            *s = sync;
                        }
                        *g = generation;
                    }
                    _ => {
                        pg.mode = PgMode::Primary {
                            writable: false,
                            sync,
                            generation,
                        }
                    }
                }
                pg.was_primary = true;
                true
            }
            PgRole::Sync | PgRole::Async => {
                let Some(up) = &cfg.upstream else {
                    return false;
                };
                let needs_rebuild = self.peers[i].pg.log.is_none() || self.peers[i].pg.was_primary;
                if needs_rebuild {
                    let Some(j) = self.running_pg(&up.id) else {
                        return false;
                    };
                    let copy = self.peers[j].pg.log.clone();
                    let pg = &mut self.peers[i].pg;
                    pg.log = copy;
                    pg.was_primary = false;
                    self.note(format!("{i} rebuilt from {j}"));
                }
                let me = &self.peers[i].peer.id;
                let name = if cfg.role == PgRole::Sync {
                    sync_name(me, cfg.generation)
                } else {
                    async_name(me)
                };
                self.peers[i].pg.mode = PgMode::Standby {
                    upstream: up.id.clone(),
                    name,
                };
                true
            }
        }
    }

    // ---- PostgreSQL and clients ----

    fn replicate(&mut self, i: usize) {
        let PgMode::Standby { upstream, .. } = self.peers[i].pg.mode.clone() else {
            return;
        };
        let Some(j) = self.running_pg(&upstream) else {
            return;
        };
        if self.peers[i].life != Life::Up {
            return;
        }
        let up = self.peers[j].pg.log.clone().unwrap_or_default();
        let mine = self.peers[i].pg.log.clone().unwrap_or_default();
        let behind = mine.len() <= up.len() && up[..mine.len()] == mine[..];
        // Ahead of a cascading upstream is lag; ahead of a primary is WAL that primary
        // never wrote (from a deposed one), which PostgreSQL refuses to stream over.
        let upstream_is_primary = matches!(self.peers[j].pg.mode, PgMode::Primary { .. });
        let ahead = !upstream_is_primary && mine.len() > up.len() && mine[..up.len()] == up[..];
        if behind {
            let n = self.rng.below(up.len() - mine.len() + 1);
            let log = up[..mine.len() + n].to_vec();
            let flushed = Lsn(log.len() as u64);
            self.peers[i].pg.log = Some(log);
            let upstream = self.peers[j].peer.id.clone();
            self.peers[i]
                .inbox
                .push_back(Event::Streaming { upstream, flushed });
        } else if !ahead {
            // Diverged: PostgreSQL cannot stream; the sitter's safety net rebuilds it.
            self.peers[i].pg.log = Some(up);
            self.peers[i].pg.was_primary = false;
            self.note(format!("{i} diverged from {j}: rebuilt"));
        }
    }

    fn client_write(&mut self) {
        let writable: Vec<usize> = (0..self.peers.len())
            .filter(|&i| {
                self.peers[i].life == Life::Up
                    && matches!(
                        self.peers[i].pg.mode,
                        PgMode::Primary { writable: true, .. }
                    )
            })
            .collect();
        if writable.is_empty() {
            return;
        }
        let i = writable[self.rng.below(writable.len())];
        let w = self.next_write;
        self.next_write += 1;
        let log = self.peers[i].pg.log.get_or_insert_with(Vec::new);
        log.push(w);
        let pos = log.len() - 1;
        self.unacked.push((i, w, pos));
    }

    /// The running standby streaming from primary `i` under replication name `name`.
    fn sync_standby(&self, i: usize, name: &str) -> Option<usize> {
        let me = &self.peers[i].peer.id;
        (0..self.peers.len()).find(|&j| {
            let sp = &self.peers[j];
            sp.life == Life::Up
                && matches!(&sp.pg.mode, PgMode::Standby { upstream, name: n } if upstream == me && n == name)
        })
    }

    /// Commits whose sync standby has them are acknowledged to the client.
    fn acknowledge(&mut self) {
        let mut still = Vec::new();
        for (i, w, pos) in std::mem::take(&mut self.unacked) {
            let ok = match &self.peers[i].pg.mode {
                PgMode::Primary { sync: Some(s), .. } if self.peers[i].life == Life::Up => {
                    self.sync_standby(i, s).is_some_and(|j| {
                        self.peers[j]
                            .pg
                            .log
                            .as_ref()
                            .is_some_and(|l| l.get(pos) == Some(&w))
                    })
                }
                PgMode::Primary { sync: None, .. } => true,
                _ => false,
            };
            if ok {
                self.acked.insert(w);
            } else {
                still.push((i, w, pos));
            }
        }
        self.unacked = still;
    }

    /// The sitter's standby wait: a read-only primary turns writable once its sync
    /// streams from it and has everything.
    fn enable_writes(&mut self, i: usize) {
        if self.peers[i].life != Life::Up {
            return;
        }
        let PgMode::Primary {
            writable: false,
            sync,
            generation,
        } = self.peers[i].pg.mode.clone()
        else {
            return;
        };
        let caught_up = match &sync {
            None => true,
            Some(s) => self
                .sync_standby(i, s)
                .is_some_and(|j| self.peers[j].pg.log == self.peers[i].pg.log),
        };
        if !caught_up {
            return;
        }
        let log: BTreeSet<u64> = self.peers[i].pg.log.iter().flatten().copied().collect();
        if let Some(lost) = self.acked.iter().find(|w| !log.contains(w)) {
            self.fail(format!(
                "peer {i} became a writable primary without acknowledged write {lost}"
            ));
        }
        let id = self.peers[i].peer.id.clone();
        let set = self.writable_in_gen.entry(generation).or_default();
        set.insert(id.clone());
        if set.len() > 1 {
            let set = set.clone();
            self.fail(format!(
                "two writable primaries in generation {generation}: {set:?}"
            ));
        }
        let named = self
            .etcd
            .history
            .iter()
            .find(|s| s.generation == generation)
            .map(|s| s.primary.id.clone());
        if named.as_deref() != Some(id.as_str()) {
            self.fail(format!(
                "peer {i} writable in generation {generation} whose primary is {named:?}"
            ));
        }
        if let PgMode::Primary { writable, .. } = &mut self.peers[i].pg.mode {
            *writable = true;
        }
        self.note(format!("{i} writable (generation {generation})"));
    }

    // ---- operators ----

    fn operator_write(&mut self, f: impl FnOnce(&mut ClusterState) -> bool, what: &str) {
        let Some((mut s, rev)) = self.etcd.state.clone() else {
            return;
        };
        if f(&mut s) {
            let r = self.cas(None, rev, s);
            self.note(format!("operator {what} -> {r:?}"));
        }
    }

    fn rebuild_deposed(&mut self) {
        let Some((s, _)) = &self.etcd.state else {
            return;
        };
        let Some(d) = s.deposed.first().cloned() else {
            return;
        };
        // As manatee-adm rebuild: only once the deposed peer's sitter is gone, or says
        // it is deposed with PostgreSQL stopped.
        let k = self.index_of(&d.id);
        let p = &self.peers[k];
        let stopped = p
            .machine
            .as_ref()
            .is_some_and(|m| m.role() == Role::Deposed)
            && p.pg.mode == PgMode::Stopped
            && p.life == Life::Up;
        if p.registered && !stopped {
            return;
        }
        self.operator_write(
            |s| {
                s.deposed.retain(|p| p.id != d.id);
                true
            },
            "rebuild",
        );
    }

    // ---- steps ----

    /// One random step. `faults`: failures may happen; `failures_allowed`: how many
    /// peers may be down, paused or cut off at once.
    fn step(&mut self, faults: bool, failures_allowed: usize) {
        let n = self.peers.len();
        let failed = self
            .peers
            .iter()
            .filter(|p| p.life != Life::Up || p.must_reregister)
            .count();
        let i = self.rng.below(n);
        match self.rng.below(100) {
            0..=34 if self.peers[i].life == Life::Up => self.deliver(i),
            35..=59 if self.peers[i].life == Life::Up => self.complete(i),
            0..=59 => {}
            60..=69 => self.replicate(i),
            70..=76 => self.client_write(),
            77..=82 => self.acknowledge(),
            83..=87 => self.enable_writes(i),
            // lease expiry of a dead or paused sitter
            88..=90 if self.peers[i].life != Life::Up && self.peers[i].registered => {
                self.note(format!("lease of {i} expired"));
                self.set_registered(i, false);
            }
            91..=93 => {
                // recovery
                match self.peers[i].life {
                    Life::Down => self.start(i),
                    Life::Paused => {
                        self.peers[i].life = Life::Up;
                        self.note(format!("resume {i}"));
                        if !self.peers[i].registered {
                            self.reregister(i);
                        }
                    }
                    Life::Up if self.peers[i].must_reregister => self.reregister(i),
                    Life::Up => {}
                }
            }
            94..=96 if faults && failed < failures_allowed => match self.rng.below(3) {
                0 if self.peers[i].life == Life::Up => self.kill(i),
                1 if self.peers[i].life == Life::Up => {
                    self.peers[i].life = Life::Paused;
                    self.note(format!("pause {i}"));
                }
                2 if self.peers[i].life == Life::Up && self.peers[i].registered => {
                    self.peers[i].must_reregister = true;
                    self.note(format!("session of {i} expired"));
                    self.set_registered(i, false);
                }
                _ => {}
            },
            97 => self.rebuild_deposed(),
            98 if faults => self.operator_action(),
            _ => {}
        }
    }

    fn reregister(&mut self, i: usize) {
        self.peers[i].must_reregister = false;
        self.set_registered(i, true);
        let init = Event::CoordInit {
            state: self.observed(),
            active: self.active(),
        };
        self.peers[i].inbox.push_back(init);
        self.note(format!("{i} re-registered"));
    }

    fn operator_action(&mut self) {
        let Some((s, _)) = self.etcd.state.clone() else {
            return;
        };
        let expire = triton_common::time::rfc3339(self.now + Duration::from_secs(3600));
        match self.rng.below(4) {
            0 => self.operator_write(
                |s| {
                    if s.freeze.is_some() {
                        return false;
                    }
                    s.freeze = Some(Freeze {
                        date: Some(triton_common::time::now_rfc3339()),
                        reason: Some("sim".into()),
                    });
                    true
                },
                "freeze",
            ),
            1 => self.operator_write(|s| s.freeze.take().is_some(), "unfreeze"),
            2 => {
                let Some(sync) = s.sync.clone() else { return };
                self.operator_write(
                    |s| {
                        s.promote = Some(Promote {
                            id: sync.id.clone(),
                            role: PromoteRole::Sync,
                            async_index: None,
                            generation: s.generation,
                            expire_time: expire,
                        });
                        true
                    },
                    "promote sync",
                );
            }
            _ => {
                if s.asyncs.is_empty() {
                    return;
                }
                let idx = self.rng.below(s.asyncs.len());
                let id = s.asyncs[idx].id.clone();
                self.operator_write(
                    |s| {
                        s.promote = Some(Promote {
                            id,
                            role: PromoteRole::Async,
                            async_index: Some(idx),
                            generation: s.generation,
                            expire_time: expire,
                        });
                        true
                    },
                    "promote async",
                );
            }
        }
    }

    /// Heals every fault and lets the shard settle; then checks it is whole again.
    fn heal_and_check(&mut self) {
        for i in 0..self.peers.len() {
            match self.peers[i].life {
                Life::Down => self.start(i),
                Life::Paused => {
                    self.peers[i].life = Life::Up;
                    if !self.peers[i].registered {
                        self.reregister(i);
                    }
                }
                Life::Up => {
                    if self.peers[i].must_reregister {
                        self.reregister(i);
                    }
                }
            }
        }
        self.operator_write(|s| s.freeze.take().is_some(), "unfreeze (heal)");
        for _ in 0..40_000 {
            self.step(false, 0);
            if self.whole() {
                break;
            }
        }
        if !self.whole() {
            let roles: Vec<_> = self
                .peers
                .iter()
                .map(|p| {
                    (
                        p.machine.as_ref().map(|m| m.role()),
                        p.pg.mode.clone(),
                        p.inbox.len(),
                        p.pending.clone(),
                        p.pg.log.as_ref().map(|l| (l.len(), l.last().copied())),
                    )
                })
                .collect();
            self.fail(format!(
                "the shard did not become whole after healing: {roles:?}"
            ));
        }
        // One more write must be acknowledged, and every acknowledged write is there.
        let before = self.acked.len();
        for _ in 0..2_000 {
            self.client_write();
            for i in 0..self.peers.len() {
                self.replicate(i);
            }
            self.acknowledge();
            if self.acked.len() > before {
                break;
            }
        }
        if self.acked.len() == before {
            self.fail("no write acknowledged after healing".into());
        }
        let (s, _) = self.etcd.state.clone().expect("whole implies a state");
        let p = self.index_of(&s.primary.id);
        let log: BTreeSet<u64> = self.peers[p].pg.log.iter().flatten().copied().collect();
        if let Some(lost) = self.acked.iter().find(|w| !log.contains(w)) {
            self.fail(format!(
                "acknowledged write {lost} is not on the final primary"
            ));
        }
    }

    /// A writable primary, its sync streaming from it, every peer in the chain, nothing
    /// deposed.
    fn whole(&self) -> bool {
        let Some((s, _)) = &self.etcd.state else {
            return false;
        };
        if s.chain().count() != self.peers.len() || !s.deposed.is_empty() {
            return false;
        }
        let p = self.index_of(&s.primary.id);
        let sync = s.sync.as_ref().map(|x| sync_name(&x.id, s.generation));
        let writable = matches!(&self.peers[p].pg.mode, PgMode::Primary { writable: true, sync: ps, .. } if *ps == sync);
        let settled = self.peers.iter().all(|p| {
            p.inbox.iter().all(|e| matches!(e, Event::Streaming { .. }))
                && p.pending
                    .iter()
                    .all(|(a, _)| matches!(a, Action::RetryAfter(_)))
        });
        let streaming = s.chain().skip(1).all(|x| {
            let j = self.index_of(&x.id);
            let up = s.upstream_of(&x.id).map(|u| u.id.clone());
            matches!(&self.peers[j].pg.mode, PgMode::Standby { upstream, .. } if Some(upstream) == up.as_ref())
        });
        let roles_ok = self.peers.iter().all(|p| {
            p.machine.as_ref().is_some_and(|m| {
                m.role() != Role::Unknown
                    && m.role() != Role::Unassigned
                    && m.role() != Role::Deposed
            })
        });
        settled && writable && streaming && roles_ok
    }
}

fn short(ev: &Event) -> String {
    match ev {
        Event::CoordInit { active, .. } => format!("init(active {})", active.len()),
        Event::StateChanged(o) => match o {
            Observed::State { state, revision } => {
                format!("state(gen {} rev {revision})", state.generation)
            }
            other => format!("{other:?}"),
        },
        Event::ActiveChanged(a) => format!("active({})", a.len()),
        other => format!("{other:?}"),
    }
}

fn short_action(a: &Action) -> String {
    match a {
        Action::WriteState { state, reason, .. } => {
            format!("write(gen {}: {reason})", state.generation)
        }
        Action::ApplyPg(c) => format!("pg({:?})", c.role),
        other => format!("{other:?}"),
    }
}

fn run(seed: u64, salt: u64, peers: usize, steps: usize, failures_allowed: usize) -> Sim {
    let mut sim = Sim::new(seed ^ salt, peers);
    sim.seed = seed;
    for _ in 0..steps {
        sim.step(true, failures_allowed);
    }
    sim.heal_and_check();
    sim
}

fn seeds(default_count: u64) -> Vec<u64> {
    match std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => {
            // SIM_RUNS=<n> runs more (or fewer) seeds than the default.
            let n = std::env::var("SIM_RUNS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(default_count);
            (1..=n).collect()
        }
    }
}

#[test]
fn one_failure_at_a_time_loses_no_acknowledged_write() {
    let mut generations = 0;
    for seed in seeds(300) {
        let sim = run(seed, 0, 3, 3_000, 1);
        generations += sim.etcd.state.as_ref().map_or(0, |(s, _)| s.generation);
    }
    // The runs must actually exercise takeovers, not idle.
    assert!(
        generations > 300,
        "only {generations} generations over all runs"
    );
}

#[test]
fn four_peers_one_failure_at_a_time() {
    for seed in seeds(150) {
        run(seed, 0xABCD, 4, 3_000, 1);
    }
}

#[test]
fn any_number_of_failures_never_makes_two_primaries() {
    for seed in seeds(200) {
        run(seed, 0x5EED, 3, 3_000, 3);
    }
}
