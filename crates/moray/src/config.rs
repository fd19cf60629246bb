//! Moray's configuration: a TOML file, every key overridable by `MORAY_<KEY>`
//! (see [`triton_common::config`]).

use serde::{Deserialize, Serialize};

/// Default listen address (Triton's Moray port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2020";
/// PostgreSQL connections per Moray process. Triton defaults to 5; more lets one process
/// keep a 16-way PostgreSQL busy, which is what a 64-client benchmark needs.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;
/// Requests waiting for a connection beyond this are refused at once (Triton's
/// `maxQueueLength`), so an overload shows as errors rather than unbounded memory.
pub const DEFAULT_MAX_QUEUE: usize = 2000;
/// Largest serialized object value accepted. PostgreSQL takes up to 1 GB per text field, but
/// objects are read whole into memory on every get and find, and Triton's consumers keep
/// them small; 1 MiB fits every Triton object with room to spare.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Largest gRPC request accepted (a Batch carries many values).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;
/// Per-request timeout when the request gives none (Triton's documented default).
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Time allowed to open one PostgreSQL connection (Triton's template: 4000 ms).
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 4_000;
/// How long changes stay in the change feed. Consumers that fall further behind must resync.
pub const DEFAULT_CHANGE_RETENTION_SECS: u64 = 24 * 3600;
/// How often each Moray numbers and trims the change log even without watchers.
pub const DEFAULT_CHANGE_TRIM_INTERVAL_SECS: u64 = 60;
/// How long a bucket's config is trusted without re-reading it. Writes never depend on it
/// (each put checks the config's mtime in the same statement); a find may use an index
/// another Moray added a little later than it could.
pub const DEFAULT_BUCKET_CACHE_TTL_MS: u64 = 60_000;
/// The Manatee shard Moray follows when `manatee_etcd` is set (manatee-sitter's default).
pub const DEFAULT_MANATEE_SHARD: &str = "1";
/// The role Moray connects to the shard's primary as (Triton's: `moray`).
pub const DEFAULT_MANATEE_USER: &str = "moray";
/// The database Moray uses on the shard's primary (Triton's: `moray`).
pub const DEFAULT_MANATEE_DATABASE: &str = "moray";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address, host:port (`MORAY_LISTEN`); port 0 picks a free one.
    pub listen: String,
    /// Who may connect and whether reflection is served (`[grpc]`; `MORAY_GRPC__ALLOW_FROM`
    /// takes comma-separated CIDRs).
    pub grpc: triton_common::grpc::ServerConfig,
    /// PostgreSQL URL in standalone mode (`MORAY_POSTGRES_URL`), e.g.
    /// `postgres://moray@127.0.0.1:5432/moray`; its user is the role Moray connects as.
    /// Keep the password out of it: use `postgres_password_file`.
    pub postgres_url: String,
    /// A file holding the password of Moray's PostgreSQL role (`MORAY_POSTGRES_PASSWORD_FILE`),
    /// one line, mode 0600 (no access for group or others). Empty: no password is sent.
    pub postgres_password_file: String,
    /// The role Moray connects to the Manatee shard's primary as (`MORAY_MANATEE_USER`):
    /// not a superuser; the owner of Moray's database (manatee-sitter makes it).
    pub manatee_user: String,
    /// Serve the `Sql` RPC (`MORAY_SQL_ENABLED`); off, it fails with InvocationError.
    pub sql_enabled: bool,
    /// Let `Sql` write (`MORAY_SQL_ALLOW_WRITES`); off, each statement runs in a
    /// `READ ONLY` transaction.
    pub sql_allow_writes: bool,
    /// etcd endpoints of the Manatee shard to follow, comma-separated
    /// (`MORAY_MANATEE_ETCD`), e.g. `http://10.0.0.5:2379,http://10.0.0.6:2379`. Empty:
    /// standalone mode on `postgres_url`.
    pub manatee_etcd: String,
    /// The Manatee shard's name (`MORAY_MANATEE_SHARD`): its state is
    /// `/manatee/<shard>/state` in etcd. A number is taken as its text
    /// (`MORAY_MANATEE_SHARD=1`).
    #[serde(deserialize_with = "string_or_integer")]
    pub manatee_shard: String,
    /// The database on the shard's primary (`MORAY_MANATEE_DATABASE`); created when
    /// missing.
    pub manatee_database: String,
    /// Pool size (`MORAY_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Requests allowed to wait for a connection (`MORAY_MAX_QUEUE`).
    pub max_queue: usize,
    /// Largest serialized object value in bytes (`MORAY_MAX_VALUE_BYTES`).
    pub max_value_bytes: usize,
    /// Largest gRPC request in bytes (`MORAY_MAX_MESSAGE_BYTES`).
    pub max_message_bytes: usize,
    /// Per-request timeout when a request gives none (`MORAY_DEFAULT_TIMEOUT_MS`).
    pub default_timeout_ms: u64,
    /// Timeout to open a PostgreSQL connection (`MORAY_CONNECT_TIMEOUT_MS`).
    pub connect_timeout_ms: u64,
    /// How long the change feed keeps changes (`MORAY_CHANGE_RETENTION_SECS`).
    pub change_retention_secs: u64,
    /// How often the change log is trimmed (`MORAY_CHANGE_TRIM_INTERVAL_SECS`).
    pub change_trim_interval_secs: u64,
    /// How long a cached bucket config is used for finds (`MORAY_BUCKET_CACHE_TTL_MS`).
    pub bucket_cache_ttl_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.to_string(),
            grpc: triton_common::grpc::ServerConfig::default(),
            postgres_url: String::new(),
            postgres_password_file: String::new(),
            manatee_user: DEFAULT_MANATEE_USER.to_string(),
            sql_enabled: true,
            sql_allow_writes: false,
            manatee_etcd: String::new(),
            manatee_shard: DEFAULT_MANATEE_SHARD.to_string(),
            manatee_database: DEFAULT_MANATEE_DATABASE.to_string(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_queue: DEFAULT_MAX_QUEUE,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            default_timeout_ms: DEFAULT_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            change_retention_secs: DEFAULT_CHANGE_RETENTION_SECS,
            change_trim_interval_secs: DEFAULT_CHANGE_TRIM_INTERVAL_SECS,
            bucket_cache_ttl_ms: DEFAULT_BUCKET_CACHE_TTL_MS,
        }
    }
}

