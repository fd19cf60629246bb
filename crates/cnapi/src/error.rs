//! The one error type of CNAPI, mapped once to gRPC statuses with Triton's error names.

use std::collections::BTreeMap;

use tonic::{Code, Status};
use triton_common::status::ToStatus;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("server {0} does not exist")]
    ServerNotFound(Uuid),
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{message}")]
    NoAllocatableServers {
        message: String,
        /// Why each server was dropped.
        reasons: BTreeMap<Uuid, String>,
    },
    #[error("the record changed meanwhile (etag conflict)")]
    EtagConflict,
    #[error("storage failed: {0}")]
    Store(String),
    #[error("cannot reach the cn-agent of server {server} at {url}")]
    AgentUnreachable {
        server: Uuid,
        url: String,
        #[source]
        source: triton_common::channel::ChannelError,
    },
    #[error("cn-agent of server {server}: {status}")]
    Agent { server: Uuid, status: tonic::Status },
    #[error("NAPI: cannot {what}: {}", status.message())]
    Napi { what: String, status: tonic::Status },
    #[error("cannot encode or decode {what}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

triton_common::field_error_constructors!(Error::Invalid { field, message });

impl ToStatus for Error {
    fn code_and_name(&self) -> (Code, &str) {
        match self {
            Error::ServerNotFound(_) => (Code::NotFound, "ResourceNotFoundError"),
            Error::Invalid { .. } => (Code::InvalidArgument, "ValidationFailedError"),
            Error::NoAllocatableServers { .. } => {
                (Code::ResourceExhausted, "NoAllocatableServersError")
            }
            Error::EtagConflict => (Code::Aborted, "EtagConflictError"),
            Error::AgentUnreachable { .. } => (Code::Unavailable, "ServiceUnavailableError"),
            Error::Agent { status, .. } => (status.code(), "InternalError"),
            Error::Napi { .. } => (Code::Unavailable, "ServiceUnavailableError"),
            Error::Store(_) | Error::Json { .. } => (Code::Internal, "InternalError"),
        }
    }

    /// The agent's own error (VmNotFoundError, ...) goes to the caller as it is.
    fn relayed(&self) -> Option<&Status> {
        match self {
            Error::Agent { status, .. } => Some(status),
            _ => None,
        }
    }
}

triton_common::status_from!(Error);

pub type Result<T, E = Error> = std::result::Result<T, E>;
