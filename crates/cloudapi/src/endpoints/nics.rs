//! ListNics, GetNic, AddNic and RemoveNic, as sdc-cloudapi's `lib/nics.js` serves
//! them: NICs are read from NAPI (so a NIC being added shows at once, in state
//! `provisioning`); AddNic reserves the NIC in NAPI and hands its MAC to a VMAPI
//! `add_nics` job, which puts it on the instance and marks it `running` (or deletes
//! it again if the server cannot take it); RemoveNic queues a VMAPI `remove_nics`
//! job. Another account's machine or NIC is 404.

use axum::extract::Path;
use http::StatusCode;
use serde_json::Value;
use triton_proto::napi::v1 as napi;
use triton_proto::vmapi::v1 as vmapi;
use triton_types::mac::colon_form;

use super::{Answer, IdPath, ItemPath, Reply, Tenant, found, is_uuid, listing, object, put_str};
use crate::error::ApiError;
use crate::machine::nic_state;
use crate::params::Params;
use crate::server::{empty_response, json_response, with_location};

/// Triton's public form of a NIC (`formatNic`). A NIC NAPI holds as `provisioning` is
/// still being added; otherwise its state follows the machine's.
fn nic_json(n: &napi::Nic, vm_state: &str) -> Value {
    let state = if n.state == "provisioning" {
        "provisioning"
    } else {
        nic_state(vm_state)
    };
    let mut o = object!({
        "mac": n.mac,
        "ip": n.ip,
        "primary": n.primary,
        "netmask": n.netmask,
        "state": state,
        "network": n.network_uuid,
    });
    put_str(&mut o, "gateway", &n.gateway);
    Value::Object(o)
}

fn nic_path(login: &str, vm_uuid: &str, mac: &str) -> String {
    format!("/{login}/machines/{vm_uuid}/nics/{}", mac.replace(':', ""))
}

/// The machine's NICs as NAPI holds them.
async fn vm_nics(t: &Tenant, vm_uuid: &str) -> Result<Vec<napi::Nic>, ApiError> {
    let request = napi::ListNicsRequest {
        belongs_to_uuid: Some(vm_uuid.to_string()),
        belongs_to_type: Some("zone".into()),
        ..Default::default()
    };
    let mut client = t.napi();
    Ok(client.list_nics(request).await.answer("napi")?.nics)
}

/// A NIC of the caller's machine `vm_uuid`, or 404.
async fn fetch_nic(t: &Tenant, vm_uuid: &str, mac: &str) -> Result<napi::Nic, ApiError> {
    let Some(wanted) = colon_form(mac) else {
        return Err(ApiError::invalid_argument("mac has invalid format"));
    };
    let not_found = || ApiError::not_found(format!("nic {mac} not found"));
    let answer = t.napi().get_nic(napi::GetNicRequest { mac: wanted }).await;
    let nic = found(answer, "napi", not_found)?;
    if nic.owner_uuid != t.owner() || nic.belongs_to_uuid != vm_uuid {
        return Err(not_found());
    }
    Ok(nic)
}

pub async fn list(t: Tenant, Path((_login, id)): IdPath) -> Reply {
    let vm = t.machine(&id).await?;
    let nics = vm_nics(&t, &vm.uuid).await?;
    let rows = nics.iter().map(|n| nic_json(n, &vm.state)).collect();
    Ok(listing(rows, nics.len(), None))
}

pub async fn get(t: Tenant, Path((_login, id, mac)): ItemPath) -> Reply {
    let vm = t.machine(&id).await?;
    let nic = fetch_nic(&t, &vm.uuid, &mac).await?;
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
pub async fn add(t: Tenant, Path((_login, id)): IdPath, params: Params) -> Reply {
    let owner = t.owner();
    let login = &t.caller.account.login;
    let vm = t.live_machine(&id).await?;
    let (network_uuid, ip) = network_param(&params)?;
    let primary = params.bool("primary")?.unwrap_or(false);

    // The network must exist and be usable by the account (Triton answers
    // InvalidArgument, not 404, for one that is not).
    let network = t
        .network_to_use(&network_uuid, || {
            format!("network {network_uuid} not found")
        })
        .await?;

    let existing = vm_nics(&t, &vm.uuid).await?;
    if let Some(nic) = existing.iter().find(|n| n.network_uuid == network.uuid) {
        return Ok(with_location(
            empty_response(StatusCode::FOUND),
            &nic_path(login, &vm.uuid, &nic.mac),
        ));
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
    let reservation = napi::CreateNicRequest {
        owner_uuid: owner.to_string(),
        belongs_to_uuid: vm.uuid.clone(),
        belongs_to_type: "zone".into(),
        network_uuid: Some(network.uuid.clone()),
        ip,
        primary: !has_primary,
        state: Some("provisioning".into()),
        cn_uuid: (!vm.server_uuid.is_empty()).then(|| vm.server_uuid.clone()),
        ..Default::default()
    };
    let mut napi_client = t.napi();
    let nic = napi_client.create_nic(reservation).await.answer("napi")?;
    let job = vmapi::AddNicsRequest {
        uuid: vm.uuid.clone(),
        owner_uuid: owner.to_string(),
        macs: vec![nic.mac.clone()],
        ..Default::default()
    };
    let queued = t.vmapi().add_nics(job).await;
    if let Err(s) = queued {
        // Nothing will use the NIC: give its IP back.
        let release = napi::DeleteNicRequest {
            mac: nic.mac.clone(),
        };
        if let Err(e) = napi_client.delete_nic(release).await {
            tracing::warn!(mac = %nic.mac, error = %e, "cannot delete a NIC VMAPI refused");
        }
        return Err(ApiError::backend("vmapi", s));
    }
    Ok(with_location(
        json_response(StatusCode::CREATED, &nic_json(&nic, &vm.state)),
        &nic_path(login, &vm.uuid, &nic.mac),
    ))
}

/// DELETE /:login/machines/:id/nics/:mac: 204 once VMAPI's `remove_nics` job is
/// queued.
pub async fn remove(t: Tenant, Path((_login, id, mac)): ItemPath) -> Reply {
    let vm = t.machine(&id).await?;
    let nic = fetch_nic(&t, &vm.uuid, &mac).await?;
    let job = vmapi::RemoveNicsRequest {
        uuid: vm.uuid.clone(),
        owner_uuid: t.owner().to_string(),
        macs: vec![nic.mac],
    };
    t.vmapi().remove_nics(job).await.answer("vmapi")?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn macs() {
        assert_eq!(
            colon_form("90B8D0C0FFEE").as_deref(),
            Some("90:b8:d0:c0:ff:ee")
        );
        assert_eq!(
            colon_form("90:b8:d0:c0:ff:ee").as_deref(),
            Some("90:b8:d0:c0:ff:ee")
        );
        assert_eq!(colon_form("90b8d0"), None);
        assert_eq!(colon_form("zzb8d0c0ffee"), None);
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
