//! A throwaway PostgreSQL cluster: `initdb` into a temp dir, `postgres` on a free port.
//! PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres`
//! user that Debian's package creates.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::TestkitError;
use crate::process::{log_file, spawn_tied, temp_dir, wait_ready};

/// How a test cluster is set up.
#[derive(Debug, Clone, Default)]
pub struct PostgresOptions {
    /// `fsync` (off by default in tests: the OS keeps the data across a crash of
    /// PostgreSQL itself, which is the failure tests simulate).
    pub fsync: bool,
    /// Extra `postgresql.conf` lines.
    pub extra_conf: Vec<String>,
}

/// A running PostgreSQL. Stopped and removed on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

/// The directory of the packaged PostgreSQL binaries: `$PG_BINDIR`, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
pub fn pg_bin_dir() -> Result<PathBuf, TestkitError> {
    triton_common::postgres::bin_dir().ok_or_else(not_installed)
}

/// Runs `cmd` (`what`, in errors) to its end and returns its stdout:
/// [`TestkitError::Spawn`] when it cannot start, [`TestkitError::Failed`] with its stderr
/// when it exits non-zero.
fn run(cmd: &mut Command, what: &str) -> Result<Vec<u8>, TestkitError> {
    checked(cmd.output(), what)
}

/// A finished command's output: its stdout when it succeeded, else an error with its stderr.
fn checked(out: std::io::Result<Output>, what: &str) -> Result<Vec<u8>, TestkitError> {
    let out = out.map_err(|source| TestkitError::Spawn {
        command: what.to_string(),
        source,
    })?;
    if !out.status.success() {
        return Err(TestkitError::Failed {
            command: what.to_string(),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out.stdout)
}

fn not_installed() -> TestkitError {
    TestkitError::NotInstalled {
        what: "PostgreSQL",
        hint: "apt-get install postgresql, or run scripts/setup",
    }
}

/// (uid, gid) to run PostgreSQL as: ourselves, or `postgres` when we are root.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: getuid never fails.
    if unsafe { libc::getuid() } != 0 {
        return None;
    }
    let name = c"postgres";
    // SAFETY: getpwnam returns a pointer into static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: non-null result of getpwnam.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

fn command(bin: &Path, name: &str) -> Command {
    let mut c = Command::new(bin.join(name));
    if let Some((uid, gid)) = run_as() {
        c.uid(uid).gid(gid);
    }
    c
}

fn chown_tree(path: &Path) -> Result<(), TestkitError> {
    let Some((uid, gid)) = run_as() else {
        return Ok(());
    };
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| TestkitError::Io {
        path: path.display().to_string(),
        source,
    })
}

impl Postgres {
    /// initdb + start with default options.
    pub fn start() -> Result<Postgres, TestkitError> {
        Self::start_with(PostgresOptions::default())
    }

    /// initdb + start with `options`.
    pub fn start_with(options: PostgresOptions) -> Result<Postgres, TestkitError> {
        let bin = pg_bin_dir()?;
        let dir = temp_dir("triton-pg-")?;
        chown_tree(dir.path())?;
        let data = dir.path().join("data");
        run(
            command(&bin, "initdb").args(["-D"]).arg(&data).args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]),
            "initdb",
        )?;
        let port = crate::free_port();
        let mut conf = vec![
            format!("port = {port}"),
            "listen_addresses = '127.0.0.1'".to_string(),
            format!("unix_socket_directories = '{}'", dir.path().display()),
            format!("fsync = {}", if options.fsync { "on" } else { "off" }),
            "max_connections = 200".to_string(),
            "shared_buffers = 64MB".to_string(),
        ];
        conf.extend(options.extra_conf.iter().cloned());
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).unwrap_or_default();
        text.push_str("\n# triton-testkit\n");
        text.push_str(&conf.join("\n"));
        text.push('\n');
        std::fs::write(&conf_path, text).map_err(|source| TestkitError::Io {
            path: conf_path.display().to_string(),
            source,
        })?;

        let log = dir.path().join("postgres.log");
        let log_file = log_file(&log)?;
        chown_tree(&log)?;
        let mut cmd = command(&bin, "postgres");
        cmd.arg("-D")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = spawn_tied(cmd).map_err(|source| TestkitError::Spawn {
            command: "postgres".into(),
            source,
        })?;
        let mut pg = Postgres {
            dir,
            port,
            child: Some(child),
        };
        wait_ready(
            "PostgreSQL",
            &log,
            || {
                command(&bin, "pg_isready")
                    .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                    .status()
                    .is_ok_and(|s| s.success())
            },
            || pg.stop(),
        )?;
        Ok(pg)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for the superuser on database `db` (which must exist; `postgres` always does).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, TestkitError> {
        let bin = pg_bin_dir()?;
        run(
            command(&bin, "createdb").args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ]),
            &format!("createdb {name}"),
        )?;
        Ok(self.url(name))
    }

    /// Runs `sql` with `psql` on database `db` and returns what it printed: tuples only,
    /// unaligned (a line a row, `|` between columns).
    pub fn query(&self, db: &str, sql: &str) -> Result<String, TestkitError> {
        let out = run(&mut self.psql(db, sql)?, &format!("psql -c {sql:?}"))?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// [`Postgres::query`] without blocking the runtime: a test that runs Moray in its own
    /// (current-thread) runtime keeps serving while psql runs.
    #[cfg(feature = "moray")]
    pub async fn query_async(&self, db: &str, sql: &str) -> Result<String, TestkitError> {
        let out = tokio::process::Command::from(self.psql(db, sql)?)
            .output()
            .await;
        let out = checked(out, &format!("psql -c {sql:?}"))?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// The psql command that runs `sql` on `db`: tuples only, unaligned, stopping at the
    /// first error.
    fn psql(&self, db: &str, sql: &str) -> Result<Command, TestkitError> {
        let mut psql = command(&pg_bin_dir()?, "psql");
        psql.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", db, "-At", "-v", "ON_ERROR_STOP=1"])
            .args(["-c", sql]);
        Ok(psql)
    }

    /// The cluster's directory (data is in `data/`, the log in `postgres.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The postmaster's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Fast shutdown (SIGINT), waiting for the postmaster to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child by pid.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGINT);
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
