//! The one error type of PAPI, mapped once to a gRPC status carrying Triton's error name
//! (`ResourceNotFound`, `InvalidArgument`, `MissingParameter`, `ConflictError`,
//! `BadMethod`, ...).

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

    #[error("package {0} does not exist")]
    PackageNotFound(String),

    /// An operation Triton refuses outright (deleting a package without `force`).
    #[error("{0}")]
    BadMethod(String),

    /// Moray, stored-record, conflict, busy and server failures, as every Moray-backed
    /// service has them.
    #[error(transparent)]
    Store(#[from] StoreError),
}

moray_client::store_error!(Error, RestifyNames);

pub type Result<T, E = Error> = std::result::Result<T, E>;

triton_common::field_error_constructors!(Error::Invalid);

impl ToStatus for Error {
    fn code_and_name(&self) -> (Code, &str) {
        match self {
            Error::Invalid(errors) => (Code::InvalidArgument, missing_or_invalid(errors)),
            Error::PackageNotFound(_) => (Code::NotFound, "ResourceNotFound"),
            Error::BadMethod(_) => (Code::FailedPrecondition, "BadMethod"),
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
    fn each_error_has_its_code_and_triton_name() {
        for (error, code, name, message) in [
            (
                Error::conflict("uuid", "x", ""),
                Code::AlreadyExists,
                "ConflictError",
                "uuid \"x\" is already in use",
            ),
            (
                Error::PackageNotFound("p".into()),
                Code::NotFound,
                "ResourceNotFound",
                "package p does not exist",
            ),
            (
                Error::BadMethod("packages cannot be deleted".into()),
                Code::FailedPrecondition,
                "BadMethod",
                "packages cannot be deleted",
            ),
            (
                Error::missing("name"),
                Code::InvalidArgument,
                "MissingParameter",
                "name is missing",
            ),
        ] {
            let s = Status::from(error);
            assert_eq!(s.code(), code, "{name}");
            assert_eq!(error_name(&s), Some(name));
            assert_eq!(error_message(&s), message);
        }
    }
}
