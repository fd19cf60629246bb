//! The HTTPS face (triton-cmon `lib/app.js`, `lib/endpoints/*`): pings without
//! authentication; then the `Host` header, the client certificate and what the caller
//! may see, in that order; discovery and metrics.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, FromRequestParts, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::IncomingStream;
use http::request::Parts;
use http::{StatusCode, header};
use triton_common::tls::TlsListener;

use crate::App;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::host::{self, Target};
use crate::metrics;

/// The peer of a connection: its address and its end-entity certificate, if it sent one.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub cert: Option<Arc<[u8]>>,
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        let (_, connection) = stream.io().get_ref();
        let cert = connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| Arc::from(c.as_ref()));
        Peer {
            addr: *stream.remote_addr(),
            cert,
        }
    }
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/_ping", get(ping))
        .route("/v1/ping", get(ping))
        .route("/{version}/_ping", get(ping))
        .route("/v1/discover", get(discover))
        .route("/v1/gz/discover", get(gz_discover))
        .route("/metrics", get(metrics))
        .fallback(unknown)
        .with_state(app)
}

async fn ping() -> &'static str {
    "OK"
}

async fn unknown() -> ApiError {
    ApiError::not_found()
}

/// The request's target (its Host; an unknown one is 404), then its caller (the client
/// certificate authenticated; 401 when it does not), before any handler that answers
/// for an account.
struct Authed {
    target: Target,
    caller: Caller,
}

impl FromRequestParts<Arc<App>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let target = host::parse(parts.headers.get(header::HOST).map(|h| h.as_bytes()))
            .ok_or_else(ApiError::not_found)?;
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<Peer>>() else {
            tracing::warn!("a request without its connection's info");
            return Err(ApiError::internal());
        };
        let caller = app.auth.authenticate(peer.cert.as_deref()).await?;
        Ok(Authed { target, caller })
    }
}

/// `groups=a,b`: each of Triton's tag grammar `[a-zA-Z0-9_-]*`.
fn groups_of(query: Option<&str>) -> Result<Option<Vec<String>>, ApiError> {
    let Some(query) = query else { return Ok(None) };
    let mut groups = None;
    for (k, v) in form_pairs(query) {
        if k != "groups" {
            continue;
        }
        if let Some(bad) = v
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-' || *c == ','))
        {
            return Err(ApiError::bad_request(format!(
                "invalid \"groups\": {bad:?} is not allowed; groups are comma-separated \
                 names of letters, digits, '_' and '-'"
            )));
        }
        groups = Some(v.split(',').map(str::to_string).collect());
    }
    Ok(groups)
}

/// `k=v` pairs of a query, percent-decoded.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json(body: serde_json::Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `GET /v1/discover[?groups=a,b]`: the caller's running instances (a group list
/// matches an instance in any of its groups).
async fn discover(
    State(app): State<Arc<App>>,
    Authed { target, caller }: Authed,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    if target != Target::Cmon {
        return Err(ApiError::not_found());
    }
    let groups = groups_of(query.as_deref())?;
    let vms = app.inventory.vms_of(&caller.uuid);
    let containers: Vec<&crate::inventory::Instance> = vms
        .iter()
        .map(|vm| vm.as_ref())
        .filter(|vm| !vm.discover_disabled)
        .filter(|vm| match &groups {
            None => true,
            Some(wanted) => vm.groups.iter().any(|g| wanted.contains(g)),
        })
        .collect();
    Ok(json(serde_json::json!({ "containers": containers })))
}

/// `GET /v1/gz/discover`: the compute nodes, for operators; others get an empty list
/// (Triton lists them to any account; here only operators learn of them).
async fn gz_discover(
    State(app): State<Arc<App>>,
    Authed { target, caller }: Authed,
) -> Result<Response, ApiError> {
    if target != Target::Cmon {
        return Err(ApiError::not_found());
    }
    let cns: Vec<_> = if caller.operator {
        app.inventory
            .nodes()
            .iter()
            .map(|n| {
                serde_json::json!({
                    "server_uuid": n.uuid.to_string(),
                    "server_hostname": n.hostname,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(json(serde_json::json!({ "cns": cns })))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn text(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        body,
    )
        .into_response()
}

/// `GET /metrics` on `Host: <uuid>.<suffix>`: the caller's running instance, or for an
/// operator a compute node; anything else is 404, as if it did not exist.
async fn metrics(
    State(app): State<Arc<App>>,
    Authed { target, caller }: Authed,
) -> Result<Response, ApiError> {
    let Target::Uuid(uuid) = target else {
        return Err(ApiError::not_found());
    };
    if let Some(vm) = app.inventory.vm(&uuid)
        && vm.owner == caller.uuid
    {
        let node = vm
            .server
            .and_then(|s| app.inventory.node(&s))
            .ok_or_else(|| {
                tracing::warn!(vm = %uuid, server = %vm.server_uuid, "instance's node unknown");
                ApiError::internal()
            })?;
        let (usage, cached) = app.usage.instance(&node.agent_url, uuid).await?;
        return Ok(text(metrics::instance(&usage, cached, now_ms())));
    }
    if caller.operator
        && let Some(node) = app.inventory.node(&uuid)
    {
        let answer = app.usage.node(&node.agent_url).await?;
        return Ok(text(metrics::node(&answer, now_ms())));
    }
    Err(ApiError::not_found())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_the_tag_grammar() {
        assert_eq!(groups_of(None).unwrap(), None);
        assert_eq!(
            groups_of(Some("groups=a,b_c-1")).unwrap(),
            Some(vec!["a".to_string(), "b_c-1".to_string()])
        );
        assert_eq!(
            groups_of(Some("groups=a%2Cb")).unwrap(),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        let e = groups_of(Some("groups=a;b")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("invalid \"groups\""), "{}", e.message);
        assert_eq!(decode("%zz%4"), "%zz%4");
    }
}
