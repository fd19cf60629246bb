//! What is wrong with one field of a request: Triton's `errors[]` entry
//! (`{field, code: Missing|Invalid, message}`). Services collect every one of them and
//! report them at once.

use std::fmt;

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as the API names it.
    pub field: String,
    /// Missing or invalid.
    pub code: FieldCode,
    /// What is wrong, after the field's name (`is missing`, `must be ...`).
    pub message: String,
}

/// The kind of a field's problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldCode {
    /// Required and not given.
    Missing,
    /// Given, and not valid.
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
    /// `field` is missing.
    pub fn missing(field: &str) -> Self {
        FieldError {
            field: field.to_string(),
            code: FieldCode::Missing,
            message: "is missing".to_string(),
        }
    }

    /// `field` is invalid: `message` says why.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_missing_is_missing_parameter() {
        let errors = [FieldError::missing("name"), FieldError::missing("version")];
        assert_eq!(missing_or_invalid(&errors), "MissingParameter");
        assert_eq!(joined(&errors), "name is missing; version is missing");
    }

    #[test]
    fn any_invalid_is_invalid_argument() {
        let errors = [
            FieldError::missing("name"),
            FieldError::invalid("quota", "must be a multiple of 1024"),
        ];
        assert_eq!(missing_or_invalid(&errors), "InvalidArgument");
    }
}
