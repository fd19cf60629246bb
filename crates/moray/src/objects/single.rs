//! One object: put, get and delete, alone or in an open transaction.

use tokio_postgres::types::ToSql;
use triton_proto::moray::v1 as pb;

use crate::error::MorayError;
use crate::pool::PooledConn;
use crate::store::{Store, now_ms};

use super::rows::{column_values, row_to_object, vnode_of};
use super::{EtagCondition, PUT_ATTEMPTS, Put, check_key, etag_condition, etag_of};

impl Store {
    /// [`Store::put_in`] for a put that commits by itself (no open transaction), where
    /// a unique violation is tried once more. Two puts creating the same key at once can
    /// both pass `ON CONFLICT (_key)`'s check, and the loser may then trip over another
    /// unique index (one holding a copy of the key, say) before the key's own: its second
    /// statement sees the winner's committed row and gets the answer a lone put gets (an
    /// etag conflict, or an update). A real clash with another key fails again.
    pub(super) async fn put_alone(
        &self,
        conn: &mut PooledConn,
        put: Put<'_>,
    ) -> Result<String, MorayError> {
        match self.put_in(conn, put).await {
            Err(MorayError::UniqueAttribute { .. }) => self.put_in(conn, put).await,
            r => r,
        }
    }

    pub(crate) async fn put_in(
        &self,
        conn: &mut PooledConn,
        put: Put<'_>,
    ) -> Result<String, MorayError> {
        let Put {
            bucket: bucket_name,
            key,
            raw,
            value,
            etag,
        } = put;
        check_key(key)?;
        let new_etag = etag_of(raw);
        let mtime = now_ms();
        let vnode = vnode_of(value);
        for attempt in 0..PUT_ATTEMPTS {
            let bucket = self.bucket_for_try(conn, bucket_name, attempt).await?;
            let columns = column_values(&bucket, value)?;
            let rver: Option<i32> = bucket
                .versioned()
                .then(|| i32::try_from(bucket.config.options.version).unwrap_or(i32::MAX));
            let sql = match etag {
                None => &bucket.sql.put,
                Some(None) => &bucket.sql.put_if_absent,
                Some(Some(_)) => &bucket.sql.put_if_match,
            };
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![
                &bucket.name,
                &bucket.token,
                &key,
                &raw,
                &new_etag,
                &mtime,
                &vnode,
                &rver,
            ];
            for c in &columns {
                params.push(c);
            }
            let expected = etag.clone().flatten();
            if let Some(e) = &expected {
                params.push(e);
            }
            let result = async {
                let stmt = conn.prepare(sql).await?;
                Ok::<_, MorayError>(conn.client.query_opt(&stmt, &params).await?)
            }
            .await;
            match result {
                Ok(Some(_)) => return Ok(new_etag),
                Ok(None) => {}
                Err(e)
                    if attempt + 1 < PUT_ATTEMPTS && self.schema_changed(&e, conn, bucket_name) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
            // Nothing written: the config changed, or the etag did not match.
            let diagnose = format!(
                "SELECT (SELECT mtime::text FROM buckets_config WHERE name = $1::text), (SELECT _etag FROM {} WHERE _key = $2::text)",
                bucket.table
            );
            let stmt = conn.prepare(&diagnose).await?;
            let row = conn.client.query_one(&stmt, &[&bucket.name, &key]).await?;
            let token: Option<String> = row.try_get(0)?;
            let actual: Option<String> = row.try_get(1)?;
            match token {
                None => {
                    self.cache.invalidate(bucket_name);
                    return Err(MorayError::BucketNotFound {
                        bucket: bucket_name.to_string(),
                    });
                }
                Some(t) if t != bucket.token => {
                    self.cache.invalidate(bucket_name);
                    continue;
                }
                Some(_) => {}
            }
            let conflict = match (etag, &actual) {
                (Some(None), Some(_)) => true,
                (Some(Some(e)), Some(a)) => a != e,
                (Some(Some(_)), None) => true,
                // The object changed in between in a way that now satisfies the condition.
                _ => false,
            };
            if conflict {
                return Err(MorayError::EtagConflict {
                    bucket: bucket_name.to_string(),
                    key: key.to_string(),
                    expected: expected.unwrap_or_else(|| "null".into()),
                    actual: actual.unwrap_or_else(|| "null".into()),
                });
            }
        }
        Err(MorayError::Internal(format!(
            "put of {bucket_name}/{key} did not settle: the bucket config or object kept changing"
        )))
    }

    pub(crate) async fn delete_in(
        &self,
        conn: &mut PooledConn,
        bucket_name: &str,
        key: &str,
        etag: &EtagCondition,
    ) -> Result<(), MorayError> {
        check_key(key)?;
        let mtime = now_ms();
        let not_found = || MorayError::ObjectNotFound {
            bucket: bucket_name.to_string(),
            key: key.to_string(),
        };
        let conflict = |expected: &str, actual: String| MorayError::EtagConflict {
            bucket: bucket_name.to_string(),
            key: key.to_string(),
            expected: expected.to_string(),
            actual,
        };
        for attempt in 0..2 {
            let bucket = self.bucket_for_try(conn, bucket_name, attempt).await?;
            let result = async {
                let current = format!("SELECT _etag FROM {} WHERE _key = $1::text", bucket.table);
                match etag {
                    Some(None) => {
                        let stmt = conn.prepare(&current).await?;
                        return match conn.client.query_opt(&stmt, &[&key]).await? {
                            None => Err(not_found()),
                            Some(row) => Err(conflict("null", row.try_get(0)?)),
                        };
                    }
                    None => {
                        let stmt = conn.prepare(&bucket.sql.delete).await?;
                        let params: [&(dyn ToSql + Sync); 3] = [&key, &bucket.name, &mtime];
                        match conn.client.query_opt(&stmt, &params).await? {
                            Some(_) => Ok(()),
                            None => Err(not_found()),
                        }
                    }
                    Some(Some(expected)) => {
                        let stmt = conn.prepare(&bucket.sql.delete_if_match).await?;
                        let params: [&(dyn ToSql + Sync); 4] =
                            [&key, &bucket.name, &mtime, expected];
                        if conn.client.query_opt(&stmt, &params).await?.is_some() {
                            return Ok(());
                        }
                        let stmt = conn.prepare(&current).await?;
                        match conn.client.query_opt(&stmt, &[&key]).await? {
                            None => Err(not_found()),
                            Some(row) => Err(conflict(expected, row.try_get(0)?)),
                        }
                    }
                }
            }
            .await;
            match result {
                Err(e) if attempt == 0 && self.schema_changed(&e, conn, bucket_name) => {}
                r => return r,
            }
        }
        Err(MorayError::Internal("delete did not settle".into()))
    }

    pub(crate) async fn get_in(
        &self,
        conn: &mut PooledConn,
        bucket_name: &str,
        key: &str,
    ) -> Result<pb::MorayObject, MorayError> {
        let (bucket, rows) = self
            .query_bucket(conn, bucket_name, |b| &b.sql.get, &[&key])
            .await?;
        match rows.first() {
            Some(row) => Ok(row_to_object(&bucket, row, None, false)?.0),
            None => Err(MorayError::ObjectNotFound {
                bucket: bucket_name.to_string(),
                key: key.to_string(),
            }),
        }
    }

    pub async fn put_object(
        &self,
        mut req: pb::PutObjectRequest,
    ) -> Result<pb::PutObjectResponse, MorayError> {
        let value = self.parse_value("value", &req.value)?;
        let etag = etag_condition(req.etag.take());
        let timeout = self.timeout(req.options.as_ref().map_or(0, |o| o.timeout_ms));
        let etag = self
            .with_conn(timeout, |mut conn| async move {
                let r = self
                    .put_alone(&mut conn, Put::new(&req, &value, &etag))
                    .await;
                (conn, r)
            })
            .await?;
        self.feed.wrote();
        Ok(pb::PutObjectResponse { etag })
    }

    pub async fn get_object(
        &self,
        req: pb::GetObjectRequest,
    ) -> Result<pb::MorayObject, MorayError> {
        let timeout = self.timeout(req.options.as_ref().map_or(0, |o| o.timeout_ms));
        self.with_conn(timeout, |mut conn| async move {
            let r = self.get_in(&mut conn, &req.bucket, &req.key).await;
            (conn, r)
        })
        .await
    }

    pub async fn delete_object(&self, req: pb::DeleteObjectRequest) -> Result<(), MorayError> {
        let etag = etag_condition(req.etag);
        self.on_conn(req.options.as_ref(), async |conn| {
            self.delete_in(conn, &req.bucket, &req.key, &etag).await
        })
        .await?;
        self.feed.wrote();
        Ok(())
    }
}
