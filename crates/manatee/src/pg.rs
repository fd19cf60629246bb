//! The peer's own PostgreSQL (Debian's binaries): initdb, configuration, start and stop,
//! promotion, rebuild from the upstream with `pg_basebackup`, the primary's wait for its
//! sync, and the WAL positions the state machine and the status endpoint need.
//!
//! One task owns PostgreSQL and carries out the state machine's [`PgCommand`]s one at a
//! time, in order; between commands it polls PostgreSQL every [`POLL_INTERVAL`].
//!
//! Layout of `data_dir` (owned by the `postgres` user when the sitter runs as root,
//! because PostgreSQL refuses to run as root):
//! - `pgdata/`: the cluster; `postgresql.conf` includes `manatee.conf`, which the sitter
//!   rewrites on every reconfiguration (port, role settings, `primary_conninfo`, ...);
//! - `postgres.log`: PostgreSQL's log;
//! - `manatee-peer.json`: the marker that this data was a primary's, so it may hold WAL
//!   no other peer has and is rebuilt before it serves as a standby.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use manatee_client::state::{Lsn, Peer};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::state_machine::{Event, PgConfig, PgRole, async_name, sync_name};

/// How often PostgreSQL is polled: replication progress for the standby's
/// [`Event::Streaming`] and the primary's wait for its sync. Short, because a failover
/// waits on it twice (the sync must have been seen streaming; the new primary enables
/// writes once its new sync caught up).
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How long PostgreSQL may take to start (crash recovery included) before the sitter
/// gives up on this attempt (the reference's opsTimeout).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an immediate shutdown may take before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A standby that has not streamed from its (reachable) upstream for this long is
/// rebuilt: its WAL has diverged (it followed a deposed primary) and PostgreSQL will
/// never stream over it. The reference restores when PostgreSQL fails to start; here
/// PostgreSQL starts fine and only its walreceiver fails, so the check is on streaming.
pub const STANDBY_STUCK_TIMEOUT: Duration = Duration::from_secs(30);

/// A pg_basebackup that takes longer than this is abandoned and retried.
pub const REBUILD_TIMEOUT: Duration = Duration::from_secs(1800);

/// A primary whose sync's flush position makes no progress for this long stays
/// read-only and says so ("possible WAL corruption"; the reference's replicationTimeout).
pub const REPLICATION_TIMEOUT: Duration = Duration::from_secs(60);

/// `"name"` for SQL.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'text'` for SQL.
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A value for a libpq key=value string.
fn quote_conninfo(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A user name for pg_hba.conf.
fn quote_hba(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', ""))
    }
}

