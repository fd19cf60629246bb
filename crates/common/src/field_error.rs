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

/// NAPI's and IMGAPI's form of one field's problem: shown `field: message` (where PAPI
/// and UFDS show `field message`), its code a name: `Missing`, `Invalid`, and NAPI's
/// `Duplicate` (a unique value taken) and `UsedBy` (an address in use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    /// The field, as the API names it.
    pub field: String,
    /// `Missing`, `Invalid`, `Duplicate` or `UsedBy`.
    pub code: &'static str,
    /// What is wrong, after the field's name and a colon.
    pub message: String,
}

impl ParamError {
    fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        ParamError {
            field: field.into(),
            code,
            message: message.into(),
        }
    }

    /// `field` is invalid: `message` says why.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(field, "Invalid", message)
    }

    /// `field` is required and was not given.
    pub fn missing(field: impl Into<String>) -> Self {
        Self::new(field, "Missing", "is required")
    }

    /// `field`'s value must be unique and is taken.
    pub fn duplicate(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(field, "Duplicate", message)
    }

    /// `field`'s value (an address) is used by something else.
    pub fn used_by(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(field, "UsedBy", message)
    }

    /// `value` if it is one of `allowed`; empty is missing, anything else invalid with
    /// the message `refusal` words from the list (`"a, b, c"`).
    pub fn one_of(
        field: &str,
        value: &str,
        allowed: &[&str],
        refusal: impl FnOnce(String) -> String,
    ) -> Result<String, ParamError> {
        if value.is_empty() {
            Err(Self::missing(field))
        } else if allowed.contains(&value) {
            Ok(value.to_string())
        } else {
            Err(Self::invalid(field, refusal(allowed.join(", "))))
        }
    }
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
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
    fn param_errors_show_field_colon_message() {
        let errors = [
            ParamError::invalid("subnet", "must be in CIDR form"),
            ParamError::missing("nic_tag"),
        ];
        assert_eq!(
            joined(&errors),
            "subnet: must be in CIDR form; nic_tag: is required"
        );
        assert_eq!(errors[1].code, "Missing");
        assert_eq!(ParamError::used_by("ip", "x").code, "UsedBy");

        let one_of = |v| ParamError::one_of("os", v, &["linux", "bsd"], |l| format!("in {l}"));
        assert_eq!(one_of("bsd"), Ok("bsd".to_string()));
        assert_eq!(one_of(""), Err(ParamError::missing("os")));
        assert_eq!(one_of("dos").unwrap_err().to_string(), "os: in linux, bsd");
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
