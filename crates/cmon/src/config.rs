//! CMon's configuration: a TOML file, every key overridable by `CMON_<KEY>` (see
//! [`triton_common::config`]).

use serde::{Deserialize, Serialize};
use triton_common::problems::Problems;

/// Triton's CMon port, on every address of its zone.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9163";
/// How long an authenticated certificate is trusted before UFDS is asked again: a key
/// deleted from the account stops working within this.
pub const DEFAULT_AUTH_CACHE_SECS: u64 = 10;
/// How long an instance's usage, read from its compute node, is served again.
pub const DEFAULT_USAGE_CACHE_MS: u64 = 1000;
/// How long a compute node's agent has to answer a usage call.
pub const DEFAULT_AGENT_TIMEOUT_MS: u64 = 5000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTPS listen address (`CMON_LISTEN`); port 0 picks a free one.
    pub listen: String,
    /// PEM certificate chain file for HTTPS (`CMON_TLS_CERT`); with `tls_key`.
    pub tls_cert: String,
    /// PEM private key file for HTTPS (`CMON_TLS_KEY`).
    pub tls_key: String,
    /// CMon's own state (`CMON_DATA_DIR`): with no `tls_cert`, its self-signed
    /// certificate (P-256, for `dns_suffix` and `*.dns_suffix`), `tls/cert.pem` and
    /// `tls/key.pem`, made at the first start and kept.
    pub data_dir: String,
    /// The DNS suffix instances are reached under (`<vm uuid>.<dns_suffix>`, served by
    /// CNS): the names of the self-signed certificate. Routing looks only at the first
    /// label of `Host`.
    pub dns_suffix: String,
    /// gRPC addresses of UFDS (accounts and keys), VMAPI (`WatchVms`) and CNAPI
    /// (`WatchServers`).
    pub ufds_url: String,
    pub vmapi_url: String,
    pub cnapi_url: String,
    /// Obsolete, empty by default; a list is ignored with a warning at start-up (so a
    /// config from before still loads): operators are the members of UFDS's
    /// `operators` group.
    pub operators: Vec<String>,
    /// Seconds an authenticated certificate is trusted without asking UFDS again.
    pub auth_cache_secs: u64,
    /// Milliseconds an instance's usage is served from cache.
    pub usage_cache_ms: u64,
    /// Milliseconds a compute node's agent has to answer.
    pub agent_timeout_ms: u64,
    /// Open HTTPS connections at once; past it new clients wait.
    pub max_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.to_string(),
            tls_cert: String::new(),
            tls_key: String::new(),
            data_dir: String::new(),
            dns_suffix: "cmon.coal.triton.zone".to_string(),
            ufds_url: "http://127.0.0.1:1390".to_string(),
            vmapi_url: "http://127.0.0.1:2025".to_string(),
            cnapi_url: "http://127.0.0.1:2030".to_string(),
            operators: Vec::new(),
            auth_cache_secs: DEFAULT_AUTH_CACHE_SECS,
            usage_cache_ms: DEFAULT_USAGE_CACHE_MS,
            agent_timeout_ms: DEFAULT_AGENT_TIMEOUT_MS,
            max_connections: triton_common::tls::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl Config {
    /// Every problem at once, each naming its key and rule.
    pub fn check(&self) -> Result<(), String> {
        let mut problems = Problems::new();
        problems.when(
            self.listen.parse::<std::net::SocketAddr>().is_err(),
            format_args!("listen: {:?} is not an address host:port", self.listen),
        );
        problems.when(
            self.tls_cert.is_empty() != self.tls_key.is_empty(),
            "tls_cert and tls_key: set both or neither",
        );
        problems.when(
            self.tls_cert.is_empty() && self.data_dir.is_empty(),
            "data_dir: needed for the self-signed certificate when tls_cert is not set",
        );
        for (key, url) in [
            ("ufds_url", &self.ufds_url),
            ("vmapi_url", &self.vmapi_url),
            ("cnapi_url", &self.cnapi_url),
        ] {
            problems.when(url.is_empty(), format_args!("{key}: must be set"));
        }
        problems.when(
            self.agent_timeout_ms == 0,
            "agent_timeout_ms: must be more than 0",
        );
        problems.when(
            self.max_connections == 0,
            "max_connections: must be more than 0",
        );
        problems.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_defaults() {
        let env = [
            ("CMON_LISTEN", "127.0.0.1:0"),
            ("CMON_AUTH_CACHE_SECS", "2"),
            ("CMON_DATA_DIR", "/var/tmp/cmon"),
        ];
        let c: Config = triton_common::config::load_env("cmon", &env).unwrap();
        assert_eq!(c.auth_cache_secs, 2);
        assert_eq!(c.listen, "127.0.0.1:0");
        assert!(c.operators.is_empty());
        c.check().unwrap();
    }

    #[test]
    fn an_old_operators_list_still_loads() {
        let c: Config = triton_common::config_text::load_text(
            "cmon",
            "data_dir = \"/var/tmp/cmon\"\noperators = [\"admin\"]\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.operators, vec!["admin".to_string()]);
        c.check().unwrap();
    }

    #[test]
    fn every_problem_is_named() {
        let c = Config {
            listen: "nowhere".into(),
            tls_cert: "/x.pem".into(),
            vmapi_url: String::new(),
            ..Config::default()
        };
        let e = c.check().unwrap_err();
        assert!(e.contains("listen:"), "{e}");
        assert!(e.contains("tls_cert and tls_key"), "{e}");
        assert!(e.contains("vmapi_url: must be set"), "{e}");
    }
}
