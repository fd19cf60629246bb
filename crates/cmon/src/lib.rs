//! CMon, Triton's Container Monitor: Prometheus metrics for every instance over HTTPS
//! (port 9163), authenticated with TLS client certificates made from the account's SSH
//! keys. It keeps no samples: an instance's metrics are read from its compute node's
//! agent when scraped. What exists and who owns it comes from VMAPI's and CNAPI's
//! change feeds. See `docs/cmon.md`.

pub mod auth;
pub mod cert;
pub mod config;
pub mod error;
pub mod follow;
pub mod host;
pub mod inventory;
pub mod metrics;
pub mod plain;
pub mod server;
pub mod usage;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use triton_common::channel::ChannelBuilder;
use triton_common::tls;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;
use triton_proto::ufds::v1::ufds_client::UfdsClient;
use triton_proto::vmapi::v1::vmapi_client::VmapiClient;

pub use config::Config;
pub use error::{ApiError, StartError};

/// What every handler shares.
pub struct App {
    pub auth: auth::Authenticator,
    pub inventory: Arc<inventory::Inventory>,
    pub usage: usage::Usage,
}

/// A started CMon.
#[derive(Debug)]
pub struct Running {
    /// The HTTPS address (the real port when the config said 0).
    pub addr: SocketAddr,
    /// The certificate it serves (the configured one, or its self-signed one).
    pub tls_cert: PathBuf,
    /// The server and the followers; end after the shutdown token is cancelled.
    pub task: JoinHandle<Result<(), std::io::Error>>,
}

/// Binds, starts following VMAPI and CNAPI, and serves until `shutdown`.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    config.check().map_err(StartError::Config)?;
    if !config.operators.is_empty() {
        tracing::warn!(
            operators = ?config.operators,
            "config key `operators` is ignored: operators are the members of UFDS's \
             `operators` group (sdcadm account operator LOGIN)"
        );
    }
    let (cert, key) = if config.tls_cert.is_empty() {
        let names = vec![
            config.dns_suffix.clone(),
            format!("*.{}", config.dns_suffix),
        ];
        let (cert, key, made) = tls::self_signed(
            Path::new(&config.data_dir),
            &format!("cmon.{}", config.dns_suffix),
            &names,
        )?;
        if made {
            tracing::info!(cert = %cert.display(), "made a self-signed certificate");
        }
        (cert, key)
    } else {
        (
            PathBuf::from(&config.tls_cert),
            PathBuf::from(&config.tls_key),
        )
    };
    let acceptor = tls::acceptor_requesting_client_certs(
        &cert.display().to_string(),
        &key.display().to_string(),
    )?;
    let ufds = UfdsClient::new(ChannelBuilder::new(&config.ufds_url).lazy()?);
    let vmapi = VmapiClient::new(
        ChannelBuilder::new(&config.vmapi_url)
            .request_timeout(None)
            .lazy()?,
    );
    let cnapi = CnapiClient::new(
        ChannelBuilder::new(&config.cnapi_url)
            .request_timeout(None)
            .lazy()?,
    );
    let (listener, addr) = triton_common::listen::bind(&config.listen)
        .await
        .map_err(StartError::listen(&config.listen))?;

    let inventory = Arc::new(inventory::Inventory::default());
    let app = Arc::new(App {
        auth: auth::Authenticator::new(ufds, Duration::from_secs(config.auth_cache_secs)),
        inventory: inventory.clone(),
        usage: usage::Usage::new(
            Duration::from_millis(config.usage_cache_ms),
            Duration::from_millis(config.agent_timeout_ms),
        ),
    });
    let followers = follow::spawn(vmapi, cnapi, inventory, &shutdown);
    let listener = tls::TlsListener::with_plain(
        listener,
        acceptor,
        config.max_connections,
        shutdown.clone(),
        Some(plain::handler()),
    );
    let routes = server::router(app).into_make_service_with_connect_info::<server::Peer>();
    let task = tokio::spawn(async move {
        let token = shutdown.clone();
        let served = axum::serve(listener, routes)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
        shutdown.cancel();
        for f in followers {
            let _ = f.await;
        }
        served
    });
    tracing::info!(%addr, "cmon started");
    Ok(Running {
        addr,
        tls_cert: cert,
        task,
    })
}
