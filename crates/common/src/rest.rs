//! Triton's REST error, as CloudAPI and CMon answer it: an HTTP status and restify's JSON
//! body `{"code": ..., "message": ...}`. Each service wraps a [`RestError`] in its own
//! `ApiError`, with constructors for the codes it answers.

use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

/// An error as a client of a REST API sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RestError {
    /// The response's status.
    pub status: StatusCode,
    /// restify's restCode: `ResourceNotFound`, `InvalidArgument`, ...
    pub code: &'static str,
    /// What the client is told.
    pub message: String,
}

impl RestError {
    /// The error `code` answered with `status`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        RestError {
            status,
            code,
            message: message.into(),
        }
    }

    /// The JSON body, `{"code": ..., "message": ...}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.code, "message": self.message })
    }
}

impl IntoResponse for RestError {
    /// The status, with the body as `application/json`.
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.body().to_string(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_code_and_message() {
        let e = RestError::new(StatusCode::NOT_FOUND, "NotFound", "no \"such\" thing");
        assert_eq!(e.to_string(), "NotFound: no \"such\" thing");
        assert_eq!(
            e.body().to_string(),
            r#"{"code":"NotFound","message":"no \"such\" thing"}"#
        );
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
