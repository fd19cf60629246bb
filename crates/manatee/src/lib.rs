//! Manatee: highly available PostgreSQL for Moray, after Triton's manatee.
//!
//! - [`state_machine`]: the decision logic of one peer, pure and tested apart from I/O;
//! - [`coord`]: the cluster state, its history and the peers' registrations in etcd;
//! - [`pg`]: running and reconfiguring the peer's own PostgreSQL;
//! - [`sitter`]: the sitter, tying the three together, with its gRPC status service;
//! - [`adm`]: `manatee-adm`, the operator's tool.
//!
//! The cluster-state types and the client that follows a shard's primary live in the
//! `manatee-client` crate, which Moray uses without depending on this one.

pub mod adm;
pub mod coord;
pub mod pg;
pub mod sitter;
pub mod state_machine;

pub use sitter::{SitterConfig, run as run_sitter};

/// The version every binary reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Etcd(#[from] manatee_client::Error),
    #[error("the etcd lease expired")]
    LeaseExpired,
    #[error("shutting down")]
    Stopped,
    #[error("refusing to write an invalid cluster state: {reason}")]
    InvalidState { reason: String },
    #[error("cannot run {command}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {output}")]
    Command { command: String, output: String },
    #[error("i/o on {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("PostgreSQL at {url}")]
    Postgres {
        url: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("PostgreSQL did not become ready within {seconds} s; its log ends with:\n{log}")]
    PgNotReady { seconds: u64, log: String },
    #[error("PostgreSQL exited unexpectedly ({status}); its log ends with:\n{log}")]
    PgExited { status: String, log: String },
    #[error("{what}")]
    Pg { what: String },
    #[error("configuration")]
    Config(#[from] triton_common::config::ConfigError),
    #[error("status server")]
    Serve(#[from] triton_common::grpc::ServeError),
    #[error("{0}")]
    Fatal(String),
    /// A manatee-adm command refused to act; the message says why.
    #[error("{0}")]
    Refused(String),
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
