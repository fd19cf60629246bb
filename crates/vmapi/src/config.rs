//! vmapi's configuration: `/etc/triton/vmapi.toml` (or `--config`), every key overridable
//! by `VMAPI_<KEY>` (nested: `VMAPI_TIMEOUTS__CREATE_S`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use triton_common::problems::Problems;

/// Triton's VMAPI listens on 80 over HTTP; our gRPC VMAPI takes the port after IMGAPI's.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2025";

/// How long each kind of job step may take before it fails (and the job unwinds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timeouts {
    /// Calls to other APIs (validate, allocate, NICs, records).
    pub default_s: u64,
    /// Getting the image onto the server (Triton: 300 s + 3600 s of task wait).
    pub image_s: u64,
    /// Creating the instance and waiting for it (Triton: 3600 s).
    pub create_s: u64,
    /// start, stop, reboot, update, destroy on the server.
    pub task_s: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            default_s: 60,
            image_s: 1800,
            create_s: 600,
            task_s: 300,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// gRPC listen address; port 0 picks a free one.
    pub listen: String,
    /// Who may connect and whether reflection is served (`[grpc]`; `VMAPI_GRPC__ALLOW_FROM`
    /// takes comma-separated CIDRs).
    pub grpc: triton_common::grpc::ServerConfig,
    pub moray_url: String,
    /// CNAPI's gRPC URL (required).
    pub cnapi_url: String,
    /// NAPI's gRPC URL; empty: VMs can have no networks.
    pub napi_url: String,
    /// IMGAPI's gRPC URL; empty: images are not checked (and `imgapi_file_url` must say
    /// where servers fetch them).
    pub imgapi_url: String,
    /// Base HTTP URL servers download image files from (`<base>/images/<uuid>/file`).
    pub imgapi_file_url: String,
    /// PAPI's gRPC URL; empty: `billing_id` cannot be used.
    pub papi_url: String,
    /// UFDS's gRPC URL; empty: owners are not checked.
    pub ufds_url: String,
    /// VolAPI's gRPC URL; empty: a create with `volumes` is refused (volumes are not
    /// available).
    pub volapi_url: String,
    /// Names this VMAPI in job leases. Jobs leased by this name are resumed at once
    /// after a restart; jobs of another VMAPI once its lease has run out. Empty: the
    /// host name.
    pub instance_id: String,
    /// A running job's lease; renewed every third of it. A VMAPI that dies leaves its
    /// jobs to another after this long.
    pub job_lease_ms: u64,
    /// Jobs run at once by this VMAPI; more wait their turn (queued).
    pub max_running_jobs: usize,
    /// How often VM states are compared with the servers' heartbeats (via CNAPI).
    /// 0 disables the reconciler.
    pub reconcile_period_ms: u64,
    /// How often jobs left by a dead VMAPI are looked for.
    pub orphan_scan_ms: u64,
    pub timeouts: Timeouts,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.into(),
            grpc: triton_common::grpc::ServerConfig::default(),
            moray_url: "tcp://127.0.0.1:2020".into(),
            cnapi_url: "http://127.0.0.1:2030".into(),
            napi_url: String::new(),
            imgapi_url: String::new(),
            imgapi_file_url: String::new(),
            papi_url: String::new(),
            ufds_url: String::new(),
            volapi_url: String::new(),
            instance_id: String::new(),
            job_lease_ms: 30_000,
            max_running_jobs: 256,
            reconcile_period_ms: 5_000,
            orphan_scan_ms: 10_000,
            timeouts: Timeouts::default(),
        }
    }
}

impl Config {
    /// Every problem at once.
    pub fn check(&self) -> Result<(), String> {
        let mut problems = Problems::new();
        problems.when(self.cnapi_url.is_empty(), "cnapi_url: is required");
        problems.when(self.moray_url.is_empty(), "moray_url: is required");
        problems.when(
            self.job_lease_ms < 300,
            "job_lease_ms: must be at least 300",
        );
        problems.when(
            self.max_running_jobs == 0,
            "max_running_jobs: must be at least 1",
        );
        for (key, value) in [
            ("timeouts.default_s", self.timeouts.default_s),
            ("timeouts.image_s", self.timeouts.image_s),
            ("timeouts.create_s", self.timeouts.create_s),
            ("timeouts.task_s", self.timeouts.task_s),
        ] {
            problems.when(value == 0, format_args!("{key}: must be at least 1"));
        }
        problems.into_result()
    }

    pub fn instance_id(&self) -> String {
        if !self.instance_id.is_empty() {
            return self.instance_id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "vmapi".into())
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.job_lease_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_key_is_reported() {
        let c = Config {
            cnapi_url: String::new(),
            job_lease_ms: 1,
            timeouts: Timeouts {
                create_s: 0,
                ..Default::default()
            },
            ..Default::default()
        };
        let e = c.check().unwrap_err();
        assert!(e.contains("cnapi_url"), "{e}");
        assert!(e.contains("job_lease_ms"), "{e}");
        assert!(e.contains("timeouts.create_s"), "{e}");
        assert!(Config::default().check().is_ok());
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let env = vec![
            ("VMAPI_TIMEOUTS__CREATE_S".to_string(), "42".to_string()),
            ("VMAPI_NAPI_URL".to_string(), "http://n:1".to_string()),
        ];
        let c: Config = triton_common::config::load_from("vmapi", None, &env).unwrap();
        assert_eq!(c.timeouts.create_s, 42);
        assert_eq!(c.napi_url, "http://n:1");
        assert_eq!(c.listen, DEFAULT_LISTEN);
    }
}
