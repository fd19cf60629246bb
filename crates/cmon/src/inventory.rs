//! What CMon knows of the datacenter (triton-cmon's `cache`): the running instances by
//! uuid and by owner, and the compute nodes with their agents. Filled only by the
//! owners' change feeds ([`crate::follow`]): VMAPI's `WatchVms` and CNAPI's
//! `WatchServers`; no polling.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use triton_proto::cnapi::v1 as cnapi;
use triton_proto::vmapi::v1 as vmapi;
use uuid::Uuid;

/// The tag listing an instance's groups for `/v1/discover?groups=`.
pub const GROUPS_TAG: &str = "triton.cmon.groups";
/// The tag that leaves an instance out of discovery (`"true"`).
pub const DISABLE_TAG: &str = "_triton.cmon.disable";

/// A running instance, as `/v1/discover` lists it (the keys Prometheus's
/// `triton_sd_configs` reads: `groups`, `server_uuid`, `vm_alias`, `vm_brand`,
/// `vm_image_uuid`, `vm_uuid`; and Triton's others).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instance {
    pub groups: Vec<String>,
    pub server_uuid: String,
    pub source: &'static str,
    pub vm_alias: String,
    pub vm_brand: String,
    pub vm_image_uuid: String,
    pub vm_owner_uuid: String,
    pub vm_uuid: String,
    pub vm_state: String,
    /// Milliseconds since the epoch at which CMon learnt of it.
    pub cached_date: u64,
    #[serde(skip)]
    pub owner: Uuid,
    #[serde(skip)]
    pub server: Option<Uuid>,
    /// Tagged `_triton.cmon.disable=true`: scraped, not discovered.
    #[serde(skip)]
    pub discover_disabled: bool,
}

/// A compute node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub uuid: Uuid,
    pub hostname: String,
    /// gRPC URL of its cn-agent.
    pub agent_url: String,
    pub setup: bool,
}

#[derive(Default)]
struct Vms {
    by_uuid: HashMap<Uuid, Arc<Instance>>,
    by_owner: HashMap<Uuid, BTreeMap<Uuid, Arc<Instance>>>,
}

impl Vms {
    fn remove(&mut self, uuid: &Uuid) {
        if let Some(old) = self.by_uuid.remove(uuid)
            && let Some(owned) = self.by_owner.get_mut(&old.owner)
        {
            owned.remove(uuid);
            if owned.is_empty() {
                self.by_owner.remove(&old.owner);
            }
        }
    }

    fn insert(&mut self, vm: Instance) {
        self.remove(&parse(&vm.vm_uuid).unwrap_or_default());
        let vm = Arc::new(vm);
        if let Some(uuid) = parse(&vm.vm_uuid) {
            self.by_owner
                .entry(vm.owner)
                .or_default()
                .insert(uuid, vm.clone());
            self.by_uuid.insert(uuid, vm);
        }
    }
}

/// The instances and nodes; shared by the followers (writers) and the handlers.
#[derive(Default)]
pub struct Inventory {
    vms: RwLock<Vms>,
    nodes: RwLock<HashMap<Uuid, Arc<Node>>>,
}

