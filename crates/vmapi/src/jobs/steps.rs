//! The steps job kinds share, and their helpers. Every step is idempotent: run again
//! after a crash it finds what its earlier attempt did (the server in the job's data,
//! the VM's NICs in NAPI, the task id in the job's data, an instance that exists) and
//! carries on from there.
//!
//! Each job kind's file beside this one (`provision.rs`, `add_nics.rs`, ...) declares
//! its saga (its steps, each with its undo) and holds the steps only it runs; the steps
//! several kinds share ([`CHECK`], [`RECORD`], [`RECORD_SNAPSHOT`], [`RELEASE_NICS`],
//! [`RELEASE_ALLOCATION`]) and the cn-agent task helpers are here.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;
use triton_common::status::found;
use triton_proto::cnagent::v1 as agent;
use triton_proto::cnagent::v1::create_task_request::Task;
use triton_proto::cnapi::v1 as cnapi;
use triton_proto::napi::v1 as napi;
use triton_proto::napi::v1::napi_client::NapiClient;

use crate::clients::{Clients, request};
use crate::config::Timeouts;
use crate::error::{Error, Result};
use crate::jobs::JobCtx;
use crate::jobs::kind::JobKind;
use crate::jobs::saga::{Step, step};
use crate::model::{VmNic, VmRecord, VmSnapshot, snapshot_state, state, tag_text};
use crate::params::{ActionParams, NetworkParam, ProvisionParams, SnapshotParams, UpdateParams};
use crate::store::Store;

/// WaitTask asks the agent to block at most this long per call (its maximum is 60 s).
pub(super) const WAIT_TASK_SLICE_MS: u32 = 20_000;

/// Re-checks the VM at run time ([`Steps::check`]).
pub(super) const CHECK: Step = step!("check", Default, check);

/// Writes what an action did into the VM record ([`Steps::record_action`]).
pub(super) const RECORD: Step = step!("record", Default, record_action);

/// Writes what a snapshot job did into the VM record ([`Steps::record_snapshot`]).
pub(super) const RECORD_SNAPSHOT: Step = step!("record", Default, record_snapshot);

/// Deletes the VM's NICs in NAPI.
pub(super) const RELEASE_NICS: Step = step!("release_nics", Default, release_job_nics);

/// Drops the VM's reservation in CNAPI.
pub(super) const RELEASE_ALLOCATION: Step =
    step!("release_allocation", Default, release_job_allocation);

#[derive(Clone)]
pub struct Steps {
    pub store: Store,
    pub clients: Clients,
    pub timeouts: Timeouts,
    /// (server, image) pairs this VMAPI has seen installed: ensure_image skips the
    /// task for them. Should the image have gone from the server since,
    /// machine_create carries the image's URL and the agent fetches it again.
    pub images_present: Arc<Mutex<HashSet<(String, String)>>>,
}

pub(super) fn params<T: serde::de::DeserializeOwned + Default>(v: &Value) -> Result<T> {
    serde_json::from_value(v.clone())
        .map_err(|e| Error::Internal(format!("job params do not parse: {e}")))
}

pub(super) fn cnapi_err(status: tonic::Status) -> Error {
    Error::upstream("cnapi")(status)
}

pub(super) fn napi_err(status: tonic::Status) -> Error {
    Error::upstream("napi")(status)
}

/// Deletes the NIC `mac` in NAPI (its IPs go back to their networks); a NIC NAPI no
/// longer has is no error.
pub(super) async fn delete_nic(napi: &NapiClient<Channel>, mac: &str, rid: &str) -> Result<()> {
    let request = request(
        napi::DeleteNicRequest {
            mac: mac.to_string(),
        },
        rid,
    );
    found(napi.clone().delete_nic(request).await).map_err(napi_err)?;
    Ok(())
}

/// A task that ended in failure, as an error that is not retried.
pub(super) fn task_failed(task: &agent::Task) -> Error {
    Error::Upstream {
        service: "cn-agent",
        name: task.error_name.clone(),
        message: format!("{} failed: {}", task.task, task.error_message),
        code: Code::FailedPrecondition,
    }
}

