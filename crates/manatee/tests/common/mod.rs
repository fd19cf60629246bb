//! A real shard for tests: a real etcd (testkit) and three `manatee-sitter` processes,
//! each running its own PostgreSQL, plus a writer that commits through whatever primary
//! the cluster state names and remembers every acknowledged key.
//!
//! Every sitter runs in its own process group, so a fault hits the sitter and its
//! PostgreSQL (and its backends) at once, as a crash or a pause of the host would.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use manatee_client::etcd::Etcd as EtcdClient;
use manatee_client::state::{ClusterState, ShardKeys};
use manatee_client::{Observed, watch_primary};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

pub const SHARD: &str = "test";
/// The lease TTL the tests run with (the sitter's default).
pub const LEASE_TTL_SECS: u64 = 3;

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

    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        // Backends of a killed postmaster exit on their own; give them a moment.
        std::thread::sleep(Duration::from_millis(200));
    }

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

pub struct Shard {
    pub etcd: triton_testkit::Etcd,
    pub dir: tempfile::TempDir,
    pub sitters: Vec<Sitter>,
}

fn bin(name: &str) -> PathBuf {
    match name {
        "manatee-sitter" => PathBuf::from(env!("CARGO_BIN_EXE_manatee-sitter")),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_manatee-adm")),
    }
}

