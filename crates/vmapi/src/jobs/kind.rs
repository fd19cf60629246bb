//! The kinds of job. Each lives in its own file beside this one (`provision.rs`,
//! `start.rs`, ...): its steps in order, each step's undo, and what each step runs.
//! The steps all kinds share are in [`super::steps`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::JobCtx;
use super::record::StepRecord;
use super::steps::Steps;
use super::{
    add_nics, create_snapshot, delete_snapshot, destroy, mark_destroyed, provision, reboot,
    remove_nics, rollback_snapshot, start, stop, update,
};
use crate::config::Timeouts;
use crate::error::{Error, Result};

/// A kind of job, stored in the job record's `name` as the string of
/// [`JobKind::as_str`]. A stored name that is none of these does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Provision,
    Start,
    Stop,
    Reboot,
    Update,
    Destroy,
    AddNics,
    RemoveNics,
    CreateSnapshot,
    RollbackSnapshot,
    DeleteSnapshot,
    /// Made by the reconciler for a VM its server no longer reports.
    MarkDestroyed,
}

impl JobKind {
    pub const ALL: [JobKind; 12] = [
        JobKind::Provision,
        JobKind::Start,
        JobKind::Stop,
        JobKind::Reboot,
        JobKind::Update,
        JobKind::Destroy,
        JobKind::AddNics,
        JobKind::RemoveNics,
        JobKind::CreateSnapshot,
        JobKind::RollbackSnapshot,
        JobKind::DeleteSnapshot,
        JobKind::MarkDestroyed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Provision => "provision",
            JobKind::Start => "start",
            JobKind::Stop => "stop",
            JobKind::Reboot => "reboot",
            JobKind::Update => "update",
            JobKind::Destroy => "destroy",
            JobKind::AddNics => "add_nics",
            JobKind::RemoveNics => "remove_nics",
            JobKind::CreateSnapshot => "create_snapshot",
            JobKind::RollbackSnapshot => "rollback_snapshot",
            JobKind::DeleteSnapshot => "delete_snapshot",
            JobKind::MarkDestroyed => "mark_destroyed",
        }
    }

    /// The steps of a job of this kind, with their undo flags and timeouts, as stored
    /// at creation.
    pub fn chain(self, t: &Timeouts) -> Vec<StepRecord> {
        match self {
            JobKind::Provision => provision::chain(t),
            JobKind::Start => start::chain(t),
            JobKind::Stop => stop::chain(t),
            JobKind::Reboot => reboot::chain(t),
            JobKind::Update => update::chain(t),
            JobKind::Destroy => destroy::chain(t),
            JobKind::AddNics => add_nics::chain(t),
            JobKind::RemoveNics => remove_nics::chain(t),
            JobKind::CreateSnapshot => create_snapshot::chain(t),
            JobKind::RollbackSnapshot => rollback_snapshot::chain(t),
            JobKind::DeleteSnapshot => delete_snapshot::chain(t),
            JobKind::MarkDestroyed => mark_destroyed::chain(t),
        }
    }

    /// Runs `step` of a job of this kind.
    pub(super) async fn run(self, s: &Steps, ctx: &JobCtx, step: &str) -> Result<Value> {
        match self {
            JobKind::Provision => provision::run(s, ctx, step).await,
            JobKind::Start => start::run(s, ctx, step).await,
            JobKind::Stop => stop::run(s, ctx, step).await,
            JobKind::Reboot => reboot::run(s, ctx, step).await,
            JobKind::Update => update::run(s, ctx, step).await,
            JobKind::Destroy => destroy::run(s, ctx, step).await,
            JobKind::AddNics => add_nics::run(s, ctx, step).await,
            JobKind::RemoveNics => remove_nics::run(s, ctx, step).await,
            JobKind::CreateSnapshot => create_snapshot::run(s, ctx, step).await,
            JobKind::RollbackSnapshot => rollback_snapshot::run(s, ctx, step).await,
            JobKind::DeleteSnapshot => delete_snapshot::run(s, ctx, step).await,
            JobKind::MarkDestroyed => mark_destroyed::run(s, ctx, step).await,
        }
    }

    /// Undoes `step` of a job of this kind (nothing for a step without an undo).
    pub(super) async fn undo(self, s: &Steps, ctx: &JobCtx, step: &str) -> Result<()> {
        match self {
            JobKind::Provision => provision::undo(s, ctx, step).await,
            JobKind::AddNics => add_nics::undo(s, ctx, step).await,
            _ => Ok(()),
        }
    }

    /// After an unwound failure: what the kind leaves on the VM (most leave it as it
    /// is; its state is refreshed from the server).
    pub(super) async fn on_failure(self, s: &Steps, ctx: &JobCtx) -> Result<()> {
        match self {
            JobKind::Provision => provision::on_failure(s, ctx).await,
            JobKind::CreateSnapshot => create_snapshot::on_failure(s, ctx).await,
            JobKind::DeleteSnapshot => delete_snapshot::on_failure(s, ctx).await,
            _ => Ok(()),
        }
    }

    /// The error for a step the kind does not have.
    pub(super) fn no_step(self, step: &str) -> Error {
        Error::Internal(format!("job {self} has no step {step}"))
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<JobKind, String> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown job kind {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_stored_string_and_has_steps() {
        let t = Timeouts::default();
        for kind in JobKind::ALL {
            let stored = serde_json::to_value(kind).unwrap();
            assert_eq!(stored, Value::String(kind.as_str().to_string()));
            assert_eq!(serde_json::from_value::<JobKind>(stored).unwrap(), kind);
            assert_eq!(kind.as_str().parse::<JobKind>().unwrap(), kind);
            assert!(!kind.chain(&t).is_empty(), "{kind} has no steps");
        }
    }

    #[test]
    fn an_unknown_stored_name_is_an_error() {
        let e = serde_json::from_value::<JobKind>(Value::String("resize".into())).unwrap_err();
        assert!(e.to_string().contains("resize"), "{e}");
        assert_eq!(
            "resize".parse::<JobKind>().unwrap_err(),
            "unknown job kind \"resize\""
        );
    }
}
