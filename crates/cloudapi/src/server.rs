//! The HTTP face: the router, Triton's response headers, version negotiation and
//! authentication in front of every endpoint but `/--ping`.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use http::{HeaderName, HeaderValue, StatusCode, header};
use md5::Digest as _;
use tracing::Instrument as _;

use crate::AppState;
use crate::endpoints::{
    account, datacenters, images, keys, machines, networks, nics, packages, snapshots, volumes,
};
use crate::error::ApiError;
use crate::version;

/// Largest request body accepted: metadata (user-scripts) is the big item; Triton's
/// metadata values are capped well below this.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// `Server:` header. Triton sends its CloudAPI code version there, and clients gate
/// features on it (node-triton's volume tests check a volume's tags and affinity only
/// from cloudapi 9.8.6), so this names the sdc-cloudapi release whose endpoints this one
/// follows, not the crate's own version.
pub const SERVER_NAME: &str = "cloudapi/9.20.0";

/// The API version a request negotiated (in the request's extensions).
#[derive(Debug, Clone, Copy)]
pub struct ApiVersion(pub &'static str);

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/--ping", get(ping))
        .route(
            "/{login}",
            get(account::get).post(account::update).head(account::get),
        )
        .route("/{login}/limits", get(account::limits))
        .route(
            "/{login}/config",
            get(account::get_config).put(account::update_config),
        )
        .route("/{login}/keys", get(keys::list).post(keys::create))
        .route("/{login}/keys/{key}", get(keys::get).delete(keys::delete))
        .route("/{login}/datacenters", get(datacenters::list))
        .route("/{login}/datacenters/{name}", get(datacenters::get))
        .route("/{login}/services", get(datacenters::services))
        .route("/{login}/images", get(images::list))
        .route("/{login}/images/{id}", get(images::get))
        .route("/{login}/packages", get(packages::list))
        .route("/{login}/packages/{id}", get(packages::get))
        .route(
            "/{login}/machines",
            get(machines::list).post(machines::create),
        )
        .route(
            "/{login}/machines/{id}",
            get(machines::get)
                .post(machines::action)
                .delete(machines::delete),
        )
        .route("/{login}/machines/{id}/audit", get(machines::audit))
        .route(
            "/{login}/machines/{id}/tags",
            get(machines::list_tags)
                .post(machines::add_tags)
                .put(machines::replace_tags)
                .delete(machines::delete_tags),
        )
        .route(
            "/{login}/machines/{id}/tags/{tag}",
            get(machines::get_tag).delete(machines::delete_tag),
        )
        .route(
            "/{login}/machines/{id}/metadata",
            get(machines::list_metadata)
                .post(machines::add_metadata)
                .delete(machines::delete_all_metadata),
        )
        .route(
            "/{login}/machines/{id}/metadata/{key}",
            get(machines::get_metadata).delete(machines::delete_metadata),
        )
        .route(
            "/{login}/machines/{id}/nics",
            get(nics::list).post(nics::add),
        )
        .route(
            "/{login}/machines/{id}/nics/{mac}",
            get(nics::get).delete(nics::remove),
        )
        .route(
            "/{login}/machines/{id}/snapshots",
            get(snapshots::list).post(snapshots::create),
        )
        .route(
            "/{login}/machines/{id}/snapshots/{name}",
            get(snapshots::get)
                .post(snapshots::start_from)
                .delete(snapshots::delete),
        )
        .route("/{login}/volumes", get(volumes::list).post(volumes::create))
        .route(
            "/{login}/volumes/{id}",
            get(volumes::get)
                .post(volumes::update)
                .delete(volumes::delete),
        )
        .route("/{login}/volumesizes", get(volumes::sizes))
        .route("/{login}/networks", get(networks::list))
        .route("/{login}/networks/{id}", get(networks::get))
        .route("/{login}/networks/{id}/ips", get(networks::list_ips))
        .route("/{login}/networks/{id}/ips/{ip}", get(networks::get_ip))
        .route(
            "/{login}/fabrics/default/vlans",
            get(networks::list_vlans).post(networks::create_vlan),
        )
        .route(
            "/{login}/fabrics/default/vlans/{vlan_id}",
            get(networks::get_vlan)
                .put(networks::update_vlan)
                .post(networks::update_vlan)
                .delete(networks::delete_vlan),
        )
        .route(
            "/{login}/fabrics/default/vlans/{vlan_id}/networks",
            get(networks::list_fabric_networks).post(networks::create_fabric_network),
        )
        .route(
            "/{login}/fabrics/default/vlans/{vlan_id}/networks/{id}",
            get(networks::get_fabric_network)
                .put(networks::update_fabric_network)
                .delete(networks::delete_fabric_network),
        )
        .route("/", post(not_found).get(not_found))
        .fallback(not_found)
        .method_not_allowed_fallback(bad_method);
    api.layer(middleware::from_fn_with_state(state.clone(), triton_layer))
        .with_state(state)
}

