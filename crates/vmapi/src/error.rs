//! The one error type of VMAPI, mapped once to a gRPC status with Triton's error name.

use tonic::Code;

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
        match self {
            Error::Validation(_) => "ValidationFailed",
            Error::NotFound(_) => "ResourceNotFound",
            Error::Destroyed { .. } => "VmDestroyed",
            Error::State(_) => "VmStateError",
            Error::Unallocated(_) => "UnallocatedVm",
            Error::Duplicate(_) => "Duplicate",
            Error::Moray { source, .. } if source.is_retryable() => "ServiceUnavailable",
            Error::Moray { .. } => "InternalError",
            Error::Upstream { name, code, .. } => {
                if !name.is_empty() {
                    name
                } else if matches!(
                    code,
                    Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
                ) {
                    "ServiceUnavailable"
                } else {
                    "InternalError"
                }
            }
            Error::Conflict(_) => "ConcurrentUpdate",
            Error::Config(_) | Error::Internal(_) => "InternalError",
        }
    }

    pub fn code(&self) -> Code {
        match self {
            Error::Validation(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::Destroyed { .. } | Error::State(_) | Error::Unallocated(_) => {
                Code::FailedPrecondition
            }
            Error::Duplicate(_) => Code::AlreadyExists,
            Error::Moray { source, .. } if source.is_retryable() => Code::Unavailable,
            Error::Moray { .. } => Code::Internal,
            Error::Upstream { code, .. } => match code {
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Code::Unavailable,
                Code::NotFound => Code::NotFound,
                Code::InvalidArgument => Code::InvalidArgument,
                Code::FailedPrecondition | Code::ResourceExhausted => Code::FailedPrecondition,
                _ => Code::Internal,
            },
            Error::Conflict(_) => Code::Aborted,
            Error::Config(_) | Error::Internal(_) => Code::Internal,
        }
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
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    pub fn to_status(&self) -> tonic::Status {
        if self.code() == Code::Internal {
            tracing::error!(error = %self.full_message(), "request failed");
        }
        triton_common::status::named(self.code(), self.name(), self.full_message())
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        e.to_status()
    }
}
