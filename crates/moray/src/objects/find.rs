//! findObjects: find options, the filter and the rows streamed back.

use serde_json::Map;
use tokio::sync::mpsc;
use tokio_postgres::types::Type;
use triton_proto::moray::v1 as pb;

use crate::buckets::{Bucket, COL_FIRST_INDEX};
use crate::compile;
use crate::error::MorayError;
use crate::filter;
use crate::pool::PooledConn;
use crate::store::Store;

use super::DEFAULT_LIMIT;
use super::rows::row_to_object;

/// Parsed find options.
pub struct FindOpts {
    pub limit: Option<u64>,
    pub offset: u64,
    pub sort: Vec<(String, String)>,
    pub no_limit: bool,
    pub no_count: bool,
    pub require_indexes: bool,
}

impl From<Option<pb::FindOptions>> for FindOpts {
    fn from(o: Option<pb::FindOptions>) -> FindOpts {
        let o = o.unwrap_or_default();
        FindOpts {
            limit: o.limit.filter(|l| *l > 0),
            offset: o.offset,
            sort: o.sort.into_iter().map(|s| (s.attribute, s.order)).collect(),
            no_limit: o.no_limit,
            no_count: o.no_count,
            require_indexes: o.require_indexes,
        }
    }
}

impl FindOpts {
    pub(super) fn tail(&self, bucket: &Bucket) -> Result<String, MorayError> {
        let mut s = compile::order_by(&bucket.schema, &self.sort)?;
        match self.limit {
            Some(l) => s.push_str(&format!(" LIMIT {l}")),
            None if !self.no_limit => s.push_str(&format!(" LIMIT {DEFAULT_LIMIT}")),
            None => {}
        }
        if self.offset > 0 {
            s.push_str(&format!(" OFFSET {}", self.offset));
        }
        Ok(s)
    }
}

pub(super) fn parse_filter(text: &str) -> Result<filter::Filter, MorayError> {
    filter::parse(text).map_err(|e| MorayError::invalid_query(text, e.0))
}

/// The connection's prepared statement for a find's SQL (prepared on first use), so that
/// PostgreSQL parses and plans a filter shape once per connection rather than per call.
/// None (run the SQL unprepared, its parameters typed text) for a find with an offset
/// (paging would fill the cache with one statement per page), when preparing fails (the
/// unprepared run then reports the error) or when PostgreSQL inferred a parameter type
/// other than text (the parameters are text).
async fn find_statement(
    conn: &mut PooledConn,
    sql: &str,
    opts: &FindOpts,
) -> Option<tokio_postgres::Statement> {
    if opts.offset > 0 {
        return None;
    }
    let stmt = conn.prepare(sql).await.ok()?;
    stmt.params()
        .iter()
        .all(|t| *t == Type::TEXT)
        .then_some(stmt)
}

/// A find's rows go to this channel; an error ends the stream.
pub type RowSender = mpsc::Sender<Result<pb::MorayObject, tonic::Status>>;

impl Store {
    /// Streams the objects matching a filter into `tx`.
    pub async fn find_objects(
        &self,
        req: pb::FindObjectsRequest,
        tx: &RowSender,
    ) -> Result<(), MorayError> {
        let opts = FindOpts::from(req.find);
        let filter = parse_filter(&req.filter)?;
        let timeout = self.timeout(req.options.as_ref().map_or(0, |o| o.timeout_ms));
        let (bucket_name, sql_only) = (req.bucket, req.sql_only);
        self.with_conn(timeout, |mut conn| async move {
            let r = self
                .find_in(&mut conn, &bucket_name, &filter, &opts, sql_only, tx)
                .await;
            (conn, r)
        })
        .await
    }

    pub(crate) async fn find_in(
        &self,
        conn: &mut PooledConn,
        bucket_name: &str,
        filter: &filter::Filter,
        opts: &FindOpts,
        sql_only: bool,
        tx: &RowSender,
    ) -> Result<(), MorayError> {
        use futures::TryStreamExt;
        for attempt in 0..2 {
            let bucket = self.bucket_for_try(conn, bucket_name, attempt).await?;
            if opts.require_indexes {
                compile::check_usable(&bucket.schema, filter)?;
            }
            let query = compile::compile(&bucket.schema, filter, 1)?;
            let mut select = bucket.sql.select.clone();
            if !opts.no_count {
                select.push_str(", count(1) OVER () AS _count");
            }
            for c in &query.residual_columns {
                select.push_str(", ");
                select.push_str(c);
            }
            let sql = format!(
                "SELECT {select} FROM {} WHERE {} {}",
                bucket.table,
                query.where_sql,
                opts.tail(&bucket)?
            );
            if sql_only {
                let value = serde_json::json!({"query": sql, "args": query.params}).to_string();
                let _ = tx
                    .send(Ok(pb::MorayObject {
                        bucket: bucket.name.clone(),
                        value,
                        ..Default::default()
                    }))
                    .await;
                return Ok(());
            }
            let count_at = COL_FIRST_INDEX + bucket.columns.len();
            let residual_at = count_at + usize::from(!opts.no_count);
            let mut sent_any = false;
            let result: Result<(), MorayError> = async {
                let rows = match find_statement(conn, &sql, opts).await {
                    Some(stmt) => conn.client.query_raw(&stmt, query.params.iter()).await?,
                    None => {
                        conn.client
                            .query_typed_raw(&sql, query.params.iter().map(|p| (p, Type::TEXT)))
                            .await?
                    }
                };
                let mut rows = std::pin::pin!(rows);
                while let Some(row) = rows.try_next().await? {
                    let count = if opts.no_count {
                        None
                    } else {
                        Some(u64::try_from(row.try_get::<_, i64>(count_at)?).unwrap_or(0))
                    };
                    let (object, map) =
                        row_to_object(&bucket, &row, count, query.residual.is_some())?;
                    if let Some(residual) = &query.residual {
                        let columns = (0..query.residual_columns.len())
                            .map(|i| row.try_get::<_, bool>(residual_at + i))
                            .collect::<Result<Vec<_>, _>>()?;
                        let empty = Map::new();
                        if !compile::eval(residual, map.as_ref().unwrap_or(&empty), &columns) {
                            continue;
                        }
                    }
                    sent_any = true;
                    if tx.send(Ok(object)).await.is_err() {
                        // The client went away: stop reading; the connection is not reused
                        // with rows still in flight.
                        conn.discard();
                        return Ok(());
                    }
                }
                Ok(())
            }
            .await;
            match result {
                Err(e)
                    if attempt == 0 && !sent_any && self.schema_changed(&e, conn, bucket_name) => {}
                r => return r,
            }
        }
        Err(MorayError::Internal("find did not settle".into()))
    }
}
