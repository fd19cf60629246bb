//! Machines (instances): list, get, create, actions (start, stop, reboot, resize,
//! rename, firewall, deletion protection), delete, audit, tags and metadata. Backed by
//! VMAPI; every change is a VMAPI job, so writes answer at once (202/204) and the
//! change shows once the job has run.

use std::collections::{BTreeMap, HashMap};

use axum::extract::Path;
use http::StatusCode;
use serde_json::{Value, json};
use triton_proto::papi::v1 as papi;
use triton_proto::vmapi::v1 as vmapi;

use super::{
    Answer, IdPath, ItemPath, Reply, Tenant, account, listing, tags_json, to_proto_value, volumes,
};
use crate::error::ApiError;
use crate::machine::{self, DELETION_PROTECTION_KEY, machine_json};
use crate::params::Params;
use crate::server::{empty_response, json_response, with_location};

/// Page size of ListMachines, and the most it returns (Triton's).
pub const MAX_LIMIT: u64 = 1000;
/// Longest instance name (VMAPI alias).
const MAX_NAME_LEN: usize = 189;

/// Package names by uuid, for the machines' `package` field.
async fn package_names(t: &Tenant, vms: &[vmapi::Vm]) -> HashMap<String, String> {
    let mut names = HashMap::new();
    for vm in vms {
        if vm.billing_id.is_empty() || names.contains_key(&vm.billing_id) {
            continue;
        }
        let name = t
            .package(&vm.billing_id)
            .await
            .map(|p| p.name)
            .unwrap_or_default();
        names.insert(vm.billing_id.clone(), name);
    }
    names
}

async fn machine_of(t: &Tenant, vm: &vmapi::Vm) -> Value {
    let names = package_names(t, std::slice::from_ref(vm)).await;
    machine_json(
        vm,
        names.get(&vm.billing_id).map(String::as_str).unwrap_or(""),
    )
}

/// Longest instance name on an account with `triton_cns_enabled`: a DNS label (CNS
/// names instances by alias).
const MAX_CNS_NAME_LEN: usize = 63;

/// The machines' `dns_names` from CNS, one `GetVmNames` call for all of them, as
/// sdc-cloudapi's GetMachine: only when CNS is configured (`cns_url`) and the account
/// has `triton_cns_enabled` (else `None`: no `dns_names` field); a VM CNS lists nothing
/// for gets `[]`.
async fn dns_names(
    t: &Tenant,
    vms: &[vmapi::Vm],
) -> Result<Option<HashMap<String, Vec<String>>>, tonic::Status> {
    let Some(cns) = &t.app.backends.cns else {
        return Ok(None);
    };
    if !t.caller.account.triton_cns_enabled || vms.is_empty() {
        return Ok(None);
    }
    let uuids = vms.iter().map(|vm| vm.uuid.clone()).collect();
    let answer = cns
        .clone()
        .get_vm_names(triton_proto::cns::v1::GetVmNamesRequest { uuids })
        .await?
        .into_inner();
    let mut names: HashMap<String, Vec<String>> =
        vms.iter().map(|vm| (vm.uuid.clone(), Vec::new())).collect();
    for vm in answer.vms {
        if let Some(n) = names.get_mut(&vm.uuid) {
            *n = vm.names;
        }
    }
    Ok(Some(names))
}

/// Adds `dns_names` to a machine object when CNS gave names for the account.
fn put_dns_names(machine: &mut Value, names: Option<&HashMap<String, Vec<String>>>) {
    let Some(names) = names else { return };
    if let Some(o) = machine.as_object_mut() {
        let id = o.get("id").and_then(Value::as_str).unwrap_or_default();
        let mine = names.get(id).cloned().unwrap_or_default();
        o.insert("dns_names".into(), json!(mine));
    }
}

/// A name's extra rule on an account with `triton_cns_enabled` (sdc-cloudapi's).
fn validate_cns_name(t: &Tenant, name: &str) -> Result<(), ApiError> {
    if t.caller.account.triton_cns_enabled && name.len() > MAX_CNS_NAME_LEN {
        return Err(ApiError::invalid_argument(format!(
            "name: cannot be longer than {MAX_CNS_NAME_LEN} characters, because you have \
             triton_cns_enabled set on your Account"
        )));
    }
    Ok(())
}

// ------------------------------------------------------------------ list / get

