//! NAPI, the network API of a Triton datacenter: nic tags, networks, IP allocation,
//! NICs, and per-account fabrics (overlay VLANs with a VXLAN id, and their networks).
//! Every record is kept in Moray (`napi_*` buckets); see `docs/napi.md`.
//!
//! The one property that matters most: an address is never handed to two NICs. Each
//! IP in use is one Moray object keyed `<network_uuid>/<ip>`, written together with its
//! NIC in one batch with "must not exist", so of concurrent allocators picking the
//! same address exactly one wins ([`allocation`]).

pub mod allocation;
pub mod app;
pub mod config;
pub mod default_fabrics;
pub mod error;
pub mod ip;
pub mod mac;
pub mod model;
pub mod server;
pub mod store;
pub mod validate;
pub mod watch;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use triton_proto::napi::v1::napi_server::NapiServer;

pub use app::Napi;
pub use config::Config;
pub use error::{Error, Result, StoreError};

/// A started NAPI.
pub struct Running {
    /// Where the gRPC server listens (the real port when the config said 0).
    pub addr: SocketAddr,
    /// The server; ends after the shutdown token is cancelled and in-flight requests
    /// are done.
    pub task: JoinHandle<Result<()>>,
    /// The application, for in-process callers (tests, seeding).
    pub app: Napi,
}

/// Connects to Moray, ensures the `napi_*` buckets, seeds CoaL's networks when
/// configured, and serves gRPC on `config.listen` until `shutdown` is cancelled.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    let oui = mac::parse_oui(&config.mac_oui).map_err(Error::Config)?;
    let admin_uuid = if config.admin_uuid.is_empty() {
        String::new()
    } else {
        validate::uuid("admin_uuid", &config.admin_uuid)
            .map_err(|e| Error::Config(e.to_string()))?
    };
    let svc = &config.service;
    let moray = moray_client::MorayClient::connect(&svc.moray_url)
        .await
        .map_err(Error::moray(format!("connect to {}", svc.moray_url)))?;
    let store = store::Store::new(moray.clone());
    store.ensure_buckets().await?;
    let app = Napi::new(store, oui, admin_uuid);
    if config.seed.enabled {
        app.seed(&config.seed).await?;
    }

    let watch = watch::Watch::new(moray, app.clone(), shutdown.clone());
    let routes = Routes::new(NapiServer::new(server::NapiService::new(
        app.clone(),
        watch,
    )));
    // Background work (health: `task:<name>`): the default fabrics' follower.
    let tasks = triton_common::periodic::Tasks::new();
    let follower = if config.fabrics.enabled {
        let follower =
            default_fabrics::Follower::new(app.clone(), &config.fabrics, shutdown.clone())
                .map_err(Error::Config)?;
        let every = Duration::from_millis(config.fabrics.follow_interval_ms.max(1));
        Some(follower.spawn(every, &tasks))
    } else {
        None
    };
    let (listener, addr) = triton_common::grpc::bind_addr(&svc.listen)
        .await
        .map_err(StoreError::Serve)?;
    let grpc = svc.grpc.clone();
    let task = tokio::spawn(async move {
        let served = triton_common::grpc::serve_with_tasks(
            listener,
            routes,
            &[server::SERVICE_NAME],
            &grpc,
            &tasks,
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        if let Some(f) = follower {
            let _ = f.await;
        }
        served.map_err(|e| StoreError::Serve(e).into())
    });
    tracing::info!(%addr, fabrics = config.fabrics.enabled, "napi started");
    Ok(Running { addr, task, app })
}
