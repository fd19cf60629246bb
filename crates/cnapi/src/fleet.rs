//! CNAPI's in-memory view of the servers and their reservations, so that an allocation
//! is a pick from memory under a short lock instead of a read of every record.
//!
//! * **Loaded once, kept current.** The view is loaded (reservation documents first,
//!   then servers) at the first allocation; CNAPI's own writes (registrations,
//!   heartbeats, updates, the reconciler) update it as they succeed; the reconciler's
//!   periodic read of every server refreshes it with what other CNAPIs wrote; and an
//!   allocation that finds no server is only answered after a fresh load.
//! * **Reservations stay durable.** A chosen server gets a *pending* reservation in the
//!   view at once, so the next allocation counts it, and the reservation is then written
//!   to Moray by one writer task that gathers every reservation (and release) waiting
//!   into one batch: one document per server, each put conditional on the etag this
//!   CNAPI last read or wrote. The allocation answers only after its batch committed.
//!   If another CNAPI changed one of the documents, the writer puts them one by one,
//!   re-reads the document that conflicted (then its server), and the allocations on it
//!   run again with what the other CNAPI reserved counted.
//! * **Older reads never undo newer writes.** Every entry remembers the sequence
//!   number of its last change here; a bulk read applies only to entries that did not
//!   change since the read began.
//!
//! The one invariant the reservation pruning needs: a server's record in the view is
//! never older than its reservation document. Documents are read before their servers,
//! so when another CNAPI dropped a reservation because the instance showed up in the
//! server's heartbeats, this view sees that instance too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{ServerRecord, ServerVm};
use crate::status::unix_ms;
use crate::store::{Cond, Reservation, ReservationDoc, Store, Versioned};

/// Most reservation writes one batch carries (one Moray transaction).
const MAX_BATCH: usize = 256;

#[derive(Debug, Clone)]
struct Meta {
    etag: String,
    /// Sequence number of the last change of this entry in the view.
    changed: u64,
}

#[derive(Debug, Clone)]
struct DocEntry {
    doc: ReservationDoc,
    etag: String,
    changed: u64,
}

#[derive(Default)]
pub struct Fleet {
    servers: Vec<ServerRecord>,
    meta: Vec<Meta>,
    index: HashMap<Uuid, usize>,
    /// Servers deleted here, with the sequence number of the deletion, so that a read
    /// that began before it does not bring them back.
    deleted: HashMap<Uuid, u64>,
    docs: HashMap<Uuid, DocEntry>,
    /// Per server: bumped whenever its document in the view is replaced by one read
    /// from the store (another CNAPI's reservations may be in it). A reservation chosen
    /// before such a change is not written: its allocation runs again.
    doc_gen: HashMap<Uuid, u64>,
    /// Reservations chosen here whose write has not committed yet.
    pending: HashMap<Uuid, Vec<Reservation>>,
    /// What the allocation chain counts: documents plus pending, without the expired
    /// ones and those already in the server's heartbeats.
    live: BTreeMap<Uuid, Vec<ServerVm>>,
    /// Earliest expiry among `live`.
    next_expiry_ms: u64,
    seq: u64,
    loaded: bool,
    reloads_started: u64,
    reloads_done: u64,
}

impl Fleet {
    pub fn loaded(&self) -> bool {
        self.loaded
    }

    /// The servers and the live reservations, for the allocation chain.
    pub fn view(&mut self, now_ms: u64) -> (&[ServerRecord], &BTreeMap<Uuid, Vec<ServerVm>>) {
        if now_ms >= self.next_expiry_ms {
            self.recompute_all(now_ms);
        }
        (&self.servers, &self.live)
    }

    /// Every server in the view.
    pub fn servers(&self) -> &[ServerRecord] {
        &self.servers
    }

    pub fn server(&self, uuid: Uuid) -> Option<Versioned<ServerRecord>> {
        self.index.get(&uuid).map(|&i| Versioned {
            value: self.servers[i].clone(),
            etag: self.meta[i].etag.clone(),
        })
    }

    /// Agent URL of a server in the view (empty when unknown here).
    pub fn agent_url(&self, uuid: Uuid) -> Option<String> {
        self.index
            .get(&uuid)
            .map(|&i| self.servers[i].agent_url.clone())
    }

