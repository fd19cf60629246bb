//! The change feed: every put and delete, in commit order, resumable from a sequence number.
//!
//! Writers insert a row into `moray_changes` in the same statement or transaction as the
//! write, with `seq` NULL; they never take a global lock, so writes are not serialized.
//! A sequencer gives committed rows their `seq`: one transaction, serialized across all
//! Moray processes by a PostgreSQL advisory lock taken *before* its snapshot, numbers the
//! unsequenced rows it can see as `max(seq) + 1 ...` in `id` order. Because a row becomes
//! visible only when its transaction commits, and each pass numbers only visible rows above
//! every number given before, a consumer that has read up to `seq = S` can never later find
//! a new row at or below `S`: resuming from the last seq seen misses nothing. Two writes to
//! one key are numbered in commit order (the second writer takes its `id` after the first
//! committed, since it waited for the row lock); so are writes a client makes one after the
//! other.
//!
//! A process runs passes every 50 ms and right after its own writes while it has
//! watchers, and every minute regardless (so the table is numbered and trimmed even with
//! no watcher anywhere). Changes older than the retention are deleted; `since` below what
//! was deleted is answered with `ResyncRequiredError` rather than a silent gap.
//!
//! A snapshot ([`Store::snapshot`]) is a bucket's objects together with the feed position
//! they are at. It takes the sequencer's lock as a session lock *before* it begins a
//! `REPEATABLE READ` transaction, so that the transaction's snapshot, taken at its first
//! statement, is frozen while no sequencer runs anywhere. In that snapshot it numbers the
//! unsequenced rows it can see, as a pass does (the position `P` is the resulting head),
//! and reads the objects. Every write visible in the snapshot has its change numbered at
//! or below `P`; every write committed after it is numbered by a later pass, above `P`.
//! The transaction commits and the lock is released before a single object is sent: the
//! objects are held in memory, so a slow reader holds up no sequencer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use triton_proto::moray::v1 as pb;

use crate::error::MorayError;
use crate::objects::FindOpts;
use crate::pool::{Pool, PooledConn};
use crate::store::{Store, begin, finish};

/// Advisory lock key of the sequencer ("moray_fq").
const SEQUENCER_LOCK: i64 = 0x6d6f_7261_795f_6671;
/// How often a process with watchers looks for changes committed by other processes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Rows numbered per statement.
const SEQUENCE_BATCH: i64 = 10_000;
/// Rows deleted per statement when trimming.
const PURGE_BATCH: i64 = 100_000;
/// Changes read per query by a watcher.
const WATCH_BATCH: i64 = 500;
/// Events buffered per watcher before the reader waits for the client.
pub const WATCH_CHANNEL: usize = 256;
/// Time allowed for one sequencer or watcher query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

const SEQUENCE: &str = "
WITH base AS (
    SELECT greatest(
        (SELECT coalesce(max(seq), 0) FROM moray_changes WHERE seq IS NOT NULL),
        (SELECT purged_through FROM moray_changes_state WHERE id = 1)) AS m
), todo AS (
    SELECT id, row_number() OVER (ORDER BY id) AS rn
    FROM moray_changes WHERE seq IS NULL ORDER BY id LIMIT $1::int8
), upd AS (
    UPDATE moray_changes c SET seq = base.m + todo.rn FROM base, todo
    WHERE c.id = todo.id AND c.seq IS NULL RETURNING c.seq
)
SELECT (SELECT m FROM base) + (SELECT count(*) FROM upd), (SELECT count(*) FROM upd)";

const HEAD: &str = "
SELECT greatest(
    (SELECT coalesce(max(seq), 0) FROM moray_changes WHERE seq IS NOT NULL),
    (SELECT purged_through FROM moray_changes_state WHERE id = 1)),
    (SELECT purged_through FROM moray_changes_state WHERE id = 1)";

const PURGE: &str = "
WITH cut AS (
    SELECT max(seq) AS s FROM (
        SELECT seq, ctime FROM moray_changes WHERE seq IS NOT NULL ORDER BY seq LIMIT $2::int8
    ) oldest WHERE ctime < now() - make_interval(secs => $1::float8)
), del AS (
    DELETE FROM moray_changes WHERE seq IS NOT NULL AND seq <= (SELECT s FROM cut) RETURNING 1
)
UPDATE moray_changes_state SET purged_through = greatest(purged_through, (SELECT s FROM cut))
WHERE id = 1 AND (SELECT s FROM cut) IS NOT NULL AND (SELECT count(*) FROM del) >= 0
RETURNING purged_through";

