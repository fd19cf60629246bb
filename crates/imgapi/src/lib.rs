//! IMGAPI, the image API of a Triton datacenter: image manifests (v2) in Moray
//! (`imgapi_images`) and their files on local disk, over gRPC, plus plain HTTP for
//! compute nodes to download files. See `docs/imgapi.md`.

pub mod app;
pub mod config;
pub mod error;
pub mod files;
pub mod http;
pub mod manifest;
pub mod server;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use triton_proto::imgapi::v1::imgapi_server::ImgapiServer;

pub use app::Imgapi;
pub use config::Config;
pub use error::{Error, Result, StoreError};

/// Largest gRPC request: an upload chunk. Clients send 1 MiB chunks; 8 MiB leaves room.
const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;

/// A started IMGAPI.
pub struct Running {
    /// gRPC address (the real port when the config said 0).
    pub addr: SocketAddr,
    /// HTTP file server address.
    pub http_addr: SocketAddr,
    /// The gRPC server; ends after shutdown once in-flight requests are done.
    pub task: JoinHandle<Result<()>>,
    /// The HTTP server; same.
    pub http_task: JoinHandle<Result<()>>,
    pub app: Arc<Imgapi>,
}

impl Running {
    /// Waits for either server to end (after shutdown, or on failure), which ends IMGAPI;
    /// the error names the server that failed.
    pub async fn wait(self) -> std::result::Result<(), String> {
        let (server, ended) = tokio::select! {
            r = self.task => ("gRPC", r),
            r = self.http_task => ("HTTP", r),
        };
        ended
            .map_err(|e| format!("{server} server task failed: {e}"))?
            .map_err(|e| format!("{server} server: {}", triton_common::service::chain(&e)))
    }
}

/// Prepares the data directory, connects to Moray, ensures the `imgapi_images`
/// bucket, and serves gRPC and HTTP until `shutdown` is cancelled.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    if config.max_file_bytes == 0 {
        return Err(Error::Config("max_file_bytes must be above 0".into()));
    }
    let files = files::Files::open(&config.data_dir).await?;
    let svc = &config.service;
    let moray = moray_client::MorayClient::connect(&svc.moray_url)
        .await
        .map_err(Error::moray(format!("connect to {}", svc.moray_url)))?;
    let store = store::Store::new(moray);
    store.ensure_bucket().await?;
    let app = Arc::new(Imgapi::new(store, files, config.max_file_bytes));

    let (http_listener, http_addr) = triton_common::listen::bind(&config.http_listen)
        .await
        .map_err(Error::io(format!(
            "cannot listen on {}",
            config.http_listen
        )))?;
    // The gRPC server starts serving at once: bind the HTTP listener first, so a
    // failure there leaves nothing running.
    let grpc_service = ImgapiServer::new(server::ImgapiService::new(app.clone()))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    let (addr, task) = svc
        .start(
            Routes::new(grpc_service),
            &[server::SERVICE_NAME],
            shutdown.clone(),
            |e| StoreError::Serve(e).into(),
        )
        .await?;

    let router = http::router(app.clone());
    let http_listener = http::Admitted {
        inner: http_listener,
        config: svc.grpc.clone(),
    };
    let http_task = tokio::spawn(async move {
        axum::serve(http_listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(Error::io("HTTP server failed"))
    });
    tracing::info!(%addr, %http_addr, data_dir = %config.data_dir, "imgapi started");
    Ok(Running {
        addr,
        http_addr,
        task,
        http_task,
        app,
    })
}
