//! A real Manatee shard for tests: a real etcd (`triton_testkit`) and `manatee-sitter`
//! processes, each running its own PostgreSQL, driven by signals (SIGKILL, SIGSTOP) and by
//! `manatee-adm`. Used by Manatee's own fault tests (PostgreSQL level) and by the
//! cross-service tests in `tests/` (through Moray).
//!
//! The sitter and manatee-adm binaries come from [`Binaries`]: a test of the `manatee`
//! package passes its `CARGO_BIN_EXE_*` paths; any other test calls
//! [`Binaries::build`], which builds them with cargo in the test's own profile and target
//! directory (or takes `MANATEE_SITTER_BIN`/`MANATEE_ADM_BIN`).
//!
//! Every sitter runs in its own process group, and faults are sent to the sitter and every
//! process below it, so a fault hits the sitter and its PostgreSQL (and its backends) at
//! once, as a crash or a pause of the host would.

// A test kit fails the test it serves by panicking, with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod faults;

use manatee_client::Observed;
use manatee_client::etcd::Etcd as EtcdClient;
use manatee_client::state::{ClusterState, ShardKeys};

/// The shard name the harness uses.
pub const SHARD: &str = "test";
/// The lease TTL the tests run with (the sitter's default).
pub const LEASE_TTL_SECS: u64 = 3;

/// Where the `manatee-sitter` and `manatee-adm` executables are.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub sitter: PathBuf,
    pub adm: PathBuf,
}

impl Binaries {
    /// `MANATEE_SITTER_BIN` and `MANATEE_ADM_BIN` when both are set; otherwise
    /// `cargo build -p manatee --bins` in the profile and target directory of the running
    /// test executable (`<target>/<profile>/deps/<test>`), so the binaries are never
    /// older than the sources. Cargo is quick when they are up to date.
    pub fn build() -> Result<Binaries, String> {
        if let (Ok(sitter), Ok(adm)) = (
            std::env::var("MANATEE_SITTER_BIN"),
            std::env::var("MANATEE_ADM_BIN"),
        ) {
            return Ok(Binaries {
                sitter: sitter.into(),
                adm: adm.into(),
            });
        }
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let profile_dir = exe
            .parent()
            .filter(|d| d.file_name().is_some_and(|n| n == "deps"))
            .and_then(Path::parent)
            .ok_or_else(|| {
                format!(
                    "{} is not in <target>/<profile>/deps; set MANATEE_SITTER_BIN and MANATEE_ADM_BIN",
                    exe.display()
                )
            })?;
        let target_dir = profile_dir
            .parent()
            .ok_or("the profile directory has no parent")?;
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_string(),
            Some(p) => p.to_string(),
            None => return Err("the profile directory has no name".into()),
        };
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
        let status = Command::new(&cargo)
            .args(["build", "--quiet", "-p", "manatee", "--bins", "--profile"])
            .arg(&profile)
            .arg("--manifest-path")
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", target_dir)
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run {cargo}: {e}"))?;
        if !status.success() {
            return Err(format!(
                "cargo build -p manatee --bins --profile {profile} failed ({status})"
            ));
        }
        let b = Binaries {
            sitter: profile_dir.join("manatee-sitter"),
            adm: profile_dir.join("manatee-adm"),
        };
        for p in [&b.sitter, &b.adm] {
            if !p.exists() {
                return Err(format!("{} is missing after the build", p.display()));
            }
        }
        Ok(b)
    }
}

/// One peer: its sitter process (and PostgreSQL below it).
pub struct Sitter {
    pub name: String,
    pub id: String,
    pub pg_port: u16,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Sitter {
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Signals the sitter and every process below it: PostgreSQL's backends and
    /// walsenders each run in their own session (PostgreSQL calls setsid), so the
    /// process group alone would leave them running.
    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            for p in process_tree(pid) {
                // SAFETY: signalling processes we started (and their children).
                unsafe {
                    libc::kill(p, sig);
                }
            }
        }
    }

    /// SIGKILL of the sitter, its PostgreSQL and backends; reaps the sitter.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        // Backends of a killed postmaster exit on their own; give them a moment.
        std::thread::sleep(Duration::from_millis(200));
    }

    /// A libpq connection string to this peer's PostgreSQL (`postgres` database).
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=2",
            self.pg_port
        )
    }
}

impl Drop for Sitter {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        self.kill();
    }
}

