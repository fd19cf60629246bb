//! delete_snapshot: a snapshot of the VM deleted on its server. One that could not
//! be deleted is left in the state it had before.

use serde_json::Value;

use super::JobCtx;
use super::kind::JobKind;
use super::record::StepRecord;
use super::steps::Steps;
use crate::config::Timeouts;
use crate::error::Result;
use crate::model::snapshot_state;

/// The steps in order: (name, has an undo, timeout).
pub(super) fn chain(t: &Timeouts) -> Vec<StepRecord> {
    let d = t.default_s;
    vec![
        StepRecord::new("check", false, d),
        StepRecord::new("machine_delete_snapshot", false, t.task_s),
        StepRecord::new("record", false, d),
    ]
}

pub(super) async fn run(s: &Steps, ctx: &JobCtx, step: &str) -> Result<Value> {
    match step {
        "check" => s.check(ctx).await,
        "machine_delete_snapshot" => s.snapshot_task(ctx, step).await,
        "record" => s.record_snapshot(ctx).await,
        _ => Err(JobKind::DeleteSnapshot.no_step(step)),
    }
}

pub(super) async fn on_failure(s: &Steps, ctx: &JobCtx) -> Result<()> {
    s.snapshot_failed(ctx, |p| {
        if p.previous_state.is_empty() {
            snapshot_state::CREATED.to_string()
        } else {
            p.previous_state.clone()
        }
    })
    .await
}
