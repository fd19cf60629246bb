//! Running the host's tools (`ip`, `tar`) with their output captured for errors.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// Runs `program args...`; a non-zero exit is an error carrying its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    run_with_input(program, args, None)
}

/// Runs `program args...` with `input` on its stdin (`ip -batch -`, `nft -f -`); a
/// non-zero exit is an error carrying its stderr and the input.
pub fn run_input(program: &str, args: &[&str], input: &str) -> Result<String> {
    run_with_input(program, args, Some(input))
}

fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String> {
    let shown = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            command: shown.clone(),
            source,
        })?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // A program that fails early closes its stdin: its exit status says why.
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(|source| Error::Spawn {
        command: shown.clone(),
        source,
    })?;
    if !out.status.success() {
        let mut output = format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        if let Some(input) = input {
            output.push_str(&format!("\ninput:\n{input}"));
        }
        return Err(Error::Command {
            command: shown,
            output,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
