//! ListKeys, GetKey, CreateKey, DeleteKey: the account's SSH keys in UFDS.

use axum::extract::Path;
use http::StatusCode;
use serde_json::{Value, json};
use triton_proto::ufds::v1 as ufds;

use super::{Answer, IdPath, Reply, Tenant, list_of};
use crate::error::ApiError;
use crate::params::Params;
use crate::server::{empty_response, json_response, with_location};

pub fn key_json(k: &ufds::Key) -> Value {
    json!({
        "name": k.name,
        "fingerprint": k.fingerprint,
        "key": k.openssh,
        "attested": false,
        "multifactor": [],
    })
}

pub async fn list(t: Tenant) -> Reply {
    let request = ufds::ListKeysRequest {
        account: t.owner().to_string(),
    };
    let mut client = t.app.backends.ufds.clone();
    let keys = client.list_keys(request).await.answer("ufds")?.keys;
    list_of(&keys, key_json)
}

/// A key of the caller's, by name or fingerprint, or 404.
async fn fetch(t: &Tenant, key: &str) -> Result<ufds::Key, ApiError> {
    let request = ufds::GetKeyRequest {
        account: t.owner().to_string(),
        key: key.to_string(),
    };
    let mut client = t.app.backends.ufds.clone();
    client.get_key(request).await.answer("ufds").map_err(|e| {
        if e.status == StatusCode::NOT_FOUND || e.code == "InvalidArgument" {
            ApiError::not_found(format!("{key} does not exist"))
        } else {
            e
        }
    })
}

pub async fn get(t: Tenant, Path((_login, key)): IdPath) -> Reply {
    let k = fetch(&t, &key).await?;
    Ok(json_response(StatusCode::OK, &key_json(&k)))
}

pub async fn create(t: Tenant, Path(login): Path<String>, params: Params) -> Reply {
    let key = params.required_str("key")?;
    // UFDS checks the key's form; CloudAPI's own rule is its strength, which the
    // signature check enforces too.
    if let Ok(public) = crate::http_signature::PublicKey::from_openssh(&key)
        && let Err(e) = public.check_strength()
    {
        return Err(ApiError::invalid_argument(format!("key: {e}")));
    }
    let request = ufds::CreateKeyRequest {
        account: t.owner().to_string(),
        name: params.str("name").unwrap_or_default(),
        key,
    };
    let mut client = t.app.backends.ufds.clone();
    let created = client.create_key(request).await.answer("ufds")?;
    tracing::info!(fingerprint = %created.fingerprint, name = %created.name, "key added");
    Ok(with_location(
        json_response(StatusCode::CREATED, &key_json(&created)),
        &format!("/{login}/keys/{}", created.name),
    ))
}

pub async fn delete(t: Tenant, Path((_login, key)): IdPath) -> Reply {
    let k = fetch(&t, &key).await?;
    let request = ufds::DeleteKeyRequest {
        account: t.owner().to_string(),
        key: k.fingerprint.clone(),
    };
    let mut client = t.app.backends.ufds.clone();
    client.delete_key(request).await.answer("ufds")?;
    tracing::info!(fingerprint = %k.fingerprint, "key deleted");
    Ok(empty_response(StatusCode::NO_CONTENT))
}