async fn ping() -> Response {
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "ping": "pong",
            "cloudapi": {"versions": version::SUPPORTED},
        }),
    )
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("{} does not exist", req.uri().path()))
}

async fn bad_method(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "BadMethod",
        format!("{} is not allowed", req.method()),
    )
}

/// A JSON response with Triton's body headers (`Content-MD5`, `Content-Length`).
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let bytes = match serde_json::to_vec(body) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a response");
            b"{\"code\":\"InternalError\",\"message\":\"Internal error\"}".to_vec()
        }
    };
    let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&bytes));
    let mut response = (status, bytes).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&md5) {
        h.insert(HeaderName::from_static("content-md5"), v);
    }
    response
}

/// `response` with a `Location` header (a created resource, a redirect).
pub fn with_location(mut response: Response, location: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// A response with no body (204, or 202 for accepted actions).
pub fn empty_response(status: StatusCode) -> Response {
    status.into_response()
}

/// Every request: request id, version negotiation, authentication (all but ping),
/// and Triton's headers on the way out.
async fn triton_layer(State(app): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let asked = req
        .headers()
        .get("accept-version")
        .or_else(|| req.headers().get("api-version"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let negotiated = match &asked {
        Some(range) => version::negotiate(range),
        None => Some(version::latest()),
    };
    let span = tracing::info_span!(
        "request",
        req_id = %request_id,
        method = %req.method(),
        path = %req.uri().path(),
        login = tracing::field::Empty,
    );
    let mut response = async {
        let Some(v) = negotiated else {
            let mut e = ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidVersion",
                format!(
                    "{} is not supported by GET {}",
                    asked.as_deref().unwrap_or(""),
                    req.uri().path()
                ),
            );
            e.body_extra = Some(serde_json::json!({"versions": version::SUPPORTED}));
            return e.into_response();
        };
        req.extensions_mut().insert(ApiVersion(v));
        if req.uri().path() != "/--ping" {
            match crate::auth::authenticate(&app, &crate::auth::RequestHead::of(&req)).await {
                Ok(caller) => {
                    tracing::Span::current().record("login", caller.account.login.as_str());
                    req.extensions_mut().insert(caller);
                }
                Err(e) => return e.into_response(),
            }
        }
        next.run(req).await
    }
    .instrument(span.clone())
    .await;

    let elapsed = started.elapsed().as_millis().to_string();
    let h = response.headers_mut();
    let set = |h: &mut http::HeaderMap, name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set(h, "server", SERVER_NAME);
    set(h, "request-id", &request_id);
    set(h, "x-request-id", &request_id);
    set(h, "api-version", negotiated.unwrap_or(version::latest()));
    set(h, "response-time", &elapsed);
    set(h, "x-response-time", &elapsed);
    set(h, "triton-datacenter-name", &app.config.datacenter);
    set(h, "access-control-allow-origin", "*");
    set(
        h,
        "access-control-allow-headers",
        "Accept, Accept-Version, Content-Length, Content-MD5, Content-Type, Date, Api-Version, Response-Time, Authorization",
    );
    set(
        h,
        "access-control-allow-methods",
        "GET, HEAD, POST, PUT, DELETE",
    );
    set(
        h,
        "access-control-expose-headers",
        "Api-Version, Request-Id, Response-Time",
    );
    let status = response.status();
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), ms = %elapsed, "request failed");
        } else {
            tracing::info!(status = status.as_u16(), ms = %elapsed, "request");
        }
    });
    response
}
