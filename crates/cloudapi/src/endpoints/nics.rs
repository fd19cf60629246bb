//! ListNics, GetNic, AddNic and RemoveNic, as sdc-cloudapi's `lib/nics.js` serves
//! them: NICs are read from NAPI (so a NIC being added shows at once, in state
//! `provisioning`); AddNic reserves the NIC in NAPI and hands its MAC to a VMAPI
//! `add_nics` job, which puts it on the instance and marks it `running` (or deletes
//! it again if the server cannot take it); RemoveNic queues a VMAPI `remove_nics`
//! job. Another account's machine or NIC is 404.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};
use triton_proto::napi::v1 as napi;
use triton_proto::vmapi::v1 as vmapi;

use super::{Reply, found, is_uuid, listing, put_str};
use crate::AppState;
use crate::auth::Caller;
use crate::endpoints::machines::fetch_vm;
use crate::endpoints::networks::usable_by;
use crate::error::ApiError;
use crate::machine::translate_state;
use crate::params::Params;
use crate::server::{empty_response, json_response};

/// `aabbccddeeff` (CloudAPI's path form) or `aa:bb:...` to the colon form; `None`
/// when it is not a MAC address.
fn normalize_mac(mac: &str) -> Option<String> {
    let hex: String = mac.chars().filter(|c| *c != ':').collect();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    Some(
        hex.as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":"),
    )
}

fn napi_err(s: tonic::Status) -> ApiError {
    ApiError::backend("napi", s)
}

fn vmapi_err(s: tonic::Status) -> ApiError {
    ApiError::backend("vmapi", s)
}

/// Triton's public form of a NIC (`formatNic`). A NIC NAPI holds as `provisioning` is
/// still being added; otherwise its state follows the machine's.
fn nic_json(n: &napi::Nic, vm_state: &str) -> Value {
    let mut o = Map::new();
    o.insert("mac".into(), json!(n.mac));
    o.insert("ip".into(), json!(n.ip));
    o.insert("primary".into(), json!(n.primary));
    put_str(&mut o, "gateway", &n.gateway);
    o.insert("netmask".into(), json!(n.netmask));
    let state = if n.state == "provisioning" {
        "provisioning"
    } else {
        match translate_state(vm_state) {
            "running" => "running",
            "provisioning" => "provisioning",
            _ => "stopped",
        }
    };
    o.insert("state".into(), json!(state));
    o.insert("network".into(), json!(n.network_uuid));
    Value::Object(o)
}

fn nic_path(login: &str, vm_uuid: &str, mac: &str) -> String {
    format!("/{login}/machines/{vm_uuid}/nics/{}", mac.replace(':', ""))
}

/// The machine's NICs as NAPI holds them.
async fn vm_nics(app: &AppState, vm_uuid: &str) -> Result<Vec<napi::Nic>, ApiError> {
    Ok(app
        .backends
        .napi
        .clone()
        .list_nics(napi::ListNicsRequest {
            belongs_to_uuid: Some(vm_uuid.to_string()),
            belongs_to_type: Some("zone".into()),
            ..Default::default()
        })
        .await
        .map_err(napi_err)?
        .into_inner()
        .nics)
}

/// A NIC of the caller's machine `vm_uuid`, or 404.
async fn fetch_nic(
    app: &AppState,
    owner: &str,
    vm_uuid: &str,
    mac: &str,
) -> Result<napi::Nic, ApiError> {
    let Some(wanted) = normalize_mac(mac) else {
        return Err(ApiError::invalid_argument("mac has invalid format"));
    };
    let not_found = || ApiError::not_found(format!("nic {mac} not found"));
    let answer = app
        .backends
        .napi
        .clone()
        .get_nic(napi::GetNicRequest { mac: wanted })
        .await;
    let nic = found(answer, "napi", not_found)?;
    if nic.owner_uuid != owner || nic.belongs_to_uuid != vm_uuid {
        return Err(not_found());
    }
    Ok(nic)
}

pub async fn list(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, id)): Path<(String, String)>,
) -> Reply {
    let vm = fetch_vm(&app, &caller.account.uuid, &id).await?;
    let nics = vm_nics(&app, &vm.uuid).await?;
    let rows = nics.iter().map(|n| nic_json(n, &vm.state)).collect();
    Ok(listing(rows, nics.len(), None))
}

