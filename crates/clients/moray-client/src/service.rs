//! What every Moray-backed service (PAPI, UFDS, NAPI, IMGAPI) shares: the connection at
//! start-up and the failures that are not the service's own ([`StoreError`]).
//!
//! A service's `Error` keeps its own variants (not-found kinds, field errors) and wraps
//! these with `#[error(transparent)] Store(#[from] StoreError<Names>)`; its
//! [`Dialect`] says what Triton calls them in that service.

use std::convert::Infallible;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tonic::Code;
use triton_common::grpc::ServeError;
use triton_common::service_config::ServiceConfig;
use triton_common::status::ToStatus;

use crate::{ConnectOptions, MorayClient, MorayError, Result};

impl MorayClient {
    /// Connects to `url`, retrying for `connect_for` (a service's `moray_connect_secs`).
    pub async fn connect_for(url: &str, connect_for: Duration) -> Result<MorayClient> {
        let options = ConnectOptions {
            connect_for,
            ..Default::default()
        };
        Self::connect_with(url, options).await
    }
}

/// The default of [`MorayStartup::moray_connect_secs`].
pub const DEFAULT_MORAY_CONNECT_SECS: u64 = crate::DEFAULT_CONNECT_FOR.as_secs();

/// A service's `moray_connect_secs` key, flattened into its config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MorayStartup {
    /// Seconds to keep trying Moray at start-up (`<SERVICE>_MORAY_CONNECT_SECS`).
    pub moray_connect_secs: u64,
}

impl Default for MorayStartup {
    fn default() -> Self {
        MorayStartup {
            moray_connect_secs: DEFAULT_MORAY_CONNECT_SECS,
        }
    }
}

impl MorayStartup {
    /// Connects to `url`, retrying for `moray_connect_secs`.
    pub async fn connect(&self, url: &str) -> Result<MorayClient> {
        MorayClient::connect_for(url, Duration::from_secs(self.moray_connect_secs)).await
    }
}

/// A Moray-backed service's shared keys, flattened into its config: `listen`, `[grpc]`
/// and `moray_url` ([`ServiceConfig`]) and `moray_connect_secs` ([`MorayStartup`]).
/// It derefs to its [`ServiceConfig`], so `config.service.listen` reads as before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MorayService {
    #[serde(flatten)]
    pub service: ServiceConfig,
    #[serde(flatten)]
    pub moray: MorayStartup,
}

impl MorayService {
    /// Listening on `listen` (the service's own default port), with the defaults for
    /// the rest.
    pub fn new(listen: &str) -> Self {
        MorayService {
            service: ServiceConfig::new(listen),
            moray: MorayStartup::default(),
        }
    }

    /// Connects to `moray_url`, retrying for `moray_connect_secs`.
    pub async fn connect(&self) -> Result<MorayClient> {
        self.moray.connect(&self.service.moray_url).await
    }
}

impl Deref for MorayService {
    type Target = ServiceConfig;

    fn deref(&self) -> &ServiceConfig {
        &self.service
    }
}

impl DerefMut for MorayService {
    fn deref_mut(&mut self) -> &mut ServiceConfig {
        &mut self.service
    }
}

/// The names and words one service uses for the shared failures; the defaults are NAPI's
/// and IMGAPI's.
pub trait Dialect: fmt::Debug + Send + Sync + 'static {
    /// Triton's name for a retryable Moray failure (`StorageError`, `StorageIsDown`).
    const UNAVAILABLE: &'static str;
    /// Triton's name for a write that lost every retry.
    const BUSY: &'static str = "ConcurrentUpdate";
    /// What a stored record that does not parse is said to be.
    const CORRUPT: &'static str = "is invalid";
    /// The message of a gRPC server failure.
    const SERVE: &'static str = "cannot start the gRPC server";
}

/// A service error module's `StoreError` (the shared failures in its `dialect`) and
/// `Error::moray(what)`, for `map_err`, and `Error::conflict(field, value, detail)`; its
/// `Error` has a variant
/// `Store(#[from] StoreError)`: `moray_client::store_error!(Error, Names)`.
#[macro_export]
macro_rules! store_error {
    ($error:ident, $dialect:ty) => {
        /// This service's failures that every Moray-backed service has.
        pub type StoreError = $crate::service::StoreError<$dialect>;

        impl $error {
            /// For `map_err`: the Moray failure of the call `what`.
            pub fn moray(what: impl Into<String>) -> impl FnOnce($crate::MorayError) -> $error {
                let store = StoreError::moray(what);
                move |source| $error::Store(store(source))
            }

            /// `value` of the unique `field` is taken; the message quotes it.
            pub fn conflict(field: &'static str, value: &str, detail: &str) -> $error {
                $error::Store(StoreError::conflict(field, value, detail))
            }
        }
    };
}

