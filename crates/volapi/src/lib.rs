//! VolAPI: shared NFS volumes (Triton's sdc-volapi). A volume is a storage VM running
//! the `nfsserver` image, provisioned through VMAPI on the owner's fabric networks;
//! instances mount it by its `filesystem_path`.
//!
//! [`start`] connects to Moray, makes sure the `volapi_volumes` and
//! `volapi_volumes_reservations` buckets exist, starts the updater (VMAPI's `WatchVms`,
//! [`updater`]) and the reservation GC, and serves `triton.volapi.v1.VolApi` (plus
//! health and reflection) until the shutdown token is cancelled. See `docs/volapi.md`.

pub mod config;
pub mod error;
pub mod server;
pub mod service;
pub mod store;
pub mod updater;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use triton_common::grpc;
use triton_common::periodic::{Periodic, Tasks};
use triton_proto::imgapi::v1::imgapi_client::ImgapiClient;
use triton_proto::napi::v1::napi_client::NapiClient;
use triton_proto::papi::v1::papi_client::PapiClient;
use triton_proto::ufds::v1::ufds_client::UfdsClient;
use triton_proto::vmapi::v1::vmapi_client::VmapiClient;

pub use config::Config;
pub use error::{Error, Result, StoreError};

/// Full gRPC name of the service, as the health service reports it.
pub const SERVICE_NAME: &str = "triton.volapi.v1.VolApi";

/// A started VolAPI.
pub type Running = triton_common::running::Running<Error>;

fn channel(url: &str, key: &str) -> Result<tonic::transport::Channel> {
    if url.is_empty() {
        return Err(Error::Start(format!("{key} is required")));
    }
    triton_common::channel::ChannelBuilder::new(url)
        .lazy()
        .map_err(|e| Error::Start(format!("{key}: {e}")))
}

/// Connects to Moray, ensures the buckets, starts the updater and the reservation GC,
/// binds and serves until `shutdown`.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    let clients = service::Clients {
        vmapi: VmapiClient::new(channel(&config.vmapi_url, "vmapi_url")?),
        papi: PapiClient::new(channel(&config.papi_url, "papi_url")?),
        napi: NapiClient::new(channel(&config.napi_url, "napi_url")?),
        imgapi: ImgapiClient::new(channel(&config.imgapi_url, "imgapi_url")?),
        ufds: if config.ufds_url.is_empty() {
            None
        } else {
            Some(UfdsClient::new(channel(&config.ufds_url, "ufds_url")?))
        },
    };
    // The feed's stream has no deadline.
    let watch = triton_common::channel::ChannelBuilder::new(&config.vmapi_url)
        .request_timeout(None)
        .lazy()
        .map_err(|e| Error::Start(format!("vmapi_url: {e}")))?;
    let moray = config
        .service
        .connect()
        .await
        .map_err(Error::moray("connect"))?;
    let store = store::Store::new(moray);
    store.ensure().await?;
    let api = service::VolApi::new(store, clients, config.image_name.clone());

    let (listener, addr) = grpc::bind_addr(&config.service.listen)
        .await
        .map_err(StoreError::Serve)?;
    let tasks = Tasks::new();
    let mut follower = api.clone();
    follower.clients.vmapi = VmapiClient::new(watch);
    let updater = tokio::spawn(updater::run(follower, shutdown.clone()));
    let max_age = Duration::from_millis(config.reservation_max_age_ms);
    let gc = Periodic::new(
        "reservation_gc",
        Duration::from_millis(config.reservation_gc_ms),
    )
    .spawn(&tasks, shutdown.clone(), api.clone(), move |api| {
        Box::pin(async move { updater::gc_reservations(api, max_age).await })
    });

    let routes = tonic::service::Routes::new(server::service(api));
    let served = grpc::spawn_with_tasks(
        listener,
        routes,
        &[SERVICE_NAME],
        &config.service.grpc,
        &tasks,
        shutdown,
        [updater, gc],
    );
    let task = tokio::spawn(async move {
        served
            .await
            .map_err(|e| Error::Start(format!("gRPC server task: {e}")))?
            .map_err(|e| StoreError::Serve(e).into())
    });
    tracing::info!(%addr, moray = %config.service.moray_url, "volapi started");
    Ok(Running { addr, task })
}
