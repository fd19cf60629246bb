//! UFDS: the accounts of a datacenter and their SSH public keys, in Moray.
//!
//! [`start`] connects to Moray, makes sure the `ufds_*` buckets exist, and serves the
//! `triton.ufds.v1.Ufds` gRPC service (plus health and reflection) until the shutdown
//! token is cancelled. See `docs/ufds.md`.

pub mod account;
pub mod config;
pub mod error;
pub mod key;
pub mod server;
pub mod service;
pub mod watch;

use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::{Error, Result, StoreError};
pub use triton_types::ssh_key;

/// Full gRPC name of the service, as the health service reports it.
pub const SERVICE_NAME: &str = "triton.ufds.v1.Ufds";

/// A started UFDS.
pub type Running = triton_common::running::Running<Error>;

/// Connects to Moray, ensures the buckets, binds and serves until `shutdown`.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    let svc = &config.service;
    let moray = svc.connect().await.map_err(Error::moray("connect"))?;
    let watch = watch::Watch::new(moray.clone(), shutdown.clone());
    let ufds = service::Ufds::new(moray);
    ufds.ensure_buckets().await?;

    let routes = tonic::service::Routes::new(server::service(ufds, watch));
    svc.run("ufds", routes, &[SERVICE_NAME], shutdown, |e| {
        StoreError::Serve(e).into()
    })
    .await
}
