//! The one error type of the client: a failure reported by Moray keeps Triton's error
//! name (`EtagConflictError`, `BucketNotFoundError`, ...) so callers match on the name,
//! as node-moray callers do with `VError.findCauseByName`.

use tonic::{Code, Status};

/// A failed Moray call.
#[derive(Debug, thiserror::Error)]
pub enum MorayError {
    /// The Moray address could not be understood.
    #[error("invalid Moray URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// No connection could be made within the connect deadline.
    #[error("cannot connect to Moray at {url} (attempts: {attempts})")]
    Connect {
        /// The URL.
        url: String,
        /// How many connections were tried.
        attempts: u32,
        #[source]
        /// The last attempt's error.
        source: tonic::transport::Error,
    },

    /// Moray (or the transport under it) answered with an error.
    #[error("{name}: {message}")]
    Server {
        /// Triton's error name from the `x-triton-error` metadata; for statuses that
        /// carry none (transport failures), the gRPC code's name, e.g. `Unavailable`.
        name: String,
        /// The server's message.
        message: String,
        /// The gRPC code.
        code: Code,
    },

    /// A record of a typed bucket (`crate::typed`) does not decode as its type, or a
    /// record does not encode as JSON.
    #[error("record {key:?} of bucket {bucket}{}: {source}", field_text(field))]
    InvalidRecord {
        /// The bucket.
        bucket: String,
        /// The record's key.
        key: String,
        /// Where in the record, e.g. `nics[0].mac`; `None` for the record as a whole.
        field: Option<String>,
        #[source]
        /// Why.
        source: serde_json::Error,
    },

    /// Moray answered with something that is not what the contract promises.
    #[error("invalid response from Moray: {what}")]
    InvalidResponse {
        /// What was wrong.
        what: String,
        #[source]
        /// The decoding error, when there is one.
        source: Option<serde_json::Error>,
    },
}

fn field_text(field: &Option<String>) -> String {
    match field {
        Some(f) => format!(", field {f}"),
        None => String::new(),
    }
}

/// What a `Result` of this crate fails with.
pub type Result<T, E = MorayError> = std::result::Result<T, E>;

impl MorayError {
    /// Triton's name for this error, e.g. `"EtagConflictError"`. Errors that never
    /// reached Moray have names of their own: `InvalidUrlError`, `ConnectionError`,
    /// `InvalidResponseError`, `InvalidRecordError`.
    pub fn name(&self) -> &str {
        match self {
            MorayError::InvalidUrl { .. } => "InvalidUrlError",
            MorayError::Connect { .. } => "ConnectionError",
            MorayError::Server { name, .. } => name,
            MorayError::InvalidResponse { .. } => "InvalidResponseError",
            MorayError::InvalidRecord { .. } => "InvalidRecordError",
        }
    }

    /// The message without the name.
    pub fn message(&self) -> String {
        match self {
            MorayError::Server { message, .. } => message.clone(),
            // With its causes (transport errors repeat theirs; each is said once).
            other => triton_common::service::chain(other),
        }
    }

    /// The gRPC code, when Moray answered.
    pub fn code(&self) -> Option<Code> {
        match self {
            MorayError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when the request certainly did not change anything and may be sent again:
    /// no connection, the transport or Moray is unavailable, or Moray has no database
    /// peer (`NoDatabasePeersError`: no primary known, pool overloaded, cannot connect,
    /// or a new Manatee primary still read-only). The client itself never resends a
    /// request; a caller that retries does it knowingly.
    ///
    /// `ConnectionLostError` is UNAVAILABLE too but never retryable: the connection to
    /// PostgreSQL broke mid-request, so a write may have been applied (see
    /// [`MorayError::is_unknown_outcome`]).
    pub fn is_retryable(&self) -> bool {
        match self {
            MorayError::Connect { .. } => true,
            MorayError::Server { name, code, .. } => {
                name == "NoDatabasePeersError"
                    || (*code == Code::Unavailable && name != "ConnectionLostError")
            }
            _ => false,
        }
    }

    /// True when a write may or may not have been applied: the connection to PostgreSQL
    /// broke mid-request (`ConnectionLostError`), the request timed out
    /// (`QueryTimeoutError`, or the client's own deadline), or the call ended without
    /// an answer. Read the object back (or write idempotently) before doing it again.
    pub fn is_unknown_outcome(&self) -> bool {
        match self {
            MorayError::Server { name, code, .. } => {
                name == "ConnectionLostError"
                    || name == "QueryTimeoutError"
                    || matches!(
                        (name.as_str(), code),
                        ("DeadlineExceeded", Code::DeadlineExceeded)
                            | ("Cancelled", Code::Cancelled)
                            | ("Unknown", Code::Unknown)
                    )
            }
            _ => false,
        }
    }

    pub(crate) fn invalid_response(what: impl Into<String>, source: serde_json::Error) -> Self {
        MorayError::InvalidResponse {
            what: what.into(),
            source: Some(source),
        }
    }
}

impl From<Status> for MorayError {
    fn from(status: Status) -> Self {
        let code = status.code();
        let name = triton_common::status::error_name(&status)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{code:?}"));
        let message = triton_common::status::error_message(&status).to_owned();
        MorayError::Server {
            name,
            message,
            code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_status_keeps_its_name_and_message() {
        let status = triton_common::status::named(
            Code::FailedPrecondition,
            "EtagConflictError",
            "expected etag A, found B",
        );
        let err = MorayError::from(status);
        assert_eq!(err.name(), "EtagConflictError");
        assert_eq!(err.message(), "expected etag A, found B");
        assert_eq!(
            err.to_string(),
            "EtagConflictError: expected etag A, found B"
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn unnamed_unavailable_is_retryable() {
        let err = MorayError::from(Status::unavailable("connection refused"));
        assert_eq!(err.name(), "Unavailable");
        assert!(err.is_retryable());
    }

    /// Named errors: (code, name), then whether each is retryable and an unknown
    /// outcome. A lost connection or a timeout may have applied the write; no database
    /// peers (a read-only primary, a full queue) never did, whatever its code.
    #[test]
    fn named_errors_are_retryable_or_unknown_outcomes_by_name() {
        let cases = [
            (Code::Unavailable, "ConnectionLostError", false, true),
            (Code::DeadlineExceeded, "QueryTimeoutError", false, true),
            (Code::Unavailable, "NoDatabasePeersError", true, false),
            (Code::ResourceExhausted, "NoDatabasePeersError", true, false),
        ];
        for (code, name, retryable, unknown) in cases {
            let err = MorayError::from(triton_common::status::named(code, name, "m"));
            assert_eq!(
                (err.is_retryable(), err.is_unknown_outcome()),
                (retryable, unknown),
                "{name} ({code:?})"
            );
        }
    }
}
