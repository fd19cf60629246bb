//! The `invalid` and `missing` constructors of a service error that carries
//! [`FieldError`](crate::field_error::FieldError)s or
//! [`ParamError`](crate::field_error::ParamError)s ([`crate::field_error_constructors!`]).

/// `Error::invalid(field, message)` and `Error::missing(field)` for a service's `Error`
/// whose `Variant` holds a `Vec<FieldError>`: `field_error_constructors!(Error::Invalid)`;
/// for one holding a `Vec` of another field error with the same two constructors (NAPI's
/// and IMGAPI's [`ParamError`](crate::field_error::ParamError)):
/// `field_error_constructors!(Error::InvalidParameters(ParamError))`.
/// For an `Error` whose variant names one field, `Invalid { field: String, message:
/// String }`: `field_error_constructors!(Error::Invalid { field, message })` gives
/// `Error::invalid(field, message)`.
#[macro_export]
macro_rules! field_error_constructors {
    ($error:ident :: $variant:ident { field, message }) => {
        impl $error {
            /// `field` broke a rule; `message` says which.
            pub fn invalid(field: &str, message: impl Into<String>) -> $error {
                $error::$variant {
                    field: field.to_string(),
                    message: message.into(),
                }
            }
        }
    };
    ($error:ident :: $variant:ident) => {
        $crate::field_error_constructors!($error::$variant($crate::field_error::FieldError));
    };
    ($error:ident :: $variant:ident ( $field_error:ty )) => {
        impl $error {
            /// `field` broke a rule; `message` says which.
            pub fn invalid(field: &str, message: impl Into<String>) -> $error {
                $error::$variant(vec![<$field_error>::invalid(field, message)])
            }

            /// `field` is required and was not given.
            pub fn missing(field: &str) -> $error {
                $error::$variant(vec![<$field_error>::missing(field)])
            }
        }
    };
}