pub(super) fn is_named(e: &Error, wanted: &str) -> bool {
    matches!(e, Error::Upstream { name, .. } if name == wanted)
}

impl Steps {
    pub fn default_timeout(&self) -> Duration {
        Duration::from_secs(self.timeouts.default_s)
    }

    /// What a failed snapshot job leaves: a snapshot that could not be taken is
    /// `failed` (it can be deleted, or its name used again); one that could not be
    /// deleted is back in the state it had before.
    pub(super) async fn snapshot_failed(&self, ctx: &JobCtx) -> Result<()> {
        let job = ctx.record().await;
        let p: SnapshotParams = params(&job.params)?;
        let to = match job.name {
            JobKind::CreateSnapshot => snapshot_state::FAILED.to_string(),
            _ if p.previous_state.is_empty() => snapshot_state::CREATED.to_string(),
            _ => p.previous_state.clone(),
        };
        self.store
            .update_vm(&job.vm_uuid, |vm| {
                let Some(snap) = vm.snapshots.iter_mut().find(|s| s.name == p.name) else {
                    return Ok(false);
                };
                if snap.state == to {
                    return Ok(false);
                }
                snap.state = to.clone();
                Ok(true)
            })
            .await?;
        Ok(())
    }

    /// The VM's NICs released in NAPI (the job's request id on the calls).
    pub(super) async fn release_job_nics(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        self.release_nics(&job.vm_uuid, &req_id(&job.params)).await
    }

    /// The VM's allocation on its server released.
    pub(super) async fn release_job_allocation(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        self.release_allocation(&job.vm_uuid).await
    }

    /// The instance as its server has it now (an update that changes nothing).
    pub(super) async fn load(
        &self,
        ctx: &JobCtx,
        server: &str,
        uuid: &str,
    ) -> Result<Option<agent::Instance>> {
        let task = Task::MachineUpdate(agent::MachineUpdate {
            uuid: uuid.to_string(),
            ..Default::default()
        });
        let rid = req_id(&ctx.record().await.params);
        ctx.remove_data("task.load").await?;
        Ok(self
            .cn_task(ctx, server, "task.load", task, &rid)
            .await?
            .instance)
    }

    // ------------------------------------------------------------ actions

    /// Re-checks at run time what the request checked when it was accepted: the VM
    /// exists, is not destroyed, has a server, and (for start/stop with `idempotent`)
    /// whether there is anything to do.
    pub(super) async fn check(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        let vm = self.vm(&job.vm_uuid).await?;
        not_destroyed(&vm)?;
        if vm.server_uuid.is_empty() && job.name != JobKind::Destroy {
            return Err(Error::Unallocated(vm.uuid));
        }
        let p: ActionParams = params(&job.params).unwrap_or_default();
        let nothing_to_do = match job.name {
            JobKind::Start => p.idempotent && vm.state == state::RUNNING,
            JobKind::Stop => p.idempotent && vm.state == state::STOPPED,
            JobKind::Update => !params::<UpdateParams>(&job.params)?.touches_instance(),
            // A VM that never reached a server has nothing there to destroy.
            JobKind::Destroy => vm.server_uuid.is_empty(),
            _ => false,
        };
        ctx.stage("server_uuid", &vm.server_uuid).await?;
        ctx.stage("skip_task", nothing_to_do).await?;
        Ok(json!({ "state": vm.state, "skip_task": nothing_to_do }))
    }

    /// The stop (or, when `reboot`, the reboot) of the VM on its server
    /// ([`Steps::vm_task`]): SIGTERM, SIGKILL after the job's `timeout_seconds`, and for
    /// a reboot the boot after.
    pub(super) async fn halt_task(&self, ctx: &JobCtx, reboot: bool) -> Result<Value> {
        self.vm_task(ctx, |uuid, p| {
            let timeout_seconds = p.timeout_seconds;
            if reboot {
                Task::MachineReboot(agent::MachineReboot {
                    uuid,
                    timeout_seconds,
                })
            } else {
                Task::MachineShutdown(agent::MachineShutdown {
                    uuid,
                    timeout_seconds,
                })
            }
        })
        .await
    }

