//! Moray: JSON objects in buckets with typed secondary indexes, on PostgreSQL — the
//! key/value store every Triton service keeps its state in (spec: PART A of
//! `moray-manatee.md`; operator notes and deviations from Triton: `docs/moray.md`).
//!
//! [`start`] runs a Moray in-process (tests start one on `127.0.0.1:0`); the `moray`
//! binary is a thin wrapper around it.

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

/// Starts Moray as configured: following a Manatee shard when `config.manatee_etcd` is
/// set (see [`start_manatee`]), else standalone on `config.postgres_url`. Binds, creates
/// Moray's own tables if missing, and serves until `shutdown` is cancelled.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, MorayError> {
    if !config.manatee_endpoints().is_empty() {
        if !config.postgres_url.is_empty() {
            return Err(MorayError::invalid_argument(
                "postgres_url",
                "is set together with manatee_etcd: set postgres_url for standalone mode or \
                 manatee_etcd to follow a Manatee shard, not both",
            ));
        }
        return start_manatee(config, shutdown).await;
    }
    if config.postgres_url.is_empty() {
        return Err(MorayError::invalid_argument(
            "postgres_url",
            "is required in standalone mode (MORAY_POSTGRES_URL), unless manatee_etcd \
             (MORAY_MANATEE_ETCD) names the etcd of a Manatee shard to follow",
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

/// Starts Moray following the Manatee shard `config.manatee_shard` through the etcd at
/// `config.manatee_etcd`: requests go to the primary the shard's cluster state names (its
/// database `config.manatee_database`), fail with `NoDatabasePeersError` while there is
/// none, and move to the new primary after a takeover.
pub async fn start_manatee(
    config: Config,
    shutdown: CancellationToken,
) -> Result<Running, MorayError> {
    let endpoints = config.manatee_endpoints();
    let etcd = manatee_client::etcd::Etcd::new(&endpoints).map_err(|e| {
        MorayError::invalid_argument("manatee_etcd", manatee_client::error_chain(&e))
    })?;
    if config.manatee_shard.is_empty() || config.manatee_shard.contains('/') {
        return Err(MorayError::invalid_argument(
            "manatee_shard",
            "must be a shard name (non-empty, no '/')",
        ));
    }
    if config.manatee_database.is_empty() {
        return Err(MorayError::invalid_argument(
            "manatee_database",
            "must name a database",
        ));
    }
    tracing::info!(etcd = %endpoints.join(","), shard = %config.manatee_shard, "following the manatee shard");
    let (primary, _follow) = manatee_client::watch_primary(
        etcd,
        manatee_client::ShardKeys::new(&config.manatee_shard),
        Some(config.manatee_database.clone()),
        shutdown.child_token(),
    );
    start_following(config, primary, shutdown).await
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
    let grpc = config.grpc.clone();
    let credentials = pool::Credentials {
        // A Manatee shard's URLs name the superuser; Moray connects as its own role.
        user: (!config.manatee_endpoints().is_empty()).then(|| config.manatee_user.clone()),
        password: config
            .postgres_password()
            .map_err(|reason| MorayError::invalid_argument("postgres_password_file", reason))?,
    };
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
            credentials: credentials.clone(),
        },
        shutdown.clone(),
    );
    let startup_deadline = Duration::from_millis(config.default_timeout_ms);
    let initial = primary.borrow().clone();
    let mut retry_now = false;
    if let Some(url) = initial {
        if let Err(e) = ensure_database(&url, &credentials, startup_deadline).await {
            tracing::warn!(error = %e, "cannot check for (or create) Moray's database");
        }
        match set_up_schema(&pool, startup_deadline).await {
            Ok(()) => {}
            // On a Manatee shard the primary's sitter makes Moray's role and database
            // when it takes over, which may be just after Moray sees it: keep trying.
            Err(e) if credentials.user.is_some() => {
                tracing::warn!(error = %e, "cannot set up Moray's tables yet; retrying");
                retry_now = true;
            }
            Err(e) => return Err(e),
        }
    }
    tokio::spawn(follow_schema(
        pool.clone(),
        primary,
        credentials,
        retry_now,
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
        triton_common::grpc::serve(listener, routes, &[SERVICE_NAME], &grpc, shutdown)
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
    credentials: pool::Credentials,
    mut retry_now: bool,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    loop {
        if !retry_now {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = primary.changed() => if changed.is_err() { return },
            }
        }
        retry_now = false;
        loop {
            let url = primary.borrow().clone();
            let Some(url) = url else { break };
            if let Err(e) = ensure_database(&url, &credentials, timeout).await {
                tracing::warn!(error = %e, "cannot check for (or create) Moray's database on the new primary");
            }
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

/// Creates the database `url` names when it does not exist, connecting to the same server's
/// `postgres` database (a new Manatee shard has only that one). Best effort: a failure is
/// reported, and connecting to the database then says what is wrong.
async fn ensure_database(
    url: &str,
    credentials: &pool::Credentials,
    timeout: Duration,
) -> Result<(), MorayError> {
    use std::str::FromStr;
    let mut config =
        tokio_postgres::Config::from_str(url).map_err(|e| MorayError::NoDatabasePeers {
            reason: format!("invalid PostgreSQL URL {}: {e}", pool::redact(url)),
        })?;
    let Some(database) = config.get_dbname().map(str::to_string) else {
        return Ok(());
    };
    if database == "postgres" {
        return Ok(());
    }
    credentials.apply(&mut config);
    config.dbname("postgres").connect_timeout(timeout);
    let work = async {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
            .await?
            .is_some();
        if !exists {
            let quoted = format!("\"{}\"", database.replace('"', "\"\""));
            match client
                .batch_execute(&format!("CREATE DATABASE {quoted}"))
                .await
            {
                Ok(()) => tracing::info!(%database, "created Moray's database"),
                // Another Moray created it meanwhile.
                Err(e)
                    if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
                Err(e) => return Err(e),
            }
        }
        Ok::<(), tokio_postgres::Error>(())
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r.map_err(MorayError::from),
        Err(_) => Err(MorayError::QueryTimeout {
            timeout_ms: timeout.as_millis() as u64,
        }),
    }
}