pub async fn list(t: Tenant, params: Params) -> Reply {
    let owner = t.owner();
    let limit = params
        .u64("limit")?
        .unwrap_or(MAX_LIMIT)
        .clamp(1, MAX_LIMIT);
    let offset = params.u64("offset")?.unwrap_or(0);
    let state = params.str("state");
    let memory = params.u64("memory")?;
    let wanted_states: Option<Vec<&str>> = state.as_deref().map(machine::vmapi_states);
    // An exact name: VMAPI's alias takes `*` globs, so what it finds is checked again
    // below and a tenant's `name=*` matches only an instance named `*`.
    let name = params.str("name");
    let mut req = vmapi::ListVmsRequest {
        owner_uuid: owner.to_string(),
        alias: name.clone().unwrap_or_default(),
        brand: params.str("brand").unwrap_or_default(),
        image_uuid: params.str("image").unwrap_or_default(),
        limit: MAX_LIMIT as u32,
        ..Default::default()
    };
    if let Some(states) = &wanted_states
        && states.len() == 1
    {
        req.state = states[0].to_string();
    }
    for (k, v) in params.prefixed("tag") {
        let v = match v {
            Value::String(s) => s,
            other => other.to_string(),
        };
        req.tags.insert(k, v);
    }
    let any_tags = params.str("tags").as_deref() == Some("*");

    let mut vms = Vec::new();
    let mut client = t.vmapi();
    loop {
        let page = client.list_vms(req.clone()).await.answer("vmapi")?.vms;
        let n = page.len();
        if let Some(last) = page.last() {
            req.marker = last.uuid.clone();
        }
        vms.extend(page);
        if n < MAX_LIMIT as usize {
            break;
        }
    }
    vms.retain(|vm| {
        vm.owner_uuid == owner
            && !volumes::is_volume_storage(vm)
            && match &wanted_states {
                Some(states) => states.contains(&vm.state.as_str()),
                None => vm.state != "destroyed",
            }
            && memory.is_none_or(|m| vm.ram == m)
            && (!any_tags || !vm.tags.is_empty())
            && name.as_deref().is_none_or(|n| vm.alias == n)
    });
    vms.sort_by(|a, b| {
        a.create_timestamp
            .cmp(&b.create_timestamp)
            .then(a.uuid.cmp(&b.uuid))
    });
    let total = vms.len();
    let page: Vec<vmapi::Vm> = vms
        .into_iter()
        .skip(offset as usize)
        .take(limit as usize)
        .collect();
    let names = package_names(&t, &page).await;
    // A listing still answers when CNS does not: without `dns_names`.
    let dns = match dns_names(&t, &page).await {
        Ok(dns) => dns,
        Err(e) => {
            tracing::warn!(error = %e, "cannot get the machines' dns_names from CNS");
            None
        }
    };
    let body: Vec<Value> = page
        .iter()
        .map(|vm| {
            let mut m = machine_json(
                vm,
                names.get(&vm.billing_id).map(String::as_str).unwrap_or(""),
            );
            put_dns_names(&mut m, dns.as_ref());
            m
        })
        .collect();
    Ok(listing(body, total, Some(limit)))
}

/// GetMachine: 410 Gone with the machine for a deleted one.
pub async fn get(t: Tenant, Path((_login, id)): IdPath) -> Reply {
    let vm = t.machine(&id).await?;
    let mut body = machine_of(&t, &vm).await;
    // As sdc-cloudapi: a GetMachine CNS cannot answer fails.
    let dns = dns_names(&t, std::slice::from_ref(&vm))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, vm = %vm.uuid, "failed to look up the VM in CNS");
            ApiError::internal("Unable to contact the Triton CNS API")
        })?;
    put_dns_names(&mut body, dns.as_ref());
    let status = if vm.state == "destroyed" {
        StatusCode::GONE
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, &body))
}

// ------------------------------------------------------------------ create

fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_argument(format!(
            "name: {name:?} is invalid: up to {MAX_NAME_LEN} of [a-zA-Z0-9_.-], starting with a letter or digit"
        )))
    }
}

/// `tags` object plus flattened `tag.<k>` parameters.
fn tags_param(params: &Params) -> Result<BTreeMap<String, Value>, ApiError> {
    let mut tags = BTreeMap::new();
    match params.get("tags") {
        None => {}
        Some(Value::Object(o)) => tags.extend(o.clone()),
        Some(Value::String(s)) if s == "*" => {}
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(o)) => tags.extend(o),
            _ => return Err(ApiError::invalid_argument("tags must be an object")),
        },
        Some(_) => return Err(ApiError::invalid_argument("tags must be an object")),
    }
    tags.extend(params.prefixed("tag"));
    for (k, v) in &tags {
        check_tag(k, v)?;
    }
    Ok(tags)
}

