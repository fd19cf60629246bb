//! start: boots the VM on its server.

use serde_json::Value;
use triton_proto::cnagent::v1 as agent;
use triton_proto::cnagent::v1::create_task_request::Task;

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
        StepRecord::new("machine_boot", false, t.task_s),
        StepRecord::new("record", false, d),
    ]
}

pub(super) async fn run(s: &Steps, ctx: &JobCtx, step: &str) -> Result<Value> {
    match step {
        "check" => s.check(ctx).await,
        "machine_boot" => {
            s.vm_task(ctx, step, |uuid, _| {
                Task::MachineBoot(agent::MachineBoot { uuid })
            })
            .await
        }
        "record" => s.record_action(ctx).await,
        _ => Err(JobKind::Start.no_step(step)),
    }
}