/// The password in `path` (its first line), made first when the file is missing: 32
/// random bytes as hex, mode 0600.
pub fn password_from(path: &Path) -> Result<String, Error> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            let mut bytes = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut r| r.read_exact(&mut bytes))
                .map_err(|e| Error::io(Path::new("/dev/urandom"), e))?;
            let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            file.write_all(format!("{password}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io(path, e))?;
            tracing::info!(path = %path.display(), "made the password file of Moray's role");
            Ok(password)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let password = text.lines().next().unwrap_or("").trim().to_string();
            if password.is_empty() {
                return Err(Error::Fatal(format!(
                    "moray_password_file {}: is empty; its first line is the password",
                    path.display()
                )));
            }
            Ok(password)
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The `synchronous_standby_names` of a fenced primary: no standby has this name.
const FENCED: &str = "manatee-fenced";

/// How PostgreSQL is run.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub bin_dir: PathBuf,
    pub data_dir: PathBuf,
    /// The address PostgreSQL listens on and peers reach it at.
    pub ip: String,
    pub port: u16,
    /// This peer's id (for replication names).
    pub peer_id: String,
    pub synchronous_commit: String,
    pub fsync: bool,
    /// Networks whose hosts may connect (and replicate) without a password.
    pub trust_networks: Vec<String>,
    /// Extra `postgresql.conf` lines.
    pub extra_conf: Vec<String>,
    /// The user PostgreSQL runs as when the sitter is root.
    pub user: String,
    /// Moray's role and database, made on the primary; None: none is made.
    pub moray: Option<MorayRole>,
}

/// Moray's PostgreSQL role (not a superuser) and the database it owns, which the primary
/// makes (roles replicate, so once is enough) and keeps: the role's password is set from
/// `password_file` (made, 0600, with a random password when missing), and tables of the
/// database that another role owns (data dirs from before the role) are handed to it.
#[derive(Debug, Clone)]
pub struct MorayRole {
    pub user: String,
    pub database: String,
    /// None: the role has no password (it logs in only where pg_hba trusts it).
    pub password_file: Option<PathBuf>,
}

/// What the state machine asks of PostgreSQL.
#[allow(clippy::large_enum_variant)] // one at a time, through a channel
#[derive(Debug, Clone)]
pub enum PgCommand {
    Apply(PgConfig),
    Fence,
}

/// What PostgreSQL is doing, for the status endpoint.
#[derive(Debug, Clone, Default)]
pub struct PgView {
    /// stopped, starting, primary, primary-read-only, standby, rebuilding.
    pub state: String,
    pub read_only: bool,
    /// What the last poll saw.
    pub polled: Polled,
    pub last_error: String,
    pub rebuild: String,
}

/// What one poll of PostgreSQL saw: a primary its WAL position and replicas, a standby
/// what it received and replayed; what a poll did not see is empty.
#[derive(Debug, Clone, Default)]
pub struct Polled {
    pub online: bool,
    pub wal_current: Option<Lsn>,
    pub wal_receive: Option<Lsn>,
    pub wal_replay: Option<Lsn>,
    pub replay_lag_seconds: Option<f64>,
    pub receiver_status: String,
    pub replicas: Vec<ReplicaRow>,
}

/// One row of `pg_stat_replication`.
#[derive(Debug, Clone, Default)]
pub struct ReplicaRow {
    pub application_name: String,
    pub client_addr: String,
    pub state: String,
    pub sync_state: String,
    pub sent_lsn: String,
    pub write_lsn: String,
    pub flush_lsn: String,
    pub replay_lsn: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Marker {
    was_primary: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Stopped,
    Primary,
    Standby,
}

/// What `manatee.conf` says.
enum Conf<'a> {
    Primary {
        sync: Option<&'a str>,
        read_only: bool,
    },
    /// `upstream: None`: fenced, streaming from nobody.
    Standby {
        upstream: Option<&'a Peer>,
        name: &'a str,
    },
}

struct PrimaryWait {
    name: String,
    target: Option<Lsn>,
    last_flush: Option<Lsn>,
    last_progress: Instant,
    complained: bool,
}

struct StandbyWatch {
    upstream: Peer,
    not_streaming_since: Instant,
}

/// Starts the task that owns PostgreSQL. It sends [`Event::PgInit`] first, then answers
/// each command, and reports [`Event::Streaming`] while a standby streams. It ends with
/// an error when PostgreSQL dies under it (the sitter then exits, as the reference's).
pub fn spawn(
    opts: PgOptions,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
) -> (
    mpsc::Sender<PgCommand>,
    watch::Receiver<PgView>,
    tokio::task::JoinHandle<Result<(), Error>>,
) {
    let (tx, rx) = mpsc::channel(16);
    let (view_tx, view_rx) = watch::channel(PgView {
        state: "stopped".into(),
        ..Default::default()
    });
    let task = tokio::spawn(async move {
        let mut pg = Pg {
            opts,
            child: None,
            mode: Mode::Stopped,
            client: None,
            view: view_tx,
            primary_wait: None,
            standby: None,
            last_rebuild: None,
            moray_ready: false,
        };
        let r = pg.run(rx, events, cancel).await;
        pg.stop().await;
        r
    });
    (tx, view_rx, task)
}

struct Pg {
    opts: PgOptions,
    child: Option<Child>,
    mode: Mode,
    client: Option<tokio_postgres::Client>,
    view: watch::Sender<PgView>,
    primary_wait: Option<PrimaryWait>,
    standby: Option<StandbyWatch>,
    last_rebuild: Option<Instant>,
    /// Moray's role and database are made (see [`MorayRole`]).
    moray_ready: bool,
}

impl Pg {
    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<PgCommand>,
        events: mpsc::Sender<Event>,
        cancel: CancellationToken,
    ) -> Result<(), Error> {
        self.prepare_dir()?;
        let setup = self.has_data();
        if events.send(Event::PgInit { setup }).await.is_err() {
            return Ok(());
        }
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { return Ok(()) };
                    let answer = match cmd {
                        PgCommand::Apply(cfg) => {
                            let r = self.apply(&cfg).await;
                            if let Err(e) = &r {
                                let msg = manatee_client::error_chain(e);
                                tracing::warn!(error = %msg, role = ?cfg.role, "cannot apply the PostgreSQL configuration; retrying");
                                self.view.send_modify(|v| v.last_error = msg);
                            } else {
                                tracing::info!(role = ?cfg.role, upstream = ?cfg.upstream.as_ref().map(|p| &p.id), sync = ?cfg.sync.as_ref().map(|p| &p.id), generation = cfg.generation, "PostgreSQL configured");
                                self.view.send_modify(|v| v.last_error.clear());
                            }
                            Event::PgApplied { ok: r.is_ok() }
                        }
                        PgCommand::Fence => {
                            let wal = match self.fence().await {
                                Ok(wal) => Some(wal),
                                Err(e) => {
                                    tracing::warn!(error = %manatee_client::error_chain(&e), "cannot fence PostgreSQL");
                                    None
                                }
                            };
                            tracing::info!(wal = ?wal.map(|w| w.to_string()), "PostgreSQL fenced");
                            Event::WalPosition(wal)
                        }
                    };
                    if events.send(answer).await.is_err() {
                        return Ok(());
                    }
                }
                _ = tick.tick() => {
                    self.check_alive()?;
                    if let Some(ev) = self.poll().await
                        && events.send(ev).await.is_err()
                    {
                        return Ok(());
                    }
                }
            }
        }
    }

    // ---- files ----

    fn pgdata(&self) -> PathBuf {
        self.opts.data_dir.join("pgdata")
    }

    fn log_path(&self) -> PathBuf {
        self.opts.data_dir.join("postgres.log")
    }

    fn marker_path(&self) -> PathBuf {
        self.opts.data_dir.join("manatee-peer.json")
    }

    fn has_data(&self) -> bool {
        self.pgdata().join("PG_VERSION").exists()
    }

    fn marker(&self) -> Marker {
        std::fs::read(self.marker_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn set_marker(&self, was_primary: bool) -> Result<(), Error> {
        let path = self.marker_path();
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec(&Marker { was_primary }).map_err(std::io::Error::other);
        let body = body.map_err(|e| Error::io(&tmp, e))?;
        std::fs::write(&tmp, body).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }

    fn prepare_dir(&self) -> Result<(), Error> {
        let dir = &self.opts.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        chown(dir, self.run_as())?;
        let log = self.log_path();
        if !log.exists() {
            std::fs::write(&log, b"").map_err(|e| Error::io(&log, e))?;
        }
        chown(&log, self.run_as())?;
        Ok(())
    }

    fn run_as(&self) -> Option<(u32, u32)> {
        run_as(&self.opts.user)
    }

    fn command(&self, name: &str) -> Command {
        let mut c = Command::new(self.opts.bin_dir.join(name));
        if let Some((uid, gid)) = self.run_as() {
            c.uid(uid).gid(gid);
        }
        c.stdin(Stdio::null());
        c
    }

    fn write_conf(&self, conf: Conf<'_>) -> Result<(), Error> {
        let o = &self.opts;
        let mut lines = vec![
            "# Written by manatee-sitter on every reconfiguration; do not edit.".to_string(),
            format!("listen_addresses = '{}'", o.ip),
            format!("port = {}", o.port),
            format!(
                "unix_socket_directories = '{}'",
                self.opts.data_dir.display()
            ),
            "wal_level = replica".into(),
            "hot_standby = on".into(),
            "max_wal_senders = 15".into(),
            "wal_keep_size = '1GB'".into(),
            "hot_standby_feedback = on".into(),
            // Fast feedback and reconnects: a failover waits on both.
            "wal_receiver_status_interval = '1s'".into(),
            "wal_retrieve_retry_interval = '500ms'".into(),
            "wal_receiver_timeout = '10s'".into(),
            "wal_sender_timeout = '10s'".into(),
            "recovery_target_timeline = 'latest'".into(),
            format!("synchronous_commit = {}", o.synchronous_commit),
            format!("fsync = {}", if o.fsync { "on" } else { "off" }),
            "max_connections = 200".into(),
        ];
        match conf {
            Conf::Primary { sync, read_only } => {
                lines.push(format!(
                    "synchronous_standby_names = '{}'",
                    sync.map(|s| format!("\"{s}\"")).unwrap_or_default()
                ));
                lines.push(format!(
                    "default_transaction_read_only = {}",
                    if read_only { "on" } else { "off" }
                ));
                lines.push("primary_conninfo = ''".into());
            }
            Conf::Standby { upstream, name } => {
                lines.push("synchronous_standby_names = ''".into());
                lines.push("default_transaction_read_only = on".into());
                let conninfo = match upstream {
                    Some(up) => format!(
                        "host={} port={} user=postgres application_name={} connect_timeout=5",
                        up.ip,
                        peer_pg_port(up).unwrap_or(5432),
                        name
                    ),
                    None => String::new(),
                };
                lines.push(format!(
                    "primary_conninfo = '{}'",
                    conninfo.replace('\'', "''")
                ));
            }
        }
        lines.extend(o.extra_conf.iter().cloned());
        lines.push(String::new());
        let path = self.pgdata().join("manatee.conf");
        std::fs::write(&path, lines.join("\n")).map_err(|e| Error::io(&path, e))?;
        chown(&path, self.run_as())
    }

    /// Configures this PostgreSQL as a standby streaming from `up`, under the
    /// application name `name` (takes effect at the next start or reload).
    fn follow(&self, up: &Peer, name: &str) -> Result<(), Error> {
        self.write_conf(Conf::Standby {
            upstream: Some(up),
            name,
        })?;
        self.set_standby_signal(true)
    }

    fn set_standby_signal(&self, on: bool) -> Result<(), Error> {
        let path = self.pgdata().join("standby.signal");
        if on {
            std::fs::write(&path, b"").map_err(|e| Error::io(&path, e))?;
            chown(&path, self.run_as())
        } else {
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io(&path, e)),
            }
        }
    }

    // ---- process ----

    async fn initdb(&mut self) -> Result<(), Error> {
        tracing::info!(dir = %self.pgdata().display(), "initdb");
        let pgdata = self.pgdata();
        let mut c = self.command("initdb");
        c.arg("-D")
            .arg(&pgdata)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8"]);
        if !self.opts.fsync {
            c.arg("--no-sync");
        }
        run(c, "initdb").await?;
        let conf = pgdata.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(|e| Error::io(&conf, e))?;
        text.push_str("\n# manatee: the peer's own settings\ninclude_if_exists = 'manatee.conf'\n");
        std::fs::write(&conf, text).map_err(|e| Error::io(&conf, e))?;
        let hba = pgdata.join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).map_err(|e| Error::io(&hba, e))?;
        text.push_str("\n# manatee: peers and consumers\n");
        for net in &self.opts.trust_networks {
            text.push_str(&format!(
                "host all all {net} trust\nhost replication all {net} trust\n"
            ));
        }
        std::fs::write(&hba, text).map_err(|e| Error::io(&hba, e))?;
        self.ensure_hba()
    }

    /// With a password for Moray's role, pg_hba asks it for one (scram-sha-256) before
    /// any `trust` line can let it in; added to data dirs made before this line existed.
    fn ensure_hba(&self) -> Result<(), Error> {
        let Some(role) = self
            .opts
            .moray
            .as_ref()
            .filter(|r| r.password_file.is_some())
        else {
            return Ok(());
        };
        let hba = self.pgdata().join("pg_hba.conf");
        let text = std::fs::read_to_string(&hba).map_err(|e| Error::io(&hba, e))?;
        let line = format!("host all {} all scram-sha-256", quote_hba(&role.user));
        if text.lines().any(|l| l.trim() == line) {
            return Ok(());
        }
        let block = format!("# manatee: Moray's role logs in with its password\n{line}\n");
        let text = match text.find("# manatee: peers and consumers") {
            Some(at) => format!("{}{block}{}", &text[..at], &text[at..]),
            None => format!("{text}\n{block}"),
        };
        std::fs::write(&hba, text).map_err(|e| Error::io(&hba, e))
    }

    /// Makes Moray's role and database on this primary (see [`MorayRole`]).
    async fn ensure_moray_role(&mut self) -> Result<(), Error> {
        let Some(role) = self.opts.moray.clone() else {
            return Ok(());
        };
        let password = match &role.password_file {
            Some(path) => Some(password_from(path)?),
            None => None,
        };
        let user = quote_ident(&role.user);
        let database = quote_ident(&role.database);
        let admin = self.connect_to("postgres").await?;
        let pg_err = |what: &str| {
            let what = what.to_string();
            move |source: tokio_postgres::Error| Error::Pg {
                what: format!("{what}: {}", manatee_client::error_chain(&source)),
            }
        };
        // The primary may still be read-only (its sync not caught up) and a commit would
        // wait for the sync: this session's own changes need neither.
        admin
            .batch_execute(
                "SET synchronous_commit = local; SET default_transaction_read_only = off",
            )
            .await
            .map_err(pg_err("session settings"))?;
        let exists = admin
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role.user])
            .await
            .map_err(pg_err("look up Moray's role"))?
            .is_some();
        if !exists {
            admin
                .batch_execute(&format!("CREATE ROLE {user} LOGIN"))
                .await
                .map_err(pg_err("create Moray's role"))?;
            tracing::info!(role = %role.user, "created Moray's role");
        }
        admin
            .batch_execute(&format!(
                "ALTER ROLE {user} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
            ))
            .await
            .map_err(pg_err("restrict Moray's role"))?;
        if let Some(password) = password {
            // The SCRAM verifier, not the password, goes to the server (and so to no log).
            let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
            admin
                .batch_execute(&format!(
                    "ALTER ROLE {user} PASSWORD {}",
                    quote_literal(&verifier)
                ))
                .await
                .map_err(pg_err("set the password of Moray's role"))?;
        }
        let has_db = admin
            .query_opt(
                "SELECT 1 FROM pg_database WHERE datname = $1",
                &[&role.database],
            )
            .await
            .map_err(pg_err("look up Moray's database"))?
            .is_some();
        if has_db {
            admin
                .batch_execute(&format!("ALTER DATABASE {database} OWNER TO {user}"))
                .await
                .map_err(pg_err("give Moray's database to its role"))?;
        } else {
            admin
                .batch_execute(&format!("CREATE DATABASE {database} OWNER {user}"))
                .await
                .map_err(pg_err("create Moray's database"))?;
            tracing::info!(database = %role.database, owner = %role.user, "created Moray's database");
        }
        drop(admin);
        // Tables made before the role (by the superuser) become the role's.
        let db = self.connect_to(&role.database).await?;
        db.batch_execute("SET synchronous_commit = local; SET default_transaction_read_only = off")
            .await
            .map_err(pg_err("session settings"))?;
        let rows = db
            .query(
                "SELECT format('%I.%I', n.nspname, c.relname), c.relkind::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
                 AND n.nspname NOT LIKE 'pg_toast%' AND c.relkind IN ('r', 'p', 'v', 'm') \
                 AND pg_get_userbyid(c.relowner) <> $1",
                &[&role.user],
            )
            .await
            .map_err(pg_err("list tables of Moray's database"))?;
        for row in rows {
            let name: String = row.get(0);
            db.batch_execute(&format!("ALTER TABLE {name} OWNER TO {user}"))
                .await
                .map_err(pg_err(&format!("give {name} to Moray's role")))?;
        }
        Ok(())
    }

    async fn start(&mut self) -> Result<(), Error> {
        self.ensure_hba()?;
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.log_path())
            .map_err(|e| Error::io(&self.log_path(), e))?;
        let mut c = self.command("postgres");
        c.arg("-D")
            .arg(self.pgdata())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        // PostgreSQL dies with the sitter: a killed sitter must not leave a primary
        // running that nobody supervises.
        // SAFETY: prctl is async-signal-safe and affects only the child.
        unsafe {
            c.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().map_err(|source| Error::Spawn {
            command: "postgres".into(),
            source,
        })?;
        self.child = Some(child);
        self.view.send_modify(|v| v.state = "starting".into());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_alive()?;
            if let Ok(client) = self.connect().await
                && client.simple_query("SELECT 1").await.is_ok()
            {
                self.client = Some(client);
                self.view.send_modify(|v| v.polled.online = true);
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop().await;
                return Err(Error::PgNotReady {
                    seconds: START_TIMEOUT.as_secs(),
                    log: tail(&self.log_path(), 20),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Immediate shutdown (SIGQUIT): no shutdown checkpoint, which a deposed primary
    /// must not write (MANATEE-188), and fast.
    async fn stop(&mut self) {
        self.client = None;
        self.primary_wait = None;
        self.standby = None;
        self.mode = Mode::Stopped;
        self.view.send_modify(|v| {
            v.polled.online = false;
            v.state = "stopped".into();
            v.read_only = false;
        });
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            // SAFETY: signalling our own child by pid.
            unsafe {
                libc::kill(pid as i32, libc::SIGQUIT);
            }
        }
        if tokio::time::timeout(STOP_TIMEOUT, child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
        tracing::info!("PostgreSQL stopped");
    }

    fn check_alive(&mut self) -> Result<(), Error> {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            self.child = None;
            return Err(Error::PgExited {
                status: status.to_string(),
                log: tail(&self.log_path(), 20),
            });
        }
        Ok(())
    }

    fn url(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres connect_timeout=2",
            self.opts.ip, self.opts.port
        )
    }

    async fn connect_to(&self, database: &str) -> Result<tokio_postgres::Client, Error> {
        let url = format!(
            "host={} port={} user=postgres dbname={} connect_timeout=2",
            self.opts.ip,
            self.opts.port,
            quote_conninfo(database)
        );
        let (client, conn) = tokio_postgres::connect(&url, NoTls)
            .await
            .map_err(|source| Error::Postgres {
                url: url.clone(),
                source,
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    async fn connect(&self) -> Result<tokio_postgres::Client, Error> {
        self.connect_to("postgres").await
    }

    async fn client(&mut self) -> Result<&tokio_postgres::Client, Error> {
        let client = match self.client.take() {
            Some(c) if !c.is_closed() => c,
            _ => self.connect().await?,
        };
        Ok(self.client.insert(client))
    }

    async fn query_one_text(&mut self, sql: &str) -> Result<Option<String>, Error> {
        let url = self.url();
        let client = self.client().await?;
        let row = client
            .query_one(sql, &[])
            .await
            .map_err(|source| Error::Postgres {
                url: url.clone(),
                source,
            });
        if row.is_err() {
            self.client = None;
        }
        let row = row?;
        row.try_get::<_, Option<String>>(0)
            .map_err(|source| Error::Postgres { url, source })
    }

    async fn execute(&mut self, sql: &str) -> Result<(), Error> {
        let url = self.url();
        let client = self.client().await?;
        let r = client.batch_execute(sql).await;
        if r.is_err() {
            self.client = None;
        }
        r.map_err(|source| Error::Postgres { url, source })
    }

    async fn reload(&mut self) -> Result<(), Error> {
        self.execute("SELECT pg_reload_conf()").await
    }

    async fn in_recovery(&mut self) -> Result<bool, Error> {
        Ok(self
            .query_one_text("SELECT pg_is_in_recovery()::text")
            .await?
            .as_deref()
            == Some("true"))
    }

    // ---- commands ----

    async fn apply(&mut self, cfg: &PgConfig) -> Result<(), Error> {
        match cfg.role {
            PgRole::None => {
                self.stop().await;
                Ok(())
            }
            PgRole::Primary => self.become_primary(cfg).await,
            PgRole::Sync | PgRole::Async => self.become_standby(cfg).await,
        }
    }

    async fn become_primary(&mut self, cfg: &PgConfig) -> Result<(), Error> {
        if !self.has_data() {
            self.initdb().await?;
        }
        // Before anything runs as primary: this data may now diverge from the others.
        self.set_marker(true)?;
        let name = cfg.sync.as_ref().map(|s| sync_name(&s.id, cfg.generation));
        let read_only = name.is_some();
        self.write_conf(Conf::Primary {
            sync: name.as_deref(),
            read_only,
        })?;
        if self.child.is_some() {
            self.reload().await?;
            if self.in_recovery().await? {
                tracing::info!("promoting PostgreSQL");
                self.execute("SELECT pg_promote(true, 60)").await?;
                if self.in_recovery().await? {
                    return Err(Error::Pg {
                        what: "pg_promote did not end recovery within 60 s".into(),
                    });
                }
            }
        } else {
            self.set_standby_signal(false)?;
            self.start().await?;
        }
        // Sessions that predate the reload must not write before the sync caught up.
        if read_only {
            let _ = self
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
                )
                .await;
        }
        self.moray_ready = match self.ensure_moray_role().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %manatee_client::error_chain(&e), "cannot make Moray's role and database; retrying");
                false
            }
        };
        self.mode = Mode::Primary;
        self.standby = None;
        self.primary_wait = name.map(|name| PrimaryWait {
            name,
            target: None,
            last_flush: None,
            last_progress: Instant::now(),
            complained: false,
        });
        self.view.send_modify(|v| {
            v.state = if read_only {
                "primary-read-only"
            } else {
                "primary"
            }
            .into();
            v.read_only = read_only;
        });
        Ok(())
    }

    async fn become_standby(&mut self, cfg: &PgConfig) -> Result<(), Error> {
        let Some(up) = cfg.upstream.clone() else {
            return Err(Error::Pg {
                what: "a standby without an upstream".into(),
            });
        };
        let name = if cfg.role == PgRole::Sync {
            sync_name(&self.opts.peer_id, cfg.generation)
        } else {
            async_name(&self.opts.peer_id)
        };
        if !self.has_data() || self.marker().was_primary || self.mode == Mode::Primary {
            self.stop().await;
            self.rebuild(&up).await?;
        }
        self.follow(&up, &name)?;
        if self.child.is_some() {
            // primary_conninfo is reloadable (PostgreSQL 13+): the walreceiver restarts.
            self.reload().await?;
        } else {
            self.start().await?;
        }
        self.mode = Mode::Standby;
        self.primary_wait = None;
        self.standby = Some(StandbyWatch {
            upstream: up,
            not_streaming_since: Instant::now(),
        });
        self.view.send_modify(|v| {
            v.state = "standby".into();
            v.read_only = true;
        });
        Ok(())
    }

    /// pg_basebackup from `up` into a fresh directory, swapped in only when complete.
    async fn rebuild(&mut self, up: &Peer) -> Result<(), Error> {
        let port = peer_pg_port(up).unwrap_or(5432);
        tracing::info!(upstream = %up.id, "rebuilding with pg_basebackup");
        self.last_rebuild = Some(Instant::now());
        let started = triton_common::time::now_rfc3339();
        self.view.send_modify(|v| {
            v.state = "rebuilding".into();
            v.rebuild = format!("pg_basebackup from {} since {started}", up.id);
        });
        let tmp = self.opts.data_dir.join("pgdata.rebuild");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        let mut c = self.command("pg_basebackup");
        c.arg("-h")
            .arg(&up.ip)
            .arg("-p")
            .arg(port.to_string())
            .args(["-U", "postgres", "-X", "stream", "-c", "fast", "-D"])
            .arg(&tmp);
        if !self.opts.fsync {
            c.arg("--no-sync");
        }
        let r = tokio::time::timeout(REBUILD_TIMEOUT, run(c, "pg_basebackup")).await;
        self.view.send_modify(|v| v.rebuild.clear());
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::Pg {
                    what: format!(
                        "pg_basebackup from {} took longer than {} s",
                        up.id,
                        REBUILD_TIMEOUT.as_secs()
                    ),
                });
            }
        }
        let pgdata = self.pgdata();
        if pgdata.exists() {
            let old = self.opts.data_dir.join("pgdata.old");
            if old.exists() {
                std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
            }
            std::fs::rename(&pgdata, &old).map_err(|e| Error::io(&pgdata, e))?;
            std::fs::rename(&tmp, &pgdata).map_err(|e| Error::io(&tmp, e))?;
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        } else {
            std::fs::rename(&tmp, &pgdata).map_err(|e| Error::io(&tmp, e))?;
        }
        self.set_marker(false)?;
        tracing::info!(upstream = %up.id, "rebuild complete");
        Ok(())
    }

    /// Stops acknowledging (a primary) or receiving (a standby), then reads the WAL
    /// position, which is then final.
    async fn fence(&mut self) -> Result<Lsn, Error> {
        if self.child.is_none() {
            return Err(Error::Pg {
                what: "PostgreSQL is not running".into(),
            });
        }
        self.primary_wait = None;
        self.standby = None;
        let text = if self.in_recovery().await? {
            self.write_conf(Conf::Standby {
                upstream: None,
                name: "",
            })?;
            self.reload().await?;
            // The walreceiver stops (flushing what it received) once the startup
            // process sees the empty primary_conninfo.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let n = self
                    .query_one_text("SELECT count(*)::text FROM pg_stat_wal_receiver")
                    .await?;
                if n.as_deref() == Some("0") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(Error::Pg {
                        what: "the walreceiver did not stop within 10 s".into(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            self.query_one_text(
                "SELECT greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text",
            )
            .await?
        } else {
            self.write_conf(Conf::Primary {
                sync: Some(FENCED),
                read_only: true,
            })?;
            self.reload().await?;
            // A walsender that has not yet re-read the configuration could still
            // release a commit: end every sync walsender; when they reconnect they read
            // the fenced configuration.
            self.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_replication \
                 WHERE application_name LIKE '%/g%'",
            )
            .await?;
            self.view.send_modify(|v| {
                v.state = "primary-read-only".into();
                v.read_only = true;
            });
            self.query_one_text("SELECT pg_current_wal_lsn()::text")
                .await?
        };
        let text = text.unwrap_or_else(|| "0/0".into());
        text.parse::<Lsn>().map_err(|what| Error::Pg { what })
    }

    // ---- polling ----

    async fn poll(&mut self) -> Option<Event> {
        self.child.as_ref()?;
        match self.mode {
            Mode::Primary => {
                self.poll_primary().await;
                None
            }
            Mode::Standby => self.poll_standby().await,
            Mode::Stopped => None,
        }
    }

    async fn poll_primary(&mut self) {
        if !self.moray_ready {
            match self.ensure_moray_role().await {
                Ok(()) => self.moray_ready = true,
                Err(e) => {
                    tracing::debug!(error = %manatee_client::error_chain(&e), "cannot make Moray's role and database yet")
                }
            }
        }
        let url = self.url();
        let Ok(client) = self.client().await else {
            self.view.send_modify(|v| v.polled.online = false);
            return;
        };
        let current = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .ok()
            .and_then(|r| r.try_get::<_, Option<String>>(0).ok().flatten())
            .and_then(|s| s.parse::<Lsn>().ok());
        let replicas = match replicas(client).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%url, error = %e, "pg_stat_replication");
                self.client = None;
                Vec::new()
            }
        };
        let polled = Polled {
            online: current.is_some(),
            wal_current: current,
            replicas: replicas.clone(),
            ..Default::default()
        };
        self.view.send_modify(|v| v.polled = polled);
        // The standby wait: writes are enabled once the sync streams and has flushed
        // everything the primary had when the wait began.
        let Some(wait) = self.primary_wait.as_mut() else {
            return;
        };
        let Some(current) = current else { return };
        let target = *wait.target.get_or_insert(current);
        let row = replicas.iter().find(|r| r.application_name == wait.name);
        let flush = row.and_then(|r| r.flush_lsn.parse::<Lsn>().ok());
        if flush > wait.last_flush {
            wait.last_flush = flush;
            wait.last_progress = Instant::now();
        }
        let caught_up = row.is_some_and(|r| r.state == "streaming" && r.sync_state == "sync")
            && flush.is_some_and(|f| f >= target);
        if !caught_up {
            if wait.last_progress.elapsed() > REPLICATION_TIMEOUT && !wait.complained {
                wait.complained = true;
                tracing::error!(sync = %wait.name, "the sync has made no replication progress for {} s; staying read-only (possible WAL divergence: rebuild the sync)", REPLICATION_TIMEOUT.as_secs());
            }
            return;
        }
        let name = wait.name.clone();
        let r = self.write_conf(Conf::Primary {
            sync: Some(&name),
            read_only: false,
        });
        if r.is_ok() && self.reload().await.is_ok() {
            self.primary_wait = None;
            tracing::info!(sync = %name, "sync caught up; writes enabled");
            self.view.send_modify(|v| {
                v.state = "primary".into();
                v.read_only = false;
            });
        }
    }

    async fn poll_standby(&mut self) -> Option<Event> {
        let Ok(client) = self.client().await else {
            self.view.send_modify(|v| v.polled.online = false);
            return None;
        };
        let positions = client
            .query_one(
                "SELECT coalesce(pg_last_wal_receive_lsn()::text, ''), \
                 coalesce(pg_last_wal_replay_lsn()::text, ''), \
                 extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8",
                &[],
            )
            .await;
        let receiver = client
            .query(
                "SELECT coalesce(status, ''), coalesce(sender_host, ''), coalesce(sender_port, 0), \
                 coalesce(flushed_lsn::text, '') FROM pg_stat_wal_receiver",
                &[],
            )
            .await;
        let cascading = replicas(client).await.unwrap_or_default();
        let (receive, replay, lag) = match &positions {
            Ok(r) => (
                r.get::<_, String>(0).parse::<Lsn>().ok(),
                r.get::<_, String>(1).parse::<Lsn>().ok(),
                r.get::<_, Option<f64>>(2),
            ),
            Err(_) => (None, None, None),
        };
        let (status, host, port, flushed) = match &receiver {
            Ok(rows) if !rows.is_empty() => (
                rows[0].get::<_, String>(0),
                rows[0].get::<_, String>(1),
                rows[0].get::<_, i32>(2),
                rows[0].get::<_, String>(3).parse::<Lsn>().ok(),
            ),
            _ => (String::new(), String::new(), 0, None),
        };
        let online = positions.is_ok();
        if !online {
            self.client = None;
        }
        let polled = Polled {
            online,
            wal_receive: receive,
            wal_replay: replay,
            replay_lag_seconds: lag,
            receiver_status: status.clone(),
            replicas: cascading,
            ..Default::default()
        };
        self.view.send_modify(|v| v.polled = polled);
        let watch = self.standby.as_mut()?;
        let up = &watch.upstream;
        let from_upstream = status == "streaming"
            && host == up.ip
            && peer_pg_port(up).is_some_and(|p| p as i32 == port);
        if from_upstream && let Some(flushed) = flushed {
            watch.not_streaming_since = Instant::now();
            return Some(Event::Streaming {
                upstream: up.id.clone(),
                flushed,
            });
        }
        // The safety net: a standby that cannot stream from a reachable upstream has
        // diverged; rebuild it (at most every few minutes).
        if watch.not_streaming_since.elapsed() > STANDBY_STUCK_TIMEOUT
            && self
                .last_rebuild
                .is_none_or(|t| t.elapsed() > STANDBY_STUCK_TIMEOUT * 4)
            && reachable(up).await
        {
            let up = up.clone();
            tracing::warn!(upstream = %up.id, "not streaming from a reachable upstream for {} s; rebuilding", STANDBY_STUCK_TIMEOUT.as_secs());
            let name = async_name(&self.opts.peer_id);
            self.stop().await;
            let r = async {
                self.rebuild(&up).await?;
                self.follow(&up, &name)?;
                self.start().await
            }
            .await;
            if let Err(e) = r {
                tracing::error!(error = %manatee_client::error_chain(&e), "rebuild failed");
            }
            // The state machine reapplies its configuration (and the right replication
            // name) on the next change; until then this standby streams as an async.
            self.mode = if self.child.is_some() {
                Mode::Standby
            } else {
                Mode::Stopped
            };
            self.standby = Some(StandbyWatch {
                upstream: up,
                not_streaming_since: Instant::now(),
            });
        }
        None
    }
}

