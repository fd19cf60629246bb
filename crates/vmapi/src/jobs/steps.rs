//! What each step of each job does, and its undo. Every step is idempotent: run again
//! after a crash it finds what its earlier attempt did (the server in the job's data,
//! the VM's NICs in NAPI, the task id in the job's data, an instance that exists) and
//! carries on from there.
//!
//! | job | steps (undo) |
//! |---|---|
//! | provision | validate, allocate (release), provision_nics (delete NICs), ensure_image, machine_create (destroy on the server), record |
//! | start / stop / reboot | check, machine_boot / machine_shutdown / machine_reboot, record |
//! | update | check, machine_update, record |
//! | destroy | check, machine_destroy, release_nics, release_allocation, record |
//! | add_nics | check, provision_nics (delete the job's NICs), machine_update (remove them from the instance), record |
//! | remove_nics | check, machine_update, release_nics, record |
//! | create_snapshot / rollback_snapshot / delete_snapshot | check, machine_create_snapshot / machine_rollback_snapshot / machine_delete_snapshot, record |
//! | mark_destroyed | confirm_gone, release_nics, release_allocation, record |

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tonic::Code;
use triton_proto::cnagent::v1 as agent;
use triton_proto::cnapi::v1 as cnapi;
use triton_proto::napi::v1 as napi;

use crate::clients::{Clients, request};
use crate::config::Timeouts;
use crate::error::{Error, Result};
use crate::jobs::JobCtx;
use crate::jobs::kind::JobKind;
use crate::model::{VmNic, VmRecord, VmSnapshot, snapshot_state, state, tag_text};
use crate::params::{
    ActionParams, AddNicsParams, NetworkParam, ProvisionParams, RemoveNicsParams, SnapshotParams,
    UpdateParams,
};
use crate::store::Store;

/// WaitTask asks the agent to block at most this long per call (its maximum is 60 s).
const WAIT_TASK_SLICE_MS: u32 = 20_000;

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

fn params<T: serde::de::DeserializeOwned + Default>(v: &Value) -> Result<T> {
    serde_json::from_value(v.clone())
        .map_err(|e| Error::Internal(format!("job params do not parse: {e}")))
}

fn cnapi_err(status: tonic::Status) -> Error {
    Error::upstream("cnapi")(status)
}

fn napi_err(status: tonic::Status) -> Error {
    Error::upstream("napi")(status)
}

/// A task that ended in failure, as an error that is not retried.
fn task_failed(task: &agent::Task) -> Error {
    Error::Upstream {
        service: "cn-agent",
        name: task.error_name.clone(),
        message: format!("{} failed: {}", task.task, task.error_message),
        code: Code::FailedPrecondition,
    }
}

fn is_named(e: &Error, wanted: &str) -> bool {
    matches!(e, Error::Upstream { name, .. } if name == wanted)
}

impl Steps {
    pub fn default_timeout(&self) -> Duration {
        Duration::from_secs(self.timeouts.default_s)
    }

    /// Runs `step` of the job in `ctx`, as its kind says.
    pub async fn run(&self, ctx: &JobCtx, step: &str) -> Result<Value> {
        let kind = ctx.record().await.name;
        kind.run(self, ctx, step).await
    }

    /// Undoes `step` of the job in `ctx` (nothing for a step without an undo).
    pub async fn undo(&self, ctx: &JobCtx, step: &str) -> Result<()> {
        let kind = ctx.record().await.name;
        kind.undo(self, ctx, step).await
    }

    /// After an unwound failure: a failed provision leaves the VM `failed` with the
    /// reason and without the NICs it no longer has; a failed snapshot job leaves the
    /// snapshot as its kind says; other jobs leave the VM as it is (its state is
    /// refreshed from the server).
    pub async fn on_failure(&self, ctx: &JobCtx) -> Result<()> {
        let kind = ctx.record().await.name;
        kind.on_failure(self, ctx).await
    }

    pub(super) async fn provision_failed(&self, ctx: &JobCtx) -> Result<()> {
        let job = ctx.record().await;
        let reason = job.error.clone().unwrap_or_else(|| "failed".into());
        self.store
            .update_vm(&job.vm_uuid, |vm| {
                if vm.state == state::FAILED && vm.failure_reason == reason {
                    return Ok(false);
                }
                vm.state = state::FAILED.into();
                vm.failure_reason = reason.clone();
                vm.nics.clear();
                Ok(true)
            })
            .await?;
        Ok(())
    }

