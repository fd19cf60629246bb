//! The cluster state of a shard: one JSON document in etcd, in the format of Triton's
//! manatee-state-machine (`lib/schemas.js`), so tools that know Triton's `zk-state` read
//! it unchanged.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// One PostgreSQL peer. Only `id` decides identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    /// `ip:pgPort:statusPort`, stable across restarts of the sitter.
    pub id: String,
    /// The address it serves PostgreSQL on.
    pub ip: String,
    /// `postgresql://postgres@ip:port/postgres`.
    pub pg_url: String,
    /// The peer's name (Triton: the zone's uuid); may be empty.
    #[serde(default)]
    pub zone_id: String,
    /// The sitter's status endpoint, `http://ip:statusPort` (gRPC `triton.manatee.v1.Sitter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_url: Option<String>,
}

impl Peer {
    /// The sitter at `ip` serving PostgreSQL on `pg_port` and its status on
    /// `status_port`, named `zone_id`.
    pub fn new(ip: &str, pg_port: u16, status_port: u16, zone_id: &str) -> Peer {
        Peer {
            id: format!("{ip}:{pg_port}:{status_port}"),
            ip: ip.to_string(),
            pg_url: format!("postgresql://postgres@{ip}:{pg_port}/postgres"),
            zone_id: zone_id.to_string(),
            backup_url: Some(format!("http://{ip}:{status_port}")),
        }
    }
}

impl Peer {
    /// The first 8 characters of the zone id, or the id: Triton's "peer abbreviation".
    pub fn abbr(&self) -> String {
        let name = if self.zone_id.is_empty() {
            &self.id
        } else {
            &self.zone_id
        };
        name.chars().take(8).collect()
    }

    /// The zone id, or the id when there is none.
    pub fn name(&self) -> &str {
        if self.zone_id.is_empty() {
            &self.id
        } else {
            &self.zone_id
        }
    }
}

/// A WAL position (PostgreSQL `pg_lsn`), shown as PostgreSQL shows it: `16/B374D848`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Lsn, String> {
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| format!("WAL position {s:?} is not of the form X/Y"))?;
        let parse = |part: &str| {
            u32::from_str_radix(part, 16)
                .map_err(|_| format!("WAL position {s:?} is not of the form X/Y (hex)"))
        };
        Ok(Lsn(((parse(hi)? as u64) << 32) | parse(lo)? as u64))
    }
}

triton_common::serde_as_text!(Lsn);

/// Why and since when a shard is frozen (no new generation is declared while it is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Freeze {
    /// When it was frozen, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// The operator's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The role a planned promotion names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromoteRole {
    /// The sync becomes the primary.
    Sync,
    /// An async (`async_index`) swaps with the peer ahead of it.
    Async,
}

/// An operator's request for a planned promotion (`manatee-adm promote`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Promote {
    /// The peer to promote.
    pub id: String,
    /// Its role now.
    pub role: PromoteRole,
    /// Its place in the async chain, for an async.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_index: Option<usize>,
    /// The generation the request was made in; a request of another is ignored.
    pub generation: u64,
    /// RFC 3339 UTC; the request is ignored after this time.
    pub expire_time: String,
}

/// The cluster state of one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterState {
    /// Increases by one with every change of the primary or the sync.
    pub generation: u64,
    /// The peer that takes writes.
    pub primary: Peer,
    /// Absent only in one-node-write mode.
    #[serde(default)]
    pub sync: Option<Peer>,
    /// The async chain in replication order: async[0] replicates from the sync.
    #[serde(rename = "async")]
    pub asyncs: Vec<Peer>,
    /// Former primaries waiting for an operator's rebuild.
    pub deposed: Vec<Peer>,
    /// The primary's WAL position when this generation began.
    pub init_wal: Lsn,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "freeze_value"
    )]
    /// Set by an operator: no new generation is declared while it is.
    pub freeze: Option<Freeze>,
    /// The primary writes without a sync (a one-node shard).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub one_node_write_mode: bool,
    /// An operator's pending planned promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<Promote>,
}

/// `freeze` is `null`, a boolean or `{date, reason}` in Triton's schema.
fn freeze_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Freeze>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Flag(bool),
        Info(Freeze),
    }
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Flag(false)) => None,
        Some(Value::Flag(true)) => Some(Freeze::default()),
        Some(Value::Info(f)) => Some(f),
    })
}

