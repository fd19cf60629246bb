//! PutObjects and GetObjects: many items in one call, pipelined when possible.

use std::sync::Arc;

use serde_json::{Map, Value};
use tokio_postgres::types::ToSql;
use triton_proto::moray::v1 as pb;

use crate::buckets::Bucket;
use crate::error::MorayError;
use crate::pool::PooledConn;
use crate::store::{Store, begin, finish, now_ms};
use crate::types::ColumnValue;

use super::rows::{column_values, row_to_object, vnode_of};
use super::{
    MAX_GET_OBJECTS_KEYS, MAX_PUT_OBJECTS_ITEMS, Put, error_of, etag_condition, etag_of,
    keeps_transaction, object_error, put_result,
};

/// What [`Store::put_pipelined`] did.
enum Pipelined {
    /// Every item written; their etags in the order given.
    Done(Vec<String>),
    /// Nothing sent: the batch needs the item-by-item path.
    NotTried,
    /// Something sent and not every item written; the transaction must be rolled back.
    Failed(MorayError),
}

impl Store {
    /// PutObjects: every item written as [`Store::put_object`] writes it, answered with
    /// its own etag or error. Fast path: all items in one transaction (one commit for
    /// all), in (bucket, key) order so that concurrent calls take row locks in one
    /// order, their statements pipelined (`put_pipelined`); if one of them
    /// writes nothing, the transaction is redone one statement at a time, where an etag
    /// conflict, missing bucket or bad value is that item's result and the others still
    /// commit. If a statement fails (which aborts the transaction,
    /// e.g. a unique index violation), everything is rolled back and every item is
    /// redone as its own put, in request order, so that each outcome is exactly that of
    /// a lone PutObject. A failed BEGIN or COMMIT fails the call.
    pub async fn put_objects(
        &self,
        req: pb::PutObjectsRequest,
    ) -> Result<pb::PutObjectsResponse, MorayError> {
        at_most(
            "requests",
            "items",
            req.requests.len(),
            MAX_PUT_OBJECTS_ITEMS,
        )?;
        if req.requests.is_empty() {
            return Ok(pb::PutObjectsResponse::default());
        }
        let values: Vec<_> = req
            .requests
            .iter()
            .map(|p| self.parse_value("value", &p.value))
            .collect();
        let timeout = self.timeout(req.options.as_ref().map_or(0, |o| o.timeout_ms));
        let items = req.requests;
        let results = self
            .with_conn(timeout, |mut conn| async move {
                let r = self.put_many_in(&mut conn, &items, values).await;
                (conn, r)
            })
            .await;
        // Something may have been written even when the call failed (the fallback
        // commits item by item).
        self.feed.wrote();
        Ok(pb::PutObjectsResponse { results: results? })
    }

    // Every item gets an outcome before the table is read, and `finish` given an error
    // returns an error: the expects state those invariants.
    #[allow(clippy::expect_used, clippy::unwrap_used)]
    async fn put_many_in(
        &self,
        conn: &mut PooledConn,
        items: &[pb::PutObjectRequest],
        values: Vec<Result<Map<String, Value>, MorayError>>,
    ) -> Result<Vec<pb::PutObjectResult>, MorayError> {
        let mut outcomes: Vec<Option<Result<String, pb::ObjectError>>> =
            (0..items.len()).map(|_| None).collect();
        let mut parsed: Vec<Option<Map<String, Value>>> = Vec::with_capacity(items.len());
        for (i, v) in values.into_iter().enumerate() {
            match v {
                Ok(map) => parsed.push(Some(map)),
                Err(e) => {
                    outcomes[i] = Some(Err(error_of(&e)));
                    parsed.push(None);
                }
            }
        }
        // Items to write, in (bucket, key) order; a stable sort keeps puts of one key in
        // request order.
        let mut order: Vec<usize> = (0..items.len()).filter(|&i| parsed[i].is_some()).collect();
        order.sort_by(|&a, &b| {
            (items[a].bucket.as_str(), items[a].key.as_str())
                .cmp(&(items[b].bucket.as_str(), items[b].key.as_str()))
        });
        if !order.is_empty() {
            begin(conn, "BEGIN").await?;
            match self.put_pipelined(conn, items, &parsed, &order).await {
                Pipelined::Done(etags) => {
                    finish(conn, Ok(())).await?;
                    for (&i, etag) in order.iter().zip(etags) {
                        outcomes[i] = Some(Ok(etag));
                    }
                    return Ok(outcomes
                        .into_iter()
                        .map(|o| put_result(o.expect("every item has an outcome")))
                        .collect());
                }
                Pipelined::NotTried => {}
                Pipelined::Failed(e) => {
                    // Start over, one statement at a time, in a new transaction.
                    let e = finish::<()>(conn, Err(e)).await.unwrap_err();
                    if conn.in_transaction || matches!(e, MorayError::ConnectionLost(_)) {
                        return Err(e);
                    }
                    begin(conn, "BEGIN").await?;
                }
            }
            let mut aborted = None;
            for &i in &order {
                let p = &items[i];
                let value = parsed[i].as_ref().expect("only parsed items are written");
                let etag = etag_condition(p.etag.clone());
                match self.put_in(conn, Put::new(p, value, &etag)).await {
                    Ok(etag) => outcomes[i] = Some(Ok(etag)),
                    Err(e) if keeps_transaction(&e) => outcomes[i] = Some(Err(error_of(&e))),
                    Err(e) => {
                        aborted = Some(e);
                        break;
                    }
                }
            }
            match aborted {
                None => finish(conn, Ok(())).await?,
                Some(e) => {
                    let e = finish::<()>(conn, Err(e)).await.unwrap_err();
                    if conn.in_transaction || matches!(e, MorayError::ConnectionLost(_)) {
                        // No usable connection to redo the items on.
                        return Err(e);
                    }
                    // Redo every item alone, as PutObject would (each commits by itself).
                    for &i in &order {
                        outcomes[i] = None;
                    }
                    let mut lost: Option<pb::ObjectError> = None;
                    for i in 0..items.len() {
                        let Some(value) = &parsed[i] else { continue };
                        if let Some(e) = &lost {
                            outcomes[i] = Some(Err(e.clone()));
                            continue;
                        }
                        let p = &items[i];
                        let etag = etag_condition(p.etag.clone());
                        let r = self.put_alone(conn, Put::new(p, value, &etag)).await;
                        if let Err(e @ MorayError::ConnectionLost(_)) = &r {
                            // The items before this one committed and keep their etags.
                            lost = Some(error_of(e));
                        }
                        outcomes[i] = Some(r.map_err(|e| error_of(&e)));
                    }
                }
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| put_result(o.expect("every item has an outcome")))
            .collect())
    }

