//! PAPI's configuration: a TOML file, every key overridable by `PAPI_<KEY>`
//! (see [`triton_common::config`]).

pub use moray_client::service::DEFAULT_MORAY_CONNECT_SECS;
use moray_client::service::MorayService;
use serde::{Deserialize, Serialize};
pub use triton_common::service_config::DEFAULT_MORAY_URL;

/// Default gRPC listen address (Triton's PAPI listens on HTTP 80 in its own zone; on a
/// shared host we take 2022, beside Moray's 2020).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2022";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `listen`, `[grpc]`, `moray_url` (where packages are kept) and `moray_connect_secs`
    /// (how long start-up keeps trying Moray): `PAPI_LISTEN`, `PAPI_GRPC__ALLOW_FROM`,
    /// `PAPI_MORAY_CONNECT_SECS`, ...
    #[serde(flatten)]
    pub service: MorayService,
    /// Triton's `IGNORE_CPU_CAP` (`PAPI_IGNORE_CPU_CAP`): packages may lack `cpu_cap`.
    /// Only for fresh installs: capped and uncapped instances on one server confuse the
    /// allocator.
    pub ignore_cpu_cap: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: MorayService::new(DEFAULT_LISTEN),
            ignore_cpu_cap: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_defaults() {
        let env = [
            ("PAPI_IGNORE_CPU_CAP", "true"),
            ("PAPI_MORAY_URL", "tcp://10.0.0.5:2020"),
        ];
        let c: Config = triton_common::config::load_env("papi", &env).unwrap();
        assert!(c.ignore_cpu_cap);
        assert_eq!(c.service.moray_url, "tcp://10.0.0.5:2020");
        assert_eq!(c.service.listen, DEFAULT_LISTEN);
    }
}