    /// The task `make` builds from the VM's uuid and the action's params, sent to the
    /// VM's server, its id kept under `task.<step>` (nothing when `check` found nothing
    /// to do).
    pub(super) async fn vm_task(
        &self,
        ctx: &JobCtx,
        make: impl FnOnce(String, &ActionParams) -> Task,
    ) -> Result<Value> {
        if ctx.data::<bool>("skip_task").await.unwrap_or(false) {
            return Ok(json!({ "skipped": true }));
        }
        let job = ctx.record().await;
        let p: ActionParams = params(&job.params)?;
        let server = self.server_of(ctx).await?;
        let task = make(job.vm_uuid.clone(), &p);
        let key = format!("task.{}", ctx.step());
        self.instance_task(ctx, &server, &key, task, &p.req_id)
            .await
    }

    /// Runs a task that changes the instance ([`Steps::cn_task`]), keeps the instance's
    /// state for the `record` step, and answers the step's result.
    pub(super) async fn instance_task(
        &self,
        ctx: &JobCtx,
        server: &str,
        key: &str,
        task: Task,
        rid: &str,
    ) -> Result<Value> {
        let done = self.cn_task(ctx, server, key, task, rid).await?;
        self.keep_instance(ctx, done.instance.as_ref()).await?;
        Ok(json!({ "task_id": done.id }))
    }

    pub(super) async fn keep_instance(
        &self,
        ctx: &JobCtx,
        instance: Option<&agent::Instance>,
    ) -> Result<()> {
        if let Some(i) = instance {
            ctx.stage("instance_state", &i.state).await?;
            ctx.stage("boot_timestamp", i.last_boot).await?;
        }
        Ok(())
    }

    pub(super) async fn machine_update(&self, ctx: &JobCtx) -> Result<Value> {
        if ctx.data::<bool>("skip_task").await.unwrap_or(false) {
            return Ok(json!({ "skipped": true }));
        }
        let job = ctx.record().await;
        let p: UpdateParams = params(&job.params)?;
        let server = self.server_of(ctx).await?;
        let task = Task::MachineUpdate(agent::MachineUpdate {
            uuid: job.vm_uuid.clone(),
            ram: p.ram,
            cpu_cap: p.cpu_cap,
            quota: p.quota,
            max_lwps: p.max_lwps,
            alias: p.alias.clone(),
            ..Default::default()
        });
        self.instance_task(ctx, &server, "task.machine_update", task, &p.req_id)
            .await
    }

    pub(super) async fn machine_destroy(&self, ctx: &JobCtx) -> Result<Value> {
        if ctx.data::<bool>("skip_task").await.unwrap_or(false) {
            return Ok(json!({ "skipped": true }));
        }
        let job = ctx.record().await;
        let server = self.server_of(ctx).await?;
        let task = Task::MachineDestroy(agent::MachineDestroy {
            uuid: job.vm_uuid.clone(),
        });
        match self
            .cn_task(
                ctx,
                &server,
                "task.machine_destroy",
                task,
                &req_id(&job.params),
            )
            .await
        {
            Ok(done) => Ok(json!({ "task_id": done.id })),
            Err(e) if is_named(&e, "VmNotFoundError") => Ok(json!({ "gone": true })),
            Err(e) => Err(e),
        }
    }

    /// Writes what an action did into the VM record.
    pub(super) async fn record_action(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        let instance_state: Option<String> = ctx.data("instance_state").await;
        let boot: Option<u64> = ctx.data("boot_timestamp").await;
        let update: Option<UpdateParams> = if job.name == JobKind::Update {
            Some(params(&job.params)?)
        } else {
            None
        };
        let destroy = matches!(job.name, JobKind::Destroy | JobKind::MarkDestroyed);
        let vm = self
            .store
            .update_vm(&job.vm_uuid, |vm| {
                if vm.is_destroyed() {
                    return Ok(false);
                }
                if destroy {
                    vm.state = state::DESTROYED.into();
                    vm.destroyed = Some(triton_common::time::now_millis());
                    vm.nics.clear();
                    // They went with the instance's disk.
                    vm.snapshots.clear();
                    return Ok(true);
                }
                if let Some(s) = &instance_state {
                    vm.state = s.clone();
                }
                if let Some(b) = boot.filter(|b| *b > 0) {
                    vm.boot_timestamp = b;
                }
                if let Some(u) = &update {
                    apply_update(vm, u);
                }
                Ok(true)
            })
            .await?;
        Ok(json!({ "state": vm.state }))
    }

