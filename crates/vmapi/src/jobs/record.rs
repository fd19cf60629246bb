//! A job as stored (Moray bucket `vmapi_jobs`): a named chain of steps, each with its
//! status, times, result and whether it has an undo. [`next_action`] is the whole
//! policy of the engine, a pure function of the record: the runner asks it what to do,
//! does it, records the outcome, and asks again. Because the record is written after
//! every transition, a runner that dies anywhere leaves a record from which a new
//! runner carries on: a step found `running` is run again (steps are idempotent), a
//! failure found half unwound is unwound the rest of the way.

use crate::config::Timeouts;
use crate::jobs::kind::JobKind;
use crate::model::VmRecord;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use triton_proto::vmapi::v1 as pb;

use triton_common::time::{now_millis, rfc3339_millis};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Execution {
    Queued,
    Running,
    Succeeded,
    Failed,
    Canceled,
}

impl Execution {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Execution::Succeeded | Execution::Failed | Execution::Canceled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Execution::Queued => "queued",
            Execution::Running => "running",
            Execution::Succeeded => "succeeded",
            Execution::Failed => "failed",
            Execution::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Execution> {
        [
            Execution::Queued,
            Execution::Running,
            Execution::Succeeded,
            Execution::Failed,
            Execution::Canceled,
        ]
        .into_iter()
        .find(|e| e.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    /// Its undo has started.
    Undoing,
    Undone,
    UndoFailed,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Undoing => "undoing",
            StepStatus::Undone => "undone",
            StepStatus::UndoFailed => "undo_failed",
        }
    }

