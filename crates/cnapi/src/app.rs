//! One CNAPI in-process: the gRPC service on a listener and the heartbeat reconciler.
//! The `cnapi` binary runs one; tests start them on port 0.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use triton_common::grpc;
use triton_common::periodic::{Periodic, Tasks};
use triton_proto::cnapi::v1::cnapi_server::CnapiServer;

use crate::config::{Config, Storage};
use crate::error::{Error, Result};
use crate::service::{CnapiService, Settings};
use crate::store::{MemoryStore, MorayStore, Store};
use crate::underlay::Underlay;

pub const SERVICE_NAME: &str = "triton.cnapi.v1.Cnapi";

pub struct Running {
    pub addr: SocketAddr,
    /// Ends once the server has stopped (after `shutdown` is cancelled), with the gRPC
    /// server's error if it failed.
    pub task: JoinHandle<Result<(), grpc::ServeError>>,
}

/// Starts the CNAPI `config` describes: its store (Moray, or memory with a warning that
/// nothing survives a restart), then [`start`]. What the `cnapi` binary runs.
pub async fn start_configured(config: Config, shutdown: CancellationToken) -> Result<Running> {
    let settings = config.settings();
    match config.storage {
        Storage::Moray => {
            let store = MorayStore::connect(&config.moray_url).await?;
            start(store, settings, &config.listen, shutdown).await
        }
        Storage::Memory => {
            tracing::warn!("storage = memory: nothing survives a restart");
            start(MemoryStore::default(), settings, &config.listen, shutdown).await
        }
    }
}

pub async fn start<S: Store>(
    store: S,
    settings: Settings,
    listen: &str,
    shutdown: CancellationToken,
) -> Result<Running> {
    let (listener, addr) = grpc::bind_addr(listen)
        .await
        .map_err(|e| Error::Store(triton_common::service::chain(&e)))?;
    let config = settings.grpc.clone();
    let underlay = settings.underlay.as_ref().map(Underlay::new).transpose()?;
    let service = Arc::new(CnapiService::new(Arc::new(store), settings));
    // Servers whose heartbeats stopped are marked `unknown` (health: `task:reconcile`).
    let tasks = Tasks::new();
    let reconciler = Periodic::new("reconcile", service.settings().reconcile_period)
        .at_start()
        .spawn(&tasks, shutdown.clone(), service.clone(), |service| {
            Box::pin(async move { service.reconcile().await.map(drop) })
        });
    // Nodes' underlay addresses registered in NAPI (health: `task:underlay`).
    let underlay = underlay.map(|underlay| {
        Periodic::new("underlay", service.settings().reconcile_period)
            .at_start()
            .spawn(
                &tasks,
                shutdown.clone(),
                (service.clone(), underlay),
                |(service, underlay)| {
                    Box::pin(
                        async move { underlay.sync(&service.underlay_addresses()).await.map(drop) },
                    )
                },
            )
    });
    let routes = tonic::service::Routes::new(CnapiServer::from_arc(service));
    let task = grpc::spawn_with_tasks(
        listener,
        routes,
        &[SERVICE_NAME],
        &config,
        &tasks,
        shutdown,
        std::iter::once(reconciler).chain(underlay),
    );
    tracing::info!(%addr, "cnapi started");
    Ok(Running { addr, task })
}
