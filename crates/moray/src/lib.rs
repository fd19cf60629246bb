//! Moray: JSON objects in buckets with typed secondary indexes, on PostgreSQL — the
//! key/value store every Triton service keeps its state in (spec: PART A of
//! `moray-manatee.md`; operator notes and deviations from Triton: `docs/moray.md`).
//!
//! [`start`] runs a Moray in-process (tests start one on `127.0.0.1:0`); the `moray`
//! binary is a thin wrapper around it.

pub mod bucket_ops;
pub mod buckets;
pub mod compile;
pub mod config;
pub mod decode;
pub mod error;
pub mod feed;
pub mod filter;
pub mod objects;
pub mod pool;
pub mod schema;
pub mod server;
pub mod sql;
pub mod store;
pub mod types;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use triton_proto::moray::v1::moray_server::MorayServer;

pub use config::Config;
pub use error::MorayError;

use crate::buckets::BucketCache;
use crate::feed::Feed;
use crate::pool::{Pool, PoolOptions};
use crate::server::MorayService;
use crate::store::Store;

/// The gRPC service name, as health reports it.
pub const SERVICE_NAME: &str = "triton.moray.v1.Moray";

/// A running Moray.
pub struct Running {
    /// The address it listens on (the real port when `listen` asked for port 0).
    pub addr: SocketAddr,
    /// Ends when the server has stopped (after the shutdown token was cancelled).
    pub task: JoinHandle<Result<(), MorayError>>,
}

/// Starts Moray in standalone mode on `config.postgres_url`: binds, creates Moray's own
/// tables if missing, and serves until `shutdown` is cancelled.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, MorayError> {
    if config.postgres_url.is_empty() {
        return Err(MorayError::invalid_argument(
            "postgres_url",
            "is required in standalone mode (MORAY_POSTGRES_URL)",
        ));
    }
    let (tx, rx) = watch::channel(Some(config.postgres_url.clone()));
    let mut running = start_following(config, rx, shutdown).await?;
    // Keep the sender alive as long as the server runs.
    let task = running.task;
    running.task = tokio::spawn(async move {
        let r = task
            .await
            .map_err(|e| MorayError::Internal(format!("server task failed: {e}")))?;
        drop(tx);
        r
    });
    Ok(running)
}

/// Starts Moray following a changing primary: `primary` carries the current PostgreSQL
/// URL, or `None` while there is none (requests then fail with `NoDatabasePeersError`).
/// Moray's own tables are created whenever a new URL appears; when a URL is present at
/// start, a failure to create them fails the start.
pub async fn start_following(
    config: Config,
    primary: watch::Receiver<Option<String>>,
    shutdown: CancellationToken,
) -> Result<Running, MorayError> {
    let listener = triton_common::grpc::bind(&config.listen)
        .await
        .map_err(|e| MorayError::Internal(format!("{e}: {}", source_text(&e))))?;
    let addr = listener
        .local_addr()
        .map_err(|e| MorayError::Internal(format!("cannot read the listen address: {e}")))?;
    let pool = Pool::new(
        primary.clone(),
        PoolOptions {
            max_connections: config.max_connections,
            max_queue: config.max_queue,
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
        },
        shutdown.clone(),
    );
    let startup_deadline = Duration::from_millis(config.default_timeout_ms);
    if primary.borrow().is_some() {
        set_up_schema(&pool, startup_deadline).await?;
    }
    tokio::spawn(follow_schema(
        pool.clone(),
        primary,
        startup_deadline,
        shutdown.clone(),
    ));

    let feed = Feed::new(
        Duration::from_secs(config.change_retention_secs),
        Duration::from_secs(config.change_trim_interval_secs),
    );
    tokio::spawn(feed.clone().run(pool.clone(), shutdown.clone()));
    let max_message = config.max_message_bytes;
    let store = Arc::new(Store {
        pool,
        cache: BucketCache::new(Duration::from_millis(config.bucket_cache_ttl_ms)),
        feed,
        config,
    });
    let service = MorayServer::new(MorayService::new(store, shutdown.clone()))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let routes = tonic::service::Routes::new(service);
    let task = tokio::spawn(async move {
        triton_common::grpc::serve(listener, routes, &[SERVICE_NAME], shutdown)
            .await
            .map_err(|e| MorayError::Internal(format!("{e}: {}", source_text(&e))))
    });
    tracing::info!(%addr, "moray started");
    Ok(Running { addr, task })
}

fn source_text(e: &dyn std::error::Error) -> String {
    e.source().map(|s| s.to_string()).unwrap_or_default()
}

async fn set_up_schema(pool: &Pool, timeout: Duration) -> Result<(), MorayError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut conn = pool.get(deadline).await?;
    let r = tokio::time::timeout_at(deadline, schema::setup(&mut conn))
        .await
        .unwrap_or(Err(MorayError::QueryTimeout {
            timeout_ms: timeout.as_millis() as u64,
        }));
    if r.is_ok() {
        conn.done();
    }
    r
}

/// Sets up the schema on every new primary (retrying while it fails).
async fn follow_schema(
    pool: Pool,
    mut primary: watch::Receiver<Option<String>>,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = primary.changed() => if changed.is_err() { return },
        }
        while primary.borrow().is_some() {
            match set_up_schema(&pool, timeout).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot set up Moray's tables on the new primary; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }
}