/// What a peer's role is in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateRole {
    /// It takes writes.
    Primary,
    /// It replicates synchronously from the primary.
    Sync,
    /// Its place in the async chain.
    Async(usize),
    /// A former primary waiting for a rebuild.
    Deposed,
}

impl fmt::Display for StateRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateRole::Primary => f.write_str("primary"),
            StateRole::Sync => f.write_str("sync"),
            StateRole::Async(_) => f.write_str("async"),
            StateRole::Deposed => f.write_str("deposed"),
        }
    }
}

impl ClusterState {
    /// Generation `generation` with `primary`, `sync` and `asyncs`: nobody deposed, no
    /// WAL position recorded, not frozen, no promotion asked, not in one-node-write mode.
    pub fn new(generation: u64, primary: Peer, sync: Peer, asyncs: Vec<Peer>) -> ClusterState {
        ClusterState {
            generation,
            primary,
            sync: Some(sync),
            asyncs,
            deposed: Vec::new(),
            init_wal: Lsn(0),
            freeze: None,
            one_node_write_mode: false,
            promote: None,
        }
    }

    /// Parses and checks a stored state; the error says what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<ClusterState, String> {
        let state: ClusterState = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        state.validate()?;
        Ok(state)
    }

    /// The JSON document as stored.
    // Strings, numbers and lists of them, with string keys: it always serializes.
    #[allow(clippy::expect_used)]
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a cluster state always serializes")
    }

    /// Checks the rules every written state obeys.
    pub fn validate(&self) -> Result<(), String> {
        if self.generation == 0 {
            return Err("generation must be at least 1".into());
        }
        if self.sync.is_none() && !self.one_node_write_mode {
            return Err("sync is missing and oneNodeWriteMode is not set".into());
        }
        let mut seen = std::collections::HashSet::new();
        for p in self.chain().chain(self.deposed.iter()) {
            if p.id.is_empty() || p.ip.is_empty() || p.pg_url.is_empty() {
                return Err(format!("peer {:?} lacks one of id, ip, pgUrl", p.id));
            }
            if !seen.insert(p.id.as_str()) {
                return Err(format!("peer {} appears more than once", p.id));
            }
        }
        Ok(())
    }

    /// Primary, sync, then the asyncs in order.
    pub fn chain(&self) -> impl Iterator<Item = &Peer> {
        std::iter::once(&self.primary)
            .chain(self.sync.iter())
            .chain(self.asyncs.iter())
    }

    /// The role of peer `id` in this state, if it has one.
    pub fn role_of(&self, id: &str) -> Option<StateRole> {
        if self.primary.id == id {
            return Some(StateRole::Primary);
        }
        if self.sync.as_ref().is_some_and(|s| s.id == id) {
            return Some(StateRole::Sync);
        }
        if let Some(i) = self.asyncs.iter().position(|p| p.id == id) {
            return Some(StateRole::Async(i));
        }
        if self.deposed.iter().any(|p| p.id == id) {
            return Some(StateRole::Deposed);
        }
        None
    }

    /// Every peer the state names: the chain, then the deposed.
    pub fn all_peers(&self) -> impl Iterator<Item = &Peer> {
        self.chain().chain(self.deposed.iter())
    }

    /// The peer `id`'s upstream (whom it replicates from), if it is a standby.
    pub fn upstream_of(&self, id: &str) -> Option<&Peer> {
        match self.role_of(id)? {
            StateRole::Sync => Some(&self.primary),
            StateRole::Async(0) => self.sync.as_ref(),
            StateRole::Async(i) => self.asyncs.get(i - 1),
            _ => None,
        }
    }
}

/// Where a shard keeps its coordination keys in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardKeys {
    prefix: String,
}

impl ShardKeys {
    /// Keys under `/manatee/<shard>/`.
    pub fn new(shard: &str) -> ShardKeys {
        ShardKeys {
            prefix: format!("/manatee/{shard}/"),
        }
    }

    /// `/manatee/<shard>/`, the prefix every key of the shard starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The cluster state (Triton: `/manatee/<shard>/state`).
    pub fn state(&self) -> String {
        format!("{}state", self.prefix)
    }

    /// Prefix of the registration of every live sitter.
    pub fn election_prefix(&self) -> String {
        format!("{}election/", self.prefix)
    }

