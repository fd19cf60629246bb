//! A real shard for tests (the harness is `manatee_testkit`, shared with the
//! cross-service tests in `tests/`), plus a writer that commits through whatever primary
//! the cluster state names and remembers every acknowledged key.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use manatee_client::state::ShardKeys;
use manatee_client::watch_primary;
use manatee_testkit::faults::{Workload, assert_none_lost};
pub use manatee_testkit::{Binaries, LEASE_TTL_SECS, SHARD, Shard};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

/// Starts a shard of `n` sitters with this package's binaries.
pub fn start_shard(n: usize) -> Shard {
    Shard::start(
        n,
        Binaries {
            sitter: env!("CARGO_BIN_EXE_manatee-sitter").into(),
            adm: env!("CARGO_BIN_EXE_manatee-adm").into(),
        },
    )
}

/// Every acknowledged write: key -> value.
#[derive(Default)]
pub struct Acked {
    pub keys: BTreeMap<String, String>,
    /// Successful commits: when each was sent and when it was acknowledged.
    pub successes: Vec<(Instant, Instant)>,
    pub failures: u64,
}

/// Writes continuously through the primary the cluster state names (as Moray will),
/// one new key per commit; a commit counts only when PostgreSQL acknowledged it (with
/// synchronous replication to the sync). A failed or timed-out commit is never retried
/// with the same key: it might have been applied.
pub struct Writer {
    pub acked: Arc<Mutex<Acked>>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// How long one commit may take before the writer gives up on it (it is then unknown).
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(3);

impl Writer {
    pub async fn start(shard: &Shard) -> Writer {
        let primary_url = shard.sitters[0].url();
        let (client, conn) =
            tokio_postgres::connect(&primary_url_for(shard).await.unwrap_or(primary_url), NoTls)
                .await
                .expect("connect to the primary");
        tokio::spawn(conn);
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS acked (k text PRIMARY KEY, v text NOT NULL)")
            .await
            .expect("create table");
        drop(client);
        let cancel = CancellationToken::new();
        let (primary, _follow) =
            watch_primary(shard.client(), ShardKeys::new(SHARD), None, cancel.clone());
        let acked = Arc::new(Mutex::new(Acked::default()));
        let task = tokio::spawn(write_loop(primary, acked.clone(), cancel.clone()));
        Writer {
            acked,
            cancel,
            task,
        }
    }

    /// A copy of the acknowledged keys (the lock is not held after this returns).
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        self.acked
            .lock()
            .map(|a| a.keys.clone())
            .unwrap_or_default()
    }

    pub fn count(&self) -> usize {
        self.acked.lock().map(|a| a.keys.len()).unwrap_or(0)
    }

    pub fn last_success(&self) -> Option<Instant> {
        self.acked
            .lock()
            .ok()
            .and_then(|a| a.successes.last().map(|s| s.1))
    }

    /// When the first commit sent after `t` was acknowledged.
    pub fn first_success_after(&self, t: Instant) -> Option<Instant> {
        self.acked
            .lock()
            .ok()
            .and_then(|a| a.successes.iter().find(|s| s.0 > t).map(|s| s.1))
    }

    /// Waits until at least `n` more commits succeed.
    pub async fn wait_progress(&self, n: usize, timeout: Duration, what: &str) {
        let start = self.count();
        let deadline = Instant::now() + timeout;
        while self.count() < start + n {
            if Instant::now() > deadline {
                panic!("{what}: writes did not resume within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) -> Acked {
        self.cancel.cancel();
        let _ = self.task.await;
        match Arc::try_unwrap(self.acked) {
            Ok(m) => m.into_inner().unwrap_or_default(),
            Err(arc) => std::mem::take(&mut *arc.lock().expect("acked lock")),
        }
    }
}

async fn primary_url_for(shard: &Shard) -> Option<String> {
    let s = shard.state().await?;
    let i = shard.index_of(&s.primary.id);
    Some(shard.sitters[i].url())
}

async fn write_loop(
    mut primary: tokio::sync::watch::Receiver<Option<String>>,
    acked: Arc<Mutex<Acked>>,
    cancel: CancellationToken,
) {
    let mut n: u64 = 0;
    let mut conn: Option<(String, tokio_postgres::Client)> = None;
    while !cancel.is_cancelled() {
        let url = primary.borrow_and_update().clone();
        let Some(url) = url else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if conn
            .as_ref()
            .is_none_or(|(u, c)| *u != url || c.is_closed())
        {
            conn = None;
            let cfg = format!("{url}?connect_timeout=2");
            match tokio::time::timeout(COMMIT_TIMEOUT, tokio_postgres::connect(&cfg, NoTls)).await {
                Ok(Ok((client, c))) => {
                    tokio::spawn(c);
                    conn = Some((url.clone(), client));
                }
                _ => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some((_, client)) = conn.as_ref() else {
            continue;
        };
        n += 1;
        let key = format!("k{n:08}");
        let value = format!("v{n}-{}", n * 7919 % 1000);
        let sent = Instant::now();
        let r = tokio::time::timeout(
            COMMIT_TIMEOUT,
            client.execute("INSERT INTO acked (k, v) VALUES ($1, $2)", &[&key, &value]),
        )
        .await;
        match r {
            Ok(Ok(1)) => {
                if let Ok(mut a) = acked.lock() {
                    a.keys.insert(key, value);
                    a.successes.push((sent, Instant::now()));
                }
            }
            _ => {
                // Unknown outcome: never reuse this key; reconnect.
                if let Ok(mut a) = acked.lock() {
                    a.failures += 1;
                }
                conn = None;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Checks that every acknowledged key is on the current primary with its value.
pub async fn check_acked(shard: &Shard, acked: &BTreeMap<String, String>, what: &str) {
    let url = primary_url_for(shard).await.expect("a primary");
    let (client, conn) = tokio_postgres::connect(&url, NoTls)
        .await
        .expect("connect to the primary");
    tokio::spawn(conn);
    let rows = client
        .query("SELECT k, v FROM acked", &[])
        .await
        .expect("read back");
    let found: BTreeMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_none_lost(acked, &found, what);
}

impl Workload for Writer {
    async fn wait_progress(&self, n: usize, timeout: Duration, what: &str) {
        Writer::wait_progress(self, n, timeout, what).await;
    }

    fn first_success_after(&self, t: Instant) -> Option<Instant> {
        Writer::first_success_after(self, t)
    }

    async fn check(&self, shard: &Shard, what: &str) {
        check_acked(shard, &self.snapshot(), what).await;
    }
}
