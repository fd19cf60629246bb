//! mark_destroyed: made by the reconciler for a VM its server no longer reports;
//! once the server confirms it gone, the VM's NICs and allocation are released.

use serde_json::{Value, json};

use super::JobCtx;
use super::saga::{Saga, step};
use super::steps::*;
use crate::error::{Error, Result};

pub(super) static SAGA: Saga = Saga::new(&[
    step!("confirm_gone", Task, confirm_gone),
    RELEASE_NICS,
    RELEASE_ALLOCATION,
    RECORD,
]);

impl Steps {
    /// mark_destroyed: asks the VM's server itself whether the instance is gone (the
    /// heartbeats said so); an instance that is there fails the job, changing nothing.
    pub(super) async fn confirm_gone(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        let vm = self.vm(&job.vm_uuid).await?;
        if vm.is_destroyed() {
            return Ok(json!({ "skipped": "already destroyed" }));
        }
        if vm.server_uuid.is_empty() {
            return Err(Error::Unallocated(vm.uuid));
        }
        ctx.stage("server_uuid", &vm.server_uuid).await?;
        match self.load(ctx, &vm.server_uuid, &vm.uuid).await {
            Ok(_) => Err(Error::State(format!(
                "instance {} is on server {}: not destroyed",
                vm.uuid, vm.server_uuid
            ))),
            Err(e) if is_named(&e, "VmNotFoundError") => {
                Ok(json!({ "gone": true, "server_uuid": vm.server_uuid }))
            }
            Err(e) => Err(e),
        }
    }
}
