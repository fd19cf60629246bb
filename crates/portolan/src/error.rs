//! Portolan's start-up and serving failures. Failures of one lookup are not errors of
//! the service: they are answered with a FATAL status and logged (`app.rs`).

use moray_client::MorayError;
use triton_common::grpc::ServeError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Moray call at start-up failed; `what` names it.
    #[error("Moray {what} failed")]
    Moray {
        what: String,
        #[source]
        source: MorayError,
    },
    /// The SVP listener could not be bound.
    #[error("cannot listen for SVP on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The gRPC (health) server could not start or failed.
    #[error("gRPC server")]
    Serve(#[source] ServeError),
    /// A serving task ended abnormally.
    #[error("serving task")]
    Task(#[source] tokio::task::JoinError),
}

impl Error {
    /// For `map_err`: the Moray failure of the call `what`.
    pub fn moray(what: impl Into<String>) -> impl FnOnce(MorayError) -> Error {
        let what = what.into();
        move |source| Error::Moray { what, source }
    }

    /// For `map_err`: the SVP listener could not be bound to `addr`.
    pub fn listen(addr: &str) -> impl FnOnce(std::io::Error) -> Error {
        let addr = addr.to_string();
        move |source| Error::Listen { addr, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
