//! IMGAPI's one error type, mapped once to a gRPC status and to the REST body
//! `{"code", "message"}` with IMGAPI's names and HTTP statuses.

use moray_client::service::Dialect;
use tonic::Code;
use triton_common::field_error::joined;
use triton_common::status::ToStatus;

/// Why one manifest or request field was refused; the code is `Missing` or `Invalid`,
/// as IMGAPI's `errors[].code`.
pub use triton_common::field_error::ParamError as FieldError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}", joined(.0))]
    Validation(Vec<FieldError>),

    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },

    #[error("image uuid {0} already exists")]
    UuidExists(String),

    #[error("image {0} is already activated")]
    AlreadyActivated(String),

    #[error("image {0} cannot be activated: it has no file")]
    NoActivationNoFile(String),

    #[error("image {0} is activated: its file cannot change")]
    FilesImmutable(String),

    #[error("image {uuid} is {state}: only an activated image can be {action}")]
    NotActivated {
        uuid: String,
        state: String,
        action: &'static str,
    },

    #[error("image {uuid} is the origin of image {dependent}")]
    HasDependents { uuid: String, dependent: String },

    #[error("origin: image {0} does not exist")]
    OriginDoesNotExist(String),

    #[error("sha1: the file's sha1 is {actual}, expected {expected}")]
    Checksum { expected: String, actual: String },

    #[error("size: the file is {actual} bytes, expected {expected}")]
    SizeMismatch { expected: u64, actual: u64 },

    /// The client's upload stream failed or broke the protocol.
    #[error("upload failed: {0}")]
    Upload(String),

    #[error("{what}: gave up after {attempts} conflicting concurrent updates; try again")]
    Contention { what: String, attempts: u32 },

    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid configuration: {0}")]
    Config(String),

    /// Moray, stored-record and server failures, as every Moray-backed service has them.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// IMGAPI's names and words for the failures every Moray-backed service shares.
#[derive(Debug)]
pub struct ImgapiNames;

impl Dialect for ImgapiNames {
    const UNAVAILABLE: &'static str = "StorageIsDown";
}

moray_client::store_error!(Error, ImgapiNames);

pub type Result<T, E = Error> = std::result::Result<T, E>;

triton_common::field_error_constructors!(Error::Validation(FieldError));

impl Error {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    /// IMGAPI's error code.
    pub fn name(&self) -> &str {
        self.code_and_name().1
    }

    pub fn code(&self) -> Code {
        self.code_and_name().0
    }

    /// The HTTP status of IMGAPI's REST API for this error.
    pub fn http_status(&self) -> u16 {
        match self.code() {
            Code::InvalidArgument | Code::FailedPrecondition => 422,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::Unavailable => 503,
            Code::Cancelled => 400,
            _ => 500,
        }
    }
}

impl ToStatus for Error {
    fn code_and_name(&self) -> (Code, &str) {
        match self {
            Error::Validation(_) => (Code::InvalidArgument, "ValidationFailed"),
            Error::NotFound { .. } => (Code::NotFound, "ResourceNotFound"),
            Error::UuidExists(_) => (Code::AlreadyExists, "ImageUuidAlreadyExists"),
            Error::AlreadyActivated(_) => (Code::FailedPrecondition, "ImageAlreadyActivated"),
            Error::NoActivationNoFile(_) => (Code::FailedPrecondition, "NoActivationNoFile"),
            Error::FilesImmutable(_) => (Code::FailedPrecondition, "ImageFilesImmutable"),
            Error::NotActivated { .. } => (Code::FailedPrecondition, "ImageNotActivated"),
            Error::HasDependents { .. } => (Code::FailedPrecondition, "ImageHasDependentImages"),
            Error::OriginDoesNotExist(_) => (Code::FailedPrecondition, "OriginDoesNotExist"),
            Error::Checksum { .. } => (Code::InvalidArgument, "ChecksumError"),
            Error::SizeMismatch { .. } => (Code::InvalidArgument, "SizeMismatch"),
            Error::Contention { .. } => (Code::Aborted, "ConcurrentUpdate"),
            Error::Upload(_) => (Code::Cancelled, "UploadError"),
            Error::Io { .. } | Error::Config(_) => (Code::Internal, "InternalError"),
            Error::Store(e) => e.code_and_name(),
        }
    }
}

triton_common::status_from!(Error);

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;

    #[test]
    fn names_codes_and_statuses() {
        let e = Error::Validation(vec![
            FieldError::invalid("os", "must be one of smartos, linux"),
            FieldError::missing("owner"),
        ]);
        assert_eq!(e.http_status(), 422);
        let s = Status::from(e);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "ValidationFailed: os: must be one of smartos, linux; owner: is required"
        );
        assert_eq!(Error::UuidExists("u".into()).http_status(), 409);
        assert_eq!(
            Status::from(Error::NoActivationNoFile("u".into())).message(),
            "NoActivationNoFile: image u cannot be activated: it has no file"
        );
    }
}
