//! Networks usable by the account, their IPs, and the account's fabric VLANs and
//! fabric networks (NAPI).

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};
use triton_proto::napi::v1 as napi;

use super::{Reply, found, is_uuid, listing, put_str};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::Params;
use crate::server::{empty_response, json_response};

/// Whether `owner` may see and provision on `n`.
pub fn usable_by(n: &napi::Network, owner: &str) -> bool {
    n.owner_uuids.is_empty() || n.owner_uuids.iter().any(|o| o == owner)
}

pub fn network_json(n: &napi::Network) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(n.uuid));
    o.insert("name".into(), json!(n.name));
    o.insert("public".into(), json!(n.public));
    o.insert("fabric".into(), json!(n.fabric));
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

fn napi_err(s: tonic::Status) -> ApiError {
    ApiError::backend("napi", s)
}

/// Networks the account may provision on: public ones and its own (fabrics included).
pub async fn usable_networks(app: &AppState, owner: &str) -> Result<Vec<napi::Network>, ApiError> {
    let networks = app
        .backends
        .napi
        .clone()
        .list_networks(napi::ListNetworksRequest {
            provisionable_by: Some(owner.to_string()),
            ..Default::default()
        })
        .await
        .map_err(napi_err)?
        .into_inner()
        .networks;
    Ok(networks
        .into_iter()
        .filter(|n| usable_by(n, owner))
        .collect())
}

pub async fn list(State(app): State<Arc<AppState>>, Extension(caller): Extension<Caller>) -> Reply {
    let networks = usable_networks(&app, &caller.account.uuid).await?;
    Ok(json_response(
        StatusCode::OK,
        &Value::Array(networks.iter().map(network_json).collect()),
    ))
}

/// A network the account may use, or 404.
pub async fn fetch(app: &AppState, owner: &str, id: &str) -> Result<napi::Network, ApiError> {
    let not_found = || ApiError::not_found(format!("network {id} does not exist"));
    if !is_uuid(id) {
        return Err(not_found());
    }
    let answer = app
        .backends
        .napi
        .clone()
        .get_network(napi::GetNetworkRequest {
            uuid: id.to_string(),
        })
        .await;
    let n = found(answer, "napi", not_found)?;
    if !usable_by(&n, owner) {
        return Err(not_found());
    }
    Ok(n)
}

pub async fn get(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, id)): Path<(String, String)>,
) -> Reply {
    let n = fetch(&app, &caller.account.uuid, &id).await?;
    Ok(json_response(StatusCode::OK, &network_json(&n)))
}

fn ip_json(ip: &napi::Ip) -> Value {
    let mut o = Map::new();
    o.insert("ip".into(), json!(ip.ip));
    o.insert("reserved".into(), json!(ip.reserved));
    o.insert(
        "managed".into(),
        json!(ip.belongs_to_type == "other" || ip.belongs_to_type == "server"),
    );
    put_str(&mut o, "owner_uuid", &ip.owner_uuid);
    put_str(&mut o, "belongs_to_uuid", &ip.belongs_to_uuid);
    Value::Object(o)
}

/// ListNetworkIPs: on a public network only the account's own IPs are shown.
pub async fn list_ips(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, id)): Path<(String, String)>,
    params: Params,
) -> Reply {
    let owner = caller.account.uuid.clone();
    let n = fetch(&app, &owner, &id).await?;
    let limit = params.u64("limit")?.unwrap_or(1000).clamp(1, 1000) as u32;
    let offset = params.u64("offset")?.unwrap_or(0) as u32;
    let ips = app
        .backends
        .napi
        .clone()
        .list_ips(napi::ListIpsRequest {
            network_uuid: n.uuid.clone(),
            limit: Some(limit),
            offset,
        })
        .await
        .map_err(napi_err)?
        .into_inner()
        .ips;
    let shown: Vec<Value> = ips
        .iter()
        .filter(|ip| !n.public || ip.owner_uuid == owner)
        .map(ip_json)
        .collect();
    let total = shown.len();
    Ok(listing(shown, total, Some(u64::from(limit))))
}

