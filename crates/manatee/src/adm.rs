//! manatee-adm: the operator's view of a shard and the few changes an operator makes to
//! it. Commands and output follow Triton's `manatee-adm(1)` where it applies; `--etcd`
//! replaces `--zk`. Every change is a compare-and-swap of the cluster state with a
//! history entry; a command that finds the shard in a state where its change would be
//! wrong refuses and says why, changing nothing.
//!
//! Each fact printed says where it came from: the cluster state (etcd), the registrations
//! (etcd) or a sitter's status endpoint; a sitter that does not answer is shown as such
//! and the rest is printed anyway.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use clap::{Parser, Subcommand};
use manatee_client::Observed;
use manatee_client::etcd::Etcd;
use manatee_client::state::{
    ClusterState, Freeze, HistoryEntry, Peer, Promote, PromoteRole, ShardKeys, StateRole,
};
use triton_proto::manatee::v1 as pb;

use crate::Error;
use crate::coord::{snapshot, write_state};

/// How long a sitter's status endpoint may take to answer.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a promote request stays valid.
pub const PROMOTE_EXPIRY: Duration = Duration::from_secs(60);

const WRITER: &str = "manatee-adm";

#[derive(Parser, Debug)]
#[command(name = "manatee-adm", version, about = "Administer a Manatee shard")]
pub struct Cli {
    /// etcd endpoints, comma-separated.
    #[arg(
        long,
        global = true,
        env = "MANATEE_ADM_ETCD",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ','
    )]
    pub etcd: Vec<String>,
    /// The shard (its keys are under /manatee/SHARD/ in etcd).
    #[arg(
        short = 's',
        long,
        global = true,
        env = "MANATEE_ADM_SHARD",
        default_value = "1"
    )]
    pub shard: String,
    #[command(subcommand)]
    pub command: Command,
}

/// Which peer a command is about.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Target {
    /// The sitter configuration of the peer (its id is derived from it).
    #[arg(short = 'c', long)]
    pub config: Option<PathBuf>,
    /// The peer's id (ip:pgPort:statusPort).
    #[arg(long)]
    pub id: Option<String>,
    /// The peer's IP address.
    #[arg(short = 'i', long)]
    pub ip: Option<String>,
    /// The peer's name (zone id).
    #[arg(short = 'n', long = "zonename")]
    pub name: Option<String>,
}

/// How `peers` and `pg-status` print their table.
#[derive(clap::Args, Debug, Clone)]
pub struct TableArgs {
    /// Omit the header.
    #[arg(short = 'H', long)]
    pub omit_header: bool,
    /// Columns: role, peername, peerabbr, ip, id; for pg-status also pg-online, pg-repl,
    /// pg-sent, pg-write, pg-flush, pg-replay, pg-lag.
    #[arg(short = 'o', long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// Only peers with this role.
    #[arg(short = 'r', long)]
    pub role: Option<String>,
}

