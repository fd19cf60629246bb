//! GetAccount, UpdateAccount, GetAccountLimits, Get/UpdateConfig.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use http::StatusCode;
use serde_json::{Map, Value, json};
use triton_proto::napi::v1 as napi;
use triton_proto::ufds::v1 as ufds;

use super::{Reply, put_str};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::Params;
use crate::server::json_response;

/// The account as CloudAPI shows it (UFDS names translated).
pub fn account_json(a: &ufds::Account) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(a.uuid));
    o.insert("login".into(), json!(a.login));
    o.insert("email".into(), json!(a.email));
    put_str(&mut o, "companyName", &a.company);
    put_str(&mut o, "firstName", &a.givenname);
    put_str(&mut o, "lastName", &a.sn);
    put_str(&mut o, "address", &a.address);
    put_str(&mut o, "postalCode", &a.postalcode);
    put_str(&mut o, "city", &a.city);
    put_str(&mut o, "state", &a.state);
    put_str(&mut o, "country", &a.country);
    put_str(&mut o, "phone", &a.phone);
    o.insert("triton_cns_enabled".into(), json!(a.triton_cns_enabled));
    o.insert("created".into(), json!(a.created_at));
    o.insert("updated".into(), json!(a.updated_at));
    Value::Object(o)
}

pub async fn get(Extension(caller): Extension<Caller>) -> Reply {
    Ok(json_response(
        StatusCode::OK,
        &account_json(&caller.account),
    ))
}

/// Fields of UpdateAccount: CloudAPI name, UFDS name.
const UPDATABLE: &[(&str, &str)] = &[
    ("email", "email"),
    ("companyName", "company"),
    ("firstName", "givenname"),
    ("lastName", "sn"),
    ("address", "address"),
    ("postalCode", "postalcode"),
    ("city", "city"),
    ("state", "state"),
    ("country", "country"),
    ("phone", "phone"),
];

pub async fn update(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    params: Params,
) -> Reply {
    let mut req = ufds::UpdateAccountRequest {
        account: caller.account.uuid.clone(),
        ..Default::default()
    };
    for (name, field) in UPDATABLE {
        let Some(v) = params.str(name) else { continue };
        let slot = match *field {
            "email" => &mut req.email,
            "company" => &mut req.company,
            "givenname" => &mut req.givenname,
            "sn" => &mut req.sn,
            "address" => &mut req.address,
            "postalcode" => &mut req.postalcode,
            "city" => &mut req.city,
            "state" => &mut req.state,
            "country" => &mut req.country,
            _ => &mut req.phone,
        };
        *slot = Some(v);
    }
    req.triton_cns_enabled = params.bool("triton_cns_enabled")?;
    let account = app
        .backends
        .ufds
        .clone()
        .update_account(req)
        .await
        .map_err(|s| ApiError::backend("ufds", s))?
        .into_inner();
    Ok(json_response(StatusCode::OK, &account_json(&account)))
}

/// No per-account limits are configured in this datacenter: Triton answers `[]`.
pub async fn limits(Extension(_caller): Extension<Caller>) -> Reply {
    Ok(json_response(StatusCode::OK, &json!([])))
}

/// The network used when a provision names none: the first public network
/// (`external` preferred).
pub async fn default_network(
    app: &AppState,
    owner: &str,
) -> Result<Option<napi::Network>, ApiError> {
    let networks = app
        .backends
        .napi
        .clone()
        .list_networks(napi::ListNetworksRequest {
            provisionable_by: Some(owner.to_string()),
            fabric: Some(false),
            ..Default::default()
        })
        .await
        .map_err(|s| ApiError::backend("napi", s))?
        .into_inner()
        .networks;
    let public: Vec<_> = networks.into_iter().filter(|n| n.public).collect();
    Ok(public
        .iter()
        .find(|n| n.name == "external")
        .or_else(|| public.first())
        .cloned())
}

pub async fn get_config(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Reply {
    let net = default_network(&app, &caller.account.uuid).await?;
    let mut o = Map::new();
    if let Some(n) = net {
        o.insert("default_network".into(), json!(n.uuid));
    }
    Ok(json_response(StatusCode::OK, &Value::Object(o)))
}

/// Per-account config is not stored (UFDS keeps no `dclocalconfig` yet): only the
/// current default is accepted.
pub async fn update_config(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    params: Params,
) -> Reply {
    let current = default_network(&app, &caller.account.uuid).await?;
    match (params.str("default_network"), current) {
        (None, _) => get_config(State(app), Extension(caller)).await,
        (Some(asked), Some(n)) if asked == n.uuid => {
            get_config(State(app), Extension(caller)).await
        }
        (Some(_), _) => Err(ApiError::invalid_argument(
            "default_network cannot be changed in this datacenter",
        )),
    }
}
