//! Object operations (spec A6): put, get, delete, find, updateObjects, deleteMany,
//! reindexObjects and batch.
//!
//! Every write records its change in `moray_changes` in the same statement or transaction
//! (see `feed.rs`). A put is one statement: a guard that the bucket config it was built
//! from is still current, the conditional insert/update, and the change-log insert.

use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_postgres::Row;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use triton_proto::moray::v1 as pb;

use crate::buckets::{
    Bucket, COL_ETAG, COL_FIRST_INDEX, COL_ID, COL_KEY, COL_MTIME, COL_TXN_SNAP, COL_VALUE,
};
use crate::compile;
use crate::decode::Json;
use crate::error::MorayError;
use crate::filter;
use crate::pool::PooledConn;
use crate::store::{Store, begin, finish, is_stale_schema, json_kind, now_ms};
use crate::types::{ColumnValue, coerce};

/// Rows a find returns without `limit` (Triton's default).
pub const DEFAULT_LIMIT: u64 = 1000;
/// Attempts of a put whose bucket config changed under it.
const PUT_ATTEMPTS: usize = 3;
/// Most keys one GetObjects may ask for: its keys go to PostgreSQL as one array per
/// bucket and its answer is one message, so both stay small (clients that coalesce
/// concurrent gets send far fewer).
pub const MAX_GET_OBJECTS_KEYS: usize = 1000;
/// Most items one PutObjects may carry (its items share one transaction and one answer).
pub const MAX_PUT_OBJECTS_ITEMS: usize = 1000;

/// Etag condition: None = no check; Some(None) = must not exist; Some(Some(e)) = must match.
pub type EtagCondition = Option<Option<String>>;

pub fn etag_condition(c: Option<pb::EtagCondition>) -> EtagCondition {
    c.map(|c| c.etag)
}

/// The etag of a serialized value: CRC32, 8 upper-case hex digits.
pub fn etag_of(value: &str) -> String {
    format!("{:08X}", crc32fast::hash(value.as_bytes()))
}

