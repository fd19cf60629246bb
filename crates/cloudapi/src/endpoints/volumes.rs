//! Volumes (RFD 26): shared NFS volumes of the account, served from VolAPI as
//! sdc-cloudapi's `lib/endpoints/volumes.js` serves them (CloudAPI 9.x, what node-triton
//! 7's `triton volume ...` sends): ListVolumes, CreateVolume, GetVolume, UpdateVolume
//! (rename), DeleteVolume and ListVolumeSizes, and the checks of CreateMachine's
//! `volumes` ([`machine_volumes`]). Without `volapi_url` every one answers
//! `VolumesNotEnabled`.
//!
//! A volume is always the caller's: VolAPI is asked with the account as `owner_uuid`,
//! so another account's volume answers exactly as one that does not exist (404
//! `VolumeNotFound`). The storage VM behind a volume is hidden (no `vm_uuid`; it is not
//! in ListMachines, see [`is_volume_storage`]).

use axum::extract::Path;
use http::StatusCode;
use serde_json::{Value, json};
use triton_proto::vmapi::v1 as vmapi;
use triton_proto::volapi::v1 as volapi;
use triton_proto::volapi::v1::vol_api_client::VolApiClient;

use super::{IdPath, Reply, Tenant, is_uuid, listing, object, put_str};
use crate::backends::Chan;
use crate::error::ApiError;
use crate::params::Params;
use crate::server::{empty_response, json_response, with_location};

/// The only volume type.
pub const TRITONNFS: &str = "tritonnfs";
/// Longest volume name (sdc-cloudapi's `MAX_VOLUME_NAME_LENGTH`).
pub const MAX_NAME_LEN: usize = 256;
/// The states a volume filter may name (a deleted volume is gone).
pub const STATES: &[&str] = &["creating", "ready", "failed", "deleting"];
/// `internal_metadata["sdc:system_role"]` of a volume's storage VM.
pub const STORAGE_ROLE: &str = "nfsvolumestorage";
/// The parameters ListVolumes takes (any other is refused, as Triton's).
const LIST_PARAMS: &[&str] = &["name", "predicate", "size", "state", "type"];
/// The fields a ListVolumes predicate may test (`id` is the volume's uuid).
const PREDICATE_FIELDS: &[&str] = &["id", "name", "size", "state", "type"];

/// Whether `vm` is the storage VM of a volume: an implementation detail a tenant does
/// not see among its machines (sdc-cloudapi hides it from ListMachines and GetMachine).
pub fn is_volume_storage(vm: &vmapi::Vm) -> bool {
    vm.internal_metadata
        .get("sdc:system_role")
        .is_some_and(|r| r == STORAGE_ROLE)
}

/// VolAPI's client, or `VolumesNotEnabled` when this CloudAPI has no `volapi_url`.
fn volapi(t: &Tenant) -> Result<VolApiClient<Chan>, ApiError> {
    t.app.backends.volapi.clone().ok_or_else(not_enabled)
}

fn not_enabled() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "VolumesNotEnabled",
        "volumes are not available in this datacenter (CloudAPI has no VolAPI configured)",
    )
}

/// A VolAPI error as a tenant sees it (sdc-cloudapi's `volapiErrorWrap`): the volume
/// errors keep their code with `context` before VolAPI's message; VolAPI's network
/// refusal is an InvalidArgument; anything else is mapped as any backend's.
fn volapi_error(context: &str, status: tonic::Status) -> ApiError {
    let name = triton_common::status::error_name(&status).unwrap_or("");
    let message = triton_common::status::error_message(&status).to_string();
    let with = |code: &'static str, http: StatusCode| {
        ApiError::new(http, code, format!("{context}: {message}"))
    };
    match name {
        "VolumeNotFound" => with("VolumeNotFound", StatusCode::NOT_FOUND),
        "VolumeAlreadyExists" => with("VolumeAlreadyExists", StatusCode::CONFLICT),
        "VolumeInUse" => with("VolumeInUse", StatusCode::CONFLICT),
        "VolumeSizeNotAvailable" => with("VolumeSizeNotAvailable", StatusCode::CONFLICT),
        "ValidationError" => with("ValidationError", StatusCode::CONFLICT),
        "InvalidNetworks" => ApiError::invalid_argument(format!("Invalid networks: {message}")),
        "NfsServerImageNotFound" => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("{context}: volumes cannot be created yet (no NFS server image)"),
        ),
        _ => ApiError::backend("volapi", status),
    }
}