    /// The job's snapshot put in the state `to` gives for the job's params.
    pub(super) async fn snapshot_failed(
        &self,
        ctx: &JobCtx,
        to: impl FnOnce(&SnapshotParams) -> String,
    ) -> Result<()> {
        let job = ctx.record().await;
        let p: SnapshotParams = params(&job.params)?;
        let to = to(&p);
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

    /// Undo of provision's `allocate`.
    pub(super) async fn undo_allocate(&self, ctx: &JobCtx) -> Result<()> {
        self.release_job_allocation(ctx).await.map(|_| ())
    }

    /// Undo of provision's `provision_nics`.
    pub(super) async fn undo_provision_nics(&self, ctx: &JobCtx) -> Result<()> {
        self.release_job_nics(ctx).await.map(|_| ())
    }

    // ------------------------------------------------------------ provision

    pub(super) async fn validate(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        let p: ProvisionParams = params(&job.params)?;
        let rid = p.req_id.clone();
        let vm = self.vm(&job.vm_uuid).await?;
        if vm.is_destroyed() {
            return Err(Error::Destroyed {
                uuid: vm.uuid,
                at: vm
                    .destroyed
                    .map(triton_common::time::rfc3339_millis)
                    .unwrap_or_default(),
            });
        }
        if let Some(ufds) = &self.clients.ufds {
            let account = ufds
                .clone()
                .get_account(request(
                    triton_proto::ufds::v1::GetAccountRequest {
                        account: job.owner_uuid.clone(),
                    },
                    &rid,
                ))
                .await
                .map_err(Error::upstream("ufds"))?
                .into_inner();
            if !account.approved_for_provisioning {
                return Err(Error::invalid(
                    "owner_uuid",
                    format!("account {} is not approved for provisioning", account.login),
                ));
            }
        }
        if let Some(imgapi) = &self.clients.imgapi {
            let image = imgapi
                .clone()
                .get_image(request(
                    triton_proto::imgapi::v1::ImageRequest {
                        uuid: p.image.uuid.clone(),
                        account: None,
                    },
                    &rid,
                ))
                .await
                .map_err(Error::upstream("imgapi"))?
                .into_inner();
            if image.state != "active" {
                return Err(Error::invalid(
                    "image_uuid",
                    format!("image {} is {}, not active", image.uuid, image.state),
                ));
            }
        }
        if let (Some(papi), Some(pkg)) = (&self.clients.papi, &p.package) {
            let package = papi
                .clone()
                .get_package(request(
                    triton_proto::papi::v1::GetPackageRequest {
                        uuid: pkg.uuid.clone(),
                        owner_uuids: vec![job.owner_uuid.clone()],
                    },
                    &rid,
                ))
                .await
                .map_err(Error::upstream("papi"))?
                .into_inner();
            if !package.active {
                return Err(Error::invalid(
                    "billing_id",
                    format!("package {} is not active", package.uuid),
                ));
            }
        }
        Ok(json!({}))
    }

    pub(super) async fn allocate(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        let p: ProvisionParams = params(&job.params)?;
        if let Some(server) = ctx.data::<String>("server_uuid").await {
            return Ok(json!({ "server_uuid": server }));
        }
        let server_uuid = match &p.server_uuid {
            Some(s) => s.clone(),
            None => {
                let vm = self.vm(&job.vm_uuid).await?;
                // A reservation left by an attempt that died before recording its
                // server must not count twice.
                self.release_allocation(&job.vm_uuid).await?;
                let req = cnapi::AllocateRequest {
                    vm: Some(cnapi::AllocVm {
                        vm_uuid: vm.uuid.clone(),
                        owner_uuid: vm.owner_uuid.clone(),
                        ram: vm.ram,
                        quota: vm.quota,
                        cpu_cap: vm.cpu_cap,
                        brand: vm.brand.clone(),
                        traits_json: String::new(),
                        locality: p.locality.as_ref().map(|l| cnapi::LocalityHints {
                            near: l.near.clone(),
                            far: l.far.clone(),
                            strict: l.strict,
                        }),
                        affinity: p
                            .affinity
                            .iter()
                            .map(|a| cnapi::AffinityRule {
                                key: a.key.clone(),
                                operator: a.operator.clone(),
                                value: a.value.clone(),
                                is_soft: a.is_soft,
                            })
                            .collect(),
                        internal_metadata: vm.internal_metadata.clone().into_iter().collect(),
                    }),
                    image: Some(cnapi::AllocImage {
                        uuid: p.image.uuid.clone(),
                        traits_json: p.image.traits_json.clone(),
                        min_platform: String::new(),
                        max_platform: String::new(),
                        image_size: p.image.image_size,
                    }),
                    package: p.package.as_ref().map(|pkg| cnapi::AllocPackage {
                        uuid: pkg.uuid.clone(),
                        max_physical_memory: pkg.max_physical_memory,
                        quota: pkg.quota / 1024,
                        cpu_cap: pkg.cpu_cap,
                        traits_json: pkg.traits_json.clone(),
                        alloc_server_spread: pkg.alloc_server_spread.clone(),
                        ..Default::default()
                    }),
                    nic_tags: nic_tags(&p),
                    ..Default::default()
                };
                // CNAPI allocates one at a time; waiting in its queue is not a failure,
                // so the call may take the whole step.
                let mut call = request(req, &p.req_id);
                call.set_timeout(self.default_timeout());
                let chosen = self
                    .clients
                    .cnapi
                    .clone()
                    .allocate(call)
                    .await
                    .map_err(cnapi_err)?
                    .into_inner();
                chosen.server_uuid
            }
        };
        // Durable at once: a resumed job must release this allocation, not make another.
        ctx.set_data("server_uuid", &server_uuid).await?;
        Ok(json!({ "server_uuid": server_uuid }))
    }

    pub(super) async fn provision_nics(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        let p: ProvisionParams = params(&job.params)?;
        let server: String = ctx.data("server_uuid").await.unwrap_or_default();
        if p.networks.is_empty() {
            ctx.stage("nics", Vec::<VmNic>::new()).await?;
            return Ok(json!({ "nics": [] }));
        }
        let Some(napi) = self.clients.napi.clone() else {
            return Err(Error::Config("networks need NAPI (napi_url)".into()));
        };
        // NICs an earlier attempt or try made are found and kept, not made twice (the
        // first try has none to find: a VM's NICs are made only here).
        let mut existing = if ctx.first_try("provision_nics").await {
            Vec::new()
        } else {
            self.vm_nics(&job.vm_uuid, &p.req_id).await?
        };
        let mut nics = Vec::new();
        for (i, net) in p.networks.iter().enumerate() {
            let found = existing
                .iter()
                .position(|n| n.network_uuid == net.network_uuid)
                .map(|at| existing.remove(at));
            let nic = match found {
                Some(nic) => nic,
                None => napi
                    .clone()
                    .create_nic(request(
                        nic_request(&job.owner_uuid, &job.vm_uuid, net, &server, None),
                        &p.req_id,
                    ))
                    .await
                    .map_err(napi_err)?
                    .into_inner(),
            };
            nics.push(VmNic {
                interface: format!("net{i}"),
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
            });
        }
        ctx.stage("nics", &nics).await?;
        let recorded = nics.clone();
        self.store
            .update_vm(&job.vm_uuid, |vm| {
                if vm.nics == recorded && vm.server_uuid == server {
                    return Ok(false);
                }
                vm.server_uuid = server.clone();
                vm.nics = recorded.clone();
                vm.resolvers = Vec::new();
                for r in recorded.iter().flat_map(|n| n.resolvers.iter()) {
                    if !vm.resolvers.contains(r) {
                        vm.resolvers.push(r.clone());
                    }
                }
                Ok(true)
            })
            .await?;
        Ok(
            json!({ "nics": nics.iter().map(|n| json!({"mac": n.mac, "ip": n.ip, "network_uuid": n.network_uuid})).collect::<Vec<_>>() }),
        )
    }

    pub(super) async fn ensure_image(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        let p: ProvisionParams = params(&job.params)?;
        if self.clients.imgapi_file_url.is_empty() {
            // No image server: the image must be on the server already
            // (machine_create says so if it is not).
            return Ok(json!({ "skipped": "no imgapi_file_url" }));
        }
        let server = self.server_of(ctx).await?;
        let key = (server.clone(), p.image.uuid.clone());
        if self
            .images_present
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
        {
            return Ok(json!({ "cached": true }));
        }
        let task =
            agent::create_task_request::Task::ImageEnsurePresent(agent::ImageEnsurePresent {
                image_uuid: p.image.uuid.clone(),
                source: self.image_source(&p.image.uuid),
            });
        let done = self
            .cn_task(ctx, &server, "task.ensure_image", task, &p.req_id)
            .await?;
        self.images_present
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key);
        Ok(json!({ "task_id": done.id }))
    }

