//! How a job kind declares its steps, as omicron's sagas do: the kind's file holds one
//! [`Saga`], its steps in order, each [`Step`] with its name (as stored in the job
//! record), its timeout, its action and its undo beside it. A step is declared with its
//! action or not at all; the engine finds a stored step by its name in its kind's saga
//! (a name no saga has can only come from a record written by another version, and
//! fails its job).

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

use super::JobCtx;
use super::record::StepRecord;
use super::steps::Steps;
use crate::config::Timeouts;
use crate::error::Result;

/// What a step's action or undo gives the engine to await.
pub type StepFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// A step's action; what it answers is recorded as the step's result.
pub type ActionFn = for<'a> fn(&'a Steps, &'a JobCtx) -> StepFuture<'a, Value>;

/// A step's undo, or what a failed job of a kind leaves on its VM.
pub type UndoFn = for<'a> fn(&'a Steps, &'a JobCtx) -> StepFuture<'a, ()>;

/// Which of the configured [`Timeouts`] a step gets for each attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// Calls to other APIs and record writes (`default_s`).
    Default,
    /// A task on the VM's server (`task_s`).
    Task,
    /// Getting the image onto the server (`image_s`).
    Image,
    /// Creating the instance (`create_s`).
    Create,
}

impl Timeout {
    pub fn seconds(self, t: &Timeouts) -> u64 {
        match self {
            Timeout::Default => t.default_s,
            Timeout::Task => t.task_s,
            Timeout::Image => t.image_s,
            Timeout::Create => t.create_s,
        }
    }
}

/// One step of a saga.
#[derive(Clone, Copy)]
pub struct Step {
    /// The name stored in the job record's chain: it must not change, or the jobs
    /// stored before the change cannot resume.
    pub name: &'static str,
    pub timeout: Timeout,
    pub action: ActionFn,
    /// Run when this step or a later one fails (a step that failed half way may have
    /// done part of its work).
    pub undo: Option<UndoFn>,
}

impl Step {
    pub const fn new(name: &'static str, timeout: Timeout, action: ActionFn) -> Step {
        Step {
            name,
            timeout,
            action,
            undo: None,
        }
    }

    /// The step with `undo` beside its action.
    pub const fn with_undo(mut self, undo: UndoFn) -> Step {
        self.undo = Some(undo);
        self
    }
}

/// A [`Step`] whose action (and undo) are async methods of [`Steps`] taking the job:
/// `step!("name", Timeout, action)` or `step!("name", Timeout, action, undo: undo)`.
macro_rules! step {
    ($name:literal, $timeout:ident, $action:ident) => {
        $crate::jobs::saga::Step::new($name, $crate::jobs::saga::Timeout::$timeout, |s, c| {
            Box::pin(s.$action(c))
        })
    };
    ($name:literal, $timeout:ident, $action:ident, undo: $undo:ident) => {
        $crate::jobs::saga::step!($name, $timeout, $action).with_undo(|s, c| Box::pin(s.$undo(c)))
    };
}
pub(crate) use step;

/// A job kind's steps in order, and what a failure leaves behind.
pub struct Saga {
    pub steps: &'static [Step],
    /// Run once a failed job is unwound; `None`: the VM is left as it is (its state
    /// is refreshed from the server).
    pub on_failure: Option<UndoFn>,
}

impl Saga {
    pub const fn new(steps: &'static [Step]) -> Saga {
        Saga {
            steps,
            on_failure: None,
        }
    }

    /// The saga with `on_failure` run after an unwound failure.
    pub const fn with_on_failure(mut self, on_failure: UndoFn) -> Saga {
        self.on_failure = Some(on_failure);
        self
    }

    /// The chain stored in a new job: each step pending, with its undo flag and its
    /// timeout in seconds.
    pub fn chain(&self, t: &Timeouts) -> Vec<StepRecord> {
        self.steps
            .iter()
            .map(|s| StepRecord::new(s.name, s.undo.is_some(), s.timeout.seconds(t)))
            .collect()
    }

    /// The step stored as `name`.
    pub fn step(&'static self, name: &str) -> Option<&'static Step> {
        self.steps.iter().find(|s| s.name == name)
    }
}
