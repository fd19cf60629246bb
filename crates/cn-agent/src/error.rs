//! The one error type of cn-agent. Each variant names what failed and carries the cause as
//! its source; [`Error::name`] gives the Triton error name used on the wire.

use std::path::PathBuf;

use tonic::Code;
use triton_common::status::ToStatus;
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
    pub fn name(&self) -> &str {
        self.code_and_name().1
    }

    /// The message with every source appended, for logs and task results.
    pub fn chain(&self) -> String {
        triton_common::service::chain(self)
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

triton_common::field_error_constructors!(Error::Invalid { field, message });

impl ToStatus for Error {
    fn code_and_name(&self) -> (Code, &str) {
        match self {
            Error::VmNotFound(_) => (Code::NotFound, "VmNotFoundError"),
            Error::VmExists(_) => (Code::AlreadyExists, "VmExistsError"),
            Error::ImageNotFound(_) => (Code::NotFound, "ImageNotFoundError"),
            Error::SnapshotNotFound { .. } => (Code::NotFound, "SnapshotNotFoundError"),
            Error::Invalid { .. } | Error::UnknownNicTag(_) => {
                (Code::InvalidArgument, "ValidationFailedError")
            }
            Error::WrongState { .. } => (Code::FailedPrecondition, "VmStateError"),
            Error::TaskNotFound(_) => (Code::NotFound, "TaskNotFoundError"),
            Error::QueueFull(_) => (Code::Unavailable, "ServiceUnavailableError"),
            Error::Timeout(_) => (Code::DeadlineExceeded, "TimeoutError"),
            _ => (Code::Internal, "InternalError"),
        }
    }
}

triton_common::status_from!(Error);

pub type Result<T, E = Error> = std::result::Result<T, E>;
