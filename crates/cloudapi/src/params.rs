//! Request parameters as restify gives them to Triton's handlers: the query string and
//! the body (JSON or form-encoded) merged into one map, the body winning.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::server::MAX_BODY_BYTES;

/// The merged parameters of a request.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pub map: Map<String, Value>,
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let query = req.uri().query().unwrap_or("").to_string();
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let body = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                ApiError::new(
                    http::StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestTooLarge",
                    format!("request body is larger than {MAX_BODY_BYTES} bytes"),
                )
            })?;
        Params::parse(&query, &content_type, &body)
    }
}

fn push(map: &mut Map<String, Value>, key: String, value: String) {
    match map.get_mut(&key) {
        Some(Value::Array(a)) => a.push(Value::String(value)),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, Value::String(value)]);
        }
        None => {
            map.insert(key, Value::String(value));
        }
    }
}

impl Params {
    pub fn parse(query: &str, content_type: &str, body: &Bytes) -> Result<Params, ApiError> {
        let mut map = Map::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            push(&mut map, k.into_owned(), v.into_owned());
        }
        let trimmed = body.iter().all(|b| b.is_ascii_whitespace());
        if !trimmed {
            if content_type.starts_with("application/x-www-form-urlencoded") {
                let mut form = Map::new();
                for (k, v) in form_urlencoded::parse(body) {
                    push(&mut form, k.into_owned(), v.into_owned());
                }
                map.extend(form);
            } else if content_type.is_empty() || content_type.contains("json") {
                match serde_json::from_slice::<Value>(body) {
                    Ok(Value::Object(obj)) => map.extend(obj),
                    Ok(_) => {
                        return Err(ApiError::new(
                            http::StatusCode::BAD_REQUEST,
                            "InvalidContent",
                            "the request body must be a JSON object",
                        ));
                    }
                    Err(e) => {
                        return Err(ApiError::new(
                            http::StatusCode::BAD_REQUEST,
                            "InvalidContent",
                            format!("invalid JSON in the request body: {e}"),
                        ));
                    }
                }
            } else {
                return Err(ApiError::new(
                    http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    format!("content type {content_type} is not supported"),
                ));
            }
        }
        Ok(Params { map })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A string parameter (numbers and booleans given as JSON are written as text).
    pub fn str(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Array(a) => a.last().and_then(|v| v.as_str()).map(str::to_string),
            _ => None,
        }
    }

    pub fn required_str(&self, key: &str) -> Result<String, ApiError> {
        match self.str(key) {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(ApiError::missing_parameter(format!("{key} is required"))),
        }
    }

    /// A boolean: JSON true/false or the strings "true"/"false".
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s == "true" => Ok(Some(true)),
            Some(Value::String(s)) if s == "false" => Ok(Some(false)),
            Some(_) => Err(ApiError::invalid_argument(format!(
                "{key} must be a boolean"
            ))),
        }
    }

    /// A non-negative integer: a JSON number or a string of digits.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        let bad = || ApiError::invalid_argument(format!("{key} must be a non-negative integer"));
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(bad),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }

    /// A list: a JSON array, repeated query keys, or a comma-separated string.
    pub fn list(&self, key: &str) -> Option<Vec<Value>> {
        match self.get(key)? {
            Value::Array(a) => Some(a.clone()),
            Value::String(s) => {
                // A JSON array sent as a string (form bodies).
                if s.starts_with('[')
                    && let Ok(Value::Array(a)) = serde_json::from_str(s)
                {
                    return Some(a);
                }
                Some(
                    s.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(|p| Value::String(p.to_string()))
                        .collect(),
                )
            }
            other => Some(vec![other.clone()]),
        }
    }

    /// Entries `<prefix>.<name>` flattened into the map (`tag.role=web`).
    pub fn prefixed(&self, prefix: &str) -> Vec<(String, Value)> {
        let p = format!("{prefix}.");
        self.map
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&p).map(|name| (name.to_string(), v.clone())))
            .filter(|(name, _)| !name.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_query_and_json_body() {
        let body = Bytes::from_static(br#"{"name":"web","tags":{"a":1}}"#);
        let p = Params::parse("action=stop&name=old", "application/json", &body).unwrap();
        assert_eq!(p.str("action").as_deref(), Some("stop"));
        assert_eq!(p.str("name").as_deref(), Some("web"));
        assert_eq!(p.get("tags").unwrap()["a"], 1);
    }

    #[test]
    fn form_bodies_and_lists() {
        let body = Bytes::from_static(b"networks=a,b&tag.role=db");
        let p = Params::parse("", "application/x-www-form-urlencoded", &body).unwrap();
        assert_eq!(p.list("networks").unwrap().len(), 2);
        assert_eq!(
            p.prefixed("tag"),
            vec![("role".into(), Value::String("db".into()))]
        );
        let p = Params::parse("x=1&x=2", "", &Bytes::new()).unwrap();
        assert_eq!(p.list("x").unwrap().len(), 2);
    }

    #[test]
    fn typed_accessors() {
        let p = Params::parse("limit=5&f=true&bad=x", "", &Bytes::new()).unwrap();
        assert_eq!(p.u64("limit").unwrap(), Some(5));
        assert_eq!(p.bool("f").unwrap(), Some(true));
        assert!(p.u64("bad").is_err());
        assert!(p.required_str("missing").is_err());
        assert!(Params::parse("", "application/json", &Bytes::from_static(b"[1]")).is_err());
    }
}
