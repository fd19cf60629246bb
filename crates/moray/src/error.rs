//! The one error type of Moray, with Triton's error names, mapped once to a gRPC status.
//!
//! Every variant's message names the field, bucket or key concerned and the rule that was
//! broken. [`MorayError::name`] is Triton's error name (`EtagConflictError`, ...), carried in
//! the status message prefix and in the `x-triton-error` metadata by
//! [`triton_common::status::named`].

use tonic::Code;
use triton_common::status::ToStatus;

#[derive(Debug, thiserror::Error)]
pub enum MorayError {
    #[error("bucket {bucket} does not exist")]
    BucketNotFound { bucket: String },

    #[error("bucket {bucket} already exists{detail}")]
    BucketConflict { bucket: String, detail: String },

    #[error(
        "bucket {bucket}: version {requested} does not replace the stored version {stored} (a versioned bucket is only replaced by a higher version)"
    )]
    BucketVersion {
        bucket: String,
        stored: u32,
        requested: u32,
    },

    #[error("{bucket}/{key}: etag conflict: expected {expected}, found {actual}")]
    EtagConflict {
        bucket: String,
        key: String,
        expected: String,
        actual: String,
    },

    #[error("{bucket}/{key} does not exist")]
    ObjectNotFound { bucket: String, key: String },

    #[error("{attribute} already has a value {value} (unique index)")]
    UniqueAttribute { attribute: String, value: String },

    #[error("{0}")]
    InvalidBucketConfig(String),

    #[error("bucket name {name:?} is invalid: {reason}")]
    InvalidBucketName { name: String, reason: String },

    #[error("index {field:?}: type {index_type:?} is not a Moray index type")]
    InvalidIndexDefinition { field: String, index_type: String },

    #[error("index field {field:?} (type {index_type}): {reason}")]
    InvalidIndexType {
        field: String,
        index_type: String,
        reason: String,
    },

    #[error("invalid filter {filter:?}: {reason}")]
    InvalidQuery { filter: String, reason: String },

    #[error(
        "{bucket} does not have indexes that support {filter}; unindexed fields: [{}]; reindexing fields: [{}]",
        unindexed.join(", "),
        reindexing.join(", ")
    )]
    NotIndexed {
        bucket: String,
        filter: String,
        unindexed: Vec<String>,
        reindexing: Vec<String>,
    },

    #[error("field {field:?} cannot be set to null")]
    NotNullable { field: String },

    #[error("{0}")]
    FieldUpdate(String),

    #[error("{0}")]
    Invocation(String),

    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },

    #[error("{field} is {size} bytes, over the limit of {limit} bytes (max_value_bytes)")]
    ValueTooLarge {
        field: String,
        size: usize,
        limit: usize,
    },

    #[error("the request did not complete within {timeout_ms} ms")]
    QueryTimeout { timeout_ms: u64 },

    #[error("no PostgreSQL primary is available: {reason}")]
    NoDatabasePeers { reason: String },

    #[error(
        "the connection to PostgreSQL was lost during the request; it may or may not have been applied"
    )]
    ConnectionLost(#[source] tokio_postgres::Error),

    #[error(
        "changes after seq {since} are no longer complete in the feed (kept from seq {oldest}); resync from a full listing, then watch from the seq it gives"
    )]
    ResyncRequired { since: u64, oldest: u64 },

    #[error(
        "{since} is ahead of the feed (last seq {head}); this feed is not the one the consumer followed; resync"
    )]
    FeedAhead { since: u64, head: u64 },

    #[error("PostgreSQL error {code}: {message}")]
    Database {
        code: String,
        message: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("{0}")]
    Internal(String),
}

impl MorayError {
    /// Triton's name for this error.
    pub fn name(&self) -> &'static str {
        use MorayError::*;
        match self {
            BucketNotFound { .. } => "BucketNotFoundError",
            BucketConflict { .. } => "BucketConflictError",
            BucketVersion { .. } => "BucketVersionError",
            EtagConflict { .. } => "EtagConflictError",
            ObjectNotFound { .. } => "ObjectNotFoundError",
            UniqueAttribute { .. } => "UniqueAttributeError",
            InvalidBucketConfig(_) => "InvalidBucketConfigError",
            InvalidBucketName { .. } => "InvalidBucketNameError",
            InvalidIndexDefinition { .. } => "InvalidIndexDefinitionError",
            InvalidIndexType { .. } => "InvalidIndexTypeError",
            InvalidQuery { .. } => "InvalidQueryError",
            NotIndexed { .. } => "NotIndexedError",
            NotNullable { .. } => "NotNullableError",
            FieldUpdate(_) => "FieldUpdateError",
            Invocation(_) => "InvocationError",
            InvalidArgument { .. } => "InvalidArgumentError",
            ValueTooLarge { .. } => "ValueTooLargeError",
            QueryTimeout { .. } => "QueryTimeoutError",
            NoDatabasePeers { .. } => "NoDatabasePeersError",
            ConnectionLost(_) => "ConnectionLostError",
            ResyncRequired { .. } | FeedAhead { .. } => "ResyncRequiredError",
            Database { .. } | Internal(_) => "InternalError",
        }
    }

    /// The gRPC code (the "Rust note" of the spec, A8).
    pub fn code(&self) -> Code {
        use MorayError::*;
        match self {
            BucketNotFound { .. } | ObjectNotFound { .. } => Code::NotFound,
            EtagConflict { .. } => Code::Aborted,
            BucketVersion { .. } => Code::FailedPrecondition,
            UniqueAttribute { .. } | BucketConflict { .. } => Code::AlreadyExists,
            InvalidBucketConfig(_)
            | InvalidBucketName { .. }
            | InvalidIndexDefinition { .. }
            | InvalidIndexType { .. }
            | InvalidQuery { .. }
            | NotIndexed { .. }
            | NotNullable { .. }
            | FieldUpdate(_)
            | Invocation(_)
            | InvalidArgument { .. }
            | ValueTooLarge { .. } => Code::InvalidArgument,
            QueryTimeout { .. } => Code::DeadlineExceeded,
            NoDatabasePeers { .. } | ConnectionLost(_) => Code::Unavailable,
            ResyncRequired { .. } | FeedAhead { .. } => Code::OutOfRange,
            Database { code, .. } => match &code[..2.min(code.len())] {
                "22" | "42" => Code::InvalidArgument,
                "40" => Code::Aborted,
                "08" | "53" | "57" => Code::Unavailable,
                _ => Code::Internal,
            },
            Internal(_) => Code::Internal,
        }
    }

    pub fn invalid_argument(field: impl Into<String>, reason: impl Into<String>) -> Self {
        MorayError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn invalid_query(filter: impl Into<String>, reason: impl Into<String>) -> Self {
        MorayError::InvalidQuery {
            filter: filter.into(),
            reason: reason.into(),
        }
    }
}

