//! Real PostgreSQL and etcd for tests: each started from Debian's packaged binaries in its
//! own temp dir on a free loopback port, and stopped (with everything it wrote removed)
//! when dropped. Child processes also die with the test process (PR_SET_PDEATHSIG), so a
//! killed test run leaves nothing behind.
//!
//! With the `moray` feature, [`MorayFixture`] also starts a Moray in-process on such a
//! PostgreSQL. The feature is off by default so that the test kit stays free of service
//! crates (Moray's own tests use the test kit without it).

pub mod cpu;
mod etcd;
#[cfg(feature = "moray")]
mod moray_fixture;
mod port;
mod postgres;
mod process;

pub use etcd::Etcd;
#[cfg(feature = "moray")]
pub use moray_fixture::MorayFixture;
pub use port::free_port;
pub use postgres::{Postgres, PostgresOptions, pg_bin_dir};
pub use process::{spawn_tied, wait_until};

#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error("{what} is not installed ({hint})")]
    NotInstalled {
        what: &'static str,
        hint: &'static str,
    },
    #[error("cannot run {command}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {output}")]
    Failed { command: String, output: String },
    #[error("{what} did not become ready within {seconds} s; its log:\n{log}")]
    NotReady {
        what: String,
        seconds: u64,
        log: String,
    },
    #[error("i/o on {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