/// A VolAPI answer, its error as [`volapi_error`].
trait VolAnswer<T> {
    fn vol(self, context: &str) -> Result<T, ApiError>;
}

impl<T> VolAnswer<T> for Result<tonic::Response<T>, tonic::Status> {
    fn vol(self, context: &str) -> Result<T, ApiError> {
        self.map(tonic::Response::into_inner)
            .map_err(|s| volapi_error(context, s))
    }
}

/// The volume object (sdc-cloudapi `translateVolumeFromVolApi`): `uuid` as `id`,
/// `create_timestamp` as `created`, labels as `tags`, no `vm_uuid`.
pub fn volume_json(v: &volapi::Volume) -> Value {
    let mut o = object!({
        "id": v.uuid,
        "owner_uuid": v.owner_uuid,
        "name": v.name,
        "type": v.r#type,
        "size": v.size,
        "state": v.state,
        "networks": v.networks,
        "refs": v.refs,
        "created": v.create_timestamp,
    });
    put_str(&mut o, "filesystem_path", &v.filesystem_path);
    if !v.labels.is_empty() {
        let tags: std::collections::BTreeMap<_, _> = v.labels.iter().collect();
        o.insert("tags".into(), json!(tags));
    }
    Value::Object(o)
}

// ------------------------------------------------------------------ validation

/// Triton's name rule: `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`, at most 256 characters. The
/// messages are sdc-cloudapi's (node-triton's tests match on them).
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    let mut chars = name.chars();
    let ok = name.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(ApiError::invalid_argument(format!(
            "Error: Invalid volume name: {name}. Volume name should match \
             /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/"
        )));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ApiError::invalid_argument(format!(
            "Error: Invalid volume name length: volume name must be at most \
             {MAX_NAME_LEN} long"
        )));
    }
    Ok(())
}

fn validate_type(ty: &str) -> Result<(), ApiError> {
    if ty == TRITONNFS {
        Ok(())
    } else {
        Err(ApiError::invalid_argument(format!(
            "Error: Invalid volume type: {ty}. Volume type should be one of: {TRITONNFS}"
        )))
    }
}

fn validate_state(state: &str) -> Result<(), ApiError> {
    if STATES.contains(&state) {
        Ok(())
    } else {
        Err(ApiError::invalid_argument(format!(
            "Error: Volume state: {state} is invalid (one of {})",
            STATES.join(", ")
        )))
    }
}

/// A volume id in a path: a lower-case uuid, as Triton's `validateVolumeId`.
fn validate_id(id: &str) -> Result<(), ApiError> {
    if triton_types::id::is_uuid(id) {
        Ok(())
    } else {
        Err(ApiError::invalid_argument(format!(
            "Error: Invalid volume ID: {id}. Volume ID should be a lower-case uuid"
        )))
    }
}

/// A `name` search: a name's characters with an optional `*` at either end.
fn validate_name_search(name: &str) -> Result<(), ApiError> {
    let core = name.strip_prefix('*').unwrap_or(name);
    let core = core.strip_suffix('*').unwrap_or(core);
    if !core.is_empty()
        && core
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        Ok(())
    } else {
        Err(ApiError::invalid_argument(format!(
            "Error: invalid value for name search parameter: {name:?} (a name, with an \
             optional * at its start and end)"
        )))
    }
}

/// A `size` search: a positive integer (MiB).
fn size_search(size: &str) -> Result<u64, ApiError> {
    size.parse::<u64>()
        .ok()
        .filter(|s| *s > 0 && !size.starts_with('0'))
        .ok_or_else(|| {
            ApiError::invalid_argument(format!(
                "Error: invalid value for size search parameter: {size:?} (a positive \
                 integer, MiB)"
            ))
        })
}

/// Refuses a parameter outside `allowed` (Triton: `invalid parameter: X`).
fn only_params(params: &Params, allowed: &[&str]) -> Result<(), ApiError> {
    let bad: Vec<&str> = params
        .map
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid_argument(
            bad.iter()
                .map(|k| format!("Error: invalid parameter: {k}"))
                .collect::<Vec<_>>()
                .join(", "),
        ))
    }
}

// ------------------------------------------------------------------ predicate

