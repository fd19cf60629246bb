//! stop: shuts the VM down on its server.

use serde_json::Value;

use super::JobCtx;
use super::saga::{Saga, step};
use super::steps::{CHECK, RECORD, Steps};
use crate::error::Result;

pub(super) static SAGA: Saga = Saga::new(&[
    CHECK,
    step!("machine_shutdown", Task, machine_shutdown),
    RECORD,
]);

impl Steps {
    async fn machine_shutdown(&self, ctx: &JobCtx) -> Result<Value> {
        self.halt_task(ctx, false).await
    }
}
