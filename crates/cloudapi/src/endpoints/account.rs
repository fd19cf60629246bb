//! GetAccount, UpdateAccount, GetAccountLimits, Get/UpdateConfig.

use axum::Extension;
use http::StatusCode;
use serde_json::{Map, Value, json};
use triton_proto::napi::v1 as napi;
use triton_proto::ufds::v1 as ufds;

use super::{Answer, Reply, Tenant, object, put_str};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::Params;
use crate::server::json_response;

/// The account as CloudAPI shows it (UFDS names translated).
pub fn account_json(a: &ufds::Account) -> Value {
    let mut o = object!({
        "id": a.uuid,
        "login": a.login,
        "email": a.email,
        "triton_cns_enabled": a.triton_cns_enabled,
        "created": a.created_at,
        "updated": a.updated_at,
    });
    let shown_when_set = [
        ("companyName", &a.company),
        ("firstName", &a.givenname),
        ("lastName", &a.sn),
        ("address", &a.address),
        ("postalCode", &a.postalcode),
        ("city", &a.city),
        ("state", &a.state),
        ("country", &a.country),
        ("phone", &a.phone),
    ];
    for (key, value) in shown_when_set {
        put_str(&mut o, key, value);
    }
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

/// The nic tag of the networks CloudAPI counts as external (Triton's `external`).
pub const EXTERNAL_NIC_TAG: &str = "external";
/// The nic tag of the networks CloudAPI counts as internal (Triton's `internal`).
pub const INTERNAL_NIC_TAG: &str = "internal";

/// The networks `owner` may provision on (public ones and its own, fabrics included),
/// as NAPI lists them.
pub async fn usable_networks(app: &AppState, owner: &str) -> Result<Vec<napi::Network>, ApiError> {
    let request = napi::ListNetworksRequest {
        provisionable_by: Some(owner.to_string()),
        ..Default::default()
    };
    let mut client = app.backends.napi.clone();
    let mut networks = client.list_networks(request).await.answer("napi")?.networks;
    networks.retain(|n| super::networks::usable_by(n, owner));
    Ok(networks)
}

/// The external network a provision that names none gets (sdc-cloudapi's first
/// `external` network): a non-fabric network on nic tag `external`, the one named
/// `external` first. With none on that tag, the first public network, as before
/// fabrics were served.
pub fn external_network(networks: &[napi::Network]) -> Option<&napi::Network> {
    let external: Vec<&napi::Network> = networks
        .iter()
        .filter(|n| !n.fabric && n.nic_tag == EXTERNAL_NIC_TAG)
        .collect();
    let public: Vec<&napi::Network> = networks.iter().filter(|n| n.public).collect();
    external
        .iter()
        .find(|n| n.name == "external")
        .or_else(|| external.first())
        .or_else(|| public.iter().find(|n| n.name == "external"))
        .or_else(|| public.first())
        .copied()
}

/// The internal network a provision that names none gets (sdc-cloudapi's first
/// "internal" network: one on nic tag `internal`, or one of the account's fabric
/// networks): the account's `default_network` when it is one of them, otherwise the
/// first NAPI lists.
pub fn internal_network<'a>(
    networks: &'a [napi::Network],
    default_network: &str,
) -> Option<&'a napi::Network> {
    let internal: Vec<&napi::Network> = networks
        .iter()
        .filter(|n| n.fabric || n.nic_tag == INTERNAL_NIC_TAG)
        .collect();
    internal
        .iter()
        .find(|n| !default_network.is_empty() && n.uuid == default_network)
        .or_else(|| internal.first())
        .copied()
}

/// GetConfig: `{default_network}`, the account's (Triton's `dclocalconfig`
/// `defaultnetwork`); for an account with none set, the external network a
/// provision would get, or `{}` when there is none.
pub async fn get_config(t: Tenant) -> Reply {
    let mut o = Map::new();
    let stored = &t.caller.account.default_network;
    if !stored.is_empty() {
        o.insert("default_network".into(), json!(stored));
    } else {
        let networks = usable_networks(&t.app, t.owner()).await?;
        if let Some(n) = external_network(&networks) {
            o.insert("default_network".into(), json!(n.uuid));
        }
    }
    Ok(json_response(StatusCode::OK, &Value::Object(o)))
}

/// UpdateConfig: sets the account's `default_network` (sdc-cloudapi
/// `lib/endpoints/config.js`): the only field, required, a UUID of a network the
/// account may provision on.
pub async fn update_config(t: Tenant, params: Params) -> Reply {
    const FIELD: &str = "default_network";
    if let Some(other) = params.map.keys().find(|k| *k != FIELD) {
        return Err(ApiError::invalid_argument(format!(
            "property \"{other}\": unsupported property"
        )));
    }
    let asked = match params.get(FIELD) {
        None => {
            return Err(ApiError::invalid_argument(format!(
                "property \"{FIELD}\": is missing and it is required"
            )));
        }
        Some(Value::String(s)) if super::is_uuid(s) => s.to_ascii_lowercase(),
        Some(_) => {
            return Err(ApiError::invalid_argument(format!(
                "property \"{FIELD}\": must be a UUID"
            )));
        }
    };
    let networks = usable_networks(&t.app, t.owner()).await?;
    if !networks.iter().any(|n| n.uuid == asked) {
        return Err(ApiError::invalid_argument(format!(
            "property \"{FIELD}\": unknown network {asked}"
        )));
    }
    let request = ufds::UpdateAccountRequest {
        account: t.owner().to_string(),
        default_network: Some(asked.clone()),
        ..Default::default()
    };
    let mut client = t.app.backends.ufds.clone();
    client.update_account(request).await.answer("ufds")?;
    tracing::info!(network = %asked, "default network set");
    Ok(json_response(StatusCode::OK, &json!({ FIELD: asked })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(uuid: &str, name: &str, nic_tag: &str, fabric: bool, public: bool) -> napi::Network {
        napi::Network {
            uuid: uuid.into(),
            name: name.into(),
            nic_tag: nic_tag.into(),
            fabric,
            public,
            ..Default::default()
        }
    }

    #[test]
    fn the_external_network_is_on_the_external_tag_named_external_first() {
        let nets = [
            net("1", "shared", "external", false, false),
            net("2", "external", "external", false, true),
            net("3", "fab", "sdc_overlay", true, false),
        ];
        assert_eq!(external_network(&nets).map(|n| n.uuid.as_str()), Some("2"));
        assert_eq!(
            external_network(&nets[..1]).map(|n| n.uuid.as_str()),
            Some("1")
        );
        // No network on the tag: the first public one; none at all: none.
        let other = [net("4", "lan", "lan", false, true)];
        assert_eq!(external_network(&other).map(|n| n.uuid.as_str()), Some("4"));
        assert!(external_network(&nets[2..]).is_none());
    }

    #[test]
    fn the_internal_network_is_the_default_among_fabric_and_internal_ones() {
        let nets = [
            net("1", "external", "external", false, true),
            net("2", "a-net", "sdc_overlay", true, false),
            net("3", "my-net", "sdc_overlay", true, false),
            net("4", "internal", "internal", false, true),
        ];
        assert_eq!(
            internal_network(&nets, "3").map(|n| n.uuid.as_str()),
            Some("3")
        );
        // No default, or one that is not a fabric or internal network: the first.
        assert_eq!(
            internal_network(&nets, "").map(|n| n.uuid.as_str()),
            Some("2")
        );
        assert_eq!(
            internal_network(&nets, "1").map(|n| n.uuid.as_str()),
            Some("2")
        );
        assert!(internal_network(&nets[..1], "1").is_none());
    }
}
