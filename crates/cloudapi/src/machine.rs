//! The machine object: VMAPI's VM as CloudAPI shows it (sdc-cloudapi
//! `lib/machines.js` translate / translateState), and the affinity rule grammar.

use serde_json::{Value, json};
use triton_proto::vmapi::v1 as vmapi;

use crate::endpoints::{object, put_str, tags_json};

/// `internal_metadata` key holding deletion protection (Triton's
/// `indestructible_zoneroot`), until VMAPI carries the field itself.
pub const DELETION_PROTECTION_KEY: &str = "indestructible_zoneroot";

/// VMAPI/vmadm state to CloudAPI state.
pub fn translate_state(state: &str) -> &'static str {
    match state {
        "configured" | "incomplete" | "unavailable" | "provisioning" => "provisioning",
        "ready" => "ready",
        "running" => "running",
        "halting" | "stopping" | "shutting_down" => "stopping",
        "off" | "down" | "installed" | "stopped" => "stopped",
        "unreachable" => "offline",
        "destroyed" => "deleted",
        "failed" => "failed",
        _ => "unknown",
    }
}

/// The VMAPI states a CloudAPI state filter stands for.
pub fn vmapi_states(cloudapi_state: &str) -> Vec<&'static str> {
    const ALL: &[&str] = &[
        "configured",
        "incomplete",
        "unavailable",
        "provisioning",
        "ready",
        "running",
        "halting",
        "stopping",
        "shutting_down",
        "off",
        "down",
        "installed",
        "stopped",
        "unreachable",
        "destroyed",
        "failed",
        "unknown",
    ];
    ALL.iter()
        .copied()
        .filter(|s| translate_state(s) == cloudapi_state)
        .collect()
}

pub fn deletion_protection(vm: &vmapi::Vm) -> bool {
    vm.internal_metadata
        .get(DELETION_PROTECTION_KEY)
        .is_some_and(|v| v == "true")
}

fn is_hvm(brand: &str) -> bool {
    brand == "kvm" || brand == "bhyve"
}

/// The primary IP: the primary NIC's; else the last NIC on an external tag; else the
/// first NIC's.
pub fn primary_ip(vm: &vmapi::Vm) -> String {
    vm.nics
        .iter()
        .find(|n| n.primary && !n.ip.is_empty())
        .or_else(|| {
            vm.nics
                .iter()
                .rev()
                .find(|n| n.nic_tag == "external" && !n.ip.is_empty())
        })
        .or_else(|| vm.nics.iter().find(|n| !n.ip.is_empty()))
        .map(|n| n.ip.clone())
        .unwrap_or_default()
}

/// A NIC as CloudAPI shows it (`mac` keeps its colons in the body).
pub fn nic_json(n: &vmapi::Nic, vm_state: &str) -> Value {
    let mut o = object!({
        "ip": n.ip,
        "mac": n.mac,
        "primary": n.primary,
        "netmask": n.netmask,
        "state": nic_state(vm_state),
        "network": n.network_uuid,
    });
    put_str(&mut o, "gateway", &n.gateway);
    Value::Object(o)
}

/// A NIC's state as CloudAPI shows it, from its machine's VMAPI state.
pub fn nic_state(vm_state: &str) -> &'static str {
    match translate_state(vm_state) {
        "running" => "running",
        "provisioning" => "provisioning",
        _ => "stopped",
    }
}