impl TableArgs {
    /// The columns asked for, else `default`'s.
    fn columns_or(&self, default: impl FnOnce() -> Vec<String>) -> Vec<String> {
        if self.columns.is_empty() {
            default()
        } else {
            self.columns.clone()
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Topology, roles, replication and issues.
    Show {
        #[arg(short, long)]
        verbose: bool,
    },
    /// The peers and their roles.
    Peers {
        #[command(flatten)]
        table: TableArgs,
    },
    /// PostgreSQL status of every peer, optionally every PERIOD seconds COUNT times.
    PgStatus {
        #[command(flatten)]
        table: TableArgs,
        period: Option<f64>,
        count: Option<u64>,
    },
    /// State transitions, oldest first.
    History {
        /// JSON, one entry per line.
        #[arg(short, long)]
        json: bool,
        /// Include each full state.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Checks the shard; prints `error:`/`warning:` lines and exits non-zero on any.
    Verify {
        #[arg(short, long)]
        verbose: bool,
    },
    /// Stops any new generation (no takeover) until unfrozen.
    Freeze {
        #[arg(short, long)]
        reason: String,
    },
    Unfreeze,
    /// Lets a deposed peer rejoin: it rebuilds its data from its upstream and becomes an
    /// async.
    Rebuild {
        #[command(flatten)]
        target: Target,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        /// Seconds to wait for the peer to stream again (0: do not wait).
        #[arg(short, long, default_value_t = 600)]
        wait: u64,
    },
    /// Removes a deposed peer that is gone for good.
    Reap {
        #[command(flatten)]
        target: Target,
    },
    /// Marks the state as one-node-write mode (only a shard in that mode already, or
    /// none; going back from HA is not supported).
    SetOnwm {
        #[arg(short = 'm', long, default_value = "on")]
        mode: String,
        #[arg(short, long)]
        yes: bool,
    },
    /// Leaves one-node-write mode: unfreezes an ONWM shard so that its primary, once
    /// configured for normal mode, declares a new generation with a sync.
    UnsetOnwm {
        #[arg(short, long)]
        yes: bool,
    },
    /// Planned switchover: asks the named peer to move up.
    Promote {
        #[arg(short = 'n', long = "zonename")]
        name: Option<String>,
        /// The peer's id (ip:pgPort:statusPort), instead of its name.
        #[arg(long)]
        id: Option<String>,
        /// The peer's current role: sync or async.
        #[arg(short, long)]
        role: String,
        /// For an async: its index in the chain.
        #[arg(short = 'i', long = "asyncIndex")]
        async_index: Option<usize>,
        /// Replication lag (seconds) tolerated on the peer.
        #[arg(short = 'l', long = "lagToIgnore", default_value_t = 5.0)]
        lag_to_ignore: f64,
        /// Seconds to wait for the outcome.
        #[arg(short, long, default_value_t = 60)]
        wait: u64,
    },
    /// Removes a pending promote request.
    ClearPromote,
    /// The raw cluster-state JSON (Triton's `zk-state`).
    #[command(alias = "zk-state")]
    State,
    /// The raw registrations of the live sitters (Triton's `zk-active`).
    #[command(alias = "zk-active")]
    Active,
}

/// Runs one command; the `Ok` value is the exit code (non-zero when `verify` finds
/// issues).
pub async fn run(cli: Cli) -> Result<u8, Error> {
    let etcd = Etcd::new(&cli.etcd)?;
    let keys = ShardKeys::new(&cli.shard);
    let adm = Adm {
        etcd,
        keys,
        cli_etcd: cli.etcd.join(","),
        shard: cli.shard.clone(),
    };
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Show { verbose } => adm.show(verbose, &mut out).await,
        Command::Peers { table } => {
            let cols = table.columns_or(|| vec!["role".into(), "peername".into(), "ip".into()]);
            adm.table(&cols, table.omit_header, table.role.as_deref(), &mut out)
                .await?;
            Ok(0)
        }
        Command::PgStatus {
            table,
            period,
            count,
        } => {
            let cols = table.columns_or(peer_columns);
            let n = match (period, count) {
                (Some(_), Some(c)) => c,
                (Some(_), None) => u64::MAX,
                _ => 1,
            };
            for i in 0..n {
                if i > 0 {
                    tokio::time::sleep(Duration::from_secs_f64(period.unwrap_or(1.0))).await;
                    let _ = writeln!(out);
                }
                adm.table(&cols, table.omit_header, table.role.as_deref(), &mut out)
                    .await?;
            }
            Ok(0)
        }
        Command::History { json, verbose } => adm.history(json, verbose, &mut out).await,
        Command::Verify { verbose } => adm.verify(verbose, &mut out).await,
        Command::Freeze { reason } => adm.freeze(reason, &mut out).await,
        Command::Unfreeze => adm.unfreeze(&mut out).await,
        Command::Rebuild { target, yes, wait } => adm.rebuild(target, yes, wait, &mut out).await,
        Command::Reap { target } => adm.reap(target, &mut out).await,
        Command::SetOnwm { mode, yes } => match mode.as_str() {
            "on" => adm.set_onwm(yes, &mut out).await,
            "off" => adm.unset_onwm(yes, &mut out).await,
            other => Err(Error::Refused(format!(
                "-m must be on or off, not {other:?}"
            ))),
        },
        Command::UnsetOnwm { yes } => adm.unset_onwm(yes, &mut out).await,
        Command::Promote {
            name,
            id,
            role,
            async_index,
            lag_to_ignore,
            wait,
        } => {
            adm.promote(name, id, role, async_index, lag_to_ignore, wait, &mut out)
                .await
        }
        Command::ClearPromote => adm.clear_promote(&mut out).await,
        Command::State => adm.raw_state(&mut out).await,
        Command::Active => adm.raw_active(&mut out).await,
    }
}

struct Adm {
    etcd: Etcd,
    keys: ShardKeys,
    cli_etcd: String,
    shard: String,
}

/// A peer and what its sitter said.
struct PeerReport {
    role: String,
    peer: Peer,
    active: bool,
    status: Result<pb::StatusResponse, String>,
}

struct Issues {
    errors: Vec<String>,
    warnings: Vec<String>,
}

fn w(out: &mut dyn Write, s: impl AsRef<str>) {
    let _ = writeln!(out, "{}", s.as_ref());
}

/// Asks the sitter at `peer.backupUrl` for its status.
pub async fn peer_status(peer: &Peer) -> Result<pb::StatusResponse, String> {
    let url = peer
        .backup_url
        .clone()
        .ok_or_else(|| "no status URL (backupUrl) in its registration".to_string())?;
    let channel = triton_common::channel::ChannelBuilder::new(&url)
        .connect_timeout(STATUS_TIMEOUT)
        .request_timeout(Some(STATUS_TIMEOUT))
        .connect()
        .await
        .map_err(|e| format!("status endpoint: {}", triton_common::service::chain(&e)))?;
    let mut client = pb::sitter_client::SitterClient::new(channel);
    client
        .status(pb::StatusRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|e| format!("status endpoint {url}: {}", e.message()))
}

impl Adm {
    /// The state, refusing to go on when there is none or it is corrupt.
    async fn valid_state(&self) -> Result<(ClusterState, i64), Error> {
        let (kv, _) = self.etcd.get(&self.keys.state()).await?;
        match Observed::from_kv(kv.as_ref()) {
            Observed::State { state, revision } => Ok((state, revision)),
            Observed::Absent | Observed::Unknown => Err(Error::Refused(format!(
                "shard {:?} has no cluster state (it was never set up, or --etcd/--shard are wrong)",
                self.shard
            ))),
            Observed::Corrupt { reason, .. } => Err(Error::Refused(format!(
                "the cluster state in etcd is not valid ({reason}); nothing was changed. \
                 Inspect it with `manatee-adm state` and `manatee-adm history`"
            ))),
        }
    }

    /// [`Self::write`], then `said` to the operator.
    async fn write_and_say(
        &self,
        revision: i64,
        state: &ClusterState,
        reason: &str,
        out: &mut dyn Write,
        said: &str,
    ) -> Result<(), Error> {
        self.write(revision, state, reason).await?;
        w(out, said);
        Ok(())
    }

    async fn write(&self, revision: i64, state: &ClusterState, reason: &str) -> Result<(), Error> {
        match write_state(&self.etcd, &self.keys, revision, state, WRITER, reason).await? {
            Some(_) => Ok(()),
            None => Err(Error::Refused(
                "the cluster state changed while this command ran; nothing was written, try again"
                    .into(),
            )),
        }
    }

    /// Every peer the state names or that is registered, with its sitter's status.
    async fn reports(&self, state: Option<&ClusterState>, active: &[Peer]) -> Vec<PeerReport> {
        let mut peers: Vec<(String, Peer)> = Vec::new();
        if let Some(z) = state {
            peers.push(("primary".into(), z.primary.clone()));
            if let Some(s) = &z.sync {
                peers.push(("sync".into(), s.clone()));
            }
            peers.extend(z.asyncs.iter().map(|p| ("async".into(), p.clone())));
            peers.extend(z.deposed.iter().map(|p| ("deposed".into(), p.clone())));
        }
        for p in active {
            if !peers.iter().any(|(_, q)| q.id == p.id) {
                peers.push(("unassigned".into(), p.clone()));
            }
        }
        let statuses = futures_join(peers.iter().map(|(_, p)| {
            // The registration has the freshest status URL.
            let p = active.iter().find(|a| a.id == p.id).unwrap_or(p).clone();
            async move { peer_status(&p).await }
        }))
        .await;
        peers
            .into_iter()
            .zip(statuses)
            .map(|((role, peer), status)| PeerReport {
                active: active.iter().any(|a| a.id == peer.id),
                role,
                peer,
                status,
            })
            .collect()
    }

    async fn show(&self, verbose: bool, out: &mut dyn Write) -> Result<u8, Error> {
        let snap = snapshot(&self.etcd, &self.keys).await?;
        w(out, format!("etcd:        {}", self.cli_etcd));
        w(out, format!("cluster:     {}", self.shard));
        let state = match &snap.state {
            Observed::State { state, .. } => Some(state.clone()),
            Observed::Corrupt { reason, .. } => {
                w(
                    out,
                    format!("error: the cluster state in etcd is not valid: {reason}"),
                );
                None
            }
            _ => {
                w(
                    out,
                    "generation:  - (no cluster state: the shard is not set up)",
                );
                None
            }
        };
        if let Some(z) = &state {
            w(
                out,
                format!("generation:  {} ({})", z.generation, z.init_wal),
            );
            w(
                out,
                format!(
                    "mode:        {}",
                    if z.one_node_write_mode {
                        "singleton (one-node-write)"
                    } else {
                        "normal"
                    }
                ),
            );
            match &z.freeze {
                Some(f) => w(
                    out,
                    format!(
                        "freeze:      frozen since {}: {}",
                        f.date.as_deref().unwrap_or("?"),
                        f.reason.as_deref().unwrap_or("(no reason)")
                    ),
                ),
                None => w(out, "freeze:      not frozen"),
            }
            if let Some(p) = &z.promote {
                w(
                    out,
                    format!(
                        "promote:     {} to move up from {:?} (expires {})",
                        p.id, p.role, p.expire_time
                    ),
                );
            }
        }
        w(out, "");
        let reports = self.reports(state.as_ref(), &snap.active).await;
        let cols = peer_columns();
        print_table(&cols, &reports, state.as_ref(), false, None, out);
        if verbose {
            w(out, "");
            for r in &reports {
                w(out, format!("{} {}:", r.role, r.peer.name()));
                w(out, format!("    id:        {}", r.peer.id));
                w(out, format!("    ip:        {}", r.peer.ip));
                w(out, format!("    pgUrl:     {}", r.peer.pg_url));
                w(
                    out,
                    format!(
                        "    status:    {}",
                        r.peer.backup_url.as_deref().unwrap_or("-")
                    ),
                );
                w(
                    out,
                    format!(
                        "    in etcd:   {}",
                        if r.active {
                            "registered"
                        } else {
                            "not registered (sitter down)"
                        }
                    ),
                );
                match &r.status {
                    Ok(s) => {
                        w(
                            out,
                            format!(
                                "    sitter:    role {} generation {} upstream {}",
                                s.role,
                                s.generation,
                                or_dash(&s.upstream_id)
                            ),
                        );
                        w(
                            out,
                            format!(
                                "    pg:        {} online={} read-only={}",
                                s.pg_state, s.pg_online, s.pg_read_only
                            ),
                        );
                        w(
                            out,
                            format!(
                                "    wal:       current {} receive {} replay {}",
                                or_dash(&s.wal_current),
                                or_dash(&s.wal_receive),
                                or_dash(&s.wal_replay)
                            ),
                        );
                        if !s.wal_receiver_status.is_empty() {
                            w(out, format!("    receiver:  {}", s.wal_receiver_status));
                        }
                        for rep in &s.replicas {
                            w(
                                out,
                                format!(
                                    "    replica:   {} {} {} sent {} flush {} replay {}",
                                    rep.application_name,
                                    rep.state,
                                    rep.sync_state,
                                    rep.sent_lsn,
                                    rep.flush_lsn,
                                    rep.replay_lsn
                                ),
                            );
                        }
                        if !s.rebuild.is_empty() {
                            w(out, format!("    rebuild:   {}", s.rebuild));
                        }
                        if !s.last_error.is_empty() {
                            w(out, format!("    last error: {}", s.last_error));
                        }
                    }
                    Err(e) => w(out, format!("    sitter:    {e}")),
                }
            }
        }
        let issues = issues(&snap.state, &reports);
        if !issues.errors.is_empty() || !issues.warnings.is_empty() {
            w(out, "");
        }
        for e in &issues.errors {
            w(out, format!("error: {e}"));
        }
        for e in &issues.warnings {
            w(out, format!("warning: {e}"));
        }
        Ok(0)
    }

    async fn table(
        &self,
        cols: &[String],
        omit_header: bool,
        role: Option<&str>,
        out: &mut dyn Write,
    ) -> Result<(), Error> {
        for c in cols {
            if !COLUMNS.contains(&c.as_str()) {
                return Err(Error::Refused(format!(
                    "unknown column {c:?}; columns are {}",
                    COLUMNS.join(", ")
                )));
            }
        }
        let snap = snapshot(&self.etcd, &self.keys).await?;
        let state = snap.state.state().cloned();
        if let Observed::Corrupt { reason, .. } = &snap.state {
            eprintln!("manatee-adm: warning: the cluster state in etcd is not valid: {reason}");
        }
        let reports = self.reports(state.as_ref(), &snap.active).await;
        print_table(cols, &reports, state.as_ref(), omit_header, role, out);
        Ok(())
    }

    async fn verify(&self, verbose: bool, out: &mut dyn Write) -> Result<u8, Error> {
        let snap = snapshot(&self.etcd, &self.keys).await?;
        let reports = self.reports(snap.state.state(), &snap.active).await;
        let issues = issues(&snap.state, &reports);
        for e in &issues.errors {
            w(out, format!("error: {e}"));
        }
        for e in &issues.warnings {
            w(out, format!("warning: {e}"));
        }
        if verbose && issues.errors.is_empty() && issues.warnings.is_empty() {
            w(out, "no issues found");
        }
        Ok(if issues.errors.is_empty() && issues.warnings.is_empty() {
            0
        } else {
            1
        })
    }

    async fn history(&self, json: bool, verbose: bool, out: &mut dyn Write) -> Result<u8, Error> {
        let (kvs, _) = self.etcd.get_prefix(&self.keys.history_prefix()).await?;
        let mut prev: Option<ClusterState> = None;
        if !json {
            w(
                out,
                format!("{:<24}  {:>4}  {:<24}  SUMMARY", "TIME", "GEN", "WRITER"),
            );
        }
        for kv in kvs {
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            let entry: HistoryEntry = match serde_json::from_slice(&kv.value) {
                Ok(e) => e,
                Err(e) => {
                    w(out, format!("(unreadable history entry {key}: {e})"));
                    continue;
                }
            };
            if json {
                w(
                    out,
                    serde_json::to_string(&entry)
                        .unwrap_or_else(|e| format!("(history entry {key}: {e})")),
                );
            } else {
                w(
                    out,
                    format!(
                        "{:<24}  {:>4}  {:<24}  {}",
                        entry.time,
                        entry.state.generation,
                        entry.writer,
                        summarize(prev.as_ref(), &entry.state, &entry.reason)
                    ),
                );
                if verbose {
                    w(
                        out,
                        format!("    {}", String::from_utf8_lossy(&entry.state.to_json())),
                    );
                }
            }
            prev = Some(entry.state);
        }
        Ok(0)
    }

    async fn freeze(&self, reason: String, out: &mut dyn Write) -> Result<u8, Error> {
        if reason.trim().is_empty() {
            return Err(Error::Refused(
                "a reason is required: freeze -r REASON".into(),
            ));
        }
        let (mut z, rev) = self.valid_state().await?;
        if let Some(f) = &z.freeze {
            return Err(Error::Refused(format!(
                "the cluster is already frozen (since {}: {}); nothing was changed",
                f.date.as_deref().unwrap_or("?"),
                f.reason.as_deref().unwrap_or("no reason")
            )));
        }
        z.freeze = Some(Freeze {
            date: Some(triton_common::time::now_rfc3339()),
            reason: Some(reason.clone()),
        });
        self.write_and_say(rev, &z, &format!("frozen: {reason}"), out, "Frozen.")
            .await?;
        Ok(0)
    }

    async fn unfreeze(&self, out: &mut dyn Write) -> Result<u8, Error> {
        let (mut z, rev) = self.valid_state().await?;
        if z.freeze.is_none() {
            return Err(Error::Refused(
                "the cluster is not frozen; nothing was changed".into(),
            ));
        }
        z.freeze = None;
        self.write_and_say(rev, &z, "unfrozen", out, "Unfrozen.")
            .await?;
        Ok(0)
    }

    /// Finds the peer a [`Target`] names among `candidates`.
    fn find_target<'a>(
        &self,
        t: &Target,
        candidates: impl Iterator<Item = &'a Peer>,
    ) -> Result<Option<Peer>, Error> {
        let id = match &t.config {
            Some(path) => {
                let cfg: crate::SitterConfig =
                    triton_common::config::load("manatee-sitter", Some(path))?;
                Some(cfg.peer().id)
            }
            None => t.id.clone(),
        };
        if id.is_none() && t.ip.is_none() && t.name.is_none() {
            return Err(Error::Refused(
                "name the peer: -c SITTER_CONFIG, --id ID, -i IP or -n ZONENAME".into(),
            ));
        }
        let mut matches: Vec<&Peer> = candidates
            .filter(|p| {
                id.as_ref().is_none_or(|i| &p.id == i)
                    && t.ip.as_ref().is_none_or(|i| &p.ip == i)
                    && t.name.as_ref().is_none_or(|n| &p.zone_id == n)
            })
            .collect();
        matches.sort_by(|a, b| a.id.cmp(&b.id));
        matches.dedup_by(|a, b| a.id == b.id);
        match matches.len() {
            0 => Ok(None),
            1 => Ok(Some(matches[0].clone())),
            _ => Err(Error::Refused(format!(
                "{} peers match; name one with --id ({})",
                matches.len(),
                matches
                    .iter()
                    .map(|p| p.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The deposed peer `t` names, or a refusal saying what it is instead.
    async fn deposed_target(
        &self,
        t: &Target,
        what: &str,
    ) -> Result<(ClusterState, i64, Peer), Error> {
        let (z, rev) = self.valid_state().await?;
        let snap = snapshot(&self.etcd, &self.keys).await?;
        let everyone: Vec<Peer> = z
            .all_peers()
            .cloned()
            .chain(snap.active.iter().cloned())
            .collect();
        let Some(peer) = self.find_target(t, everyone.iter())? else {
            return Err(Error::Refused(format!(
                "no such peer in shard {:?} (neither in the cluster state nor registered); nothing to {what}",
                self.shard
            )));
        };
        match z.role_of(&peer.id) {
            Some(StateRole::Deposed) => Ok((z, rev, peer)),
            Some(role) => Err(Error::Refused(format!(
                "peer {} ({}) is the {role}, not deposed: nothing to {what}. A healthy peer is never rebuilt; \
                 a peer that lost its data rebuilds by itself when its sitter restarts",
                peer.name(),
                peer.id
            ))),
            None => Err(Error::Refused(format!(
                "peer {} ({}) is not in the cluster state (unassigned): nothing to {what}; \
                 the primary adds it as an async by itself",
                peer.name(),
                peer.id
            ))),
        }
    }

    async fn rebuild(
        &self,
        t: Target,
        yes: bool,
        wait: u64,
        out: &mut dyn Write,
    ) -> Result<u8, Error> {
        let (z, _, peer) = self.deposed_target(&t, "rebuild").await?;
        if z.primary.id == peer.id {
            return Err(Error::Refused(
                "this peer is the primary; it cannot be rebuilt".into(),
            ));
        }
        let snap = snapshot(&self.etcd, &self.keys).await?;
        let registered = snap.active.iter().find(|p| p.id == peer.id).cloned();
        if let Some(reg) = &registered {
            // Its sitter runs: it must have stopped PostgreSQL as a deposed peer, or it
            // could still be serving as a primary that has not noticed.
            match peer_status(reg).await {
                Ok(s) if s.role == "deposed" && !s.pg_online => {}
                Ok(s) => {
                    return Err(Error::Refused(format!(
                        "peer {} has not yet stopped as a deposed peer (its sitter says role {}, PostgreSQL {}); \
                         wait a few seconds and try again; nothing was changed",
                        peer.id, s.role, s.pg_state
                    )));
                }
                Err(e) => {
                    return Err(Error::Refused(format!(
                        "peer {} is registered but its sitter does not answer ({e}); stop its sitter or retry; nothing was changed",
                        peer.id
                    )));
                }
            }
        }
        if !yes
            && !confirm(&format!(
                "Rebuild peer {} ({})? Its data is replaced by a copy from its upstream. [y/N] ",
                peer.name(),
                peer.id
            ))
        {
            return Err(Error::Refused(
                "not confirmed (use -y); nothing was changed".into(),
            ));
        }
        let (mut z, rev) = self.valid_state().await?;
        if !z.deposed.iter().any(|p| p.id == peer.id) {
            return Err(Error::Refused(
                "the peer left the deposed list meanwhile; nothing was changed".into(),
            ));
        }
        z.deposed.retain(|p| p.id != peer.id);
        let said = format!(
            "Peer {} removed from the deposed list; it rebuilds from its upstream and rejoins as an async.",
            peer.id
        );
        self.write_and_say(rev, &z, &format!("rebuild of {}", peer.id), out, &said)
            .await?;
        if registered.is_none() {
            w(
                out,
                "Its sitter is not running: the rebuild starts when it does.",
            );
            return Ok(0);
        }
        if wait == 0 {
            return Ok(0);
        }
        let deadline = Instant::now() + Duration::from_secs(wait);
        let mut last = String::new();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let reg = snapshot(&self.etcd, &self.keys)
                .await?
                .active
                .into_iter()
                .find(|p| p.id == peer.id);
            if let Some(reg) = reg
                && let Ok(s) = peer_status(&reg).await
            {
                let now = if !s.rebuild.is_empty() {
                    format!("rebuilding: {}", s.rebuild)
                } else {
                    format!(
                        "role {}, PostgreSQL {}, receiver {}",
                        s.role,
                        s.pg_state,
                        or_dash(&s.wal_receiver_status)
                    )
                };
                if now != last {
                    w(out, format!("  {now}"));
                    let _ = out.flush();
                    last = now;
                }
                if (s.role == "async" || s.role == "sync") && s.wal_receiver_status == "streaming" {
                    w(out, format!("Peer {} is streaming as {}.", peer.id, s.role));
                    return Ok(0);
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Refused(format!(
                    "peer {} did not come back within {wait} s (last: {last}); see its sitter's log",
                    peer.id
                )));
            }
        }
    }

    async fn reap(&self, t: Target, out: &mut dyn Write) -> Result<u8, Error> {
        let (mut z, rev, peer) = self.deposed_target(&t, "reap").await?;
        z.deposed.retain(|p| p.id != peer.id);
        let said = format!("Peer {} removed from the deposed list.", peer.id);
        self.write_and_say(rev, &z, &format!("reaped {}", peer.id), out, &said)
            .await?;
        Ok(0)
    }

    async fn set_onwm(&self, _yes: bool, out: &mut dyn Write) -> Result<u8, Error> {
        let (kv, _) = self.etcd.get(&self.keys.state()).await?;
        match Observed::from_kv(kv.as_ref()) {
            Observed::State { state, .. } if state.one_node_write_mode => {
                Err(Error::Refused("the shard is already in one-node-write mode; nothing was changed".into()))
            }
            Observed::State { .. } => Err(Error::Refused(
                "the shard runs with a sync; going back from HA to one-node-write mode is not supported; nothing was changed".into(),
            )),
            Observed::Corrupt { reason, .. } => Err(Error::Refused(format!(
                "the cluster state in etcd is not valid ({reason}); nothing was changed"
            ))),
            _ => {
                w(out, "The shard has no state yet: start its first sitter with one_node_write_mode = true; it sets the shard up in one-node-write mode.");
                Ok(0)
            }
        }
    }

    async fn unset_onwm(&self, yes: bool, out: &mut dyn Write) -> Result<u8, Error> {
        let (mut z, rev) = self.valid_state().await?;
        if !z.one_node_write_mode {
            return Err(Error::Refused(
                "the shard is not in one-node-write mode; nothing was changed".into(),
            ));
        }
        if !yes
            && !confirm(
                "Leave one-node-write mode? The primary's sitter must run with one_node_write_mode = false. [y/N] ",
            )
        {
            return Err(Error::Refused(
                "not confirmed (use -y); nothing was changed".into(),
            ));
        }
        if z.freeze.take().is_some() {
            self.write(rev, &z, "leaving one-node-write mode").await?;
        }
        w(
            out,
            "Unfrozen. Once the primary runs with one_node_write_mode = false and another peer is registered, it declares a new generation with that peer as its sync.",
        );
        Ok(0)
    }

    #[allow(clippy::too_many_arguments)]
    async fn promote(
        &self,
        name: Option<String>,
        id: Option<String>,
        role: String,
        async_index: Option<usize>,
        lag_to_ignore: f64,
        wait: u64,
        out: &mut dyn Write,
    ) -> Result<u8, Error> {
        let role = match role.as_str() {
            "sync" => PromoteRole::Sync,
            "async" => PromoteRole::Async,
            other => {
                return Err(Error::Refused(format!(
                    "-r must be sync or async (the peer's current role), not {other:?}"
                )));
            }
        };
        let (z, rev) = self.valid_state().await?;
        if z.freeze.is_some() {
            return Err(Error::Refused(
                "the cluster is frozen; unfreeze it first; nothing was changed".into(),
            ));
        }
        if z.one_node_write_mode {
            return Err(Error::Refused(
                "the shard is in one-node-write mode; there is nobody to promote".into(),
            ));
        }
        let t = Target {
            id,
            name,
            ..Default::default()
        };
        let Some(peer) = self.find_target(&t, z.chain())? else {
            return Err(Error::Refused(
                "no such peer in the chain; nothing was changed".into(),
            ));
        };
        let index = match (role, z.role_of(&peer.id)) {
            (PromoteRole::Sync, Some(StateRole::Sync)) => None,
            (PromoteRole::Async, Some(StateRole::Async(i))) => {
                if async_index.is_some_and(|a| a != i) {
                    return Err(Error::Refused(format!(
                        "peer {} is async {i}, not async {}",
                        peer.id,
                        async_index.unwrap_or(0)
                    )));
                }
                Some(i)
            }
            (_, actual) => {
                return Err(Error::Refused(format!(
                    "peer {} is {}, not {role:?}; nothing was changed",
                    peer.id,
                    actual
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| "unassigned".into())
                )));
            }
        };
        // The shard must be healthy, and the peer caught up.
        let snap = snapshot(&self.etcd, &self.keys).await?;
        let reports = self.reports(Some(&z), &snap.active).await;
        let problems = issues(&snap.state, &reports);
        if !problems.errors.is_empty() || !problems.warnings.is_empty() {
            let all: Vec<String> = problems
                .errors
                .iter()
                .chain(problems.warnings.iter())
                .cloned()
                .collect();
            return Err(Error::Refused(format!(
                "the shard is not healthy; nothing was changed:\n  {}",
                all.join("\n  ")
            )));
        }
        if let Some(r) = reports.iter().find(|r| r.peer.id == peer.id)
            && let Ok(s) = &r.status
            && let Some(lag) = s.replay_lag_seconds
            && lag > lag_to_ignore
            && s.wal_receive != s.wal_replay
        {
            return Err(Error::Refused(format!(
                "peer {} lags {lag:.1} s behind (more than --lagToIgnore {lag_to_ignore}); nothing was changed",
                peer.id
            )));
        }
        let mut next = z.clone();
        next.promote = Some(Promote {
            id: peer.id.clone(),
            role,
            async_index: index,
            generation: z.generation,
            expire_time: triton_common::time::rfc3339(SystemTime::now() + PROMOTE_EXPIRY),
        });
        let said = format!(
            "Promote request for {} written; waiting for it to be carried out.",
            peer.id
        );
        let reason = format!("promote request for {}", peer.id);
        self.write_and_say(rev, &next, &reason, out, &said).await?;
        let deadline = Instant::now() + Duration::from_secs(wait.max(1));
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (now, _) = self.valid_state().await?;
            let done = match role {
                PromoteRole::Sync => now.generation > z.generation && now.primary.id == peer.id,
                PromoteRole::Async => match index {
                    Some(0) => {
                        now.generation > z.generation
                            && now.sync.as_ref().is_some_and(|s| s.id == peer.id)
                    }
                    Some(i) => now.asyncs.get(i - 1).is_some_and(|a| a.id == peer.id),
                    None => false,
                },
            };
            if done {
                w(
                    out,
                    format!(
                        "Done: generation {}, primary {}, sync {}.",
                        now.generation,
                        now.primary.id,
                        now.sync.as_ref().map_or("-", |s| s.id.as_str())
                    ),
                );
                return Ok(0);
            }
            if now.promote.is_none() && now.generation == z.generation {
                return Err(Error::Refused("the promote request was removed without being carried out (it was found invalid); see the sitters' logs".into()));
            }
            if Instant::now() > deadline {
                return Err(Error::Refused(format!(
                    "the promotion was not carried out within {wait} s; clear it with `manatee-adm clear-promote` and see the sitters' status (`manatee-adm show -v`)"
                )));
            }
        }
    }

    async fn clear_promote(&self, out: &mut dyn Write) -> Result<u8, Error> {
        let (mut z, rev) = self.valid_state().await?;
        if z.promote.take().is_none() {
            return Err(Error::Refused(
                "there is no promote request; nothing was changed".into(),
            ));
        }
        self.write_and_say(
            rev,
            &z,
            "promote request cleared",
            out,
            "Promote request cleared.",
        )
        .await?;
        Ok(0)
    }

    async fn raw_state(&self, out: &mut dyn Write) -> Result<u8, Error> {
        let (kv, _) = self.etcd.get(&self.keys.state()).await?;
        let Some(kv) = kv else {
            return Err(Error::Refused(format!(
                "shard {:?} has no cluster state",
                self.shard
            )));
        };
        match serde_json::from_slice::<serde_json::Value>(&kv.value) {
            Ok(v) => w(
                out,
                serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string()),
            ),
            Err(_) => w(out, String::from_utf8_lossy(&kv.value)),
        }
        if let Err(reason) = ClusterState::parse(&kv.value) {
            eprintln!("manatee-adm: error: this cluster state is not valid: {reason}");
            return Ok(1);
        }
        Ok(0)
    }

    async fn raw_active(&self, out: &mut dyn Write) -> Result<u8, Error> {
        let (kvs, _) = self.etcd.get_prefix(&self.keys.election_prefix()).await?;
        let values: Vec<serde_json::Value> = kvs
            .iter()
            .map(|kv| {
                serde_json::from_slice(&kv.value).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&kv.value).into_owned())
                })
            })
            .collect();
        w(
            out,
            serde_json::to_string_pretty(&values).unwrap_or_else(|e| format!("{e}")),
        );
        Ok(0)
    }
}