/// A ListVolumes predicate (node-triton's JSON predicates, krill's grammar):
/// `{"eq": [field, value]}`, `ne`, `lt`, `le`, `gt`, `ge`, `and: [...]`, `or: [...]`.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    Cmp(Cmp, String, Value),
    And(Vec<Predicate>),
    Or(Vec<Predicate>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

fn bad_predicate(why: impl std::fmt::Display) -> ApiError {
    ApiError::invalid_argument(format!("Error: invalid predicate: {why}"))
}

impl Predicate {
    /// Parses the `predicate` parameter's JSON text.
    pub fn parse(text: &str) -> Result<Predicate, ApiError> {
        let v: Value = serde_json::from_str(text).map_err(bad_predicate)?;
        Self::from_json(&v, 0)
    }

    fn from_json(v: &Value, depth: usize) -> Result<Predicate, ApiError> {
        if depth > 16 {
            return Err(bad_predicate("nested more than 16 deep"));
        }
        let only = v
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.iter().next());
        let Some((op, arg)) = only else {
            return Err(bad_predicate(
                "each term must be an object with one operator (eq, ne, lt, le, gt, ge, and, or)",
            ));
        };
        let cmp = match op.as_str() {
            "and" | "or" => {
                let terms = arg
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| bad_predicate(format!("{op} takes a non-empty array")))?
                    .iter()
                    .map(|t| Self::from_json(t, depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(if op == "and" {
                    Predicate::And(terms)
                } else {
                    Predicate::Or(terms)
                });
            }
            "eq" => Cmp::Eq,
            "ne" => Cmp::Ne,
            "lt" => Cmp::Lt,
            "le" => Cmp::Le,
            "gt" => Cmp::Gt,
            "ge" => Cmp::Ge,
            other => return Err(bad_predicate(format!("unknown operator {other:?}"))),
        };
        let pair = arg
            .as_array()
            .filter(|a| a.len() == 2)
            .ok_or_else(|| bad_predicate(format!("{op} takes [field, value]")))?;
        let field = pair[0]
            .as_str()
            .ok_or_else(|| bad_predicate(format!("{op}: the field must be a string")))?;
        if !PREDICATE_FIELDS.contains(&field) {
            return Err(bad_predicate(format!(
                "field {field:?} cannot be searched (one of {})",
                PREDICATE_FIELDS.join(", ")
            )));
        }
        if !matches!(pair[1], Value::String(_) | Value::Number(_)) {
            return Err(bad_predicate(format!(
                "{op}: the value of {field} must be a string or a number"
            )));
        }
        Ok(Predicate::Cmp(cmp, field.to_string(), pair[1].clone()))
    }

    /// The fields the predicate tests.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            Predicate::Cmp(_, f, _) => vec![f.as_str()],
            Predicate::And(t) | Predicate::Or(t) => t.iter().flat_map(|p| p.fields()).collect(),
        }
    }

    /// Whether `v` passes.
    pub fn matches(&self, v: &volapi::Volume) -> bool {
        match self {
            Predicate::And(t) => t.iter().all(|p| p.matches(v)),
            Predicate::Or(t) => t.iter().any(|p| p.matches(v)),
            Predicate::Cmp(cmp, field, want) => {
                let ord = if field == "size" {
                    let want = match want {
                        Value::Number(n) => n.as_u64(),
                        Value::String(s) => s.parse().ok(),
                        _ => None,
                    };
                    let Some(want) = want else {
                        // A size that is not a number: equal to none.
                        return *cmp == Cmp::Ne;
                    };
                    v.size.cmp(&want)
                } else {
                    let have = match field.as_str() {
                        "id" => &v.uuid,
                        "name" => &v.name,
                        "state" => &v.state,
                        _ => &v.r#type,
                    };
                    let want = match want {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    have.as_str().cmp(want.as_str())
                };
                use std::cmp::Ordering::*;
                match cmp {
                    Cmp::Eq => ord == Equal,
                    Cmp::Ne => ord != Equal,
                    Cmp::Lt => ord == Less,
                    Cmp::Le => ord != Greater,
                    Cmp::Gt => ord == Greater,
                    Cmp::Ge => ord != Less,
                }
            }
        }
    }
}

// ------------------------------------------------------------------ endpoints