const READ: &str = "
SELECT s.purged_through, c.seq, c.op, c.key, c.value, c.etag, c.mtime
FROM moray_changes_state s
LEFT JOIN LATERAL (
    SELECT seq, op, key, value, etag, mtime FROM moray_changes
    WHERE bucket = $1::text AND seq IS NOT NULL AND seq > $2::int8
    ORDER BY seq LIMIT $3::int8
) c ON true
WHERE s.id = 1";

pub struct Feed {
    wake: Notify,
    watchers: AtomicUsize,
    watcher_arrived: Notify,
    head: watch::Sender<u64>,
    retention: Duration,
    /// How often every process numbers and trims the log, watchers or not.
    housekeeping: Duration,
}

/// Counts a watcher while it lives.
pub struct WatcherGuard(Arc<Feed>);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Feed {
    pub fn new(retention: Duration, housekeeping: Duration) -> Arc<Feed> {
        Arc::new(Feed {
            wake: Notify::new(),
            watchers: AtomicUsize::new(0),
            watcher_arrived: Notify::new(),
            head: watch::Sender::new(0),
            retention,
            housekeeping: housekeeping.max(Duration::from_millis(100)),
        })
    }

    /// Called after a write committed: numbers it soon if anyone here watches.
    pub fn wrote(&self) {
        if self.watchers.load(Ordering::Acquire) > 0 {
            self.wake.notify_one();
        }
    }

    fn subscribe(self: &Arc<Self>) -> (WatcherGuard, watch::Receiver<u64>) {
        self.watchers.fetch_add(1, Ordering::AcqRel);
        self.watcher_arrived.notify_one();
        self.wake.notify_one();
        (WatcherGuard(self.clone()), self.head.subscribe())
    }

