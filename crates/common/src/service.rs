//! The `main` every service binary shares: flags, config, telemetry, run, exit code.
//!
//! ```text
//! papi [-f|--config CONFIG] [--check-config]
//! ```
//!
//! `-f FILE` / `--config FILE` names the TOML config (also `<SERVICE>_CONFIG`; `-c` is kept
//! as a hidden alias); every key can also be set as `<SERVICE>_<KEY>` ([`crate::config`]).
//! `--check-config` loads and validates the config, prints `OK` or the problems, and exits.
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM or SIGINT), 1 when the service fails to
//! start or fails while running, 2 for a bad command line or a bad config.
//!
//! A service's `main.rs` is then one [`crate::service_main!`]:
//!
//! ```ignore
//! triton_common::service_main!(
//!     "papi",
//!     "PAPI: packages, stored in Moray",
//!     |config: papi::Config, shutdown| async move {
//!         let running = papi::start(config, shutdown).await?;
//!         Ok(running.task.await??)
//!     }
//! );
//! ```

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Arg, ArgAction, Command};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// What a service's run function may fail with; `?` turns any error into one, keeping its
/// causes.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Exit code after a clean shutdown.
pub const EXIT_OK: u8 = 0;
/// Exit code when the service fails to start or fails while running.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a bad command line or a bad config.
pub const EXIT_CONFIG: u8 = 2;

/// An error and its causes on one line: `a: b: c`. Use it for every log line and message
/// about an error, so the cause is never lost (`tracing::error!(error = %chain(&e), ..)`).
pub fn chain(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        // Some errors repeat their cause in their own message; say it once.
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Why a service's main ended without success.
#[derive(Debug)]
pub enum Failure {
    /// The command line or the config is bad: exit 2.
    Config(String),
    /// The service failed to start or failed while running: exit 1.
    Runtime(String),
}

impl Failure {
    /// The process's exit code for it: 2 for config, 1 for runtime.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Config(_) => EXIT_CONFIG,
            Failure::Runtime(_) => EXIT_FAILURE,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Config(m) | Failure::Runtime(m) => f.write_str(m),
        }
    }
}

type Check<C> = Box<dyn Fn(&C) -> Result<(), String>>;

/// One service binary: its name (which also prefixes its environment variables), its
/// one-line description, and the checks its config must pass beyond its types.
pub struct Service<C> {
    name: &'static str,
    about: &'static str,
    check: Option<Check<C>>,
}

