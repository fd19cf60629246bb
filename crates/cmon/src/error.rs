//! CMon's errors: restify's JSON body `{"code": ..., "message": ...}` with the codes
//! Triton's CMon answers (`Unauthorized`, `NotFound`, `BadRequest`,
//! `SecureTransportRequired`, `InternalServer`), and what stops it starting.

use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

/// An error as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    /// 401: no certificate, or one that does not authenticate (the reason is about the
    /// caller's own certificate, never another account's things).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "Unauthorized",
            message: message.into(),
        }
    }

    /// 404: an unknown Host, or an instance or node the caller may not see: the same
    /// answer as one that does not exist.
    pub fn not_found() -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "NotFound",
            message: "not found".to_string(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "BadRequest",
            message: message.into(),
        }
    }

    /// 500: a backend (UFDS, a compute node's agent) failed; the text is logged, not sent.
    pub fn internal() -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "InternalServer",
            message: "internal error".to_string(),
        }
    }

    /// 403 for plain HTTP on the HTTPS port.
    pub fn secure_transport_required() -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            code: "SecureTransportRequired",
            message: "Container Monitor requires a secure transport (SSL/TLS)".to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.code, "message": self.message });
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
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