/// A tag's value is a string, a number or a boolean.
fn check_tag(key: &str, value: &Value) -> Result<(), ApiError> {
    if matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
        Ok(())
    } else {
        Err(ApiError::invalid_argument(format!(
            "tag {key}: values must be strings, numbers or booleans"
        )))
    }
}

/// `credentials` is kept for the operator: a tenant may not set or remove it.
fn check_metadata_key(key: &str) -> Result<(), ApiError> {
    if key == "credentials" {
        Err(ApiError::invalid_argument(
            "metadata: credentials is a reserved key",
        ))
    } else {
        Ok(())
    }
}

/// The value of `key` in a machine's tags or metadata, or 404 saying `missing`.
fn present<'a, V>(
    map: &'a HashMap<String, V>,
    key: &str,
    missing: impl FnOnce() -> String,
) -> Result<&'a V, ApiError> {
    map.get(key).ok_or_else(|| ApiError::not_found(missing()))
}

fn metadata_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `metadata` object plus flattened `metadata.<k>` parameters.
fn metadata_param(params: &Params) -> Result<BTreeMap<String, String>, ApiError> {
    let mut md = BTreeMap::new();
    match params.get("metadata") {
        None => {}
        Some(Value::Object(o)) => {
            md.extend(o.iter().map(|(k, v)| (k.clone(), metadata_value(v))));
        }
        Some(_) => return Err(ApiError::invalid_argument("metadata must be an object")),
    }
    md.extend(
        params
            .prefixed("metadata")
            .iter()
            .map(|(k, v)| (k.clone(), metadata_value(v))),
    );
    md.keys().try_for_each(|k| check_metadata_key(k))?;
    Ok(md)
}

async fn network_specs(
    t: &Tenant,
    params: &Params,
    package: &papi::Package,
) -> Result<Vec<vmapi::NetworkSpec>, ApiError> {
    let mut specs = Vec::new();
    let mut external = Vec::new();
    match params.list("networks") {
        Some(list) if !list.is_empty() => {
            for entry in list {
                let (uuid, ips, primary) = match &entry {
                    Value::String(s) => (s.clone(), Vec::new(), None),
                    Value::Object(o) => {
                        let uuid = o
                            .get("ipv4_uuid")
                            .or_else(|| o.get("uuid"))
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                ApiError::invalid_argument("networks: each object needs ipv4_uuid")
                            })?
                            .to_string();
                        let ips: Vec<String> = match o.get("ipv4_ips").or_else(|| o.get("ip")) {
                            Some(Value::Array(a)) => a
                                .iter()
                                .filter_map(Value::as_str)
                                .map(str::to_string)
                                .collect(),
                            Some(Value::String(s)) => vec![s.clone()],
                            _ => Vec::new(),
                        };
                        if ips.len() > 1 {
                            return Err(ApiError::invalid_argument(
                                "networks: ipv4_ips takes at most one IP",
                            ));
                        }
                        (uuid, ips, o.get("primary").and_then(Value::as_bool))
                    }
                    _ => {
                        return Err(ApiError::invalid_argument(
                            "networks must be uuids or objects",
                        ));
                    }
                };
                let n = t
                    .network_to_use(&uuid, || format!("Invalid Networks: {uuid}"))
                    .await?;
                if !ips.is_empty() && n.public {
                    return Err(ApiError::invalid_argument(format!(
                        "Invalid Networks: cannot specify an IP on public network {uuid}"
                    )));
                }
                // The rest of the address rules (gateway, network and broadcast address,
                // in use) are NAPI's, checked by VMAPI before it queues the job.
                if let Some(ip) = ips.first() {
                    in_provision_range(&n, ip)?;
                }
                external.push(is_external(&n));
                specs.push(vmapi::NetworkSpec {
                    ipv4_uuid: n.uuid,
                    ipv4_ips: ips,
                    primary,
                    ..Default::default()
                });
            }
            external_primary(&mut specs, &external);
        }
        _ => specs = default_network_specs(t, params, package).await?,
    }
    Ok(specs)
}

