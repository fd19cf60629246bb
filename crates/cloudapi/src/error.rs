//! CloudAPI's errors: Triton's REST error body `{"code": ..., "message": ...}` with the
//! restify status of each code, and the one place backend (gRPC) errors are mapped to
//! it.

use std::ops::Deref;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use triton_common::rest::RestError;

/// An error as a tenant sees it: Triton's REST error (its `status`, restCode `code` and
/// `message` read through `Deref`) and, for a few, more fields in its body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rest}")]
pub struct ApiError {
    pub rest: RestError,
    /// Sent with `InvalidVersion` and friends; none for most errors.
    pub body_extra: Option<serde_json::Value>,
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            rest: RestError::new(status, code, message),
            body_extra: None,
        }
    }

    /// A backend call failed. Triton passes on only validation and not-found errors
    /// with their messages; anything else keeps its class but hides its text
    /// (`lib/errors.js` vmapiErrorWrap / napiErrorWrap).
    pub fn backend(service: &'static str, status: tonic::Status) -> Self {
        let name = triton_common::status::error_name(&status).unwrap_or("");
        let message = triton_common::status::error_message(&status).to_string();
        use tonic::Code;
        match (name, status.code()) {
            ("ResourceNotFound", _) | (_, Code::NotFound) => Self::not_found(message),
            ("MissingParameter", _) => Self::missing_parameter(message),
            ("ValidationFailed" | "InvalidParameters" | "InvalidArgument", _)
            | (_, Code::InvalidArgument) => Self::invalid_argument(message),
            ("Duplicate" | "ConflictError" | "ImageUuidAlreadyExists", _)
            | (_, Code::AlreadyExists) => Self::invalid_argument(message),
            ("NoAllocatableServersError", _) => {
                Self::new(StatusCode::CONFLICT, "NoAllocatableServersError", message)
            }
            ("InsufficientCapacity" | "SubnetFull", _) | (_, Code::ResourceExhausted) => {
                Self::new(StatusCode::CONFLICT, "InsufficientCapacity", message)
            }
            ("InUse", _) => Self::new(StatusCode::CONFLICT, "InUseError", message),
            ("VmStateError", _) => Self::invalid_state(message),
            ("VmDestroyed", _) => Self::new(StatusCode::GONE, "ResourceNotFound", message),
            (_, Code::FailedPrecondition) => Self::invalid_state(message),
            (_, Code::Unavailable) => {
                tracing::warn!(service, error = %status.message(), "backend unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    format!("{service} is unavailable"),
                )
            }
            _ => {
                tracing::error!(service, code = ?status.code(), error = %status.message(), "backend error");
                Self::internal("Internal error")
            }
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut body = self.rest.body();
        if let (Some(serde_json::Value::Object(extra)), Some(map)) =
            (&self.body_extra, body.as_object_mut())
        {
            for (k, v) in extra {
                map.insert(k.clone(), v.clone());
            }
        }
        body
    }
}

impl Deref for ApiError {
    type Target = RestError;

    fn deref(&self) -> &RestError {
        &self.rest
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        crate::server::json_response(self.status, &self.body())
    }
}

/// One constructor per Triton error: its name, status and restCode.
macro_rules! triton_errors {
    ($($name:ident: $status:ident, $code:literal;)*) => {
        impl ApiError {
            $(
                #[doc = concat!("`", $code, "`, ", stringify!($status), ".")]
                pub fn $name(message: impl Into<String>) -> Self {
                    Self::new(StatusCode::$status, $code, message)
                }
            )*
        }
    };
}

triton_errors! {
    not_found: NOT_FOUND, "ResourceNotFound";
    invalid_argument: CONFLICT, "InvalidArgument";
    missing_parameter: CONFLICT, "MissingParameter";
    invalid_credentials: UNAUTHORIZED, "InvalidCredentials";
    not_authorized: FORBIDDEN, "NotAuthorized";
    invalid_header: BAD_REQUEST, "InvalidHeader";
    invalid_state: CONFLICT, "InvalidState";
    internal: INTERNAL_SERVER_ERROR, "InternalError";
    bad_request: BAD_REQUEST, "BadRequest";
}

/// Errors of start-up (bad config, cannot bind, bad certificate).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("bad config: {0}")]
    Config(String),
    #[error(transparent)]
    Tls(#[from] triton_common::tls::TlsError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bad backend URL for {service}")]
    BadUrl {
        service: &'static str,
        #[source]
        source: triton_common::channel::ChannelError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_errors_keep_triton_codes() {
        let s = triton_common::status::named(
            tonic::Code::InvalidArgument,
            "ValidationFailed",
            "alias: bad",
        );
        let e = ApiError::backend("vmapi", s);
        assert_eq!(
            (e.status, e.code, e.message.as_str()),
            (StatusCode::CONFLICT, "InvalidArgument", "alias: bad")
        );
        let s = triton_common::status::named(
            tonic::Code::NotFound,
            "ResourceNotFound",
            "vm x not found",
        );
        assert_eq!(ApiError::backend("vmapi", s).status, StatusCode::NOT_FOUND);
        let e = ApiError::backend("vmapi", tonic::Status::internal("secret detail"));
        assert_eq!(e.code, "InternalError");
        assert!(!e.message.contains("secret"));
    }
}
