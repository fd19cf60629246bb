//! CreateMachineSnapshot, ListMachineSnapshots, GetMachineSnapshot,
//! StartMachineFromSnapshot and DeleteMachineSnapshot, as sdc-cloudapi's
//! `lib/snapshots.js` serves them. Snapshots are the VM's `snapshots` in VMAPI; each
//! change is a VMAPI job (`create_snapshot`, `rollback_snapshot`, `delete_snapshot`),
//! so a new snapshot shows at once as `creating` and becomes `created` (or `failed`)
//! when its job ends. Another account's machine is 404; a destroyed one 410.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use triton_proto::vmapi::v1 as vmapi;

use super::Reply;
use crate::AppState;
use crate::auth::Caller;
use crate::endpoints::machines::{fetch_vm, live_vm};
use crate::error::ApiError;
use crate::params::Params;
use crate::server::{empty_response, json_response};

fn vmapi_err(s: tonic::Status) -> ApiError {
    ApiError::backend("vmapi", s)
}

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

fn request(vm: &vmapi::Vm, name: &str) -> vmapi::SnapshotRequest {
    vmapi::SnapshotRequest {
        uuid: vm.uuid.clone(),
        owner_uuid: vm.owner_uuid.clone(),
        name: name.to_string(),
        start: false,
    }
}

/// POST /:login/machines/:id/snapshots: 201 with the snapshot (`creating`).
pub async fn create(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((login, id)): Path<(String, String)>,
    params: Params,
) -> Reply {
    let owner = caller.account.uuid.clone();
    let vm = live_vm(&app, &owner, &id).await?;
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
    let job = app
        .backends
        .vmapi
        .clone()
        .create_snapshot(request(&vm, &name))
        .await
        .map_err(vmapi_err)?
        .into_inner();
    tracing::info!(vm = %vm.uuid, job = %job.job_uuid, snapshot = %name, "snapshot accepted");
    let vm = fetch_vm(&app, &owner, &id).await?;
    let body = vm
        .snapshots
        .iter()
        .find(|s| s.name == name)
        .map(snapshot_json)
        // Taken already and deleted again by a later request: say what was asked.
        .unwrap_or_else(|| json!({ "name": name, "state": "creating" }));
    let mut response = json_response(StatusCode::CREATED, &body);
    if let Ok(v) = HeaderValue::from_str(&snapshot_path(&login, &vm.uuid, &name)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// GET /:login/machines/:id/snapshots
pub async fn list(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, id)): Path<(String, String)>,
) -> Reply {
    let vm = live_vm(&app, &caller.account.uuid, &id).await?;
    let body: Vec<Value> = vm.snapshots.iter().map(snapshot_json).collect();
    Ok(json_response(StatusCode::OK, &Value::Array(body)))
}

fn find<'a>(vm: &'a vmapi::Vm, name: &str) -> Result<&'a vmapi::Snapshot, ApiError> {
    vm.snapshots
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| ApiError::not_found(format!("snapshot {name} not found")))
}

/// GET /:login/machines/:id/snapshots/:name
pub async fn get(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, id, name)): Path<(String, String, String)>,
) -> Reply {
    let vm = live_vm(&app, &caller.account.uuid, &id).await?;
    Ok(json_response(
        StatusCode::OK,
        &snapshot_json(find(&vm, &name)?),
    ))
}

/// POST /:login/machines/:id/snapshots/:name: StartMachineFromSnapshot, 202. The
/// instance is stopped, rolled back to the snapshot and booted.
pub async fn start_from(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, id, name)): Path<(String, String, String)>,
) -> Reply {
    let vm = live_vm(&app, &caller.account.uuid, &id).await?;
    find(&vm, &name)?;
    let mut req = request(&vm, &name);
    req.start = true;
    let job = app
        .backends
        .vmapi
        .clone()
        .rollback_snapshot(req)
        .await
        .map_err(vmapi_err)?
        .into_inner();
    tracing::info!(vm = %vm.uuid, job = %job.job_uuid, snapshot = %name, "rollback accepted");
    Ok(empty_response(StatusCode::ACCEPTED))
}

/// DELETE /:login/machines/:id/snapshots/:name: 204; the snapshot is `deleting` until
/// its job has run.
pub async fn delete(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, id, name)): Path<(String, String, String)>,
) -> Reply {
    let vm = live_vm(&app, &caller.account.uuid, &id).await?;
    find(&vm, &name)?;
    let job = app
        .backends
        .vmapi
        .clone()
        .delete_snapshot(request(&vm, &name))
        .await
        .map_err(vmapi_err)?
        .into_inner();
    tracing::info!(vm = %vm.uuid, job = %job.job_uuid, snapshot = %name, "snapshot delete accepted");
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
