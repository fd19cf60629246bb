//! UFDS's configuration: a TOML file, every key overridable by `UFDS_<KEY>`
//! (see [`triton_common::config`]).

use serde::{Deserialize, Serialize};

/// Default gRPC listen address: LDAP's well-known port, 1389, is Triton's UFDS; we take
/// the one above so an LDAP server and this one can share a machine during migration.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1390";
/// Default Moray, as Triton's `MORAY_URL`.
pub const DEFAULT_MORAY_URL: &str = "tcp://127.0.0.1:2020";
/// How long start-up waits for Moray before giving up (seconds).
pub const DEFAULT_MORAY_CONNECT_SECS: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address, host:port (`UFDS_LISTEN`); port 0 picks a free one.
    pub listen: String,
    /// Who may connect and whether reflection is served (`[grpc]`; `UFDS_GRPC__ALLOW_FROM`
    /// takes comma-separated CIDRs).
    pub grpc: triton_common::grpc::ServerConfig,
    /// Moray to keep accounts and keys in (`UFDS_MORAY_URL`).
    pub moray_url: String,
    /// Seconds to keep trying Moray at start-up (`UFDS_MORAY_CONNECT_SECS`).
    pub moray_connect_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.to_string(),
            grpc: triton_common::grpc::ServerConfig::default(),
            moray_url: DEFAULT_MORAY_URL.to_string(),
            moray_connect_secs: DEFAULT_MORAY_CONNECT_SECS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_defaults() {
        let env = vec![
            ("UFDS_LISTEN".to_string(), "0.0.0.0:1390".to_string()),
            (
                "UFDS_MORAY_URL".to_string(),
                "tcp://10.0.0.5:2020".to_string(),
            ),
        ];
        let c: Config = triton_common::config::load_from("ufds", None, &env).unwrap();
        assert_eq!(c.listen, "0.0.0.0:1390");
        assert_eq!(c.moray_url, "tcp://10.0.0.5:2020");
        assert_eq!(c.moray_connect_secs, DEFAULT_MORAY_CONNECT_SECS);
    }
}
