//! add_nics: NICs reserved in NAPI and added to the instance on its server.

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
        // undo: the job's NICs deleted
        StepRecord::new("provision_nics", true, d),
        // undo: the NICs removed from the instance
        StepRecord::new("machine_update", true, t.task_s),
        StepRecord::new("record", false, d),
    ]
}

pub(super) async fn run(s: &Steps, ctx: &JobCtx, step: &str) -> Result<Value> {
    match step {
        "check" => s.check(ctx).await,
        "provision_nics" => s.reserve_added_nics(ctx).await,
        "machine_update" => s.add_nics_on_server(ctx).await,
        "record" => s.record_added_nics(ctx).await,
        _ => Err(JobKind::AddNics.no_step(step)),
    }
}

pub(super) async fn undo(s: &Steps, ctx: &JobCtx, step: &str) -> Result<()> {
    match step {
        "provision_nics" => s.undo_reserve_added_nics(ctx).await,
        "machine_update" => s.undo_add_nics_on_server(ctx).await,
        _ => Ok(()),
    }
}