/// Whether `n` is an external network (Triton's: on nic tag `external`).
fn is_external(n: &triton_proto::napi::v1::Network) -> bool {
    !n.fabric && n.nic_tag == account::EXTERNAL_NIC_TAG
}

/// When no network is asked to be primary, the first external one is (sdc-cloudapi's
/// CreateMachine); with none, VMAPI makes the first primary. `external[i]` says whether
/// `specs[i]` is on an external network.
fn external_primary(specs: &mut [vmapi::NetworkSpec], external: &[bool]) {
    if specs.iter().any(|s| s.primary == Some(true)) {
        return;
    }
    if let Some(i) = external.iter().position(|e| *e)
        && let Some(spec) = specs.get_mut(i)
    {
        spec.primary = Some(true);
    }
}

/// Which of the default networks `default_networks` asks for: `(external, internal)`,
/// both when it is not given.
fn default_networks_param(params: &Params) -> Result<(bool, bool), ApiError> {
    let Some(list) = params.list("default_networks") else {
        return Ok((true, true));
    };
    let (mut external, mut internal) = (false, false);
    for v in list {
        match v.as_str() {
            Some("external") => external = true,
            Some("internal") => internal = true,
            _ => {
                return Err(ApiError::invalid_argument(format!(
                    "property \"default_networks\": {v} is not one of \"external\", \"internal\""
                )));
            }
        }
    }
    Ok((external, internal))
}

/// The networks of a provision that names none, as sdc-cloudapi's CreateMachine picks
/// them: the package's `networks` when it has some; otherwise the external network
/// (primary) and the internal one, which for an account with fabrics is its
/// `default_network` (see [`account::internal_network`]), as `default_networks`
/// (`["external", "internal"]` when not given) asks.
async fn default_network_specs(
    t: &Tenant,
    params: &Params,
    package: &papi::Package,
) -> Result<Vec<vmapi::NetworkSpec>, ApiError> {
    let mut specs = Vec::new();
    if !package.networks.is_empty() {
        let mut external = Vec::new();
        for uuid in &package.networks {
            let n = t
                .network_to_use(uuid, || format!("Invalid Networks: {uuid}"))
                .await?;
            external.push(is_external(&n));
            specs.push(vmapi::NetworkSpec {
                ipv4_uuid: n.uuid,
                ..Default::default()
            });
        }
        external_primary(&mut specs, &external);
        return Ok(specs);
    }
    let (want_external, want_internal) = default_networks_param(params)?;
    let networks = account::usable_networks(&t.app, t.owner()).await?;
    let external = account::external_network(&networks).filter(|_| want_external);
    if let Some(n) = external {
        specs.push(vmapi::NetworkSpec {
            ipv4_uuid: n.uuid.clone(),
            primary: Some(true),
            ..Default::default()
        });
    }
    if want_internal
        && let Some(n) = account::internal_network(&networks, &t.caller.account.default_network)
        && external.is_none_or(|e| e.uuid != n.uuid)
    {
        specs.push(vmapi::NetworkSpec {
            ipv4_uuid: n.uuid.clone(),
            ..Default::default()
        });
    }
    if specs.is_empty() {
        return Err(ApiError::invalid_argument(
            "no network is available to provision on",
        ));
    }
    Ok(specs)
}

