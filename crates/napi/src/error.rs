//! NAPI's one error type, mapped once to a gRPC status carrying Triton's error names
//! (`InvalidParameters`, `ResourceNotFound`, `InUse`, `SubnetFull`, ...).

use std::fmt;

use tonic::{Code, Status};
use triton_common::status::named;

/// Why one request field was refused (Triton's `errors[]` entry: field, code, message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    /// `Missing`, `Invalid`, `Duplicate` or `UsedBy`, as in NAPI.
    pub code: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            code: "Invalid",
            message: message.into(),
        }
    }

    pub fn missing(field: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            code: "Missing",
            message: "is required".into(),
        }
    }

    pub fn duplicate(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            code: "Duplicate",
            message: message.into(),
        }
    }

    pub fn used_by(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            code: "UsedBy",
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input; every bad field is named.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
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

    #[error("Moray {what} failed")]
    Moray {
        what: String,
        #[source]
        source: moray_client::MorayError,
    },

    /// A stored record that does not parse: a bug or a hand edit.
    #[error("stored {what} is invalid: {reason}")]
    Corrupt { what: String, reason: String },

    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("cannot start the gRPC server")]
    Serve(#[source] triton_common::grpc::ServeError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidParameters(vec![FieldError::invalid(field, message)])
    }

    pub fn moray(what: impl Into<String>) -> impl FnOnce(moray_client::MorayError) -> Error {
        let what = what.into();
        move |source| Error::Moray { what, source }
    }

    /// Triton's name for the error.
    pub fn name(&self) -> &'static str {
        match self {
            Error::InvalidParameters(_) => "InvalidParameters",
            Error::NotFound { .. } => "ResourceNotFound",
            Error::InUse(_) => "InUse",
            Error::SubnetFull { .. } => "SubnetFull",
            Error::Contention { .. } => "ConcurrentUpdate",
            Error::Moray { source, .. } if source.is_retryable() => "StorageError",
            Error::Moray { .. } | Error::Corrupt { .. } | Error::Config(_) | Error::Serve(_) => {
                "InternalError"
            }
        }
    }

    fn code(&self) -> Code {
        match self {
            Error::InvalidParameters(errors) => {
                if errors
                    .iter()
                    .all(|e| e.code == "Duplicate" || e.code == "UsedBy")
                {
                    Code::AlreadyExists
                } else {
                    Code::InvalidArgument
                }
            }
            Error::NotFound { .. } => Code::NotFound,
            Error::InUse(_) => Code::FailedPrecondition,
            Error::SubnetFull { .. } => Code::ResourceExhausted,
            Error::Contention { .. } => Code::Aborted,
            Error::Moray { source, .. } if source.is_retryable() => Code::Unavailable,
            _ => Code::Internal,
        }
    }

    /// The message with every cause appended.
    fn full_message(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        match &e {
            Error::Moray { .. } | Error::Corrupt { .. } | Error::Contention { .. } => {
                tracing::warn!(error = %e.full_message(), "request failed");
            }
            _ => {}
        }
        named(e.code(), e.name(), e.full_message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
