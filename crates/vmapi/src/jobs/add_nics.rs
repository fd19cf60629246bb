//! add_nics: NICs reserved in NAPI and added to the instance on its server.

use serde_json::{Value, json};
use triton_common::status::found;
use triton_proto::cnagent::v1 as agent;
use triton_proto::napi::v1 as napi;

use super::JobCtx;
use super::saga::{Saga, step};
use super::steps::*;
use crate::clients::request;
use crate::error::{Error, Result};
use crate::model::VmNic;
use crate::params::AddNicsParams;

pub(super) static SAGA: Saga = Saga::new(&[
    CHECK,
    step!("provision_nics", Default, reserve_added_nics, undo: undo_reserve_added_nics),
    step!("machine_update", Task, add_nics_on_server, undo: undo_add_nics_on_server),
    step!("record", Default, record_added_nics),
]);

impl Steps {
    /// add_nics: reserves a NIC in NAPI on each network (state `provisioning`), or
    /// takes the NICs already reserved for the VM by MAC. A re-run finds the NICs its
    /// earlier attempt made (on the job's networks, not yet on the VM) and keeps them.
    pub(super) async fn reserve_added_nics(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        let p: AddNicsParams = params(&job.params)?;
        let server: String = ctx.data("server_uuid").await.unwrap_or_default();
        let Some(napi) = self.clients.napi.clone() else {
            return Err(Error::Config("NICs need NAPI (napi_url)".into()));
        };
        let vm = self.vm(&job.vm_uuid).await?;
        let on_vm = |mac: &str| vm.nics.iter().any(|n| n.mac.eq_ignore_ascii_case(mac));
        let mut earlier: Vec<napi::Nic> = self
            .vm_nics(&job.vm_uuid, &p.req_id)
            .await?
            .into_iter()
            .filter(|n| !on_vm(&n.mac) && !p.macs.contains(&n.mac))
            .collect();
        let mut reserved = Vec::new();
        for net in &p.networks {
            let provisioning = Some("provisioning");
            let create = nic_request(&job.owner_uuid, &job.vm_uuid, net, &server, provisioning);
            reserved.push(nic_for(&napi, &mut earlier, create, &p.req_id).await?);
        }
        for mac in &p.macs {
            let get = request(napi::GetNicRequest { mac: mac.clone() }, &p.req_id);
            let Some(nic) = found(napi.clone().get_nic(get).await).map_err(napi_err)? else {
                return Err(Error::NotFound(format!(
                    "macs: NIC {mac} does not exist in NAPI"
                )));
            };
            if nic.belongs_to_uuid != job.vm_uuid {
                return Err(Error::invalid(
                    "macs",
                    format!("NIC {mac} does not belong to VM {}", job.vm_uuid),
                ));
            }
            reserved.push(nic);
        }
        let mut used: Vec<String> = vm.nics.iter().map(|n| n.interface.clone()).collect();
        let nics: Vec<VmNic> = reserved
            .into_iter()
            .map(|n| vm_nic(n, free_interface(&mut used)))
            .collect();
        ctx.stage("add_nics", &nics).await?;
        Ok(
            json!({ "nics": nics.iter().map(|n| json!({"mac": n.mac, "ip": n.ip, "network_uuid": n.network_uuid, "interface": n.interface})).collect::<Vec<_>>() }),
        )
    }

    /// Deletes in NAPI the NICs this job reserved or was given (their IPs are free
    /// again), leaving the VM's own NICs and NICs reserved for other jobs alone.
    pub(super) async fn undo_reserve_added_nics(&self, ctx: &JobCtx) -> Result<()> {
        let job = ctx.record().await;
        let p: AddNicsParams = params(&job.params)?;
        let Some(napi) = self.clients.napi.clone() else {
            return Ok(());
        };
        let vm = self.vm(&job.vm_uuid).await?;
        for nic in self.vm_nics(&job.vm_uuid, &p.req_id).await? {
            let on_vm = vm.nics.iter().any(|n| n.mac.eq_ignore_ascii_case(&nic.mac));
            let ours = p.macs.contains(&nic.mac)
                || p.networks
                    .iter()
                    .any(|net| net.network_uuid == nic.network_uuid);
            if on_vm || !ours {
                continue;
            }
            delete_nic(&napi, &nic.mac, &p.req_id).await?;
        }
        Ok(())
    }

