//! Errors on the wire. Every service keeps Triton's error names (`BucketNotFoundError`,
//! `EtagConflictError`, ...): a status's message starts with the name, and the metadata key
//! [`ERROR_NAME_KEY`] carries it alone, so clients match on the name, not on the text.
//!
//! A service's error type implements [`ToStatus`] in its `error.rs`: one table from each
//! variant to its gRPC code and Triton name. The message (the error and its causes), the
//! log line for the server's own failures and the status itself come from here, and
//! [`crate::status_from!`] gives the `From<Error> for Status` that `?` in a handler needs.

use tonic::{Code, Status};

/// An error that knows its place on the wire.
pub trait ToStatus: std::error::Error + Sized + 'static {
    /// The gRPC code and Triton's error name: the service's one table, a row per variant.
    fn code_and_name(&self) -> (Code, &str);

    /// The status message after the name: the error and its causes, `a: b: c`.
    fn message(&self) -> String {
        crate::service::chain(self)
    }

    /// A status passed on as it is (another service's own error, relayed), instead of
    /// the table's.
    fn relayed(&self) -> Option<&Status> {
        None
    }

    /// The status, logged first (with causes) when the failure is the server's own
    /// (`INTERNAL`, `UNAVAILABLE`, `UNKNOWN`, `DATA_LOSS`) rather than the caller's.
    fn to_status(&self) -> Status {
        if let Some(status) = self.relayed() {
            return status.clone();
        }
        let (code, name) = self.code_and_name();
        let message = self.message();
        if matches!(
            code,
            Code::Internal | Code::Unavailable | Code::Unknown | Code::DataLoss
        ) {
            tracing::error!(error = %message, name, "request failed");
        }
        named(code, name, message)
    }
}

/// `impl From<$error> for tonic::Status` through [`ToStatus::to_status`], so a handler's
/// `?` turns the service's error into its status.
#[macro_export]
macro_rules! status_from {
    ($error:ty) => {
        impl ::std::convert::From<$error> for ::tonic::Status {
            fn from(e: $error) -> ::tonic::Status {
                $crate::status::ToStatus::to_status(&e)
            }
        }
    };
}

/// gRPC metadata key holding the Triton error name of a failed call.
pub const ERROR_NAME_KEY: &str = "x-triton-error";

/// A status with Triton's error `name`: message `"<name>: <message>"`.
pub fn named(code: Code, name: &str, message: impl std::fmt::Display) -> Status {
    let mut status = Status::new(code, format!("{name}: {message}"));
    if let Ok(value) = name.parse() {
        status.metadata_mut().insert(ERROR_NAME_KEY, value);
    }
    status
}

/// The Triton error name a status carries, if any.
pub fn error_name(status: &Status) -> Option<&str> {
    status
        .metadata()
        .get(ERROR_NAME_KEY)
        .and_then(|v| v.to_str().ok())
}

/// The message of a named status without its `"<name>: "` prefix.
pub fn error_message(status: &Status) -> &str {
    match error_name(status) {
        Some(name) => status
            .message()
            .strip_prefix(name)
            .and_then(|m| m.strip_prefix(": "))
            .unwrap_or(status.message()),
        None => status.message(),
    }
}

/// Another service's answer to a look-up, with `NotFound` read as "it is not there":
/// `Ok(Some(message))` when it answered, `Ok(None)` when it does not know the object (or
/// it is gone already), and every other status as it came, for the caller to name.
pub fn found<T>(answer: Result<tonic::Response<T>, Status>) -> Result<Option<T>, Status> {
    match answer {
        Ok(r) => Ok(Some(r.into_inner())),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Failed {
        #[error("widget {0} does not exist")]
        Missing(String),
        #[error("store failed")]
        Store(#[source] std::io::Error),
    }

    impl ToStatus for Failed {
        fn code_and_name(&self) -> (Code, &str) {
            match self {
                Failed::Missing(_) => (Code::NotFound, "ResourceNotFound"),
                Failed::Store(_) => (Code::Internal, "InternalError"),
            }
        }
    }

    #[test]
    fn the_table_gives_code_name_and_the_causes() {
        let s = Failed::Missing("w1".into()).to_status();
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(error_name(&s), Some("ResourceNotFound"));
        assert_eq!(error_message(&s), "widget w1 does not exist");

        let s = Failed::Store(std::io::Error::other("disk full")).to_status();
        assert_eq!(s.code(), Code::Internal);
        assert_eq!(s.message(), "InternalError: store failed: disk full");
    }

    #[test]
    fn name_round_trips_through_metadata() {
        let s = named(
            Code::NotFound,
            "BucketNotFoundError",
            "bucket \"vms\" does not exist",
        );
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(error_name(&s), Some("BucketNotFoundError"));
        assert_eq!(error_message(&s), "bucket \"vms\" does not exist");
        assert!(s.message().starts_with("BucketNotFoundError: "));
    }

    #[test]
    fn plain_status_has_no_name() {
        let s = Status::internal("boom");
        assert_eq!(error_name(&s), None);
        assert_eq!(error_message(&s), "boom");
    }

    #[test]
    fn found_reads_not_found_as_absent_and_passes_other_failures_on() {
        assert_eq!(found(Ok(tonic::Response::new("nic"))).unwrap(), Some("nic"));
        let gone = named(Code::NotFound, "ResourceNotFound", "nic 1 does not exist");
        assert_eq!(found::<()>(Err(gone)).unwrap(), None);
        for code in [Code::Unavailable, Code::PermissionDenied, Code::Internal] {
            let failed = found::<()>(Err(named(code, "Failed", "no"))).unwrap_err();
            assert_eq!(failed.code(), code);
            assert_eq!(error_name(&failed), Some("Failed"));
        }
    }
}