    /// A server as just written (or read one by one) here.
    pub fn set_server(&mut self, record: ServerRecord, etag: String) {
        self.seq += 1;
        let changed = self.seq;
        let uuid = record.uuid;
        self.deleted.remove(&uuid);
        self.insert_server(record, Meta { etag, changed });
        self.recompute(uuid, unix_ms(SystemTime::now()));
    }

    fn insert_server(&mut self, record: ServerRecord, meta: Meta) {
        match self.index.get(&record.uuid) {
            Some(&i) => {
                self.servers[i] = record;
                self.meta[i] = meta;
            }
            None => {
                self.index.insert(record.uuid, self.servers.len());
                self.servers.push(record);
                self.meta.push(meta);
            }
        }
    }

    pub fn remove_server(&mut self, uuid: Uuid) {
        self.seq += 1;
        self.deleted.insert(uuid, self.seq);
        self.drop_server(uuid);
        self.docs.remove(&uuid);
        self.pending.remove(&uuid);
        self.live.remove(&uuid);
    }

    fn drop_server(&mut self, uuid: Uuid) {
        if let Some(i) = self.index.remove(&uuid) {
            self.servers.swap_remove(i);
            self.meta.swap_remove(i);
            if let Some(moved) = self.servers.get(i) {
                self.index.insert(moved.uuid, i);
            }
        }
    }

    /// A reservation document as just written (or read one by one) here.
    pub fn set_doc(&mut self, doc: ReservationDoc, etag: String) {
        self.seq += 1;
        let server = doc.server_uuid;
        self.docs.insert(
            server,
            DocEntry {
                doc,
                etag,
                changed: self.seq,
            },
        );
        self.recompute(server, unix_ms(SystemTime::now()));
    }

