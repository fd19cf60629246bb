//! ListDatacenters, GetDatacenter, ListServices.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

use super::Reply;
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::server::json_response;

fn datacenters(app: &AppState) -> Map<String, Value> {
    let mut m: Map<String, Value> = app
        .config
        .datacenters
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    m.insert(app.config.datacenter.clone(), json!(app.external_url));
    m
}

pub async fn list(State(app): State<Arc<AppState>>, Extension(_c): Extension<Caller>) -> Reply {
    Ok(json_response(
        StatusCode::OK,
        &Value::Object(datacenters(&app)),
    ))
}

pub async fn get(
    State(app): State<Arc<AppState>>,
    Extension(_c): Extension<Caller>,
    Path((_login, name)): Path<(String, String)>,
) -> Reply {
    let all = datacenters(&app);
    let url = all
        .get(&name)
        .and_then(|v| v.as_str())
        .ok_or_else(|| ApiError::not_found(format!("{name} does not exist")))?;
    let mut response = json_response(
        StatusCode::FOUND,
        &json!({"code": "ResourceMoved", "message": format!("{name} {url}")}),
    );
    if let Ok(v) = HeaderValue::from_str(url) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

pub async fn services(State(app): State<Arc<AppState>>, Extension(_c): Extension<Caller>) -> Reply {
    let mut m: Map<String, Value> = app
        .config
        .services
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    m.insert("cloudapi".into(), json!(app.external_url));
    Ok(json_response(StatusCode::OK, &Value::Object(m)))
}