    /// A sitter's registration, attached to its lease.
    pub fn election(&self, id: &str) -> String {
        format!("{}{}", self.election_prefix(), id)
    }

    /// Prefix of the history of states.
    pub fn history_prefix(&self) -> String {
        format!("{}history/", self.prefix)
    }

    /// The history entry of the write of generation `generation` that replaced the state
    /// at modification revision `prev_revision` (0 for the first): unique, because a
    /// compare-and-swap on that revision succeeds once, and sorted in write order.
    pub fn history(&self, generation: u64, prev_revision: i64) -> String {
        format!(
            "{}{generation:010}-{prev_revision:020}",
            self.history_prefix()
        )
    }
}

/// One entry of the history: a state as written, who wrote it and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// RFC 3339 UTC time of the write.
    pub time: String,
    /// The peer id of the writing sitter, or `manatee-adm`.
    pub writer: String,
    /// Why it was written.
    pub reason: String,
    /// The state written.
    pub state: ClusterState,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> Peer {
        Peer::new(&format!("10.0.0.{n}"), 5432, 5433, &format!("zone-{n}"))
    }

    #[test]
    fn lsn_round_trips_in_postgres_notation() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.0, (0x16 << 32) | 0xB374D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!("0/00000000".parse::<Lsn>().unwrap(), Lsn(0));
        assert!("16B374D848".parse::<Lsn>().is_err());
        assert!("x/1".parse::<Lsn>().is_err());
    }

    #[test]
    fn triton_state_parses() {
        let json = r#"{"generation":3,
            "primary":{"id":"10.0.0.2:5432:12345","ip":"10.0.0.2","zoneId":"z2",
                       "pgUrl":"tcp://postgres@10.0.0.2:5432/postgres","backupUrl":"http://10.0.0.2:12345"},
            "sync":{"id":"10.0.0.3:5432:12345","ip":"10.0.0.3","zoneId":"z3","pgUrl":"tcp://postgres@10.0.0.3:5432/postgres"},
            "async":[],"deposed":[],"initWal":"0/4405D30",
            "freeze":{"date":"2015-03-18T18:40:11.095Z","reason":"CM-129"}}"#;
        let s = ClusterState::parse(json.as_bytes()).unwrap();
        assert_eq!(s.generation, 3);
        assert_eq!(s.init_wal.to_string(), "0/4405D30");
        assert_eq!(s.freeze.as_ref().unwrap().reason.as_deref(), Some("CM-129"));
        assert_eq!(s.role_of("10.0.0.3:5432:12345"), Some(StateRole::Sync));
        let again = ClusterState::parse(&s.to_json()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn freeze_may_be_a_boolean() {
        let mut s = ClusterState::new(1, peer(1), peer(2), vec![peer(3)]);
        let mut v: serde_json::Value = serde_json::from_slice(&s.to_json()).unwrap();
        v["freeze"] = serde_json::Value::Bool(true);
        let parsed = ClusterState::parse(v.to_string().as_bytes()).unwrap();
        assert!(parsed.freeze.is_some());
        v["freeze"] = serde_json::Value::Bool(false);
        let parsed = ClusterState::parse(v.to_string().as_bytes()).unwrap();
        assert!(parsed.freeze.is_none());
        s.freeze = None;
        assert_eq!(s.upstream_of(&peer(3).id), Some(&peer(2)));
    }

    #[test]
    fn corrupt_states_are_refused_with_a_reason() {
        assert!(ClusterState::parse(b"{not json").is_err());
        let err = ClusterState::parse(br#"{"generation":1}"#).unwrap_err();
        assert!(err.contains("primary"), "{err}");
        let dup = ClusterState::new(2, peer(1), peer(1), vec![]);
        let err = ClusterState::parse(&dup.to_json()).unwrap_err();
        assert!(err.contains("more than once"), "{err}");
        let mut no_sync = dup.clone();
        no_sync.sync = None;
        assert!(
            ClusterState::parse(&no_sync.to_json())
                .unwrap_err()
                .contains("sync")
        );
    }

    #[test]
    fn history_keys_sort_in_write_order() {
        let k = ShardKeys::new("1");
        assert_eq!(k.state(), "/manatee/1/state");
        assert!(k.history(2, 17) < k.history(2, 120));
        assert!(k.history(2, 900) < k.history(10, 901));
    }
}