pub async fn get(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, id, mac)): Path<(String, String, String)>,
) -> Reply {
    let vm = fetch_vm(&app, &caller.account.uuid, &id).await?;
    let nic = fetch_nic(&app, &caller.account.uuid, &vm.uuid, &mac).await?;
    Ok(json_response(StatusCode::OK, &nic_json(&nic, &vm.state)))
}

/// The `network` parameter: a network uuid, or `{ipv4_uuid, ipv4_ips: [ip]}`.
fn network_param(params: &Params) -> Result<(String, Option<String>), ApiError> {
    let bad_format = || ApiError::invalid_argument("network argument has invalid format");
    match params.get("network") {
        None | Some(Value::Null) => Err(ApiError::missing_parameter("network must be specified")),
        Some(Value::String(s)) if s.is_empty() => {
            Err(ApiError::missing_parameter("network must be specified"))
        }
        Some(Value::String(s)) => {
            // A form-encoded or query-string object arrives as JSON text.
            if s.trim_start().starts_with('{') {
                let v: Value = serde_json::from_str(s).map_err(|_| bad_format())?;
                return network_object(&v);
            }
            if !is_uuid(s) {
                return Err(bad_format());
            }
            Ok((s.to_ascii_lowercase(), None))
        }
        Some(v @ Value::Object(_)) => network_object(v),
        Some(_) => Err(ApiError::invalid_argument(
            "network argument must be a network object or string",
        )),
    }
}

fn network_object(v: &Value) -> Result<(String, Option<String>), ApiError> {
    let uuid = v
        .get("ipv4_uuid")
        .and_then(Value::as_str)
        .filter(|u| is_uuid(u))
        .ok_or_else(|| ApiError::invalid_argument("network.ipv4_uuid must be a network UUID"))?;
    let ip = match v.get("ipv4_ips") {
        None | Some(Value::Null) => None,
        Some(Value::Array(ips)) if ips.len() == 1 => match ips[0].as_str() {
            Some(ip) if ip.parse::<std::net::Ipv4Addr>().is_ok() => Some(ip.to_string()),
            _ => {
                return Err(ApiError::invalid_argument(
                    "network.ipv4_ips must hold one IPv4 address",
                ));
            }
        },
        Some(_) => {
            return Err(ApiError::invalid_argument(
                "network.ipv4_ips must hold one IPv4 address",
            ));
        }
    };
    Ok((uuid.to_ascii_lowercase(), ip))
}

