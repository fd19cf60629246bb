//! The one error type of CNS, mapped once to a gRPC status carrying Triton's error name
//! (`InvalidArgument`, `ResourceNotFound`, ...).

use moray_client::service::RestifyNames;
use tonic::Code;
use triton_common::field_error::{joined, missing_or_invalid};
use triton_common::status::ToStatus;

pub use triton_common::field_error::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad request or config fields, every one of them at once.
    #[error("{}", joined(.0))]
    Invalid(Vec<FieldError>),

    /// No such VM, peer or zone.
    #[error("{0}")]
    NotFound(String),

    /// A stored zone, step or config that does not read back.
    #[error("{0}")]
    Corrupt(String),

    /// Start-up failed (an address that does not bind, a URL that does not parse).
    #[error("{0}")]
    Start(String),

    /// Moray, stored-record, conflict, busy and server failures, as every Moray-backed
    /// service has them.
    #[error(transparent)]
    Store(#[from] StoreError),
}

moray_client::store_error!(Error, RestifyNames);

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl ToStatus for Error {
    fn code_and_name(&self) -> (Code, &str) {
        match self {
            Error::Invalid(errors) => (Code::InvalidArgument, missing_or_invalid(errors)),
            Error::NotFound(_) => (Code::NotFound, "ResourceNotFound"),
            Error::Corrupt(_) => (Code::Internal, "InternalError"),
            Error::Start(_) => (Code::Internal, "InternalError"),
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
    fn invalid_fields_are_named() {
        let s = Status::from(Error::Invalid(vec![FieldError::invalid(
            "hostmaster",
            "must look like local@domain",
        )]));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(error_name(&s), Some("InvalidArgument"));
        assert_eq!(error_message(&s), "hostmaster must look like local@domain");
    }
}
