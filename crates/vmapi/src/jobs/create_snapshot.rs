//! create_snapshot: a snapshot of the VM taken on its server. One that could not be
//! taken is left `failed` (it can be deleted, or its name used again).

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
        StepRecord::new("machine_create_snapshot", false, t.task_s),
        StepRecord::new("record", false, d),
    ]
}

pub(super) async fn run(s: &Steps, ctx: &JobCtx, step: &str) -> Result<Value> {
    match step {
        "check" => s.check(ctx).await,
        "machine_create_snapshot" => s.snapshot_task(ctx, step).await,
        "record" => s.record_snapshot(ctx).await,
        _ => Err(JobKind::CreateSnapshot.no_step(step)),
    }
}

pub(super) async fn on_failure(s: &Steps, ctx: &JobCtx) -> Result<()> {
    s.snapshot_failed(ctx, |_| snapshot_state::FAILED.to_string())
        .await
}