impl Shard {
    pub fn start(n: usize) -> Shard {
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
        let s = &mut self.sitters[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.log)
            .expect("sitter log");
        let mut cmd = Command::new(bin("manatee-sitter"));
        cmd.arg("--config")
            .arg(&s.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0);
        // SAFETY: prctl only affects the child; it dies with the test.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        s.child = Some(cmd.spawn().expect("spawn manatee-sitter"));
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
        let out = Command::new(bin("manatee-adm"))
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
                let (_, show) = self.adm(&["show", "-v"]);
                panic!(
                    "{what}: the shard is not healthy after {timeout:?}:\n{out}\n{show}\n{}",
                    self.logs()
                );
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
                let (_, show) = self.adm(&["show", "-v"]);
                panic!(
                    "{what}: not reached after {timeout:?}:\n{show}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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

/// Every acknowledged write: key -> value.
#[derive(Default)]
pub struct Acked {
    pub keys: BTreeMap<String, String>,
    /// Successful commits: when each was sent and when it was acknowledged.
    pub successes: Vec<(Instant, Instant)>,
    pub failures: u64,
}

/// Writes continuously through the primary the cluster state names (as Moray will),
/// one new key per commit; a commit counts only when PostgreSQL acknowledged it (with
/// synchronous replication to the sync). A failed or timed-out commit is never retried
/// with the same key: it might have been applied.
pub struct Writer {
    pub acked: Arc<Mutex<Acked>>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// How long one commit may take before the writer gives up on it (it is then unknown).
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(3);

impl Writer {
    pub async fn start(shard: &Shard) -> Writer {
        let primary_url = shard.sitters[0].url();
        let (client, conn) =
            tokio_postgres::connect(&primary_url_for(shard).await.unwrap_or(primary_url), NoTls)
                .await
                .expect("connect to the primary");
        tokio::spawn(conn);
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS acked (k text PRIMARY KEY, v text NOT NULL)")
            .await
            .expect("create table");
        drop(client);
        let cancel = CancellationToken::new();
        let (primary, _follow) =
            watch_primary(shard.client(), ShardKeys::new(SHARD), None, cancel.clone());
        let acked = Arc::new(Mutex::new(Acked::default()));
        let task = tokio::spawn(write_loop(primary, acked.clone(), cancel.clone()));
        Writer {
            acked,
            cancel,
            task,
        }
    }

    /// A copy of the acknowledged keys (the lock is not held after this returns).
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        self.acked
            .lock()
            .map(|a| a.keys.clone())
            .unwrap_or_default()
    }

    pub fn count(&self) -> usize {
        self.acked.lock().map(|a| a.keys.len()).unwrap_or(0)
    }

    pub fn last_success(&self) -> Option<Instant> {
        self.acked
            .lock()
            .ok()
            .and_then(|a| a.successes.last().map(|s| s.1))
    }

    /// When the first commit sent after `t` was acknowledged.
    pub fn first_success_after(&self, t: Instant) -> Option<Instant> {
        self.acked
            .lock()
            .ok()
            .and_then(|a| a.successes.iter().find(|s| s.0 > t).map(|s| s.1))
    }

    /// Waits until at least `n` more commits succeed.
    pub async fn wait_progress(&self, n: usize, timeout: Duration, what: &str) {
        let start = self.count();
        let deadline = Instant::now() + timeout;
        while self.count() < start + n {
            if Instant::now() > deadline {
                panic!("{what}: writes did not resume within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) -> Acked {
        self.cancel.cancel();
        let _ = self.task.await;
        match Arc::try_unwrap(self.acked) {
            Ok(m) => m.into_inner().unwrap_or_default(),
            Err(arc) => std::mem::take(&mut *arc.lock().expect("acked lock")),
        }
    }
}

async fn primary_url_for(shard: &Shard) -> Option<String> {
    let s = shard.state().await?;
    let i = shard.index_of(&s.primary.id);
    Some(shard.sitters[i].url())
}

async fn write_loop(
    mut primary: tokio::sync::watch::Receiver<Option<String>>,
    acked: Arc<Mutex<Acked>>,
    cancel: CancellationToken,
) {
    let mut n: u64 = 0;
    let mut conn: Option<(String, tokio_postgres::Client)> = None;
    while !cancel.is_cancelled() {
        let url = primary.borrow_and_update().clone();
        let Some(url) = url else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if conn
            .as_ref()
            .is_none_or(|(u, c)| *u != url || c.is_closed())
        {
            conn = None;
            let cfg = format!("{url}?connect_timeout=2");
            match tokio::time::timeout(COMMIT_TIMEOUT, tokio_postgres::connect(&cfg, NoTls)).await {
                Ok(Ok((client, c))) => {
                    tokio::spawn(c);
                    conn = Some((url.clone(), client));
                }
                _ => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some((_, client)) = conn.as_ref() else {
            continue;
        };
        n += 1;
        let key = format!("k{n:08}");
        let value = format!("v{n}-{}", n * 7919 % 1000);
        let sent = Instant::now();
        let r = tokio::time::timeout(
            COMMIT_TIMEOUT,
            client.execute("INSERT INTO acked (k, v) VALUES ($1, $2)", &[&key, &value]),
        )
        .await;
        match r {
            Ok(Ok(1)) => {
                if let Ok(mut a) = acked.lock() {
                    a.keys.insert(key, value);
                    a.successes.push((sent, Instant::now()));
                }
            }
            _ => {
                // Unknown outcome: never reuse this key; reconnect.
                if let Ok(mut a) = acked.lock() {
                    a.failures += 1;
                }
                conn = None;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Checks that every acknowledged key is on the current primary with its value.
pub async fn check_acked(shard: &Shard, acked: &BTreeMap<String, String>, what: &str) {
    let url = primary_url_for(shard).await.expect("a primary");
    let (client, conn) = tokio_postgres::connect(&url, NoTls)
        .await
        .expect("connect to the primary");
    tokio::spawn(conn);
    let rows = client
        .query("SELECT k, v FROM acked", &[])
        .await
        .expect("read back");
    let found: BTreeMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut lost = Vec::new();
    for (k, v) in acked {
        match found.get(k) {
            Some(x) if x == v => {}
            other => lost.push(format!("{k}: acknowledged {v:?}, found {other:?}")),
        }
    }
    assert!(
        lost.is_empty(),
        "{what}: {} of {} acknowledged writes lost or wrong, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}