/// POST /:login/machines/:id/nics {network, primary?}: 201 with the NIC (state
/// `provisioning` until the job ends) and its `Location`; 302 to the NIC the machine
/// already has on that network.
pub async fn add(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, id)): Path<(String, String)>,
    params: Params,
) -> Reply {
    let owner = caller.account.uuid.clone();
    let login = caller.account.login.clone();
    let vm = fetch_vm(&app, &owner, &id).await?;
    if vm.state == "destroyed" {
        return Err(ApiError::new(
            StatusCode::GONE,
            "ResourceNotFound",
            format!("{id} has been deleted"),
        ));
    }
    let (network_uuid, ip) = network_param(&params)?;
    let primary = params.bool("primary")?.unwrap_or(false);

    // The network must exist and be usable by the account (Triton answers
    // InvalidArgument, not 404, for one that is not).
    let not_found = || ApiError::invalid_argument(format!("network {network_uuid} not found"));
    let answer = app
        .backends
        .napi
        .clone()
        .get_network(napi::GetNetworkRequest {
            uuid: network_uuid.clone(),
        })
        .await;
    let network = found(answer, "napi", not_found)?;
    if !usable_by(&network, &owner) {
        return Err(not_found());
    }

    let existing = vm_nics(&app, &vm.uuid).await?;
    if let Some(nic) = existing.iter().find(|n| n.network_uuid == network.uuid) {
        let mut response = empty_response(StatusCode::FOUND);
        if let Ok(v) = HeaderValue::from_str(&nic_path(&login, &vm.uuid, &nic.mac)) {
            response.headers_mut().insert(header::LOCATION, v);
        }
        return Ok(response);
    }
    let has_primary = existing.iter().any(|n| n.primary);
    if primary && has_primary {
        return Err(ApiError::invalid_argument(format!(
            "primary: instance {} already has a primary NIC",
            vm.uuid
        )));
    }

    // Reserve the NIC first, so that GetNic shows it at once; VMAPI's job adds it to
    // the instance and marks it running, or deletes it if the server cannot take it.
    let nic = app
        .backends
        .napi
        .clone()
        .create_nic(napi::CreateNicRequest {
            owner_uuid: owner.clone(),
            belongs_to_uuid: vm.uuid.clone(),
            belongs_to_type: "zone".into(),
            network_uuid: Some(network.uuid.clone()),
            ip,
            primary: !has_primary,
            state: Some("provisioning".into()),
            cn_uuid: (!vm.server_uuid.is_empty()).then(|| vm.server_uuid.clone()),
            ..Default::default()
        })
        .await
        .map_err(napi_err)?
        .into_inner();
    let queued = app
        .backends
        .vmapi
        .clone()
        .add_nics(vmapi::AddNicsRequest {
            uuid: vm.uuid.clone(),
            owner_uuid: owner.clone(),
            macs: vec![nic.mac.clone()],
            ..Default::default()
        })
        .await;
    if let Err(s) = queued {
        // Nothing will use the NIC: give its IP back.
        if let Err(e) = app
            .backends
            .napi
            .clone()
            .delete_nic(napi::DeleteNicRequest {
                mac: nic.mac.clone(),
            })
            .await
        {
            tracing::warn!(mac = %nic.mac, error = %e, "cannot delete a NIC VMAPI refused");
        }
        return Err(vmapi_err(s));
    }
    let mut response = json_response(StatusCode::CREATED, &nic_json(&nic, &vm.state));
    if let Ok(v) = HeaderValue::from_str(&nic_path(&login, &vm.uuid, &nic.mac)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// DELETE /:login/machines/:id/nics/:mac: 204 once VMAPI's `remove_nics` job is
/// queued.
pub async fn remove(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, id, mac)): Path<(String, String, String)>,
) -> Reply {
    let owner = caller.account.uuid.clone();
    let vm = fetch_vm(&app, &owner, &id).await?;
    let nic = fetch_nic(&app, &owner, &vm.uuid, &mac).await?;
    app.backends
        .vmapi
        .clone()
        .remove_nics(vmapi::RemoveNicsRequest {
            uuid: vm.uuid.clone(),
            owner_uuid: owner,
            macs: vec![nic.mac],
        })
        .await
        .map_err(vmapi_err)?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            normalize_mac("90B8D0C0FFEE").as_deref(),
            Some("90:b8:d0:c0:ff:ee")
        );
        assert_eq!(
            normalize_mac("90:b8:d0:c0:ff:ee").as_deref(),
            Some("90:b8:d0:c0:ff:ee")
        );
        assert_eq!(normalize_mac("90b8d0"), None);
        assert_eq!(normalize_mac("zzb8d0c0ffee"), None);
    }

    #[test]
    fn network_forms() {
        let uuid = "6b6e8a2a-4bd6-4b5e-a7b4-0ad7e6c1d4f2";
        let p = |v: Value| {
            let mut params = Params::default();
            params.map.insert("network".into(), v);
            network_param(&params)
        };
        assert_eq!(p(json!(uuid)).unwrap(), (uuid.to_string(), None));
        assert_eq!(
            p(json!({"ipv4_uuid": uuid, "ipv4_ips": ["10.0.0.5"]})).unwrap(),
            (uuid.to_string(), Some("10.0.0.5".to_string()))
        );
        assert_eq!(p(json!("nope")).unwrap_err().code, "InvalidArgument");
        assert_eq!(p(Value::Null).unwrap_err().code, "MissingParameter");
        assert_eq!(
            p(json!({"ipv4_uuid": uuid, "ipv4_ips": ["a", "b"]}))
                .unwrap_err()
                .code,
            "InvalidArgument"
        );
    }
}
