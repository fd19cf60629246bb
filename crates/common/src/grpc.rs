//! gRPC server start-up shared by every service: the service's own routes plus the standard
//! health service (`grpc.health.v1.Health`) and server reflection, so `grpcurl` works
//! against every service; one span per request parented on the caller's trace context;
//! connections from outside the config's `allow_from` closed at accept, before any HTTP/2;
//! and the limits of the `[grpc]` table ([`ServerConfig`]): open connections (the accept
//! loop waits when full), concurrent requests per connection, a per-request timeout,
//! HTTP/2 keep-alive, and a bounded drain when the shutdown token is cancelled.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Server;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Why a gRPC server did not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The reflection service could not be built from the descriptor set.
    #[error("cannot build the reflection service")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The server failed while running.
    #[error("gRPC server failed")]
    Transport(#[source] tonic::transport::Error),
}

/// Open connections at once: every service has a handful of clients (the other services'
/// channels, one per cn-agent for CNAPI), each keeping one connection; far more means a
/// leak or a flood, and file descriptors are finite.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Concurrent requests (HTTP/2 streams) on one connection: hyper's own default, which a
/// client's channel queues behind rather than fails.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 200;
/// Longest a request may take before its response starts: above VMAPI's longest
/// `WaitJob` (600 s), so only a stuck handler meets it. A stream's messages after the
/// response has started (Moray's `Watch`, `FindObjects`) are not limited by it.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 900_000;
/// HTTP/2 PING on an idle connection this often, so a peer that vanished without a FIN
/// (a rebooted compute node) is noticed and its connection and permit released.
pub const DEFAULT_KEEPALIVE_INTERVAL_MS: u64 = 30_000;
/// A PING unanswered this long closes the connection.
pub const DEFAULT_KEEPALIVE_TIMEOUT_MS: u64 = 20_000;
/// On shutdown, how long in-flight requests and open streams may take to finish before
/// their connections are cut; under the 30 s most supervisors wait before SIGKILL.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 20_000;

/// The `[grpc]` table of every gRPC service's config: who may connect, whether server
/// reflection is served, and the server's limits. From the environment,
/// `<SERVICE>_GRPC__ALLOW_FROM` takes a comma-separated list (`10.99.99.0/24,127.0.0.0/8`)
/// or a TOML array; `<SERVICE>_GRPC__MAX_CONNECTIONS=64` and so on for the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Networks whose peers may connect (CIDRs; a bare address is one host). Anyone else's
    /// connection is closed at accept. IPv4-mapped IPv6 peers match as IPv4.
    pub allow_from: Vec<Cidr>,
    /// Serve `grpc.reflection.v1.ServerReflection` (what `grpcurl list` uses).
    pub reflection: bool,
    /// Connections open at once; when reached, new clients wait (in the kernel's accept
    /// queue) until one closes. At least 1.
    pub max_connections: NonZeroUsize,
    /// Concurrent requests on one connection (HTTP/2 `MAX_CONCURRENT_STREAMS`); a client
    /// queues the rest. At least 1.
    pub max_concurrent_streams: NonZeroU32,
    /// A request whose response has not started after this long fails with `CANCELLED`,
    /// "Timeout expired"; 0 is no limit. A client's shorter `grpc-timeout` wins.
    pub request_timeout_ms: u64,
    /// HTTP/2 keep-alive PING interval on each connection; 0 is off.
    pub keepalive_interval_ms: u64,
    /// How long a keep-alive PING may go unanswered before the connection is closed.
    pub keepalive_timeout_ms: u64,
    /// On shutdown: stop accepting, let in-flight requests and streams finish for up to
    /// this long, then close what is left.
    pub drain_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            allow_from: vec![
                Cidr::new(IpAddr::from([127, 0, 0, 0]), 8),
                Cidr::new(IpAddr::from(std::net::Ipv6Addr::LOCALHOST), 128),
            ],
            reflection: true,
            max_connections: NonZeroUsize::new(DEFAULT_MAX_CONNECTIONS)
                .unwrap_or(NonZeroUsize::MIN),
            max_concurrent_streams: NonZeroU32::new(DEFAULT_MAX_CONCURRENT_STREAMS)
                .unwrap_or(NonZeroU32::MIN),
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            keepalive_interval_ms: DEFAULT_KEEPALIVE_INTERVAL_MS,
            keepalive_timeout_ms: DEFAULT_KEEPALIVE_TIMEOUT_MS,
            drain_timeout_ms: DEFAULT_DRAIN_TIMEOUT_MS,
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

/// The start-up every gRPC service shares: binds `listen` ("host:port"; port 0 picks a
/// free one) and spawns [`serve`] on it with `routes`, reporting `services` as SERVING.
/// Returns the bound address and the server's task, whose error is the service's own
/// (`map_err`, e.g. `Error::Serve`); the task ends after `shutdown` is cancelled and
/// requests drain.
pub async fn start<E: Send + 'static>(
    listen: &str,
    routes: Routes,
    services: &'static [&'static str],
    config: &ServerConfig,
    shutdown: CancellationToken,
    map_err: fn(ServeError) -> E,
) -> Result<(SocketAddr, tokio::task::JoinHandle<Result<(), E>>), E> {
    let (listener, addr) = bind_addr(listen).await.map_err(map_err)?;
    let config = config.clone();
    let task = tokio::spawn(async move {
        serve(listener, routes, services, &config, shutdown)
            .await
            .map_err(map_err)
    });
    Ok((addr, task))
}

