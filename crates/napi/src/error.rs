//! NAPI's one error type, mapped once to a gRPC status carrying Triton's error names
//! (`InvalidParameters`, `ResourceNotFound`, `InUse`, `SubnetFull`, ...).

use moray_client::service::Dialect;
use tonic::Code;
use triton_common::field_error::joined;
use triton_common::status::ToStatus;

/// Why one request field was refused (Triton's `errors[]` entry: field, code, message);
/// the code is `Missing`, `Invalid`, `Duplicate` or `UsedBy`, as in NAPI.
pub use triton_common::field_error::ParamError as FieldError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input; every bad field is named.
    #[error("{}", joined(.0))]
    InvalidParameters(Vec<FieldError>),

    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },

    /// The thing cannot change or go while something depends on it.
    #[error("{0}")]
    InUse(String),

    /// `what`: "network <uuid>" or "network pool <uuid> (all its networks are full)".
    #[error("no more free IPs in {what}")]
    SubnetFull { what: String },

    /// Concurrent writers kept winning for longer than the retry bound.
    #[error("{what}: gave up after {attempts} conflicting concurrent updates; try again")]
    Contention { what: String, attempts: u32 },

    #[error("invalid configuration: {0}")]
    Config(String),

    /// Moray, stored-record and server failures, as every Moray-backed service has them.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// NAPI's names and words for the failures every Moray-backed service shares.
#[derive(Debug)]
pub struct NapiNames;

impl Dialect for NapiNames {
    const UNAVAILABLE: &'static str = "StorageError";
}

moray_client::store_error!(Error, NapiNames);

pub type Result<T, E = Error> = std::result::Result<T, E>;

triton_common::field_error_constructors!(Error::InvalidParameters(FieldError));

impl Error {
    /// Triton's name for the error.
    pub fn name(&self) -> &str {
        self.code_and_name().1
    }
}

impl ToStatus for Error {
    fn code_and_name(&self) -> (Code, &str) {
        match self {
            // Only taken values (a name in use, an IP used by): the thing exists already.
            Error::InvalidParameters(errors)
                if errors
                    .iter()
                    .all(|e| e.code == "Duplicate" || e.code == "UsedBy") =>
            {
                (Code::AlreadyExists, "InvalidParameters")
            }
            Error::InvalidParameters(_) => (Code::InvalidArgument, "InvalidParameters"),
            Error::NotFound { .. } => (Code::NotFound, "ResourceNotFound"),
            Error::InUse(_) => (Code::FailedPrecondition, "InUse"),
            Error::SubnetFull { .. } => (Code::ResourceExhausted, "SubnetFull"),
            Error::Contention { .. } => (Code::Aborted, "ConcurrentUpdate"),
            Error::Config(_) => (Code::Internal, "InternalError"),
            Error::Store(e) => e.code_and_name(),
        }
    }
}

triton_common::status_from!(Error);

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;

    #[test]
    fn invalid_parameters_name_every_field() {
        let e = Error::InvalidParameters(vec![
            FieldError::invalid("subnet", "must be in CIDR form"),
            FieldError::missing("nic_tag"),
        ]);
        let s = Status::from(e);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "InvalidParameters: subnet: must be in CIDR form; nic_tag: is required"
        );
    }

    #[test]
    fn duplicates_are_already_exists() {
        let s = Status::from(Error::InvalidParameters(vec![FieldError::duplicate(
            "name",
            "nic tag \"admin\" already exists",
        )]));
        assert_eq!(s.code(), Code::AlreadyExists);
        assert_eq!(
            triton_common::status::error_name(&s),
            Some("InvalidParameters")
        );
    }

    #[test]
    fn subnet_full_says_so() {
        let s = Status::from(Error::SubnetFull {
            what: "network n".into(),
        });
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(s.message(), "SubnetFull: no more free IPs in network n");
    }
}
