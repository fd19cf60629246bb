//! The updater (Triton's volapi-updater): follows VMAPI's `WatchVms`, snapshot then
//! follow, and applies the reference's rules one event at a time, in order:
//!
//! - a storage VM (`sdc:system_role=nfsvolumestorage`) drives its volume's state:
//!   running -> `ready` with `filesystem_path` (from creating or failed); failed ->
//!   `failed` (from creating the VM is then deleted, so nothing half-made is left);
//!   destroyed -> the row goes (from deleting) or `failed`; stopped -> `failed` unless
//!   creating or deleting;
//! - every VM whose `internal_metadata["sdc:volumes"]` names a volume is in its `refs`
//!   while active, its reservation then goes; a VM failed, destroyed or gone leaves every
//!   volume's refs.
//!
//! Nothing is kept on disk: every rule is a function of the VM's current state, so after
//! a restart (or a resync) the snapshot from position 0 applies them again, and a
//! reference no active VM nor reservation holds any more is dropped at the snapshot's
//! end. An event whose writes fail is tried again: the stream is opened again at the
//! last position applied. The reservation GC is [`gc_reservations`].

use std::collections::BTreeSet;
use std::time::Duration;

use moray_client::filter::Filter;
use moray_client::typed::Change;
use tokio_util::sync::CancellationToken;
use triton_common::follow::{Apply, follow};
use triton_proto::vmapi::v1 as vm;

use crate::error::{Error, Result};
use crate::service::{EXPORT_PATH, STORAGE_ROLE, VolApi, found, vm_active};
use crate::store::{VolumeRecord, state};