    // ------------------------------------------------------------ snapshots

    /// The cn-agent task of a snapshot job. A re-run finds its task by the id kept in
    /// the job; should that task be lost, a create that finds the snapshot taken, or a
    /// delete that finds it gone, is done.
    pub(super) async fn snapshot_task(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        let p: SnapshotParams = params(&job.params)?;
        if job.name == JobKind::DeleteSnapshot && p.previous_state == snapshot_state::FAILED {
            return Ok(json!({ "skipped": "the snapshot was never taken" }));
        }
        let server = self.server_of(ctx).await?;
        let uuid = job.vm_uuid.clone();
        let name = p.name.clone();
        let task = match job.name {
            JobKind::CreateSnapshot => {
                Task::MachineCreateSnapshot(agent::MachineCreateSnapshot { uuid, name })
            }
            JobKind::RollbackSnapshot => {
                Task::MachineRollbackSnapshot(agent::MachineRollbackSnapshot {
                    uuid,
                    name,
                    boot: p.start,
                    timeout_seconds: 0,
                })
            }
            _ => Task::MachineDeleteSnapshot(agent::MachineDeleteSnapshot { uuid, name }),
        };
        let rerun = ctx.attempts().await > 1;
        let instance = match self
            .cn_task(
                ctx,
                &server,
                &format!("task.{}", ctx.step()),
                task,
                &p.req_id,
            )
            .await
        {
            Ok(done) => done.instance,
            Err(e)
                if rerun
                    && job.name == JobKind::CreateSnapshot
                    && is_named(&e, "ValidationFailedError") =>
            {
                let instance = self.load(ctx, &server, &job.vm_uuid).await?;
                if !instance
                    .as_ref()
                    .is_some_and(|i| i.snapshots.iter().any(|s| s.name == p.name))
                {
                    return Err(e);
                }
                instance
            }
            // Gone already (an earlier attempt deleted it), or never taken (the
            // snapshot `failed`): either way it is not there any more.
            Err(e)
                if job.name == JobKind::DeleteSnapshot && is_named(&e, "SnapshotNotFoundError") =>
            {
                self.load(ctx, &server, &job.vm_uuid).await?
            }
            Err(e) => return Err(e),
        };
        self.keep_instance(ctx, instance.as_ref()).await?;
        Ok(json!({ "snapshot": p.name }))
    }

    /// The VM after a snapshot job: its state as the server reports it, the snapshot
    /// `created` (or gone after a delete).
    pub(super) async fn record_snapshot(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        let p: SnapshotParams = params(&job.params)?;
        let instance_state: Option<String> = ctx.data("instance_state").await;
        let boot: Option<u64> = ctx.data("boot_timestamp").await;
        let vm = self
            .store
            .update_vm(&job.vm_uuid, |vm| {
                if vm.is_destroyed() {
                    return Ok(false);
                }
                if let Some(s) = &instance_state {
                    vm.state = s.clone();
                }
                if let Some(b) = boot.filter(|b| *b > 0) {
                    vm.boot_timestamp = b;
                }
                match job.name {
                    JobKind::CreateSnapshot => {
                        match vm.snapshots.iter_mut().find(|s| s.name == p.name) {
                            Some(snap) => snap.state = snapshot_state::CREATED.into(),
                            None => vm.snapshots.push(VmSnapshot {
                                name: p.name.clone(),
                                state: snapshot_state::CREATED.into(),
                                created_timestamp: job.created_at,
                            }),
                        }
                    }
                    JobKind::DeleteSnapshot => vm.snapshots.retain(|s| s.name != p.name),
                    _ => {}
                }
                Ok(true)
            })
            .await?;
        Ok(json!({ "state": vm.state, "snapshots": vm.snapshots.len() }))
    }