fn parse(s: &str) -> Option<Uuid> {
    Uuid::parse_str(s).ok()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn tag_text(vm: &vmapi::Vm, tag: &str) -> Option<String> {
    use prost_types::value::Kind;
    match vm.tags.get(tag)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.clone()),
        Kind::BoolValue(b) => Some(b.to_string()),
        Kind::NumberValue(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The instance CMon keeps for `vm`, or `None` when it is not kept: not running, a NAT
/// zone (`smartdc_role=nat`, as Triton), or without a well-formed uuid or owner.
pub fn instance_of(vm: &vmapi::Vm, source: &'static str) -> Option<Instance> {
    if vm.state != "running" {
        return None;
    }
    if tag_text(vm, "smartdc_role").as_deref() == Some("nat") {
        return None;
    }
    parse(&vm.uuid)?;
    let owner = parse(&vm.owner_uuid)?;
    let groups = tag_text(vm, GROUPS_TAG)
        .map(|g| {
            g.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Some(Instance {
        groups,
        server_uuid: vm.server_uuid.clone(),
        source,
        vm_alias: vm.alias.clone(),
        vm_brand: vm.brand.clone(),
        vm_image_uuid: vm.image_uuid.clone(),
        vm_owner_uuid: vm.owner_uuid.clone(),
        vm_uuid: vm.uuid.clone(),
        vm_state: vm.state.clone(),
        cached_date: now_ms(),
        owner,
        server: parse(&vm.server_uuid),
        discover_disabled: tag_text(vm, DISABLE_TAG).as_deref() == Some("true"),
    })
}

fn node_of(server: &cnapi::Server) -> Option<Node> {
    Some(Node {
        uuid: parse(&server.uuid)?,
        hostname: server.hostname.clone(),
        agent_url: server.agent_url.clone(),
        setup: server.setup,
    })
}

impl Inventory {
    /// The running instances are exactly `vms` (a feed's snapshot).
    pub fn reset_vms(&self, vms: &[vmapi::Vm]) {
        let mut fresh = Vms::default();
        for vm in vms {
            if let Some(i) = instance_of(vm, "Bootstrapper") {
                fresh.insert(i);
            }
        }
        if let Ok(mut all) = self.vms.write() {
            *all = fresh;
        }
    }

    /// A VM changed (`Some`) or was deleted (`None`).
    pub fn put_vm(&self, uuid: &str, vm: Option<&vmapi::Vm>) {
        let Some(key) = parse(uuid) else { return };
        let Ok(mut all) = self.vms.write() else {
            return;
        };
        match vm.and_then(|vm| instance_of(vm, "changefeed")) {
            Some(i) => all.insert(i),
            None => all.remove(&key),
        }
    }

    /// The compute nodes are exactly `servers`.
    pub fn reset_nodes(&self, servers: &[cnapi::Server]) {
        let fresh = servers
            .iter()
            .filter_map(node_of)
            .map(|n| (n.uuid, Arc::new(n)))
            .collect();
        if let Ok(mut all) = self.nodes.write() {
            *all = fresh;
        }
    }

    /// A server changed (`Some`) or was deleted (`None`).
    pub fn put_node(&self, uuid: &str, server: Option<&cnapi::Server>) {
        let Some(key) = parse(uuid) else { return };
        let Ok(mut all) = self.nodes.write() else {
            return;
        };
        match server.and_then(node_of) {
            Some(n) => all.insert(key, Arc::new(n)),
            None => all.remove(&key),
        };
    }

    /// A running instance.
    pub fn vm(&self, uuid: &Uuid) -> Option<Arc<Instance>> {
        self.vms.read().ok()?.by_uuid.get(uuid).cloned()
    }

    /// `owner`'s running instances, by uuid.
    pub fn vms_of(&self, owner: &Uuid) -> Vec<Arc<Instance>> {
        self.vms
            .read()
            .ok()
            .and_then(|v| v.by_owner.get(owner).map(|m| m.values().cloned().collect()))
            .unwrap_or_default()
    }

    /// How many running instances are known.
    pub fn vm_count(&self) -> usize {
        self.vms.read().map(|v| v.by_uuid.len()).unwrap_or(0)
    }

    pub fn node(&self, uuid: &Uuid) -> Option<Arc<Node>> {
        self.nodes.read().ok()?.get(uuid).cloned()
    }

    /// The set-up compute nodes, by uuid.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        let mut nodes: Vec<_> = self
            .nodes
            .read()
            .map(|n| n.values().filter(|n| n.setup).cloned().collect())
            .unwrap_or_default();
        nodes.sort_by_key(|n| n.uuid);
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(uuid: &str, owner: &str, state: &str) -> vmapi::Vm {
        vmapi::Vm {
            uuid: uuid.into(),
            owner_uuid: owner.into(),
            state: state.into(),
            server_uuid: Uuid::new_v4().to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn only_running_instances_are_kept_and_owners_follow() {
        let inv = Inventory::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (v1, v2) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
        inv.reset_vms(&[vm(&v1, &a.to_string(), "running")]);
        inv.put_vm(&v2, Some(&vm(&v2, &a.to_string(), "stopped")));
        assert_eq!(inv.vms_of(&a).len(), 1);
        inv.put_vm(&v2, Some(&vm(&v2, &a.to_string(), "running")));
        assert_eq!(inv.vms_of(&a).len(), 2);
        // Moved to another owner.
        inv.put_vm(&v2, Some(&vm(&v2, &b.to_string(), "running")));
        assert_eq!(inv.vms_of(&a).len(), 1);
        assert_eq!(inv.vms_of(&b).len(), 1);
        inv.put_vm(&v1, None);
        assert!(inv.vms_of(&a).is_empty());
        assert_eq!(inv.vm_count(), 1);
    }
}