pub async fn get_ip(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, id, ip)): Path<(String, String, String)>,
) -> Reply {
    let owner = caller.account.uuid.clone();
    let n = fetch(&app, &owner, &id).await?;
    let found = app
        .backends
        .napi
        .clone()
        .get_ip(napi::GetIpRequest {
            network_uuid: n.uuid.clone(),
            ip: ip.clone(),
        })
        .await
        .map_err(napi_err)?
        .into_inner();
    if n.public && found.owner_uuid != owner {
        return Err(ApiError::not_found(format!("IP {ip} does not exist")));
    }
    Ok(json_response(StatusCode::OK, &ip_json(&found)))
}

// ------------------------------------------------------------------ fabric VLANs

fn vlan_json(v: &napi::FabricVlan) -> Value {
    let mut o = Map::new();
    o.insert("vlan_id".into(), json!(v.vlan_id));
    o.insert("name".into(), json!(v.name));
    put_str(&mut o, "description", &v.description);
    Value::Object(o)
}

fn parse_vlan_id(s: &str) -> Result<u32, ApiError> {
    s.parse::<u32>()
        .ok()
        .filter(|v| *v <= 4095)
        .ok_or_else(|| ApiError::invalid_argument("vlan_id must be an integer from 0 to 4095"))
}

fn with_location(
    mut response: axum::response::Response,
    location: String,
) -> axum::response::Response {
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

pub async fn list_vlans(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Reply {
    let vlans = app
        .backends
        .napi
        .clone()
        .list_fabric_vlans(napi::ListFabricVlansRequest {
            owner_uuid: caller.account.uuid.clone(),
        })
        .await
        .map_err(napi_err)?
        .into_inner()
        .vlans;
    Ok(json_response(
        StatusCode::OK,
        &Value::Array(vlans.iter().map(vlan_json).collect()),
    ))
}

pub async fn create_vlan(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(login): Path<String>,
    params: Params,
) -> Reply {
    let vlan_id = parse_vlan_id(&params.required_str("vlan_id")?)?;
    let name = params.required_str("name")?;
    let vlan = app
        .backends
        .napi
        .clone()
        .create_fabric_vlan(napi::CreateFabricVlanRequest {
            owner_uuid: caller.account.uuid.clone(),
            vlan_id,
            name,
            description: params.str("description").unwrap_or_default(),
        })
        .await
        .map_err(napi_err)?
        .into_inner();
    tracing::info!(vlan_id, "fabric VLAN created");
    Ok(with_location(
        json_response(StatusCode::CREATED, &vlan_json(&vlan)),
        format!("/{login}/fabrics/default/vlans/{vlan_id}"),
    ))
}

async fn fetch_vlan(app: &AppState, owner: &str, vlan: &str) -> Result<napi::FabricVlan, ApiError> {
    let vlan_id = parse_vlan_id(vlan)?;
    app.backends
        .napi
        .clone()
        .get_fabric_vlan(napi::GetFabricVlanRequest {
            owner_uuid: owner.to_string(),
            vlan_id,
        })
        .await
        .map(|r| r.into_inner())
        .map_err(napi_err)
}

pub async fn get_vlan(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, vlan)): Path<(String, String)>,
) -> Reply {
    let v = fetch_vlan(&app, &caller.account.uuid, &vlan).await?;
    Ok(json_response(StatusCode::OK, &vlan_json(&v)))
}

pub async fn update_vlan(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, vlan)): Path<(String, String)>,
    params: Params,
) -> Reply {
    let vlan_id = parse_vlan_id(&vlan)?;
    let v = app
        .backends
        .napi
        .clone()
        .update_fabric_vlan(napi::UpdateFabricVlanRequest {
            owner_uuid: caller.account.uuid.clone(),
            vlan_id,
            name: params.str("name"),
            description: params.str("description"),
        })
        .await
        .map_err(napi_err)?
        .into_inner();
    Ok(json_response(StatusCode::ACCEPTED, &vlan_json(&v)))
}