/// The standbys streaming from this PostgreSQL.
async fn replicas(
    client: &tokio_postgres::Client,
) -> Result<Vec<ReplicaRow>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT coalesce(application_name, ''), coalesce(client_addr::text, ''), \
             coalesce(state, ''), coalesce(sync_state, ''), coalesce(sent_lsn::text, ''), \
             coalesce(write_lsn::text, ''), coalesce(flush_lsn::text, ''), \
             coalesce(replay_lsn::text, '') FROM pg_stat_replication",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ReplicaRow {
            application_name: r.get(0),
            client_addr: r.get(1),
            state: r.get(2),
            sync_state: r.get(3),
            sent_lsn: r.get(4),
            write_lsn: r.get(5),
            flush_lsn: r.get(6),
            replay_lsn: r.get(7),
        })
        .collect())
}

/// The PostgreSQL port of a peer, from its URL.
pub fn peer_pg_port(p: &Peer) -> Option<u16> {
    let rest = p
        .pg_url
        .split_once("://")
        .map_or(p.pg_url.as_str(), |(_, r)| r);
    let authority = rest.split('/').next()?;
    let hostport = authority.rsplit('@').next()?;
    hostport.rsplit_once(':')?.1.parse().ok()
}

async fn reachable(p: &Peer) -> bool {
    let Some(port) = peer_pg_port(p) else {
        return false;
    };
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect((p.ip.as_str(), port))
        )
        .await,
        Ok(Ok(_))
    )
}