/// ListVolumes: the account's volumes, filtered by `name` (`*` at either end), `type`,
/// `size`, `state` and `predicate`; with neither `state` nor `predicate`, failed
/// volumes are left out (PUBAPI-1371). A field may not be both a parameter and in the
/// predicate.
pub async fn list(t: Tenant, params: Params) -> Reply {
    only_params(&params, LIST_PARAMS)?;
    let mut client = volapi(&t)?;
    let mut request = volapi::ListVolumesRequest {
        owner_uuid: t.owner().to_string(),
        ..Default::default()
    };
    if let Some(name) = params.str("name") {
        validate_name_search(&name)?;
        request.name = name;
    }
    if let Some(ty) = params.str("type") {
        validate_type(&ty)?;
        request.r#type = ty;
    }
    if let Some(size) = params.str("size") {
        request.size = Some(size_search(&size)?);
    }
    if let Some(state) = params.str("state") {
        validate_state(&state)?;
        request.state = state;
    }
    let predicate = match params.str("predicate") {
        Some(text) => {
            let p = Predicate::parse(&text)?;
            let clashes: Vec<&str> = p
                .fields()
                .into_iter()
                .filter(|f| params.get(f).is_some())
                .collect();
            if let Some(f) = clashes.first() {
                return Err(ApiError::invalid_argument(format!(
                    "Error: predicate has \"{f}\" which conflicts with parameter with same name"
                )));
            }
            Some(p)
        }
        None => None,
    };
    let hide_failed = predicate.is_none() && request.state.is_empty();
    let mut volumes = client
        .list_volumes(request)
        .await
        .vol("Error when listing volumes")?
        .volumes;
    volumes.retain(|v| {
        v.owner_uuid == t.owner()
            && !(hide_failed && v.state == "failed")
            && predicate.as_ref().is_none_or(|p| p.matches(v))
    });
    let rows: Vec<Value> = volumes.iter().map(volume_json).collect();
    let total = rows.len();
    Ok(listing(rows, total, None))
}

/// The `networks` of a CreateVolume: uuids of fabric networks the account owns (as
/// sdc-cloudapi's `checkFabricNetworks`); none given: the account's default network,
/// which must be set (`DefaultFabricNetworkNotConfiguredError`).
async fn create_networks(t: &Tenant, params: &Params) -> Result<Vec<String>, ApiError> {
    let Some(list) = params.list("networks") else {
        let default = &t.caller.account.default_network;
        if default.is_empty() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "DefaultFabricNetworkNotConfiguredError",
                "default_network is not configured for account",
            ));
        }
        return Ok(vec![default.clone()]);
    };
    let ids: Vec<String> = list
        .iter()
        .map(|v| match v {
            Value::String(s) if is_uuid(s) => Ok(s.to_ascii_lowercase()),
            other => Err(ApiError::invalid_argument(format!(
                "Error: Invalid networks: {other} is not a network uuid"
            ))),
        })
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Err(ApiError::invalid_argument(
            "Error: Invalid networks: networks must name at least one fabric network",
        ));
    }
    let mut refused = Vec::new();
    for id in &ids {
        match t.network(id).await {
            Ok(n) if n.fabric && n.owner_uuids.iter().any(|o| o == t.owner()) => {}
            Ok(_) => refused.push(format!("{id} (not a fabric network of this account)")),
            Err(e) if e.status == StatusCode::NOT_FOUND => {
                refused.push(format!("{id} (no such network)"))
            }
            Err(e) => return Err(e),
        }
    }
    if !refused.is_empty() {
        return Err(ApiError::invalid_argument(format!(
            "Invalid networks: {}",
            refused.join(", ")
        )));
    }
    Ok(ids)
}

