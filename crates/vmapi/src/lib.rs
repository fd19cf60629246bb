//! VMAPI: the instances of a datacenter and the jobs that change them.
//!
//! * [`model`]: the VM record (Moray bucket `vmapi_vms`);
//! * [`jobs`]: the durable job engine (leases, per-VM order, resume after restart);
//!   [`jobs::record`] the job record and [`jobs::record::next_action`], the engine's
//!   pure policy; [`jobs::steps`] the steps every job kind shares;
//! * [`service`]: the gRPC API (`triton.vmapi.v1.Vmapi`), thin handlers;
//! * [`reconcile`]: VM states kept current from the servers' heartbeats;
//! * [`watch`]: WatchVms, the VMs' change feed (snapshot then follow);
//! * [`start`] runs it all (the `vmapi` binary; tests on port 0).

pub mod clients;
pub mod config;
pub mod error;
pub mod jobs;
pub mod model;
pub mod params;
pub mod reconcile;
pub mod references;
pub mod service;
pub mod store;
pub mod validate;
pub mod volumes;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use triton_proto::vmapi::v1::vmapi_server::VmapiServer;

pub use config::Config;
pub use error::{Error, Result};

pub const SERVICE_NAME: &str = "triton.vmapi.v1.Vmapi";

pub struct Running {
    /// Where the gRPC server listens (the real port when the config said 0).
    pub addr: SocketAddr,
    /// Ends after shutdown, once in-flight requests and job steps have stopped.
    pub task: JoinHandle<Result<()>>,
    pub engine: Arc<jobs::Engine>,
}

/// Connects to Moray, ensures the buckets, starts the job engine (resuming unfinished
/// jobs), the reconciler and the gRPC server.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    config.check().map_err(Error::Config)?;
    let clients = clients::Clients::from_config(&config)?;
    let moray = moray_client::MorayClient::connect(&config.moray_url)
        .await
        .map_err(Error::moray(format!("connect to {}", config.moray_url)))?;
    let watch = watch::Watch::new(moray.clone(), shutdown.clone());
    let store = store::Store::new(moray);
    store.ensure_buckets().await?;

    let steps = jobs::steps::Steps {
        store: store.clone(),
        clients: clients.clone(),
        timeouts: config.timeouts.clone(),
        images_present: Default::default(),
    };
    let engine = jobs::Engine::new(
        store.clone(),
        steps,
        config.instance_id(),
        config.lease(),
        config.max_running_jobs,
        shutdown.clone(),
    );
    let scanner = tokio::spawn(
        engine
            .clone()
            .scan_loop(Duration::from_millis(config.orphan_scan_ms.max(100))),
    );
    // VM states kept current from the servers' heartbeats (health: `task:reconcile`).
    let tasks = triton_common::periodic::Tasks::new();
    let reconciler = (config.reconcile_period_ms > 0).then(|| {
        let every = Duration::from_millis(config.reconcile_period_ms);
        let reconciler = reconcile::Reconciler::new(
            store.clone(),
            clients.clone(),
            engine.clone(),
            config.timeouts.clone(),
        );
        triton_common::periodic::Periodic::new("reconcile", every).spawn(
            &tasks,
            shutdown.clone(),
            reconciler,
            |r| Box::pin(async move { r.pass().await.map(drop) }),
        )
    });

    let (listener, addr) = triton_common::grpc::bind_addr(&config.listen)
        .await
        .map_err(|e| Error::Config(format!("listen: {e}")))?;
    let service = service::VmapiService {
        create_permits: tokio::sync::Semaphore::new(service::MAX_CONCURRENT_CREATES),
        store,
        clients,
        engine: engine.clone(),
        timeouts: config.timeouts.clone(),
        watch,
    };
    let routes = tonic::service::Routes::new(VmapiServer::new(service));
    let served = triton_common::grpc::spawn_with_tasks(
        listener,
        routes,
        &[SERVICE_NAME],
        &config.grpc,
        &tasks,
        shutdown,
        std::iter::once(scanner).chain(reconciler),
    );
    let serving_engine = engine.clone();
    let task = tokio::spawn(async move {
        let served = served.await;
        serving_engine.drained().await;
        served
            .map_err(|e| Error::Internal(format!("gRPC server task: {e}")))?
            .map_err(|e| Error::Internal(format!("gRPC server failed: {e}")))
    });
    tracing::info!(%addr, instance_id = %engine.instance_id(), "vmapi started");
    Ok(Running { addr, task, engine })
}
