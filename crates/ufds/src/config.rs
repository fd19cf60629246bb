//! UFDS's configuration: a TOML file, every key overridable by `UFDS_<KEY>`
//! (see [`triton_common::config`]).

pub use moray_client::service::DEFAULT_MORAY_CONNECT_SECS;
use moray_client::service::MorayService;
use serde::{Deserialize, Serialize};
pub use triton_common::service_config::DEFAULT_MORAY_URL;

/// Default gRPC listen address: LDAP's well-known port, 1389, is Triton's UFDS; we take
/// the one above so an LDAP server and this one can share a machine during migration.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1390";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `listen`, `[grpc]`, `moray_url` (where accounts and keys are kept) and
    /// `moray_connect_secs` (how long start-up keeps trying Moray): `UFDS_LISTEN`,
    /// `UFDS_GRPC__ALLOW_FROM`, `UFDS_MORAY_CONNECT_SECS`, ...
    #[serde(flatten)]
    pub service: MorayService,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: MorayService::new(DEFAULT_LISTEN),
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
        assert_eq!(c.service.moray.moray_connect_secs, 5);
        assert_eq!(
            Config::default().service.moray.moray_connect_secs,
            DEFAULT_MORAY_CONNECT_SECS
        );
    }
}