    /// The common case of PutObjects, fast: every item's bucket config cached and every
    /// item written (no etag conflict): the statements (PutObject's) are sent together,
    /// pipelined on the connection inside the open transaction, so the batch costs one
    /// round trip instead of one per item. Anything else (an item that wrote no row,
    /// e.g. an etag conflict, or a failed statement) is `Failed`, after which the caller
    /// rolls back and goes item by item; `NotTried` when nothing was sent.
    async fn put_pipelined(
        &self,
        conn: &mut PooledConn,
        items: &[pb::PutObjectRequest],
        parsed: &[Option<Map<String, Value>>],
        order: &[usize],
    ) -> Pipelined {
        struct Prepared {
            bucket: Arc<Bucket>,
            stmt: tokio_postgres::Statement,
            columns: Vec<ColumnValue>,
            etag: String,
            vnode: Option<i64>,
            rver: Option<i32>,
            expected: Option<String>,
        }
        let mut prepared = Vec::with_capacity(order.len());
        for &i in order {
            let p = &items[i];
            let Some(value) = &parsed[i] else {
                return Pipelined::NotTried;
            };
            if p.key.is_empty() {
                return Pipelined::NotTried;
            }
            let Some(bucket) = self.cache.get(&p.bucket) else {
                return Pipelined::NotTried;
            };
            let Ok(columns) = column_values(&bucket, value) else {
                return Pipelined::NotTried;
            };
            let etag = etag_condition(p.etag.clone());
            let sql = match etag {
                None => &bucket.sql.put,
                Some(None) => &bucket.sql.put_if_absent,
                Some(Some(_)) => &bucket.sql.put_if_match,
            };
            let stmt = match conn.prepare(sql).await {
                Ok(stmt) => stmt,
                Err(e) => return Pipelined::Failed(e.into()),
            };
            prepared.push(Prepared {
                stmt,
                columns,
                etag: etag_of(&p.value),
                vnode: vnode_of(value),
                rver: bucket
                    .versioned()
                    .then(|| i32::try_from(bucket.config.options.version).unwrap_or(i32::MAX)),
                expected: etag.flatten(),
                bucket,
            });
        }
        let mtime = now_ms();
        let client = &conn.client;
        let writes = prepared.iter().zip(order).map(|(pr, &i)| {
            let p = &items[i];
            async move {
                let mut params: Vec<&(dyn ToSql + Sync)> = vec![
                    &pr.bucket.name,
                    &pr.bucket.token,
                    &p.key,
                    &p.value,
                    &pr.etag,
                    &mtime,
                    &pr.vnode,
                    &pr.rver,
                ];
                for c in &pr.columns {
                    params.push(c);
                }
                if let Some(e) = &pr.expected {
                    params.push(e);
                }
                client.query_opt(&pr.stmt, &params).await
            }
        });
        // Polled together: tokio-postgres sends every statement before the first answer.
        let rows = futures::future::join_all(writes).await;
        let mut etags = Vec::with_capacity(rows.len());
        for (row, pr) in rows.into_iter().zip(prepared) {
            match row {
                Ok(Some(_)) => etags.push(pr.etag),
                Ok(None) => {
                    return Pipelined::Failed(MorayError::Internal(
                        "an item of the batch wrote nothing".into(),
                    ));
                }
                Err(e) => {
                    let e = MorayError::from(e);
                    self.schema_changed(&e, conn, &pr.bucket.name);
                    return Pipelined::Failed(e);
                }
            }
        }
        Pipelined::Done(etags)
    }