pub async fn create(t: Tenant, Path(login): Path<String>, params: Params) -> Reply {
    let image_id = params.required_str("image")?;
    let package_id = params.required_str("package")?;
    let image = t.image(&image_id).await?;
    if image.state != "active" {
        return Err(ApiError::invalid_argument(format!(
            "image {image_id} is not active"
        )));
    }
    let package = t.package(&package_id).await?;
    if !package.active {
        return Err(ApiError::invalid_argument(format!(
            "package {package_id} is not active"
        )));
    }
    if let Some(min) = image.requirements.as_ref().and_then(|r| r.min_ram)
        && package.max_physical_memory < min
    {
        return Err(ApiError::invalid_argument(format!(
            "You must use a package with at least {min} MiB of memory with image {image_id}"
        )));
    }
    if let Some(max) = image.requirements.as_ref().and_then(|r| r.max_ram)
        && package.max_physical_memory > max
    {
        return Err(ApiError::invalid_argument(format!(
            "You must use a package with at most {max} MiB of memory with image {image_id}"
        )));
    }
    if !package.os.is_empty() && !image.os.is_empty() && package.os != image.os {
        return Err(ApiError::invalid_argument(format!(
            "The package and image must have the same OS, but package.os={} and image.os={}",
            package.os, image.os
        )));
    }
    let image_brand = image
        .requirements
        .as_ref()
        .map(|r| r.brand.clone())
        .unwrap_or_default();
    let brand = params
        .str("brand")
        .or_else(|| Some(package.brand.clone()).filter(|b| !b.is_empty()))
        .or_else(|| Some(image_brand).filter(|b| !b.is_empty()))
        .unwrap_or_else(|| match image.r#type.as_str() {
            "lx-dataset" | "docker" => "lx".to_string(),
            "zvol" => "bhyve".to_string(),
            _ => "joyent".to_string(),
        });

    let uuid = uuid::Uuid::new_v4().to_string();
    let short = uuid[..8].to_string();
    let name = match params.str("name") {
        Some(n) if !n.is_empty() => n.replace("{{shortId}}", &short),
        _ => short.clone(),
    };
    validate_name(&name)?;
    validate_cns_name(&t, &name)?;

    let tags = tags_param(&params)?;
    let metadata = metadata_param(&params)?;
    let mut affinity = Vec::new();
    if let Some(rules) = params.list("affinity") {
        for r in rules {
            let r = r
                .as_str()
                .ok_or_else(|| ApiError::invalid_argument("affinity must be a list of strings"))?;
            affinity.push(machine::parse_affinity(r).map_err(ApiError::invalid_argument)?);
        }
    }
    let locality = match params.get("locality") {
        Some(Value::Object(o)) => {
            let list = |k: &str| -> Vec<String> {
                match o.get(k) {
                    Some(Value::String(s)) => vec![s.clone()],
                    Some(Value::Array(a)) => a
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect(),
                    _ => Vec::new(),
                }
            };
            Some(vmapi::LocalityHints {
                near: list("near"),
                far: list("far"),
                strict: o.get("strict").and_then(Value::as_bool).unwrap_or(false),
            })
        }
        _ => None,
    };
    let volumes = volumes::machine_volumes(&t, &params, &brand)?;
    let networks = network_specs(&t, &params, &package).await?;
    let mut internal_metadata = HashMap::new();
    if params.bool("deletion_protection")?.unwrap_or(false) {
        internal_metadata.insert(DELETION_PROTECTION_KEY.to_string(), "true".to_string());
    }

    let request = vmapi::CreateVmRequest {
        uuid: uuid.clone(),
        owner_uuid: t.owner().to_string(),
        alias: name,
        brand,
        image_uuid: image.uuid.clone(),
        billing_id: package.uuid.clone(),
        networks,
        tags: tags
            .iter()
            .map(|(k, v)| (k.clone(), to_proto_value(v)))
            .collect(),
        customer_metadata: metadata.into_iter().collect(),
        internal_metadata,
        firewall_enabled: params.bool("firewall_enabled")?.unwrap_or(false),
        locality,
        affinity,
        volumes,
        ..Default::default()
    };
    let job = t.vmapi().create_vm(request).await.answer("vmapi")?;
    tracing::info!(vm = %job.vm_uuid, job = %job.job_uuid, image = %image.uuid, package = %package.name, "provision accepted");
    let vm = t.machine(&job.vm_uuid).await?;
    let body = machine_json(&vm, &package.name);
    Ok(with_location(
        json_response(StatusCode::CREATED, &body),
        &format!("/{login}/machines/{}", vm.uuid),
    ))
}

// ------------------------------------------------------------------ actions

/// Asks VMAPI for an update of `vm`: the request `change` fills in.
async fn update(
    t: &Tenant,
    vm: &vmapi::Vm,
    change: impl FnOnce(&mut vmapi::UpdateVmRequest),
) -> Result<vmapi::JobRef, ApiError> {
    let mut req = vmapi::UpdateVmRequest {
        uuid: vm.uuid.clone(),
        owner_uuid: vm.owner_uuid.clone(),
        ..Default::default()
    };
    change(&mut req);
    t.vmapi().update_vm(req).await.answer("vmapi")
}