    fn image_source(&self, image_uuid: &str) -> String {
        if self.clients.imgapi_file_url.is_empty() {
            String::new()
        } else {
            format!("{}/images/{image_uuid}/file", self.clients.imgapi_file_url)
        }
    }

    pub(super) async fn machine_create(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        let p: ProvisionParams = params(&job.params)?;
        let server = self.server_of(ctx).await?;
        let vm = self.vm(&job.vm_uuid).await?;
        let nics: Vec<VmNic> = ctx.data("nics").await.unwrap_or_default();
        let spec = instance_spec(&vm, &nics);
        let task = agent::create_task_request::Task::MachineCreate(agent::MachineCreate {
            spec: Some(spec),
            image_source: self.image_source(&p.image.uuid),
        });
        let instance = match self
            .cn_task(ctx, &server, "task.machine_create", task, &p.req_id)
            .await
        {
            Ok(done) => done.instance,
            // An earlier attempt created it (VMAPI died before recording the task):
            // carry on with the instance as it is.
            Err(e) if is_named(&e, "VmExistsError") => self.load(ctx, &server, &vm.uuid).await?,
            Err(e) => return Err(e),
        };
        let instance = instance.ok_or_else(|| {
            Error::Internal("machine_create finished without the instance".into())
        })?;
        if instance.state == state::FAILED {
            return Err(Error::Upstream {
                service: "cn-agent",
                name: "VmStateError".into(),
                message: "the instance failed to boot".into(),
                code: Code::FailedPrecondition,
            });
        }
        ctx.stage("instance_state", &instance.state).await?;
        ctx.stage("boot_timestamp", instance.last_boot).await?;
        Ok(json!({ "state": instance.state }))
    }

