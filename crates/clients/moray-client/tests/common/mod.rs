//! A real Moray on a real PostgreSQL, both on free loopback ports, for one test.

#![allow(dead_code)] // each test binary uses part of it

use std::process::Output;

use triton_testkit::MorayFixture;

pub struct TestMoray {
    /// `tcp://127.0.0.1:PORT`, as Triton's MORAY_URL.
    pub url: String,
    _moray: MorayFixture,
}

impl TestMoray {
    pub async fn start() -> TestMoray {
        let moray = MorayFixture::start().await;
        TestMoray {
            url: moray.url().to_string(),
            _moray: moray,
        }
    }

    pub async fn client(&self) -> moray_client::MorayClient {
        moray_client::MorayClient::connect(&self.url)
            .await
            .expect("client connects")
    }

    /// Runs `moray-cli ARGS` against this Moray (through MORAY_URL).
    pub async fn cli(&self, args: &[&str]) -> Cli {
        cli_with_env(args, Some(&self.url), None).await
    }

    /// Runs `moray-cli ARGS` and asserts it fails naming `error` ([`Cli::fails_with`]).
    pub async fn cli_fails(&self, args: &[&str], error: &str) {
        self.cli(args).await.fails_with(error);
    }

    /// Runs `moray-cli ARGS` with `stdin` as its standard input.
    pub async fn cli_stdin(&self, args: &[&str], stdin: &str) -> Cli {
        cli_with_env(args, Some(&self.url), Some(stdin)).await
    }
}

/// The outcome of one moray-cli run.
#[derive(Debug)]
pub struct Cli {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Cli {
    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "moray-cli failed: {self:#?}");
        &self.stdout
    }

    /// Asserts success and parses stdout as one JSON document.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// Asserts success and parses each stdout line as JSON.
    #[track_caller]
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.ok()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {l:?}: {e}")))
            .collect()
    }

    /// Asserts failure (exit 1) naming `error`: `moray-cli: <error>: ...` on stderr.
    #[track_caller]
    pub fn fails_with(&self, error: &str) {
        assert_eq!(self.code, 1, "expected exit 1: {self:#?}");
        assert!(
            self.stderr.starts_with(&format!("moray-cli: {error}: ")),
            "expected {error} on stderr: {self:#?}"
        );
    }
}

pub async fn cli_with_env(args: &[&str], moray_url: Option<&str>, stdin: Option<&str>) -> Cli {
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_moray-cli"));
    command
        .args(args)
        .env_remove("MORAY_URL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(url) = moray_url {
        command.env("MORAY_URL", url);
    }
    let mut child = command.spawn().expect("spawn moray-cli");
    let mut input = child.stdin.take().expect("stdin is piped");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.expect("write stdin");
    }
    drop(input);
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().await.expect("moray-cli runs");
    Cli {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}
