//! The PostgreSQL connection pool.
//!
//! - A fixed maximum of connections, enforced by a semaphore; a request waits for one at
//!   most until its deadline, and no more than `max_queue` requests wait at once (beyond
//!   that the pool answers `NoDatabasePeersError` at once, as Triton's overloaded pool does).
//! - The database URL comes from a `watch` channel: standalone mode sends one fixed URL; a
//!   follower of Manatee's cluster state sends the current primary's. When it changes, idle
//!   connections are closed and busy ones are closed when they come back (every connection
//!   remembers the URL it was opened to and is reused only while that is the target), so
//!   every new request goes to the new primary. When it is `None`, requests fail at once with
//!   `NoDatabasePeersError`, which clients treat as retryable.
//! - A connection that broke (closed by the server, i/o error) is noticed when it is taken
//!   or returned and replaced by a new one on demand. A connection whose request was
//!   abandoned mid-flight (timeout, client gone) is closed and its query cancelled on the
//!   server, rather than returned in an unknown state.
//! - Each connection caches its prepared statements by SQL text.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_postgres::{Client, NoTls, Statement};
use tokio_util::sync::CancellationToken;

use crate::error::MorayError;

/// Prepared statements kept per connection; past this the cache is cleared (statements
/// are keyed by SQL text, which changes when a bucket's indexes change).
const MAX_CACHED_STATEMENTS: usize = 512;

#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_connections: usize,
    pub max_queue: usize,
    pub connect_timeout: Duration,
    pub credentials: Credentials,
}

/// Who Moray connects as, laid over the target URL: a user that replaces the URL's (the
/// Manatee shard's URLs name the superuser) and a password kept out of every URL, so out
/// of logs and errors.
#[derive(Clone, Default)]
pub struct Credentials {
    pub user: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Credentials {
    pub fn apply(&self, config: &mut tokio_postgres::Config) {
        if let Some(user) = &self.user {
            config.user(user);
        }
        if let Some(password) = &self.password {
            config.password(password);
        }
    }

    /// The URL as connected to, with the user replaced, for logs and errors.
    pub fn shown(&self, url: &str) -> String {
        let url = redact(url);
        let Some(user) = &self.user else {
            return url;
        };
        match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}{user}{}", &url[..s + 3], &url[at..]),
            _ => url,
        }
    }
}

#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    target: watch::Receiver<Option<String>>,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    idle: Mutex<Vec<Conn>>,
    options: PoolOptions,
}

/// One PostgreSQL connection with its statement cache.
pub struct Conn {
    pub client: Client,
    /// The URL this connection was opened to.
    url: String,
    statements: HashMap<String, Statement>,
}

/// A connection taken from the pool; goes back on drop if it is reusable.
pub struct PooledConn {
    conn: Option<Conn>,
    pool: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
    /// False while a request may be mid-flight on the connection; see [`PooledConn::done`].
    clean: bool,
    /// A transaction is open (BEGIN sent, no COMMIT or ROLLBACK completed).
    pub(crate) in_transaction: bool,
    /// Close rather than reuse (see [`PooledConn::discard`]).
    discard: bool,
}

impl Pool {
    /// A pool following `target`; watches it until `shutdown`.
    pub fn new(
        target: watch::Receiver<Option<String>>,
        options: PoolOptions,
        shutdown: CancellationToken,
    ) -> Pool {
        let inner = Arc::new(Inner {
            target: target.clone(),
            permits: Arc::new(Semaphore::new(options.max_connections.max(1))),
            waiting: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            options,
        });
        let weak = Arc::downgrade(&inner);
        let mut rx = target;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    changed = rx.changed() => {
                        if changed.is_err() {
                            break;
                        }
                    }
                }
                let Some(inner) = weak.upgrade() else { break };
                let dropped = std::mem::take(&mut *lock(&inner.idle));
                let url = rx.borrow().as_deref().map(redact);
                tracing::info!(primary = ?url, closed = dropped.len(), "database target changed");
            }
        });
        Pool { inner }
    }

    /// The current target URL, if any.
    pub fn target(&self) -> Option<String> {
        self.inner.target.borrow().clone()
    }

    /// Takes a connection, waiting until `deadline` at most.
    pub async fn get(&self, deadline: Instant) -> Result<PooledConn, MorayError> {
        let inner = &self.inner;
        if inner.target.borrow().is_none() {
            return Err(MorayError::NoDatabasePeers {
                reason: "no primary is known".into(),
            });
        }
        let permit = match inner.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let waiting = inner.waiting.fetch_add(1, Ordering::AcqRel);
                let _undo = Decrement(&inner.waiting);
                if waiting >= inner.options.max_queue {
                    return Err(MorayError::NoDatabasePeers {
                        reason: format!(
                            "overloaded: {waiting} requests already wait for one of {} connections",
                            inner.options.max_connections
                        ),
                    });
                }
                match tokio::time::timeout_at(deadline, inner.permits.clone().acquire_owned()).await
                {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => {
                        return Err(MorayError::Internal("the pool is closed".into()));
                    }
                    Err(_) => {
                        return Err(MorayError::NoDatabasePeers {
                            reason: format!(
                                "overloaded: no connection of {} became free in time",
                                inner.options.max_connections
                            ),
                        });
                    }
                }
            }
        };
        loop {
            let candidate = lock(&inner.idle).pop();
            let current = |c: &Conn| inner.target.borrow().as_deref() == Some(c.url.as_str());
            match candidate {
                Some(c) if current(&c) && !c.client.is_closed() => {
                    return Ok(PooledConn {
                        conn: Some(c),
                        pool: inner.clone(),
                        _permit: permit,
                        clean: false,
                        in_transaction: false,
                        discard: false,
                    });
                }
                Some(_) => continue,
                None => break,
            }
        }
        let Some(url) = inner.target.borrow().clone() else {
            return Err(MorayError::NoDatabasePeers {
                reason: "no primary is known".into(),
            });
        };
        let shown = redact(&url);
        let conn = tokio::time::timeout_at(deadline, connect(url, &inner.options))
            .await
            .map_err(|_| MorayError::NoDatabasePeers {
                reason: format!("connecting to {shown} took too long"),
            })??;
        Ok(PooledConn {
            conn: Some(conn),
            pool: inner.clone(),
            _permit: permit,
            clean: false,
            in_transaction: false,
            discard: false,
        })
    }

    /// Connections open and idle (for tests and metrics).
    pub fn idle_count(&self) -> usize {
        lock(&self.inner.idle).len()
    }
}

struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

async fn connect(url: String, options: &PoolOptions) -> Result<Conn, MorayError> {
    let mut config =
        tokio_postgres::Config::from_str(&url).map_err(|e| MorayError::NoDatabasePeers {
            reason: format!("invalid PostgreSQL URL {}: {e}", redact(&url)),
        })?;
    options.credentials.apply(&mut config);
    let shown = options.credentials.shown(&url);
    config
        .connect_timeout(options.connect_timeout)
        .application_name("moray")
        // Dates are read and written in UTC, and text timestamps in ISO form. Values
        // over ~2 kB (a job with its chain) are compressed with lz4, not pglz: pglz
        // was a visible share of PostgreSQL's CPU under load (docs/benchmarks.md).
        .options("-c TimeZone=UTC -c DateStyle=ISO -c default_toast_compression=lz4");
    let (client, connection) =
        config
            .connect(NoTls)
            .await
            .map_err(|e| MorayError::NoDatabasePeers {
                reason: format!(
                    "cannot connect to {shown}: {}",
                    match e.as_db_error() {
                        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
                        None => match std::error::Error::source(&e) {
                            Some(cause) => format!("{e}: {cause}"),
                            None => e.to_string(),
                        },
                    }
                ),
            })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(Conn {
        client,
        url,
        statements: HashMap::new(),
    })
}

impl Conn {
    /// The prepared statement for `sql`, preparing it on first use.
    pub async fn prepare(&mut self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await?;
        if self.statements.len() >= MAX_CACHED_STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    /// Forgets prepared statements (after the schema they were planned on changed).
    pub fn forget_statements(&mut self) {
        self.statements.clear();
    }
}

impl PooledConn {
    /// Marks the request done: nothing is in flight and no transaction is open, so the
    /// connection can be reused. Without this, dropping the connection closes it.
    pub fn done(&mut self) {
        self.clean = true;
    }

    /// Closes the connection (cancelling what runs on it) instead of reusing it, e.g. when
    /// a find's client went away with rows still coming.
    pub fn discard(&mut self) {
        self.discard = true;
    }
}

// `conn` is taken only in `drop`, so it is there whenever the guard is used.
#[allow(clippy::expect_used)]
impl std::ops::Deref for PooledConn {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
            .as_ref()
            .expect("a pooled connection holds its connection until dropped")
    }
}

#[allow(clippy::expect_used)]
impl std::ops::DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .expect("a pooled connection holds its connection until dropped")
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if !self.clean || self.in_transaction || self.discard {
            // Something may still run on the server: cancel it, then close the connection.
            if !conn.client.is_closed() {
                let token = conn.client.cancel_token();
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move {
                        let _ = token.cancel_query(NoTls).await;
                    });
                }
            }
            return;
        }
        let current = self.pool.target.borrow().as_deref() == Some(conn.url.as_str());
        if current && !conn.client.is_closed() {
            lock(&self.pool.idle).push(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("host=x"), "host=x");
    }

    #[tokio::test]
    async fn no_target_fails_fast() {
        let (_tx, rx) = watch::channel(None);
        let pool = Pool::new(
            rx,
            PoolOptions {
                max_connections: 2,
                max_queue: 10,
                connect_timeout: Duration::from_secs(1),
                credentials: Credentials::default(),
            },
            CancellationToken::new(),
        );
        let started = std::time::Instant::now();
        let err = pool
            .get(Instant::now() + Duration::from_secs(10))
            .await
            .err()
            .expect("no target");
        assert!(matches!(err, MorayError::NoDatabasePeers { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