    // ------------------------------------------------------------ shared

    pub(super) async fn vm(&self, uuid: &str) -> Result<VmRecord> {
        self.store
            .get_vm(uuid)
            .await?
            .map(|v| v.value)
            .ok_or_else(|| Error::NotFound(format!("VM {uuid} does not exist")))
    }

    pub(super) async fn server_of(&self, ctx: &JobCtx) -> Result<String> {
        match ctx.data::<String>("server_uuid").await {
            Some(s) if !s.is_empty() => Ok(s),
            _ => {
                let job = ctx.record().await;
                Err(Error::Unallocated(job.vm_uuid))
            }
        }
    }

    pub(super) async fn vm_nics(&self, vm_uuid: &str, rid: &str) -> Result<Vec<napi::Nic>> {
        let Some(napi) = self.clients.napi.clone() else {
            return Ok(Vec::new());
        };
        Ok(napi
            .clone()
            .list_nics(request(
                napi::ListNicsRequest {
                    belongs_to_uuid: Some(vm_uuid.to_string()),
                    belongs_to_type: Some("zone".into()),
                    ..Default::default()
                },
                rid,
            ))
            .await
            .map_err(napi_err)?
            .into_inner()
            .nics)
    }

    /// Deletes every NIC of the VM (its IPs go back to their networks).
    pub(super) async fn release_nics(&self, vm_uuid: &str, rid: &str) -> Result<Value> {
        let Some(napi) = self.clients.napi.clone() else {
            return Ok(json!({ "released": 0 }));
        };
        let nics = self.vm_nics(vm_uuid, rid).await?;
        for nic in &nics {
            delete_nic(&napi, &nic.mac, rid).await?;
        }
        Ok(json!({ "released": nics.len() }))
    }

    /// Drops the VM's reservation on every server (CNAPI drops it by itself once the
    /// instance is in the server's heartbeats).
    pub(super) async fn release_allocation(&self, vm_uuid: &str) -> Result<Value> {
        let released = self
            .clients
            .cnapi
            .clone()
            .release_reservation(request(
                cnapi::ReleaseReservationRequest {
                    vm_uuid: vm_uuid.to_string(),
                    server_uuid: String::new(),
                },
                "",
            ))
            .await
            .map_err(cnapi_err)?
            .into_inner()
            .released;
        Ok(json!({ "released": released }))
    }

    /// Sends a task to the server's cn-agent (through CNAPI) once, recording its id
    /// under `key` before waiting, and waits for its end. A resumed step waits for the
    /// recorded task instead of sending another; a task the agent no longer knows
    /// (it restarted) is sent again.
    pub(super) async fn cn_task(
        &self,
        ctx: &JobCtx,
        server: &str,
        key: &str,
        task: Task,
        rid: &str,
    ) -> Result<agent::Task> {
        let cnapi = self.clients.cnapi.clone();
        let task_id = match ctx.data::<String>(key).await {
            Some(id) => id,
            None => {
                let sent = cnapi
                    .clone()
                    .server_task(request(
                        cnapi::ServerTaskRequest {
                            server_uuid: server.to_string(),
                            task: Some(agent::CreateTaskRequest {
                                req_id: rid.to_string(),
                                task: Some(task.clone()),
                            }),
                        },
                        rid,
                    ))
                    .await
                    .map_err(cnapi_err)?
                    .into_inner();
                ctx.set_data(key, &sent.id).await?;
                sent.id
            }
        };
        loop {
            let mut call = request(
                cnapi::WaitServerTaskRequest {
                    server_uuid: server.to_string(),
                    task_id: task_id.clone(),
                    timeout_ms: WAIT_TASK_SLICE_MS,
                },
                rid,
            );
            call.set_timeout(Duration::from_millis(
                u64::from(WAIT_TASK_SLICE_MS) + 30_000,
            ));
            let waited = cnapi.clone().wait_task(call).await;
            let t = match waited {
                Ok(t) => t.into_inner(),
                Err(s) if triton_common::status::error_name(&s) == Some("TaskNotFoundError") => {
                    ctx.remove_data(key).await?;
                    return Err(Error::Conflict(format!(
                        "task {task_id} is unknown to the agent (restarted?); sending it again"
                    )));
                }
                Err(s) => return Err(cnapi_err(s)),
            };
            match t.status.as_str() {
                "complete" => return Ok(t),
                "failure" => {
                    let e = task_failed(&t);
                    // A task that failed because the agent was busy may be sent again.
                    if t.error_name == "ServiceUnavailableError" {
                        ctx.remove_data(key).await?;
                        return Err(Error::Upstream {
                            service: "cn-agent",
                            name: t.error_name.clone(),
                            message: t.error_message.clone(),
                            code: Code::Unavailable,
                        });
                    }
                    return Err(e);
                }
                _ => continue,
            }
        }
    }
}

