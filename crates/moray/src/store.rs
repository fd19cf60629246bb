//! The state every request shares ([`Store`]): the pool, the bucket cache, the change feed
//! and the limits; plus what every operation needs: deadlines, transactions, loading
//! bucket configs.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tokio::time::Instant;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use triton_proto::moray::v1 as pb;

use crate::buckets::{Bucket, BucketCache};
use crate::config::Config;
use crate::error::MorayError;
use crate::feed::Feed;
use crate::pool::{Pool, PooledConn};

pub struct Store {
    pub pool: Pool,
    pub cache: BucketCache,
    pub feed: Arc<Feed>,
    pub config: Config,
}

const LOAD_BUCKET: &str = "SELECT name, index, options, reindex_active, mtime::text FROM buckets_config WHERE name = $1::text";

/// SQLSTATEs that mean "the statement was planned on a schema that changed": the bucket
/// config is re-read and the statement retried once.
pub fn is_stale_schema(e: &MorayError) -> bool {
    matches!(e, MorayError::Database { code, .. }
        if matches!(code.as_str(), "42703" | "42P01" | "0A000" | "42804" | "26000"))
}

/// Epoch milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Store {
    /// The request's timeout: its own, else the configured default.
    pub fn timeout(&self, timeout_ms: u32) -> Duration {
        if timeout_ms == 0 {
            Duration::from_millis(self.config.default_timeout_ms)
        } else {
            Duration::from_millis(u64::from(timeout_ms))
        }
    }

    /// Runs `op` with a connection, all within `timeout`. On timeout the connection is
    /// closed and its query cancelled (see the pool), and `QueryTimeoutError` returned.
    pub async fn with_conn<T, F, Fut>(&self, timeout: Duration, op: F) -> Result<T, MorayError>
    where
        F: FnOnce(PooledConn) -> Fut,
        Fut: Future<Output = (PooledConn, Result<T, MorayError>)>,
    {
        let deadline = Instant::now() + timeout;
        let work = async {
            let conn = self.pool.get(deadline).await?;
            let (mut conn, result) = op(conn).await;
            conn.done();
            result
        };
        match tokio::time::timeout_at(deadline, work).await {
            Ok(r) => r,
            Err(_) => Err(MorayError::QueryTimeout {
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    /// [`Store::with_conn`] for an `op` that borrows the connection, within the request's
    /// timeout (`options`, else the default).
    pub async fn on_conn<T>(
        &self,
        options: Option<&pb::RequestOptions>,
        op: impl AsyncFnOnce(&mut PooledConn) -> Result<T, MorayError>,
    ) -> Result<T, MorayError> {
        let timeout = self.timeout(options.map_or(0, |o| o.timeout_ms));
        self.with_conn(timeout, async move |mut conn| {
            let r = op(&mut conn).await;
            (conn, r)
        })
        .await
    }

    /// [`Store::on_conn`] in a transaction: `BEGIN`, then COMMIT when `op` succeeds, else
    /// ROLLBACK (see [`finish`]).
    pub async fn on_tx<T>(
        &self,
        options: Option<&pb::RequestOptions>,
        op: impl AsyncFnOnce(&mut PooledConn) -> Result<T, MorayError>,
    ) -> Result<T, MorayError> {
        self.on_conn(options, async move |conn| {
            begin(conn, "BEGIN").await?;
            let r = op(conn).await;
            finish(conn, r).await
        })
        .await
    }

    /// The bucket's config, from the cache when fresh.
    pub async fn bucket(
        &self,
        conn: &mut PooledConn,
        name: &str,
    ) -> Result<Arc<Bucket>, MorayError> {
        if let Some(b) = self.cache.get(name) {
            return Ok(b);
        }
        self.load_bucket(conn, name).await
    }

    /// The bucket's config for try `attempt` of a statement retried on a stale schema
    /// ([`Store::schema_changed`]): the cached one first, then the one read now.
    pub async fn bucket_for_try(
        &self,
        conn: &mut PooledConn,
        name: &str,
        attempt: usize,
    ) -> Result<Arc<Bucket>, MorayError> {
        if attempt == 0 {
            self.bucket(conn, name).await
        } else {
            self.load_bucket(conn, name).await
        }
    }

    /// The rows of bucket `name`'s statement `sql` (picked from its config) with
    /// `params`, run with the cached config and, when the schema changed under it
    /// ([`Store::schema_changed`]), once more with the config read now; with the config
    /// they were read with.
    pub async fn query_bucket(
        &self,
        conn: &mut PooledConn,
        name: &str,
        sql: fn(&Bucket) -> &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<(Arc<Bucket>, Vec<Row>), MorayError> {
        for attempt in 0..2 {
            let bucket = self.bucket_for_try(conn, name, attempt).await?;
            let result = async {
                let stmt = conn.prepare(sql(&bucket)).await?;
                Ok::<_, MorayError>(conn.client.query(&stmt, params).await?)
            }
            .await;
            match result {
                Ok(rows) => return Ok((bucket, rows)),
                Err(e) if attempt == 0 && self.schema_changed(&e, conn, name) => {}
                Err(e) => return Err(e),
            }
        }
        Err(MorayError::Internal(format!(
            "{name}: the schema kept changing"
        )))
    }

    /// Whether `e` says a statement on bucket `name` was planned on a schema that changed
    /// under it; if so the cached config and the connection's prepared statements are
    /// dropped, so that the next try starts afresh.
    pub fn schema_changed(&self, e: &MorayError, conn: &mut PooledConn, name: &str) -> bool {
        let stale = is_stale_schema(e);
        if stale {
            self.cache.invalidate(name);
            conn.forget_statements();
        }
        stale
    }

    /// The bucket's config read now (and cached).
    pub async fn load_bucket(
        &self,
        conn: &mut PooledConn,
        name: &str,
    ) -> Result<Arc<Bucket>, MorayError> {
        let stmt = conn.prepare(LOAD_BUCKET).await?;
        let Some(row) = conn.client.query_opt(&stmt, &[&name]).await? else {
            self.cache.invalidate(name);
            return Err(MorayError::BucketNotFound {
                bucket: name.to_string(),
            });
        };
        let bucket = Arc::new(Bucket::from_row(
            row.try_get(0)?,
            row.try_get::<_, &str>(1)?,
            row.try_get::<_, Option<&str>>(2)?,
            row.try_get::<_, Option<&str>>(3)?,
            row.try_get(4)?,
        )?);
        self.cache.insert(bucket.clone());
        Ok(bucket)
    }

    /// Checks an object value: within `max_value_bytes`, valid JSON, an object.
    pub fn parse_value(&self, field: &str, raw: &str) -> Result<Map<String, Value>, MorayError> {
        if raw.len() > self.config.max_value_bytes {
            return Err(MorayError::ValueTooLarge {
                field: field.to_string(),
                size: raw.len(),
                limit: self.config.max_value_bytes,
            });
        }
        match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(other) => Err(MorayError::invalid_argument(
                field,
                format!("must be a JSON object, not {}", json_kind(&other)),
            )),
            Err(e) => Err(MorayError::invalid_argument(
                field,
                format!("is not valid JSON: {e}"),
            )),
        }
    }
}

pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `BEGIN ...` on the connection.
pub async fn begin(conn: &mut PooledConn, statement: &str) -> Result<(), MorayError> {
    conn.in_transaction = true;
    conn.client.batch_execute(statement).await?;
    Ok(())
}

/// COMMIT when `result` is Ok, else ROLLBACK; returns `result` (or the COMMIT's error).
pub async fn finish<T>(
    conn: &mut PooledConn,
    result: Result<T, MorayError>,
) -> Result<T, MorayError> {
    match result {
        Ok(v) => match conn.client.batch_execute("COMMIT").await {
            Ok(()) => {
                conn.in_transaction = false;
                Ok(v)
            }
            Err(e) => {
                // A failed COMMIT ends the transaction; a lost connection is discarded anyway.
                conn.in_transaction = false;
                Err(e.into())
            }
        },
        Err(e) => {
            if conn.client.batch_execute("ROLLBACK").await.is_ok() {
                conn.in_transaction = false;
            }
            Err(e)
        }
    }
}