const COLUMNS: &[&str] = &[
    "role",
    "peername",
    "peerabbr",
    "ip",
    "id",
    "pg-online",
    "pg-repl",
    "pg-sent",
    "pg-write",
    "pg-flush",
    "pg-replay",
    "pg-lag",
];

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// The row of `r`'s downstream in `r`'s pg_stat_replication.
fn downstream_row<'a>(r: &'a PeerReport, z: Option<&ClusterState>) -> Option<&'a pb::Replica> {
    let z = z?;
    let down = match z.role_of(&r.peer.id)? {
        StateRole::Primary => z.sync.as_ref()?,
        StateRole::Sync => z.asyncs.first()?,
        StateRole::Async(i) => z.asyncs.get(i + 1)?,
        StateRole::Deposed => return None,
    };
    let prefix = format!("{}/", down.id);
    r.status
        .as_ref()
        .ok()?
        .replicas
        .iter()
        .find(|x| x.application_name.starts_with(&prefix))
}

fn cell(col: &str, r: &PeerReport, z: Option<&ClusterState>) -> String {
    let s = r.status.as_ref().ok();
    let down = downstream_row(r, z);
    let dash = || "-".to_string();
    match col {
        "role" => r.role.clone(),
        "peername" => r.peer.name().to_string(),
        "peerabbr" => r.peer.abbr(),
        "ip" => r.peer.ip.clone(),
        "id" => r.peer.id.clone(),
        "pg-online" => match s {
            Some(s) if s.pg_online => "ok".into(),
            _ => "fail".into(),
        },
        "pg-repl" => down.map(|d| d.sync_state.clone()).unwrap_or_else(dash),
        "pg-sent" => down.map(|d| d.sent_lsn.clone()).unwrap_or_else(dash),
        "pg-write" => down.map(|d| d.write_lsn.clone()).unwrap_or_else(dash),
        "pg-flush" => down.map(|d| d.flush_lsn.clone()).unwrap_or_else(dash),
        "pg-replay" => down.map(|d| d.replay_lsn.clone()).unwrap_or_else(dash),
        "pg-lag" => match s.and_then(|s| s.replay_lag_seconds) {
            Some(l) => {
                let l = l.max(0.0) as u64;
                format!("{}m{:02}s", l / 60, l % 60)
            }
            None => dash(),
        },
        _ => dash(),
    }
}

