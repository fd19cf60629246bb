//! A service's periodic background tasks (VMAPI's and CNAPI's reconcilers, say): each runs
//! every interval until shutdown; after a failure the next run waits longer (the interval
//! doubled per failure in a row, up to [`MAX_BACKOFF_FACTOR`] times, with jitter so that
//! several instances do not retry in step), and a success goes back to the interval.
//!
//! What each task did last is kept in [`Tasks`]: its last run, last success, last error
//! (with its causes), failures in a row and next run. An operator sees it two ways:
//!
//! - the gRPC health service reports each task as the service `task:<name>`: SERVING
//!   while its last run succeeded (or before its first), NOT_SERVING after a failure
//!   (`grpcurl -d '{"service":"task:reconcile"}' HOST:PORT grpc.health.v1.Health/Check`);
//! - a failure is logged at warn with the task, the error and its causes, failures in a
//!   row and when the next run is; the first success after failures is logged at info.

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// After failures in a row the pause grows to at most this many intervals.
pub const MAX_BACKOFF_FACTOR: u32 = 8;

/// The health service name of the task `name`.
pub fn health_name(name: &str) -> String {
    format!("task:{name}")
}

/// What one task did last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskState {
    /// When the last run ended.
    pub last_run: Option<SystemTime>,
    /// When the last successful run ended.
    pub last_success: Option<SystemTime>,
    /// The last run's error and its causes (`a: b: c`), when it failed.
    pub last_error: Option<String>,
    /// Failed runs in a row (0 after a success).
    pub failures: u32,
    /// Runs so far.
    pub runs: u64,
    /// When the next run starts.
    pub next_run: Option<SystemTime>,
}

impl TaskState {
    /// The last run succeeded, or there has been none yet.
    pub fn healthy(&self) -> bool {
        self.last_error.is_none()
    }
}

/// The periodic tasks of one service and what each did last; clones share it.
#[derive(Debug, Clone)]
pub struct Tasks {
    states: Arc<Mutex<BTreeMap<String, TaskState>>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks {
            states: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }
}

impl Tasks {
    /// No tasks yet.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// What the task `name` did last, if it is one of these.
    pub fn state(&self, name: &str) -> Option<TaskState> {
        self.lock().get(name).cloned()
    }

    /// Every task's state, by name.
    pub fn all(&self) -> BTreeMap<String, TaskState> {
        self.lock().clone()
    }

    /// A receiver told of every change (for a reporter of the states).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, TaskState>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut TaskState)) {
        change(self.lock().entry(name.to_string()).or_default());
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Keeps `health` reporting each task as `task:<name>` (SERVING while healthy) until
    /// `shutdown`.
    pub fn report_to(
        &self,
        health: tonic_health::server::HealthReporter,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let tasks = self.clone();
        let mut changed = self.subscribe();
        tokio::spawn(async move {
            loop {
                for (name, state) in tasks.all() {
                    let status = if state.healthy() {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    health.set_service_status(health_name(&name), status).await;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    c = changed.changed() => if c.is_err() { return },
                }
            }
        })
    }
}

/// One run's future, borrowing the task's state.
pub type RunFuture<'a, E> = Pin<Box<dyn Future<Output = Result<(), E>> + Send + 'a>>;

/// A task to run every interval.
#[derive(Debug, Clone)]
pub struct Periodic {
    name: &'static str,
    every: Duration,
    at_start: bool,
}

impl Periodic {
    /// `name` is how logs and the health service call it; the first run is one interval
    /// after the start.
    pub fn new(name: &'static str, every: Duration) -> Periodic {
        Periodic {
            name,
            every: every.max(Duration::from_millis(1)),
            at_start: false,
        }
    }

    /// The first run at once rather than one interval after the start.
    pub fn at_start(mut self) -> Periodic {
        self.at_start = true;
        self
    }

    /// Runs `run(&mut state)` on schedule until `shutdown`, recording each run in
    /// `tasks`. A run in progress when `shutdown` comes is finished first.
    ///
    /// ```ignore
    /// Periodic::new("reconcile", every).spawn(&tasks, shutdown, reconciler, |r| Box::pin(r.pass()));
    /// ```
    pub fn spawn<S, E, F>(
        self,
        tasks: &Tasks,
        shutdown: CancellationToken,
        mut state: S,
        mut run: F,
    ) -> JoinHandle<()>
    where
        S: Send + 'static,
        E: std::error::Error + Send + 'static,
        F: for<'a> FnMut(&'a mut S) -> RunFuture<'a, E> + Send + 'static,
    {
        let tasks = tasks.clone();
        tokio::spawn(async move {
            let name = self.name;
            let mut wait = if self.at_start {
                Duration::ZERO
            } else {
                self.every
            };
            loop {
                tasks.update(name, |s| s.next_run = Some(SystemTime::now() + wait));
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                let error = run(&mut state)
                    .await
                    .err()
                    .map(|e| crate::service::chain(&e));
                let now = SystemTime::now();
                let failures = tasks.state(name).map(|s| s.failures).unwrap_or(0);
                match error {
                    None => {
                        if failures > 0 {
                            tracing::info!(task = name, failures, "periodic task recovered");
                        }
                        wait = self.every;
                        tasks.update(name, |s| {
                            s.last_run = Some(now);
                            s.last_success = Some(now);
                            s.last_error = None;
                            s.failures = 0;
                            s.runs += 1;
                        });
                    }
                    Some(error) => {
                        let failures = failures.saturating_add(1);
                        wait = backoff(self.every, failures);
                        tracing::warn!(
                            task = name,
                            error = %error,
                            failures,
                            next_run_in_ms = wait.as_millis() as u64,
                            "periodic task failed"
                        );
                        tasks.update(name, |s| {
                            s.last_run = Some(now);
                            s.last_error = Some(error);
                            s.failures = failures;
                            s.runs += 1;
                        });
                    }
                }
            }
        })
    }
}

/// The pause after `failures` failed runs in a row: the interval doubled per failure (up
/// to [`MAX_BACKOFF_FACTOR`] times), less up to a fifth at random.
pub fn backoff(every: Duration, failures: u32) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(MAX_BACKOFF_FACTOR);
    let full = every.saturating_mul(factor);
    // A random fraction in [0, 1/5) from the std hasher's random keys (no RNG crate).
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let fifth = full / 5;
    let nanos = u64::try_from(fifth.as_nanos()).unwrap_or(u64::MAX);
    let cut = if nanos == 0 { 0 } else { random % nanos };
    full.saturating_sub(Duration::from_nanos(cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_below() {
        let every = Duration::from_secs(10);
        for (failures, factor) in [(1, 1), (2, 2), (3, 4), (4, 8), (9, 8), (40, 8)] {
            let full = every * factor;
            let got = backoff(every, failures);
            assert!(got <= full && got > full * 4 / 5, "{failures}: {got:?}");
        }
    }
}
