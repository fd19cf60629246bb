//! The durable job engine. A job is a persisted chain of named steps (see [`record`]
//! for the record and the pure policy [`next_action`]). The engine:
//!
//! * runs the jobs of one VM one after another, in the order they were accepted (one
//!   queue and one worker per VM), and at most `max_running_jobs` at once;
//! * claims a job with an etag-conditional write of its lease (`runner`,
//!   `lease_until`), renews the lease while the job runs, and writes the record after
//!   every step transition, each write conditional on the etag of the last: two VMAPIs
//!   never run the same job, and a runner that lost its lease stops;
//! * gives every step attempt its own deadline, retries a step's retryable errors
//!   (another API away, a lost write race) until that deadline, and fails the step on
//!   anything else;
//! * at start-up, and every `orphan_scan_ms`, takes up unfinished jobs: its own (from
//!   before a restart) at once, other VMAPIs' once their lease has run out.

pub mod kind;
pub mod record;
pub mod saga;
pub mod steps;

mod add_nics;
mod create_snapshot;
mod delete_snapshot;
mod destroy;
mod mark_destroyed;
mod provision;
mod reboot;
mod remove_nics;
mod rollback_snapshot;
mod start;
mod stop;
mod update;

pub use kind::JobKind;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moray_client::filter::Filter;
use moray_client::{EtagCondition, FindOptions, Sort, SortOrder};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::jobs::record::{Action, Execution, JobRecord, next_action};
use crate::jobs::saga::{Step, StepFuture};
use crate::jobs::steps::Steps;
use crate::store::{Store, Versioned};
use triton_common::time::now_millis;

/// First pause before retrying a step's retryable error; doubled up to the maximum.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a record write keeps retrying while Moray is away before the job is left
/// for the next scan (or restart).
const SAVE_FOR: Duration = Duration::from_secs(60);
/// How often a job whose VM has an older job running elsewhere looks again.
const OLDER_JOB_POLL: Duration = Duration::from_millis(500);

/// A job being run: its record and etag, written back after every change.
pub struct JobCtx {
    inner: tokio::sync::Mutex<Versioned<JobRecord>>,
    store: Store,
    lease: Duration,
    /// Cancelled when the lease is lost (another runner took the job).
    lost: CancellationToken,
    /// Calls of the running step so far in this attempt (retryable errors call again).
    tries: AtomicU32,
    /// The name of the step running (or being undone).
    step: Mutex<&'static str>,
}