    /// Starts a bulk read: entries changed here after this point keep their value.
    pub fn begin_read(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Applies a read of every server that began at `since`.
    pub fn refresh_servers(&mut self, servers: Vec<Versioned<ServerRecord>>, since: u64) {
        let mut seen = HashSet::with_capacity(servers.len());
        for v in servers {
            let uuid = v.value.uuid;
            seen.insert(uuid);
            let newer_here = self
                .index
                .get(&uuid)
                .is_some_and(|&i| self.meta[i].changed > since)
                || self.deleted.get(&uuid).is_some_and(|&d| d > since);
            if !newer_here {
                self.insert_server(
                    v.value,
                    Meta {
                        etag: v.etag,
                        changed: since,
                    },
                );
            }
        }
        // Deleted elsewhere.
        let gone: Vec<Uuid> = self
            .servers
            .iter()
            .zip(&self.meta)
            .filter(|(s, m)| !seen.contains(&s.uuid) && m.changed <= since)
            .map(|(s, _)| s.uuid)
            .collect();
        for uuid in gone {
            self.drop_server(uuid);
        }
        self.deleted.retain(|_, d| *d > since);
        self.recompute_all(unix_ms(SystemTime::now()));
    }

    /// Applies a read of every reservation document that began at `since`.
    fn refresh_docs(&mut self, docs: Vec<Versioned<ReservationDoc>>, since: u64) {
        let mut seen = HashSet::with_capacity(docs.len());
        for v in docs {
            let server = v.value.server_uuid;
            seen.insert(server);
            match self.docs.get(&server) {
                Some(d) if d.changed > since => continue,
                Some(d) if d.etag == v.etag => continue,
                _ => self.bump_gen(server),
            }
            self.docs.insert(
                server,
                DocEntry {
                    doc: v.value,
                    etag: v.etag,
                    changed: since,
                },
            );
        }
        let gone: Vec<Uuid> = self
            .docs
            .iter()
            .filter(|(server, d)| !seen.contains(server) && d.changed <= since)
            .map(|(server, _)| *server)
            .collect();
        for server in gone {
            self.docs.remove(&server);
            self.bump_gen(server);
        }
    }

    /// Counts `r` on `server` at once; [`FleetView::reserve`] then writes it, given
    /// the generation returned here.
    pub fn add_pending(&mut self, server: Uuid, r: Reservation) -> u64 {
        self.pending.entry(server).or_default().push(r);
        self.recompute(server, unix_ms(SystemTime::now()));
        self.gen_of(server)
    }

    fn gen_of(&self, server: Uuid) -> u64 {
        self.doc_gen.get(&server).copied().unwrap_or(0)
    }

    /// The server's document changed under the view (read from the store).
    fn bump_gen(&mut self, server: Uuid) {
        *self.doc_gen.entry(server).or_default() += 1;
    }

    fn take_pending(&mut self, server: Uuid, r: &Reservation) {
        if let Some(list) = self.pending.get_mut(&server) {
            if let Some(i) = list.iter().position(|p| p == r) {
                list.remove(i);
            }
            if list.is_empty() {
                self.pending.remove(&server);
            }
        }
    }

    fn recompute_all(&mut self, now_ms: u64) {
        self.live.clear();
        self.next_expiry_ms = u64::MAX;
        let servers: HashSet<Uuid> = self
            .docs
            .keys()
            .chain(self.pending.keys())
            .copied()
            .collect();
        for s in servers {
            self.recompute(s, now_ms);
        }
    }

    /// Rebuilds `live` for one server.
    fn recompute(&mut self, server: Uuid, now_ms: u64) {
        let seen = self.index.get(&server).map(|&i| &self.servers[i].vms);
        let mut live: Vec<ServerVm> = Vec::new();
        let candidates = self
            .docs
            .get(&server)
            .map(|d| d.doc.reservations.as_slice())
            .unwrap_or(&[])
            .iter()
            .chain(self.pending.get(&server).map(Vec::as_slice).unwrap_or(&[]));
        for r in candidates {
            if r.expires_at_ms <= now_ms
                || seen.is_some_and(|vms| vms.contains_key(&r.vm.uuid))
                || live.iter().any(|v| v.uuid == r.vm.uuid)
            {
                continue;
            }
            self.next_expiry_ms = self.next_expiry_ms.min(r.expires_at_ms);
            live.push(r.vm.clone());
        }
        if live.is_empty() {
            self.live.remove(&server);
        } else {
            self.live.insert(server, live);
        }
    }

    /// The document of `server` as it would be written now: the stored one without
    /// expired reservations and those in the server's heartbeats, and its condition.
    fn draft(&self, server: Uuid, now_ms: u64) -> (ReservationDoc, Cond) {
        let seen = self.index.get(&server).map(|&i| &self.servers[i].vms);
        match self.docs.get(&server) {
            Some(d) => {
                let mut doc = d.doc.clone();
                doc.reservations.retain(|r| {
                    r.expires_at_ms > now_ms && seen.is_none_or(|vms| !vms.contains_key(&r.vm.uuid))
                });
                (doc, Cond::Is(d.etag.clone()))
            }
            None => (
                ReservationDoc {
                    server_uuid: server,
                    reservations: Vec::new(),
                },
                Cond::MustNotExist,
            ),
        }
    }

    /// Servers whose document in the view holds `vm_uuid`.
    fn holding(&self, vm_uuid: &str, server: Option<Uuid>) -> Vec<Uuid> {
        self.docs
            .iter()
            .filter(|(s, d)| {
                server.is_none_or(|want| want == **s)
                    && d.doc.reservations.iter().any(|r| r.vm.uuid == vm_uuid)
            })
            .map(|(s, _)| *s)
            .collect()
    }
}

/// What the writer does.
#[derive(Debug)]
enum Op {
    Reserve {
        server: Uuid,
        reservation: Reservation,
        /// The document generation the server was chosen against.
        generation: u64,
    },
    Release {
        vm_uuid: String,
        server: Option<Uuid>,
    },
}

struct Write {
    op: Op,
    reply: oneshot::Sender<Result<bool>>,
}

/// The view, its store and the reservation writer.
pub struct FleetView<S> {
    store: Arc<S>,
    fleet: Arc<Mutex<Fleet>>,
    writes: mpsc::UnboundedSender<Write>,
    /// One bulk load at a time; callers that asked during one wait for the next.
    reload_lock: tokio::sync::Mutex<()>,
}

fn lock(fleet: &Mutex<Fleet>) -> MutexGuard<'_, Fleet> {
    fleet.lock().unwrap_or_else(|e| e.into_inner())
}

