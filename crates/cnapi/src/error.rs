//! The one error type of CNAPI, mapped once to gRPC statuses with Triton's error names.

use std::collections::BTreeMap;

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
    #[error("cannot encode or decode {what}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    pub fn invalid(field: &str, message: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Error::ServerNotFound(_) => "ResourceNotFoundError",
            Error::Invalid { .. } => "ValidationFailedError",
            Error::NoAllocatableServers { .. } => "NoAllocatableServersError",
            Error::EtagConflict => "EtagConflictError",
            Error::AgentUnreachable { .. } => "ServiceUnavailableError",
            _ => "InternalError",
        }
    }

    pub fn to_status(&self) -> tonic::Status {
        use tonic::Code;
        if let Error::Agent { status, .. } = self {
            // The agent's own error (VmNotFoundError, ...) goes to the caller as it is.
            return status.clone();
        }
        let code = match self {
            Error::ServerNotFound(_) => Code::NotFound,
            Error::Invalid { .. } => Code::InvalidArgument,
            Error::NoAllocatableServers { .. } => Code::ResourceExhausted,
            Error::EtagConflict => Code::Aborted,
            Error::AgentUnreachable { .. } => Code::Unavailable,
            _ => Code::Internal,
        };
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        triton_common::status::named(code, self.name(), text)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