pub(super) fn req_id(params: &Value) -> String {
    params
        .get("req_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The NIC `create` asks for: one of `existing` on its network if there is one (taken
/// out of `existing`: an earlier attempt made it), else a new one made in NAPI.
pub(super) async fn nic_for(
    napi: &NapiClient<Channel>,
    existing: &mut Vec<napi::Nic>,
    create: napi::CreateNicRequest,
    rid: &str,
) -> Result<napi::Nic> {
    let network = create.network_uuid.as_deref().unwrap_or_default();
    if let Some(at) = existing.iter().position(|n| n.network_uuid == network) {
        return Ok(existing.remove(at));
    }
    Ok(napi
        .clone()
        .create_nic(request(create, rid))
        .await
        .map_err(napi_err)?
        .into_inner())
}

/// NAPI's CreateNic for one of a VM's networks (`state` None: NAPI's default, `running`).
pub(super) fn nic_request(
    owner_uuid: &str,
    vm_uuid: &str,
    net: &NetworkParam,
    server: &str,
    state: Option<&str>,
) -> napi::CreateNicRequest {
    napi::CreateNicRequest {
        owner_uuid: owner_uuid.to_string(),
        belongs_to_uuid: vm_uuid.to_string(),
        belongs_to_type: "zone".into(),
        network_uuid: Some(net.network_uuid.clone()),
        ip: net.ip.clone(),
        primary: net.primary,
        state: state.map(str::to_string),
        cn_uuid: (!server.is_empty()).then(|| server.to_string()),
        allow_ip_spoofing: net.allow_ip_spoofing,
        allow_mac_spoofing: net.allow_mac_spoofing,
        allow_dhcp_spoofing: net.allow_dhcp_spoofing,
        allow_restricted_traffic: net.allow_restricted_traffic,
        ..Default::default()
    }
}

pub(super) fn nic_tags(p: &ProvisionParams) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for n in &p.networks {
        if !n.nic_tag.is_empty() && !tags.contains(&n.nic_tag) {
            tags.push(n.nic_tag.clone());
        }
    }
    tags
}

/// The cn-agent spec of a VM: what `vmadm create` gets in Triton.
pub fn instance_spec(vm: &VmRecord, nics: &[VmNic]) -> agent::InstanceSpec {
    agent::InstanceSpec {
        uuid: vm.uuid.clone(),
        owner_uuid: vm.owner_uuid.clone(),
        alias: vm.alias.clone(),
        hostname: vm.hostname.clone(),
        brand: vm.brand.clone(),
        image_uuid: vm.image_uuid.clone(),
        ram: vm.ram,
        cpu_cap: vm.cpu_cap,
        quota: vm.quota,
        max_lwps: vm.max_lwps,
        nics: nics
            .iter()
            .enumerate()
            .map(|(i, n)| agent_nic(n, format!("eth{i}")))
            .collect(),
        init: Vec::new(),
        customer_metadata: vm.customer_metadata.clone().into_iter().collect(),
        internal_metadata: vm.internal_metadata.clone().into_iter().collect(),
        tags: vm
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), tag_text(v)))
            .collect(),
        autoboot: vm.autoboot,
        billing_id: vm.billing_id.clone(),
    }
}

