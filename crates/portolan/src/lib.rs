//! Portolan: the SVP server compute nodes ask where overlay addresses live (Triton's
//! `sdc-portolan` with its Moray backend).
//!
//! [`start`] connects to Moray, makes sure the fabric buckets exist (NAPI writes them;
//! `portolan_client::buckets`), serves SVP on `svp_listen` (TCP 1296 by default) and a
//! gRPC health service (plus reflection) on `listen`, until the shutdown token is
//! cancelled. See `docs/portolan.md`.

pub mod app;
pub mod cache;
pub mod config;
pub mod error;
pub mod server;
pub mod store;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use triton_common::listen::Acceptor;

pub use config::Config;
pub use error::{Error, Result};

/// A started Portolan.
#[derive(Debug)]
pub struct Running {
    /// The gRPC (health) address.
    pub addr: SocketAddr,
    /// The SVP address.
    pub svp_addr: SocketAddr,
    /// Both servers; ends after the shutdown token is cancelled.
    pub task: JoinHandle<Result<()>>,
}

/// Connects to Moray, ensures the buckets, binds both ports and serves until `shutdown`.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    let svc = &config.service;
    let moray = svc.connect().await.map_err(Error::moray("connect"))?;
    let store = store::Store::new(moray);
    store
        .ensure()
        .await
        .map_err(Error::moray("create the fabric buckets"))?;
    let cache = cache::Cache::new(
        Duration::from_millis(config.cache_ttl_ms),
        config.cache_entries,
    );
    let app = app::Portolan::new(store, cache);

    let (listener, svp_addr) = triton_common::listen::bind(&config.svp_listen)
        .await
        .map_err(Error::listen(&config.svp_listen))?;
    let acceptor = Acceptor::new(listener, config.svp_max_connections, "SVP");

    let (addr, grpc) = svc
        .start(
            tonic::service::Routes::default(),
            &[],
            shutdown.clone(),
            Error::Serve,
        )
        .await?;
    let idle = Duration::from_secs(config.svp_idle_secs.max(1));
    let svp_stop = shutdown.child_token();
    let svp = tokio::spawn(server::serve(acceptor, app, idle, svp_stop.clone()));
    let task = tokio::spawn(async move {
        let served = grpc.await.map_err(Error::Task).and_then(|r| r);
        // SVP stops with the shutdown token; if gRPC failed first, it stops too.
        svp_stop.cancel();
        svp.await.map_err(Error::Task)?;
        served
    });
    tracing::info!(%addr, %svp_addr, moray = %svc.moray_url, "portolan started");
    Ok(Running {
        addr,
        svp_addr,
        task,
    })
}
