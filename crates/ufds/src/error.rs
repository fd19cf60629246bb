//! The one error type of UFDS, mapped once to a gRPC status carrying Triton's error name
//! (`ResourceNotFound`, `InvalidArgument`, `MissingParameter`, `ConflictError`, ...).

use tonic::Code;
use triton_common::field_error::{joined, missing_or_invalid};
use triton_common::status::ToStatus;

pub use triton_common::field_error::{FieldCode, FieldError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad or missing request fields, every one of them at once.
    #[error("{}", joined(.0))]
    Invalid(Vec<FieldError>),

    #[error("account {0} does not exist")]
    AccountNotFound(String),

    #[error("key {key} of account {account} does not exist")]
    KeyNotFound { account: String, key: String },

    /// A unique value already taken: `field` names it.
    #[error("{field} {value:?} is already in use{detail}")]
    Conflict {
        field: &'static str,
        value: String,
        detail: String,
    },

    /// A write lost every race against concurrent changes; the caller may retry.
    #[error("{0}")]
    Busy(String),

    #[error("Moray {op} failed")]
    Moray {
        op: &'static str,
        #[source]
        source: moray_client::MorayError,
    },

    #[error("stored {what} cannot be read: {reason}")]
    Corrupt { what: String, reason: String },

    #[error("gRPC server")]
    Serve(#[source] triton_common::grpc::ServeError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: &str, message: impl Into<String>) -> Error {
        Error::Invalid(vec![FieldError::invalid(field, message)])
    }

    pub fn missing(field: &str) -> Error {
        Error::Invalid(vec![FieldError::missing(field)])
    }

    pub fn moray(op: &'static str) -> impl FnOnce(moray_client::MorayError) -> Error {
        move |source| Error::Moray { op, source }
    }
}

/// `field`'s `value` broke the rule `reason` says, if any: `"<value>" is invalid: <reason>`.
pub fn invalid_value(field: &str, value: &str, reason: Option<String>) -> Option<FieldError> {
    reason.map(|r| FieldError::invalid(field, format!("{value:?} is invalid: {r}")))
}

impl ToStatus for Error {
    fn code_and_name(&self) -> (Code, &str) {
        match self {
            Error::Invalid(errors) => (Code::InvalidArgument, missing_or_invalid(errors)),
            Error::AccountNotFound(_) | Error::KeyNotFound { .. } => {
                (Code::NotFound, "ResourceNotFound")
            }
            Error::Conflict { .. } => (Code::AlreadyExists, "ConflictError"),
            Error::Busy(_) => (Code::Aborted, "ConflictError"),
            Error::Moray { source, .. } if source.is_retryable() => {
                (Code::Unavailable, "ServiceUnavailable")
            }
            Error::Moray { .. } | Error::Corrupt { .. } | Error::Serve(_) => {
                (Code::Internal, "InternalError")
            }
        }
    }
}

triton_common::status_from!(Error);

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;
    use triton_common::status::{error_message, error_name};

    #[test]
    fn conflict_names_the_field() {
        let s = Status::from(Error::Conflict {
            field: "login",
            value: "bob".into(),
            detail: String::new(),
        });
        assert_eq!(s.code(), Code::AlreadyExists);
        assert_eq!(error_name(&s), Some("ConflictError"));
        assert_eq!(error_message(&s), "login \"bob\" is already in use");
    }
}