    /// The instance as its server has it now (an update that changes nothing).
    pub(super) async fn load(
        &self,
        ctx: &JobCtx,
        server: &str,
        uuid: &str,
    ) -> Result<Option<agent::Instance>> {
        let task = agent::create_task_request::Task::MachineUpdate(agent::MachineUpdate {
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

    pub(super) async fn undo_machine_create(&self, ctx: &JobCtx) -> Result<()> {
        let job = ctx.record().await;
        let Some(server) = ctx.data::<String>("server_uuid").await else {
            return Ok(());
        };
        // Destroy whatever the create left on the server (a failed instance still
        // holds memory and disk there).
        ctx.remove_data("task.undo_create").await?;
        let task = agent::create_task_request::Task::MachineDestroy(agent::MachineDestroy {
            uuid: job.vm_uuid.clone(),
        });
        match self
            .cn_task(ctx, &server, "task.undo_create", task, &req_id(&job.params))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_named(&e, "VmNotFoundError") => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn record_provisioned(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        let server = self.server_of(ctx).await?;
        let nics: Vec<VmNic> = ctx.data("nics").await.unwrap_or_default();
        let instance_state: String = ctx
            .data("instance_state")
            .await
            .unwrap_or_else(|| state::RUNNING.to_string());
        let boot: u64 = ctx.data("boot_timestamp").await.unwrap_or(0);
        let vm = self
            .store
            .update_vm(&job.vm_uuid, |vm| {
                if vm.state != state::PROVISIONING {
                    return Ok(false);
                }
                vm.state = instance_state.clone();
                vm.server_uuid = server.clone();
                vm.nics = nics.clone();
                vm.boot_timestamp = boot;
                vm.failure_reason.clear();
                Ok(true)
            })
            .await?;
        Ok(json!({ "state": vm.state, "server_uuid": vm.server_uuid }))
    }

    // ------------------------------------------------------------ actions

    /// Re-checks at run time what the request checked when it was accepted: the VM
    /// exists, is not destroyed, has a server, and (for start/stop with `idempotent`)
    /// whether there is anything to do.
    pub(super) async fn check(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        let vm = self.vm(&job.vm_uuid).await?;
        if vm.is_destroyed() {
            return Err(Error::Destroyed {
                uuid: vm.uuid,
                at: vm
                    .destroyed
                    .map(triton_common::time::rfc3339_millis)
                    .unwrap_or_default(),
            });
        }
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

    pub(super) async fn vm_task(
        &self,
        ctx: &JobCtx,
        step: &str,
        make: impl FnOnce(String, &ActionParams) -> agent::create_task_request::Task,
    ) -> Result<Value> {
        if ctx.data::<bool>("skip_task").await.unwrap_or(false) {
            return Ok(json!({ "skipped": true }));
        }
        let job = ctx.record().await;
        let p: ActionParams = params(&job.params)?;
        let server = self.server_of(ctx).await?;
        let task = make(job.vm_uuid.clone(), &p);
        self.instance_task(ctx, &server, &format!("task.{step}"), task, &p.req_id)
            .await
    }

    /// Runs a task that changes the instance ([`Steps::cn_task`]), keeps the instance's
    /// state for the `record` step, and answers the step's result.
    pub(super) async fn instance_task(
        &self,
        ctx: &JobCtx,
        server: &str,
        key: &str,
        task: agent::create_task_request::Task,
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
        let task = agent::create_task_request::Task::MachineUpdate(agent::MachineUpdate {
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
        let task = agent::create_task_request::Task::MachineDestroy(agent::MachineDestroy {
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
    pub(super) async fn snapshot_task(&self, ctx: &JobCtx, step: &str) -> Result<Value> {
        use agent::create_task_request::Task;
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
        let rerun = Self::attempts(&job, step) > 1;
        let instance = match self
            .cn_task(ctx, &server, &format!("task.{step}"), task, &p.req_id)
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
            match napi
                .clone()
                .delete_nic(request(
                    napi::DeleteNicRequest {
                        mac: nic.mac.clone(),
                    },
                    rid,
                ))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => return Err(napi_err(s)),
            }
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
        task: agent::create_task_request::Task,
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

fn req_id(params: &Value) -> String {
    params
        .get("req_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// NAPI's CreateNic for one of a VM's networks (`state` None: NAPI's default, `running`).
fn nic_request(
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

fn nic_tags(p: &ProvisionParams) -> Vec<String> {
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
            .map(|(i, n)| agent::Nic {
                interface: format!("eth{i}"),
                mac: n.mac.clone(),
                ip: n.ip.clone(),
                netmask: n.netmask.clone(),
                gateway: n.gateway.clone(),
                resolvers: n.resolvers.clone(),
                nic_tag: n.nic_tag.clone(),
                vlan_id: n.vlan_id,
                mtu: n.mtu,
                primary: n.primary,
            })
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
    if let Some(a) = &u.alias {
        vm.alias = a.clone();
    }
    if let Some(b) = &u.billing_id {
        vm.billing_id = b.clone();
    }
    if let Some(ram) = u.ram {
        vm.ram = ram;
        vm.max_physical_memory = ram;
    }
    if let Some(q) = u.quota {
        vm.quota = q;
    }
    if let Some(c) = u.cpu_cap {
        vm.cpu_cap = c;
    }
    if let Some(l) = u.max_lwps {
        vm.max_lwps = l;
    }
    if let Some(s) = u.max_swap {
        vm.max_swap = s;
    }
    if let Some(f) = u.firewall_enabled {
        vm.firewall_enabled = f;
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

fn merge(map: &mut BTreeMap<String, String>, set: &BTreeMap<String, String>, remove: &[String]) {
    for (k, v) in set {
        map.insert(k.clone(), v.clone());
    }
    for k in remove {
        map.remove(k);
    }
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
    }
}

/// The lowest `net<k>` no NIC in `used` has; it is added to `used`.
pub fn free_interface(used: &mut Vec<String>) -> String {
    let name = (0..)
        .map(|k| format!("net{k}"))
        .find(|n| !used.contains(n))
        .expect("some interface name is free");
    used.push(name.clone());
    name
}

/// The NIC as cn-agent gets it: VMAPI's `net<k>` is `eth<k>` inside the instance.
fn agent_nic(n: &VmNic) -> agent::Nic {
    agent::Nic {
        interface: n
            .interface
            .strip_prefix("net")
            .map(|k| format!("eth{k}"))
            .unwrap_or_default(),
        mac: n.mac.clone(),
        ip: n.ip.clone(),
        netmask: n.netmask.clone(),
        gateway: n.gateway.clone(),
        resolvers: n.resolvers.clone(),
        nic_tag: n.nic_tag.clone(),
        vlan_id: n.vlan_id,
        mtu: n.mtu,
        primary: n.primary,
    }
}

/// The VM's resolvers: every NIC's, in NIC order, once each.
fn resolvers_of(nics: &[VmNic]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in nics.iter().flat_map(|n| n.resolvers.iter()) {
        if !out.contains(r) {
            out.push(r.clone());
        }
    }
    out
}

fn instance_has(instance: &agent::Instance, mac: &str) -> bool {
    instance
        .spec
        .as_ref()
        .is_some_and(|s| s.nics.iter().any(|n| n.mac.eq_ignore_ascii_case(mac)))
}

impl Steps {
    /// Attempts made of `step` so far (this one included).
    pub(super) fn attempts(job: &crate::jobs::record::JobRecord, step: &str) -> u32 {
        job.chain
            .iter()
            .find(|s| s.name == step)
            .map(|s| s.attempts)
            .unwrap_or(0)
    }

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
            let found = earlier
                .iter()
                .position(|n| n.network_uuid == net.network_uuid)
                .map(|at| earlier.remove(at));
            let nic = match found {
                Some(nic) => nic,
                None => napi
                    .clone()
                    .create_nic(request(
                        nic_request(
                            &job.owner_uuid,
                            &job.vm_uuid,
                            net,
                            &server,
                            Some("provisioning"),
                        ),
                        &p.req_id,
                    ))
                    .await
                    .map_err(napi_err)?
                    .into_inner(),
            };
            reserved.push(nic);
        }
        for mac in &p.macs {
            let nic = match napi
                .clone()
                .get_nic(request(napi::GetNicRequest { mac: mac.clone() }, &p.req_id))
                .await
            {
                Ok(n) => n.into_inner(),
                Err(s) if s.code() == Code::NotFound => {
                    return Err(Error::NotFound(format!(
                        "macs: NIC {mac} does not exist in NAPI"
                    )));
                }
                Err(s) => return Err(napi_err(s)),
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
            match napi
                .clone()
                .delete_nic(request(
                    napi::DeleteNicRequest {
                        mac: nic.mac.clone(),
                    },
                    &p.req_id,
                ))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => return Err(napi_err(s)),
            }
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
            && Self::attempts(&job, "machine_update") > 1
            && let Some(instance) = self.load(ctx, &server, &job.vm_uuid).await?
        {
            nics.retain(|n| !instance_has(&instance, &n.mac));
        }
        if nics.is_empty() {
            return Ok(json!({ "skipped": "the instance has the NICs" }));
        }
        let task = agent::create_task_request::Task::MachineUpdate(agent::MachineUpdate {
            uuid: job.vm_uuid.clone(),
            add_nics: nics.iter().map(agent_nic).collect(),
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

    /// remove_nics: cn-agent `machine_update` with `remove_nics`. A re-run that cannot
    /// find its earlier task sends only the NICs the instance still has.
    pub(super) async fn remove_nics_on_server(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        let p: RemoveNicsParams = params(&job.params)?;
        let server = self.server_of(ctx).await?;
        let mut macs = p.macs.clone();
        if ctx.data::<String>("task.remove_nics").await.is_none()
            && Self::attempts(&job, "machine_update") > 1
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
            match napi
                .clone()
                .delete_nic(request(
                    napi::DeleteNicRequest { mac: mac.clone() },
                    &p.req_id,
                ))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => return Err(napi_err(s)),
            }
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
