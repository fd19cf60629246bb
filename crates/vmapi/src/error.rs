//! The one error type of VMAPI, mapped once to a gRPC status with Triton's error name.

use tonic::Code;
use triton_common::status::ToStatus;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: every bad field, each with why (`field: why`).
    #[error("{}", .0.join("; "))]
    Validation(Vec<String>),

    /// An unknown VM, job, or referenced object (the message names the field).
    #[error("{0}")]
    NotFound(String),

    #[error("VM {uuid} was destroyed at {at}")]
    Destroyed { uuid: String, at: String },

    /// The action is not allowed in the VM's state.
    #[error("{0}")]
    State(String),

    #[error("VM {0} has no server")]
    Unallocated(String),

    #[error("{0}")]
    Duplicate(String),

    /// Moray failed.
    #[error("moray: {what}")]
    Moray {
        what: String,
        #[source]
        source: moray_client::MorayError,
    },

    /// Another API failed (`service` names it).
    #[error("{service}: {message}")]
    Upstream {
        service: &'static str,
        /// Triton error name the service gave, if any.
        name: String,
        message: String,
        code: Code,
    },

    /// An etag-conditional write lost a race.
    #[error("concurrent update of {0}")]
    Conflict(String),

    #[error("{0}")]
    Config(String),

    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: &str, why: impl std::fmt::Display) -> Error {
        Error::Validation(vec![format!("{field}: {why}")])
    }

    pub fn moray(what: impl Into<String>) -> impl FnOnce(moray_client::MorayError) -> Error {
        let what = what.into();
        move |source| {
            if source.name() == "EtagConflictError" || source.name() == "UniqueAttributeError" {
                Error::Conflict(what)
            } else {
                Error::Moray { what, source }
            }
        }
    }

    /// A failed call to another service.
    pub fn upstream(service: &'static str) -> impl FnOnce(tonic::Status) -> Error {
        move |status| Error::Upstream {
            service,
            name: triton_common::status::error_name(&status)
                .unwrap_or("")
                .to_string(),
            message: triton_common::status::error_message(&status).to_string(),
            code: status.code(),
        }
    }

    /// Triton's name for the error.
    pub fn name(&self) -> &str {
        self.code_and_name().1
    }

    pub fn code(&self) -> Code {
        self.code_and_name().0
    }

    /// Worth trying again (within a step's deadline): the other side was away, or a
    /// conditional write lost a race.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Moray { source, .. } => source.is_retryable(),
            // Cancelled: the call's own deadline passed (tonic's "Timeout expired").
            Error::Upstream { code, .. } => {
                matches!(
                    code,
                    Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
                )
            }
            Error::Conflict(_) => true,
            _ => false,
        }
    }

    /// The message with its causes.
    pub fn full_message(&self) -> String {
        triton_common::service::chain(self)
    }
}

impl ToStatus for Error {
    fn code_and_name(&self) -> (Code, &str) {
        match self {
            Error::Validation(_) => (Code::InvalidArgument, "ValidationFailed"),
            Error::NotFound(_) => (Code::NotFound, "ResourceNotFound"),
            Error::Destroyed { .. } => (Code::FailedPrecondition, "VmDestroyed"),
            Error::State(_) => (Code::FailedPrecondition, "VmStateError"),
            Error::Unallocated(_) => (Code::FailedPrecondition, "UnallocatedVm"),
            Error::Duplicate(_) => (Code::AlreadyExists, "Duplicate"),
            Error::Moray { source, .. } if source.is_retryable() => {
                (Code::Unavailable, "ServiceUnavailable")
            }
            Error::Moray { .. } => (Code::Internal, "InternalError"),
            // The other service's name, and its code where the caller can act on it.
            Error::Upstream { name, code, .. } => {
                let away = matches!(
                    code,
                    Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
                );
                let code = match code {
                    _ if away => Code::Unavailable,
                    Code::NotFound => Code::NotFound,
                    Code::InvalidArgument => Code::InvalidArgument,
                    Code::FailedPrecondition | Code::ResourceExhausted => Code::FailedPrecondition,
                    _ => Code::Internal,
                };
                let name = match name.as_str() {
                    "" if away => "ServiceUnavailable",
                    "" => "InternalError",
                    name => name,
                };
                (code, name)
            }
            Error::Conflict(_) => (Code::Aborted, "ConcurrentUpdate"),
            Error::Config(_) | Error::Internal(_) => (Code::Internal, "InternalError"),
        }
    }
}

triton_common::status_from!(Error);