impl JobCtx {
    /// The name of the step running (or being undone), as its saga declares it.
    pub fn step(&self) -> &'static str {
        *self.step.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attempts made so far of the running step, this one included (a runner that
    /// died made the others).
    pub async fn attempts(&self) -> u32 {
        let step = self.step();
        self.inner
            .lock()
            .await
            .value
            .chain
            .iter()
            .find(|s| s.name == step)
            .map_or(0, |s| s.attempts)
    }

    /// Whether the running step is on its first call ever: no earlier attempt (by a
    /// runner that died) and no retry in this one, so it has left nothing behind for
    /// this call to find.
    pub async fn first_try(&self) -> bool {
        self.attempts().await == 1 && self.tries.load(Ordering::Relaxed) == 1
    }

    pub async fn record(&self) -> JobRecord {
        self.inner.lock().await.value.clone()
    }

    /// What an earlier step (or an earlier attempt of this one) left under `key`.
    pub async fn data<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let guard = self.inner.lock().await;
        guard
            .value
            .data
            .get(key)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// Records `value` under `key` in the job, durably, before returning.
    pub async fn set_data(&self, key: &str, value: impl Serialize) -> Result<()> {
        let value = serde_json::to_value(value)
            .map_err(|e| Error::Internal(format!("job data {key}: {e}")))?;
        self.change(|j| {
            j.data.insert(key.to_string(), value);
        })
        .await
    }

    /// Sets `key` in memory only: it is written with the step's end (a step that dies
    /// before that runs again and sets it again). For what a resumed step can find
    /// again by itself; task ids, which it cannot, go through [`JobCtx::set_data`].
    pub async fn stage(&self, key: &str, value: impl Serialize) -> Result<()> {
        let value = serde_json::to_value(value)
            .map_err(|e| Error::Internal(format!("job data {key}: {e}")))?;
        self.inner
            .lock()
            .await
            .value
            .data
            .insert(key.to_string(), value);
        Ok(())
    }

    pub async fn remove_data(&self, key: &str) -> Result<()> {
        self.change(|j| {
            j.data.remove(key);
        })
        .await
    }

    /// Applies `f` and writes the record (renewing the lease), conditional on the etag.
    async fn change(&self, f: impl FnOnce(&mut JobRecord)) -> Result<()> {
        let mut guard = self.inner.lock().await;
        let mut next = guard.value.clone();
        f(&mut next);
        next.lease_until = now_millis() + self.lease.as_millis() as i64;
        let deadline = tokio::time::Instant::now() + SAVE_FOR;
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self
                .store
                .put_job(&next, EtagCondition::Is(guard.etag.clone()))
                .await
            {
                Ok(etag) => {
                    *guard = Versioned { value: next, etag };
                    return Ok(());
                }
                Err(Error::Conflict(_)) => {
                    self.lost.cancel();
                    return Err(Error::Conflict(format!("job {}", next.uuid)));
                }
                Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e.full_message(), "cannot write the job record; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

pub struct Engine {
    store: Store,
    steps: Steps,
    instance_id: String,
    lease: Duration,
    /// Per VM: the jobs waiting for the VM's worker. A VM has a key while its worker runs.
    queues: Mutex<HashMap<String, VecDeque<String>>>,
    /// Jobs queued or running in this process.
    local: Mutex<HashSet<String>>,
    permits: Arc<Semaphore>,
    /// Wakes WaitJob callers when a job ends here.
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    running: AtomicUsize,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Engine {
    pub fn new(
        store: Store,
        steps: Steps,
        instance_id: String,
        lease: Duration,
        max_running: usize,
        shutdown: CancellationToken,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            store,
            steps,
            instance_id,
            lease,
            queues: Mutex::new(HashMap::new()),
            local: Mutex::new(HashSet::new()),
            permits: Arc::new(Semaphore::new(max_running)),
            waiters: Mutex::new(HashMap::new()),
            running: AtomicUsize::new(0),
            shutdown,
            tracker: TaskTracker::new(),
        })
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    pub fn running_jobs(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Waits for the workers to stop after shutdown.
    pub async fn drained(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a stored job behind the VM's earlier jobs.
    pub fn enqueue(self: &Arc<Self>, vm_uuid: &str, job_uuid: &str) {
        if self.shutdown.is_cancelled() || !Self::lock(&self.local).insert(job_uuid.to_string()) {
            return;
        }
        let mut queues = Self::lock(&self.queues);
        match queues.get_mut(vm_uuid) {
            Some(q) => q.push_back(job_uuid.to_string()),
            None => {
                queues.insert(vm_uuid.to_string(), VecDeque::from([job_uuid.to_string()]));
                let engine = self.clone();
                let vm = vm_uuid.to_string();
                self.tracker.spawn(async move { engine.worker(vm).await });
            }
        }
    }

    async fn worker(self: Arc<Self>, vm_uuid: String) {
        loop {
            let next = {
                let mut queues = Self::lock(&self.queues);
                match queues.get_mut(&vm_uuid).and_then(VecDeque::pop_front) {
                    Some(job) => job,
                    None => {
                        queues.remove(&vm_uuid);
                        return;
                    }
                }
            };
            let requeue = self.run(&next).await;
            Self::lock(&self.local).remove(&next);
            if requeue && !self.shutdown.is_cancelled() {
                // An older job of this VM is queued here behind this one: run it first.
                self.enqueue(&vm_uuid, &next);
            }
        }
    }

    /// Runs a job to its end (or until shutdown or a lost lease). True when the job
    /// must wait for an older job of its VM that this process has queued.
    async fn run(self: &Arc<Self>, job_uuid: &str) -> bool {
        let permit = tokio::select! {
            _ = self.shutdown.cancelled() => return false,
            p = self.permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return false,
            },
        };
        let outcome = self.claim_and_run(job_uuid).await;
        drop(permit);
        match outcome {
            Ok(requeue) => requeue,
            Err(e) => {
                tracing::warn!(job_uuid, error = %e.full_message(), "job stopped; it is resumed by the next scan");
                false
            }
        }
    }

    async fn claim_and_run(self: &Arc<Self>, job_uuid: &str) -> Result<bool> {
        let Some(found) = self.store.job_to_claim(job_uuid).await? else {
            return Ok(false);
        };
        let job = &found.value;
        if job.execution.is_final() {
            return Ok(false);
        }
        let now = now_millis();
        if job.runner != self.instance_id && job.lease_until > now {
            return Ok(false);
        }
        // Jobs of one VM run in the order they were accepted, across VMAPIs too. A
        // provision is its VM's first job (the VM record and the job are written in
        // one batch), so it has nothing older to wait for and skips the query.
        loop {
            let older = if job.name == JobKind::Provision {
                Vec::new()
            } else {
                self.older_unfinished(job).await?
            };
            if older.is_empty() {
                break;
            }
            let queued_here = {
                let local = Self::lock(&self.local);
                older.iter().any(|o| local.contains(&o.uuid))
            };
            if queued_here {
                return Ok(true);
            }
            // Not ours: take it over if its runner is gone (it runs first), else wait.
            let lease = self.lease.as_millis() as i64;
            if let Some(o) = older
                .iter()
                .find(|o| o.lease_until <= now_millis() && o.created_at + lease <= now_millis())
            {
                self.enqueue(&o.vm_uuid, &o.uuid);
                return Ok(true);
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(OLDER_JOB_POLL) => {}
            }
        }

        let mut claimed = found.value.clone();
        claimed.runner = self.instance_id.clone();
        claimed.lease_until = now_millis() + self.lease.as_millis() as i64;
        // The claim also records the start of the first step: one write, not two.
        let begun = claimed.advance(now_millis());
        let etag = match self
            .store
            .put_job(&claimed, EtagCondition::Is(found.etag.clone()))
            .await
        {
            Ok(etag) => etag,
            Err(Error::Conflict(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        let span = tracing::info_span!(
            "job",
            job_uuid = %claimed.uuid,
            job = %claimed.name,
            vm_uuid = %claimed.vm_uuid,
            owner_uuid = %claimed.owner_uuid,
        );
        let ctx = Arc::new(JobCtx {
            inner: tokio::sync::Mutex::new(Versioned {
                value: claimed,
                etag,
            }),
            store: self.store.clone(),
            lease: self.lease,
            lost: CancellationToken::new(),
            tries: AtomicU32::new(0),
            step: Mutex::new(""),
        });
        self.running.fetch_add(1, Ordering::Relaxed);
        let result = self.drive(ctx.clone(), begun).instrument(span).await;
        self.running.fetch_sub(1, Ordering::Relaxed);
        result.map(|()| false)
    }

    async fn older_unfinished(&self, job: &JobRecord) -> Result<Vec<JobRecord>> {
        let filter = Filter::and([
            Filter::eq("vm_uuid", &job.vm_uuid),
            Filter::or([
                Filter::eq("execution", Execution::Queued.as_str()),
                Filter::eq("execution", Execution::Running.as_str()),
            ]),
            Filter::le("created_at", job.created_at),
        ])
        .to_string();
        let options = FindOptions {
            limit: Some(100),
            no_count: true,
            sort: vec![Sort {
                attribute: "created_at".into(),
                order: SortOrder::Asc,
            }],
            ..Default::default()
        };
        Ok(self
            .store
            .find_jobs(&filter, &options)
            .await?
            .into_iter()
            .filter(|o| o.uuid != job.uuid && (o.created_at, &o.uuid) < (job.created_at, &job.uuid))
            .collect())
    }

    /// The runner loop: ask the policy, act, record, again.
    async fn drive(self: &Arc<Self>, ctx: Arc<JobCtx>, begun: Option<Action>) -> Result<()> {
        let renewer = {
            let ctx = ctx.clone();
            let every = self.lease / 3;
            let stop = ctx.lost.child_token();
            let handle_stop = stop.clone();
            let task = tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(every) => {}
                    }
                    if let Err(e) = ctx.change(|_| {}).await {
                        tracing::warn!(error = %e.full_message(), "cannot renew the job's lease");
                        if matches!(e, Error::Conflict(_)) {
                            return;
                        }
                    }
                }
            });
            (task, handle_stop)
        };
        let result = self.drive_steps(&ctx, begun).await;
        renewer.1.cancel();
        let _ = renewer.0.await;
        let record = ctx.record().await;
        if record.execution.is_final() {
            tracing::info!(
                execution = record.execution.as_str(),
                error = record.error.as_deref().unwrap_or(""),
                "job ended"
            );
            if let Some(n) = Self::lock(&self.waiters).remove(&record.uuid) {
                n.notify_waiters();
            }
        }
        result
    }

    /// `begun`: an action whose start the last write already recorded (the end of one
    /// transition and the start of the next go in one write, see
    /// [`JobRecord::advance`]).
    async fn drive_steps(
        self: &Arc<Self>,
        ctx: &Arc<JobCtx>,
        mut begun: Option<Action>,
    ) -> Result<()> {
        loop {
            let record = ctx.record().await;
            let action = next_action(&record);
            // The start of a step, of an undo or the job's success, unless the last
            // write recorded it.
            let starts = matches!(action, Action::Run(_) | Action::Undo(_) | Action::Succeed);
            if begun.take() != Some(action) && starts {
                ctx.change(|j| {
                    j.begin(action, now_millis());
                })
                .await?;
            }
            match action {
                Action::Done => return Ok(()),
                Action::Succeed => {}
                Action::Run(i) | Action::Undo(i) => {
                    let undo = matches!(action, Action::Undo(_));
                    let Some(outcome) = self.step(ctx, &record, i, undo).await else {
                        return Ok(());
                    };
                    ctx.change(|j| begun = j.end(action, outcome, now_millis()))
                        .await?;
                }
                Action::Fail => {
                    if let Some(on_failure) = record.name.saga().on_failure {
                        let timeout = self.steps.default_timeout();
                        let Some(outcome) = self.attempt(ctx, "", timeout, on_failure).await else {
                            return Ok(());
                        };
                        if let Err(e) = outcome {
                            tracing::error!(error = %e, "cannot record the failure on the VM");
                        }
                    }
                    ctx.change(|j| j.finish(Execution::Failed, now_millis()))
                        .await?;
                }
            }
        }
    }

    /// Runs step `i` of the job (or with `undo` its undo) as the job's saga declares it:
    /// its outcome, or `None` when the job is left as it stands.
    async fn step(
        &self,
        ctx: &JobCtx,
        record: &JobRecord,
        i: usize,
        undo: bool,
    ) -> Option<std::result::Result<Value, String>> {
        let stored = &record.chain[i];
        let timeout = Duration::from_secs(stored.timeout_s.max(1));
        let step = record.name.saga().step(&stored.name);
        if undo {
            let outcome = match step {
                Some(Step {
                    name,
                    undo: Some(undo),
                    ..
                }) => self.attempt(ctx, name, timeout, *undo).await?,
                // A step its saga gives no undo has nothing to undo.
                _ => Ok(()),
            };
            if let Err(e) = &outcome {
                tracing::error!(step = %stored.name, error = %e, "undo failed; what the step made may be left over");
            }
            return Some(outcome.map(|()| Value::Null));
        }
        tracing::debug!(step = %stored.name, "step started");
        let outcome = match step {
            Some(step) => self.attempt(ctx, step.name, timeout, step.action).await?,
            // Only a record written by another version can name it.
            None => Err(format!("job {} has no step {}", record.name, stored.name)),
        };
        if let Err(e) = &outcome {
            tracing::warn!(step = %stored.name, error = %e, "step failed; unwinding");
        }
        Some(outcome)
    }

    /// One attempt of step `step` (its action, its undo, or the kind's failure
    /// handler) with its deadline, retrying retryable errors until then. `None` when
    /// the engine is shutting down or the lease was lost (the job is left as it
    /// stands, to be resumed).
    async fn attempt<T>(
        &self,
        ctx: &JobCtx,
        step: &'static str,
        timeout: Duration,
        f: for<'a> fn(&'a Steps, &'a JobCtx) -> StepFuture<'a, T>,
    ) -> Option<std::result::Result<T, String>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut backoff = FIRST_BACKOFF;
        *Self::lock(&ctx.step) = step;
        ctx.tries.store(0, Ordering::Relaxed);
        loop {
            ctx.tries.fetch_add(1, Ordering::Relaxed);
            let call = tokio::time::timeout_at(deadline, f(&self.steps, ctx));
            let outcome = tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = ctx.lost.cancelled() => return None,
                o = call => o,
            };
            match outcome {
                Err(_) => {
                    return Some(Err(format!(
                        "timed out after {} s",
                        timeout.as_secs_f64().round()
                    )));
                }
                Ok(Ok(v)) => return Some(Ok(v)),
                Ok(Err(e)) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                    tracing::info!(error = %e.full_message(), "retryable error; trying again");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return None,
                        _ = tokio::time::sleep_until((tokio::time::Instant::now() + backoff).min(deadline)) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Ok(Err(e)) => return Some(Err(e.full_message())),
            }
        }
    }

    /// Takes up unfinished jobs: this VMAPI's own (it restarted) and those whose
    /// runner's lease ran out (or that nobody claimed within a lease).
    pub async fn resume(self: &Arc<Self>) -> Result<usize> {
        let now = now_millis();
        let lease = self.lease.as_millis() as i64;
        let mut taken = 0;
        for job in self.store.unfinished_jobs().await? {
            let orphan = if job.runner.is_empty() {
                job.created_at + lease <= now
            } else {
                job.runner == self.instance_id || job.lease_until <= now
            };
            if orphan && !Self::lock(&self.local).contains(&job.uuid) {
                taken += 1;
                self.enqueue(&job.vm_uuid, &job.uuid);
            }
        }
        Ok(taken)
    }

    /// Resumes this VMAPI's own unfinished jobs (after a restart), then scans for
    /// orphans every `every` until shutdown.
    pub async fn scan_loop(self: Arc<Self>, every: Duration) {
        loop {
            match self.resume().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "resuming unfinished jobs"),
                Err(e) => {
                    tracing::warn!(error = %e.full_message(), "cannot scan for unfinished jobs")
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// The job once it has ended, or as it stands when `timeout` passes.
    pub async fn wait(&self, job_uuid: &str, timeout: Duration) -> Result<JobRecord> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notify = Self::lock(&self.waiters)
                .entry(job_uuid.to_string())
                .or_insert_with(|| Arc::new(Notify::new()))
                .clone();
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let job = self
                .store
                .get_job(job_uuid)
                .await?
                .ok_or_else(|| Error::NotFound(format!("job {job_uuid} does not exist")))?
                .value;
            if job.execution.is_final() || tokio::time::Instant::now() >= deadline {
                return Ok(job);
            }
            // Jobs run by another VMAPI end without a notification here: look again
            // every second.
            let poll = (tokio::time::Instant::now() + Duration::from_secs(1)).min(deadline);
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(poll) => {}
                _ = self.shutdown.cancelled() => return Ok(job),
            }
        }
    }
}