impl<C> Service<C>
where
    C: Serialize + DeserializeOwned + Default,
{
    /// The service `name` (its config's environment prefix, upper-cased), with `about`
    /// for `--help`.
    pub fn new(name: &'static str, about: &'static str) -> Self {
        Service {
            name,
            about,
            check: None,
        }
    }

    /// A check of the loaded config (every problem at once, each naming its key); a
    /// failure is a config error (exit 2), also for `--check-config`.
    pub fn check<E: fmt::Display>(mut self, check: impl Fn(&C) -> Result<(), E> + 'static) -> Self {
        self.check = Some(Box::new(move |c| check(c).map_err(|e| e.to_string())));
        self
    }

    fn command(&self) -> Command {
        let env = format!(
            "{}_CONFIG",
            self.name.to_ascii_uppercase().replace('-', "_")
        );
        let prefix = self.name.to_ascii_uppercase().replace('-', "_");
        Command::new(self.name)
            .about(self.about)
            .version(env!("CARGO_PKG_VERSION"))
            .arg(
                Arg::new("config")
                    .short('f')
                    .long("config")
                    .short_alias('c')
                    .value_name("CONFIG")
                    .env(env)
                    .value_parser(clap::value_parser!(PathBuf))
                    .help(format!(
                        "TOML config file; every key can also be set as {prefix}_<KEY>"
                    )),
            )
            .arg(
                Arg::new("check-config")
                    .long("check-config")
                    .action(ArgAction::SetTrue)
                    .help("Load and check the config, print OK or its problems, and exit"),
            )
    }

    /// Parses the process's flags, loads the config, starts telemetry, runs `serve` until
    /// it returns, and prints any failure as `<name>: error: a: b: c`. `serve` gets the
    /// config and a token cancelled on SIGTERM or SIGINT, and returns once its servers
    /// have stopped.
    pub async fn run<F, Fut>(self, serve: F) -> ExitCode
    where
        F: FnOnce(C, CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), BoxError>>,
    {
        let matches = match self.command().try_get_matches() {
            Ok(m) => m,
            // --help and --version exit 0, a bad command line 2.
            Err(e) => e.exit(),
        };
        let name = self.name;
        match self.run_matches(matches, serve).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(failure) => {
                eprintln!("{name}: error: {failure}");
                ExitCode::from(failure.exit_code())
            }
        }
    }

    /// [`Service::run`] on a multi-threaded tokio runtime of its own: the whole body of a
    /// service binary's `main` (see [`crate::service_main!`]).
    pub fn main<F, Fut>(self, serve: F) -> ExitCode
    where
        F: FnOnce(C, CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), BoxError>>,
    {
        match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(self.run(serve)),
            Err(e) => {
                eprintln!(
                    "{}: error: cannot start the tokio runtime: {}",
                    self.name,
                    chain(&e)
                );
                ExitCode::from(EXIT_FAILURE)
            }
        }
    }

    /// [`Service::run`] with the command line given, returning the failure rather than
    /// printing it (for tests). `--check-config` still prints `OK`.
    pub async fn run_from<I, T, F, Fut>(self, args: I, serve: F) -> Result<(), Failure>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
        F: FnOnce(C, CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), BoxError>>,
    {
        let matches = self
            .command()
            .try_get_matches_from(args)
            .map_err(|e| Failure::Config(e.to_string()))?;
        self.run_matches(matches, serve).await
    }

    async fn run_matches<F, Fut>(self, matches: clap::ArgMatches, serve: F) -> Result<(), Failure>
    where
        F: FnOnce(C, CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), BoxError>>,
    {
        let path = matches.get_one::<PathBuf>("config").cloned();
        let check_only = matches.get_flag("check-config");
        if check_only {
            self.load(path.as_deref())?;
            println!("{}: config OK", self.name);
            return Ok(());
        }
        let _telemetry = crate::telemetry::init(self.name);
        let config = self.load(path.as_deref())?;
        let shutdown = crate::shutdown::on_signal();
        match serve(config, shutdown).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let text = chain(&*e);
                tracing::error!(error = %text, "{} failed", self.name);
                Err(Failure::Runtime(text))
            }
        }
    }

    fn load(&self, path: Option<&std::path::Path>) -> Result<C, Failure> {
        let config: C =
            crate::config::load(self.name, path).map_err(|e| Failure::Config(chain(&e)))?;
        if let Some(check) = &self.check {
            check(&config).map_err(|e| Failure::Config(format!("invalid configuration: {e}")))?;
        }
        Ok(config)
    }
}

/// A service binary's whole `main.rs`: the allocator ([`crate::global_allocator!`]) and a
/// `main` that runs [`Service::main`] with the service's name, its `--help` line, its
/// serve function and, last, an optional config check (`check = Config::check`); the
/// module's documentation has an example.
///
/// `start = papi::start` serves with a service's `start(config, shutdown)` whose
/// running handle has a `task` that ends with the server's result, as most do:
///
/// ```ignore
/// triton_common::service_main!("papi", "PAPI: packages, stored in Moray", start = papi::start);
/// ```
#[macro_export]
macro_rules! service_main {
    ($name:literal, $about:literal, start = $start:path $(, check = $check:expr)? $(,)?) => {
        $crate::service_main!($name, $about, |config, shutdown| async move {
            let running = $start(config, shutdown).await?;
            Ok(running.task.await??)
        } $(, check = $check)?);
    };
    ($name:literal, $about:literal, $serve:expr $(, check = $check:expr)? $(,)?) => {
        $crate::global_allocator!();

        fn main() -> ::std::process::ExitCode {
            $crate::service::Service::new($name, $about)
                $(.check($check))?
                .main($serve)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_names_every_cause() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
    }
}
