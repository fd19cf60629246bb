//! provision: a new VM placed on a server, given its NICs and image, and created
//! there. A failure, once unwound, leaves the VM `failed` with the reason.

use serde_json::{Value, json};
use tonic::Code;
use triton_common::status::found;
use triton_proto::cnagent::v1 as agent;
use triton_proto::cnapi::v1 as cnapi;

use super::JobCtx;
use super::saga::{Saga, step};
use super::steps::*;
use crate::clients::request;
use crate::error::{Error, Result};
use crate::model::{VmNic, state};
use crate::params::ProvisionParams;
use crate::references::unusable;
use crate::volumes::{self as vols, VOLUMES_KEY};
use triton_proto::volapi::v1 as vol;

pub(super) static SAGA: Saga = Saga::new(&[
    step!("validate", Default, validate),
    step!("volumes", Default, reserve_volumes, undo: release_volumes),
    step!("allocate", Default, allocate, undo: undo_allocate),
    step!("provision_nics", Default, provision_nics, undo: undo_provision_nics),
    step!("ensure_image", Image, ensure_image),
    step!("machine_create", Create, machine_create, undo: undo_machine_create),
    step!("record", Default, record_provisioned),
])
.with_on_failure(|s, c| Box::pin(s.provision_failed(c)));

impl Steps {
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

    /// Undo of provision's `allocate`.
    pub(super) async fn undo_allocate(&self, ctx: &JobCtx) -> Result<()> {
        self.release_job_allocation(ctx).await.map(|_| ())
    }

    /// Undo of provision's `provision_nics`.
    pub(super) async fn undo_provision_nics(&self, ctx: &JobCtx) -> Result<()> {
        self.release_job_nics(ctx).await.map(|_| ())
    }

    /// Re-checks at run time what the request checked when it was accepted
    /// ([`crate::references`]): the owner may provision, the image and the package may
    /// be used by the owner.
    pub(super) async fn validate(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        let p: ProvisionParams = params(&job.params)?;
        let vm = self.vm(&job.vm_uuid).await?;
        not_destroyed(&vm)?;
        let (owner, rid) = (&job.owner_uuid, &p.req_id);
        let package = p.package.as_ref().map(|pkg| pkg.uuid.as_str());
        let (account, image, package) = tokio::join!(
            self.clients.check_owner(owner, rid),
            self.clients.resolve_image(
                &p.image.uuid,
                owner,
                vm.internal_metadata
                    .contains_key(crate::references::SYSTEM_ROLE_KEY),
                rid
            ),
            self.clients.resolve_package(package, owner, rid),
        );
        let problems: Vec<String> = [account.err(), image.err(), package.err()]
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        if !problems.is_empty() {
            return Err(unusable(problems));
        }
        Ok(json!({}))
    }