pub async fn delete_vlan(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, vlan)): Path<(String, String)>,
) -> Reply {
    let vlan_id = parse_vlan_id(&vlan)?;
    app.backends
        .napi
        .clone()
        .delete_fabric_vlan(napi::DeleteFabricVlanRequest {
            owner_uuid: caller.account.uuid.clone(),
            vlan_id,
        })
        .await
        .map_err(napi_err)?;
    tracing::info!(vlan_id, "fabric VLAN deleted");
    Ok(empty_response(StatusCode::NO_CONTENT))
}

// ------------------------------------------------------------------ fabric networks

pub async fn list_fabric_networks(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, vlan)): Path<(String, String)>,
) -> Reply {
    let vlan_id = parse_vlan_id(&vlan)?;
    let networks = app
        .backends
        .napi
        .clone()
        .list_fabric_networks(napi::ListFabricNetworksRequest {
            owner_uuid: caller.account.uuid.clone(),
            vlan_id,
        })
        .await
        .map_err(napi_err)?
        .into_inner()
        .networks;
    Ok(json_response(
        StatusCode::OK,
        &Value::Array(networks.iter().map(network_json).collect()),
    ))
}

pub async fn create_fabric_network(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((login, vlan)): Path<(String, String)>,
    params: Params,
) -> Reply {
    let vlan_id = parse_vlan_id(&vlan)?;
    let mut req = napi::CreateFabricNetworkRequest {
        owner_uuid: caller.account.uuid.clone(),
        vlan_id,
        name: params.required_str("name")?,
        subnet: params.required_str("subnet")?,
        provision_start_ip: params.required_str("provision_start_ip")?,
        provision_end_ip: params.required_str("provision_end_ip")?,
        gateway: params.str("gateway"),
        description: params.str("description").unwrap_or_default(),
        internet_nat: params.bool("internet_nat")?,
        ..Default::default()
    };
    if let Some(resolvers) = params.list("resolvers") {
        req.resolvers = resolvers
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
    }
    match params.get("routes") {
        None => {}
        Some(Value::Object(routes)) => {
            for (dest, gw) in routes {
                let gw = gw.as_str().ok_or_else(|| {
                    ApiError::invalid_argument("routes values must be IP strings")
                })?;
                req.routes.insert(dest.clone(), gw.to_string());
            }
        }
        Some(Value::String(s)) => {
            let parsed: Map<String, Value> = serde_json::from_str(s)
                .map_err(|_| ApiError::invalid_argument("routes must be an object"))?;
            for (dest, gw) in parsed {
                if let Some(gw) = gw.as_str() {
                    req.routes.insert(dest, gw.to_string());
                }
            }
        }
        Some(_) => return Err(ApiError::invalid_argument("routes must be an object")),
    }
    let n = app
        .backends
        .napi
        .clone()
        .create_fabric_network(req)
        .await
        .map_err(napi_err)?
        .into_inner();
    tracing::info!(network = %n.uuid, vlan_id, "fabric network created");
    Ok(with_location(
        json_response(StatusCode::CREATED, &network_json(&n)),
        format!(
            "/{login}/fabrics/default/vlans/{vlan_id}/networks/{}",
            n.uuid
        ),
    ))
}

pub async fn get_fabric_network(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, vlan, id)): Path<(String, String, String)>,
) -> Reply {
    let vlan_id = parse_vlan_id(&vlan)?;
    let n = app
        .backends
        .napi
        .clone()
        .get_fabric_network(napi::GetFabricNetworkRequest {
            owner_uuid: caller.account.uuid.clone(),
            vlan_id,
            uuid: id,
        })
        .await
        .map_err(napi_err)?
        .into_inner();
    Ok(json_response(StatusCode::OK, &network_json(&n)))
}

pub async fn delete_fabric_network(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, vlan, id)): Path<(String, String, String)>,
) -> Reply {
    let vlan_id = parse_vlan_id(&vlan)?;
    app.backends
        .napi
        .clone()
        .delete_fabric_network(napi::DeleteFabricNetworkRequest {
            owner_uuid: caller.account.uuid.clone(),
            vlan_id,
            uuid: id.clone(),
        })
        .await
        .map_err(napi_err)?;
    tracing::info!(network = %id, vlan_id, "fabric network deleted");
    Ok(empty_response(StatusCode::NO_CONTENT))
}