/// POST /:login/machines/:id?action=...
pub async fn action(t: Tenant, Path((_login, id)): IdPath, params: Params) -> Reply {
    let action = params.required_str("action")?;
    let vm = t.live_machine(&id).await?;
    let act = vmapi::VmActionRequest {
        uuid: vm.uuid.clone(),
        owner_uuid: t.owner().to_string(),
        ..Default::default()
    };
    let mut client = t.vmapi();
    let job = match action.as_str() {
        "start" => client.start_vm(act).await.answer("vmapi")?,
        "stop" => client.stop_vm(act).await.answer("vmapi")?,
        "reboot" => client.reboot_vm(act).await.answer("vmapi")?,
        "resize" => {
            let pkg_id = params.required_str("package")?;
            if vm.brand == "kvm" {
                return Err(ApiError::invalid_argument(
                    "resize is not supported for kvm instances",
                ));
            }
            let pkg = t.package(&pkg_id).await?;
            if !pkg.active {
                return Err(ApiError::invalid_argument(format!(
                    "package {pkg_id} is not active"
                )));
            }
            update(&t, &vm, |r| r.billing_id = Some(pkg.uuid.clone())).await?
        }
        "rename" => {
            let name = params.required_str("name")?;
            validate_name(&name)?;
            validate_cns_name(&t, &name)?;
            update(&t, &vm, |r| r.alias = Some(name)).await?
        }
        "enable_firewall" | "disable_firewall" => {
            update(&t, &vm, |r| {
                r.firewall_enabled = Some(action == "enable_firewall")
            })
            .await?
        }
        "enable_deletion_protection" => {
            update(&t, &vm, |r| {
                r.set_internal_metadata
                    .insert(DELETION_PROTECTION_KEY.to_string(), "true".to_string());
            })
            .await?
        }
        "disable_deletion_protection" => {
            update(&t, &vm, |r| {
                r.remove_internal_metadata
                    .push(DELETION_PROTECTION_KEY.to_string())
            })
            .await?
        }
        other => {
            return Err(ApiError::invalid_argument(format!(
                "{other} is not a valid action"
            )));
        }
    };
    tracing::info!(vm = %vm.uuid, job = %job.job_uuid, action = %action, "machine action accepted");
    Ok(empty_response(StatusCode::ACCEPTED))
}

pub async fn delete(t: Tenant, Path((_login, id)): IdPath) -> Reply {
    let vm = t.live_machine(&id).await?;
    if machine::deletion_protection(&vm) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "CannotDestroyMachine",
            "Instance has \"deletion_protection\" enabled, preventing deletion",
        ));
    }
    let request = vmapi::DeleteVmRequest {
        uuid: vm.uuid.clone(),
        owner_uuid: t.owner().to_string(),
    };
    let job = t.vmapi().delete_vm(request).await.answer("vmapi")?;
    tracing::info!(vm = %vm.uuid, job = %job.job_uuid, "delete accepted");
    Ok(empty_response(StatusCode::NO_CONTENT))
}

// ------------------------------------------------------------------ audit

/// The audit action of an update by the parameter it sets, in the order they are asked.
const UPDATE_ACTIONS: &[(&str, &str)] = &[
    ("alias", "rename"),
    ("billing_id", "resize"),
    ("replace_tags", "replace_tags"),
    ("set_tags", "set_tags"),
    ("remove_tags", "remove_tags"),
    ("set_customer_metadata", "set_metadata"),
    ("remove_customer_metadata", "remove_metadata"),
];

/// The Triton audit action of a VMAPI job, from its name and parameters.
fn audit_action(job: &vmapi::Job) -> String {
    if job.name != "update" {
        return job.name.clone();
    }
    let params: Value = serde_json::from_str(&job.params_json).unwrap_or(Value::Null);
    let has = |k: &str| {
        params.get(k).is_some_and(|v| {
            !v.is_null() && v != &json!({}) && v != &json!([]) && v != &json!(false)
        })
    };
    if let Some((_, action)) = UPDATE_ACTIONS.iter().find(|(param, _)| has(param)) {
        action.to_string()
    } else if let Some(fw) = params.get("firewall_enabled").and_then(Value::as_bool) {
        if fw {
            "enable_firewall".into()
        } else {
            "disable_firewall".into()
        }
    } else if params
        .get("set_internal_metadata")
        .is_some_and(|m| m.get(DELETION_PROTECTION_KEY).is_some())
    {
        "enable_deletion_protection".into()
    } else if has("remove_internal_metadata") {
        "disable_deletion_protection".into()
    } else {
        "update".into()
    }
}