    /// The step belongs to a failed job being (or having been) unwound.
    fn marks_failure(self) -> bool {
        matches!(
            self,
            StepStatus::Failed | StepStatus::Undoing | StepStatus::Undone | StepStatus::UndoFailed
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub status: StepStatus,
    /// Whether the step has an undo to run when a later step fails.
    pub undo: bool,
    pub timeout_s: u64,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub started_at: Option<i64>,
    #[serde(default)]
    pub finished_at: Option<i64>,
    #[serde(default)]
    pub result: Value,
    #[serde(default)]
    pub error: Option<String>,
}

impl StepRecord {
    pub fn new(name: &str, undo: bool, timeout_s: u64) -> StepRecord {
        StepRecord {
            name: name.to_string(),
            status: StepStatus::Pending,
            undo,
            timeout_s,
            attempts: 0,
            started_at: None,
            finished_at: None,
            result: Value::Null,
            error: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub uuid: String,
    /// The kind, stored as its string (`provision`, `start`, ...).
    pub name: JobKind,
    pub vm_uuid: String,
    pub owner_uuid: String,
    pub execution: Execution,
    pub params: Value,
    pub chain: Vec<StepRecord>,
    /// What steps leave for later steps (server, NICs, task ids).
    #[serde(default)]
    pub data: Map<String, Value>,
    #[serde(default)]
    pub error: Option<String>,
    /// The VMAPI running the job, and until when (epoch ms) its lease holds.
    #[serde(default)]
    pub runner: String,
    #[serde(default)]
    pub lease_until: i64,
    pub created_at: i64,
    #[serde(default)]
    pub started_at: Option<i64>,
    #[serde(default)]
    pub finished_at: Option<i64>,
}

impl JobRecord {
    /// A new job of `kind` for `vm`, queued, with the kind's steps.
    pub fn queued(kind: JobKind, vm: &VmRecord, params: Value, timeouts: &Timeouts) -> JobRecord {
        JobRecord {
            uuid: Uuid::new_v4().to_string(),
            name: kind,
            vm_uuid: vm.uuid.clone(),
            owner_uuid: vm.owner_uuid.clone(),
            execution: Execution::Queued,
            params,
            chain: kind.chain(timeouts),
            data: Map::new(),
            error: None,
            runner: String::new(),
            lease_until: 0,
            created_at: now_millis(),
            started_at: None,
            finished_at: None,
        }
    }
}

/// What the runner does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Run (or run again) step `i`.
    Run(usize),
    /// Undo step `i`.
    Undo(usize),
    /// Every step succeeded: the job succeeds.
    Succeed,
    /// A step failed and everything that can be undone is: the job fails.
    Fail,
    /// The job is over.
    Done,
}

/// The engine's policy: forward through the chain until a step fails, then back
/// through the steps that ran (the failed one included: a step that failed half way
/// may have done part of its work), undoing each that has an undo.
pub fn next_action(job: &JobRecord) -> Action {
    if job.execution.is_final() {
        return Action::Done;
    }
    let failed = job.chain.iter().any(|s| s.status.marks_failure());
    if !failed {
        return match job
            .chain
            .iter()
            .position(|s| s.status != StepStatus::Succeeded)
        {
            Some(i) => Action::Run(i),
            None => Action::Succeed,
        };
    }
    for (i, s) in job.chain.iter().enumerate().rev() {
        if s.undo
            && matches!(
                s.status,
                StepStatus::Succeeded | StepStatus::Failed | StepStatus::Undoing
            )
        {
            return Action::Undo(i);
        }
    }
    Action::Fail
}

impl JobRecord {
    pub fn begin_step(&mut self, i: usize, now: i64) {
        self.execution = Execution::Running;
        self.started_at.get_or_insert(now);
        let s = &mut self.chain[i];
        s.status = StepStatus::Running;
        s.attempts += 1;
        s.started_at = Some(now);
        s.finished_at = None;
        s.error = None;
    }

    pub fn finish_step(&mut self, i: usize, outcome: Result<Value, String>, now: i64) {
        let s = &mut self.chain[i];
        s.finished_at = Some(now);
        match outcome {
            Ok(result) => {
                s.status = StepStatus::Succeeded;
                s.result = result;
            }
            Err(e) => {
                s.status = StepStatus::Failed;
                self.error = Some(format!("{}: {e}", s.name));
                s.error = Some(e);
            }
        }
    }

    pub fn begin_undo(&mut self, i: usize) {
        self.chain[i].status = StepStatus::Undoing;
    }

    pub fn finish_undo(&mut self, i: usize, outcome: Result<(), String>, now: i64) {
        let s = &mut self.chain[i];
        s.finished_at = Some(now);
        match outcome {
            Ok(()) => s.status = StepStatus::Undone,
            Err(e) => {
                s.status = StepStatus::UndoFailed;
                s.error = Some(match s.error.take() {
                    Some(first) => format!("{first}; undo: {e}"),
                    None => format!("undo: {e}"),
                });
            }
        }
    }

    pub fn finish(&mut self, execution: Execution, now: i64) {
        self.execution = execution;
        self.finished_at = Some(now);
    }

    /// Records the start of `action`: a step or an undo begins, or the job succeeds.
    /// Returns the action when it was recorded; `Fail` (its failure handler runs
    /// before it is recorded) and `Done` record nothing.
    pub fn begin(&mut self, action: Action, now: i64) -> Option<Action> {
        match action {
            Action::Run(i) => self.begin_step(i, now),
            Action::Undo(i) => self.begin_undo(i),
            Action::Succeed => self.finish(Execution::Succeeded, now),
            Action::Fail | Action::Done => return None,
        }
        Some(action)
    }

    /// Records the end of `action`, a step or an undo, with its outcome (an undo's
    /// value is not kept), and begins whatever comes next ([`JobRecord::advance`]).
    pub fn end(
        &mut self,
        action: Action,
        outcome: Result<Value, String>,
        now: i64,
    ) -> Option<Action> {
        match action {
            Action::Run(i) => self.finish_step(i, outcome, now),
            Action::Undo(i) => self.finish_undo(i, outcome.map(|_| ()), now),
            Action::Succeed | Action::Fail | Action::Done => {}
        }
        self.advance(now)
    }

    /// Begins whatever the policy says comes next, so that one write records both the
    /// end of a transition and the start of the next (half the writes of recording
    /// each apart). A runner that dies after that write finds the next step `running`
    /// and runs it, as it would after a write of the start alone.
    pub fn advance(&mut self, now: i64) -> Option<Action> {
        self.begin(next_action(self), now)
    }

    pub fn to_pb(&self) -> pb::Job {
        let t = |ms: Option<i64>| ms.map(rfc3339_millis).unwrap_or_default();
        pb::Job {
            uuid: self.uuid.clone(),
            name: self.name.as_str().to_string(),
            vm_uuid: self.vm_uuid.clone(),
            owner_uuid: self.owner_uuid.clone(),
            execution: self.execution.as_str().to_string(),
            params_json: self.params.to_string(),
            chain: self
                .chain
                .iter()
                .map(|s| pb::JobStep {
                    name: s.name.clone(),
                    status: s.status.as_str().to_string(),
                    started_at: t(s.started_at),
                    finished_at: t(s.finished_at),
                    result_json: if s.result.is_null() {
                        String::new()
                    } else {
                        s.result.to_string()
                    },
                    error: s.error.clone().unwrap_or_default(),
                    attempts: s.attempts,
                    timeout_seconds: u32::try_from(s.timeout_s).unwrap_or(u32::MAX),
                })
                .collect(),
            error: self.error.clone().unwrap_or_default(),
            created_at: rfc3339_millis(self.created_at),
            started_at: t(self.started_at),
            finished_at: t(self.finished_at),
            runner: self.runner.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use triton_common::rng::Rng;

    fn job(steps: &[(&str, bool)]) -> JobRecord {
        JobRecord {
            uuid: "j".into(),
            name: JobKind::Provision,
            vm_uuid: "v".into(),
            owner_uuid: "o".into(),
            execution: Execution::Queued,
            params: Value::Null,
            chain: steps
                .iter()
                .map(|(n, undo)| StepRecord::new(n, *undo, 10))
                .collect(),
            data: Map::new(),
            error: None,
            runner: String::new(),
            lease_until: 0,
            created_at: 0,
            started_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn forward_then_back() {
        let mut j = job(&[("a", true), ("b", false), ("c", true), ("d", true)]);
        assert_eq!(next_action(&j), Action::Run(0));
        j.begin_step(0, 1);
        // A step found running (a runner died) is run again.
        assert_eq!(next_action(&j), Action::Run(0));
        j.finish_step(0, Ok(Value::Null), 2);
        j.begin_step(1, 2);
        j.finish_step(1, Ok(Value::Null), 2);
        j.begin_step(2, 3);
        j.finish_step(2, Ok(Value::Null), 3);
        j.begin_step(3, 3);
        j.finish_step(3, Err("boom".into()), 4);
        assert_eq!(j.error.as_deref(), Some("d: boom"));
        // The failed step is undone too, then c, then a (b has no undo).
        assert_eq!(next_action(&j), Action::Undo(3));
        j.begin_undo(3);
        assert_eq!(next_action(&j), Action::Undo(3));
        j.finish_undo(3, Ok(()), 5);
        assert_eq!(next_action(&j), Action::Undo(2));
        j.begin_undo(2);
        j.finish_undo(2, Err("gone".into()), 5);
        assert_eq!(next_action(&j), Action::Undo(0));
        j.begin_undo(0);
        j.finish_undo(0, Ok(()), 6);
        assert_eq!(next_action(&j), Action::Fail);
        j.finish(Execution::Failed, 7);
        assert_eq!(next_action(&j), Action::Done);
    }

    #[test]
    fn a_failed_first_step_without_undo_fails_at_once() {
        let mut j = job(&[("validate", false), ("allocate", true)]);
        j.begin_step(0, 1);
        j.finish_step(0, Err("bad image".into()), 2);
        assert_eq!(next_action(&j), Action::Fail);
    }

    /// The world the steps act on: the resources step `i` holds.
    #[derive(Default)]
    struct World {
        held: BTreeSet<usize>,
        /// Times each step's forward action ran.
        runs: Vec<u32>,
    }

    /// Runs a job to its end against `world`, crashing at random points (the runner
    /// loses everything but the persisted record) and failing at `fail_at` (the step
    /// fails after doing its work half way, i.e. after taking its resource).
    fn run_with_crashes(
        rng: &mut Rng,
        steps: &[(&str, bool)],
        fail_at: Option<usize>,
        world: &mut World,
    ) -> (JobRecord, u32) {
        let mut persisted = job(steps);
        world.runs = vec![0; steps.len()];
        let mut crashes = 0;
        let mut now = 0;
        'runner: loop {
            let mut j = persisted.clone();
            // A new runner claims the job and records its first start with the claim.
            let mut begun = j.advance(now);
            persisted = j.clone();
            loop {
                now += 1;
                if rng.chance(15) {
                    crashes += 1;
                    continue 'runner;
                }
                let action = next_action(&j);
                // As the engine does: a start recorded with the previous write (or
                // the claim) is not written again.
                let begun_before = begun.take() == Some(action);
                match action {
                    Action::Done => break 'runner,
                    Action::Run(i) => {
                        if !begun_before {
                            j.begin_step(i, now);
                            persisted = j.clone();
                        }
                        if rng.chance(15) {
                            crashes += 1;
                            continue 'runner;
                        }
                        // The step's effect (idempotent: taking a held resource again
                        // changes nothing).
                        world.runs[i] += 1;
                        world.held.insert(i);
                        if rng.chance(15) {
                            crashes += 1;
                            continue 'runner;
                        }
                        let outcome = if fail_at == Some(i) {
                            Err("fails".to_string())
                        } else {
                            Ok(Value::Null)
                        };
                        j.finish_step(i, outcome, now);
                        begun = j.advance(now);
                        persisted = j.clone();
                    }
                    Action::Undo(i) => {
                        if !begun_before {
                            j.begin_undo(i);
                            persisted = j.clone();
                        }
                        if rng.chance(15) {
                            crashes += 1;
                            continue 'runner;
                        }
                        world.held.remove(&i);
                        if rng.chance(15) {
                            crashes += 1;
                            continue 'runner;
                        }
                        j.finish_undo(i, Ok(()), now);
                        begun = j.advance(now);
                        persisted = j.clone();
                    }
                    Action::Succeed => {
                        j.finish(Execution::Succeeded, now);
                        persisted = j.clone();
                    }
                    Action::Fail => {
                        j.finish(Execution::Failed, now);
                        persisted = j.clone();
                    }
                }
            }
        }
        (persisted, crashes)
    }

    #[test]
    fn random_crashes_never_change_the_outcome() {
        let steps = [
            ("validate", false),
            ("allocate", true),
            ("provision_nics", true),
            ("ensure_image", false),
            ("machine_create", true),
            ("record", false),
        ];
        let mut total_crashes = 0;
        for seed in 1..=2000u64 {
            let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let fail_at = match rng.next_u64() % (steps.len() as u64 + 1) {
                n if n == steps.len() as u64 => None,
                n => Some(n as usize),
            };
            let mut world = World::default();
            let (j, crashes) = run_with_crashes(&mut rng, &steps, fail_at, &mut world);
            total_crashes += crashes;
            match fail_at {
                None => {
                    assert_eq!(j.execution, Execution::Succeeded, "seed {seed}");
                    assert_eq!(world.held.len(), steps.len(), "seed {seed}");
                }
                Some(f) => {
                    assert_eq!(j.execution, Execution::Failed, "seed {seed}");
                    // Nothing that can be undone is left held.
                    for i in &world.held {
                        assert!(!steps[*i].1, "seed {seed}: step {i} still held");
                    }
                    // No step after the failed one ever ran.
                    assert!(world.runs[f + 1..].iter().all(|&r| r == 0), "seed {seed}");
                    assert_eq!(
                        j.error.as_deref(),
                        Some(format!("{}: fails", steps[f].0).as_str())
                    );
                }
            }
            // Steps run in order: a later step ran only once every earlier one
            // succeeded (a step re-runs only after a crash).
            for (i, s) in j.chain.iter().enumerate() {
                if s.attempts > 0 {
                    assert!(j.chain[..i].iter().all(|p| p.attempts > 0), "seed {seed}");
                }
            }
        }
        assert!(total_crashes > 1000, "the test crashes often enough");
    }
}
