//! updateObjects and deleteMany: writes to every row a filter matches.

use serde_json::{Map, Value};
use tokio_postgres::types::ToSql;
use triton_proto::moray::v1 as pb;

use crate::compile;
use crate::error::MorayError;
use crate::pool::PooledConn;
use crate::store::{Store, json_kind, now_ms};
use crate::types::coerce;

use super::find::{FindOpts, parse_filter};
use super::rows::{index_columns, index_type_error, merge_columns};

impl Store {
    /// updateObjects in the transaction open on `conn`: sets indexed columns of the rows
    /// matching the filter (A6.5). Returns (count, etag).
    pub(crate) async fn update_in(
        &self,
        conn: &mut PooledConn,
        bucket_name: &str,
        fields_json: &str,
        filter_text: &str,
        opts: &FindOpts,
    ) -> Result<(u64, String), MorayError> {
        let filter = parse_filter(filter_text)?;
        let fields: Map<String, Value> = match serde_json::from_str::<Value>(fields_json) {
            Ok(Value::Object(m)) => m,
            Ok(other) => {
                return Err(MorayError::invalid_argument(
                    "fields",
                    format!("must be a JSON object, not {}", json_kind(&other)),
                ));
            }
            Err(e) => {
                return Err(MorayError::invalid_argument(
                    "fields",
                    format!("is not valid JSON: {e}"),
                ));
            }
        };
        if fields.is_empty() {
            return Err(MorayError::FieldUpdate(
                "fields must set at least one indexed field".into(),
            ));
        }
        let bucket = self.load_bucket(conn, bucket_name).await?;
        compile::check_usable(&bucket.schema, &filter)?;
        let etag = format!("u{}", &uuid::Uuid::new_v4().simple().to_string()[..7]);
        let mtime = now_ms();
        let mut sets = vec![
            "_etag = $1::text".to_string(),
            "_mtime = $2::int8".to_string(),
        ];
        let mut values = Vec::new();
        for (field, v) in &fields {
            let Some(column) = bucket
                .columns
                .iter()
                .find(|c| &c.field == field && !c.reindexing)
            else {
                let reindexing = bucket.schema.reindexing.contains(field);
                return Err(MorayError::NotIndexed {
                    bucket: bucket.name.clone(),
                    filter: format!("fields.{field}"),
                    unindexed: if reindexing {
                        vec![]
                    } else {
                        vec![field.clone()]
                    },
                    reindexing: if reindexing {
                        vec![field.clone()]
                    } else {
                        vec![]
                    },
                });
            };
            if v.is_null() {
                return Err(MorayError::NotNullable {
                    field: field.clone(),
                });
            }
            let cv = coerce(column.ty, Some(v)).map_err(|r| index_type_error(&bucket, field, r))?;
            values.push(cv);
            sets.push(format!(
                "{} = ${}{}",
                column.ident,
                2 + values.len(),
                column.ty.param_cast()
            ));
        }
        let query = compile::compile(&bucket.schema, &filter, 3 + values.len())?;
        let returning: Vec<String> = bucket
            .columns
            .iter()
            .map(|c| format!("o.{}", c.ident))
            .collect();
        let sql = format!(
            "UPDATE {t} AS o SET {sets} WHERE o._id IN (SELECT _id FROM {t} WHERE {w} {tail}) RETURNING o._key, o._value{comma}{ret}",
            t = bucket.table,
            sets = sets.join(", "),
            w = query.where_sql,
            tail = opts.tail(&bucket)?,
            comma = if returning.is_empty() { "" } else { ", " },
            ret = returning.join(", "),
        );
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&etag, &mtime];
        for v in &values {
            params.push(v);
        }
        for p in &query.params {
            params.push(p);
        }
        let rows = conn.client.query(&sql, &params).await?;
        let mut keys = Vec::with_capacity(rows.len());
        let mut merged = Vec::with_capacity(rows.len());
        for row in &rows {
            keys.push(row.try_get::<_, String>(0)?);
            let raw: String = row.try_get(1)?;
            let columns = index_columns(row, &bucket, 2)?;
            merged.push(merge_columns(&bucket, raw, columns, false).0);
        }
        if !keys.is_empty() {
            let stmt = conn
                .prepare(
                    "INSERT INTO moray_changes (bucket, key, op, value, etag, mtime) \
                     SELECT $1::text, k, 1, v, $2::text, $3::int8 FROM unnest($4::text[], $5::text[]) AS u(k, v)",
                )
                .await?;
            conn.client
                .execute(&stmt, &[&bucket.name, &etag, &mtime, &keys, &merged])
                .await?;
        }
        Ok((rows.len() as u64, etag))
    }

    /// deleteMany on `conn` (one statement; inside a batch, in its transaction) (A6.5).
    pub(crate) async fn delete_many_in(
        &self,
        conn: &mut PooledConn,
        bucket_name: &str,
        filter_text: &str,
        opts: &FindOpts,
    ) -> Result<u64, MorayError> {
        let filter = parse_filter(filter_text)?;
        let bucket = self.load_bucket(conn, bucket_name).await?;
        compile::check_usable(&bucket.schema, &filter)?;
        let query = compile::compile(&bucket.schema, &filter, 3)?;
        let sql = format!(
            "WITH del AS (DELETE FROM {t} WHERE _id IN (SELECT _id FROM {t} WHERE {w} {tail}) RETURNING _key, _etag), \
             ch AS (INSERT INTO moray_changes (bucket, key, op, value, etag, mtime) SELECT $1::text, _key, 2, NULL, _etag, $2::int8 FROM del) \
             SELECT count(*) FROM del",
            t = bucket.table,
            w = query.where_sql,
            tail = opts.tail(&bucket)?,
        );
        let mtime = now_ms();
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&bucket.name, &mtime];
        for p in &query.params {
            params.push(p);
        }
        let row = conn.client.query_one(&sql, &params).await?;
        Ok(u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0))
    }

    pub async fn update_objects(
        &self,
        req: pb::UpdateObjectsRequest,
    ) -> Result<pb::UpdateObjectsResponse, MorayError> {
        let opts = FindOpts::from(req.find);
        let (count, etag) = self
            .on_tx(req.options.as_ref(), async |conn| {
                self.update_in(conn, &req.bucket, &req.fields, &req.filter, &opts)
                    .await
            })
            .await?;
        self.feed.wrote();
        Ok(pb::UpdateObjectsResponse { count, etag })
    }

    pub async fn delete_many(
        &self,
        req: pb::DeleteManyRequest,
    ) -> Result<pb::DeleteManyResponse, MorayError> {
        let opts = FindOpts::from(req.find);
        let count = self
            .on_conn(req.options.as_ref(), async |conn| {
                self.delete_many_in(conn, &req.bucket, &req.filter, &opts)
                    .await
            })
            .await?;
        self.feed.wrote();
        Ok(pb::DeleteManyResponse { count })
    }
}
