//! Rows and index columns: column values of an object, merging them into the stored
//! value, and a selected row as the object envelope.

use serde_json::{Map, Value};
use tokio_postgres::Row;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use triton_proto::moray::v1 as pb;

use crate::buckets::{
    Bucket, COL_ETAG, COL_FIRST_INDEX, COL_ID, COL_KEY, COL_MTIME, COL_TXN_SNAP, COL_VALUE,
};
use crate::decode::Json;
use crate::error::MorayError;
use crate::types::{ColumnValue, coerce};

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

pub(super) fn index_type_error(bucket: &Bucket, field: &str, reason: String) -> MorayError {
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
pub(super) fn column_values(
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
pub(super) fn vnode_of(value: &Map<String, Value>) -> Option<i64> {
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

pub(super) fn index_columns(
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
pub(super) fn row_to_object(
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

#[cfg(test)]
mod tests {
    use super::*;

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
