//! CloudAPI: Triton's public REST API, compatible with the `triton` CLI (node-triton 7).
//!
//! Stateless: every request is authenticated with an HTTP Signature against the
//! account's SSH keys in UFDS, and served from the other services over gRPC (PAPI,
//! IMGAPI, NAPI, VMAPI). [`start`] serves plain HTTP on `listen` (loopback only) and
//! HTTPS on `tls_listen` (with the configured certificate, or a self-signed one it makes
//! in `data_dir`), until the shutdown token is cancelled. See `docs/cloudapi.md`.

pub mod auth;
pub mod backends;
pub mod config;
pub mod endpoints;
pub mod error;
pub mod http_signature;
pub mod machine;
pub mod params;
pub mod server;
pub mod version;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use triton_common::listen::Acceptor;
use triton_common::tls;

pub use backends::Backends;
pub use config::Config;
pub use error::{ApiError, StartError};

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub backends: Backends,
    /// The URL tenants reach this CloudAPI at (ListDatacenters, ListServices).
    pub external_url: String,
}

/// A started CloudAPI.
#[derive(Debug)]
pub struct Running {
    /// The plain HTTP address (the real port when the config said 0), if serving one.
    pub addr: Option<SocketAddr>,
    /// The HTTPS address, if serving one.
    pub tls_addr: Option<SocketAddr>,
    /// The certificate HTTPS is served with (the configured one, or the self-signed
    /// one in the data dir).
    pub tls_cert: Option<PathBuf>,
    /// The servers; end after the shutdown token is cancelled and requests drain.
    pub task: JoinHandle<()>,
}

/// Binds the listeners and serves until `shutdown`.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    config.check().map_err(StartError::Config)?;
    let backends = Backends::connect(&config)?;
    let plain = if config.listen.is_empty() {
        None
    } else {
        Some(bind(&config.listen).await?)
    };
    let tls_files = if !config.serves_tls() {
        None
    } else if config.tls_enabled() {
        Some((
            PathBuf::from(&config.tls_cert),
            PathBuf::from(&config.tls_key),
        ))
    } else {
        let (cert, key, made) = tls::self_signed(
            Path::new(&config.data_dir),
            &format!("cloudapi.{}", config.datacenter),
            &certificate_names(&config),
        )?;
        if made {
            tracing::info!(cert = %cert.display(), "made a self-signed certificate");
        }
        Some((cert, key))
    };
    let secure = if let Some((cert, key)) = &tls_files {
        let acceptor = tls::acceptor(&cert.display().to_string(), &key.display().to_string())?;
        Some((bind(&config.tls_listen).await?, acceptor))
    } else {
        None
    };
    let addr = plain.as_ref().and_then(|l| l.local_addr().ok());
    let tls_addr = secure.as_ref().and_then(|(l, _)| l.local_addr().ok());
    let external_url = if !config.external_url.is_empty() {
        config.external_url.clone()
    } else if let Some(a) = tls_addr {
        format!("https://{a}")
    } else if let Some(a) = addr {
        format!("http://{a}")
    } else {
        String::new()
    };
    let state = Arc::new(AppState {
        config: config.clone(),
        backends,
        external_url,
    });
    let app = server::router(state);

    let mut servers = Vec::new();
    if let Some(listener) = plain {
        let app = app.clone();
        let token = shutdown.clone();
        servers.push(tokio::spawn(async move {
            let listener = Acceptor::new(listener, tls::DEFAULT_MAX_CONNECTIONS, "HTTP");
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server failed");
            }
        }));
    }
    if let Some((listener, acceptor)) = secure {
        let token = shutdown.clone();
        let listener = tls::TlsListener::new(
            listener,
            acceptor,
            tls::DEFAULT_MAX_CONNECTIONS,
            shutdown.clone(),
        );
        servers.push(tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTPS server failed");
            }
        }));
    }
    let task = tokio::spawn(async move {
        for s in servers {
            let _ = s.await;
        }
    });
    tracing::info!(?addr, ?tls_addr, datacenter = %config.datacenter, "cloudapi started");
    Ok(Running {
        addr,
        tls_addr,
        tls_cert: tls_files.map(|(cert, _)| cert),
        task,
    })
}

async fn bind(addr: &str) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// The names a self-signed certificate is made for: loopback, this host's name, and the
/// hosts of `tls_listen` (unless every address) and `external_url`.
fn certificate_names(config: &Config) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let mut add = |name: &str| {
        let name = name.trim_start_matches('[').trim_end_matches(']');
        if !name.is_empty() && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    };
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        add(h.trim());
    }
    if let Ok(a) = config.tls_listen.parse::<SocketAddr>() {
        if !a.ip().is_unspecified() {
            add(&a.ip().to_string());
        }
    } else if let Some((host, _)) = config.tls_listen.rsplit_once(':') {
        add(host);
    }
    let url_host = config
        .external_url
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or_default())
        .map(|hostport| match hostport.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => h,
            _ => hostport,
        });
    if let Some(h) = url_host {
        add(h);
    }
    names
}
