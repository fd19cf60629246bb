//! The VM record (Moray bucket `vmapi_vms`, key = uuid) with Triton's field names, and
//! its wire form. Times are epoch milliseconds in Moray (as Triton's VMAPI stores
//! `create_timestamp`), RFC 3339 on the wire. `tag_pairs` and `tag_keys` exist only to
//! index tags for `tag.NAME=value` filters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use triton_proto::vmapi::v1 as pb;

use triton_common::time::rfc3339_millis;

/// VM states as Triton spells them (`triton_types::VmState`'s strings).
pub mod state {
    use triton_types::VmState;

    pub const PROVISIONING: &str = VmState::Provisioning.as_str();
    pub const RUNNING: &str = VmState::Running.as_str();
    pub const STOPPED: &str = VmState::Stopped.as_str();
    pub const FAILED: &str = VmState::Failed.as_str();
    pub const DESTROYED: &str = VmState::Destroyed.as_str();
    pub const UNKNOWN: &str = VmState::Unknown.as_str();
    /// A filter only: neither destroyed nor failed.
    pub const ACTIVE: &str = VmState::ACTIVE_FILTER;
    pub const ALL: &[&str] = VmState::NAMES;
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VmNic {
    pub interface: String,
    pub mac: String,
    pub ip: String,
    pub netmask: String,
    pub gateway: String,
    pub nic_tag: String,
    pub vlan_id: u32,
    pub network_uuid: String,
    pub primary: bool,
    pub mtu: u32,
    pub resolvers: Vec<String>,
    /// A fabric NIC's VXLAN network id (NAPI's), which the compute node's overlay needs;
    /// 0 for other NICs.
    pub vnet_id: u32,
    /// The NIC's network has NAPI's `internet_nat` (a fabric network whose instances
    /// reach out through NAT); the compute node needs it to set the NAT up.
    pub internet_nat: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VmRecord {
    pub uuid: String,
    pub owner_uuid: String,
    pub alias: String,
    pub brand: String,
    pub state: String,
    pub image_uuid: String,
    pub billing_id: String,
    pub server_uuid: String,
    pub ram: u64,
    pub max_physical_memory: u64,
    pub max_swap: u64,
    pub quota: u64,
    pub cpu_cap: u32,
    pub max_lwps: u64,
    pub zfs_io_priority: u32,
    pub nics: Vec<VmNic>,
    pub resolvers: Vec<String>,
    pub tags: Map<String, Value>,
    pub customer_metadata: BTreeMap<String, String>,
    pub internal_metadata: BTreeMap<String, String>,
    pub autoboot: bool,
    pub firewall_enabled: bool,
    pub hostname: String,
    /// Epoch ms.
    pub create_timestamp: i64,
    /// Epoch ms of the last change VMAPI made or learnt of.
    pub last_modified: i64,
    /// Epoch ms of the destruction.
    pub destroyed: Option<i64>,
    pub failure_reason: String,
    pub boot_timestamp: u64,
    /// Oldest first.
    pub snapshots: Vec<VmSnapshot>,
    /// Index fields: `name=value` and `name` of every tag.
    pub tag_pairs: Vec<String>,
    pub tag_keys: Vec<String>,
}

/// Snapshot states.
pub mod snapshot_state {
    pub const CREATING: &str = "creating";
    pub const CREATED: &str = "created";
    pub const DELETING: &str = "deleting";
    pub const FAILED: &str = "failed";
}

/// One snapshot of the VM's disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VmSnapshot {
    pub name: String,
    /// See [`snapshot_state`].
    pub state: String,
    /// Epoch ms: asked for, then taken once created.
    pub created_timestamp: i64,
}

/// A tag value as text, for the tag index and filters (`true`, `42`, `web`).
pub fn tag_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl VmRecord {
    /// Brings the index fields in line with the tags; call before every write.
    pub fn refresh_index(&mut self) {
        self.tag_keys = self.tags.keys().cloned().collect();
        self.tag_pairs = self
            .tags
            .iter()
            .map(|(k, v)| format!("{k}={}", tag_text(v)))
            .collect();
    }

    /// The record as stored: with `tag_pairs` and `tag_keys` made from the tags.
    pub fn encode(&self) -> serde_json::Result<Value> {
        let mut vm = self.clone();
        vm.refresh_index();
        serde_json::to_value(&vm)
    }

    // A derived Serialize with string keys into a Value: it always serializes.
    #[allow(clippy::expect_used)]
    pub fn to_value(&self) -> Value {
        self.encode().expect("a VM record always serializes")
    }

    pub fn is_destroyed(&self) -> bool {
        self.state == state::DESTROYED
    }

    pub fn to_pb(&self) -> pb::Vm {
        pb::Vm {
            uuid: self.uuid.clone(),
            owner_uuid: self.owner_uuid.clone(),
            alias: self.alias.clone(),
            brand: self.brand.clone(),
            state: self.state.clone(),
            image_uuid: self.image_uuid.clone(),
            billing_id: self.billing_id.clone(),
            server_uuid: self.server_uuid.clone(),
            ram: self.ram,
            max_physical_memory: self.max_physical_memory,
            max_swap: self.max_swap,
            quota: self.quota,
            cpu_cap: self.cpu_cap,
            max_lwps: self.max_lwps,
            zfs_io_priority: self.zfs_io_priority,
            nics: self.nics.iter().map(VmNic::to_pb).collect(),
            resolvers: self.resolvers.clone(),
            tags: self
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), json_to_pb(v)))
                .collect(),
            customer_metadata: self.customer_metadata.clone().into_iter().collect(),
            internal_metadata: self.internal_metadata.clone().into_iter().collect(),
            autoboot: self.autoboot,
            firewall_enabled: self.firewall_enabled,
            hostname: self.hostname.clone(),
            create_timestamp: rfc3339_millis(self.create_timestamp),
            last_modified: rfc3339_millis(self.last_modified),
            destroyed: self.destroyed.map(rfc3339_millis).unwrap_or_default(),
            failure_reason: self.failure_reason.clone(),
            boot_timestamp: self.boot_timestamp,
            snapshots: self
                .snapshots
                .iter()
                .map(|s| pb::Snapshot {
                    name: s.name.clone(),
                    state: s.state.clone(),
                    created_timestamp: rfc3339_millis(s.created_timestamp),
                })
                .collect(),
        }
    }
}

