//! ListDatacenters, GetDatacenter, ListServices.

use std::collections::BTreeMap;

use axum::extract::Path;
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::{IdPath, Reply, Tenant};
use crate::AppState;
use crate::error::ApiError;
use crate::server::{json_response, with_location};

/// `names` (name to URL) with `own` at this CloudAPI's URL.
fn urls(app: &AppState, names: &BTreeMap<String, String>, own: &str) -> Map<String, Value> {
    let mut m: Map<String, Value> = names.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    m.insert(own.to_string(), json!(app.external_url));
    m
}

fn datacenters(app: &AppState) -> Map<String, Value> {
    urls(app, &app.config.datacenters, &app.config.datacenter)
}

pub async fn list(t: Tenant) -> Reply {
    Ok(json_response(
        StatusCode::OK,
        &Value::Object(datacenters(&t.app)),
    ))
}

pub async fn get(t: Tenant, Path((_login, name)): IdPath) -> Reply {
    let all = datacenters(&t.app);
    let url = all
        .get(&name)
        .and_then(|v| v.as_str())
        .ok_or_else(|| ApiError::not_found(format!("{name} does not exist")))?;
    let moved = json!({"code": "ResourceMoved", "message": format!("{name} {url}")});
    Ok(with_location(json_response(StatusCode::FOUND, &moved), url))
}

pub async fn services(t: Tenant) -> Reply {
    let m = urls(&t.app, &t.app.config.services, "cloudapi");
    Ok(json_response(StatusCode::OK, &Value::Object(m)))
}
