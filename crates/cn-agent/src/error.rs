//! The one error type of cn-agent. Each variant names what failed and carries the cause as
//! its source; [`Error::name`] gives the Triton error name used on the wire.

use std::path::PathBuf;

use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("instance {0} does not exist on this node")]
    VmNotFound(Uuid),
    #[error("instance {0} already exists on this node")]
    VmExists(Uuid),
    #[error("instance {uuid} has no snapshot {name:?}")]
    SnapshotNotFound { uuid: Uuid, name: String },
    #[error("image {0} is not installed on this node")]
    ImageNotFound(Uuid),
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    #[error("instance {uuid} is {state}, which does not allow {action}")]
    WrongState {
        uuid: Uuid,
        state: String,
        action: &'static str,
    },
    #[error("no bridge is configured for nic tag {0:?}")]
    UnknownNicTag(String),
    #[error("i/o on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {output}")]
    Command { command: String, output: String },
    #[error("cannot run {command}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("starting instance {uuid} failed")]
    Launch {
        uuid: Uuid,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Timeout(String),
    #[error("cannot encode or decode {what}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("task {0} does not exist")]
    TaskNotFound(String),
    #[error("the task queue is full ({0} tasks are active)")]
    QueueFull(usize),
    #[error("a background step failed: {0}")]
    Join(String),
}

impl Error {
    /// Triton's name for the error, as clients match on it.
    pub fn name(&self) -> &'static str {
        match self {
            Error::VmNotFound(_) => "VmNotFoundError",
            Error::VmExists(_) => "VmExistsError",
            Error::ImageNotFound(_) => "ImageNotFoundError",
            Error::SnapshotNotFound { .. } => "SnapshotNotFoundError",
            Error::Invalid { .. } | Error::UnknownNicTag(_) => "ValidationFailedError",
            Error::WrongState { .. } => "VmStateError",
            Error::TaskNotFound(_) => "TaskNotFoundError",
            Error::QueueFull(_) => "ServiceUnavailableError",
            Error::Timeout(_) => "TimeoutError",
            _ => "InternalError",
        }
    }

    /// The gRPC status for the error.
    pub fn to_status(&self) -> tonic::Status {
        use tonic::Code;
        let code = match self {
            Error::VmNotFound(_)
            | Error::ImageNotFound(_)
            | Error::TaskNotFound(_)
            | Error::SnapshotNotFound { .. } => Code::NotFound,
            Error::VmExists(_) => Code::AlreadyExists,
            Error::Invalid { .. } | Error::UnknownNicTag(_) => Code::InvalidArgument,
            Error::WrongState { .. } => Code::FailedPrecondition,
            Error::QueueFull(_) => Code::Unavailable,
            Error::Timeout(_) => Code::DeadlineExceeded,
            _ => Code::Internal,
        };
        triton_common::status::named(code, self.name(), self.chain())
    }

    /// The message with every source appended, for logs and task results.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
