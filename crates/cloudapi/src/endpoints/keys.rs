//! ListKeys, GetKey, CreateKey, DeleteKey: the account's SSH keys in UFDS.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use triton_proto::ufds::v1 as ufds;

use super::Reply;
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::Params;
use crate::server::{empty_response, json_response};

pub fn key_json(k: &ufds::Key) -> Value {
    json!({
        "name": k.name,
        "fingerprint": k.fingerprint,
        "key": k.openssh,
        "attested": false,
        "multifactor": [],
    })
}

pub async fn list(State(app): State<Arc<AppState>>, Extension(caller): Extension<Caller>) -> Reply {
    let keys = app
        .backends
        .ufds
        .clone()
        .list_keys(ufds::ListKeysRequest {
            account: caller.account.uuid.clone(),
        })
        .await
        .map_err(|s| ApiError::backend("ufds", s))?
        .into_inner()
        .keys;
    Ok(json_response(
        StatusCode::OK,
        &Value::Array(keys.iter().map(key_json).collect()),
    ))
}

async fn fetch(app: &AppState, caller: &Caller, key: &str) -> Result<ufds::Key, ApiError> {
    app.backends
        .ufds
        .clone()
        .get_key(ufds::GetKeyRequest {
            account: caller.account.uuid.clone(),
            key: key.to_string(),
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| match ApiError::backend("ufds", s) {
            e if e.status == StatusCode::NOT_FOUND || e.code == "InvalidArgument" => {
                ApiError::not_found(format!("{key} does not exist"))
            }
            e => e,
        })
}

pub async fn get(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, key)): Path<(String, String)>,
) -> Reply {
    let k = fetch(&app, &caller, &key).await?;
    Ok(json_response(StatusCode::OK, &key_json(&k)))
}

pub async fn create(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(login): Path<String>,
    params: Params,
) -> Reply {
    let key = params.required_str("key")?;
    // UFDS checks the key's form; CloudAPI's own rule is its strength, which the
    // signature check enforces too.
    if let Ok(public) = crate::http_signature::PublicKey::from_openssh(&key)
        && let Err(e) = public.check_strength()
    {
        return Err(ApiError::invalid_argument(format!("key: {e}")));
    }
    let name = params.str("name").unwrap_or_default();
    let created = app
        .backends
        .ufds
        .clone()
        .create_key(ufds::CreateKeyRequest {
            account: caller.account.uuid.clone(),
            name,
            key,
        })
        .await
        .map_err(|s| ApiError::backend("ufds", s))?
        .into_inner();
    tracing::info!(fingerprint = %created.fingerprint, name = %created.name, "key added");
    let mut response = json_response(StatusCode::CREATED, &key_json(&created));
    let location = format!("/{login}/keys/{}", created.name);
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

pub async fn delete(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((_login, key)): Path<(String, String)>,
) -> Reply {
    let k = fetch(&app, &caller, &key).await?;
    app.backends
        .ufds
        .clone()
        .delete_key(ufds::DeleteKeyRequest {
            account: caller.account.uuid.clone(),
            key: k.fingerprint.clone(),
        })
        .await
        .map_err(|s| ApiError::backend("ufds", s))?;
    tracing::info!(fingerprint = %k.fingerprint, "key deleted");
    Ok(empty_response(StatusCode::NO_CONTENT))
}