/// Environment values are read as TOML values, so `1` arrives as an integer; a shard name
/// is text either way.
fn string_or_integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        S(String),
        I(i64),
    }
    Ok(match Text::deserialize(d)? {
        Text::S(s) => s,
        Text::I(i) => i.to_string(),
    })
}

impl Config {
    /// Reads `postgres_password_file` (None when unset). The file must not be readable by
    /// group or others; the error names the key and the rule, never the content.
    pub fn postgres_password(&self) -> Result<Option<String>, String> {
        if self.postgres_password_file.is_empty() {
            return Ok(None);
        }
        let path = std::path::Path::new(&self.postgres_password_file);
        let bad = |why: String| format!("postgres_password_file: {}: {why}", path.display());
        let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(bad(format!(
                    "has mode {mode:04o}; it must not be readable by group or others (chmod 600)"
                )));
            }
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let password = text.lines().next().unwrap_or("").to_string();
        if password.is_empty() {
            return Err(bad("is empty; its first line is the password".to_string()));
        }
        Ok(Some(password))
    }

    /// The etcd endpoints of `manatee_etcd` (empty: standalone mode).
    pub fn manatee_endpoints(&self) -> Vec<String> {
        self.manatee_etcd
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config the environment `vars` (and nothing else) gives.
    fn from_env(vars: &[(&str, &str)]) -> Config {
        let env: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        triton_common::config::load_from("moray", None, &env).unwrap()
    }

    #[test]
    fn environment_overrides_defaults() {
        let c = from_env(&[
            ("MORAY_POSTGRES_URL", "postgres://x/y"),
            ("MORAY_MAX_CONNECTIONS", "4"),
        ]);
        assert_eq!(c.postgres_url, "postgres://x/y");
        assert_eq!(c.max_connections, 4);
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert!(c.manatee_endpoints().is_empty());
    }

    #[test]
    fn manatee_keys() {
        let c = from_env(&[
            (
                "MORAY_MANATEE_ETCD",
                " http://10.0.0.5:2379, ,10.0.0.6:2379 ",
            ),
            ("MORAY_MANATEE_SHARD", "2"),
        ]);
        assert_eq!(
            c.manatee_endpoints(),
            vec!["http://10.0.0.5:2379", "10.0.0.6:2379"]
        );
        assert_eq!(c.manatee_shard, "2");
        assert_eq!(c.manatee_database, DEFAULT_MANATEE_DATABASE);
    }
}
