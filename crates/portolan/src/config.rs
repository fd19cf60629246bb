//! Portolan's configuration: a TOML file, every key overridable by `PORTOLAN_<KEY>`
//! (see [`triton_common::config`]).

use moray_client::service::MorayService;
use serde::{Deserialize, Serialize};

/// Default gRPC listen address: only health and reflection are served there.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2027";
/// Default SVP listen address (Triton's port, 1296).
pub const DEFAULT_SVP_LISTEN: &str = "127.0.0.1:1296";
/// Default limit of SVP connections open at once.
pub const DEFAULT_SVP_MAX_CONNECTIONS: usize = 4096;
/// Default seconds an SVP connection may stay silent before it is closed.
pub const DEFAULT_SVP_IDLE_SECS: u64 = 600;
/// Default milliseconds a VL2 or VL3 answer is cached.
pub const DEFAULT_CACHE_TTL_MS: u64 = 1000;
/// Default most answers cached.
pub const DEFAULT_CACHE_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `listen` (the gRPC health port), `[grpc]` and `moray_url` (where NAPI keeps the
    /// fabric buckets): `PORTOLAN_LISTEN`, `PORTOLAN_MORAY_URL`, ...; and
    /// `moray_connect_secs`, how long start-up keeps trying Moray.
    #[serde(flatten)]
    pub service: MorayService,
    /// Where SVP is served, host:port (`PORTOLAN_SVP_LISTEN`); port 0 picks a free one.
    pub svp_listen: String,
    /// SVP connections open at once (`PORTOLAN_SVP_MAX_CONNECTIONS`); one more waits in
    /// the kernel's backlog until one closes.
    pub svp_max_connections: usize,
    /// Seconds a connection may send nothing before it is closed
    /// (`PORTOLAN_SVP_IDLE_SECS`); compute nodes reconnect.
    pub svp_idle_secs: u64,
    /// Milliseconds a VL2 or VL3 answer is kept (`PORTOLAN_CACHE_TTL_MS`); 0 turns the
    /// cache off. A LOG reply drops the answers its entries name (`cache.rs`).
    pub cache_ttl_ms: u64,
    /// The most answers kept (`PORTOLAN_CACHE_ENTRIES`); when full, the cache empties.
    pub cache_entries: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: MorayService::new(DEFAULT_LISTEN),
            svp_listen: DEFAULT_SVP_LISTEN.to_string(),
            svp_max_connections: DEFAULT_SVP_MAX_CONNECTIONS,
            svp_idle_secs: DEFAULT_SVP_IDLE_SECS,
            cache_ttl_ms: DEFAULT_CACHE_TTL_MS,
            cache_entries: DEFAULT_CACHE_ENTRIES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_defaults() {
        let env = [
            ("PORTOLAN_SVP_LISTEN", "10.99.99.30:1296"),
            ("PORTOLAN_MORAY_URL", "tcp://10.0.0.5:2020"),
            ("PORTOLAN_SVP_MAX_CONNECTIONS", "8"),
        ];
        let c: Config = triton_common::config::load_env("portolan", &env).unwrap();
        assert_eq!(c.svp_listen, "10.99.99.30:1296");
        assert_eq!(c.svp_max_connections, 8);
        assert_eq!(c.service.moray_url, "tcp://10.0.0.5:2020");
        assert_eq!(c.service.listen, DEFAULT_LISTEN);
        assert_eq!(c.svp_idle_secs, DEFAULT_SVP_IDLE_SECS);
    }
}
