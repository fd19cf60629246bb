//! UFDS's configuration: a TOML file, every key overridable by `UFDS_<KEY>`
//! (see [`triton_common::config`]).

pub use moray_client::service::DEFAULT_MORAY_CONNECT_SECS;
use moray_client::service::MorayStartup;
use serde::{Deserialize, Serialize};
pub use triton_common::service_config::DEFAULT_MORAY_URL;
use triton_common::service_config::ServiceConfig;

/// Default gRPC listen address: LDAP's well-known port, 1389, is Triton's UFDS; we take
/// the one above so an LDAP server and this one can share a machine during migration.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1390";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `listen`, `[grpc]` and `moray_url` (where accounts and keys are kept): `UFDS_LISTEN`,
    /// `UFDS_GRPC__ALLOW_FROM`, ...
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// `moray_connect_secs`: how long start-up keeps trying Moray
    /// (`UFDS_MORAY_CONNECT_SECS`).
    #[serde(flatten)]
    pub moray: MorayStartup,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: ServiceConfig::new(DEFAULT_LISTEN),
            moray: MorayStartup::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_defaults() {
        let env = [
            ("UFDS_LISTEN", "0.0.0.0:1390"),
            ("UFDS_MORAY_CONNECT_SECS", "5"),
        ];
        let c: Config = triton_common::config::load_env("ufds", &env).unwrap();
        assert_eq!(c.service.listen, "0.0.0.0:1390");
        assert_eq!(c.service.moray_url, DEFAULT_MORAY_URL);
        assert_eq!(c.moray.moray_connect_secs, 5);
        assert_eq!(
            Config::default().moray.moray_connect_secs,
            DEFAULT_MORAY_CONNECT_SECS
        );
    }
}
