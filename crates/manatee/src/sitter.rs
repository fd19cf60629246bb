//! The sitter: one per PostgreSQL peer. It registers in etcd, feeds the state machine
//! with what etcd and PostgreSQL say, carries out its actions, and serves its status over
//! gRPC (`triton.manatee.v1.Sitter`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use manatee_client::etcd::Etcd;
use manatee_client::state::{Peer, ShardKeys};
use manatee_client::{Observed, error_chain};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use triton_proto::manatee::v1 as pb;

use crate::Error;
use crate::pg::{PgCommand, PgOptions, PgView};
use crate::state_machine::{Action, Event, PeerConfig, PeerMachine, Role};

/// The default lease TTL. A dead primary is noticed when its lease expires, so this is
/// most of the write unavailability after a crash (the target is a few seconds; Triton's
/// ZooKeeper session timeout was 60 s, Patroni's TTL is 30 s). Shorter makes failover
/// faster but a paused or overloaded sitter more likely to be deposed: the keep-alive
/// runs every third of it, so a sitter must stall for two keep-alives in a row.
pub const DEFAULT_LEASE_TTL_SECS: u64 = 3;

/// The sitter's configuration (`manatee-sitter.toml`; every key overridable as
/// `MANATEE_SITTER_<KEY>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SitterConfig {
    /// The shard's name: its keys live under `/manatee/<shard>/` in etcd.
    pub shard: String,
    /// etcd endpoints.
    pub etcd: Vec<String>,
    /// This peer's name (Triton: the zone's uuid); shown by manatee-adm.
    pub name: String,
    /// The address peers and consumers reach this peer at.
    pub ip: String,
    pub pg_port: u16,
    /// The gRPC status port (the reference's status server, pg_port + 1).
    pub status_port: u16,
    /// Where PostgreSQL's data and log live.
    pub data_dir: PathBuf,
    /// PostgreSQL's binaries; empty: `$PG_BINDIR` or the newest `/usr/lib/postgresql/*/bin`.
    pub pg_bin_dir: String,
    /// The user PostgreSQL runs as when the sitter runs as root.
    pub pg_user: String,
    /// Seconds; see [`DEFAULT_LEASE_TTL_SECS`].
    pub lease_ttl_secs: u64,
    /// Bootstrap / development only: a single writable peer with no sync.
    pub one_node_write_mode: bool,
    /// PostgreSQL's `synchronous_commit` (remote_write, on, remote_apply).
    pub synchronous_commit: String,
    /// PostgreSQL's `fsync` (only tests turn it off).
    pub fsync: bool,
    /// Networks allowed to connect and replicate without a password (pg_hba `trust`).
    pub trust_networks: Vec<String>,
    /// Extra `postgresql.conf` lines.
    pub pg_extra_conf: Vec<String>,
    /// Moray's role, made on the primary: not a superuser, the owner of `moray_database`
    /// (Triton's manatee makes the same). Empty: none is made.
    pub moray_user: String,
    pub moray_database: String,
    /// The password of Moray's role, one line, mode 0600; made with a random password
    /// when missing. Set, pg_hba asks the role for it (scram-sha-256) from every address.
    /// Empty: the role has no password (it logs in where `trust_networks` trust it).
    pub moray_password_file: String,
    /// Who may call the status server (manatee-adm's and the other peers' addresses),
    /// and reflection (`[grpc]`).
    pub grpc: triton_common::grpc::ServerConfig,
}