/// CreateVolume: 201 with the volume (state `creating`); `size` in MiB (default: the
/// smallest of ListVolumeSizes), `type` tritonnfs, `networks` (default: the account's
/// default fabric network), `tags` (the volume's labels) and `affinity` (for the
/// storage VM's placement). Poll GetVolume until `ready` (or `failed`).
pub async fn create(t: Tenant, Path(login): Path<String>, params: Params) -> Reply {
    let mut client = volapi(&t)?;
    let name = params.str("name").unwrap_or_default();
    if params.get("name").is_some() {
        validate_name(&name)?;
    }
    let ty = params.str("type").unwrap_or_else(|| TRITONNFS.to_string());
    validate_type(&ty)?;
    let size = match params.get("size") {
        None => None,
        Some(Value::Number(n)) => Some(n.as_u64().filter(|s| *s > 0).ok_or_else(|| {
            ApiError::invalid_argument(format!("Error: Invalid volume size: {n}"))
        })?),
        Some(other) => {
            return Err(ApiError::invalid_argument(format!(
                "Error: Invalid volume size: {other} (a number of MiB)"
            )));
        }
    };
    let mut labels = std::collections::HashMap::new();
    match params.get("tags") {
        None => {}
        Some(Value::Object(o)) => {
            for (k, v) in o {
                let v = v.as_str().ok_or_else(|| {
                    ApiError::invalid_argument(
                        "Error: Invalid tags: tags must be an object of key/value strings",
                    )
                })?;
                labels.insert(k.clone(), v.to_string());
            }
        }
        Some(_) => {
            return Err(ApiError::invalid_argument(
                "Error: Invalid tags: tags must be an object of key/value strings",
            ));
        }
    }
    let mut affinity = Vec::new();
    if let Some(rules) = params.list("affinity") {
        for r in rules {
            let r = r.as_str().ok_or_else(|| {
                ApiError::invalid_argument(
                    "Error: Invalid affinity: affinity must be an array of strings",
                )
            })?;
            crate::machine::parse_affinity(r).map_err(ApiError::invalid_argument)?;
            affinity.push(r.to_string());
        }
    }
    let networks = create_networks(&t, &params).await?;
    let request = volapi::CreateVolumeRequest {
        owner_uuid: t.owner().to_string(),
        name,
        r#type: ty,
        size,
        networks,
        labels,
        affinity,
        ..Default::default()
    };
    let volume = client
        .create_volume(request)
        .await
        .vol("Error when creating volume")?;
    tracing::info!(volume = %volume.uuid, name = %volume.name, size = volume.size, "volume creation accepted");
    Ok(with_location(
        json_response(StatusCode::CREATED, &volume_json(&volume)),
        &format!("/{login}/volumes/{}", volume.uuid),
    ))
}

pub async fn get(t: Tenant, Path((_login, id)): IdPath) -> Reply {
    let mut client = volapi(&t)?;
    validate_id(&id)?;
    let request = volapi::GetVolumeRequest {
        uuid: id,
        owner_uuid: t.owner().to_string(),
    };
    let volume = client
        .get_volume(request)
        .await
        .vol("Error when getting volume")?;
    Ok(json_response(StatusCode::OK, &volume_json(&volume)))
}