impl VmNic {
    pub fn to_pb(&self) -> pb::Nic {
        pb::Nic {
            interface: self.interface.clone(),
            mac: self.mac.clone(),
            ip: self.ip.clone(),
            netmask: self.netmask.clone(),
            gateway: self.gateway.clone(),
            nic_tag: self.nic_tag.clone(),
            vlan_id: self.vlan_id,
            network_uuid: self.network_uuid.clone(),
            primary: self.primary,
            mtu: self.mtu,
            resolvers: self.resolvers.clone(),
        }
    }
}

/// google.protobuf.Value <-> JSON (tags hold only scalars in Triton; lists and objects
/// are kept as given anyway).
pub use triton_types::value::{from_json as json_to_pb, to_json as pb_to_json};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tags_are_indexed_as_pairs_and_keys() {
        let mut vm = VmRecord {
            tags: json!({"role": "web", "prod": true, "n": 3})
                .as_object()
                .cloned()
                .unwrap(),
            ..Default::default()
        };
        vm.refresh_index();
        assert_eq!(vm.tag_pairs, vec!["n=3", "prod=true", "role=web"]);
        assert_eq!(vm.tag_keys, vec!["n", "prod", "role"]);
    }

    #[test]
    fn tag_values_keep_their_type_on_the_wire() {
        for v in [json!("web"), json!(true), json!(3), json!(2.5)] {
            assert_eq!(pb_to_json(&json_to_pb(&v)), v);
        }
    }
}