/// The volume names a VM's `sdc:volumes` lists.
pub fn mounted_names(v: &vm::Vm) -> Vec<String> {
    let Some(text) = v.internal_metadata.get("sdc:volumes") else {
        return Vec::new();
    };
    let Ok(serde_json::Value::Array(entries)) = serde_json::from_str(text) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .iter()
        .filter_map(|e| e.get("name")?.as_str().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn is_storage(v: &vm::Vm) -> bool {
    v.internal_metadata
        .get("sdc:system_role")
        .is_some_and(|r| r == STORAGE_ROLE)
}

/// The updater's side of [`triton_common::follow`]: VMAPI's VMs into the volumes.
struct Updater(VolApi);

impl Apply<vm::Vm> for Updater {
    type Error = Error;

    async fn reset(&mut self, vms: Vec<vm::Vm>) -> Result<()> {
        self.0.apply_snapshot(&vms).await
    }

    async fn change(&mut self, uuid: &str, v: Option<&vm::Vm>) -> Result<()> {
        match v {
            Some(v) => self.0.apply_vm(v).await,
            None => self.0.apply_gone(uuid).await,
        }
    }
}

/// Follows VMAPI until `shutdown`.
pub async fn run(api: VolApi, shutdown: CancellationToken) {
    let client = api.clients.vmapi.clone();
    follow::<vm::WatchVmsRequest, _>("vmapi WatchVms", client, Updater(api), shutdown).await
}

impl VolApi {
    /// Every VM of the snapshot, then refs that neither an active VM nor a reservation
    /// holds go.
    pub async fn apply_snapshot(&self, vms: &[vm::Vm]) -> Result<()> {
        let mut active = BTreeSet::new();
        for v in vms {
            self.apply_vm(v).await?;
            if vm_active(v) {
                active.insert(v.uuid.to_ascii_lowercase());
            }
        }
        let reserved: BTreeSet<String> = self
            .store
            .find_reservations(&Filter::present("uuid"))
            .await?
            .into_iter()
            .map(|r| r.vm_uuid)
            .collect();
        for volume in self.store.find_volumes(&Filter::present("refs")).await? {
            for r in &volume.refs {
                if !active.contains(r) && !reserved.contains(r) {
                    self.set_ref(&volume.uuid, r, false).await?;
                }
            }
        }
        Ok(())
    }

    /// One VM as VMAPI now has it.
    pub async fn apply_vm(&self, v: &vm::Vm) -> Result<()> {
        let uuid = v.uuid.to_ascii_lowercase();
        if is_storage(v) {
            for volume in self
                .store
                .find_volumes(&Filter::eq("vm_uuid", &uuid))
                .await?
            {
                self.storage_vm(&volume, v).await?;
            }
        }
        if vm_active(v) {
            let owner = v.owner_uuid.to_ascii_lowercase();
            for name in mounted_names(v) {
                if let Some(volume) = self.store.live_by_name(&owner, &name).await? {
                    self.set_ref(&volume.uuid, &uuid, true).await?;
                    self.drop_reservations(&owner, &name, &uuid).await?;
                }
            }
            Ok(())
        } else {
            self.forget_vm(&uuid).await
        }
    }

    /// A VM deleted from VMAPI's records.
    pub async fn apply_gone(&self, uuid: &str) -> Result<()> {
        let uuid = uuid.to_ascii_lowercase();
        for volume in self
            .store
            .find_volumes(&Filter::eq("vm_uuid", &uuid))
            .await?
        {
            self.storage_gone(&volume).await?;
        }
        self.forget_vm(&uuid).await
    }

    /// The VM leaves every volume's refs and its reservations go.
    async fn forget_vm(&self, uuid: &str) -> Result<()> {
        for volume in self.store.find_volumes(&Filter::eq("refs", uuid)).await? {
            self.set_ref(&volume.uuid, uuid, false).await?;
        }
        for r in self
            .store
            .find_reservations(&Filter::eq("vm_uuid", uuid))
            .await?
        {
            self.store.remove_reservation(&r.uuid).await?;
        }
        Ok(())
    }

    async fn set_state(
        &self,
        uuid: &str,
        to: &str,
        path: Option<String>,
        error: &str,
    ) -> Result<()> {
        self.store
            .change_volume(uuid, |slot| {
                let Some(v) = slot.as_mut() else {
                    return Ok(Change::Keep);
                };
                let path_changes = path.as_ref().is_some_and(|p| *p != v.filesystem_path);
                if v.state == to && !path_changes {
                    return Ok(Change::Keep);
                }
                v.state = to.to_string();
                if let Some(p) = &path {
                    v.filesystem_path = p.clone();
                }
                v.error = error.to_string();
                Ok(Change::Write)
            })
            .await?;
        tracing::info!(volume = %uuid, state = to, "volume state");
        Ok(())
    }

    /// The storage VM's state drives the volume's.
    async fn storage_vm(&self, volume: &VolumeRecord, v: &vm::Vm) -> Result<()> {
        let from = volume.state.as_str();
        if !v.destroyed.is_empty() || v.state == "destroyed" {
            return self.storage_gone(volume).await;
        }
        match v.state.as_str() {
            "running" if matches!(from, state::CREATING | state::FAILED | state::READY) => {
                let Some(ip) = v
                    .nics
                    .first()
                    .map(|n| n.ip.clone())
                    .filter(|ip| !ip.is_empty())
                else {
                    return Ok(());
                };
                let path = format!("{ip}:{EXPORT_PATH}");
                self.set_state(&volume.uuid, state::READY, Some(path), "")
                    .await
            }
            "failed" if from != state::DELETING => {
                let why = if v.failure_reason.is_empty() {
                    "the storage VM failed".to_string()
                } else {
                    format!("the storage VM failed: {}", v.failure_reason)
                };
                self.set_state(&volume.uuid, state::FAILED, None, &why)
                    .await?;
                if from == state::CREATING && self.delete_storage_vm(&volume.vm_uuid).await? {
                    tracing::info!(vm = %volume.vm_uuid, "failed storage VM deleted");
                }
                Ok(())
            }
            "stopped" if from == state::READY => {
                self.set_state(&volume.uuid, state::FAILED, None, "the storage VM stopped")
                    .await
            }
            _ => Ok(()),
        }
    }

    /// The storage VM is destroyed or gone: a deleting volume's row goes, any other
    /// volume is failed.
    async fn storage_gone(&self, volume: &VolumeRecord) -> Result<()> {
        if volume.state == state::DELETING {
            self.store
                .change_volume(&volume.uuid, |slot| {
                    *slot = None;
                    Ok(Change::Write)
                })
                .await?;
            tracing::info!(volume = %volume.uuid, "volume deleted");
            return Ok(());
        }
        if volume.state == state::FAILED {
            return Ok(());
        }
        self.set_state(
            &volume.uuid,
            state::FAILED,
            None,
            "the storage VM was destroyed",
        )
        .await
    }

    /// Asks VMAPI to destroy the storage VM `vm_uuid`; false when VMAPI no longer
    /// knows it.
    pub(crate) async fn delete_storage_vm(&self, vm_uuid: &str) -> Result<bool> {
        let deleted = self
            .clients
            .vmapi
            .clone()
            .delete_vm(vm::DeleteVmRequest {
                uuid: vm_uuid.to_string(),
                owner_uuid: String::new(),
            })
            .await;
        Ok(found("vmapi", deleted)?.is_some())
    }
}

/// One pass of the reservation GC: a reservation whose job ended (succeeded, failed or
/// canceled, or unknown to VMAPI) or that is older than `max_age` goes; its VM then
/// leaves the volume's refs unless it is active.
pub async fn gc_reservations(api: &VolApi, max_age: Duration) -> Result<()> {
    let now = triton_common::time::now_millis();
    for r in api
        .store
        .find_reservations(&Filter::present("uuid"))
        .await?
    {
        let old = now.saturating_sub(r.create_timestamp) > max_age.as_millis() as i64;
        let ended = old || {
            let job = api
                .clients
                .vmapi
                .clone()
                .get_job(vm::GetJobRequest {
                    uuid: r.job_uuid.clone(),
                })
                .await;
            found("vmapi", job)?
                .is_none_or(|j| matches!(j.execution.as_str(), "succeeded" | "failed" | "canceled"))
        };
        if ended {
            tracing::info!(reservation = %r.uuid, job = %r.job_uuid, old, "reservation ended");
            api.end_reservation(&r).await?;
        }
    }
    Ok(())
}