/// An accepted update, applied to the record.
pub fn apply_update(vm: &mut VmRecord, u: &UpdateParams) {
    triton_common::set_given!(u => vm [
        alias, billing_id, quota, cpu_cap, max_lwps, max_swap, firewall_enabled,
    ]);
    if let Some(ram) = u.ram {
        vm.ram = ram;
        vm.max_physical_memory = ram;
    }
    if u.replace_tags {
        vm.tags = u.set_tags.clone();
    } else {
        for (k, v) in &u.set_tags {
            vm.tags.insert(k.clone(), v.clone());
        }
    }
    for k in &u.remove_tags {
        vm.tags.remove(k);
    }
    merge(
        &mut vm.customer_metadata,
        &u.set_customer_metadata,
        &u.remove_customer_metadata,
    );
    merge(
        &mut vm.internal_metadata,
        &u.set_internal_metadata,
        &u.remove_internal_metadata,
    );
}

pub(super) fn merge(
    map: &mut BTreeMap<String, String>,
    set: &BTreeMap<String, String>,
    remove: &[String],
) {
    for (k, v) in set {
        map.insert(k.clone(), v.clone());
    }
    for k in remove {
        map.remove(k);
    }
}

/// Refuses a destroyed VM: `VmDestroyed`, with when it was destroyed.
pub(crate) fn not_destroyed(vm: &VmRecord) -> Result<()> {
    if !vm.is_destroyed() {
        return Ok(());
    }
    Err(Error::Destroyed {
        uuid: vm.uuid.clone(),
        at: vm
            .destroyed
            .map(triton_common::time::rfc3339_millis)
            .unwrap_or_default(),
    })
}

// ---------------------------------------------------------------- NICs

/// A NAPI NIC as the VM records it, under `interface` (net0, net1, ...).
pub fn vm_nic(nic: napi::Nic, interface: String) -> VmNic {
    VmNic {
        interface,
        mac: nic.mac,
        ip: nic.ip,
        netmask: nic.netmask,
        gateway: nic.gateway,
        nic_tag: nic.nic_tag,
        vlan_id: nic.vlan_id,
        network_uuid: nic.network_uuid,
        primary: nic.primary,
        mtu: nic.mtu,
        resolvers: nic.resolvers,
        vnet_id: nic.vnet_id.unwrap_or(0),
        internet_nat: nic.fabric && nic.internet_nat,
    }
}

/// The lowest `net<k>` no NIC in `used` has; it is added to `used`.
pub fn free_interface(used: &mut Vec<String>) -> String {
    let mut k = 0;
    let name = loop {
        let name = format!("net{k}");
        if !used.contains(&name) {
            break name;
        }
        k += 1;
    };
    used.push(name.clone());
    name
}

/// The NIC as cn-agent gets it: VMAPI's `net<k>` is `eth<k>` inside the instance.
pub(super) fn agent_nic(n: &VmNic, interface: String) -> agent::Nic {
    agent::Nic {
        interface,
        mac: n.mac.clone(),
        ip: n.ip.clone(),
        netmask: n.netmask.clone(),
        gateway: n.gateway.clone(),
        resolvers: n.resolvers.clone(),
        nic_tag: n.nic_tag.clone(),
        vlan_id: n.vlan_id,
        mtu: n.mtu,
        primary: n.primary,
        vnet_id: n.vnet_id,
        internet_nat: n.internet_nat,
        network_uuid: n.network_uuid.clone(),
    }
}

/// The VM's resolvers: every NIC's, in NIC order, once each.
pub(super) fn resolvers_of(nics: &[VmNic]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in nics.iter().flat_map(|n| n.resolvers.iter()) {
        if !out.contains(r) {
            out.push(r.clone());
        }
    }
    out
}

pub(super) fn instance_has(instance: &agent::Instance, mac: &str) -> bool {
    instance
        .spec
        .as_ref()
        .is_some_and(|s| s.nics.iter().any(|n| n.mac.eq_ignore_ascii_case(mac)))
}
