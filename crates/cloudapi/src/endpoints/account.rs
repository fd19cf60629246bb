//! GetAccount, UpdateAccount, GetAccountLimits, Get/UpdateConfig.

use axum::Extension;
use http::StatusCode;
use serde_json::{Map, Value, json};
use triton_proto::napi::v1 as napi;
use triton_proto::ufds::v1 as ufds;

use super::{Answer, Reply, Tenant, put_str};
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

/// A field of UpdateAccount in the request to UFDS.
type Field = fn(&mut ufds::UpdateAccountRequest) -> &mut Option<String>;

/// Fields of UpdateAccount: CloudAPI's name and UFDS's field.
const UPDATABLE: &[(&str, Field)] = &[
    ("email", |r| &mut r.email),
    ("companyName", |r| &mut r.company),
    ("firstName", |r| &mut r.givenname),
    ("lastName", |r| &mut r.sn),
    ("address", |r| &mut r.address),
    ("postalCode", |r| &mut r.postalcode),
    ("city", |r| &mut r.city),
    ("state", |r| &mut r.state),
    ("country", |r| &mut r.country),
    ("phone", |r| &mut r.phone),
];

pub async fn update(t: Tenant, params: Params) -> Reply {
    let mut req = ufds::UpdateAccountRequest {
        account: t.owner().to_string(),
        ..Default::default()
    };
    for (name, field) in UPDATABLE {
        if let Some(v) = params.str(name) {
            *field(&mut req) = Some(v);
        }
    }
    req.triton_cns_enabled = params.bool("triton_cns_enabled")?;
    let mut client = t.app.backends.ufds.clone();
    let account = client.update_account(req).await.answer("ufds")?;
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
    let request = napi::ListNetworksRequest {
        provisionable_by: Some(owner.to_string()),
        fabric: Some(false),
        ..Default::default()
    };
    let mut client = app.backends.napi.clone();
    let networks = client.list_networks(request).await.answer("napi")?.networks;
    let public: Vec<_> = networks.into_iter().filter(|n| n.public).collect();
    Ok(public
        .iter()
        .find(|n| n.name == "external")
        .or_else(|| public.first())
        .cloned())
}

pub async fn get_config(t: Tenant) -> Reply {
    let net = default_network(&t.app, t.owner()).await?;
    let mut o = Map::new();
    if let Some(n) = net {
        o.insert("default_network".into(), json!(n.uuid));
    }
    Ok(json_response(StatusCode::OK, &Value::Object(o)))
}

/// Per-account config is not stored (UFDS keeps no `dclocalconfig` yet): only the
/// current default is accepted.
pub async fn update_config(t: Tenant, params: Params) -> Reply {
    let current = default_network(&t.app, t.owner()).await?;
    match (params.str("default_network"), current) {
        (None, _) => get_config(t).await,
        (Some(asked), Some(n)) if asked == n.uuid => get_config(t).await,
        (Some(_), _) => Err(ApiError::invalid_argument(
            "default_network cannot be changed in this datacenter",
        )),
    }
}
