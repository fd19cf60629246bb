//! VMAPI's `WatchVms`: every VM, as the naming rules see it.

use serde_json::Value;
use triton_proto::vmapi::v1 as pb;

use crate::names::{Nic, TagValue, Vm};

pub struct Vms;

feed!(Vms: pb::WatchVmsRequest => Vm, FEEDS[0], inputs.vms, convert: |vm| {
    let key = vm.uuid.clone();
    // A destroyed VM is kept by VMAPI but listed nowhere: CNS forgets it.
    if !vm.destroyed.is_empty() || vm.state == "destroyed" {
        return (key, None);
    }
    (key, Some(of(vm)))
});

/// What the naming rules read of a VMAPI VM.
pub fn of(vm: &pb::Vm) -> Vm {
    Vm {
        uuid: vm.uuid.to_ascii_lowercase(),
        alias: vm.alias.clone(),
        owner_uuid: vm.owner_uuid.to_ascii_lowercase(),
        state: vm.state.clone(),
        destroyed: !vm.destroyed.is_empty(),
        server_uuid: vm.server_uuid.to_ascii_lowercase(),
        tags: vm
            .tags
            .iter()
            .filter_map(|(k, v)| {
                let v = match triton_types::value::to_json(v) {
                    Value::Bool(b) => TagValue::Bool(b),
                    Value::Number(n) => TagValue::Number(n.as_f64().unwrap_or_default()),
                    Value::String(s) => TagValue::Text(s),
                    _ => return None,
                };
                Some((k.clone(), v))
            })
            .collect(),
        customer_metadata: vm
            .customer_metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        nics: vm
            .nics
            .iter()
            .map(|n| Nic {
                network_uuid: n.network_uuid.to_ascii_lowercase(),
                ip: n.ip.clone(),
                nic_tag: n.nic_tag.clone(),
                vlan_id: n.vlan_id,
            })
            .collect(),
    }
}
