//! mark_destroyed: made by the reconciler for a VM its server no longer reports;
//! once the server confirms it gone, the VM's NICs and allocation are released.

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
        StepRecord::new("confirm_gone", false, t.task_s),
        StepRecord::new("release_nics", false, d),
        StepRecord::new("release_allocation", false, d),
        StepRecord::new("record", false, d),
    ]
}

pub(super) async fn run(s: &Steps, ctx: &JobCtx, step: &str) -> Result<Value> {
    match step {
        "confirm_gone" => s.confirm_gone(ctx).await,
        "release_nics" => s.release_job_nics(ctx).await,
        "release_allocation" => s.release_job_allocation(ctx).await,
        "record" => s.record_action(ctx).await,
        _ => Err(JobKind::MarkDestroyed.no_step(step)),
    }
}