/// UpdateVolume: renames (`name` is the only field it takes); 204, as Triton's.
pub async fn update(t: Tenant, Path((_login, id)): IdPath, params: Params) -> Reply {
    let mut client = volapi(&t)?;
    validate_id(&id)?;
    only_params(&params, &["name"])?;
    let name = params.required_str("name")?;
    validate_name(&name)?;
    let request = volapi::UpdateVolumeRequest {
        uuid: id.clone(),
        owner_uuid: t.owner().to_string(),
        name,
    };
    client
        .update_volume(request)
        .await
        .vol("Error when updating volume")?;
    tracing::info!(volume = %id, "volume renamed");
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// DeleteVolume: 204 once the deletion is under way (refused with VolumeInUse while an
/// instance refers to the volume); poll GetVolume until it answers 404.
pub async fn delete(t: Tenant, Path((_login, id)): IdPath) -> Reply {
    let mut client = volapi(&t)?;
    validate_id(&id)?;
    let request = volapi::DeleteVolumeRequest {
        uuid: id.clone(),
        owner_uuid: t.owner().to_string(),
        force: false,
    };
    client
        .delete_volume(request)
        .await
        .vol("Error when deleting volume")?;
    tracing::info!(volume = %id, "volume deletion accepted");
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// ListVolumeSizes: `[{size, type}]`, ascending (MiB).
pub async fn sizes(t: Tenant, params: Params) -> Reply {
    let mut client = volapi(&t)?;
    only_params(&params, &["type"])?;
    let ty = params.str("type").unwrap_or_else(|| TRITONNFS.to_string());
    validate_type(&ty)?;
    let sizes = client
        .list_volume_sizes(volapi::ListVolumeSizesRequest { r#type: ty })
        .await
        .vol("Error when listing volume sizes")?
        .sizes;
    let rows: Vec<Value> = sizes
        .iter()
        .map(|s| json!({"size": s.size, "type": s.r#type}))
        .collect();
    let total = rows.len();
    Ok(listing(rows, total, None))
}

// ------------------------------------------------------------------ CreateMachine

/// CreateMachine's `volumes`: `[{name, type?, mode?, mountpoint}]` checked as
/// sdc-cloudapi's `validateVolumes` (type tritonnfs, mode rw or ro, a volume name, a
/// mountpoint that starts with `/` and has a character other than `/`), plus what
/// VMAPI refuses anyway, said here with the volume's name: a normalized path, not under
/// /proc, /dev or /sys, one volume per mountpoint. Refused for kvm and bhyve (no
/// automount), and when this datacenter has no volumes. Each mount as VMAPI takes it,
/// mode defaulting to rw.
pub fn machine_volumes(
    t: &Tenant,
    params: &Params,
    brand: &str,
) -> Result<Vec<vmapi::VolumeMount>, ApiError> {
    let Some(given) = params.get("volumes") else {
        return Ok(Vec::new());
    };
    let list: Vec<Value> = match given {
        Value::Array(a) => a.clone(),
        // A form body's JSON text.
        Value::String(s) => match serde_json::from_str(s) {
            Ok(Value::Array(a)) => a,
            _ => {
                return Err(ApiError::invalid_argument(
                    "volumes must be an array of objects",
                ));
            }
        },
        _ => {
            return Err(ApiError::invalid_argument(
                "volumes must be an array of objects",
            ));
        }
    };
    if list.is_empty() {
        return Ok(Vec::new());
    }
    if brand == "kvm" || brand == "bhyve" {
        return Err(ApiError::invalid_argument(format!(
            "volumes not yet supported with brand \"{brand}\""
        )));
    }
    if t.app.backends.volapi.is_none() {
        return Err(ApiError::invalid_argument(
            "Support for automounting volumes is not enabled",
        ));
    }
    let mut mounts: Vec<vmapi::VolumeMount> = Vec::new();
    for v in &list {
        let Some(o) = v.as_object() else {
            return Err(ApiError::invalid_argument(
                "volumes: each volume must be an object {name, type, mode, mountpoint}",
            ));
        };
        let field = |k: &str| -> Result<Option<String>, ApiError> {
            match o.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(ApiError::invalid_argument(format!(
                    "volumes: {k} must be a string, not {other}"
                ))),
            }
        };
        let name = field("name")?.unwrap_or_default();
        validate_name(&name)?;
        let ty = field("type")?.unwrap_or_else(|| TRITONNFS.to_string());
        if ty != TRITONNFS {
            return Err(ApiError::invalid_argument(format!(
                "volume {name}: unknown volume type \"{ty}\" (only {TRITONNFS})"
            )));
        }
        let mode = field("mode")?.unwrap_or_else(|| "rw".to_string());
        if mode != "rw" && mode != "ro" {
            return Err(ApiError::invalid_argument(format!(
                "volume {name}: mode \"{mode}\" must be one of ro, rw"
            )));
        }
        let mountpoint = field("mountpoint")?.unwrap_or_default();
        check_mountpoint(&mountpoint).map_err(|rule| {
            ApiError::invalid_argument(format!(
                "volume {name}: invalid mount point {mountpoint:?}: {rule}"
            ))
        })?;
        if let Some(other) = mounts.iter().find(|m| m.mountpoint == mountpoint) {
            return Err(ApiError::invalid_argument(format!(
                "volume {name}: mount point {mountpoint} is already that of volume {}",
                other.name
            )));
        }
        mounts.push(vmapi::VolumeMount {
            name,
            r#type: ty,
            mode,
            mountpoint,
        });
    }
    Ok(mounts)
}

/// Directories a volume may not be mounted on or under.
const RESERVED_MOUNTPOINTS: &[&str] = &["/proc", "/dev", "/sys"];

/// A mountpoint's rule, or why it breaks it.
fn check_mountpoint(m: &str) -> Result<(), &'static str> {
    if !m.starts_with('/') {
        return Err("it must be an absolute path");
    }
    if m.contains('\0') {
        return Err("it must not contain a NUL character");
    }
    if m.chars().all(|c| c == '/') {
        return Err("it must contain at least one character that is not '/'");
    }
    if m.ends_with('/') || m.contains("//") || m.split('/').any(|c| c == "." || c == "..") {
        return Err("it must be normalized (no '.', '..', '//' or trailing '/')");
    }
    if RESERVED_MOUNTPOINTS
        .iter()
        .any(|r| m == *r || m.strip_prefix(r).is_some_and(|rest| rest.starts_with('/')))
    {
        return Err("/proc, /dev and /sys (and below) are reserved");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(name: &str, size: u64, state: &str) -> volapi::Volume {
        volapi::Volume {
            uuid: "6b6e8a2a-4bd6-4b5e-a7b4-0ad7e6c1d4f2".into(),
            name: name.into(),
            size,
            state: state.into(),
            r#type: TRITONNFS.into(),
            ..Default::default()
        }
    }

    #[test]
    fn names_as_triton() {
        for ok in ["v1", "my-vol.1_a", &"a".repeat(256)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "-a", "!foo!", "a b", "é1", &"a".repeat(257)] {
            let e = validate_name(bad).unwrap_err();
            assert_eq!(e.code, "InvalidArgument");
            assert!(e.message.starts_with("Error: Invalid volume name"), "{e}");
        }
    }

    #[test]
    fn node_triton_predicates() {
        // What `triton volume list`, `volume get NAME` and `volume list name=x size=y` send.
        let p = Predicate::parse(r#"{"ne":["state","failed"]}"#).unwrap();
        assert!(p.matches(&vol("a1", 10240, "ready")));
        assert!(!p.matches(&vol("a1", 10240, "failed")));
        let p = Predicate::parse(r#"{"and":[{"ne":["state","failed"]},{"eq":["name","a1"]}]}"#)
            .unwrap();
        assert!(p.matches(&vol("a1", 10240, "creating")));
        assert!(!p.matches(&vol("a2", 10240, "creating")));
        assert_eq!(p.fields(), vec!["state", "name"]);
        let p =
            Predicate::parse(r#"{"and":[{"eq":["size",20480]},{"eq":["name","a1"]}]}"#).unwrap();
        assert!(p.matches(&vol("a1", 20480, "ready")));
        assert!(!p.matches(&vol("a1", 10240, "ready")));
        let p =
            Predicate::parse(r#"{"or":[{"eq":["size","10240"]},{"gt":["size",50000]}]}"#).unwrap();
        assert!(p.matches(&vol("x", 10240, "ready")));
        assert!(p.matches(&vol("x", 102400, "ready")));
        assert!(!p.matches(&vol("x", 20480, "ready")));
    }

    #[test]
    fn bad_predicates_name_the_problem() {
        for (text, says) in [
            ("not json", "invalid predicate"),
            (r#"{"eq":["vm_uuid","x"]}"#, "vm_uuid"),
            (r#"{"xor":[]}"#, "xor"),
            (r#"{"eq":["name"]}"#, "[field, value]"),
            (r#"{"and":[]}"#, "non-empty"),
            (r#"{"eq":["name",{"a":1}]}"#, "string or a number"),
        ] {
            let e = Predicate::parse(text).unwrap_err();
            assert_eq!(e.status, StatusCode::CONFLICT);
            assert!(e.message.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn mountpoints() {
        for ok in ["/data", "/var/lib/x", "/devices", "/system"] {
            assert!(check_mountpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "data", "/", "//", "/data/", "/a//b", "/a/../b", "/./a", "/proc", "/dev/x",
            "/sys/fs", "/a\0b",
        ] {
            assert!(check_mountpoint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn volume_object_as_cloudapi_shows_it() {
        let mut v = vol("v1", 10240, "ready");
        v.vm_uuid = "11111111-2222-3333-4444-555555555555".into();
        v.filesystem_path = "192.168.128.5:/exports/data".into();
        v.create_timestamp = "2026-12-06T12:00:00.000Z".into();
        v.labels.insert("role".into(), "db".into());
        let j = volume_json(&v);
        assert_eq!(j["id"], v.uuid);
        assert_eq!(j["created"], "2026-12-06T12:00:00.000Z");
        assert_eq!(j["tags"]["role"], "db");
        assert_eq!(j["filesystem_path"], "192.168.128.5:/exports/data");
        assert!(j.get("vm_uuid").is_none() && j.get("uuid").is_none());
    }
}