impl Default for SitterConfig {
    fn default() -> Self {
        SitterConfig {
            shard: "1".into(),
            etcd: vec!["http://127.0.0.1:2379".into()],
            name: hostname(),
            ip: "127.0.0.1".into(),
            pg_port: 5432,
            status_port: 5433,
            data_dir: PathBuf::from("/var/lib/manatee"),
            pg_bin_dir: String::new(),
            pg_user: "postgres".into(),
            lease_ttl_secs: DEFAULT_LEASE_TTL_SECS,
            one_node_write_mode: false,
            synchronous_commit: "remote_write".into(),
            fsync: true,
            trust_networks: vec!["127.0.0.1/32".into()],
            pg_extra_conf: Vec::new(),
            moray_user: "moray".into(),
            moray_database: "moray".into(),
            moray_password_file: String::new(),
            grpc: triton_common::grpc::ServerConfig::default(),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl SitterConfig {
    /// This peer as the cluster state names it.
    pub fn peer(&self) -> Peer {
        Peer::new(&self.ip, self.pg_port, self.status_port, &self.name)
    }

    fn check(&self) -> Result<(), Error> {
        let mut problems = Vec::new();
        if self.etcd.is_empty() {
            problems.push("etcd: at least one endpoint is needed".to_string());
        }
        if self.lease_ttl_secs < 2 {
            problems.push("lease_ttl_secs: etcd grants no lease shorter than 2 s".into());
        }
        if self.shard.is_empty() || self.shard.contains('/') {
            problems.push("shard: must be a non-empty name without '/'".into());
        }
        if !["on", "remote_write", "remote_apply"].contains(&self.synchronous_commit.as_str()) {
            problems.push(format!(
                "synchronous_commit: {:?} would acknowledge commits the sync may not have; use on, remote_write or remote_apply",
                self.synchronous_commit
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Fatal(format!(
                "invalid configuration:\n  {}",
                problems.join("\n  ")
            )))
        }
    }
}

/// What the status endpoint shows of the state machine.
#[derive(Debug, Clone, Default)]
struct MachineView {
    role: String,
    async_index: u32,
    generation: u64,
    upstream: String,
    refusal: String,
}

/// A running sitter.
pub struct Running {
    /// The status server's address.
    pub status_addr: SocketAddr,
    pub peer: Peer,
    task: tokio::task::JoinHandle<Result<(), Error>>,
}

impl Running {
    /// Waits until the sitter stops (cancelled, or a fatal error).
    pub async fn wait(self) -> Result<(), Error> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(Error::Fatal(format!("the sitter task failed: {e}"))),
        }
    }
}

/// Starts a sitter; it runs until `cancel` or a fatal error.
pub async fn run(cfg: SitterConfig, cancel: CancellationToken) -> Result<Running, Error> {
    cfg.check()?;
    let me = cfg.peer();
    let bin_dir = if cfg.pg_bin_dir.is_empty() {
        crate::pg::default_bin_dir().ok_or_else(|| {
            Error::Fatal(
                "PostgreSQL is not installed (apt-get install postgresql), or set pg_bin_dir"
                    .into(),
            )
        })?
    } else {
        PathBuf::from(&cfg.pg_bin_dir)
    };
    let etcd = Etcd::new(&cfg.etcd)?;
    let keys = ShardKeys::new(&cfg.shard);
    let listener = triton_common::grpc::bind(&format!("{}:{}", cfg.ip, cfg.status_port)).await?;
    let status_addr = listener
        .local_addr()
        .map_err(|e| Error::Fatal(format!("status listener: {e}")))?;

    let (events_tx, events_rx) = mpsc::channel(256);
    let pg_opts = PgOptions {
        bin_dir,
        data_dir: cfg.data_dir.clone(),
        ip: cfg.ip.clone(),
        port: cfg.pg_port,
        peer_id: me.id.clone(),
        synchronous_commit: cfg.synchronous_commit.clone(),
        fsync: cfg.fsync,
        trust_networks: cfg.trust_networks.clone(),
        extra_conf: cfg.pg_extra_conf.clone(),
        user: cfg.pg_user.clone(),
        moray: (!cfg.moray_user.is_empty()).then(|| crate::pg::MorayRole {
            user: cfg.moray_user.clone(),
            database: cfg.moray_database.clone(),
            password_file: (!cfg.moray_password_file.is_empty())
                .then(|| PathBuf::from(&cfg.moray_password_file)),
        }),
    };
    let pg_cancel = CancellationToken::new();
    let (pg_tx, pg_view, pg_task) = crate::pg::spawn(pg_opts, events_tx.clone(), pg_cancel.clone());

    let coord_cancel = CancellationToken::new();
    let ttl = Duration::from_secs(cfg.lease_ttl_secs);
    let coord_task = tokio::spawn(crate::coord::run_session(
        etcd.clone(),
        keys.clone(),
        me.clone(),
        ttl,
        events_tx.clone(),
        coord_cancel.clone(),
    ));

    let machine_view = Arc::new(Mutex::new(MachineView {
        role: "unknown".into(),
        ..Default::default()
    }));
    let service = StatusService {
        me: me.clone(),
        machine: machine_view.clone(),
        pg: pg_view,
    };
    let routes = tonic::service::Routes::new(pb::sitter_server::SitterServer::new(service));
    let serve_cancel = CancellationToken::new();
    let grpc = cfg.grpc.clone();
    let serve_shutdown = serve_cancel.clone();
    let server = tokio::spawn(async move {
        triton_common::grpc::serve(
            listener,
            routes,
            &["triton.manatee.v1.Sitter"],
            &grpc,
            serve_shutdown,
        )
        .await
    });

    let machine = PeerMachine::new(PeerConfig {
        me: me.clone(),
        one_node_write_mode: cfg.one_node_write_mode,
    });
    let task = tokio::spawn(async move {
        let r = drive(
            machine,
            events_rx,
            events_tx,
            pg_tx,
            pg_task,
            etcd,
            keys,
            machine_view,
            cancel,
        )
        .await;
        // Stop PostgreSQL before the registration disappears: peers that see us gone
        // may take over at once.
        pg_cancel.cancel();
        coord_cancel.cancel();
        let _ = coord_task.await;
        serve_cancel.cancel();
        let _ = server.await;
        r
    });
    Ok(Running {
        status_addr,
        peer: me,
        task,
    })
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    mut machine: PeerMachine,
    mut events: mpsc::Receiver<Event>,
    events_tx: mpsc::Sender<Event>,
    pg: mpsc::Sender<PgCommand>,
    mut pg_task: tokio::task::JoinHandle<Result<(), Error>>,
    etcd: Etcd,
    keys: ShardKeys,
    view: Arc<Mutex<MachineView>>,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let me = machine.me().id.clone();
    let mut last_role = Role::Unknown;
    let mut last_refusal = None;
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => {
                // Stop PostgreSQL first (pg task ends on its cancel in the caller).
                return Ok(());
            }
            r = &mut pg_task => {
                return match r {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(Error::Fatal(format!("the PostgreSQL task failed: {e}"))),
                };
            }
            e = events.recv() => match e {
                Some(e) => e,
                None => return Ok(()),
            },
        };
        let quiet = matches!(event, Event::Streaming { .. });
        if !quiet {
            tracing::debug!(?event, "event");
        }
        let actions = machine.handle(event, SystemTime::now());
        if machine.role() != last_role {
            tracing::info!(from = %last_role, to = %machine.role(), generation = ?machine.observed().state().map(|s| s.generation), "role changed");
            last_role = machine.role();
        }
        if machine.last_refusal != last_refusal {
            if let Some(r) = &machine.last_refusal {
                tracing::warn!(reason = %r, "not declaring a new generation");
            }
            last_refusal = machine.last_refusal.clone();
        }
        update_view(&machine, &view);
        for action in actions {
            match action {
                Action::FenceWal => {
                    let _ = pg.send(PgCommand::Fence).await;
                }
                Action::ApplyPg(cfg) => {
                    let _ = pg.send(PgCommand::Apply(cfg)).await;
                }
                Action::WriteState {
                    expected_revision,
                    state,
                    reason,
                } => {
                    let etcd = etcd.clone();
                    let keys = keys.clone();
                    let tx = events_tx.clone();
                    let writer = me.clone();
                    tokio::spawn(async move {
                        let r = crate::coord::write_state(
                            &etcd,
                            &keys,
                            expected_revision,
                            &state,
                            &writer,
                            &reason,
                        )
                        .await;
                        let done = match r {
                            Ok(Some(rev)) => {
                                tracing::info!(generation = state.generation, revision = rev, %reason, "cluster state written");
                                Some(rev)
                            }
                            Ok(None) => {
                                tracing::info!(generation = state.generation, %reason, "cluster state changed concurrently; not written");
                                None
                            }
                            Err(e) => {
                                tracing::warn!(error = %error_chain(&e), %reason, "cannot write the cluster state");
                                None
                            }
                        };
                        let _ = tx.send(Event::WriteDone(done)).await;
                    });
                }
                Action::RetryAfter(d) => {
                    let tx = events_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(d).await;
                        let _ = tx.send(Event::Timer).await;
                    });
                }
                Action::Fatal(msg) => {
                    tracing::error!(%msg, "fatal");
                    return Err(Error::Fatal(msg));
                }
            }
        }
    }
}