    /// The sequencer and trimmer of this process; runs until `shutdown`.
    pub async fn run(self: Arc<Self>, pool: Pool, shutdown: CancellationToken) {
        let mut next_housekeeping = Instant::now() + self.housekeeping;
        let mut last_error: Option<Instant> = None;
        loop {
            let active = self.watchers.load(Ordering::Acquire) > 0;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified(), if active => {}
                _ = tokio::time::sleep(POLL_INTERVAL), if active => {}
                _ = self.watcher_arrived.notified(), if !active => {}
                _ = tokio::time::sleep_until(next_housekeeping) => {}
            }
            if pool.target().is_none() {
                continue;
            }
            let housekeeping = Instant::now() >= next_housekeeping;
            if housekeeping {
                next_housekeeping = Instant::now() + self.housekeeping;
            }
            match self.pass(&pool, housekeeping).await {
                Ok(head) => {
                    self.head.send_if_modified(|h| {
                        let changed = *h != head;
                        *h = head;
                        changed
                    });
                }
                Err(e) => {
                    // One line per minute at most while the database is away.
                    if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        tracing::warn!(error = %e, "change feed sequencer pass failed");
                        last_error = Some(Instant::now());
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }

    /// One pass: number what is committed (if no other process is doing it), trim when
    /// asked; returns the highest seq given.
    async fn pass(&self, pool: &Pool, housekeeping: bool) -> Result<u64, MorayError> {
        let deadline = Instant::now() + QUERY_TIMEOUT;
        let work = async {
            let mut conn = pool.get(deadline).await?;
            let r = async {
                begin(&mut conn, "BEGIN ISOLATION LEVEL READ COMMITTED").await?;
                let r = async {
                    let locked: bool = conn
                        .client
                        .query_one(
                            "SELECT pg_try_advisory_xact_lock($1::int8)",
                            &[&SEQUENCER_LOCK],
                        )
                        .await?
                        .try_get(0)?;
                    if !locked {
                        let row = conn.client.query_one(HEAD, &[]).await?;
                        return Ok(u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0));
                    }
                    let head = sequence(&mut conn).await?;
                    if housekeeping {
                        let secs = self.retention.as_secs_f64();
                        loop {
                            let purged =
                                conn.client.query_opt(PURGE, &[&secs, &PURGE_BATCH]).await?;
                            if purged.is_none() {
                                break;
                            }
                        }
                    }
                    Ok::<_, MorayError>(head)
                }
                .await;
                finish(&mut conn, r).await
            }
            .await;
            conn.done();
            r
        };
        tokio::time::timeout_at(deadline, work)
            .await
            .unwrap_or(Err(MorayError::QueryTimeout {
                timeout_ms: QUERY_TIMEOUT.as_millis() as u64,
            }))
    }
}

/// Numbers every unsequenced row the transaction sees (the caller holds the sequencer's
/// lock); returns the head.
async fn sequence(conn: &mut PooledConn) -> Result<u64, MorayError> {
    let stmt = conn.prepare(SEQUENCE).await?;
    loop {
        let row = conn.client.query_one(&stmt, &[&SEQUENCE_BATCH]).await?;
        let head: i64 = row.try_get(0)?;
        let n: i64 = row.try_get(1)?;
        if n < SEQUENCE_BATCH {
            return Ok(u64::try_from(head).unwrap_or(0));
        }
    }
}

fn event(bucket: &str, row: &tokio_postgres::Row) -> Result<Option<pb::ChangeEvent>, MorayError> {
    let Some(seq) = row.try_get::<_, Option<i64>>(1)? else {
        return Ok(None);
    };
    let op: i16 = row.try_get(2)?;
    Ok(Some(pb::ChangeEvent {
        seq: u64::try_from(seq).unwrap_or(0),
        op: if op == 2 {
            pb::change_event::Op::Delete as i32
        } else {
            pb::change_event::Op::Put as i32
        },
        bucket: bucket.to_string(),
        key: row.try_get(3)?,
        value: row.try_get::<_, Option<String>>(4)?.unwrap_or_default(),
        etag: row.try_get::<_, Option<String>>(5)?.unwrap_or_default(),
        mtime: row.try_get(6)?,
    }))
}

impl Store {
    /// Checks a Watch request (the bucket exists, `since` is still in the feed) and returns
    /// where to start.
    pub async fn watch_start(&self, req: &pb::WatchRequest) -> Result<u64, MorayError> {
        let timeout = self.timeout(0);
        let (bucket, since) = (req.bucket.clone(), req.since);
        self.with_conn(timeout, |mut conn| async move {
            let r = async {
                self.load_bucket(&mut conn, &bucket).await?;
                let row = conn.client.query_one(HEAD, &[]).await?;
                let head = u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0);
                let purged = u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0);
                if since == 0 {
                    return Ok(purged);
                }
                if since < purged {
                    return Err(MorayError::ResyncRequired {
                        since,
                        oldest: purged + 1,
                    });
                }
                if since > head {
                    return Err(MorayError::FeedAhead { since, head });
                }
                Ok(since)
            }
            .await;
            (conn, r)
        })
        .await
    }

    /// Sends the bucket's changes after `since` to `tx`, then follows new ones until the
    /// client goes away or `shutdown`.
    pub async fn watch(
        self: Arc<Self>,
        bucket: String,
        since: u64,
        tx: mpsc::Sender<Result<pb::ChangeEvent, tonic::Status>>,
        shutdown: CancellationToken,
    ) {
        let (_guard, mut head) = self.feed.subscribe();
        let mut last = since;
        loop {
            let batch = self
                .with_conn(QUERY_TIMEOUT, |conn| {
                    let bucket = bucket.clone();
                    async move {
                        let r = async {
                            let last_i = i64::try_from(last).unwrap_or(i64::MAX);
                            let rows = conn
                                .client
                                .query(READ, &[&bucket, &last_i, &WATCH_BATCH])
                                .await?;
                            let purged = match rows.first() {
                                Some(r) => u64::try_from(r.try_get::<_, i64>(0)?).unwrap_or(0),
                                None => 0,
                            };
                            if purged > last {
                                return Err(MorayError::ResyncRequired {
                                    since: last,
                                    oldest: purged + 1,
                                });
                            }
                            let mut events = Vec::with_capacity(rows.len());
                            for row in &rows {
                                events.extend(event(&bucket, row)?);
                            }
                            Ok(events)
                        }
                        .await;
                        (conn, r)
                    }
                })
                .await;
            let events = match batch {
                Ok(events) => events,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            let full = events.len() as i64 == WATCH_BATCH;
            for e in events {
                last = e.seq;
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                _ = head.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// Objects per snapshot page.
pub const SNAPSHOT_PAGE: usize = 500;

/// A bucket's objects at a feed position (see the module's comment).
pub struct Snapshot {
    pub position: u64,
    pub objects: Vec<pb::MorayObject>,
}

impl Snapshot {
    /// The snapshot as the pages Moray sends: every page carries the position, the last
    /// one says so; an empty snapshot is one empty last page.
    pub fn into_pages(self) -> Vec<pb::SnapshotPage> {
        let position = self.position;
        let mut pages: Vec<pb::SnapshotPage> = Vec::new();
        let mut objects = self.objects.into_iter().peekable();
        while objects.peek().is_some() {
            pages.push(pb::SnapshotPage {
                objects: objects.by_ref().take(SNAPSHOT_PAGE).collect(),
                position,
                last: false,
            });
        }
        match pages.last_mut() {
            Some(page) => page.last = true,
            None => pages.push(pb::SnapshotPage {
                objects: Vec::new(),
                position,
                last: true,
            }),
        }
        pages
    }
}

/// The snapshot's pages ([`Snapshot::into_pages`]), as the Snapshot RPC streams them.
impl IntoIterator for Snapshot {
    type Item = pb::SnapshotPage;
    type IntoIter = std::vec::IntoIter<pb::SnapshotPage>;

    fn into_iter(self) -> Self::IntoIter {
        self.into_pages().into_iter()
    }
}

impl Store {
    /// The objects of a bucket matching a filter and the feed position they are at.
    pub async fn snapshot(&self, req: pb::SnapshotRequest) -> Result<Snapshot, MorayError> {
        let text = if req.filter.trim().is_empty() {
            "(_id>=0)"
        } else {
            req.filter.as_str()
        };
        let filter =
            crate::filter::parse(text).map_err(|e| MorayError::invalid_query(text, e.0))?;
        let opts = FindOpts {
            limit: None,
            offset: 0,
            sort: Vec::new(),
            no_limit: true,
            no_count: true,
            require_indexes: false,
        };
        let timeout = self.timeout(req.options.as_ref().map_or(0, |o| o.timeout_ms));
        let bucket = req.bucket;
        self.with_conn(timeout, |mut conn| async move {
            let r = async {
                // The bucket's config as it is now, and BucketNotFoundError before any lock.
                self.load_bucket(&mut conn, &bucket).await?;
                conn.client
                    .query_one("SELECT pg_advisory_lock($1::int8)", &[&SEQUENCER_LOCK])
                    .await?;
                let r = async {
                    begin(&mut conn, "BEGIN ISOLATION LEVEL REPEATABLE READ").await?;
                    let r = async {
                        let position = sequence(&mut conn).await?;
                        let (tx, mut rx) = mpsc::channel(WATCH_CHANNEL);
                        let read = async {
                            let r = self
                                .find_in(&mut conn, &bucket, &filter, &opts, false, &tx)
                                .await;
                            drop(tx);
                            r
                        };
                        let collect = async {
                            let mut objects = Vec::new();
                            while let Some(o) = rx.recv().await {
                                objects.push(o);
                            }
                            objects
                        };
                        let (read, objects) = tokio::join!(read, collect);
                        read?;
                        let objects = objects
                            .into_iter()
                            .collect::<Result<Vec<_>, tonic::Status>>()
                            .map_err(|s| MorayError::Internal(s.message().to_string()))?;
                        Ok(Snapshot { position, objects })
                    }
                    .await;
                    finish(&mut conn, r).await
                }
                .await;
                conn.client
                    .query_one("SELECT pg_advisory_unlock($1::int8)", &[&SEQUENCER_LOCK])
                    .await?;
                r
            }
            .await;
            if r.is_err() {
                // The session lock may still be held: the connection goes, and the lock
                // with it.
                conn.discard();
            }
            (conn, r)
        })
        .await
    }
}
