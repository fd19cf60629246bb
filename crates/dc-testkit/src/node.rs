//! A compute node's agent started by hand, for tests and benches that want cn-agent (and
//! maybe CNAPI) without a whole [`crate::Dc`]: what the node reports about itself, with
//! the defaults most tests need, and the agent on a backend of the test's choice.

use std::sync::Arc;

use cn_agent::agent::{AgentOptions, Running};
use cn_agent::sysinfo::NodeFacts;
use cn_agent::{InstanceSpec, NicSpec, ZoneBackend};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What a simulated node reports (its sysinfo and capacity); `Default` is a 16 GiB,
/// 8-CPU node `sim0` with 1 TiB of disk and the nic tag `admin` in datacenter `test`.
#[derive(Debug, Clone)]
pub struct SimNode {
    /// Its server UUID (a new one by default).
    pub uuid: Uuid,
    /// Its hostname.
    pub hostname: String,
    /// Its RAM in MiB.
    pub ram_mib: u64,
    /// How many CPUs it has.
    pub cpus: u32,
    /// Its disk in bytes.
    pub disk_bytes: u64,
    /// The nic tags it claims.
    pub nic_tags: Vec<String>,
    /// The datacenter it reports.
    pub datacenter: String,
    /// Its boot time, in seconds since the epoch.
    pub boot_time: u64,
}

impl Default for SimNode {
    fn default() -> Self {
        SimNode {
            uuid: Uuid::new_v4(),
            hostname: "sim0".into(),
            ram_mib: 16384,
            cpus: 8,
            disk_bytes: 1 << 40,
            nic_tags: vec!["admin".into()],
            datacenter: "test".into(),
            boot_time: 1_700_000_000,
        }
    }
}

impl SimNode {
    /// The node's facts once the agent knows its port.
    pub fn facts(self) -> impl FnOnce(u16) -> NodeFacts {
        move |agent_port| NodeFacts::Sim {
            uuid: self.uuid,
            hostname: self.hostname,
            ram_mib: self.ram_mib,
            cpus: self.cpus,
            disk_bytes: self.disk_bytes,
            nic_tags: self.nic_tags,
            datacenter: self.datacenter,
            agent_port,
            boot_time: self.boot_time,
        }
    }

    /// Starts cn-agent for this node on `backend` (sim or linux) with `options`, as the
    /// binary does at boot, until `shutdown`.
    pub async fn start<B: ZoneBackend>(
        self,
        backend: Arc<B>,
        options: AgentOptions,
        shutdown: CancellationToken,
    ) -> Running {
        let uuid = self.uuid;
        let running = cn_agent::agent::start(backend, self.facts(), options, shutdown)
            .await
            .expect("cn-agent starts");
        assert_eq!(
            running.server_uuid, uuid,
            "the agent reports its node's UUID"
        );
        running
    }
}

/// An instance of image `image_uuid` named `hostname` (its alias too) with `nics` and pid
/// 1 `init` (empty: the backend's default), for a new owner: 64 MiB, half a CPU, 1 GiB of
/// disk, 64 processes, booted at create.
pub fn instance_spec(
    image_uuid: Uuid,
    hostname: &str,
    nics: Vec<NicSpec>,
    init: Vec<String>,
) -> InstanceSpec {
    InstanceSpec {
        uuid: Uuid::new_v4(),
        owner_uuid: Uuid::new_v4().to_string(),
        alias: hostname.to_string(),
        hostname: hostname.to_string(),
        brand: "joyent-minimal".into(),
        image_uuid,
        ram: 64,
        cpu_cap: 50,
        quota: 1,
        max_lwps: 64,
        nics,
        init,
        customer_metadata: Default::default(),
        internal_metadata: Default::default(),
        tags: Default::default(),
        autoboot: true,
        billing_id: String::new(),
    }
}

/// pid 1 of the test images: busybox's httpd serving `/www` on port 80.
pub fn httpd_init() -> Vec<String> {
    ["/bin/httpd", "-f", "-p", "80", "-h", "/www"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