/// `root` and all its descendants, parents first.
pub fn process_tree(root: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces; split after ')'.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<i32>().ok())
            {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

/// A shard of sitters on one etcd, in a temp dir. Everything is killed on drop.
pub struct Shard {
    pub etcd: triton_testkit::Etcd,
    pub dir: tempfile::TempDir,
    pub sitters: Vec<Sitter>,
    pub binaries: Binaries,
}

impl Shard {
    /// Starts etcd and `n` sitters, one after the other so the first sets the shard up.
    /// Panics (it is for tests) when etcd or a sitter cannot be started.
    pub fn start(n: usize, binaries: Binaries) -> Shard {
        let etcd =
            triton_testkit::Etcd::start().expect("etcd starts (apt-get install etcd-server)");
        let dir = tempfile::Builder::new()
            .prefix("manatee-test-")
            .tempdir()
            .expect("temp dir");
        let mut shard = Shard {
            etcd,
            dir,
            sitters: Vec::new(),
            binaries,
        };
        for i in 0..n {
            let name = format!("peer{i}");
            let pg_port = triton_testkit::free_port();
            let status_port = triton_testkit::free_port();
            let data_dir = shard.dir.path().join(&name);
            let config = shard.dir.path().join(format!("{name}.toml"));
            std::fs::write(
                &config,
                format!(
                    "shard = \"{SHARD}\"\netcd = [\"{}\"]\nname = \"{name}\"\nip = \"127.0.0.1\"\n\
                     pg_port = {pg_port}\nstatus_port = {status_port}\ndata_dir = \"{}\"\n\
                     fsync = false\nlease_ttl_secs = {LEASE_TTL_SECS}\n",
                    shard.etcd.endpoint(),
                    data_dir.display()
                ),
            )
            .expect("write config");
            shard.sitters.push(Sitter {
                name: name.clone(),
                id: format!("127.0.0.1:{pg_port}:{status_port}"),
                pg_port,
                config,
                data_dir,
                log: shard.dir.path().join(format!("{name}.log")),
                child: None,
            });
            shard.spawn(i);
            // Start in order so the first one sets the shard up.
            std::thread::sleep(Duration::from_millis(300));
        }
        shard
    }

    /// (Re)starts sitter `i` with its config.
    pub fn spawn(&mut self, i: usize) {
        let bin = self.binaries.sitter.clone();
        let s = &mut self.sitters[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.log)
            .expect("sitter log");
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(&s.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0);
        // Forked by testkit's long-lived spawner thread: the parent-death signal fires when
        // the forking *thread* ends, and a sitter started from, say, tokio's blocking pool
        // would be killed under the test a few seconds later.
        s.child = Some(triton_testkit::spawn_tied(cmd).expect("spawn manatee-sitter"));
    }

    pub fn index_of(&self, id: &str) -> usize {
        self.sitters
            .iter()
            .position(|s| s.id == id)
            .expect("the state names our peers")
    }

    pub fn client(&self) -> EtcdClient {
        EtcdClient::new(&[self.etcd.endpoint()]).expect("etcd client")
    }

    pub async fn state(&self) -> Option<ClusterState> {
        let etcd = self.client();
        let (kv, _) = etcd.get(&ShardKeys::new(SHARD).state()).await.ok()?;
        Observed::from_kv(kv.as_ref()).state().cloned()
    }

    /// Runs manatee-adm; returns (exit code, stdout + stderr).
    pub fn adm(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(&self.binaries.adm)
            .arg("--etcd")
            .arg(self.etcd.endpoint())
            .arg("-s")
            .arg(SHARD)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run manatee-adm");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// Waits until `manatee-adm verify` passes with every peer in the chain.
    pub async fn wait_healthy(&self, timeout: Duration, what: &str) {
        let deadline = Instant::now() + timeout;
        loop {
            let (code, out) = self.adm(&["verify"]);
            if code == 0
                && self
                    .state()
                    .await
                    .is_some_and(|s| s.chain().count() == self.sitters.len())
            {
                return;
            }
            if Instant::now() > deadline {
                self.give_up(&format!(
                    "{what}: the shard is not healthy after {timeout:?}:\n{out}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits for a state matching `f`.
    pub async fn wait_state(
        &self,
        timeout: Duration,
        what: &str,
        f: impl Fn(&ClusterState) -> bool,
    ) -> ClusterState {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.state().await
                && f(&s)
            {
                return s;
            }
            if Instant::now() > deadline {
                self.give_up(&format!("{what}: not reached after {timeout:?}:"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `manatee-adm rebuild --id <id> -y --wait 120` until it is accepted (it is
    /// refused until the deposed peer's sitter runs and has stopped its PostgreSQL).
    /// Panics after `timeout`, or on a refusal for any other reason.
    pub async fn rebuild(&self, id: &str, timeout: Duration) {
        self.rebuild_waiting_for(id, timeout, faults::REBUILD_WAITS)
            .await;
    }

    /// [`Shard::rebuild`], where a refusal is waited out only when it says one of
    /// `refusals`.
    pub async fn rebuild_waiting_for(&self, id: &str, timeout: Duration, refusals: &[&str]) {
        let deadline = Instant::now() + timeout;
        loop {
            let (code, out) = self.adm(&["rebuild", "--id", id, "-y", "--wait", "120"]);
            if code == 0 {
                return;
            }
            assert!(refusals.iter().any(|r| out.contains(r)), "rebuild: {out}");
            assert!(
                Instant::now() < deadline,
                "rebuild of {id} kept refusing: {out}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Fails the test with `message`, what `manatee-adm show -v` says and the sitters'
    /// logs.
    fn give_up(&self, message: &str) -> ! {
        let (_, show) = self.adm(&["show", "-v"]);
        panic!("{message}\n{show}\n{}", self.logs());
    }

    /// The tail of every sitter's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for s in &self.sitters {
            let text = std::fs::read_to_string(&s.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().filter(|l| !l.contains("\"DEBUG\"")).collect();
            out.push_str(&format!("--- {} ({}) ---\n", s.name, s.id));
            out.push_str(&lines[lines.len().saturating_sub(25)..].join("\n"));
            out.push('\n');
        }
        out
    }
}