    /// GetObjects: every key read as [`Store::get_object`] reads it, one statement per
    /// bucket on one connection; per-key failures (no such object, no such bucket) are
    /// results, failures of the call itself (no connection, timeout) the call's error.
    pub async fn get_objects(
        &self,
        req: pb::GetObjectsRequest,
    ) -> Result<pb::GetObjectsResponse, MorayError> {
        at_most("keys", "keys", req.keys.len(), MAX_GET_OBJECTS_KEYS)?;
        if req.keys.is_empty() {
            return Ok(pb::GetObjectsResponse::default());
        }
        let timeout = self.timeout(req.options.as_ref().map_or(0, |o| o.timeout_ms));
        let keys = req.keys;
        let results = self
            .with_conn(timeout, |mut conn| async move {
                let r = self.get_many_in(&mut conn, &keys).await;
                (conn, r)
            })
            .await?;
        Ok(pb::GetObjectsResponse { results })
    }

    // The entry removed is the one just found under the same key.
    #[allow(clippy::expect_used)]
    async fn get_many_in(
        &self,
        conn: &mut PooledConn,
        keys: &[pb::ObjectKey],
    ) -> Result<Vec<pb::GetObjectResult>, MorayError> {
        use std::collections::HashMap;
        // Positions of each bucket's keys, buckets in order of first appearance.
        let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
        let mut group_of: HashMap<&str, usize> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            let g = *group_of.entry(k.bucket.as_str()).or_insert_with(|| {
                groups.push((k.bucket.as_str(), Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(i);
        }
        let mut results: Vec<Option<pb::get_object_result::Result>> = vec![None; keys.len()];
        for (bucket_name, positions) in groups {
            let wanted: Vec<&str> = positions.iter().map(|&i| keys[i].key.as_str()).collect();
            match self.get_bucket_keys(conn, bucket_name, &wanted).await {
                Ok(mut found) => {
                    for (&i, key) in positions.iter().zip(&wanted) {
                        let result = match found.get_mut(*key) {
                            // A repeated key gets a copy; the last one takes the object.
                            Some((object, left)) if *left > 1 => {
                                *left -= 1;
                                pb::get_object_result::Result::Object(object.clone())
                            }
                            Some(_) => {
                                let (object, _) =
                                    found.remove(*key).expect("the entry was just found");
                                pb::get_object_result::Result::Object(object)
                            }
                            None => object_error(&MorayError::ObjectNotFound {
                                bucket: bucket_name.to_string(),
                                key: key.to_string(),
                            }),
                        };
                        results[i] = Some(result);
                    }
                }
                // The connection is gone: so is every bucket still to read.
                Err(e @ MorayError::ConnectionLost(_)) => return Err(e),
                Err(e) => {
                    let error = object_error(&e);
                    for &i in &positions {
                        results[i] = Some(error.clone());
                    }
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|result| pb::GetObjectResult { result })
            .collect())
    }

    /// The objects of `bucket_name` under `keys` (one statement), by key, each with how
    /// many times `keys` names it.
    async fn get_bucket_keys(
        &self,
        conn: &mut PooledConn,
        bucket_name: &str,
        keys: &[&str],
    ) -> Result<std::collections::HashMap<String, (pb::MorayObject, usize)>, MorayError> {
        let (bucket, rows) = self
            .query_bucket(conn, bucket_name, |b| &b.sql.get_many, &[&keys])
            .await?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let object = row_to_object(&bucket, row, None, false)?.0;
            found.insert(object.key.clone(), (object, 0));
        }
        for key in keys {
            if let Some((_, n)) = found.get_mut(*key) {
                *n += 1;
            }
        }
        Ok(found)
    }
}

/// Refuses a call whose list `field` has more than `max` entries (`what`s).
fn at_most(field: &str, what: &str, len: usize, max: usize) -> Result<(), MorayError> {
    if len > max {
        return Err(MorayError::invalid_argument(
            field,
            format!("has {len} {what}; at most {max} per call"),
        ));
    }
    Ok(())
}