/// MachineAudit: the VM's finished jobs, newest first.
pub async fn audit(t: Tenant, Path((_login, id)): IdPath) -> Reply {
    let vm = t.machine(&id).await?;
    let request = vmapi::ListJobsRequest {
        vm_uuid: vm.uuid.clone(),
        limit: 1000,
        ..Default::default()
    };
    let jobs = t.vmapi().list_jobs(request).await.answer("vmapi")?.jobs;
    let mut records: Vec<(String, Value)> = jobs
        .iter()
        .filter(|j| matches!(j.execution.as_str(), "succeeded" | "failed" | "canceled"))
        .map(|j| {
            let time = if j.finished_at.is_empty() {
                &j.created_at
            } else {
                &j.finished_at
            };
            (
                time.clone(),
                json!({
                    "id": j.uuid,
                    "action": audit_action(j),
                    "success": if j.execution == "succeeded" { "yes" } else { "no" },
                    "caller": {"type": "signature", "keyId": t.caller.key_id},
                    "time": time,
                }),
            )
        })
        .collect();
    records.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(json_response(
        StatusCode::OK,
        &Value::Array(records.into_iter().map(|(_, v)| v).collect()),
    ))
}

// ------------------------------------------------------------------ tags

pub async fn list_tags(t: Tenant, Path((_login, id)): IdPath) -> Reply {
    let vm = t.live_machine(&id).await?;
    Ok(json_response(StatusCode::OK, &tags_json(&vm.tags)))
}

/// Tag parameters of a tags write: every parameter but the reserved ones.
fn tag_body(params: &Params) -> Result<BTreeMap<String, Value>, ApiError> {
    let mut tags = BTreeMap::new();
    for (k, v) in &params.map {
        if k == "action" || k.is_empty() {
            continue;
        }
        check_tag(k, v)?;
        tags.insert(k.clone(), v.clone());
    }
    Ok(tags)
}

async fn write_tags(t: &Tenant, id: &str, params: &Params, replace: bool) -> Reply {
    let vm = t.live_machine(id).await?;
    let tags = tag_body(params)?;
    update(t, &vm, |r| {
        r.replace_tags = replace;
        r.set_tags = tags
            .iter()
            .map(|(k, v)| (k.clone(), to_proto_value(v)))
            .collect();
    })
    .await?;
    // Answer with the tags as they will be once the job has run.
    let mut result: BTreeMap<String, Value> = if replace {
        BTreeMap::new()
    } else {
        vm.tags
            .iter()
            .map(|(k, v)| (k.clone(), super::from_proto_value(v)))
            .collect()
    };
    result.extend(tags);
    Ok(json_response(StatusCode::OK, &json!(result)))
}

pub async fn add_tags(t: Tenant, Path((_login, id)): IdPath, params: Params) -> Reply {
    write_tags(&t, &id, &params, false).await
}

pub async fn replace_tags(t: Tenant, Path((_login, id)): IdPath, params: Params) -> Reply {
    write_tags(&t, &id, &params, true).await
}

