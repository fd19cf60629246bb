//! The one error type of VolAPI, mapped once to a gRPC status carrying Triton's error
//! name (proto/volapi.proto lists them).

use moray_client::service::RestifyNames;
use tonic::Code;
use triton_common::status::ToStatus;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad request fields, every one of them at once (`field: rule`).
    #[error("{}", .0.join("; "))]
    Validation(Vec<String>),

    #[error("volume {0} not found")]
    VolumeNotFound(String),

    #[error("volume reservation {0} not found")]
    ReservationNotFound(String),

    #[error("{0}")]
    AlreadyExists(String),

    #[error("{0}")]
    InUse(String),

    #[error("volume size {size} is not available (available sizes: {sizes})")]
    SizeNotAvailable { size: u64, sizes: String },

    #[error("{0}")]
    InvalidNetworks(String),

    #[error("no active image named {0} in IMGAPI: volumes cannot be made")]
    NfsServerImageNotFound(String),

    /// Another service failed; its status is passed on.
    #[error("{service}: {}", .status.message())]
    Upstream {
        service: &'static str,
        status: tonic::Status,
    },

    /// The service cannot start (a bad or missing URL).
    #[error("{0}")]
    Start(String),

    /// Moray, stored-record, conflict, busy and server failures.
    #[error(transparent)]
    Store(#[from] StoreError),
}

moray_client::store_error!(Error, RestifyNames);

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// For `map_err`: a failed call to `service`.
    pub fn upstream(service: &'static str) -> impl FnOnce(tonic::Status) -> Error {
        move |status| Error::Upstream { service, status }
    }

    /// One bad field.
    pub fn invalid(field: &str, rule: impl std::fmt::Display) -> Error {
        Error::Validation(vec![format!("{field}: {rule}")])
    }
}

impl ToStatus for Error {
    fn code_and_name(&self) -> (Code, &str) {
        match self {
            Error::Validation(_) => (Code::InvalidArgument, "ValidationError"),
            Error::VolumeNotFound(_) => (Code::NotFound, "VolumeNotFound"),
            Error::ReservationNotFound(_) => (Code::NotFound, "VolumeReservationNotFound"),
            Error::AlreadyExists(_) => (Code::AlreadyExists, "VolumeAlreadyExists"),
            Error::InUse(_) => (Code::FailedPrecondition, "VolumeInUse"),
            Error::SizeNotAvailable { .. } => (Code::InvalidArgument, "VolumeSizeNotAvailable"),
            Error::InvalidNetworks(_) => (Code::InvalidArgument, "InvalidNetworks"),
            Error::NfsServerImageNotFound(_) => {
                (Code::FailedPrecondition, "NfsServerImageNotFound")
            }
            Error::Upstream { status, .. } => (
                match status.code() {
                    Code::Unavailable | Code::DeadlineExceeded => Code::Unavailable,
                    _ => Code::Internal,
                },
                "InternalError",
            ),
            Error::Start(_) => (Code::Internal, "InternalError"),
            Error::Store(e) => e.code_and_name(),
        }
    }
}

triton_common::status_from!(Error);