/// The machine object. `package` is the PAPI package's name ("" when unknown).
pub fn machine_json(vm: &vmapi::Vm, package: &str) -> Value {
    let kind = if is_hvm(&vm.brand) {
        "virtualmachine"
    } else {
        "smartmachine"
    };
    let ips: Vec<&String> = vm
        .nics
        .iter()
        .filter(|n| !n.ip.is_empty())
        .map(|n| &n.ip)
        .collect();
    let updated = if vm.last_modified.is_empty() {
        &vm.create_timestamp
    } else {
        &vm.last_modified
    };
    let networks: Vec<&String> = vm.nics.iter().map(|n| &n.network_uuid).collect();
    let compute_node = (!vm.server_uuid.is_empty()).then_some(&vm.server_uuid);
    let nics: Vec<Value> = vm.nics.iter().map(|n| nic_json(n, &vm.state)).collect();
    json!({
        "id": vm.uuid,
        "name": vm.alias,
        "type": kind,
        "brand": vm.brand,
        "state": translate_state(&vm.state),
        "image": vm.image_uuid,
        "ips": ips,
        "memory": vm.ram,
        "disk": vm.quota * 1024,
        "deletion_protection": deletion_protection(vm),
        "metadata": vm.customer_metadata,
        "tags": tags_json(&vm.tags),
        "created": vm.create_timestamp,
        "updated": updated,
        "networks": networks,
        "primaryIp": primary_ip(vm),
        "firewall_enabled": vm.firewall_enabled,
        "compute_node": compute_node,
        "package": package,
        "nics": nics,
    })
}

/// An affinity rule, `(instance|container|<tag>)(==|!=|==~|!=~)<value>`, as VMAPI's.
pub fn parse_affinity(rule: &str) -> Result<vmapi::AffinityRule, String> {
    let ops = ["==~", "!=~", "==", "!="];
    let (pos, op) = ops
        .iter()
        .filter_map(|op| rule.find(op).map(|p| (p, *op)))
        .min_by_key(|(p, op)| (*p, std::cmp::Reverse(op.len())))
        .ok_or_else(|| {
            format!("could not find operator in affinity rule {rule:?}: use ==, !=, ==~ or !=~")
        })?;
    let key = rule[..pos].trim();
    let value = rule[pos + op.len()..].trim();
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err(format!("invalid key in affinity rule {rule:?}"));
    }
    if value.is_empty() {
        return Err(format!("invalid value in affinity rule {rule:?}"));
    }
    Ok(vmapi::AffinityRule {
        key: key.to_string(),
        operator: op.trim_end_matches('~').to_string(),
        value: value.to_string(),
        is_soft: op.ends_with('~'),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_translate_as_triton() {
        assert_eq!(translate_state("provisioning"), "provisioning");
        assert_eq!(translate_state("incomplete"), "provisioning");
        assert_eq!(translate_state("shutting_down"), "stopping");
        assert_eq!(translate_state("installed"), "stopped");
        assert_eq!(translate_state("destroyed"), "deleted");
        assert_eq!(translate_state("unreachable"), "offline");
        assert_eq!(translate_state("unknown"), "unknown");
        assert_eq!(translate_state("receiving"), "unknown");
        assert!(vmapi_states("stopped").contains(&"off"));
    }

    #[test]
    fn affinity_rules() {
        for (rule, want) in [
            ("instance!=db*", ("instance", "!=", "db*", false)),
            ("role==~/^web/", ("role", "==", "/^web/", true)),
        ] {
            let r = parse_affinity(rule).unwrap();
            let got = (
                r.key.as_str(),
                r.operator.as_str(),
                r.value.as_str(),
                r.is_soft,
            );
            assert_eq!(got, want, "{rule}");
        }
        assert!(parse_affinity("instance<>x").is_err());
        assert!(parse_affinity("==x").is_err());
    }

    #[test]
    fn machine_object() {
        let vm = vmapi::Vm {
            uuid: "u".into(),
            alias: "web0".into(),
            brand: "lx".into(),
            state: "running".into(),
            quota: 10,
            ram: 1024,
            nics: vec![
                vmapi::Nic {
                    ip: "10.0.0.5".into(),
                    nic_tag: "admin".into(),
                    network_uuid: "n1".into(),
                    ..Default::default()
                },
                vmapi::Nic {
                    ip: "192.168.1.5".into(),
                    nic_tag: "external".into(),
                    network_uuid: "n2".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let m = machine_json(&vm, "g1-small");
        assert_eq!(m["disk"], 10240);
        assert_eq!(m["type"], "smartmachine");
        assert_eq!(m["primaryIp"], "192.168.1.5");
        assert_eq!(m["package"], "g1-small");
        assert_eq!(m["networks"], json!(["n1", "n2"]));
    }
}
