//! Networks usable by the account, their IPs, and the account's fabric VLANs and
//! fabric networks (NAPI).

use std::collections::HashMap;

use axum::extract::Path;
use http::StatusCode;
use serde_json::{Map, Value, json};
use triton_proto::napi::v1 as napi;

use super::{Answer, IdPath, ItemPath, Reply, Tenant, list_of, listing, object, put_str};
use crate::error::ApiError;
use crate::params::Params;
use crate::server::{empty_response, json_response, with_location};

/// Whether `owner` may see and provision on `n`.
pub fn usable_by(n: &napi::Network, owner: &str) -> bool {
    n.owner_uuids.is_empty() || n.owner_uuids.iter().any(|o| o == owner)
}

pub fn network_json(n: &napi::Network) -> Value {
    let mut o = object!({
        "id": n.uuid,
        "name": n.name,
        "public": n.public,
        "fabric": n.fabric,
    });
    put_str(&mut o, "description", &n.description);
    if n.fabric {
        o.insert("subnet".into(), json!(n.subnet));
        o.insert("provision_start_ip".into(), json!(n.provision_start_ip));
        o.insert("provision_end_ip".into(), json!(n.provision_end_ip));
        put_str(&mut o, "gateway", &n.gateway);
        o.insert("resolvers".into(), json!(n.resolvers));
        if !n.routes.is_empty() {
            o.insert("routes".into(), json!(n.routes));
        }
        o.insert("internet_nat".into(), json!(n.internet_nat));
        o.insert("vlan_id".into(), json!(n.vlan_id));
    }
    Value::Object(o)
}

/// ListNetworks: the networks the account may provision on, public ones and its own
/// (fabrics included); with `fabric=true`, only its fabric networks (as Triton's
/// `?fabric` asks NAPI for the account's fabric networks alone).
pub async fn list(t: Tenant, params: Params) -> Reply {
    let fabrics_only = params.bool("fabric")?.unwrap_or(false);
    let request = napi::ListNetworksRequest {
        provisionable_by: Some(t.owner().to_string()),
        ..Default::default()
    };
    let mut networks = t
        .napi()
        .list_networks(request)
        .await
        .answer("napi")?
        .networks;
    networks.retain(|n| usable_by(n, t.owner()) && (n.fabric || !fabrics_only));
    list_of(&networks, network_json)
}

pub async fn get(t: Tenant, Path((_login, id)): IdPath) -> Reply {
    let n = t.network(&id).await?;
    Ok(json_response(StatusCode::OK, &network_json(&n)))
}

fn ip_json(ip: &napi::Ip) -> Value {
    let mut o = object!({
        "ip": ip.ip,
        "reserved": ip.reserved,
        "managed": ip.belongs_to_type == "other" || ip.belongs_to_type == "server",
    });
    put_str(&mut o, "owner_uuid", &ip.owner_uuid);
    put_str(&mut o, "belongs_to_uuid", &ip.belongs_to_uuid);
    Value::Object(o)
}

/// ListNetworkIPs: on a public network only the account's own IPs are shown.
pub async fn list_ips(t: Tenant, Path((_login, id)): IdPath, params: Params) -> Reply {
    let n = t.network(&id).await?;
    let limit = params.u64("limit")?.unwrap_or(1000).clamp(1, 1000) as u32;
    let offset = params.u64("offset")?.unwrap_or(0) as u32;
    let request = napi::ListIpsRequest {
        network_uuid: n.uuid.clone(),
        limit: Some(limit),
        offset,
    };
    let ips = t.napi().list_ips(request).await.answer("napi")?.ips;
    let shown: Vec<Value> = ips
        .iter()
        .filter(|ip| !n.public || ip.owner_uuid == t.owner())
        .map(ip_json)
        .collect();
    let total = shown.len();
    Ok(listing(shown, total, Some(u64::from(limit))))
}

pub async fn get_ip(t: Tenant, Path((_login, id, ip)): ItemPath) -> Reply {
    let n = t.network(&id).await?;
    let request = napi::GetIpRequest {
        network_uuid: n.uuid.clone(),
        ip: ip.clone(),
    };
    let found = t.napi().get_ip(request).await.answer("napi")?;
    if n.public && found.owner_uuid != t.owner() {
        return Err(ApiError::not_found(format!("IP {ip} does not exist")));
    }
    Ok(json_response(StatusCode::OK, &ip_json(&found)))
}

/// Most resolvers a fabric network takes (sdc-cloudapi's `MAX_RESOLVERS`).
pub const MAX_RESOLVERS: usize = 4;

/// Refuses a parameter outside `allowed`, as Triton's schemas (`additionalProperties:
/// false`) do.
fn only_properties(params: &Params, allowed: &[&str]) -> Result<(), ApiError> {
    match params.map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(other) => Err(ApiError::invalid_argument(format!(
            "property \"{other}\": unsupported property"
        ))),
        None => Ok(()),
    }
}

