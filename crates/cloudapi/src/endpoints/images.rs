//! ListImages, GetImage: IMGAPI's images visible to the account (public, owned by
//! it, or shared with it through the ACL).

use axum::extract::Path;
use http::StatusCode;
use serde_json::{Map, Value, json};
use triton_proto::imgapi::v1 as imgapi;

use super::{Answer, IdPath, Reply, Tenant, list_of, object, put_str};
use crate::params::Params;
use crate::server::json_response;

pub fn visible_to(image: &imgapi::Image, owner: &str) -> bool {
    image.public || image.owner == owner || image.acl.iter().any(|a| a == owner)
}

pub fn image_json(i: &imgapi::Image) -> Value {
    let files: Vec<Value> = i
        .files
        .iter()
        .map(|f| json!({"compression": f.compression, "sha1": f.sha1, "size": f.size}))
        .collect();
    let mut o = object!({
        "id": i.uuid,
        "name": i.name,
        "version": i.version,
        "os": i.os,
        "type": i.r#type,
        "files": files,
        "owner": i.owner,
        "public": i.public,
        "state": i.state,
        "tags": i.tags,
    });
    put_str(&mut o, "description", &i.description);
    put_str(&mut o, "homepage", &i.homepage);
    put_str(&mut o, "eula", &i.eula);
    put_str(&mut o, "origin", &i.origin);
    put_str(&mut o, "published_at", &i.published_at);
    let mut req = Map::new();
    if let Some(r) = &i.requirements {
        if let Some(v) = r.min_ram {
            req.insert("min_ram".into(), json!(v));
            req.insert("min_memory".into(), json!(v));
        }
        if let Some(v) = r.max_ram {
            req.insert("max_ram".into(), json!(v));
            req.insert("max_memory".into(), json!(v));
        }
        put_str(&mut req, "brand", &r.brand);
        put_str(&mut req, "bootrom", &r.bootrom);
    }
    o.insert("requirements".into(), Value::Object(req));
    if !i.acl.is_empty() {
        o.insert("acl".into(), json!(i.acl));
    }
    if let Some(e) = &i.error {
        o.insert(
            "error".into(),
            json!({"code": e.code, "message": e.message}),
        );
    }
    Value::Object(o)
}

pub async fn list(t: Tenant, params: Params) -> Reply {
    let owner = t.owner();
    let mut req = imgapi::ListImagesRequest {
        name: params.str("name"),
        version: params.str("version"),
        os: params.str("os"),
        r#type: params.str("type"),
        public: params.bool("public")?,
        state: Some(params.str("state").unwrap_or_else(|| "active".into())),
        owner: params.str("owner"),
        account: Some(owner.to_string()),
        ..Default::default()
    };
    for (k, v) in params.prefixed("tag") {
        req.tags.insert(
            k,
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string()),
        );
    }
    // Page through IMGAPI (ordered by uuid) so no visible image is left out.
    let mut images = Vec::new();
    let mut client = t.app.backends.imgapi.clone();
    req.limit = Some(1000);
    loop {
        let page = client
            .list_images(req.clone())
            .await
            .answer("imgapi")?
            .images;
        let n = page.len();
        req.marker = page.last().map(|i| i.uuid.clone());
        images.extend(page.into_iter().filter(|i| visible_to(i, owner)));
        if n < 1000 {
            break;
        }
    }
    // Oldest first, as Triton lists them.
    images.sort_by(|a, b| {
        a.published_at
            .cmp(&b.published_at)
            .then(a.name.cmp(&b.name))
    });
    list_of(&images, image_json)
}

pub async fn get(t: Tenant, Path((_login, id)): IdPath) -> Reply {
    let image = t.image(&id).await?;
    Ok(json_response(StatusCode::OK, &image_json(&image)))
}