async fn run(mut c: Command, what: &str) -> Result<(), Error> {
    let out = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|source| Error::Spawn {
            command: what.to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: what.to_string(),
            output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// The last `lines` lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// (uid, gid) to run PostgreSQL as: none when not root (run as ourselves), else `user`.
pub fn run_as(user: &str) -> Option<(u32, u32)> {
    // SAFETY: getuid never fails.
    if unsafe { libc::getuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new(user).ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: non-null result of getpwnam.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

fn chown(path: &Path, to: Option<(u32, u32)>) -> Result<(), Error> {
    let Some((uid, gid)) = to else {
        return Ok(());
    };
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| Error::io(path, e))
}

/// The newest `/usr/lib/postgresql/<version>/bin`, or `$PG_BINDIR`.
pub fn default_bin_dir() -> Option<PathBuf> {
    triton_common::postgres::bin_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_comes_from_the_url() {
        let p = Peer {
            id: "10.0.0.1:6000:6001".into(),
            ip: "10.0.0.1".into(),
            pg_url: "postgresql://postgres@10.0.0.1:6000/postgres".into(),
            zone_id: String::new(),
            backup_url: None,
        };
        assert_eq!(peer_pg_port(&p), Some(6000));
        let t = Peer {
            pg_url: "tcp://postgres@10.0.0.2:5432/postgres".into(),
            ..p
        };
        assert_eq!(peer_pg_port(&t), Some(5432));
    }
}