impl ToSql for ColumnValue {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut tokio_postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            ColumnValue::Scalar(Some(s)) => s.to_sql(ty, out),
            ColumnValue::Array(Some(v)) => v.to_sql(ty, out),
            ColumnValue::Scalar(None) | ColumnValue::Array(None) => Ok(IsNull::Yes),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <String as ToSql>::accepts(ty) || <Vec<Option<String>> as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

fn index_type_error(bucket: &Bucket, field: &str, reason: String) -> MorayError {
    let ty = bucket
        .config
        .index
        .get(field)
        .map(|d| d.ty.to_string())
        .unwrap_or_default();
    MorayError::InvalidIndexType {
        field: field.to_string(),
        index_type: ty,
        reason,
    }
}

/// Index column values of `value` for every column of `bucket`.
fn column_values(
    bucket: &Bucket,
    value: &Map<String, Value>,
) -> Result<Vec<ColumnValue>, MorayError> {
    bucket
        .columns
        .iter()
        .map(|c| {
            coerce(c.ty, value.get(&c.field)).map_err(|r| index_type_error(bucket, &c.field, r))
        })
        .collect()
}

/// `value.vnode` as an integer, as Triton copies it into `_vnode`.
fn vnode_of(value: &Map<String, Value>) -> Option<i64> {
    match value.get("vnode")? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Merges index column values into a stored value (A3): a NULL column removes the field
/// (unless it is an explicit null), a value replaces it (except an array under a scalar
/// index), fields being reindexed are left alone. Returns the text (the stored text when
/// nothing changed) and the merged map when `want_map` or when it had to be parsed.
pub fn merge_columns(
    bucket: &Bucket,
    raw: String,
    columns: Vec<Option<Value>>,
    want_map: bool,
) -> (String, Option<Map<String, Value>>) {
    if bucket.columns.is_empty() && !want_map {
        return (raw, None);
    }
    if !want_map && merge_is_noop(bucket, &raw, &columns) {
        return (raw, None);
    }
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(&raw) else {
        return (raw, None);
    };
    let mut changed = false;
    for (c, v) in bucket.columns.iter().zip(columns) {
        if c.reindexing {
            continue;
        }
        match v {
            None => {
                if map.get(&c.field).is_some_and(|old| !old.is_null()) {
                    map.remove(&c.field);
                    changed = true;
                }
            }
            Some(v) => match map.get(&c.field) {
                Some(Value::Array(_)) if !c.ty.array => {}
                Some(old) if *old == v => {}
                _ => {
                    map.insert(c.field.clone(), v);
                    changed = true;
                }
            },
        }
    }
    let text = if changed {
        Value::Object(map.clone()).to_string()
    } else {
        raw
    };
    (text, Some(map))
}

/// Whether merging `columns` into the stored value `raw` changes nothing, decided by
/// decoding only the indexed fields of `raw` (the rest is skipped without being built).
/// Applies exactly the rules of [`merge_columns`]; false when unsure (e.g. `raw` is not
/// a JSON object), so that the full merge decides.
fn merge_is_noop(bucket: &Bucket, raw: &str, columns: &[Option<Value>]) -> bool {
    let mut de = serde_json::Deserializer::from_str(raw);
    let Ok(found) =
        serde::de::DeserializeSeed::deserialize(IndexedFields(&bucket.columns), &mut de)
    else {
        return false;
    };
    if de.end().is_err() {
        return false;
    }
    bucket
        .columns
        .iter()
        .zip(columns)
        .zip(&found)
        .all(|((c, v), old)| {
            c.reindexing
                || match (v, old) {
                    (None, old) => old.as_ref().is_none_or(Value::is_null),
                    (Some(_), Some(Value::Array(_))) if !c.ty.array => true,
                    (Some(v), Some(old)) => old == v,
                    (Some(_), None) => false,
                }
        })
}

/// Deserializes a JSON object into the values of the given columns' fields (the last of
/// duplicate keys wins, as in [`serde_json::Map`]); other fields are skipped.
#[derive(Clone, Copy)]
struct IndexedFields<'a>(&'a [crate::buckets::Column]);

impl<'de> serde::de::DeserializeSeed<'de> for IndexedFields<'_> {
    type Value = Vec<Option<Value>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for IndexedFields<'_> {
    type Value = Vec<Option<Value>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let mut found = vec![None; self.0.len()];
        while let Some(key) = m.next_key_seed(FieldKey(self.0))? {
            match key {
                Some(i) => found[i] = Some(m.next_value::<Value>()?),
                None => {
                    m.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// An object key, as the position of the column indexing it (if any); not allocated.
#[derive(Clone, Copy)]
struct FieldKey<'a>(&'a [crate::buckets::Column]);

impl<'de> serde::de::DeserializeSeed<'de> for FieldKey<'_> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FieldKey<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|c| c.field == key))
    }
}

fn index_columns(
    row: &Row,
    bucket: &Bucket,
    first: usize,
) -> Result<Vec<Option<Value>>, MorayError> {
    (0..bucket.columns.len())
        .map(|i| {
            row.try_get::<_, Option<Json>>(first + i)
                .map(|v| v.map(|j| j.0))
                .map_err(MorayError::from)
        })
        .collect()
}

/// The object envelope of a row selected with [`crate::buckets::BucketSql::select`].
fn row_to_object(
    bucket: &Bucket,
    row: &Row,
    count: Option<u64>,
    want_map: bool,
) -> Result<(pb::MorayObject, Option<Map<String, Value>>), MorayError> {
    let raw: String = row.try_get(COL_VALUE)?;
    let columns = index_columns(row, bucket, COL_FIRST_INDEX)?;
    let (value, map) = merge_columns(bucket, raw, columns, want_map);
    Ok((
        pb::MorayObject {
            bucket: bucket.name.clone(),
            key: row.try_get(COL_KEY)?,
            value,
            id: row.try_get(COL_ID)?,
            etag: row.try_get(COL_ETAG)?,
            mtime: row.try_get(COL_MTIME)?,
            txn_snap: row.try_get::<_, Option<i32>>(COL_TXN_SNAP)?.map(i64::from),
            count,
        },
        map,
    ))
}

/// A GetObjects result for a key whose read failed with `e`.
fn object_error(e: &MorayError) -> pb::get_object_result::Result {
    pb::get_object_result::Result::Error(error_of(e))
}

/// `e` as the error of one item of GetObjects or PutObjects.
fn error_of(e: &MorayError) -> pb::ObjectError {
    pb::ObjectError {
        name: e.name().to_string(),
        message: e.to_string(),
        code: e.code() as i32,
    }
}

/// A PutObjects result: the item's etag, or its error.
fn put_result(r: Result<String, pb::ObjectError>) -> pb::PutObjectResult {
    use pb::put_object_result::Result as R;
    pb::PutObjectResult {
        result: Some(match r {
            Ok(etag) => R::Object(pb::PutObjectResponse { etag }),
            Err(e) => R::Error(e),
        }),
    }
}

/// Whether a put that failed with `e` left its transaction usable: these errors come
/// from checks made before or after the statement (a zero-row conditional write and
/// the follow-up read), not from a failed SQL statement, which aborts the transaction.
fn keeps_transaction(e: &MorayError) -> bool {
    matches!(
        e,
        MorayError::EtagConflict { .. }
            | MorayError::BucketNotFound { .. }
            | MorayError::InvalidArgument { .. }
            | MorayError::InvalidIndexType { .. }
    )
}

fn check_key(key: &str) -> Result<(), MorayError> {
    if key.is_empty() {
        return Err(MorayError::invalid_argument("key", "must not be empty"));
    }
    Ok(())
}

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
    fn tail(&self, bucket: &Bucket) -> Result<String, MorayError> {
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

fn parse_filter(text: &str) -> Result<filter::Filter, MorayError> {
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

/// What [`Store::put_pipelined`] did.
enum Pipelined {
    /// Every item written; their etags in the order given.
    Done(Vec<String>),
    /// Nothing sent: the batch needs the item-by-item path.
    NotTried,
    /// Something sent and not every item written; the transaction must be rolled back.
    Failed(MorayError),
}

/// A find's rows go to this channel; an error ends the stream.
pub type RowSender = mpsc::Sender<Result<pb::MorayObject, tonic::Status>>;

impl Store {
    /// [`Store::put_in`] for a put that commits by itself (no open transaction), where
    /// a unique violation is tried once more. Two puts creating the same key at once can
    /// both pass `ON CONFLICT (_key)`'s check, and the loser may then trip over another
    /// unique index (one holding a copy of the key, say) before the key's own: its second
    /// statement sees the winner's committed row and gets the answer a lone put gets (an
    /// etag conflict, or an update). A real clash with another key fails again.
    async fn put_alone(
        &self,
        conn: &mut PooledConn,
        bucket_name: &str,
        key: &str,
        raw: &str,
        value: &Map<String, Value>,
        etag: &EtagCondition,
    ) -> Result<String, MorayError> {
        match self.put_in(conn, bucket_name, key, raw, value, etag).await {
            Err(MorayError::UniqueAttribute { .. }) => {
                self.put_in(conn, bucket_name, key, raw, value, etag).await
            }
            r => r,
        }
    }

    pub(crate) async fn put_in(
        &self,
        conn: &mut PooledConn,
        bucket_name: &str,
        key: &str,
        raw: &str,
        value: &Map<String, Value>,
        etag: &EtagCondition,
    ) -> Result<String, MorayError> {
        check_key(key)?;
        let new_etag = etag_of(raw);
        let mtime = now_ms();
        let vnode = vnode_of(value);
        for attempt in 0..PUT_ATTEMPTS {
            let bucket = if attempt == 0 {
                self.bucket(conn, bucket_name).await?
            } else {
                self.load_bucket(conn, bucket_name).await?
            };
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
                Err(e) if is_stale_schema(&e) && attempt + 1 < PUT_ATTEMPTS => {
                    self.cache.invalidate(bucket_name);
                    conn.forget_statements();
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
            let bucket = if attempt == 0 {
                self.bucket(conn, bucket_name).await?
            } else {
                self.load_bucket(conn, bucket_name).await?
            };
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
                Err(e) if is_stale_schema(&e) && attempt == 0 => {
                    self.cache.invalidate(bucket_name);
                    conn.forget_statements();
                }
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
        for attempt in 0..2 {
            let bucket = if attempt == 0 {
                self.bucket(conn, bucket_name).await?
            } else {
                self.load_bucket(conn, bucket_name).await?
            };
            let result = async {
                let stmt = conn.prepare(&bucket.sql.get).await?;
                Ok::<_, MorayError>(conn.client.query_opt(&stmt, &[&key]).await?)
            }
            .await;
            match result {
                Ok(Some(row)) => return Ok(row_to_object(&bucket, &row, None, false)?.0),
                Ok(None) => {
                    return Err(MorayError::ObjectNotFound {
                        bucket: bucket_name.to_string(),
                        key: key.to_string(),
                    });
                }
                Err(e) if is_stale_schema(&e) && attempt == 0 => {
                    self.cache.invalidate(bucket_name);
                    conn.forget_statements();
                }
                Err(e) => return Err(e),
            }
        }
        Err(MorayError::Internal("get did not settle".into()))
    }

    pub async fn put_object(
        &self,
        req: pb::PutObjectRequest,
    ) -> Result<pb::PutObjectResponse, MorayError> {
        let value = self.parse_value("value", &req.value)?;
        let etag = etag_condition(req.etag);
        let timeout = self.timeout(req.options.as_ref().map_or(0, |o| o.timeout_ms));
        let etag = self
            .with_conn(timeout, |mut conn| async move {
                let r = self
                    .put_alone(&mut conn, &req.bucket, &req.key, &req.value, &value, &etag)
                    .await;
                (conn, r)
            })
            .await?;
        self.feed.wrote();
        Ok(pb::PutObjectResponse { etag })
    }

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
        if req.requests.len() > MAX_PUT_OBJECTS_ITEMS {
            return Err(MorayError::invalid_argument(
                "requests",
                format!(
                    "has {} items; at most {MAX_PUT_OBJECTS_ITEMS} per call",
                    req.requests.len()
                ),
            ));
        }
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
                match self
                    .put_in(conn, &p.bucket, &p.key, &p.value, value, &etag)
                    .await
                {
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
                        let r = self
                            .put_alone(conn, &p.bucket, &p.key, &p.value, value, &etag)
                            .await;
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
                    if is_stale_schema(&e) {
                        self.cache.invalidate(&pr.bucket.name);
                        conn.forget_statements();
                    }
                    return Pipelined::Failed(e);
                }
            }
        }
        Pipelined::Done(etags)
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

    /// GetObjects: every key read as [`Store::get_object`] reads it, one statement per
    /// bucket on one connection; per-key failures (no such object, no such bucket) are
    /// results, failures of the call itself (no connection, timeout) the call's error.
    pub async fn get_objects(
        &self,
        req: pb::GetObjectsRequest,
    ) -> Result<pb::GetObjectsResponse, MorayError> {
        if req.keys.len() > MAX_GET_OBJECTS_KEYS {
            return Err(MorayError::invalid_argument(
                "keys",
                format!(
                    "has {} keys; at most {MAX_GET_OBJECTS_KEYS} per call",
                    req.keys.len()
                ),
            ));
        }
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
        for attempt in 0..2 {
            let bucket = if attempt == 0 {
                self.bucket(conn, bucket_name).await?
            } else {
                self.load_bucket(conn, bucket_name).await?
            };
            let result = async {
                let stmt = conn.prepare(&bucket.sql.get_many).await?;
                Ok::<_, MorayError>(conn.client.query(&stmt, &[&keys]).await?)
            }
            .await;
            match result {
                Ok(rows) => {
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
                    return Ok(found);
                }
                Err(e) if is_stale_schema(&e) && attempt == 0 => {
                    self.cache.invalidate(bucket_name);
                    conn.forget_statements();
                }
                Err(e) => return Err(e),
            }
        }
        Err(MorayError::Internal("get did not settle".into()))
    }

    pub async fn delete_object(&self, req: pb::DeleteObjectRequest) -> Result<(), MorayError> {
        let etag = etag_condition(req.etag);
        let timeout = self.timeout(req.options.as_ref().map_or(0, |o| o.timeout_ms));
        self.with_conn(timeout, |mut conn| async move {
            let r = self
                .delete_in(&mut conn, &req.bucket, &req.key, &etag)
                .await;
            (conn, r)
        })
        .await?;
        self.feed.wrote();
        Ok(())
    }

    /// Streams the objects matching a filter into `tx`.
    pub async fn find(
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

    async fn find_in(
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
            let bucket = if attempt == 0 {
                self.bucket(conn, bucket_name).await?
            } else {
                self.load_bucket(conn, bucket_name).await?
            };
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
                Err(e) if is_stale_schema(&e) && attempt == 0 && !sent_any => {
                    self.cache.invalidate(bucket_name);
                    conn.forget_statements();
                }
                r => return r,
            }
        }
        Err(MorayError::Internal("find did not settle".into()))
    }

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
        let timeout = self.timeout(req.options.as_ref().map_or(0, |o| o.timeout_ms));
        let (count, etag) = self
            .with_conn(timeout, |mut conn| async move {
                let r = async {
                    begin(&mut conn, "BEGIN").await?;
                    let r = self
                        .update_in(&mut conn, &req.bucket, &req.fields, &req.filter, &opts)
                        .await;
                    finish(&mut conn, r).await
                }
                .await;
                (conn, r)
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
        let timeout = self.timeout(req.options.as_ref().map_or(0, |o| o.timeout_ms));
        let count = self
            .with_conn(timeout, |mut conn| async move {
                let r = self
                    .delete_many_in(&mut conn, &req.bucket, &req.filter, &opts)
                    .await;
                (conn, r)
            })
            .await?;
        self.feed.wrote();
        Ok(pb::DeleteManyResponse { count })
    }

    /// Puts, deletes, updates and deleteManys in one transaction, in order; the first error
    /// rolls everything back (A6.6).
    pub async fn batch(&self, req: pb::BatchRequest) -> Result<pb::BatchResponse, MorayError> {
        use pb::batch_operation::Operation;
        // Check every value before touching the database.
        let mut values = Vec::with_capacity(req.requests.len());
        for (i, op) in req.requests.iter().enumerate() {
            match &op.operation {
                Some(Operation::Put(p)) => {
                    values.push(Some(
                        self.parse_value(&format!("requests[{i}].value"), &p.value)?,
                    ));
                }
                Some(_) => values.push(None),
                None => {
                    return Err(MorayError::invalid_argument(
                        format!("requests[{i}]"),
                        "names no operation (put, delete, update or delete_many)",
                    ));
                }
            }
        }
        let timeout = self.timeout(req.options.as_ref().map_or(0, |o| o.timeout_ms));
        let requests = req.requests;
        let results = self
            .with_conn(timeout, |mut conn| async move {
                // A unique violation is tried once more, as for a lone put
                // (`put_alone`): it may be a race between two creators of one key.
                let r = async {
                    let mut retried = false;
                    loop {
                        begin(&mut conn, "BEGIN").await?;
                        let r = self
                            .batch_in(&mut conn, requests.clone(), values.clone())
                            .await;
                        match finish(&mut conn, r).await {
                            Err(MorayError::UniqueAttribute { .. }) if !retried => retried = true,
                            r => break r,
                        }
                    }
                }
                .await;
                (conn, r)
            })
            .await?;
        self.feed.wrote();
        Ok(pb::BatchResponse { etags: results })
    }

    async fn batch_in(
        &self,
        conn: &mut PooledConn,
        requests: Vec<pb::BatchOperation>,
        values: Vec<Option<Map<String, Value>>>,
    ) -> Result<Vec<pb::BatchResult>, MorayError> {
        use pb::batch_operation::Operation;
        let mut results = Vec::with_capacity(requests.len());
        for (op, value) in requests.into_iter().zip(values) {
            let result = match op.operation {
                Some(Operation::Put(p)) => {
                    let value = value.unwrap_or_default();
                    let etag = etag_condition(p.etag);
                    let etag = self
                        .put_in(conn, &p.bucket, &p.key, &p.value, &value, &etag)
                        .await?;
                    pb::BatchResult {
                        bucket: p.bucket,
                        key: p.key,
                        etag,
                        ..Default::default()
                    }
                }
                Some(Operation::Delete(d)) => {
                    self.delete_in(conn, &d.bucket, &d.key, &etag_condition(d.etag))
                        .await?;
                    pb::BatchResult {
                        bucket: d.bucket,
                        key: d.key,
                        ..Default::default()
                    }
                }
                Some(Operation::Update(u)) => {
                    let opts = FindOpts::from(u.find);
                    let (count, etag) = self
                        .update_in(conn, &u.bucket, &u.fields, &u.filter, &opts)
                        .await?;
                    pb::BatchResult {
                        bucket: u.bucket,
                        filter: u.filter,
                        etag,
                        count,
                        ..Default::default()
                    }
                }
                Some(Operation::DeleteMany(d)) => {
                    let opts = FindOpts::from(d.find);
                    let count = self
                        .delete_many_in(conn, &d.bucket, &d.filter, &opts)
                        .await?;
                    pb::BatchResult {
                        bucket: d.bucket,
                        filter: d.filter,
                        count,
                        ..Default::default()
                    }
                }
                None => continue,
            };
            results.push(result);
        }
        Ok(results)
    }

    /// Rewrites up to `count` rows not yet indexed at the bucket's version (A6.8). When none
    /// is left, clears `reindex_active`, after which the new indexes serve filters.
    pub async fn reindex_objects(
        &self,
        req: pb::ReindexObjectsRequest,
    ) -> Result<pb::ReindexObjectsResponse, MorayError> {
        if req.count < 1 {
            return Err(MorayError::invalid_argument("count", "must be at least 1"));
        }
        let timeout = self.timeout(req.options.as_ref().map_or(0, |o| o.timeout_ms));
        self.with_conn(timeout, |mut conn| async move {
            let r = async {
                begin(&mut conn, "BEGIN").await?;
                let r = self
                    .reindex_in(&mut conn, &req.bucket, req.count, req.no_count)
                    .await;
                finish(&mut conn, r).await
            }
            .await;
            (conn, r)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_upper_case_crc32() {
        assert_eq!(etag_of("{}"), format!("{:08X}", crc32fast::hash(b"{}")));
        assert_eq!(etag_of("{}").len(), 8);
        assert!(
            etag_of("{\"a\":1}")
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
        );
    }

    /// The full merge, as `merge_columns` did before the no-op shortcut.
    fn full_merge(bucket: &Bucket, raw: &str, columns: Vec<Option<Value>>) -> String {
        merge_columns(bucket, raw.to_string(), columns, true).0
    }

    #[test]
    fn merge_shortcut_agrees_with_full_merge() {
        use serde_json::json;
        let bucket = Bucket::from_row(
            "b".into(),
            r#"{"s":{"type":"string"},"n":{"type":"number"},"t":{"type":"[string]"}}"#,
            None,
            Some(r#"{"2":["t"]}"#),
            "2024-01-01 00:00:00".into(),
        )
        .unwrap();
        // Columns in the bucket's column order (n, s, t).
        let fields: Vec<&str> = bucket.columns.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["n", "s", "t"]);
        let raws = [
            r#"{"s":"a","n":1,"x":{"deep":[1,2,{"s":"no"}]},"t":["q"]}"#,
            r#"{"s":"a","n":"1"}"#,
            r#"{"s":"a","n":1.0}"#,
            r#"{"s":null,"n":1}"#,
            r#"{"s":["a"],"n":1}"#,
            r#"{"n":1}"#,
            r#"{"s":"b","s":"a","n":1}"#,
            r#"{"s":"a","n":1} trailing"#,
            r#"["s"]"#,
            r#"{"s":"a\u0062","n":1,"\u0073":"a"}"#,
            r#"{"s":"a\u0062","n":1}"#,
            "{}",
        ];
        let column_sets = [
            vec![Some(json!(1)), Some(json!("a")), None],
            vec![Some(json!(1)), Some(json!("a")), Some(json!(["z"]))],
            vec![Some(json!(1)), None, None],
            vec![None, None, None],
            vec![Some(json!(2)), Some(json!("a")), None],
            vec![Some(json!(1)), Some(json!("ab")), None],
        ];
        for raw in raws {
            for columns in &column_sets {
                let fast = merge_columns(&bucket, raw.to_string(), columns.clone(), false).0;
                assert_eq!(
                    fast,
                    full_merge(&bucket, raw, columns.clone()),
                    "{raw} {columns:?}"
                );
            }
        }
    }
}
