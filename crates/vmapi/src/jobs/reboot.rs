//! reboot: reboots the VM on its server.

use serde_json::Value;
use triton_proto::cnagent::v1 as agent;
use triton_proto::cnagent::v1::create_task_request::Task;

use super::JobCtx;
use super::saga::{Saga, step};
use super::steps::{CHECK, RECORD, Steps};
use crate::error::Result;

pub(super) static SAGA: Saga =
    Saga::new(&[CHECK, step!("machine_reboot", Task, machine_reboot), RECORD]);

impl Steps {
    async fn machine_reboot(&self, ctx: &JobCtx) -> Result<Value> {
        self.vm_task(ctx, |uuid, p| {
            Task::MachineReboot(agent::MachineReboot {
                uuid,
                timeout_seconds: p.timeout_seconds,
            })
        })
        .await
    }
}
