//! sdcadm's one error type: each variant names what failed and where to look.

use std::path::PathBuf;
use std::process::Output;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {what}: {}", path.display())]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a valid deployment description:\n  {}", path.display(), problems.join("\n  "))]
    Description {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error("service {service}: placeholder {{{{{placeholder}}}}}: {why}")]
    Placeholder {
        service: String,
        placeholder: String,
        why: String,
    },
    #[error("services depend on each other in a cycle: {}", .0.join(", "))]
    Cycle(Vec<String>),
    #[error("no deploy/services.toml in {} or above it (set TRITON_ROOT)", .0.display())]
    NoRepo(PathBuf),
    #[error("{command} failed: {detail}")]
    Command { command: String, detail: String },
    #[error("{service}: {message}{}", log.as_ref().map(|l| format!(" (log: {})", l.display())).unwrap_or_default())]
    Service {
        service: String,
        message: String,
        log: Option<PathBuf>,
    },
    #[error("seeding {what}: {message}")]
    Seed { what: String, message: String },
    /// A call to one of the datacenter's APIs failed (or said no).
    #[error("{what}: {message}")]
    Api { what: String, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Check(String),
}

impl Error {
    pub fn io(what: impl Into<String>, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            path: path.into(),
            source,
        }
    }

    /// The [`Error::Api`] of a failed call `what` (for `map_err`): the status's code and
    /// message.
    pub fn api(what: impl Into<String>) -> impl FnOnce(tonic::Status) -> Error {
        move |s| Error::Api {
            what: what.into(),
            message: format!("{:?}: {}", s.code(), s.message()),
        }
    }
}

/// Runs `command` (named `shown` in errors) to its end and gives its output; an
/// [`Error::Command`] when it cannot start (why) or exits non-zero (its standard error).
pub fn output(command: &mut std::process::Command, shown: &str) -> Result<Output, Error> {
    let out = command.output().map_err(|e| Error::Command {
        command: shown.to_string(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: shown.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out)
}

/// `e` and its causes, joined with ": ".
pub use triton_common::service::chain;
