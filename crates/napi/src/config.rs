//! NAPI's configuration: a TOML file, every key overridable by `NAPI_<KEY>` (nested keys
//! with `__`, e.g. `NAPI_SEED__ENABLED=true`); see [`triton_common::config`].

use serde::{Deserialize, Serialize};
pub use triton_common::service_config::DEFAULT_MORAY_URL;
use triton_common::service_config::ServiceConfig;

/// Default gRPC listen address. Triton's NAPI listens on HTTP 80 in its own zone; here
/// every service shares one host in CoaL, so each gets its own port next to Moray's 2020.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2023";
/// Triton NAPI's default MAC OUI (`macOUI` in its config): Joyent's 90:b8:d0.
pub const DEFAULT_MAC_OUI: &str = "90b8d0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `listen`, `[grpc]`, `moray_url` (where every record is kept):
    /// `NAPI_LISTEN`, `NAPI_GRPC__ALLOW_FROM`, ...
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// First three bytes of generated MAC addresses, 6 hex digits (`NAPI_MAC_OUI`).
    pub mac_oui: String,
    /// The operator account (`NAPI_ADMIN_UUID`): may provision on any network, and owns
    /// the seeded `admin` network. Empty: none.
    pub admin_uuid: String,
    /// Networks created at start-up when missing (CoaL).
    pub seed: SeedConfig,
    /// Every account's default fabric (`NAPI_FABRICS__ENABLED`, ...).
    pub fabrics: FabricsConfig,
}

/// With `enabled`, NAPI follows UFDS's accounts and gives each account without a
/// `default_network` Triton's default fabric (`My-Fabric-VLAN`, VLAN 2, and
/// `My-Fabric-Network` on it), then makes that network the account's `default_network`
/// (docs/napi.md, "Default fabrics").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FabricsConfig {
    /// `NAPI_FABRICS__ENABLED`
    pub enabled: bool,
    /// UFDS's gRPC address (`NAPI_FABRICS__UFDS_URL`); required when enabled.
    pub ufds_url: String,
    /// The resolvers of each default fabric network (Triton: the datacenter's
    /// `dns_resolvers`).
    pub resolvers: Vec<String>,
    /// Milliseconds between passes over UFDS's feed: each pass resumes where the last
    /// one stopped and ends once the feed has been quiet for a second.
    pub follow_interval_ms: u64,
}

impl Default for FabricsConfig {
    fn default() -> Self {
        FabricsConfig {
            enabled: false,
            ufds_url: String::new(),
            resolvers: vec!["8.8.8.8".into(), "8.8.4.4".into()],
            follow_interval_ms: 1000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: ServiceConfig::new(DEFAULT_LISTEN),
            mac_oui: DEFAULT_MAC_OUI.to_string(),
            admin_uuid: String::new(),
            seed: SeedConfig::default(),
            fabrics: FabricsConfig::default(),
        }
    }
}

/// The `admin` and `external` nic tags and networks of a CoaL datacenter, created at
/// start-up when `enabled` and missing (an existing network of that name is left as is).
/// Defaults are CoaL's: admin 10.99.99.0/24, external 10.88.88.0/24 behind 10.88.88.2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeedConfig {
    /// `NAPI_SEED__ENABLED`
    pub enabled: bool,
    pub admin: SeedNetwork,
    pub external: SeedNetwork,
}

impl Default for SeedConfig {
    fn default() -> Self {
        SeedConfig {
            enabled: false,
            admin: SeedNetwork {
                subnet: "10.99.99.0/24".into(),
                provision_start_ip: "10.99.99.38".into(),
                provision_end_ip: "10.99.99.253".into(),
                gateway: String::new(),
                resolvers: vec!["10.99.99.11".into()],
                vlan_id: 0,
            },
            external: SeedNetwork {
                subnet: "10.88.88.0/24".into(),
                provision_start_ip: "10.88.88.3".into(),
                provision_end_ip: "10.88.88.253".into(),
                gateway: "10.88.88.2".into(),
                resolvers: vec!["8.8.8.8".into(), "8.8.4.4".into()],
                vlan_id: 0,
            },
        }
    }
}

/// One seeded network; its name and nic tag are `admin` or `external`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeedNetwork {
    pub subnet: String,
    pub provision_start_ip: String,
    pub provision_end_ip: String,
    /// Empty: none.
    pub gateway: String,
    pub resolvers: Vec<String>,
    pub vlan_id: u32,
}

impl Default for SeedNetwork {
    fn default() -> Self {
        SeedConfig::default().admin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_environment() {
        let env = [("NAPI_LISTEN", "0.0.0.0:9"), ("NAPI_SEED__ENABLED", "true")];
        let c: Config = triton_common::config::load_env("napi", &env).unwrap();
        assert_eq!(c.service.listen, "0.0.0.0:9");
        assert!(c.seed.enabled);
        assert_eq!(c.service.moray_url, DEFAULT_MORAY_URL);
        assert_eq!(c.seed.external.gateway, "10.88.88.2");
    }
}
