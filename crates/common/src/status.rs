//! Errors on the wire. Every service keeps Triton's error names (`BucketNotFoundError`,
//! `EtagConflictError`, ...): a status's message starts with the name, and the metadata key
//! [`ERROR_NAME_KEY`] carries it alone, so clients match on the name, not on the text.

use tonic::{Code, Status};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
