//! ListPackages, GetPackage: PAPI's packages visible to the account (public, or owned
//! by it), in CloudAPI's shape (sdc-cloudapi `lib/packages.js` translate).

use axum::extract::Path;
use http::StatusCode;
use serde_json::{Value, json};
use triton_proto::papi::v1 as papi;

use super::{Answer, IdPath, Reply, Tenant, list_of, object, put_str};
use crate::params::Params;
use crate::server::json_response;

pub fn package_json(p: &papi::Package) -> Value {
    let mut o = object!({
        "id": p.uuid,
        "name": p.name,
        "memory": p.max_physical_memory,
        "disk": p.quota,
        "swap": p.max_swap,
        "lwps": p.max_lwps,
        "vcpus": p.vcpus.unwrap_or(0),
        "version": p.version,
        "default": p.default,
    });
    put_str(&mut o, "group", &p.group);
    put_str(&mut o, "description", &p.description);
    put_str(&mut o, "brand", &p.brand);
    if p.flexible_disk {
        o.insert("flexible_disk".into(), json!(true));
    }
    Value::Object(o)
}

pub async fn list(t: Tenant, params: Params) -> Reply {
    let req = papi::ListPackagesRequest {
        name: params.str("name").unwrap_or_default(),
        version: params.str("version").unwrap_or_default(),
        group: params.str("group").unwrap_or_default(),
        brand: params.str("brand").unwrap_or_default(),
        active: Some(true),
        visible_to: t.owner().to_string(),
        max_physical_memory: params.u64("memory")?,
        quota: params.u64("disk")?,
        max_swap: params.u64("swap")?,
        max_lwps: params.u64("lwps")?.map(|v| v as u32),
        vcpus: params.u64("vcpus")?.map(|v| v as u32),
        flexible_disk: params.bool("flexible_disk")?,
        ..Default::default()
    };
    let mut client = t.app.backends.papi.clone();
    let packages = client.list_packages(req).await.answer("papi")?.packages;
    list_of(&packages, package_json)
}

pub async fn get(t: Tenant, Path((_login, id)): IdPath) -> Reply {
    let p = t.package(&id).await?;
    Ok(json_response(StatusCode::OK, &package_json(&p)))
}
