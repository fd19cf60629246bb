//! gRPC server start-up shared by every service: the service's own routes plus the standard
//! health service (`grpc.health.v1.Health`) and server reflection, so `grpcurl` works
//! against every service; one span per request parented on the caller's trace context;
//! graceful shutdown when the token is cancelled.

use std::net::SocketAddr;

use tokio::net::TcpListener;
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
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in services {
        health
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(triton_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(ServeError::Reflection)?;
    let routes = routes.add_service(health_service).add_service(reflection);

    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, ?services, "gRPC server listening");
    // TCP_NODELAY on every accepted connection: with an incoming stream tonic ignores
    // `Server::tcp_nodelay`, and Nagle holding a response's last frame until the
    // client's delayed ACK adds ~40 ms to small unary calls.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
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