impl<S: Store> FleetView<S> {
    /// Must be called inside a tokio runtime: starts the writer task, which ends when
    /// the view is dropped.
    pub fn new(store: Arc<S>) -> FleetView<S> {
        let fleet = Arc::new(Mutex::new(Fleet {
            next_expiry_ms: u64::MAX,
            ..Default::default()
        }));
        let (writes, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(store.clone(), fleet.clone(), rx));
        FleetView {
            store,
            fleet,
            writes,
            reload_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Fleet> {
        lock(&self.fleet)
    }

    /// Loads every document and server unless a load that began after this call
    /// finished meanwhile.
    pub async fn reload(&self) -> Result<()> {
        let asked = self.lock().reloads_started;
        let _one = self.reload_lock.lock().await;
        let since = {
            let mut f = self.lock();
            if f.reloads_done > asked {
                return Ok(());
            }
            f.reloads_started += 1;
            f.begin_read()
        };
        let docs = self.store.list_reservations().await?;
        let servers = self.store.list_servers().await?;
        let mut f = self.lock();
        f.refresh_docs(docs, since);
        f.refresh_servers(servers, since);
        f.loaded = true;
        f.reloads_done = f.reloads_started;
        Ok(())
    }

    pub async fn ensure_loaded(&self) -> Result<()> {
        if self.lock().loaded {
            return Ok(());
        }
        self.reload().await
    }

    /// Writes a reservation put in the view with [`Fleet::add_pending`]; `Ok` once it
    /// is in Moray, [`Error::EtagConflict`] (and gone from the view) when another CNAPI
    /// changed the server's document meanwhile.
    pub async fn reserve(
        &self,
        server: Uuid,
        reservation: Reservation,
        generation: u64,
    ) -> Result<()> {
        self.submit(Op::Reserve {
            server,
            reservation,
            generation,
        })
        .await
        .map(|_| ())
    }

    /// Drops the reservations of `vm_uuid` (on `server`, or on any); whether there was
    /// one.
    pub async fn release(&self, vm_uuid: &str, server: Option<Uuid>) -> Result<bool> {
        // Reservations another CNAPI made are not in the view: look them up first.
        if self.lock().holding(vm_uuid, server).is_empty() {
            let found = self.store.find_reservations_of(vm_uuid).await?;
            for d in found {
                if server.is_none_or(|s| s == d.value.server_uuid) {
                    refresh_one(&*self.store, &self.fleet, d.value.server_uuid).await?;
                }
            }
        }
        self.submit(Op::Release {
            vm_uuid: vm_uuid.to_string(),
            server,
        })
        .await
    }

    async fn submit(&self, op: Op) -> Result<bool> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(Write { op, reply })
            .map_err(|_| Error::Store("the reservation writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Store("the reservation writer has stopped".into()))?
    }
}

async fn writer<S: Store>(
    store: Arc<S>,
    fleet: Arc<Mutex<Fleet>>,
    mut rx: mpsc::UnboundedReceiver<Write>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        write_batch(&*store, &fleet, batch).await;
    }
}

/// Reads one server's document and then its record into the view.
async fn refresh_one<S: Store>(store: &S, fleet: &Mutex<Fleet>, server: Uuid) -> Result<()> {
    let doc = store.get_reservations(server).await?;
    let record = store.get_server(server).await?;
    let mut f = lock(fleet);
    f.bump_gen(server);
    match doc {
        Some(v) => f.set_doc(v.value, v.etag),
        None => {
            f.docs.remove(&server);
            f.seq += 1;
        }
    }
    match record {
        Some(v) => f.set_server(v.value, v.etag),
        None => f.remove_server(server),
    }
    Ok(())
}

/// How one document's write ended.
#[derive(Debug, Clone)]
enum Outcome {
    Written,
    Conflict,
    Failed(String),
}

async fn write_batch<S: Store>(store: &S, fleet: &Mutex<Fleet>, batch: Vec<Write>) {
    // The documents to write, one per server, with every operation applied in order.
    let now = unix_ms(SystemTime::now());
    let mut drafts: BTreeMap<Uuid, (ReservationDoc, Cond)> = BTreeMap::new();
    // Per operation: the servers whose write it needs, and whether a release found one.
    let mut needs: Vec<(Vec<Uuid>, bool)> = Vec::with_capacity(batch.len());
    // Operations refused before writing (their allocation runs again).
    let mut stale: HashSet<usize> = HashSet::new();
    {
        let f = lock(fleet);
        for w in &batch {
            match &w.op {
                Op::Reserve {
                    server,
                    reservation,
                    generation,
                } => {
                    if f.gen_of(*server) != *generation {
                        // Chosen before another CNAPI's reservations were read back:
                        // the choice may no longer fit.
                        needs.push((vec![*server], false));
                        stale.insert(needs.len() - 1);
                        continue;
                    }
                    let (doc, _) = drafts
                        .entry(*server)
                        .or_insert_with(|| f.draft(*server, now));
                    doc.reservations
                        .retain(|r| r.vm.uuid != reservation.vm.uuid);
                    doc.reservations.push(reservation.clone());
                    needs.push((vec![*server], true));
                }
                Op::Release { vm_uuid, server } => {
                    let mut on: Vec<Uuid> = f.holding(vm_uuid, *server);
                    for (s, (doc, _)) in drafts.iter() {
                        if server.is_none_or(|want| want == *s)
                            && doc.reservations.iter().any(|r| r.vm.uuid == *vm_uuid)
                            && !on.contains(s)
                        {
                            on.push(*s);
                        }
                    }
                    for s in &on {
                        let (doc, _) = drafts.entry(*s).or_insert_with(|| f.draft(*s, now));
                        doc.reservations.retain(|r| r.vm.uuid != *vm_uuid);
                    }
                    let found = !on.is_empty();
                    needs.push((on, found));
                }
            }
        }
    }

    let drafts: Vec<(ReservationDoc, Cond)> = drafts.into_values().collect();
    let mut outcomes: HashMap<Uuid, Outcome> = HashMap::new();
    if !drafts.is_empty() {
        match store.put_reservations_batch(&drafts).await {
            Ok(etags) => {
                let mut f = lock(fleet);
                for ((doc, _), etag) in drafts.iter().zip(etags) {
                    outcomes.insert(doc.server_uuid, Outcome::Written);
                    f.set_doc(doc.clone(), etag);
                }
            }
            Err(Error::EtagConflict) if drafts.len() > 1 => {
                // Another CNAPI changed one of them: one by one, so the others go in.
                for (doc, cond) in &drafts {
                    let outcome = match store.put_reservations(doc, cond.clone()).await {
                        Ok(etag) => {
                            lock(fleet).set_doc(doc.clone(), etag);
                            Outcome::Written
                        }
                        Err(Error::EtagConflict) => Outcome::Conflict,
                        Err(e) => Outcome::Failed(e.to_string()),
                    };
                    outcomes.insert(doc.server_uuid, outcome);
                }
            }
            Err(Error::EtagConflict) => {
                outcomes.insert(drafts[0].0.server_uuid, Outcome::Conflict);
            }
            Err(e) => {
                tracing::warn!(error = %e, "writing reservations failed");
                for (doc, _) in &drafts {
                    outcomes.insert(doc.server_uuid, Outcome::Failed(e.to_string()));
                }
            }
        }
    }
    // What another CNAPI wrote, read back so the allocations run again with it.
    for (server, outcome) in &outcomes {
        if matches!(outcome, Outcome::Conflict | Outcome::Failed(_))
            && let Err(e) = refresh_one(store, fleet, *server).await
        {
            tracing::warn!(server_uuid = %server, error = %e, "re-reading reservations failed");
        }
    }

    let mut f = lock(fleet);
    for (n, (w, (servers, found))) in batch.into_iter().zip(needs).enumerate() {
        let mut answer = Ok(found);
        if stale.contains(&n) {
            answer = Err(Error::EtagConflict);
        }
        for s in &servers {
            match outcomes.get(s) {
                Some(Outcome::Written) | None => {}
                Some(Outcome::Conflict) => answer = Err(Error::EtagConflict),
                Some(Outcome::Failed(m)) => answer = Err(Error::Store(m.clone())),
            }
        }
        if let Op::Reserve {
            server,
            reservation,
            ..
        } = &w.op
        {
            f.take_pending(*server, reservation);
            f.recompute(*server, unix_ms(SystemTime::now()));
        }
        let _ = w.reply.send(answer);
    }
}