pub async fn delete_tags(t: Tenant, Path((_login, id)): IdPath) -> Reply {
    let vm = t.live_machine(&id).await?;
    update(&t, &vm, |r| r.replace_tags = true).await?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

pub async fn get_tag(t: Tenant, Path((_login, id, tag)): ItemPath) -> Reply {
    let vm = t.live_machine(&id).await?;
    let v = present(&vm.tags, &tag, || format!("tag {tag} does not exist"))?;
    Ok(json_response(StatusCode::OK, &super::from_proto_value(v)))
}

pub async fn delete_tag(t: Tenant, Path((_login, id, tag)): ItemPath) -> Reply {
    let vm = t.live_machine(&id).await?;
    present(&vm.tags, &tag, || format!("tag {tag} does not exist"))?;
    update(&t, &vm, |r| r.remove_tags.push(tag)).await?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

// ------------------------------------------------------------------ metadata

pub async fn list_metadata(t: Tenant, Path((_login, id)): IdPath) -> Reply {
    let vm = t.live_machine(&id).await?;
    let md: BTreeMap<&String, &String> = vm.customer_metadata.iter().collect();
    Ok(json_response(StatusCode::OK, &json!(md)))
}

pub async fn add_metadata(t: Tenant, Path((_login, id)): IdPath, params: Params) -> Reply {
    let vm = t.live_machine(&id).await?;
    let mut set = BTreeMap::new();
    for (k, v) in &params.map {
        check_metadata_key(k)?;
        set.insert(k.clone(), metadata_value(v));
    }
    update(&t, &vm, |r| {
        r.set_customer_metadata = set.clone().into_iter().collect()
    })
    .await?;
    let mut result: BTreeMap<String, String> = vm.customer_metadata.into_iter().collect();
    result.extend(set);
    Ok(json_response(StatusCode::OK, &json!(result)))
}

pub async fn get_metadata(t: Tenant, Path((_login, id, key)): ItemPath) -> Reply {
    let vm = t.live_machine(&id).await?;
    let v = present(&vm.customer_metadata, &key, || {
        format!("{key} is not present")
    })?;
    Ok(json_response(StatusCode::OK, &json!(v)))
}

pub async fn delete_metadata(t: Tenant, Path((_login, id, key)): ItemPath) -> Reply {
    let vm = t.live_machine(&id).await?;
    check_metadata_key(&key)?;
    present(&vm.customer_metadata, &key, || {
        format!("{key} is not present")
    })?;
    update(&t, &vm, |r| r.remove_customer_metadata.push(key)).await?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

pub async fn delete_all_metadata(t: Tenant, Path((_login, id)): IdPath) -> Reply {
    let vm = t.live_machine(&id).await?;
    let keys: Vec<String> = vm.customer_metadata.keys().cloned().collect();
    if !keys.is_empty() {
        update(&t, &vm, |r| r.remove_customer_metadata = keys).await?;
    }
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// A tenant's explicit IP must be in the network's provision range (NAPI refuses it
/// too, when the job makes the NIC; this says so before the machine exists). The
/// gateway, network and broadcast addresses are left to VMAPI, which asks NAPI and
/// names those rules.
fn in_provision_range(n: &triton_proto::napi::v1::Network, ip: &str) -> Result<(), ApiError> {
    let parse = |v: &str| v.parse::<std::net::Ipv4Addr>().ok();
    let (Some(want), Some(start), Some(end)) = (
        parse(ip),
        parse(&n.provision_start_ip),
        parse(&n.provision_end_ip),
    ) else {
        // Not an address: VMAPI names the field.
        return Ok(());
    };
    let special = parse(&n.gateway) == Some(want)
        || n.subnet
            .split_once('/')
            .and_then(|(net, prefix)| Some((parse(net)?, prefix.parse::<u32>().ok()?)))
            .filter(|(_, prefix)| (1..=32).contains(prefix))
            .is_some_and(|(net, prefix)| {
                let host = u32::MAX >> prefix;
                let net = u32::from(net) & !host;
                let w = u32::from(want);
                w & !host == net && (w == net || w == net | host)
            });
    if special || (start..=end).contains(&want) {
        Ok(())
    } else {
        Err(ApiError::invalid_argument(format!(
            "networks: ipv4_ips {ip} is outside the provision range of network {} ({start} to {end})",
            n.uuid
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("web-0.example_1").is_ok());
        assert!(validate_name("-web").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name(&"a".repeat(190)).is_err());
    }

    #[test]
    fn audit_actions_from_update_params() {
        let job = |name: &str, params: Value| vmapi::Job {
            name: name.into(),
            params_json: params.to_string(),
            ..Default::default()
        };
        assert_eq!(audit_action(&job("reboot", json!({}))), "reboot");
        assert_eq!(
            audit_action(&job("update", json!({"alias": "x"}))),
            "rename"
        );
        assert_eq!(
            audit_action(&job("update", json!({"billing_id": "p"}))),
            "resize"
        );
        assert_eq!(
            audit_action(&job("update", json!({"set_customer_metadata": {"a": "b"}}))),
            "set_metadata"
        );
    }

    #[test]
    fn dns_names_only_when_cns_answered() {
        let mut m = json!({"id": "a"});
        put_dns_names(&mut m, None);
        assert!(m.get("dns_names").is_none(), "{m}");
        let names: HashMap<String, Vec<String>> = [(
            "a".to_string(),
            vec!["a.inst.o.coal.cns.triton.local".to_string()],
        )]
        .into();
        put_dns_names(&mut m, Some(&names));
        assert_eq!(m["dns_names"], json!(["a.inst.o.coal.cns.triton.local"]));
        let mut other = json!({"id": "b"});
        put_dns_names(&mut other, Some(&names));
        assert_eq!(other["dns_names"], json!([]));
    }
}
