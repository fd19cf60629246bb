//! reindexObjects: rewriting rows not yet indexed at the bucket's version (A6.8).

use tokio_postgres::types::ToSql;
use triton_proto::moray::v1 as pb;

use crate::buckets::{COL_FIRST_INDEX, COL_KEY, COL_VALUE};
use crate::error::MorayError;
use crate::pool::PooledConn;
use crate::store::Store;

use super::rows::{column_values, index_columns, merge_columns};

impl Store {
    /// Rewrites up to `count` rows not yet indexed at the bucket's version (A6.8). When none
    /// is left, clears `reindex_active`, after which the new indexes serve filters.
    pub async fn reindex_objects(
        &self,
        req: pb::ReindexObjectsRequest,
    ) -> Result<pb::ReindexObjectsResponse, MorayError> {
        if req.count < 1 {
            return Err(MorayError::invalid_argument("count", "must be at least 1"));
        }
        self.on_tx(req.options.as_ref(), async |conn| {
            self.reindex_in(conn, &req.bucket, req.count, req.no_count)
                .await
        })
        .await
    }

    async fn reindex_in(
        &self,
        conn: &mut PooledConn,
        bucket_name: &str,
        count: u32,
        no_count: bool,
    ) -> Result<pb::ReindexObjectsResponse, MorayError> {
        // Lock the config row first: an UpdateBucket waits for this batch, and this batch
        // sees the config that is current.
        conn.client
            .execute(
                "SELECT 1 FROM buckets_config WHERE name = $1::text FOR SHARE",
                &[&bucket_name],
            )
            .await?;
        let bucket = self.load_bucket(conn, bucket_name).await?;
        if !bucket.is_reindexing() {
            return Ok(pb::ReindexObjectsResponse {
                processed: 0,
                remaining: (!no_count).then_some(0),
            });
        }
        let version = i32::try_from(bucket.config.options.version).unwrap_or(i32::MAX);
        let stale = "(_rver IS NULL OR _rver < $1::int4)";
        let sql = format!(
            "SELECT {} FROM {} WHERE {stale} ORDER BY _id LIMIT $2::int8 FOR UPDATE",
            bucket.sql.select, bucket.table
        );
        let rows = conn
            .client
            .query(&sql, &[&version, &i64::from(count)])
            .await?;
        let mut set = vec![
            "_value = $2::text".to_string(),
            "_rver = $3::int4".to_string(),
        ];
        for (i, c) in bucket.columns.iter().enumerate() {
            set.push(format!("{} = ${}{}", c.ident, 4 + i, c.ty.param_cast()));
        }
        let update = format!(
            "UPDATE {} SET {} WHERE _key = $1::text",
            bucket.table,
            set.join(", ")
        );
        let update = conn.prepare(&update).await?;
        for row in &rows {
            let key: String = row.try_get(COL_KEY)?;
            let raw: String = row.try_get(COL_VALUE)?;
            let columns = index_columns(row, &bucket, COL_FIRST_INDEX)?;
            let (merged, map) = merge_columns(&bucket, raw, columns, true);
            let map = map.unwrap_or_default();
            let values = column_values(&bucket, &map).map_err(|e| match e {
                MorayError::InvalidIndexType {
                    field,
                    index_type,
                    reason,
                } => MorayError::InvalidIndexType {
                    field,
                    index_type,
                    reason: format!("{reason} (object {key}, while reindexing)"),
                },
                e => e,
            })?;
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&key, &merged, &version];
            for v in &values {
                params.push(v);
            }
            conn.client.execute(&update, &params).await?;
        }
        if rows.is_empty() {
            conn.client
                .execute(
                    "UPDATE buckets_config SET reindex_active = '{}', mtime = clock_timestamp() WHERE name = $1::text",
                    &[&bucket.name],
                )
                .await?;
            self.cache.invalidate(bucket_name);
        }
        let remaining = if no_count {
            None
        } else {
            let row = conn
                .client
                .query_one(
                    &format!("SELECT count(*) FROM {} WHERE {stale}", bucket.table),
                    &[&version],
                )
                .await?;
            Some(u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0))
        };
        Ok(pb::ReindexObjectsResponse {
            processed: rows.len() as u64,
            remaining,
        })
    }
}