/// restify's own error names (`ServiceUnavailable`, `ConflictError`), as PAPI and UFDS
/// use them.
#[derive(Debug)]
pub struct RestifyNames;

impl Dialect for RestifyNames {
    const UNAVAILABLE: &'static str = "ServiceUnavailable";
    const BUSY: &'static str = "ConflictError";
    const CORRUPT: &'static str = "cannot be read";
    const SERVE: &'static str = "gRPC server";
}

/// A failure of a Moray-backed service that is not about its own kinds of things.
#[derive(Debug)]
pub enum StoreError<D: Dialect> {
    /// A Moray call failed; `what` names it (`putObject`, `find networks`).
    Moray { what: String, source: MorayError },
    /// A stored record that does not parse: a bug or a hand edit.
    Corrupt { what: String, reason: String },
    /// A write lost every race against concurrent changes; the caller may retry.
    Busy(String),
    /// A unique value already taken: `field` names it, `value` is shown as given.
    Conflict {
        field: &'static str,
        value: String,
        detail: String,
    },
    /// The gRPC server could not start or failed.
    Serve(ServeError),
    #[doc(hidden)]
    Dialect(Infallible, PhantomData<D>),
}

impl<D: Dialect> StoreError<D> {
    /// For `map_err`: the Moray failure of the call `what`.
    pub fn moray(what: impl Into<String>) -> impl FnOnce(MorayError) -> Self {
        let what = what.into();
        move |source| StoreError::Moray { what, source }
    }

    /// `value` of the unique `field` is taken: the message quotes it, then `detail`
    /// (` (the account already has this key)`, or empty).
    pub fn conflict(field: &'static str, value: &str, detail: &str) -> Self {
        StoreError::Conflict {
            field,
            value: format!("{value:?}"),
            detail: detail.to_string(),
        }
    }

    /// A stored record that does not parse: `what` names it, `reason` says why.
    pub fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

impl<D: Dialect> fmt::Display for StoreError<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Moray { what, .. } => write!(f, "Moray {what} failed"),
            StoreError::Corrupt { what, reason } => {
                write!(f, "stored {what} {}: {reason}", D::CORRUPT)
            }
            StoreError::Busy(message) => f.write_str(message),
            StoreError::Conflict {
                field,
                value,
                detail,
            } => write!(f, "{field} {value} is already in use{detail}"),
            StoreError::Serve(_) => f.write_str(D::SERVE),
            StoreError::Dialect(never, _) => match *never {},
        }
    }
}

impl<D: Dialect> std::error::Error for StoreError<D> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Moray { source, .. } => Some(source),
            StoreError::Serve(source) => Some(source),
            _ => None,
        }
    }
}

impl<D: Dialect> ToStatus for StoreError<D> {
    fn code_and_name(&self) -> (Code, &str) {
        match self {
            StoreError::Moray { source, .. } if source.is_retryable() => {
                (Code::Unavailable, D::UNAVAILABLE)
            }
            StoreError::Moray { .. } | StoreError::Corrupt { .. } | StoreError::Serve(_) => {
                (Code::Internal, "InternalError")
            }
            StoreError::Busy(_) => (Code::Aborted, D::BUSY),
            StoreError::Conflict { .. } => (Code::AlreadyExists, "ConflictError"),
            StoreError::Dialect(never, _) => match *never {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use triton_common::status::{error_message, error_name};

    #[derive(Debug)]
    struct Names;

    impl Dialect for Names {
        const UNAVAILABLE: &'static str = "StorageIsDown";
    }

    #[test]
    fn the_dialect_names_the_shared_failures() {
        let e = StoreError::<Names>::Corrupt {
            what: "image u".into(),
            reason: "no name".into(),
        };
        let s = e.to_status();
        assert_eq!(s.code(), Code::Internal);
        assert_eq!(error_name(&s), Some("InternalError"));
        assert_eq!(error_message(&s), "stored image u is invalid: no name");

        let s = StoreError::<Names>::Busy("image u changed; try again".into()).to_status();
        assert_eq!(s.code(), Code::Aborted);
        assert_eq!(error_name(&s), Some("ConcurrentUpdate"));
        assert_eq!(error_message(&s), "image u changed; try again");
    }

    #[test]
    fn conflict_shows_the_value_as_given() {
        let s = StoreError::<Names>::Conflict {
            field: "name",
            value: "\"x\"".into(),
            detail: " (taken)".into(),
        }
        .to_status();
        assert_eq!(s.code(), Code::AlreadyExists);
        assert_eq!(error_name(&s), Some("ConflictError"));
        assert_eq!(error_message(&s), "name \"x\" is already in use (taken)");

        let quoted = StoreError::<Names>::conflict("login", "bob", "").to_status();
        assert_eq!(quoted.code(), Code::AlreadyExists);
        assert_eq!(error_message(&quoted), "login \"bob\" is already in use");
    }
}
