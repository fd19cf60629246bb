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
pub mod tenant;
pub mod volumes;

use std::collections::BTreeMap;

use serde_json::Value;

pub use tenant::Tenant;

/// The path of one resource, `/:login/<resources>/:id`: the login (authentication
/// checked it) and the id.
pub type IdPath = axum::extract::Path<(String, String)>;

/// The path of one item of a resource, `/:login/<resources>/:id/<items>/:name`.
pub type ItemPath = axum::extract::Path<(String, String, String)>;

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

/// A backend's answer with its error as a tenant sees it ([`ApiError::backend`]).
///
/// [`ApiError::backend`]: crate::error::ApiError::backend
pub trait Answer<T> {
    /// The answer's message, or the mapped error of `service`.
    fn answer(self, service: &'static str) -> Result<T, crate::error::ApiError>;
}

impl<T> Answer<T> for Result<tonic::Response<T>, tonic::Status> {
    fn answer(self, service: &'static str) -> Result<T, crate::error::ApiError> {
        self.map(tonic::Response::into_inner)
            .map_err(|s| crate::error::ApiError::backend(service, s))
    }
}

/// A list of `items` in CloudAPI's form: 200 with a JSON array.
pub fn list_of<T>(items: &[T], to_json: impl Fn(&T) -> Value) -> Reply {
    let rows = items.iter().map(to_json).collect();
    Ok(crate::server::json_response(
        http::StatusCode::OK,
        &Value::Array(rows),
    ))
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

/// Whether `s` is a hyphenated uuid (8-4-4-4-12 hex) of either case: a tenant may write
/// one in upper case.
pub fn is_uuid(s: &str) -> bool {
    triton_types::id::is_uuid(&s.to_ascii_lowercase())
}

/// A protobuf `Value` as JSON, and JSON as a protobuf `Value`.
pub use triton_types::value::{from_json as to_proto_value, to_json as from_proto_value};

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

/// `object!({"key": value, ...})`: a JSON object (a `serde_json::Map`) of the fields
/// always shown, each value through `json!`, for the optional ones to be added to (with
/// [`put_str`]).
macro_rules! object {
    ({ $($key:literal : $value:expr),* $(,)? }) => {{
        let mut o = ::serde_json::Map::new();
        $( o.insert($key.to_string(), ::serde_json::json!($value)); )*
        o
    }};
}
pub(crate) use object;

/// Inserts `key: value` when `value` is not empty.
pub fn put_str(obj: &mut serde_json::Map<String, Value>, key: &str, value: &str) {
    if !value.is_empty() {
        obj.insert(key.to_string(), Value::String(value.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_of_either_case_and_only_hyphenated() {
        for ok in [
            "6b6e8a2a-4bd6-4b5e-a7b4-0ad7e6c1d4f2",
            "6B6E8A2A-4BD6-4B5E-A7B4-0AD7E6C1D4F2",
        ] {
            assert!(is_uuid(ok), "{ok}");
        }
        for bad in [
            "",
            "6b6e8a2a4bd64b5ea7b40ad7e6c1d4f2",
            "{6b6e8a2a-4bd6-4b5e-a7b4-0ad7e6c1d4f2}",
            "6b6e8a2a-4bd6-4b5e-a7b4-0ad7e6c1d4fg",
            "g1-small",
        ] {
            assert!(!is_uuid(bad), "{bad}");
        }
    }
}
