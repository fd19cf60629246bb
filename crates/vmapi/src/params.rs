//! What each job was asked to do, as stored in its record (`params`). Written once when
//! the job is accepted, after validation, so a resumed job needs nothing but its record.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One NIC to provision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkParam {
    pub network_uuid: String,
    pub ip: Option<String>,
    pub primary: bool,
    pub nic_tag: String,
    pub allow_ip_spoofing: bool,
    pub allow_mac_spoofing: bool,
    pub allow_dhcp_spoofing: bool,
    pub allow_restricted_traffic: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageParam {
    pub uuid: String,
    /// JSON object of DAPI traits.
    pub traits_json: String,
    /// MiB (zvol images only).
    pub image_size: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PackageParam {
    pub uuid: String,
    /// MiB
    pub max_physical_memory: u64,
    /// MiB, as PAPI keeps it.
    pub quota: u64,
    pub cpu_cap: u32,
    pub traits_json: String,
    pub alloc_server_spread: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Locality {
    pub near: Vec<String>,
    pub far: Vec<String>,
    pub strict: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Affinity {
    pub key: String,
    pub operator: String,
    pub value: String,
    pub is_soft: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProvisionParams {
    pub networks: Vec<NetworkParam>,
    pub image: ImageParam,
    pub package: Option<PackageParam>,
    /// The caller chose the server: no allocation.
    pub server_uuid: Option<String>,
    pub locality: Option<Locality>,
    pub affinity: Vec<Affinity>,
    /// VolAPI volumes of the owner to mount (the `volumes` step).
    pub volumes: Vec<VolumeParam>,
    pub req_id: String,
}

/// One volume to mount, checked (`validate::volumes`): `kind` is `tritonnfs`, `mode`
/// `rw` or `ro`, `mountpoint` absolute and normalized.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeParam {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub mode: String,
    pub mountpoint: String,
}

/// start, stop, reboot, destroy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActionParams {
    pub idempotent: bool,
    pub timeout_seconds: u32,
    pub req_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UpdateParams {
    pub alias: Option<String>,
    pub billing_id: Option<String>,
    pub ram: Option<u64>,
    pub quota: Option<u64>,
    pub cpu_cap: Option<u32>,
    pub max_lwps: Option<u64>,
    pub max_swap: Option<u64>,
    pub set_tags: Map<String, Value>,
    pub remove_tags: Vec<String>,
    pub replace_tags: bool,
    pub set_customer_metadata: BTreeMap<String, String>,
    pub remove_customer_metadata: Vec<String>,
    pub set_internal_metadata: BTreeMap<String, String>,
    pub remove_internal_metadata: Vec<String>,
    pub firewall_enabled: Option<bool>,
    pub req_id: String,
}

impl UpdateParams {
    /// Whether the instance on its server must change (not only VMAPI's record).
    pub fn touches_instance(&self) -> bool {
        self.alias.is_some()
            || self.ram.is_some()
            || self.quota.is_some()
            || self.cpu_cap.is_some()
            || self.max_lwps.is_some()
    }
}

/// add_nics: NICs to reserve on networks, or NICs already reserved in NAPI (by MAC).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AddNicsParams {
    pub networks: Vec<NetworkParam>,
    /// Lower-case, with colons.
    pub macs: Vec<String>,
    pub req_id: String,
}

/// remove_nics: MACs (lower-case, with colons) of the VM's NICs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RemoveNicsParams {
    pub macs: Vec<String>,
    pub req_id: String,
}

/// create_snapshot, rollback_snapshot, delete_snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotParams {
    pub name: String,
    /// rollback_snapshot: boot after.
    pub start: bool,
    /// delete_snapshot: the snapshot's state when the delete was accepted (put back
    /// should the delete fail; a `failed` one has nothing on the node to delete).
    pub previous_state: String,
    pub req_id: String,
}
