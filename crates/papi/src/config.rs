//! PAPI's configuration: a TOML file, every key overridable by `PAPI_<KEY>`
//! (see [`triton_common::config`]).

use serde::{Deserialize, Serialize};

/// Default gRPC listen address (Triton's PAPI listens on HTTP 80 in its own zone; on a
/// shared host we take 2022, beside Moray's 2020).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2022";
/// Default Moray, as Triton's `MORAY_URL`.
pub const DEFAULT_MORAY_URL: &str = "tcp://127.0.0.1:2020";
/// How long start-up waits for Moray before giving up (seconds).
pub const DEFAULT_MORAY_CONNECT_SECS: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address, host:port (`PAPI_LISTEN`); port 0 picks a free one.
    pub listen: String,
    /// Who may connect and whether reflection is served (`[grpc]`; `PAPI_GRPC__ALLOW_FROM`
    /// takes comma-separated CIDRs).
    pub grpc: triton_common::grpc::ServerConfig,
    /// Moray to keep packages in (`PAPI_MORAY_URL`).
    pub moray_url: String,
    /// Seconds to keep trying Moray at start-up (`PAPI_MORAY_CONNECT_SECS`).
    pub moray_connect_secs: u64,
    /// Triton's `IGNORE_CPU_CAP` (`PAPI_IGNORE_CPU_CAP`): packages may lack `cpu_cap`.
    /// Only for fresh installs: capped and uncapped instances on one server confuse the
    /// allocator.
    pub ignore_cpu_cap: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.to_string(),
            grpc: triton_common::grpc::ServerConfig::default(),
            moray_url: DEFAULT_MORAY_URL.to_string(),
            moray_connect_secs: DEFAULT_MORAY_CONNECT_SECS,
            ignore_cpu_cap: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_defaults() {
        let env = vec![
            ("PAPI_IGNORE_CPU_CAP".to_string(), "true".to_string()),
            (
                "PAPI_MORAY_URL".to_string(),
                "tcp://10.0.0.5:2020".to_string(),
            ),
        ];
        let c: Config = triton_common::config::load_from("papi", None, &env).unwrap();
        assert!(c.ignore_cpu_cap);
        assert_eq!(c.moray_url, "tcp://10.0.0.5:2020");
        assert_eq!(c.listen, DEFAULT_LISTEN);
    }
}
