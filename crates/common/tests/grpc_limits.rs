//! The gRPC server's limits as a client meets them: a connection over `max_connections`
//! waits for one to close, a stuck handler gets the request timeout, a stream outlives
//! it, and shutdown lets an in-flight request finish (and cuts one that will not).
//!
//! The server under test runs a Health service of the test's own (`grpc.health.v1` is the
//! one service whose stubs `triton-common` has at hand): `Check` of a service name the
//! test picks records the call and then answers, waits for the test, or never answers;
//! `Watch` streams what the test sends.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use triton_common::grpc::ServerConfig;

/// The server's `max_connections` in the limit test.
const LIMIT: usize = 1;

#[derive(Default)]
struct Handler {
    /// The names of the `Check` calls served, in order.
    served: Mutex<Vec<String>>,
    /// `Check("gated")` has started.
    entered: Notify,
    /// `Check("gated")` answers once this is told.
    release: Notify,
    /// What `Watch` streams.
    watch: Mutex<Option<mpsc::Receiver<Result<HealthCheckResponse, Status>>>>,
}

impl Handler {
    fn served(&self) -> Vec<String> {
        self.served.lock().unwrap().clone()
    }
}

#[derive(Clone)]
struct TestHealth(Arc<Handler>);

#[tonic::async_trait]
impl Health for TestHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let name = request.into_inner().service;
        match name.as_str() {
            "stuck" => std::future::pending::<()>().await,
            "gated" => {
                self.0.entered.notify_one();
                self.0.release.notified().await;
            }
            _ => {}
        }
        self.0.served.lock().unwrap().push(name);
        Ok(Response::new(HealthCheckResponse { status: 1 }))
    }

    type WatchStream = tokio_stream::wrappers::ReceiverStream<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let rx = self.0.watch.lock().unwrap().take();
        let rx = rx.ok_or_else(|| Status::failed_precondition("one watch per test"))?;
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }
}

struct Running {
    handler: Arc<Handler>,
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), triton_common::grpc::ServeError>>,
}

/// The test server, under the default `[grpc]` limits as `tune` changes them.
async fn start(tune: impl FnOnce(&mut ServerConfig)) -> Running {
    let mut config = ServerConfig::default();
    tune(&mut config);
    let handler = Arc::new(Handler::default());
    let listener = triton_common::grpc::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let routes = tonic::service::Routes::new(HealthServer::new(TestHealth(handler.clone())));
    let token = shutdown.clone();
    let server = tokio::spawn(async move {
        triton_common::grpc::serve_routes(listener, routes, &config, token).await
    });
    Running {
        handler,
        addr,
        shutdown,
        server,
    }
}

/// A channel of its own (its own connection); no client-side timeout, so what a call
/// meets is the server's doing.
async fn connect(addr: std::net::SocketAddr) -> HealthClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

async fn check(client: &mut HealthClient<Channel>, name: &str) -> Result<i32, Status> {
    client
        .check(HealthCheckRequest {
            service: name.to_string(),
        })
        .await
        .map(|r| r.into_inner().status)
}

#[tokio::test]
async fn a_connection_over_the_limit_waits_until_one_closes() {
    let running = start(|c| c.max_connections = NonZeroUsize::new(LIMIT).unwrap()).await;

    let mut first = connect(running.addr).await;
    check(&mut first, "first-1").await.unwrap();

    // The second client connects (the kernel queues it) and sends its request, but the
    // server does not take the connection while the first one is open.
    let mut second = connect(running.addr).await;
    let waiting = tokio::spawn(async move { check(&mut second, "second").await });
    check(&mut first, "first-2").await.unwrap();
    // Give a server without the limit every chance to serve the second client early.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(running.handler.served(), ["first-1", "first-2"]);
    assert!(
        !waiting.is_finished(),
        "the second client was answered early"
    );

    // The first connection closes: the second is taken and served, not refused.
    drop(first);
    assert_eq!(waiting.await.unwrap().unwrap(), 1);
    assert_eq!(running.handler.served(), ["first-1", "first-2", "second"]);
    running.shutdown.cancel();
}

