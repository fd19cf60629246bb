//! update: the VM's record changed, and the instance on its server where the change
//! touches it.

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
        StepRecord::new("machine_update", false, t.task_s),
        StepRecord::new("record", false, d),
    ]
}

pub(super) async fn run(s: &Steps, ctx: &JobCtx, step: &str) -> Result<Value> {
    match step {
        "check" => s.check(ctx).await,
        "machine_update" => s.machine_update(ctx).await,
        "record" => s.record_action(ctx).await,
        _ => Err(JobKind::Update.no_step(step)),
    }
}
