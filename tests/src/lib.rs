//! Cross-service end-to-end tests: real processes under the services, faults injected by
//! signal. This library is their shared harness:
//!
//! - [`MorayOnShard`]: a real Manatee shard ([`manatee_testkit::Shard`]: etcd, three
//!   `manatee-sitter`s with their PostgreSQLs) and a real Moray started in-process from
//!   its config (`manatee_etcd`, `manatee_shard`), so it follows the shard's primary
//!   through `manatee_client::watch_primary` exactly as the `moray` binary does.
//! - [`Load`]: concurrent writers doing `PutObject` through the Moray client, each keeping
//!   the keys Moray acknowledged. A retryable error means "not applied": the writer sends
//!   the same put again, conditioned on the key not existing, so a retryable error that
//!   *was* applied shows up as an etag conflict and fails the test. An unknown outcome
//!   (`ConnectionLostError`, a timeout) means "maybe applied": the key is abandoned and
//!   only acknowledged keys are ever checked.

// A test kit fails the test it serves by panicking, with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use manatee_testkit::faults::{Workload, assert_none_lost};
use manatee_testkit::{Binaries, SHARD, Shard};
use moray_client::{
    BucketConfig, ConnectOptions, EtagCondition, FindOptions, IndexDef, MorayClient,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use manatee_testkit;
pub use manatee_testkit::faults::median_max;

/// The bucket the load writes.
pub const BUCKET: &str = "e2e_acked";
/// Deadline of one write through Moray (client side, and sent to Moray, which cancels
/// the statement): a write to a paused primary is given up as "unknown" after this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Moray's timeout to open one PostgreSQL connection (a paused primary accepts TCP
/// connections but never answers).
pub const MORAY_CONNECT_TIMEOUT_MS: u64 = 1_000;

/// A Manatee shard with a Moray following it.
pub struct MorayOnShard {
    pub shard: Shard,
    /// Moray's address, `tcp://127.0.0.1:<port>`.
    pub moray_url: String,
    /// A client with [`REQUEST_TIMEOUT`] on every call (for the writers).
    pub client: MorayClient,
    /// A client with a long deadline, for reading everything back.
    pub reader: MorayClient,
    shutdown: CancellationToken,
    moray: Option<tokio::task::JoinHandle<Result<(), moray::MorayError>>>,
}

impl MorayOnShard {
    /// Builds the manatee binaries (cargo, in this test's profile), starts etcd and three
    /// sitters, waits until the shard is healthy, starts Moray following it and creates
    /// [`BUCKET`] through it.
    pub async fn start(settle: Duration) -> MorayOnShard {
        let binaries = tokio::task::spawn_blocking(Binaries::build)
            .await
            .expect("build task")
            .unwrap_or_else(|e| panic!("manatee binaries: {e}"));
        let shard = tokio::task::spawn_blocking(move || Shard::start(3, binaries))
            .await
            .expect("shard start task");
        shard.wait_healthy(settle, "initial setup").await;
        let shutdown = CancellationToken::new();
        let config = moray::Config {
            listen: "127.0.0.1:0".into(),
            manatee_etcd: shard.etcd.endpoint(),
            manatee_shard: SHARD.into(),
            connect_timeout_ms: MORAY_CONNECT_TIMEOUT_MS,
            ..Default::default()
        };
        let running = moray::start(config, shutdown.clone())
            .await
            .expect("moray starts following the shard");
        let moray_url = format!("tcp://{}", running.addr);
        let client = MorayClient::connect_with(
            &moray_url,
            ConnectOptions {
                request_timeout: Some(REQUEST_TIMEOUT),
                ..Default::default()
            },
        )
        .await
        .expect("connect to moray");
        let reader = MorayClient::connect_with(
            &moray_url,
            ConnectOptions {
                request_timeout: Some(Duration::from_secs(120)),
                ..Default::default()
            },
        )
        .await
        .expect("connect to moray");
        let mut config = BucketConfig::versioned(1);
        config.index.insert("w".into(), IndexDef::new("number"));
        // Moray sets its tables up once it has seen the primary; until then calls fail.
        let deadline = Instant::now() + settle;
        loop {
            match reader.put_bucket(BUCKET, &config).await {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("creating the bucket: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("cannot create the bucket through moray: {e}"),
            }
        }
        MorayOnShard {
            shard,
            moray_url,
            client,
            reader,
            shutdown,
            moray: Some(running.task),
        }
    }

    /// Checks, through Moray, that every acknowledged key holds its acknowledged value
    /// ([`check_acked`]).
    pub async fn check_acked(&self, acked: &BTreeMap<String, Value>, what: &str) {
        check_acked(&self.reader, acked, what).await;
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.moray.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MorayOnShard {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Checks, through Moray, that every acknowledged key holds its acknowledged value:
/// all of them with one find, and a sample of them (the newest) with GetObject.
pub async fn check_acked(reader: &MorayClient, acked: &BTreeMap<String, Value>, what: &str) {
    let options = FindOptions {
        no_limit: true,
        no_count: true,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let rows = loop {
        match reader.find_objects(BUCKET, "(w=*)", &options).await {
            Ok(rows) => break rows,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{what}: reading back through moray: {e}"),
        }
    };
    let found: BTreeMap<String, Value> = rows.into_iter().map(|o| (o.key, o.value)).collect();
    assert_none_lost(acked, &found, &format!("{what} (read through moray)"));
    for (k, v) in acked.iter().rev().take(100) {
        let got = reader
            .get_object(BUCKET, k)
            .await
            .unwrap_or_else(|e| panic!("{what}: GetObject {k}: {e}"));
        assert_eq!(
            got.as_ref().map(|o| &o.value),
            Some(v),
            "{what}: GetObject {k}"
        );
    }
}

/// What the writers saw.
#[derive(Default, Debug)]
pub struct Acked {
    /// Every acknowledged write: key -> value.
    pub keys: BTreeMap<String, Value>,
    /// Each acknowledged write: when the attempt that succeeded was sent, and when it
    /// was acknowledged.
    pub successes: Vec<(Instant, Instant)>,
    /// Retryable errors (not applied; the put was sent again).
    pub retryable: u64,
    /// Unknown outcomes (maybe applied; the key was abandoned).
    pub unknown: u64,
    /// Errors of neither kind, and retryable errors that turned out to have been
    /// applied: each is a bug. Kept to fail the test with.
    pub wrong: Vec<String>,
    /// One example of each error name seen, for the log.
    pub examples: BTreeMap<String, String>,
}

impl Acked {
    /// Keeps `e` as the example of its name, unless there is one already.
    fn saw(&mut self, e: &moray_client::MorayError) {
        self.examples
            .entry(e.name().to_string())
            .or_insert_with(|| e.to_string());
    }
}

/// Concurrent writers, each putting new keys through Moray one after the other.
pub struct Load {
    pub acked: Arc<Mutex<Acked>>,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `writers` writers on `client`; each pauses `pause` after an acknowledged put.
    pub fn start(client: &MorayClient, writers: usize, pause: Duration) -> Load {
        let acked = Arc::new(Mutex::new(Acked::default()));
        let cancel = CancellationToken::new();
        let tasks = (0..writers)
            .map(|w| {
                tokio::spawn(write_loop(
                    client.clone(),
                    w,
                    pause,
                    acked.clone(),
                    cancel.clone(),
                ))
            })
            .collect();
        Load {
            acked,
            cancel,
            tasks,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Acked) -> T) -> T {
        let a = self.acked.lock().unwrap_or_else(|e| e.into_inner());
        f(&a)
    }

    /// A copy of the acknowledged keys.
    pub fn snapshot(&self) -> BTreeMap<String, Value> {
        self.with(|a| a.keys.clone())
    }

    pub fn count(&self) -> usize {
        self.with(|a| a.keys.len())
    }

    /// When the first write sent after `t` was acknowledged.
    pub fn first_success_after(&self, t: Instant) -> Option<Instant> {
        self.with(|a| a.successes.iter().filter(|s| s.0 > t).map(|s| s.1).min())
    }

    /// Waits until at least `n` more writes are acknowledged.
    pub async fn wait_progress(&self, n: usize, timeout: Duration, what: &str) {
        let start = self.count();
        let deadline = Instant::now() + timeout;
        while self.count() < start + n {
            if Instant::now() > deadline {
                panic!(
                    "{what}: writes through moray did not resume within {timeout:?}; errors seen: {:?}",
                    self.with(|a| a.examples.clone())
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Panics when any write got an error that is neither retryable nor an unknown
    /// outcome, or a retryable error that had in fact been applied.
    pub fn assert_no_wrong(&self, what: &str) {
        let wrong = self.with(|a| a.wrong.clone());
        assert!(
            wrong.is_empty(),
            "{what}: {} misclassified errors, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
    }

    pub async fn stop(self) -> Acked {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        let mut a = self.acked.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *a)
    }
}

async fn write_loop(
    client: MorayClient,
    w: usize,
    pause: Duration,
    acked: Arc<Mutex<Acked>>,
    cancel: CancellationToken,
) {
    let record = |f: &mut dyn FnMut(&mut Acked)| {
        let mut a = acked.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut a);
    };
    let mut n: u64 = 0;
    'keys: while !cancel.is_cancelled() {
        n += 1;
        let key = format!("w{w}-{n:08}");
        let value = json!({"w": w, "n": n, "v": format!("{w}-{n}-{}", n * 7919 % 1000)});
        let mut retried = false;
        loop {
            if cancel.is_cancelled() {
                break 'keys;
            }
            let sent = Instant::now();
            // The key must not exist: after a retryable error ("not applied") a resend
            // that finds it proves the error was wrong.
            match client
                .put_object(BUCKET, &key, &value, EtagCondition::MustNotExist)
                .await
            {
                Ok(_) => {
                    let done = Instant::now();
                    record(&mut |a| {
                        a.keys.insert(key.clone(), value.clone());
                        a.successes.push((sent, done));
                    });
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                    continue 'keys;
                }
                Err(e) if retried && e.name() == "EtagConflictError" => {
                    record(&mut |a| {
                        a.wrong.push(format!(
                            "{key}: a retryable error was reported for a put that was applied"
                        ))
                    });
                    continue 'keys;
                }
                Err(e) if e.is_retryable() => {
                    retried = true;
                    record(&mut |a| {
                        a.retryable += 1;
                        a.saw(&e);
                    });
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) if e.is_unknown_outcome() => {
                    record(&mut |a| {
                        a.unknown += 1;
                        a.saw(&e);
                    });
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue 'keys;
                }
                Err(e) => {
                    record(&mut |a| {
                        a.wrong.push(format!("{key}: {e} (code {:?})", e.code()));
                        a.saw(&e);
                    });
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue 'keys;
                }
            }
        }
    }
}

/// A [`Load`] read back through Moray with `reader`, as the shard's faults check it: every
/// acknowledged write there, and no error misclassified.
pub struct LoadThrough<'a> {
    pub load: &'a Load,
    pub reader: &'a MorayClient,
}

impl Workload for LoadThrough<'_> {
    async fn wait_progress(&self, n: usize, timeout: Duration, what: &str) {
        self.load.wait_progress(n, timeout, what).await;
    }

    fn first_success_after(&self, t: Instant) -> Option<Instant> {
        self.load.first_success_after(t)
    }

    async fn check(&self, _shard: &Shard, what: &str) {
        check_acked(self.reader, &self.load.snapshot(), what).await;
        self.load.assert_no_wrong(what);
    }
}
