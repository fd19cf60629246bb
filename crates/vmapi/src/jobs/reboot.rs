//! reboot: reboots the VM on its server.

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
        StepRecord::new("machine_reboot", false, t.task_s),
        StepRecord::new("record", false, d),
    ]
}

pub(super) async fn run(s: &Steps, ctx: &JobCtx, step: &str) -> Result<Value> {
    match step {
        "check" => s.check(ctx).await,
        "machine_reboot" => {
            s.vm_task(ctx, step, |uuid, p| {
                Task::MachineReboot(agent::MachineReboot {
                    uuid,
                    timeout_seconds: p.timeout_seconds,
                })
            })
            .await
        }
        "record" => s.record_action(ctx).await,
        _ => Err(JobKind::Reboot.no_step(step)),
    }
}