/// The columns of the peers table `show` prints, and `pg-status` without `-c`.
fn peer_columns() -> Vec<String> {
    [
        "role",
        "peername",
        "pg-online",
        "pg-repl",
        "pg-sent",
        "pg-flush",
        "pg-replay",
        "pg-lag",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn print_table(
    cols: &[String],
    reports: &[PeerReport],
    z: Option<&ClusterState>,
    omit_header: bool,
    role: Option<&str>,
    out: &mut dyn Write,
) {
    let rows: Vec<Vec<String>> = reports
        .iter()
        .filter(|r| role.is_none_or(|x| r.role == x))
        .map(|r| cols.iter().map(|c| cell(c, r, z)).collect())
        .collect();
    let header: Vec<String> = cols
        .iter()
        .map(|c| match c.as_str() {
            "peername" => "PEER".to_string(),
            "pg-online" => "PG".to_string(),
            other => other.trim_start_matches("pg-").to_uppercase(),
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    if !omit_header {
        w(out, line(&header));
    }
    for row in &rows {
        w(out, line(row));
    }
}

/// The health criteria of Triton's `manatee-adm verify` (docs/trouble-shooting.md).
fn issues(state: &Observed, reports: &[PeerReport]) -> Issues {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let z = match state {
        Observed::State { state, .. } => state,
        Observed::Corrupt { reason, .. } => {
            errors.push(format!("the cluster state in etcd is not valid: {reason}"));
            return Issues { errors, warnings };
        }
        _ => {
            errors.push("the shard has no cluster state (not set up)".into());
            return Issues { errors, warnings };
        }
    };
    let mut found: Vec<(bool, String)> = Vec::new();
    for r in reports {
        let who = format!("{} {} ({})", r.role, r.peer.name(), r.peer.id);
        let critical = r.role == "primary" || r.role == "sync";
        if r.role == "deposed" {
            found.push((
                false,
                format!("{who}: rebuild it (manatee-adm rebuild) or reap it"),
            ));
            continue;
        }
        if r.role == "unassigned" {
            found.push((
                false,
                format!("{who} is registered but not in the cluster state"),
            ));
            continue;
        }
        if !r.active {
            found.push((
                critical,
                format!("{who}: its sitter is not registered in etcd (down?)"),
            ));
            continue;
        }
        let s = match &r.status {
            Ok(s) => s,
            Err(e) => {
                found.push((critical, format!("{who}: {e}")));
                continue;
            }
        };
        if !s.pg_online {
            found.push((
                critical,
                format!("{who}: PostgreSQL is not online ({})", s.pg_state),
            ));
            continue;
        }
        if s.generation != z.generation || s.role != r.role {
            found.push((
                critical,
                format!(
                    "{who}: its sitter is at generation {} as {} (the state says generation {})",
                    s.generation, s.role, z.generation
                ),
            ));
        }
        if r.role == "primary" && s.pg_read_only && !z.one_node_write_mode {
            found.push((
                true,
                format!("{who}: read-only, waiting for its sync to catch up"),
            ));
        }
        if r.role != "primary" && s.wal_receiver_status != "streaming" {
            found.push((
                critical,
                format!(
                    "{who}: not streaming from its upstream ({})",
                    or_dash(&s.wal_receiver_status)
                ),
            ));
        }
        if !s.last_error.is_empty() {
            found.push((false, format!("{who}: {}", s.last_error)));
        }
        match downstream_row(r, Some(z)) {
            Some(d) => {
                let want = if r.role == "primary" { "sync" } else { "async" };
                if d.sync_state != want {
                    found.push((
                        critical,
                        format!(
                            "{who}: its downstream replicates as {:?}, expected {want:?}",
                            d.sync_state
                        ),
                    ));
                }
            }
            None => {
                let has_down = match z.role_of(&r.peer.id) {
                    Some(StateRole::Primary) => z.sync.is_some(),
                    Some(StateRole::Sync) => !z.asyncs.is_empty(),
                    Some(StateRole::Async(i)) => z.asyncs.len() > i + 1,
                    _ => false,
                };
                if has_down {
                    found.push((
                        false,
                        format!("{who}: its downstream is not replicating from it"),
                    ));
                }
            }
        }
    }
    for (critical, msg) in found {
        if critical {
            errors.push(msg);
        } else {
            warnings.push(msg);
        }
    }
    if z.promote.is_some() {
        warnings.push("a promote request is pending (manatee-adm clear-promote removes it)".into());
    }
    Issues { errors, warnings }
}

/// One line saying what changed from `prev` to `next`.
fn summarize(prev: Option<&ClusterState>, next: &ClusterState, reason: &str) -> String {
    let ids = |v: &[Peer]| {
        v.iter()
            .map(|p| p.name().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sync = |z: &ClusterState| {
        z.sync
            .as_ref()
            .map_or("-".to_string(), |s| s.name().to_string())
    };
    let Some(prev) = prev else {
        return format!(
            "{reason}: primary {}, sync {}, asyncs [{}]",
            next.primary.name(),
            sync(next),
            ids(&next.asyncs)
        );
    };
    let mut parts = vec![reason.to_string()];
    if next.generation != prev.generation {
        parts.push(format!(
            "generation {} (initWal {}): primary {}{}, sync {}",
            next.generation,
            next.init_wal,
            next.primary.name(),
            if next.primary.id != prev.primary.id {
                format!(" (was {})", prev.primary.name())
            } else {
                String::new()
            },
            sync(next)
        ));
    }
    if ids(&next.asyncs) != ids(&prev.asyncs) {
        parts.push(format!("asyncs [{}]", ids(&next.asyncs)));
    }
    if ids(&next.deposed) != ids(&prev.deposed) {
        parts.push(format!("deposed [{}]", ids(&next.deposed)));
    }
    parts.join("; ")
}

fn confirm(question: &str) -> bool {
    eprint!("{question}");
    let mut line = String::new();
    matches!(std::io::stdin().lock().read_line(&mut line), Ok(n) if n > 0)
        && matches!(line.trim(), "y" | "Y" | "yes")
}

/// Runs futures concurrently, keeping their order (no extra crate for this).
async fn futures_join<F, T>(futs: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(v) => out.push(v),
            Err(e) => panic!("a status query panicked: {e}"),
        }
    }
    out
}
