//! What is wrong with one field of a request: Triton's `errors[]` entry
//! (`{field, code: Missing|Invalid, message}`). Services collect every one of them and
//! report them at once.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub code: FieldCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldCode {
    Missing,
    Invalid,
}

/// Every problem on one line, `a; b; c` (the message of a service's validation error).
pub fn joined<E: fmt::Display>(errors: &[E]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Triton's name for a set of field problems where missing fields have their own name:
/// `MissingParameter` when every one is missing, else `InvalidArgument`.
pub fn missing_or_invalid(errors: &[FieldError]) -> &'static str {
    if errors.iter().all(|e| e.code == FieldCode::Missing) {
        "MissingParameter"
    } else {
        "InvalidArgument"
    }
}

impl FieldError {
    pub fn missing(field: &str) -> Self {
        FieldError {
            field: field.to_string(),
            code: FieldCode::Missing,
            message: "is missing".to_string(),
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        FieldError {
            field: field.to_string(),
            code: FieldCode::Invalid,
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.message)
    }
}
