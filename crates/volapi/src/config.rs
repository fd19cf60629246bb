//! VolAPI's configuration: a TOML file, every key overridable by `VOLAPI_<KEY>`
//! (see [`triton_common::config`]).

use moray_client::service::MorayService;
use serde::{Deserialize, Serialize};

/// Default gRPC listen address (2050 in CoaL, on the admin network).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2050";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `listen`, `[grpc]`, `moray_url` (the volumes and reservations) and
    /// `moray_connect_secs`.
    #[serde(flatten)]
    pub service: MorayService,
    /// VMAPI (required; so are PAPI, NAPI and IMGAPI): storage VMs are made and deleted there, its `WatchVms` drives the
    /// volumes' states and references, its jobs end reservations.
    pub vmapi_url: String,
    /// PAPI: the `sdc_volume_nfs*` packages give the sizes.
    pub papi_url: String,
    /// NAPI: the volume's networks are checked there.
    pub napi_url: String,
    /// IMGAPI: the active `nfsserver` image the storage VMs run.
    pub imgapi_url: String,
    /// UFDS (optional): the owner's `default_network` when a create names no network.
    /// Without it such a create is refused (`networks` is then required).
    pub ufds_url: String,
    /// The name of the image storage VMs run (`nfsserver`).
    pub image_name: String,
    /// How often reservations are checked against their jobs (ms; Triton: 60 s).
    pub reservation_gc_ms: u64,
    /// A reservation older than this goes whatever its job says (ms; Triton: 2 h).
    pub reservation_max_age_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: MorayService::new(DEFAULT_LISTEN),
            vmapi_url: String::new(),
            papi_url: String::new(),
            napi_url: String::new(),
            imgapi_url: String::new(),
            ufds_url: String::new(),
            image_name: "nfsserver".into(),
            reservation_gc_ms: 60_000,
            reservation_max_age_ms: 2 * 3600 * 1000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_defaults() {
        let env = [
            ("VOLAPI_VMAPI_URL", "http://10.99.99.9:2021"),
            ("VOLAPI_RESERVATION_GC_MS", "500"),
        ];
        let c: Config = triton_common::config::load_env("volapi", &env).unwrap();
        assert_eq!(c.vmapi_url, "http://10.99.99.9:2021");
        assert_eq!(c.reservation_gc_ms, 500);
        assert_eq!(c.service.listen, DEFAULT_LISTEN);
    }
}
