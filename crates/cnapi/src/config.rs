//! cnapi's configuration: `/etc/triton/cnapi.toml` (or `--config`), every key overridable
//! by `CNAPI_<KEY>` (nested: `CNAPI_ALLOC__WEIGHT_UNRESERVED_RAM`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::allocation::AllocConfig;
use crate::service::Settings;
use crate::underlay::UnderlaySettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    Moray,
    /// Nothing survives a restart: for trying things out only.
    Memory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub listen: String,
    /// Who may connect and whether reflection is served (`[grpc]`; `CNAPI_GRPC__ALLOW_FROM`
    /// takes comma-separated CIDRs).
    pub grpc: triton_common::grpc::ServerConfig,
    pub storage: Storage,
    pub moray_url: String,
    pub datacenter: String,
    pub heartbeat_lifetime_ms: u64,
    pub reconcile_period_ms: u64,
    pub reservation_ttl_s: u64,
    /// Mark a newly registered server set up at once, unless it booted from the network.
    pub auto_setup: bool,
    /// Mark a newly registered network-booted server (its sysinfo's boot parameters
    /// name `triton.cnapi_url`) set up at once too; else it waits for ServerSetup.
    pub auto_setup_network_booted: bool,
    /// The booter's `os/` directory (`<platform>/{vmlinuz,initrd}`): the platforms boot
    /// parameters may name, the newest being the default until one is set. Empty: any
    /// well-formed name is taken.
    pub platforms_dir: String,
    pub alloc: AllocConfig,
    /// NAPI's gRPC URL: each node's underlay address (sysinfo) is registered there as
    /// its underlay NIC (docs/compute.md, "Underlay"); empty: not done.
    pub napi_url: String,
    /// The operator account, owner of the underlay NICs (required with `napi_url`).
    pub admin_uuid: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:2030".into(),
            grpc: triton_common::grpc::ServerConfig::default(),
            storage: Storage::Moray,
            moray_url: "tcp://127.0.0.1:2020".into(),
            datacenter: "coal".into(),
            heartbeat_lifetime_ms: 11_000,
            reconcile_period_ms: 5_000,
            reservation_ttl_s: 600,
            auto_setup: false,
            auto_setup_network_booted: false,
            platforms_dir: String::new(),
            alloc: AllocConfig::default(),
            napi_url: String::new(),
            admin_uuid: String::new(),
        }
    }
}

impl Config {
    pub fn settings(&self) -> Settings {
        Settings {
            datacenter: self.datacenter.clone(),
            heartbeat_lifetime: Duration::from_millis(self.heartbeat_lifetime_ms),
            reconcile_period: Duration::from_millis(self.reconcile_period_ms.max(100)),
            reservation_ttl: Duration::from_secs(self.reservation_ttl_s),
            auto_setup: self.auto_setup,
            auto_setup_network_booted: self.auto_setup_network_booted,
            platforms_dir: (!self.platforms_dir.is_empty())
                .then(|| std::path::PathBuf::from(&self.platforms_dir)),
            alloc: self.alloc.clone(),
            grpc: self.grpc.clone(),
            underlay: (!self.napi_url.is_empty()).then(|| UnderlaySettings {
                napi_url: self.napi_url.clone(),
                admin_uuid: self.admin_uuid.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use triton_common::config_text::load_text;

    use super::*;

    #[test]
    fn alloc_weights_come_from_file_and_environment() {
        let c: Config = load_text(
            "cnapi",
            "storage = \"memory\"\n[alloc]\nweight_unreserved_ram = -2.0\n",
            &[("CNAPI_ALLOC__FILTER_HEADNODE", "false")],
        )
        .unwrap();
        assert_eq!(c.storage, Storage::Memory);
        assert_eq!(c.alloc.weight_unreserved_ram, -2.0);
        assert!(!c.alloc.filter_headnode);
        assert_eq!(c.settings().heartbeat_lifetime, Duration::from_secs(11));
    }
}