/// Binds `listen` as [`bind`] does and gives the address it got, for a service that needs
/// its port before it builds its routes (cn-agent's sysinfo carries it).
pub async fn bind_addr(listen: &str) -> Result<(TcpListener, SocketAddr), ServeError> {
    crate::listen::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen.to_string(),
            source,
        })
}

/// Spawns [`serve_with_tasks`] on `listener` for a service with background work. When
/// the server stops (after `shutdown`, or failing), `shutdown` is cancelled so that work
/// stops too, and each of `handles` (that work's tasks) is awaited, in order, before the
/// task ends with the server's result (a task that panicked does not change it).
pub fn spawn_with_tasks(
    listener: TcpListener,
    routes: Routes,
    services: &'static [&'static str],
    config: &ServerConfig,
    tasks: &crate::periodic::Tasks,
    shutdown: CancellationToken,
    handles: impl IntoIterator<Item = tokio::task::JoinHandle<()>>,
) -> tokio::task::JoinHandle<Result<(), ServeError>> {
    let (config, tasks) = (config.clone(), tasks.clone());
    let handles: Vec<_> = handles.into_iter().collect();
    tokio::spawn(async move {
        let served = serve_with_tasks(
            listener,
            routes,
            services,
            &config,
            &tasks,
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        for handle in handles {
            let _ = handle.await;
        }
        served
    })
}

/// Serves `routes` on `listener` until `shutdown` is cancelled, then drains (see
/// [`serve_routes`]). `services` are the full names (`triton.moray.v1.Moray`) reported as
/// SERVING by the health service.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    services: &[&str],
    config: &ServerConfig,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    serve_with_tasks(
        listener,
        routes,
        services,
        config,
        &crate::periodic::Tasks::new(),
        shutdown,
    )
    .await
}

/// [`serve`], with the health service also reporting each of `tasks` as `task:<name>`
/// (SERVING while its last run succeeded; see [`crate::periodic`]).
pub async fn serve_with_tasks(
    listener: TcpListener,
    routes: Routes,
    services: &[&str],
    config: &ServerConfig,
    tasks: &crate::periodic::Tasks,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in services {
        health
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    tasks.report_to(health, shutdown.clone());
    let mut routes = routes.add_service(health_service);
    if config.reflection {
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(triton_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(ServeError::Reflection)?;
        routes = routes.add_service(reflection);
    }
    tracing::info!(?services, "gRPC services");
    serve_routes(listener, routes, config, shutdown).await
}

/// Serves `routes` as they are (no health or reflection added) on `listener` within the
/// limits of `config`, until `shutdown` is cancelled. Then it stops accepting, lets
/// in-flight requests and open streams finish for up to `drain_timeout_ms`, and cuts the
/// connections still open after that.
pub async fn serve_routes(
    listener: TcpListener,
    routes: Routes,
    config: &ServerConfig,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    let allow_from: Vec<String> = config.allow_from.iter().map(ToString::to_string).collect();
    tracing::info!(
        ?addr,
        ?allow_from,
        reflection = config.reflection,
        max_connections = config.max_connections.get(),
        max_concurrent_streams = config.max_concurrent_streams.get(),
        request_timeout_ms = config.request_timeout_ms,
        "gRPC server listening"
    );
    let acceptor = crate::listen::Acceptor::new(listener, config.max_connections.get(), "gRPC");
    let abort = acceptor.abort_token();
    let incoming = admitted(acceptor, config.clone());

    let millis = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
    let mut builder = Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams.get())
        .http2_keepalive_interval(millis(config.keepalive_interval_ms))
        .http2_keepalive_timeout(millis(config.keepalive_timeout_ms));
    if let Some(timeout) = millis(config.request_timeout_ms) {
        builder = builder.timeout(timeout);
    }
    let server = builder
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
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    tokio::pin!(server);
    tokio::select! {
        ended = &mut server => return ended.map_err(ServeError::Transport),
        _ = shutdown.cancelled() => {}
    }
    let drain = Duration::from_millis(config.drain_timeout_ms);
    match tokio::time::timeout(drain, &mut server).await {
        Ok(ended) => ended.map_err(ServeError::Transport),
        Err(_) => {
            tracing::warn!(
                ?addr,
                drain_timeout_ms = config.drain_timeout_ms,
                "gRPC drain timed out: closing the connections still open"
            );
            abort.cancel();
            // The connections fail at their next read or write and end at once.
            server.await.map_err(ServeError::Transport)
        }
    }
}

/// The acceptor's connections, less those from outside the allow list (reset unread, so
/// the client sees the refusal at once, gRPC's UNAVAILABLE, rather than a half-opened
/// HTTP/2 connection). The accept loop ends when the server drops the stream.
fn admitted(
    acceptor: crate::listen::Acceptor,
    config: ServerConfig,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<crate::listen::Conn<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            let (conn, _peer) = tokio::select! {
                _ = tx.closed() => return,
                accepted = acceptor.accept() => accepted,
            };
            if !admit(&config, conn.get_ref(), "gRPC") {
                let _ = conn.get_ref().set_zero_linger();
                continue;
            }
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