    /// add_nics: cn-agent `machine_update` with `add_nics`. A re-run that cannot find
    /// its earlier task asks the node first and sends only the NICs it lacks.
    pub(super) async fn add_nics_on_server(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        let p: AddNicsParams = params(&job.params)?;
        let server = self.server_of(ctx).await?;
        let mut nics: Vec<VmNic> = ctx.data("add_nics").await.unwrap_or_default();
        if ctx.data::<String>("task.add_nics").await.is_none()
            && ctx.attempts().await > 1
            && let Some(instance) = self.load(ctx, &server, &job.vm_uuid).await?
        {
            nics.retain(|n| !instance_has(&instance, &n.mac));
        }
        if nics.is_empty() {
            return Ok(json!({ "skipped": "the instance has the NICs" }));
        }
        let task = agent::create_task_request::Task::MachineUpdate(agent::MachineUpdate {
            uuid: job.vm_uuid.clone(),
            add_nics: nics
                .iter()
                .map(|n| agent_nic(n, guest_interface(n)))
                .collect(),
            ..Default::default()
        });
        self.instance_task(ctx, &server, "task.add_nics", task, &p.req_id)
            .await
    }

    /// Removes from the instance whichever of the job's NICs it has (a failed update
    /// may have added some).
    pub(super) async fn undo_add_nics_on_server(&self, ctx: &JobCtx) -> Result<()> {
        let job = ctx.record().await;
        let nics: Vec<VmNic> = ctx.data("add_nics").await.unwrap_or_default();
        let Some(server) = ctx
            .data::<String>("server_uuid")
            .await
            .filter(|s| !s.is_empty())
        else {
            return Ok(());
        };
        if nics.is_empty() {
            return Ok(());
        }
        let instance = match self.load(ctx, &server, &job.vm_uuid).await {
            Ok(Some(i)) => i,
            Ok(None) => return Ok(()),
            Err(e) if is_named(&e, "VmNotFoundError") => return Ok(()),
            Err(e) => return Err(e),
        };
        let present: Vec<String> = nics
            .iter()
            .filter(|n| instance_has(&instance, &n.mac))
            .map(|n| n.mac.clone())
            .collect();
        if present.is_empty() {
            return Ok(());
        }
        ctx.remove_data("task.undo_add_nics").await?;
        let task = agent::create_task_request::Task::MachineUpdate(agent::MachineUpdate {
            uuid: job.vm_uuid.clone(),
            remove_nics: present,
            ..Default::default()
        });
        self.cn_task(
            ctx,
            &server,
            "task.undo_add_nics",
            task,
            &req_id(&job.params),
        )
        .await?;
        Ok(())
    }

    /// add_nics: the NICs join the VM's record, and NAPI marks them `running`.
    pub(super) async fn record_added_nics(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        let p: AddNicsParams = params(&job.params)?;
        let nics: Vec<VmNic> = ctx.data("add_nics").await.unwrap_or_default();
        let server: String = ctx.data("server_uuid").await.unwrap_or_default();
        let vm = self
            .store
            .update_vm(&job.vm_uuid, |vm| {
                if vm.is_destroyed() {
                    return Ok(false);
                }
                let mut changed = false;
                for n in &nics {
                    if !vm.nics.iter().any(|m| m.mac.eq_ignore_ascii_case(&n.mac)) {
                        vm.nics.push(n.clone());
                        changed = true;
                    }
                }
                if changed {
                    vm.resolvers = resolvers_of(&vm.nics);
                }
                Ok(changed)
            })
            .await?;
        if let Some(napi) = self.clients.napi.clone() {
            for n in &nics {
                napi.clone()
                    .update_nic(request(
                        napi::UpdateNicRequest {
                            mac: n.mac.clone(),
                            state: Some("running".into()),
                            cn_uuid: (!server.is_empty()).then(|| server.clone()),
                            ..Default::default()
                        },
                        &p.req_id,
                    ))
                    .await
                    .map_err(napi_err)?;
            }
        }
        Ok(json!({ "nics": vm.nics.len() }))
    }
}

/// The guest's name for a NIC the VM records as `net<k>`: `eth<k>`.
fn guest_interface(n: &VmNic) -> String {
    n.interface
        .strip_prefix("net")
        .map(|k| format!("eth{k}"))
        .unwrap_or_default()
}
