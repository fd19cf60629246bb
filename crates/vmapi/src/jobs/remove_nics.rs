//! remove_nics: NICs removed from the instance on its server, then deleted in NAPI.

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
        StepRecord::new("release_nics", false, d),
        StepRecord::new("record", false, d),
    ]
}

pub(super) async fn run(s: &Steps, ctx: &JobCtx, step: &str) -> Result<Value> {
    match step {
        "check" => s.check(ctx).await,
        "machine_update" => s.remove_nics_on_server(ctx).await,
        "release_nics" => s.delete_removed_nics(ctx).await,
        "record" => s.record_removed_nics(ctx).await,
        _ => Err(JobKind::RemoveNics.no_step(step)),
    }
}
