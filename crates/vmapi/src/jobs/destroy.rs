//! destroy: the instance destroyed on its server, the VM's NICs and allocation
//! released.

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
        StepRecord::new("machine_destroy", false, t.task_s),
        StepRecord::new("release_nics", false, d),
        StepRecord::new("release_allocation", false, d),
        StepRecord::new("record", false, d),
    ]
}

pub(super) async fn run(s: &Steps, ctx: &JobCtx, step: &str) -> Result<Value> {
    match step {
        "check" => s.check(ctx).await,
        "machine_destroy" => s.machine_destroy(ctx).await,
        "release_nics" => s.release_job_nics(ctx).await,
        "release_allocation" => s.release_job_allocation(ctx).await,
        "record" => s.record_action(ctx).await,
        _ => Err(JobKind::Destroy.no_step(step)),
    }
}
