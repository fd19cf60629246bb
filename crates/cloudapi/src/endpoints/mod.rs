//! The endpoints, one module per resource, with Triton's paths, parameters, statuses
//! and bodies (sdc-cloudapi `docs/index.md`).

pub mod account;
pub mod datacenters;
pub mod images;
pub mod keys;
pub mod machines;
pub mod networks;
pub mod nics;
pub mod packages;
pub mod snapshots;

use std::collections::BTreeMap;

use serde_json::Value;

/// Handler result: a response or a Triton error.
pub type Reply = Result<axum::response::Response, crate::error::ApiError>;

/// A backend's answer to a look-up, with its "not found" replaced by `not_found` (so a
/// thing that does not exist reads the same as one the caller may not see).
pub fn found<T>(
    answer: Result<tonic::Response<T>, tonic::Status>,
    service: &'static str,
    not_found: impl FnOnce() -> crate::error::ApiError,
) -> Result<T, crate::error::ApiError> {
    match answer {
        Ok(r) => Ok(r.into_inner()),
        Err(s) => match crate::error::ApiError::backend(service, s) {
            e if e.status == http::StatusCode::NOT_FOUND => Err(not_found()),
            e => Err(e),
        },
    }
}

/// A listing's answer: `rows`, with `x-resource-count` (how many there are in all) and,
/// for a paged listing, `x-query-limit` (the page size asked for).
pub fn listing(rows: Vec<Value>, total: usize, limit: Option<u64>) -> axum::response::Response {
    let mut response = crate::server::json_response(http::StatusCode::OK, &Value::Array(rows));
    let h = response.headers_mut();
    h.insert("x-resource-count", http::HeaderValue::from(total));
    if let Some(limit) = limit {
        h.insert("x-query-limit", http::HeaderValue::from(limit));
    }
    response
}

/// Whether `s` looks like a uuid (8-4-4-4-12 hex).
pub fn is_uuid(s: &str) -> bool {
    uuid::Uuid::try_parse(s).is_ok() && s.len() == 36
}

/// A protobuf `Value` as JSON.
pub fn from_proto_value(v: &prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Value::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(from_proto_value).collect()),
        Some(Kind::StructValue(s)) => Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), from_proto_value(v)))
                .collect(),
        ),
    }
}

/// A JSON value as a protobuf `Value`.
pub fn to_proto_value(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_proto_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o
                .iter()
                .map(|(k, v)| (k.clone(), to_proto_value(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// Tag map as JSON.
pub fn tags_json<'a>(
    tags: impl IntoIterator<Item = (&'a String, &'a prost_types::Value)>,
) -> Value {
    let sorted: BTreeMap<&String, Value> = tags
        .into_iter()
        .map(|(k, v)| (k, from_proto_value(v)))
        .collect();
    serde_json::to_value(sorted).unwrap_or(Value::Null)
}

/// Inserts `key: value` when `value` is not empty.
pub fn put_str(obj: &mut serde_json::Map<String, Value>, key: &str, value: &str) {
    if !value.is_empty() {
        obj.insert(key.to_string(), Value::String(value.to_string()));
    }
}
