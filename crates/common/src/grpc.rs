//! gRPC server start-up shared by every service: the service's own routes plus the standard
//! health service (`grpc.health.v1.Health`) and server reflection, so `grpcurl` works
//! against every service; one span per request parented on the caller's trace context;
//! graceful shutdown when the token is cancelled; connections from outside the config's
//! `allow_from` closed at accept, before any HTTP/2.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Server;
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the reflection service")]
    Reflection(#[source] tonic_reflection::server::Error),
    #[error("gRPC server failed")]
    Transport(#[source] tonic::transport::Error),
}

/// The `[grpc]` table of every gRPC service's config: who may connect, and whether server
/// reflection is served. From the environment, `<SERVICE>_GRPC__ALLOW_FROM` takes a
/// comma-separated list (`10.99.99.0/24,127.0.0.0/8`) or a TOML array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Networks whose peers may connect (CIDRs; a bare address is one host). Anyone else's
    /// connection is closed at accept. IPv4-mapped IPv6 peers match as IPv4.
    pub allow_from: Vec<Cidr>,
    /// Serve `grpc.reflection.v1.ServerReflection` (what `grpcurl list` uses).
    pub reflection: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            allow_from: vec![
                Cidr::new(IpAddr::from([127, 0, 0, 0]), 8),
                Cidr::new(IpAddr::from(std::net::Ipv6Addr::LOCALHOST), 128),
            ],
            reflection: true,
        }
    }
}

impl ServerConfig {
    /// Whether a peer at `ip` may connect.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow_from.iter().any(|c| c.contains(ip))
    }
}

/// An IP network, `address/prefix`; the address's host bits are cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network of `addr` with `prefix` bits (clamped to the family's width).
    pub fn new(addr: IpAddr, prefix: u8) -> Cidr {
        let addr = addr.to_canonical();
        let prefix = prefix.min(width(addr));
        Cidr {
            net: mask(addr, prefix),
            prefix,
        }
    }

    /// Whether `ip` is in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.prefix) == self.net
    }
}

fn width(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::from((bits & m).to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::from((bits & m).to_be_bytes())
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let text = s.trim();
        let bad = |why: String| {
            format!("`{s}` is not a CIDR (address/prefix, e.g. 10.99.99.0/24): {why}")
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| bad(format!("`{addr}` is not an IP address")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(bad(format!("the prefix must be a number from 0 to {max}"))),
            },
        };
        // An IPv4-mapped IPv6 network is kept as the IPv4 network it maps.
        if let IpAddr::V6(v6) = addr
            && v6.to_ipv4_mapped().is_some()
        {
            if prefix < 96 {
                return Err(bad(format!(
                    "{v6}/{prefix} spans more than IPv4-mapped addresses"
                )));
            }
            return Ok(Cidr::new(addr, prefix - 96));
        }
        Ok(Cidr::new(addr, prefix))
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Cidr, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Accepted connections, less those from outside the allow list (closed unread).
struct Admitted {
    inner: tonic::transport::server::TcpIncoming,
    config: Arc<ServerConfig>,
}

impl Stream for Admitted {
    type Item = std::io::Result<TcpStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    if admit(&self.config, &stream, "gRPC") {
                        return Poll::Ready(Some(Ok(stream)));
                    }
                    // Reset rather than close, so the client sees the refusal at once
                    // (gRPC's UNAVAILABLE) instead of a half-opened HTTP/2 connection.
                    let _ = stream.set_zero_linger();
                }
                other => return other,
            }
        }
    }
}

/// Whether `stream`'s peer is allowed by `config`; logs a refusal (naming the peer) when
/// it is not. A stream whose peer cannot be read is refused.
pub fn admit(config: &ServerConfig, stream: &TcpStream, what: &str) -> bool {
    match stream.peer_addr() {
        Ok(peer) if config.allows(peer.ip()) => true,
        Ok(peer) => {
            tracing::warn!(%peer, listener = what, "connection refused: peer not in allow_from");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, listener = what, "connection refused: no peer address");
            false
        }
    }
}

/// Binds `addr` ("host:port"; port 0 picks a free one).
pub async fn bind(addr: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// Serves `routes` on `listener` until `shutdown` is cancelled, then waits for in-flight
/// requests. `services` are the full names (`triton.moray.v1.Moray`) reported as SERVING
/// by the health service.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    services: &[&str],
    config: &ServerConfig,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in services {
        health
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let mut routes = routes.add_service(health_service);
    if config.reflection {
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(triton_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(ServeError::Reflection)?;
        routes = routes.add_service(reflection);
    }

    let addr: Option<SocketAddr> = listener.local_addr().ok();
    let allow_from: Vec<String> = config.allow_from.iter().map(ToString::to_string).collect();
    tracing::info!(
        ?addr,
        ?services,
        ?allow_from,
        reflection = config.reflection,
        "gRPC server listening"
    );
    // TCP_NODELAY on every accepted connection: with an incoming stream tonic ignores
    // `Server::tcp_nodelay`, and Nagle holding a response's last frame until the
    // client's delayed ACK adds ~40 ms to small unary calls.
    let incoming = Admitted {
        inner: tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        config: Arc::new(config.clone()),
    };
    Server::builder()
        .trace_fn(|request: &http::Request<()>| {
            let span = tracing::info_span!(
                "grpc",
                rpc = %request.uri().path(),
                req_id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            );
            let _ = span.set_parent(crate::telemetry::extract(request.headers()));
            span
        })
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .map_err(ServeError::Transport)
}
