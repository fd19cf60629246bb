//! remove_nics: NICs removed from the instance on its server, then deleted in NAPI.

use serde_json::{Value, json};
use triton_proto::cnagent::v1 as agent;

use super::JobCtx;
use super::saga::{Saga, step};
use super::steps::*;
use crate::error::Result;
use crate::params::RemoveNicsParams;

pub(super) static SAGA: Saga = Saga::new(&[
    CHECK,
    step!("machine_update", Task, remove_nics_on_server),
    step!("release_nics", Default, delete_removed_nics),
    step!("record", Default, record_removed_nics),
]);

impl Steps {
    /// remove_nics: cn-agent `machine_update` with `remove_nics`. A re-run that cannot
    /// find its earlier task sends only the NICs the instance still has.
    pub(super) async fn remove_nics_on_server(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        let p: RemoveNicsParams = params(&job.params)?;
        let server = self.server_of(ctx).await?;
        let mut macs = p.macs.clone();
        if ctx.data::<String>("task.remove_nics").await.is_none()
            && ctx.attempts().await > 1
            && let Some(instance) = self.load(ctx, &server, &job.vm_uuid).await?
        {
            macs.retain(|m| instance_has(&instance, m));
        }
        if macs.is_empty() {
            return Ok(json!({ "skipped": "the instance has none of the NICs" }));
        }
        let task = agent::create_task_request::Task::MachineUpdate(agent::MachineUpdate {
            uuid: job.vm_uuid.clone(),
            remove_nics: macs,
            ..Default::default()
        });
        self.instance_task(ctx, &server, "task.remove_nics", task, &p.req_id)
            .await
    }

    /// remove_nics: deletes the NICs in NAPI; their IPs are free again.
    pub(super) async fn delete_removed_nics(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        let p: RemoveNicsParams = params(&job.params)?;
        let Some(napi) = self.clients.napi.clone() else {
            return Ok(json!({ "released": 0 }));
        };
        for mac in &p.macs {
            delete_nic(&napi, mac, &p.req_id).await?;
        }
        Ok(json!({ "released": p.macs.len() }))
    }

    pub(super) async fn record_removed_nics(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        let p: RemoveNicsParams = params(&job.params)?;
        let vm = self
            .store
            .update_vm(&job.vm_uuid, |vm| {
                let before = vm.nics.len();
                vm.nics
                    .retain(|n| !p.macs.iter().any(|m| m.eq_ignore_ascii_case(&n.mac)));
                if vm.nics.len() == before {
                    return Ok(false);
                }
                vm.resolvers = resolvers_of(&vm.nics);
                Ok(true)
            })
            .await?;
        Ok(json!({ "nics": vm.nics.len() }))
    }
}
