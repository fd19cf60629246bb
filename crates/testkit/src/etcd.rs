//! A single-member etcd (Debian's `etcd-server`) in a temp dir on free ports.

use std::process::{Child, Command, Stdio};

use crate::TestkitError;
use crate::process::{log_file, spawn_tied, tail, temp_dir, wait_ready};

/// A running etcd member. Killed and its data removed on drop.
pub struct Etcd {
    dir: tempfile::TempDir,
    client_port: u16,
    child: Option<Child>,
}

impl Etcd {
    /// Starts a one-member etcd (`ETCD_BIN`, or `etcd` on the PATH) and waits until it
    /// answers.
    pub fn start() -> Result<Etcd, TestkitError> {
        let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_string());
        let dir = temp_dir("triton-etcd-")?;
        let client_port = crate::free_port();
        let peer_port = crate::free_port();
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = dir.path().join("etcd.log");
        let log_file = log_file(&log)?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--name=testkit")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=testkit={peer}"))
            .arg("--unsafe-no-fsync")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = spawn_tied(cmd).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => TestkitError::NotInstalled {
                what: "etcd",
                hint: "apt-get install etcd-server, or run scripts/setup",
            },
            _ => TestkitError::Spawn {
                command: bin.clone(),
                source,
            },
        })?;
        let mut etcd = Etcd {
            dir,
            client_port,
            child: Some(child),
        };
        wait_ready(
            "etcd",
            &log,
            || {
                std::net::TcpStream::connect(("127.0.0.1", client_port)).is_ok()
                    && tail(&log, 200).contains("ready to serve client requests")
            },
            || etcd.stop(),
        )?;
        Ok(etcd)
    }

    /// `http://127.0.0.1:<port>`, for etcd clients.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Its data directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Kills it now (a crashed member), before the drop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