#[tokio::test]
async fn a_stuck_handler_meets_the_request_timeout() {
    let running = start(|c| c.request_timeout_ms = 200).await;
    let mut client = connect(running.addr).await;
    let err = check(&mut client, "stuck").await.unwrap_err();
    assert_eq!(err.code(), Code::Cancelled, "{err:?}");
    assert!(err.message().contains("Timeout expired"), "{err:?}");
    // The connection stays usable for the next request.
    assert_eq!(check(&mut client, "next").await.unwrap(), 1);
    running.shutdown.cancel();
}

#[tokio::test]
async fn a_stream_outlives_the_request_timeout() {
    let running = start(|c| c.request_timeout_ms = 200).await;
    let (tx, rx) = mpsc::channel(4);
    *running.handler.watch.lock().unwrap() = Some(rx);
    let mut client = connect(running.addr).await;
    let mut stream = client
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();

    tx.send(Ok(HealthCheckResponse { status: 1 }))
        .await
        .unwrap();
    assert_eq!(stream.message().await.unwrap().unwrap().status, 1);
    // Well past the request timeout, the stream still carries messages.
    tokio::time::sleep(Duration::from_millis(600)).await;
    tx.send(Ok(HealthCheckResponse { status: 2 }))
        .await
        .unwrap();
    assert_eq!(stream.message().await.unwrap().unwrap().status, 2);
    drop(tx);
    assert!(
        stream.message().await.unwrap().is_none(),
        "the stream ends cleanly"
    );
    running.shutdown.cancel();
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    let running = start(|_| {}).await;
    let mut client = connect(running.addr).await;
    let in_flight = tokio::spawn(async move { check(&mut client, "gated").await });
    running.handler.entered.notified().await;

    running.shutdown.cancel();
    // The server stops accepting: a new client is not served.
    let late = Endpoint::from_shared(format!("http://{}", running.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    let refused = check(&mut HealthClient::new(late), "late").await;
    assert!(refused.is_err(), "a new client was served while draining");
    assert!(!running.server.is_finished());

    // The request in flight still gets its answer, and then the server returns.
    running.handler.release.notify_one();
    assert_eq!(in_flight.await.unwrap().unwrap(), 1);
    running.server.await.unwrap().unwrap();
    assert_eq!(running.handler.served(), ["gated"]);
}

#[tokio::test]
async fn shutdown_cuts_what_outlasts_the_drain_timeout() {
    let running = start(|c| c.drain_timeout_ms = 200).await;
    let mut client = connect(running.addr).await;
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(async move {
        let _ = done_tx.send(check(&mut client, "gated").await);
    });
    running.handler.entered.notified().await;

    // The handler is never released: the drain ends it, and the server returns.
    running.shutdown.cancel();
    running.server.await.unwrap().unwrap();
    // The client sees its connection cut (a transport error), not an answer or a hang.
    let err = done_rx.await.unwrap().unwrap_err();
    assert!(
        matches!(err.code(), Code::Unknown | Code::Unavailable),
        "{err:?}"
    );
    assert!(running.handler.served().is_empty());
}

#[test]
fn a_zero_limit_is_a_config_error_naming_the_key() {
    #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Conf {
        grpc: ServerConfig,
    }
    let env = [("NAPI_GRPC__MAX_CONNECTIONS".to_string(), "0".to_string())];
    let err = triton_common::config::load_from::<Conf>("napi", None, &env).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("grpc.max_connections (from NAPI_GRPC__MAX_CONNECTIONS)"),
        "{shown}"
    );
    assert!(shown.contains("nonzero"), "{shown}");

    let env = [(
        "NAPI_GRPC__REQUEST_TIMEOUT_MS".to_string(),
        "5000".to_string(),
    )];
    let conf = triton_common::config::load_from::<Conf>("napi", None, &env).unwrap();
    assert_eq!(conf.grpc.request_timeout_ms, 5000);
    assert_eq!(
        conf.grpc.max_connections.get(),
        triton_common::grpc::DEFAULT_MAX_CONNECTIONS
    );
}
