//! The one error type of UFDS, mapped once to a gRPC status carrying Triton's error name
//! (`ResourceNotFound`, `InvalidArgument`, `MissingParameter`, `ConflictError`, ...).

use moray_client::service::RestifyNames;
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

    /// Moray, stored-record, conflict, busy and server failures, as every Moray-backed
    /// service has them.
    #[error(transparent)]
    Store(#[from] StoreError),
}

moray_client::store_error!(Error, RestifyNames);

pub type Result<T, E = Error> = std::result::Result<T, E>;

triton_common::field_error_constructors!(Error::Invalid);

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
            Error::Store(e) => e.code_and_name(),
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
        let s = Status::from(Error::conflict("login", "bob", ""));
        assert_eq!(s.code(), Code::AlreadyExists);
        assert_eq!(error_name(&s), Some("ConflictError"));
        assert_eq!(error_message(&s), "login \"bob\" is already in use");
    }
}
