//! start: boots the VM on its server.

use serde_json::Value;
use triton_proto::cnagent::v1 as agent;
use triton_proto::cnagent::v1::create_task_request::Task;

use super::JobCtx;
use super::saga::{Saga, step};
use super::steps::{CHECK, RECORD, Steps};
use crate::error::Result;

pub(super) static SAGA: Saga =
    Saga::new(&[CHECK, step!("machine_boot", Task, machine_boot), RECORD]);

impl Steps {
    async fn machine_boot(&self, ctx: &JobCtx) -> Result<Value> {
        self.vm_task(ctx, |uuid, _| {
            Task::MachineBoot(agent::MachineBoot { uuid })
        })
        .await
    }
}
