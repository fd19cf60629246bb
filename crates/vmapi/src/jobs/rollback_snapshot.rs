//! rollback_snapshot: the VM rolled back to one of its snapshots on its server.

use serde_json::Value;

use super::JobCtx;
use super::kind::JobKind;
use super::record::StepRecord;
use super::steps::Steps;
use crate::config::Timeouts;
use crate::error::Result;

/// The steps in order: (name, has an undo, timeout).
pub(super) fn chain(t: &Timeouts) -> Vec<StepRecord> {
    let d = t.default_s;
    vec![
        StepRecord::new("check", false, d),
        StepRecord::new("machine_rollback_snapshot", false, t.task_s),
        StepRecord::new("record", false, d),
    ]
}

pub(super) async fn run(s: &Steps, ctx: &JobCtx, step: &str) -> Result<Value> {
    match step {
        "check" => s.check(ctx).await,
        "machine_rollback_snapshot" => s.snapshot_task(ctx, step).await,
        "record" => s.record_snapshot(ctx).await,
        _ => Err(JobKind::RollbackSnapshot.no_step(step)),
    }
}
