//! moray-cli: node-moray's operator commands (putbucket, getobject, findobjects, ...)
//! against a Moray server. Exit status 0 on success, 1 on failure (printed as
//! `moray-cli: <ErrorName>: <message>`), 2 on a usage error, as node-moray's.

mod args;
mod commands;

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use moray_client::{ConnectOptions, MorayAddr, MorayClient};

use args::{Cli, Command, Common};
use commands::Failure;

/// `ping -F` waits for Moray this long ("until found", bounded so a typo'd host
/// does not hang a script forever).
const PING_WAIT: Duration = Duration::from_secs(3600);

fn main() -> ExitCode {
    let cli = Cli::parse_from(argv());
    let _telemetry = (cli.common.verbose > 0).then(|| triton_common::telemetry::init("moray-cli"));
    match triton_common::tool::block_on(run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(failure)) => fail(failure),
        Err(e) => fail(Failure(format!("cannot start the runtime: {e}"))),
    }
}

fn fail(failure: Failure) -> ExitCode {
    eprintln!("moray-cli: {}", failure.0);
    ExitCode::FAILURE
}

/// The arguments, with the command taken from the program's name when it runs as
/// one of node-moray's tools (`putbucket ...` through a symlink).
fn argv() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .map(str::to_owned);
    if let Some(name) = invoked {
        let cmd = Cli::command();
        let known = cmd
            .get_subcommands()
            .any(|s| s.get_name() == name || s.get_all_aliases().any(|a| a == name));
        if known {
            args.insert(1, name.into());
        }
    }
    args
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let addr = server_addr(&cli.common)?;
    let connect_for = match cli.command {
        Command::Ping { wait: true, .. } => PING_WAIT,
        // node-moray's tools fail fast: one attempt.
        _ => Duration::ZERO,
    };
    if matches!(cli.command, Command::Gettokens) {
        return Err(Failure("Operation not supported".to_string()));
    }
    let moray = MorayClient::connect_with(
        &addr.to_string(),
        ConnectOptions {
            connect_for,
            request_timeout: None,
            // One call per command: nothing to coalesce.
            coalesce_gets: None,
            coalesce_puts: None,
        },
    )
    .await?;
    commands::run(&moray, cli.command).await
}

/// node-moray's rule: `-h`/`-p` win; one of them alone takes the other from
/// `MORAY_URL`; else `MORAY_URL`; else 127.0.0.1:2020.
fn server_addr(common: &Common) -> Result<MorayAddr, Failure> {
    let from_env = || -> Result<MorayAddr, Failure> {
        match std::env::var("MORAY_URL") {
            Ok(url) if !url.is_empty() => {
                MorayAddr::parse(&url).map_err(|e| Failure(format!("MORAY_URL: {e}")))
            }
            _ => Ok(MorayAddr {
                host: "127.0.0.1".to_string(),
                port: moray_client::DEFAULT_PORT,
            }),
        }
    };
    Ok(match (&common.host, common.port) {
        (Some(host), Some(port)) => MorayAddr {
            host: host.clone(),
            port,
        },
        (Some(host), None) => MorayAddr {
            host: host.clone(),
            port: from_env()?.port,
        },
        (None, Some(port)) => MorayAddr {
            host: from_env()?.host,
            port,
        },
        (None, None) => from_env()?,
    })
}