    /// Finds each volume the VM mounts, `ready`, among its owner's; reserves each for
    /// the VM under this job (reservations an earlier try made are kept, not made
    /// twice); writes `sdc:volumes` with each volume's `filesystem_path`. A VM without
    /// volumes passes.
    pub(super) async fn reserve_volumes(&self, ctx: &JobCtx) -> Result<Value> {
        let job = ctx.record().await;
        let p: ProvisionParams = params(&job.params)?;
        if p.volumes.is_empty() {
            return Ok(json!({ "volumes": [] }));
        }
        let Some(volapi) = self.clients.volapi.clone() else {
            return Err(Error::Config("volumes need VolAPI (volapi_url)".into()));
        };
        let (owner, rid) = (&job.owner_uuid, &p.req_id);
        let mut names: Vec<&str> = Vec::new();
        for m in &p.volumes {
            if !names.contains(&m.name.as_str()) {
                names.push(&m.name);
            }
        }
        let mut paths = std::collections::BTreeMap::new();
        let mut missing = Vec::new();
        for name in &names {
            match vols::find_live(&volapi, owner, name, rid).await? {
                None => missing.push(*name),
                Some(v) if v.state != vols::READY || v.filesystem_path.is_empty() => {
                    return Err(vols::not_ready(name, &v.state));
                }
                Some(v) => {
                    paths.insert(name.to_string(), v.filesystem_path);
                }
            }
        }
        if !missing.is_empty() {
            return Err(vols::not_found(&missing));
        }
        let held: Vec<String> = self
            .volume_reservations(&volapi, &job.uuid, owner, rid)
            .await?
            .into_iter()
            .map(|r| r.volume_name)
            .collect();
        for name in names.iter().filter(|n| !held.iter().any(|h| h == *n)) {
            volapi
                .clone()
                .add_volume_reservation(request(
                    vol::AddVolumeReservationRequest {
                        volume_name: name.to_string(),
                        job_uuid: job.uuid.clone(),
                        owner_uuid: owner.clone(),
                        vm_uuid: job.vm_uuid.clone(),
                    },
                    rid,
                ))
                .await
                .map_err(Error::upstream("volapi"))?;
        }
        let value = vols::sdc_volumes(&p.volumes, |n| paths.get(n).cloned().unwrap_or_default());
        let written = value.clone();
        self.store
            .update_vm(&job.vm_uuid, |vm| {
                if vm.internal_metadata.get(VOLUMES_KEY) == Some(&written) {
                    return Ok(false);
                }
                vm.internal_metadata
                    .insert(VOLUMES_KEY.to_string(), written.clone());
                Ok(true)
            })
            .await?;
        Ok(json!({ "volumes": paths }))
    }

    /// Undo of provision's `volumes`: the job's reservations go (the VM is not made).
    pub(super) async fn release_volumes(&self, ctx: &JobCtx) -> Result<()> {
        let job = ctx.record().await;
        let p: ProvisionParams = params(&job.params)?;
        let Some(volapi) = self.clients.volapi.clone() else {
            return Ok(());
        };
        if p.volumes.is_empty() {
            return Ok(());
        }
        for r in self
            .volume_reservations(&volapi, &job.uuid, &job.owner_uuid, &p.req_id)
            .await?
        {
            let remove = request(
                vol::RemoveVolumeReservationRequest {
                    uuid: r.uuid.clone(),
                    owner_uuid: job.owner_uuid.clone(),
                },
                &p.req_id,
            );
            // A reservation gone already is no error.
            found(volapi.clone().remove_volume_reservation(remove).await)
                .map_err(Error::upstream("volapi"))?;
        }
        Ok(())
    }

    async fn volume_reservations(
        &self,
        volapi: &triton_proto::volapi::v1::vol_api_client::VolApiClient<tonic::transport::Channel>,
        job_uuid: &str,
        owner: &str,
        rid: &str,
    ) -> Result<Vec<vol::VolumeReservation>> {
        Ok(volapi
            .clone()
            .list_volume_reservations(request(
                vol::ListVolumeReservationsRequest {
                    job_uuid: job_uuid.to_string(),
                    owner_uuid: owner.to_string(),
                    volume_name: String::new(),
                },
                rid,
            ))
            .await
            .map_err(Error::upstream("volapi"))?
            .into_inner()
            .reservations)
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
        let mut existing = if ctx.first_try().await {
            Vec::new()
        } else {
            self.vm_nics(&job.vm_uuid, &p.req_id).await?
        };
        let mut nics = Vec::new();
        for (i, net) in p.networks.iter().enumerate() {
            let create = nic_request(&job.owner_uuid, &job.vm_uuid, net, &server, None);
            let nic = nic_for(&napi, &mut existing, create, &p.req_id).await?;
            nics.push(vm_nic(nic, format!("net{i}")));
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

    pub(super) fn image_source(&self, image_uuid: &str) -> String {
        if self.clients.imgapi_file_url.is_empty() {
            String::new()
        } else {
            format!("{}/images/{image_uuid}/file", self.clients.imgapi_file_url)
        }
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
}
