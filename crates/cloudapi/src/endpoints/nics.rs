//! ListNics, GetNic (from the VM's NICs in VMAPI); AddNic and RemoveNic need VMAPI
//! NIC actions (`add_nics`/`remove_nics`), which its proto does not offer yet.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use http::StatusCode;
use serde_json::Value;

use super::Reply;
use crate::AppState;
use crate::auth::Caller;
use crate::endpoints::machines::fetch_vm;
use crate::error::ApiError;
use crate::machine::nic_json;
use crate::server::json_response;

/// `aabbccddeeff` (CloudAPI's path form) or `aa:bb:...` to the colon form.
fn normalize_mac(mac: &str) -> String {
    let hex: String = mac
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect::<String>()
        .to_ascii_lowercase();
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

pub async fn list(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, id)): Path<(String, String)>,
) -> Reply {
    let vm = fetch_vm(&app, &caller.account.uuid, &id).await?;
    Ok(json_response(
        StatusCode::OK,
        &Value::Array(vm.nics.iter().map(|n| nic_json(n, &vm.state)).collect()),
    ))
}

pub async fn get(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, id, mac)): Path<(String, String, String)>,
) -> Reply {
    let vm = fetch_vm(&app, &caller.account.uuid, &id).await?;
    let wanted = normalize_mac(&mac);
    let nic = vm
        .nics
        .iter()
        .find(|n| normalize_mac(&n.mac) == wanted)
        .ok_or_else(|| ApiError::not_found(format!("nic {mac} does not exist")))?;
    Ok(json_response(StatusCode::OK, &nic_json(nic, &vm.state)))
}

fn not_implemented(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "NotImplemented",
        format!("{what} is not available in this datacenter yet"),
    )
}

pub async fn add(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, id)): Path<(String, String)>,
) -> Reply {
    fetch_vm(&app, &caller.account.uuid, &id).await?;
    Err(not_implemented("AddNic"))
}

pub async fn remove(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, id, _mac)): Path<(String, String, String)>,
) -> Reply {
    fetch_vm(&app, &caller.account.uuid, &id).await?;
    Err(not_implemented("RemoveNic"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn macs() {
        assert_eq!(super::normalize_mac("90B8D0C0FFEE"), "90:b8:d0:c0:ff:ee");
        assert_eq!(
            super::normalize_mac("90:b8:d0:c0:ff:ee"),
            "90:b8:d0:c0:ff:ee"
        );
    }
}