impl ToStatus for MorayError {
    fn code_and_name(&self) -> (Code, &str) {
        (self.code(), self.name())
    }
}

triton_common::status_from!(MorayError);

/// PostgreSQL errors: unique violations become `UniqueAttributeError` naming the column and
/// value, syntax errors `InternalError` "Invalid SQL", a lost connection or a session the
/// server ended (class 08, 57P01–57P03) `ConnectionLostError` (outcome unknown), a
/// read-only primary (25006) `NoDatabasePeersError` (not applied, retryable); anything else
/// keeps its SQLSTATE.
impl From<tokio_postgres::Error> for MorayError {
    fn from(e: tokio_postgres::Error) -> MorayError {
        let Some(db) = e.as_db_error() else {
            // tokio-postgres does not expose its error kinds; a closed connection and an i/o
            // failure are the two that mean "the connection is gone".
            if e.is_closed()
                || e.to_string()
                    .starts_with("error communicating with the server")
            {
                return MorayError::ConnectionLost(e);
            }
            return MorayError::Internal(format!("PostgreSQL client error: {e}"));
        };
        let code = db.code().code().to_string();
        match code.as_str() {
            "23505" if db.message().contains("violates unique constraint") => {
                let (attribute, value) =
                    db.detail()
                        .and_then(parse_unique_detail)
                        .unwrap_or_else(|| {
                            (db.constraint().unwrap_or("?").to_string(), "?".to_string())
                        });
                MorayError::UniqueAttribute { attribute, value }
            }
            // A read-only transaction: a new primary still waiting for its sync to catch
            // up (Manatee enables writes only then), or a deposed one. The transaction
            // failed as a whole, so nothing was applied: retryable.
            "25006" => MorayError::NoDatabasePeers {
                reason: format!(
                    "the primary is read-only (SQLSTATE 25006: {}; a new primary is waiting for its sync to catch up); the statement was not applied",
                    db.message()
                ),
            },
            // The server ended the session (shutdown, or Manatee terminating sessions when
            // it reconfigures the primary). A commit that was waiting for the sync when
            // this came is committed locally: the outcome is unknown, as for a lost
            // connection.
            "57P01" | "57P02" | "57P03" => MorayError::ConnectionLost(e),
            c if c.starts_with("08") => MorayError::ConnectionLost(e),
            "42601" | "42701" => MorayError::Database {
                code,
                message: format!("Invalid SQL: {}", db.message()),
                source: e,
            },
            "57014" => MorayError::Database {
                code,
                message: format!("query cancelled: {}", db.message()),
                source: e,
            },
            _ => MorayError::Database {
                code,
                message: db.message().to_string(),
                source: e,
            },
        }
    }
}

/// `Key (col)=(val) already exists.` → (col, val).
fn parse_unique_detail(detail: &str) -> Option<(String, String)> {
    let rest = detail.strip_prefix("Key (")?;
    let close = rest.find(")=(")?;
    let column = &rest[..close];
    let value = &rest[close + 3..];
    let end = value.rfind(')')?;
    Some((column.to_string(), value[..end].to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;

    #[test]
    fn unique_detail_names_column_and_value() {
        assert_eq!(
            parse_unique_detail("Key (email)=(a@b.c) already exists."),
            Some(("email".into(), "a@b.c".into()))
        );
        assert_eq!(parse_unique_detail("garbage"), None);
    }

    #[test]
    fn status_carries_name_and_code() {
        let s: Status = MorayError::EtagConflict {
            bucket: "b".into(),
            key: "k".into(),
            expected: "null".into(),
            actual: "ABCDEF01".into(),
        }
        .into();
        assert_eq!(s.code(), Code::Aborted);
        assert_eq!(
            triton_common::status::error_name(&s),
            Some("EtagConflictError")
        );
        assert!(
            s.message().contains("expected null, found ABCDEF01"),
            "{}",
            s.message()
        );
    }
}
