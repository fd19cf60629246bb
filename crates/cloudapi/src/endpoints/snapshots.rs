//! CreateMachineSnapshot, ListMachineSnapshots, GetMachineSnapshot,
//! StartMachineFromSnapshot and DeleteMachineSnapshot, as sdc-cloudapi's
//! `lib/snapshots.js` serves them. Snapshots are the VM's `snapshots` in VMAPI; each
//! change is a VMAPI job (`create_snapshot`, `rollback_snapshot`, `delete_snapshot`),
//! so a new snapshot shows at once as `creating` and becomes `created` (or `failed`)
//! when its job ends. Another account's machine is 404; a destroyed one 410.

use axum::extract::Path;
use http::StatusCode;
use serde_json::{Value, json};
use triton_proto::vmapi::v1 as vmapi;

use super::{Answer, IdPath, ItemPath, Reply, Tenant, list_of};
use crate::error::ApiError;
use crate::params::Params;
use crate::server::{empty_response, json_response, with_location};

/// A snapshot as CloudAPI shows it.
fn snapshot_json(s: &vmapi::Snapshot) -> Value {
    json!({
        "name": s.name,
        "state": s.state,
        "created": s.created_timestamp,
        "updated": s.created_timestamp,
    })
}

/// The name Triton gives a snapshot asked for without one: the time, in digits
/// (`20261125T211103123Z`), which is a valid name and sorts by age.
fn default_name() -> String {
    triton_common::time::now_rfc3339()
        .chars()
        .filter(|c| !matches!(c, '-' | ':' | '.'))
        .collect()
}

fn snapshot_path(login: &str, vm: &str, name: &str) -> String {
    format!("/{login}/machines/{vm}/snapshots/{name}")
}

/// The VMAPI jobs a snapshot has.
#[derive(Debug, Clone, Copy)]
enum Job {
    Create,
    /// Roll back to the snapshot and start the instance.
    Rollback,
    Delete,
}

/// Queues `job` on snapshot `name` of `vm`.
async fn queue(t: &Tenant, vm: &vmapi::Vm, name: &str, job: Job) -> Result<(), ApiError> {
    let request = vmapi::SnapshotRequest {
        uuid: vm.uuid.clone(),
        owner_uuid: vm.owner_uuid.clone(),
        name: name.to_string(),
        start: matches!(job, Job::Rollback),
    };
    let mut client = t.vmapi();
    let queued = match job {
        Job::Create => client.create_snapshot(request).await,
        Job::Rollback => client.rollback_snapshot(request).await,
        Job::Delete => client.delete_snapshot(request).await,
    }
    .answer("vmapi")?;
    tracing::info!(vm = %vm.uuid, job = %queued.job_uuid, snapshot = %name, kind = ?job, "snapshot job accepted");
    Ok(())
}

/// POST /:login/machines/:id/snapshots: 201 with the snapshot (`creating`).
pub async fn create(t: Tenant, Path((login, id)): IdPath, params: Params) -> Reply {
    let vm = t.live_machine(&id).await?;
    let name = match params.get("name") {
        None | Some(Value::Null) => default_name(),
        Some(Value::String(s)) if s.is_empty() => default_name(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ApiError::invalid_argument(format!(
                "name: {other} is not a string"
            )));
        }
    };
    queue(&t, &vm, &name, Job::Create).await?;
    let vm = t.machine(&id).await?;
    let body = vm
        .snapshots
        .iter()
        .find(|s| s.name == name)
        .map(snapshot_json)
        // Taken already and deleted again by a later request: say what was asked.
        .unwrap_or_else(|| json!({ "name": name, "state": "creating" }));
    Ok(with_location(
        json_response(StatusCode::CREATED, &body),
        &snapshot_path(&login, &vm.uuid, &name),
    ))
}

/// GET /:login/machines/:id/snapshots
pub async fn list(t: Tenant, Path((_login, id)): IdPath) -> Reply {
    let vm = t.live_machine(&id).await?;
    list_of(&vm.snapshots, snapshot_json)
}

fn find<'a>(vm: &'a vmapi::Vm, name: &str) -> Result<&'a vmapi::Snapshot, ApiError> {
    vm.snapshots
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| ApiError::not_found(format!("snapshot {name} not found")))
}

/// GET /:login/machines/:id/snapshots/:name
pub async fn get(t: Tenant, Path((_login, id, name)): ItemPath) -> Reply {
    let vm = t.live_machine(&id).await?;
    Ok(json_response(
        StatusCode::OK,
        &snapshot_json(find(&vm, &name)?),
    ))
}

/// POST /:login/machines/:id/snapshots/:name: StartMachineFromSnapshot, 202. The
/// instance is stopped, rolled back to the snapshot and booted.
pub async fn start_from(t: Tenant, Path((_login, id, name)): ItemPath) -> Reply {
    let vm = t.live_machine(&id).await?;
    find(&vm, &name)?;
    queue(&t, &vm, &name, Job::Rollback).await?;
    Ok(empty_response(StatusCode::ACCEPTED))
}

/// DELETE /:login/machines/:id/snapshots/:name: 204; the snapshot is `deleting` until
/// its job has run.
pub async fn delete(t: Tenant, Path((_login, id, name)): ItemPath) -> Reply {
    let vm = t.live_machine(&id).await?;
    find(&vm, &name)?;
    queue(&t, &vm, &name, Job::Delete).await?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_valid_snapshot_names() {
        let name = default_name();
        assert!(
            !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric()),
            "{name}"
        );
    }
}