/// The `resolvers` parameter, when given: at most [`MAX_RESOLVERS`] strings.
fn resolvers_param(params: &Params) -> Result<Option<Vec<String>>, ApiError> {
    let Some(list) = params.list("resolvers") else {
        return Ok(None);
    };
    if list.len() > MAX_RESOLVERS {
        return Err(ApiError::invalid_argument(format!(
            "property \"resolvers\": maximum of {MAX_RESOLVERS} resolvers"
        )));
    }
    list.iter()
        .map(|v| {
            v.as_str().map(str::to_string).ok_or_else(|| {
                ApiError::invalid_argument("property \"resolvers\": must be IPv4 addresses")
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Triton's fabric endpoints answer every NAPI refusal but a 404 as InvalidArgument
/// (sdc-cloudapi `translateErr`): a VLAN that still has networks, a network that still
/// has NICs.
fn in_use_is_invalid(e: ApiError) -> ApiError {
    if e.code == "InUseError" {
        ApiError::invalid_argument(e.rest.message)
    } else {
        e
    }
}

// ------------------------------------------------------------------ fabric VLANs

fn vlan_json(v: &napi::FabricVlan) -> Value {
    let mut o = object!({"vlan_id": v.vlan_id, "name": v.name});
    put_str(&mut o, "description", &v.description);
    Value::Object(o)
}

fn parse_vlan_id(s: &str) -> Result<u32, ApiError> {
    s.parse::<u32>()
        .ok()
        .filter(|v| *v <= 4095)
        .ok_or_else(|| ApiError::invalid_argument("vlan_id must be an integer from 0 to 4095"))
}

pub async fn list_vlans(t: Tenant) -> Reply {
    let request = napi::ListFabricVlansRequest {
        owner_uuid: t.owner().to_string(),
    };
    let vlans = t
        .napi()
        .list_fabric_vlans(request)
        .await
        .answer("napi")?
        .vlans;
    list_of(&vlans, vlan_json)
}

pub async fn create_vlan(t: Tenant, Path(login): Path<String>, params: Params) -> Reply {
    let vlan_id = parse_vlan_id(&params.required_str("vlan_id")?)?;
    let request = napi::CreateFabricVlanRequest {
        owner_uuid: t.owner().to_string(),
        vlan_id,
        name: params.required_str("name")?,
        description: params.str("description").unwrap_or_default(),
    };
    let vlan = t.napi().create_fabric_vlan(request).await.answer("napi")?;
    tracing::info!(vlan_id, "fabric VLAN created");
    Ok(with_location(
        json_response(StatusCode::CREATED, &vlan_json(&vlan)),
        &format!("/{login}/fabrics/default/vlans/{vlan_id}"),
    ))
}

pub async fn get_vlan(t: Tenant, Path((_login, vlan)): IdPath) -> Reply {
    let request = napi::GetFabricVlanRequest {
        owner_uuid: t.owner().to_string(),
        vlan_id: parse_vlan_id(&vlan)?,
    };
    let v = t.napi().get_fabric_vlan(request).await.answer("napi")?;
    Ok(json_response(StatusCode::OK, &vlan_json(&v)))
}

/// UpdateFabricVLAN: `PUT` as Triton routes it, and `POST`, which node-triton's
/// `CloudApi.updateFabricVlan` sends. 202 with the VLAN.
pub async fn update_vlan(t: Tenant, Path((_login, vlan)): IdPath, params: Params) -> Reply {
    only_properties(&params, &["vlan_id", "name", "description"])?;
    let request = napi::UpdateFabricVlanRequest {
        owner_uuid: t.owner().to_string(),
        vlan_id: parse_vlan_id(&vlan)?,
        name: params.str("name"),
        description: params.str("description"),
    };
    let v = t.napi().update_fabric_vlan(request).await.answer("napi")?;
    Ok(json_response(StatusCode::ACCEPTED, &vlan_json(&v)))
}

pub async fn delete_vlan(t: Tenant, Path((_login, vlan)): IdPath) -> Reply {
    let vlan_id = parse_vlan_id(&vlan)?;
    let request = napi::DeleteFabricVlanRequest {
        owner_uuid: t.owner().to_string(),
        vlan_id,
    };
    t.napi()
        .delete_fabric_vlan(request)
        .await
        .answer("napi")
        .map_err(in_use_is_invalid)?;
    tracing::info!(vlan_id, "fabric VLAN deleted");
    Ok(empty_response(StatusCode::NO_CONTENT))
}

// ------------------------------------------------------------------ fabric networks

pub async fn list_fabric_networks(t: Tenant, Path((_login, vlan)): IdPath) -> Reply {
    let request = napi::ListFabricNetworksRequest {
        owner_uuid: t.owner().to_string(),
        vlan_id: parse_vlan_id(&vlan)?,
    };
    let networks = t
        .napi()
        .list_fabric_networks(request)
        .await
        .answer("napi")?;
    list_of(&networks.networks, network_json)
}

/// The `routes` parameter: `{destination: gateway}`, as an object or JSON text.
fn routes_param(params: &Params) -> Result<HashMap<String, String>, ApiError> {
    let mut routes = HashMap::new();
    match params.get("routes") {
        None => {}
        Some(Value::Object(given)) => {
            for (dest, gw) in given {
                let gw = gw.as_str().ok_or_else(|| {
                    ApiError::invalid_argument("routes values must be IP strings")
                })?;
                routes.insert(dest.clone(), gw.to_string());
            }
        }
        Some(Value::String(s)) => {
            let parsed: Map<String, Value> = serde_json::from_str(s)
                .map_err(|_| ApiError::invalid_argument("routes must be an object"))?;
            for (dest, gw) in parsed {
                if let Some(gw) = gw.as_str() {
                    routes.insert(dest, gw.to_string());
                }
            }
        }
        Some(_) => return Err(ApiError::invalid_argument("routes must be an object")),
    }
    Ok(routes)
}

pub async fn create_fabric_network(
    t: Tenant,
    Path((login, vlan)): IdPath,
    params: Params,
) -> Reply {
    let vlan_id = parse_vlan_id(&vlan)?;
    let request = napi::CreateFabricNetworkRequest {
        owner_uuid: t.owner().to_string(),
        vlan_id,
        name: params.required_str("name")?,
        subnet: params.required_str("subnet")?,
        provision_start_ip: params.required_str("provision_start_ip")?,
        provision_end_ip: params.required_str("provision_end_ip")?,
        gateway: params.str("gateway"),
        description: params.str("description").unwrap_or_default(),
        internet_nat: params.bool("internet_nat")?,
        resolvers: resolvers_param(&params)?.unwrap_or_default(),
        routes: routes_param(&params)?,
        ..Default::default()
    };
    let n = t
        .napi()
        .create_fabric_network(request)
        .await
        .answer("napi")?;
    tracing::info!(network = %n.uuid, vlan_id, "fabric network created");
    Ok(with_location(
        json_response(StatusCode::CREATED, &network_json(&n)),
        &format!(
            "/{login}/fabrics/default/vlans/{vlan_id}/networks/{}",
            n.uuid
        ),
    ))
}

pub async fn get_fabric_network(t: Tenant, Path((_login, vlan, id)): ItemPath) -> Reply {
    let request = napi::GetFabricNetworkRequest {
        owner_uuid: t.owner().to_string(),
        vlan_id: parse_vlan_id(&vlan)?,
        uuid: id,
    };
    let n = t.napi().get_fabric_network(request).await.answer("napi")?;
    Ok(json_response(StatusCode::OK, &network_json(&n)))
}

/// The fields UpdateFabricNetwork changes (sdc-cloudapi's `UpdateFabricNetwork` schema).
const UPDATABLE_FABRIC_NETWORK_FIELDS: &[&str] = &[
    "vlan_id",
    "name",
    "description",
    "resolvers",
    "routes",
    "provision_start_ip",
    "provision_end_ip",
];

/// UpdateFabricNetwork (`PUT .../vlans/:vlan_id/networks/:id`): name, description,
/// resolvers, routes and the provision range; 200 with the network. The subnet, gateway
/// and `internet_nat` cannot change (refused naming the property), nor the id.
pub async fn update_fabric_network(
    t: Tenant,
    Path((_login, vlan, id)): ItemPath,
    params: Params,
) -> Reply {
    if params.get("id").is_some() {
        return Err(ApiError::invalid_argument("property \"id\": cannot be set"));
    }
    only_properties(&params, UPDATABLE_FABRIC_NETWORK_FIELDS)?;
    let vlan_id = parse_vlan_id(&vlan)?;
    let request = napi::UpdateFabricNetworkRequest {
        owner_uuid: t.owner().to_string(),
        vlan_id,
        uuid: id.clone(),
        name: params.str("name"),
        description: params.str("description"),
        resolvers: resolvers_param(&params)?.map(|values| napi::StringList { values }),
        routes: match params.get("routes") {
            Some(_) => Some(napi::Routes {
                routes: routes_param(&params)?,
            }),
            None => None,
        },
        provision_start_ip: params.str("provision_start_ip"),
        provision_end_ip: params.str("provision_end_ip"),
    };
    let n = t
        .napi()
        .update_fabric_network(request)
        .await
        .answer("napi")?;
    tracing::info!(network = %id, vlan_id, "fabric network updated");
    Ok(json_response(StatusCode::OK, &network_json(&n)))
}

/// DeleteFabricNetwork: the account's default network cannot go (Triton: `cannot
/// delete default network`).
pub async fn delete_fabric_network(t: Tenant, Path((_login, vlan, id)): ItemPath) -> Reply {
    let vlan_id = parse_vlan_id(&vlan)?;
    let default = &t.caller.account.default_network;
    if !default.is_empty() && id.eq_ignore_ascii_case(default) {
        return Err(ApiError::invalid_argument("cannot delete default network"));
    }
    let request = napi::DeleteFabricNetworkRequest {
        owner_uuid: t.owner().to_string(),
        vlan_id,
        uuid: id.clone(),
    };
    t.napi()
        .delete_fabric_network(request)
        .await
        .answer("napi")
        .map_err(in_use_is_invalid)?;
    tracing::info!(network = %id, vlan_id, "fabric network deleted");
    Ok(empty_response(StatusCode::NO_CONTENT))
}
