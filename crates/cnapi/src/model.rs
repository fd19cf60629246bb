//! The server record, as stored in the Moray bucket `cnapi_servers` (one JSON object per
//! compute node, key = its UUID), with the field names of Triton's CNAPI.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Default fraction of a server's DRAM kept back for the OS (Triton: ARC and kernel).
pub const DEFAULT_RESERVATION_RATIO: f64 = 0.15;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OverprovisionRatios {
    pub cpu: f64,
    pub ram: f64,
    pub disk: f64,
}

/// One instance on a server, as its heartbeats (or an open reservation) describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ServerVm {
    pub uuid: String,
    pub owner_uuid: String,
    pub alias: String,
    pub brand: String,
    pub state: String,
    /// MiB.
    pub max_physical_memory: u64,
    /// GiB.
    pub quota: u64,
    /// Percent of one CPU; `None` is uncapped.
    pub cpu_cap: Option<u32>,
    pub last_modified: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerRecord {
    pub uuid: Uuid,
    pub hostname: String,
    pub datacenter: String,
    /// `running` or `unknown`.
    pub status: String,
    pub transitional_status: String,
    pub setup: bool,
    pub setting_up: bool,
    pub headnode: bool,
    pub reserved: bool,
    pub reservoir: bool,
    pub reservation_ratio: f64,
    pub overprovision_ratios: Option<OverprovisionRatios>,
    pub traits: Map<String, Value>,
    pub sysinfo: Value,
    /// MiB, from sysinfo "MiB of Memory".
    pub ram: u64,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub memory_arc_bytes: u64,
    pub memory_provisionable_bytes: i64,
    pub disk_pool_size_bytes: u64,
    pub disk_pool_alloc_bytes: u64,
    pub disk_installed_images_used_bytes: u64,
    pub disk_zone_quota_bytes: u64,
    pub disk_zone_quota_used_bytes: u64,
    pub disk_cores_quota_used_bytes: u64,
    pub disk_system_used_bytes: u64,
    pub last_heartbeat: Option<String>,
    /// Unix milliseconds of `last_heartbeat`, for the staleness check.
    pub last_heartbeat_ms: u64,
    pub last_boot: Option<String>,
    /// Unix seconds of the node's boot, from its heartbeats.
    pub boot_time: u64,
    pub created: String,
    pub current_platform: String,
    pub boot_platform: String,
    pub rack_identifier: String,
    pub comments: String,
    pub next_reboot: String,
    pub vms: BTreeMap<String, ServerVm>,
    /// gRPC URL of the server's cn-agent.
    pub agent_url: String,
    /// Nic tags the server's NICs provide (from sysinfo "NIC Names").
    pub nic_tags: Vec<String>,
}

impl Default for ServerRecord {
    fn default() -> Self {
        ServerRecord {
            uuid: Uuid::nil(),
            hostname: String::new(),
            datacenter: String::new(),
            status: "unknown".into(),
            transitional_status: String::new(),
            setup: false,
            setting_up: false,
            headnode: false,
            reserved: false,
            reservoir: false,
            reservation_ratio: DEFAULT_RESERVATION_RATIO,
            overprovision_ratios: None,
            traits: Map::new(),
            sysinfo: Value::Null,
            ram: 0,
            memory_total_bytes: 0,
            memory_available_bytes: 0,
            memory_arc_bytes: 0,
            memory_provisionable_bytes: 0,
            disk_pool_size_bytes: 0,
            disk_pool_alloc_bytes: 0,
            disk_installed_images_used_bytes: 0,
            disk_zone_quota_bytes: 0,
            disk_zone_quota_used_bytes: 0,
            disk_cores_quota_used_bytes: 0,
            disk_system_used_bytes: 0,
            last_heartbeat: None,
            last_heartbeat_ms: 0,
            last_boot: None,
            boot_time: 0,
            created: String::new(),
            current_platform: String::new(),
            boot_platform: String::new(),
            rack_identifier: String::new(),
            comments: String::new(),
            next_reboot: String::new(),
            vms: BTreeMap::new(),
            agent_url: String::new(),
            nic_tags: Vec::new(),
        }
    }
}

/// A sysinfo number that Triton writes as a string ("MiB of Memory": "65514") or a number.
pub fn sysinfo_u64(sysinfo: &Value, key: &str) -> Option<u64> {
    match sysinfo.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The nic tags a sysinfo's NICs provide ("NIC Names" of real and virtual NICs).
pub fn sysinfo_nic_tags(sysinfo: &Value) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for key in ["Network Interfaces", "Virtual Network Interfaces"] {
        let Some(nics) = sysinfo.get(key).and_then(Value::as_object) else {
            continue;
        };
        for nic in nics.values() {
            for tag in nic
                .get("NIC Names")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !tags.iter().any(|t| t == tag) {
                    tags.push(tag.to_string());
                }
            }
        }
    }
    tags.sort();
    tags
}
