//! Real PostgreSQL and etcd for tests: each started from Debian's packaged binaries in its
//! own temp dir on a free loopback port, and stopped (with everything it wrote removed)
//! when dropped. Child processes also die with the test process (PR_SET_PDEATHSIG), so a
//! killed test run leaves nothing behind.
//!
//! With the `moray` feature, [`MorayFixture`] also starts a Moray in-process on such a
//! PostgreSQL. The feature is off by default so that the test kit stays free of service
//! crates (Moray's own tests use the test kit without it).

// A test kit fails the test it serves by panicking, with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![deny(missing_docs)]

pub mod bytes;
pub mod cpu;
mod etcd;
#[cfg(feature = "moray")]
mod moray_fixture;
mod port;
mod postgres;
mod process;

pub use etcd::Etcd;
#[cfg(feature = "moray")]
pub use moray_fixture::{MorayFixture, keep_no_change_log};
pub use port::free_port;
pub use postgres::{Postgres, PostgresOptions, pg_bin_dir};
pub use process::{spawn_tied, wait_until};

/// Why a fixture did not start.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A program the fixture runs is missing.
    #[error("{what} is not installed ({hint})")]
    NotInstalled {
        /// The program.
        what: &'static str,
        /// How to install it.
        hint: &'static str,
    },
    /// A program could not be started.
    #[error("cannot run {command}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A program exited non-zero.
    #[error("{command} failed: {output}")]
    Failed {
        /// The command line.
        command: String,
        /// What it printed.
        output: String,
    },
    /// A server did not answer in time.
    #[error("{what} did not become ready within {seconds} s; its log:\n{log}")]
    NotReady {
        /// The server.
        what: String,
        /// How long it was given.
        seconds: u64,
        /// The end of its log.
        log: String,
    },
    /// A file or directory could not be read or written.
    #[error("i/o on {path}")]
    Io {
        /// The file or directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
