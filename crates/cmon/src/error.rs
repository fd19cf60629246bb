//! CMon's errors: restify's JSON body `{"code": ..., "message": ...}` with the codes
//! Triton's CMon answers (`Unauthorized`, `NotFound`, `BadRequest`,
//! `SecureTransportRequired`, `InternalServer`), and what stops it starting.

use std::ops::Deref;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use triton_common::rest::RestError;

/// An error as a client sees it: Triton's REST error (its `status`, `code` and `message`
/// read through `Deref`), made only with CMon's codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(transparent)]
pub struct ApiError(RestError);

impl ApiError {
    /// 401: no certificate, or one that does not authenticate (the reason is about the
    /// caller's own certificate, never another account's things).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError(RestError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            message,
        ))
    }

    /// 404: an unknown Host, or an instance or node the caller may not see: the same
    /// answer as one that does not exist.
    pub fn not_found() -> Self {
        ApiError(RestError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "not found",
        ))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError(RestError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            message,
        ))
    }

    /// 500: a backend (UFDS, a compute node's agent) failed; the text is logged, not sent.
    pub fn internal() -> Self {
        ApiError(RestError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServer",
            "internal error",
        ))
    }

    /// 403 for plain HTTP on the HTTPS port.
    pub fn secure_transport_required() -> Self {
        ApiError(RestError::new(
            StatusCode::FORBIDDEN,
            "SecureTransportRequired",
            "Container Monitor requires a secure transport (SSL/TLS)",
        ))
    }
}

impl Deref for ApiError {
    type Target = RestError;

    fn deref(&self) -> &RestError {
        &self.0
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

/// Why CMon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("bad configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Tls(#[from] triton_common::tls::TlsError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Channel(#[from] triton_common::channel::ChannelError),
}

impl StartError {
    /// For `map_err`: the listener could not be bound to `addr`.
    pub fn listen(addr: &str) -> impl FnOnce(std::io::Error) -> StartError {
        let addr = addr.to_string();
        move |source| StartError::Listen { addr, source }
    }
}