fn update_view(machine: &PeerMachine, view: &Arc<Mutex<MachineView>>) {
    let z = machine.observed().state();
    let me = &machine.me().id;
    let v = MachineView {
        role: machine.role().to_string(),
        async_index: match machine.role() {
            Role::Async(i) => i as u32,
            _ => 0,
        },
        generation: z.map_or(0, |s| s.generation),
        upstream: z
            .and_then(|s| s.upstream_of(me))
            .map(|p| p.id.clone())
            .unwrap_or_default(),
        refusal: match (machine.observed(), &machine.last_refusal) {
            (Observed::Corrupt { reason, .. }, _) => {
                format!("the cluster state in etcd is not valid: {reason}")
            }
            (_, Some(r)) => r.to_string(),
            _ => String::new(),
        },
    };
    if let Ok(mut g) = view.lock() {
        *g = v;
    }
}

struct StatusService {
    me: Peer,
    machine: Arc<Mutex<MachineView>>,
    pg: watch::Receiver<PgView>,
}

#[tonic::async_trait]
impl pb::sitter_server::Sitter for StatusService {
    async fn status(
        &self,
        _request: tonic::Request<pb::StatusRequest>,
    ) -> Result<tonic::Response<pb::StatusResponse>, tonic::Status> {
        let m = self.machine.lock().map(|g| g.clone()).unwrap_or_default();
        let pg = self.pg.borrow().clone();
        let lsn = |l: Option<manatee_client::Lsn>| l.map(|l| l.to_string()).unwrap_or_default();
        let last_error = if pg.last_error.is_empty() {
            m.refusal.clone()
        } else {
            pg.last_error.clone()
        };
        Ok(tonic::Response::new(pb::StatusResponse {
            peer_id: self.me.id.clone(),
            zone_id: self.me.zone_id.clone(),
            ip: self.me.ip.clone(),
            pg_url: self.me.pg_url.clone(),
            role: m.role,
            async_index: m.async_index,
            generation: m.generation,
            upstream_id: m.upstream,
            pg_online: pg.polled.online,
            pg_state: pg.state,
            pg_read_only: pg.read_only,
            wal_current: lsn(pg.polled.wal_current),
            wal_receive: lsn(pg.polled.wal_receive),
            wal_replay: lsn(pg.polled.wal_replay),
            replay_lag_seconds: pg.polled.replay_lag_seconds,
            wal_receiver_status: pg.polled.receiver_status,
            replicas: pg
                .polled
                .replicas
                .into_iter()
                .map(|r| pb::Replica {
                    application_name: r.application_name,
                    client_addr: r.client_addr,
                    state: r.state,
                    sync_state: r.sync_state,
                    sent_lsn: r.sent_lsn,
                    write_lsn: r.write_lsn,
                    flush_lsn: r.flush_lsn,
                    replay_lsn: r.replay_lsn,
                })
                .collect(),
            last_error,
            rebuild: pg.rebuild,
            version: crate::VERSION.to_string(),
        }))
    }
}
