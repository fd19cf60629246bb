//! PAPI: packages, the named sizes instances are provisioned with, in Moray.
//!
//! [`start`] connects to Moray, makes sure the `papi_packages` bucket exists, and serves the
//! `triton.papi.v1.Papi` gRPC service (plus health and reflection) until the shutdown
//! token is cancelled. See `docs/papi.md`.

pub mod config;
pub mod error;
pub mod package;
pub mod server;
pub mod service;

use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::{Error, Result, StoreError};

/// Full gRPC name of the service, as the health service reports it.
pub const SERVICE_NAME: &str = "triton.papi.v1.Papi";

/// A started PAPI.
pub type Running = triton_common::running::Running<Error>;

/// Connects to Moray, ensures the bucket, binds and serves until `shutdown`.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    let svc = &config.service;
    let moray = svc.connect().await.map_err(Error::moray("connect"))?;
    let papi = service::Papi::new(moray, config.ignore_cpu_cap);
    papi.ensure_buckets().await?;

    let routes = tonic::service::Routes::new(server::service(papi));
    svc.run("papi", routes, &[SERVICE_NAME], shutdown, |e| {
        StoreError::Serve(e).into()
    })
    .await
}
