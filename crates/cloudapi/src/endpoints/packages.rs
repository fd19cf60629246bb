//! ListPackages, GetPackage: PAPI's packages visible to the account (public, or owned
//! by it), in CloudAPI's shape (sdc-cloudapi `lib/packages.js` translate).

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use http::StatusCode;
use serde_json::{Map, Value, json};
use triton_proto::papi::v1 as papi;

use super::{Reply, found, is_uuid, put_str};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::Params;
use crate::server::json_response;

pub fn package_json(p: &papi::Package) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(p.uuid));
    o.insert("name".into(), json!(p.name));
    o.insert("memory".into(), json!(p.max_physical_memory));
    o.insert("disk".into(), json!(p.quota));
    o.insert("swap".into(), json!(p.max_swap));
    o.insert("lwps".into(), json!(p.max_lwps));
    o.insert("vcpus".into(), json!(p.vcpus.unwrap_or(0)));
    o.insert("version".into(), json!(p.version));
    put_str(&mut o, "group", &p.group);
    put_str(&mut o, "description", &p.description);
    o.insert("default".into(), json!(p.default));
    put_str(&mut o, "brand", &p.brand);
    if p.flexible_disk {
        o.insert("flexible_disk".into(), json!(true));
    }
    Value::Object(o)
}

pub async fn list(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    params: Params,
) -> Reply {
    let req = papi::ListPackagesRequest {
        name: params.str("name").unwrap_or_default(),
        version: params.str("version").unwrap_or_default(),
        group: params.str("group").unwrap_or_default(),
        brand: params.str("brand").unwrap_or_default(),
        active: Some(true),
        visible_to: caller.account.uuid.clone(),
        max_physical_memory: params.u64("memory")?,
        quota: params.u64("disk")?,
        max_swap: params.u64("swap")?,
        max_lwps: params.u64("lwps")?.map(|v| v as u32),
        vcpus: params.u64("vcpus")?.map(|v| v as u32),
        flexible_disk: params.bool("flexible_disk")?,
        ..Default::default()
    };
    let packages = app
        .backends
        .papi
        .clone()
        .list_packages(req)
        .await
        .map_err(|s| ApiError::backend("papi", s))?
        .into_inner()
        .packages;
    Ok(json_response(
        StatusCode::OK,
        &Value::Array(packages.iter().map(package_json).collect()),
    ))
}

/// Semver-ish ordering of package versions ("1.10.0" after "1.9.0").
fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// A package by uuid or name, visible to `owner`. By name, the highest active
/// version wins.
pub async fn resolve(app: &AppState, owner: &str, id: &str) -> Result<papi::Package, ApiError> {
    let not_found = || ApiError::not_found(format!("Package {id} does not exist"));
    if is_uuid(id) {
        let answer = app
            .backends
            .papi
            .clone()
            .get_package(papi::GetPackageRequest {
                uuid: id.to_string(),
                owner_uuids: vec![owner.to_string()],
            })
            .await;
        return found(answer, "papi", not_found);
    }
    let mut packages = app
        .backends
        .papi
        .clone()
        .list_packages(papi::ListPackagesRequest {
            name: id.replace('*', ""),
            visible_to: owner.to_string(),
            active: Some(true),
            ..Default::default()
        })
        .await
        .map_err(|s| ApiError::backend("papi", s))?
        .into_inner()
        .packages;
    packages.sort_by_key(|p| version_key(&p.version));
    packages.pop().ok_or_else(not_found)
}

pub async fn get(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, id)): Path<(String, String)>,
) -> Reply {
    let p = resolve(&app, &caller.account.uuid, &id).await?;
    Ok(json_response(StatusCode::OK, &package_json(&p)))
}
