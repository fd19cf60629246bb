//! The naming rules (reference 1.4 to 1.6), as pure functions: from one VM, its owner,
//! the networks its NICs are on and whether its compute node is up, the records it
//! gives in each zone. `build.rs` puts every VM's records together into zones.
//!
//! Names here are fully qualified and lower-case, without the trailing dot.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Tag: the services a VM is in (`web:80,db`).
pub const SERVICES_TAG: &str = "triton.cns.services";
/// Tag: present and not `false`, the VM is listed nowhere.
pub const DISABLE_TAG: &str = "triton.cns.disable";
/// Tag: the PTR target of the VM's addresses (lists its instance names).
pub const PTR_TAG: &str = "triton.cns.reverse_ptr";
/// Docker's form of the tags above: the same key behind this prefix.
pub const DOCKER_PREFIX: &str = "docker:label:";
/// Customer metadata: set and not `up`, the VM leaves its services.
pub const STATUS_KEY: &str = "triton.cns.status";
/// Customer metadata: `_acme-challenge` TXT values, space-separated.
pub const ACME_KEY: &str = "triton.cns.acme-challenge";

/// SRV fields when the tag gives none (Triton's `mname` defaults).
pub const DEFAULT_PRIORITY: u16 = 0;
pub const DEFAULT_WEIGHT: u16 = 10;

/// A tag's value as VMAPI keeps it (strings, booleans, numbers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TagValue {
    Bool(bool),
    Number(f64),
    Text(String),
}

/// What the rules need of a VM.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Vm {
    pub uuid: String,
    pub alias: String,
    pub owner_uuid: String,
    pub state: String,
    pub destroyed: bool,
    pub server_uuid: String,
    pub tags: BTreeMap<String, TagValue>,
    pub customer_metadata: BTreeMap<String, String>,
    pub nics: Vec<Nic>,
}

/// One NIC of a VM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub network_uuid: String,
    /// The address, maybe with `/mask`, or `dhcp`/`addrconf`.
    pub ip: String,
    pub nic_tag: String,
    pub vlan_id: u32,
}

/// What the rules need of an account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub uuid: String,
    pub login: String,
    pub triton_cns_enabled: bool,
    pub approved_for_provisioning: bool,
}

/// What the rules need of a network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub uuid: String,
    pub name: String,
    pub owner_uuids: Vec<String>,
    /// The network pools it is in.
    pub pools: Vec<String>,
}

/// One forward zone's settings, as the rules use them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardZone {
    /// Lower-case, no trailing dot.
    pub name: String,
    /// Network or pool uuids, or `*`.
    pub networks: Vec<String>,
}

impl ForwardZone {
    pub fn is_wildcard(&self) -> bool {
        self.networks.iter().any(|n| n == "*")
    }
}

/// The settings the rules read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub forward_zones: Vec<ForwardZone>,
    pub use_alias: bool,
    pub use_login: bool,
}

/// A record's data.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "UPPERCASE")]
pub enum Data {
    A {
        ip: Ipv4Addr,
    },
    Aaaa {
        ip: Ipv6Addr,
    },
    Txt {
        text: String,
    },
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Cname {
        target: String,
    },
    Ptr {
        target: String,
    },
    Ns {
        target: String,
    },
}

/// One record: its zone, its owner name (fully qualified) and data.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    pub zone: String,
    pub name: String,
    pub data: Data,
}

/// One `triton.cns.services` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    /// Distinct ports, each with its SRV fields, in the order given.
    pub ports: Vec<SrvPort>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SrvPort {
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
}

/// What the rules decided for a VM (reference 1.4) and why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub instance: bool,
    pub services: bool,
    pub reasons: Vec<&'static str>,
    /// The PTR target the `reverse_ptr` tag gives.
    pub ptr_name: Option<String>,
}

/// Everything one VM gives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmRecords {
    pub listing: Listing,
    /// Forward-zone records (A/AAAA, TXT, SRV), without the CMON CNAMEs.
    pub entries: Vec<Entry>,
    /// Candidate PTR targets per address (the shortest across VMs wins, `build.rs`).
    pub ptrs: Vec<(IpAddr, String)>,
    /// The instance's and its services' names (GetVmNames, CloudAPI's `dns_names`).
    pub names: Vec<String>,
    /// Whether the VM is listed at all (it then gets the CMON CNAMEs).
    pub listed: bool,
    /// Why the services tag was ignored, when it was.
    pub invalid_services: Option<String>,
}

/// Triton's `dnsify`: lower-case, and each run of characters outside `[a-z0-9-]` made
/// one `-`.
pub fn dnsify(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_run = false;
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
            out.push(c);
            in_run = false;
        } else if !in_run {
            out.push('-');
            in_run = true;
        }
    }
    out
}

fn is_label_start(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// Parses a `triton.cns.services` tag (reference 1.6):
/// `service := label (":" port)? (":" key "=" value)*`, services separated by `,`.
/// `port=N` is the same as `:N` (the last wins); `priority=` and `weight=` set the SRV
/// fields; other keys are accepted and ignored. Any error rejects the whole tag.
pub fn parse_services(tag: &str) -> Result<Vec<Service>, String> {
    let mut out: Vec<Service> = Vec::new();
    for (i, part) in tag.split(',').enumerate() {
        let part = part.trim();
        let mut fields = part.split(':');
        let label = fields.next().unwrap_or_default();
        let mut chars = label.chars();
        match chars.next() {
            Some(c) if is_label_start(c) => {}
            _ => {
                return Err(format!(
                    "service {}: {label:?} is not a service name",
                    i + 1
                ));
            }
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
            return Err(format!(
                "service {}: {label:?} may hold only letters, digits, '.' and '-'",
                i + 1
            ));
        }
        if label.len() > 63 {
            return Err(format!("service {}: {label:?} is longer than 63", i + 1));
        }
        let mut port = None;
        let mut priority = DEFAULT_PRIORITY;
        let mut weight = DEFAULT_WEIGHT;
        for (j, field) in fields.enumerate() {
            match field.split_once('=') {
                None if j == 0 => port = Some(parse_port(field, label)?),
                None => {
                    return Err(format!(
                        "service {label}: {field:?} is neither a port (first) nor key=value"
                    ));
                }
                Some((key, value)) => {
                    let key_ok = key.starts_with(|c: char| c.is_ascii_lowercase())
                        && key
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                    if !key_ok || value.is_empty() {
                        return Err(format!("service {label}: {field:?} is not key=value"));
                    }
                    match key {
                        "port" => port = Some(parse_port(value, label)?),
                        "priority" => priority = parse_u16(value, label, "priority")?,
                        "weight" => weight = parse_u16(value, label, "weight")?,
                        _ => {}
                    }
                }
            }
        }
        let name = label.to_ascii_lowercase();
        let service = match out.iter_mut().find(|s| s.name == name) {
            Some(s) => s,
            None => {
                out.push(Service {
                    name,
                    ports: Vec::new(),
                });
                let last = out.len() - 1;
                &mut out[last]
            }
        };
        if let Some(port) = port
            && !service.ports.iter().any(|p| p.port == port)
        {
            service.ports.push(SrvPort {
                port,
                priority,
                weight,
            });
        }
    }
    Ok(out)
}

fn parse_port(s: &str, label: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(n) if n > 0 && n < 65536 => Ok(n as u16),
        _ => Err(format!("service {label}: port {s:?} is not 1 to 65535")),
    }
}

fn parse_u16(s: &str, label: &str, key: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .map_err(|_| format!("service {label}: {key} {s:?} is not 0 to 65535"))
}

fn tag<'a>(vm: &'a Vm, key: &str) -> Option<(&'a TagValue, bool)> {
    if let Some(v) = vm.tags.get(key) {
        return Some((v, false));
    }
    vm.tags
        .get(&format!("{DOCKER_PREFIX}{key}"))
        .map(|v| (v, true))
}

fn is_ptr_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            let mut chars = label.chars();
            matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
                && label.len() <= 63
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// The listing decision (reference 1.4, FlagFilter), lowest precedence first.
/// `has_services`: the VM has at least one service (admin and poseidon rule).
pub fn listing(vm: &Vm, owner: Option<&Owner>, cn_up: bool, has_services: bool) -> Listing {
    let mut l = Listing {
        instance: true,
        services: true,
        reasons: Vec::new(),
        ptr_name: None,
    };
    if vm
        .customer_metadata
        .get(STATUS_KEY)
        .is_some_and(|s| s != "up")
    {
        l.services = false;
        l.reasons.push("inst_en_flag");
    } else if !cn_up {
        l.services = false;
        l.reasons.push("cn_down");
    } else if vm.state != "running" {
        l.services = false;
        l.reasons.push("vm_down");
    }
    let services_before_owner = l.services;
    match owner {
        Some(o) if !o.triton_cns_enabled => {
            l.services = false;
            l.instance = false;
            l.reasons.push("user_en_flag");
        }
        Some(o) if !o.approved_for_provisioning => {
            l.services = false;
            l.instance = false;
            l.reasons.push("user_not_approved");
        }
        Some(_) => {}
        None => {
            l.services = false;
            l.instance = false;
            l.reasons.push("no_owner");
        }
    }
    if let Some((TagValue::Text(name), _)) = tag(vm, PTR_TAG)
        && is_ptr_name(name)
    {
        l.instance = true;
        l.reasons.push("ptr");
        l.ptr_name = Some(name.to_ascii_lowercase());
    }
    if let Some(o) = owner
        && (o.login == "admin" || o.login == "poseidon")
        && has_services
    {
        // The operator's own VMs (and each compute node's CMON entry) are listed
        // without the account flag; a stopped one still leaves its services.
        l.instance = true;
        l.services = services_before_owner;
        l.reasons.push("operator");
    }
    let disabled = match tag(vm, DISABLE_TAG) {
        None => false,
        Some((TagValue::Bool(false), _)) => false,
        Some((TagValue::Text(s), true)) if s == "false" => false,
        Some(_) => true,
    };
    if disabled {
        l.services = false;
        l.instance = false;
        l.reasons.push("inst_en_tag");
    } else if vm.destroyed || vm.state == "destroyed" || vm.state == "failed" {
        l.services = false;
        l.instance = false;
        l.reasons.push("destroyed");
    }
    l
}

/// The VM's services: the tag's (an invalid tag gives none, with the reason), plus the
/// implicit ones of admin (`smartdc_role`, not `nat`) and poseidon (`manta_role`
/// `loadbalancer`) VMs.
pub fn services(vm: &Vm, owner: Option<&Owner>) -> (Vec<Service>, Option<String>) {
    let mut invalid = None;
    let mut out = match tag(vm, SERVICES_TAG) {
        None => Vec::new(),
        Some((TagValue::Text(s), _)) => match parse_services(s) {
            Ok(s) => s,
            Err(e) => {
                invalid = Some(e);
                Vec::new()
            }
        },
        Some(_) => {
            invalid = Some(format!("{SERVICES_TAG} must be a string"));
            Vec::new()
        }
    };
    let implicit = |key: &str| match vm.tags.get(key) {
        Some(TagValue::Text(s)) => Some(s.to_ascii_lowercase()),
        _ => None,
    };
    let login = owner.map(|o| o.login.as_str());
    let extra = match login {
        Some("admin") => implicit("smartdc_role").filter(|r| r != "nat"),
        Some("poseidon") => implicit("manta_role").filter(|r| r == "loadbalancer"),
        _ => None,
    };
    if let Some(name) = extra
        && !name.is_empty()
        && !out.iter().any(|s| s.name == name)
    {
        out.push(Service {
            name,
            ports: Vec::new(),
        });
    }
    (out, invalid)
}

/// The forward zones a NIC's addresses go in (reference 1.5, NetFilter): never admin
/// NICs; the zones naming its network or a pool it is in, else every wildcard zone.
pub fn nic_zones<'a>(rules: &'a Rules, nic: &Nic, network: Option<&Network>) -> Vec<&'a str> {
    if nic.nic_tag == "admin" && nic.vlan_id == 0 {
        return Vec::new();
    }
    let pools: &[String] = network.map(|n| n.pools.as_slice()).unwrap_or(&[]);
    let explicit: Vec<&str> = rules
        .forward_zones
        .iter()
        .filter(|z| {
            z.networks
                .iter()
                .any(|n| *n == nic.network_uuid || pools.contains(n))
        })
        .map(|z| z.name.as_str())
        .collect();
    if !explicit.is_empty() {
        return explicit;
    }
    rules
        .forward_zones
        .iter()
        .filter(|z| z.is_wildcard())
        .map(|z| z.name.as_str())
        .collect()
}

/// The address of a NIC's `ip` (mask stripped); `None` for `dhcp`, `addrconf` or junk.
pub fn nic_ip(ip: &str) -> Option<IpAddr> {
    ip.split('/').next().and_then(|s| s.parse().ok())
}

/// The reverse zone and the owner name of `ip`'s PTR (reference 1.6): a /24 for IPv4,
/// a /64 for IPv6.
pub fn reverse(ip: IpAddr) -> (String, String) {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            let zone = format!("{c}.{b}.{a}.in-addr.arpa");
            (zone.clone(), format!("{d}.{zone}"))
        }
        IpAddr::V6(v6) => {
            let nibbles: Vec<String> = v6
                .octets()
                .iter()
                .flat_map(|b| [b >> 4, b & 0xf])
                .map(|n| format!("{n:x}"))
                .collect();
            let rev = |s: &[String]| s.iter().rev().cloned().collect::<Vec<_>>().join(".");
            let zone = format!("{}.ip6.arpa", rev(&nibbles[..16]));
            (zone.clone(), format!("{}.{zone}", rev(&nibbles[16..])))
        }
    }
}

fn usable(s: &str) -> bool {
    !s.is_empty() && s.len() < 63
}

/// The instance name labels (before `.<zone>`), in Triton's order, and the primary one
/// (the friendliest: alias+login > alias+uuid > uuid+login > uuid+uuid).
fn instance_labels(vm: &Vm, owner: &Owner, rules: &Rules) -> (Vec<String>, String) {
    let v = vm.uuid.to_ascii_lowercase();
    let u = owner.uuid.to_ascii_lowercase();
    let login = rules.use_login && usable(&owner.login);
    let alias = rules.use_alias && usable(&vm.alias);
    let l = dnsify(&owner.login);
    let a = dnsify(&vm.alias);
    let mut names = vec![format!("{v}.inst.{u}")];
    if login {
        names.push(format!("{v}.inst.{l}"));
    }
    if alias {
        names.push(format!("{a}.inst.{u}"));
    }
    if login && alias {
        names.push(format!("{a}.inst.{l}"));
    }
    let primary = names.last().cloned().unwrap_or_default();
    (names, primary)
}

/// The entries and names of one VM, as they are gathered.
#[derive(Default)]
struct Gathered {
    entries: BTreeSet<Entry>,
    names: BTreeSet<String>,
}

impl Gathered {
    fn add(&mut self, zone: &str, name: String, data: Data) {
        self.entries.insert(Entry {
            zone: zone.to_string(),
            name,
            data,
        });
    }

    /// `name` is listed: it, and the TXT of each ACME challenge token beside it.
    fn name(&mut self, zone: &str, name: String, acme: &[&str]) {
        for token in acme {
            let text = token.to_string();
            self.add(zone, format!("_acme-challenge.{name}"), Data::Txt { text });
        }
        self.names.insert(name);
    }
}

/// Every record `vm` gives (reference 1.6), but the CMON CNAMEs and NS/SOA.
pub fn vm_records(
    rules: &Rules,
    vm: &Vm,
    owner: Option<&Owner>,
    networks: &BTreeMap<String, Network>,
    cn_up: bool,
) -> VmRecords {
    let (services, invalid_services) = services(vm, owner);
    let listing = listing(vm, owner, cn_up, !services.is_empty());
    let mut out = VmRecords {
        listed: listing.instance || listing.services,
        invalid_services,
        ..VmRecords::default()
    };
    let Some(owner) = owner.filter(|_| out.listed) else {
        out.listing = listing;
        return out;
    };
    let (labels, primary) = instance_labels(vm, owner, rules);
    let v = vm.uuid.to_ascii_lowercase();
    let u = owner.uuid.to_ascii_lowercase();
    let login_ok = rules.use_login && usable(&owner.login);
    let l = dnsify(&owner.login);
    let acme: Vec<&str> = vm
        .customer_metadata
        .get(ACME_KEY)
        .map(|s| s.split_whitespace().collect())
        .unwrap_or_default();
    let mut got = Gathered::default();
    let mut ptrs: BTreeMap<IpAddr, String> = BTreeMap::new();
    for nic in &vm.nics {
        let Some(ip) = nic_ip(&nic.ip) else { continue };
        let network = networks.get(&nic.network_uuid);
        let address = match ip {
            IpAddr::V4(ip) => Data::A { ip },
            IpAddr::V6(ip) => Data::Aaaa { ip },
        };
        for zone in nic_zones(rules, nic, network) {
            let wildcard = rules
                .forward_zones
                .iter()
                .any(|z| z.name == zone && z.is_wildcard());
            // Fabric-style networks: the names again behind the network's name.
            let prefix = network
                .filter(|n| wildcard && n.owner_uuids.iter().any(|o| o.eq_ignore_ascii_case(&u)))
                .map(|n| dnsify(&n.name));
            let with_prefix = |label: &str| -> Vec<String> {
                let mut v = vec![format!("{label}.{zone}")];
                if let Some(p) = &prefix {
                    v.push(format!("{p}.{label}.{zone}"));
                }
                v
            };
            if listing.instance {
                for label in &labels {
                    for name in with_prefix(label) {
                        got.add(zone, name.clone(), address.clone());
                        got.add(zone, name.clone(), Data::Txt { text: v.clone() });
                        got.name(zone, name, &acme);
                    }
                }
                let target = listing
                    .ptr_name
                    .clone()
                    .unwrap_or_else(|| format!("{primary}.{zone}"));
                let shorter = ptrs.get(&ip).is_none_or(|t| shortest(&target, t));
                if shorter {
                    ptrs.insert(ip, target);
                }
            }
            let target = format!("{primary}.{zone}");
            for service in &services {
                let mut svc_labels = vec![format!("{}.svc.{u}", service.name)];
                if login_ok {
                    svc_labels.push(format!("{}.svc.{l}", service.name));
                }
                let mut svc_names: Vec<String> =
                    svc_labels.iter().flat_map(|s| with_prefix(s)).collect();
                if owner.login == "admin" {
                    svc_names.push(format!("{}.{zone}", service.name));
                }
                for name in svc_names {
                    if listing.services {
                        got.add(zone, name.clone(), address.clone());
                        got.add(zone, name.clone(), Data::Txt { text: v.clone() });
                        for p in &service.ports {
                            got.add(
                                zone,
                                name.clone(),
                                Data::Srv {
                                    priority: p.priority,
                                    weight: p.weight,
                                    port: p.port,
                                    target: target.clone(),
                                },
                            );
                        }
                    } else {
                        got.add(
                            zone,
                            name.clone(),
                            Data::Txt {
                                text: format!("verifying:{v}"),
                            },
                        );
                    }
                    got.name(zone, name, &acme);
                }
            }
        }
    }
    out.listing = listing;
    out.entries = got.entries.into_iter().collect();
    out.names = got.names.into_iter().collect();
    out.ptrs = ptrs.into_iter().collect();
    out
}

/// Whether PTR target `a` beats `b`: shorter, or as long and first in order (so the
/// choice does not depend on the order VMs are seen in).
pub fn shortest(a: &str, b: &str) -> bool {
    (a.len(), a) < (b.len(), b)
}

/// The resolv.conf search suffixes for an instance of `owner` on `networks` (reference
/// 1.11, SuffixesForVM): `svc.<U or login>.<Z>` and `inst.<...>.<Z>` per zone its NICs
/// would be in.
pub fn suffixes_for_vm(
    rules: &Rules,
    owner: &Owner,
    networks: &[String],
    known: &BTreeMap<String, Network>,
) -> Vec<String> {
    let who = if rules.use_login && usable(&owner.login) {
        dnsify(&owner.login)
    } else {
        owner.uuid.to_ascii_lowercase()
    };
    let mut out: Vec<String> = Vec::new();
    for network in networks {
        let nic = Nic {
            network_uuid: network.clone(),
            ip: String::new(),
            nic_tag: String::new(),
            vlan_id: 0,
        };
        for zone in nic_zones(rules, &nic, known.get(network)) {
            for kind in ["svc", "inst"] {
                let s = format!("{kind}.{who}.{zone}");
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: &str = "6ee7d1a4-4f8e-4c2a-9d5e-2f1e7a3b9c01";
    const U: &str = "930896af-bf8c-48d4-885c-6573a94b1853";
    const NET: &str = "a3f1c2d4-0000-4000-8000-000000000001";
    const FABRIC: &str = "a3f1c2d4-0000-4000-8000-000000000002";
    const Z: &str = "pub.example.com";
    const W: &str = "priv.example.com";

    fn rules(use_alias: bool, use_login: bool) -> Rules {
        Rules {
            forward_zones: vec![
                ForwardZone {
                    name: Z.into(),
                    networks: vec![NET.into()],
                },
                ForwardZone {
                    name: W.into(),
                    networks: vec!["*".into()],
                },
            ],
            use_alias,
            use_login,
        }
    }

    fn owner() -> Owner {
        Owner {
            uuid: U.into(),
            login: "Jill.Smith".into(),
            triton_cns_enabled: true,
            approved_for_provisioning: true,
        }
    }

    fn vm() -> Vm {
        Vm {
            uuid: V.into(),
            alias: "Web 1".into(),
            owner_uuid: U.into(),
            state: "running".into(),
            nics: vec![Nic {
                network_uuid: NET.into(),
                ip: "203.0.113.7/24".into(),
                nic_tag: "external".into(),
                vlan_id: 0,
            }],
            ..Vm::default()
        }
    }

    fn networks() -> BTreeMap<String, Network> {
        [
            Network {
                uuid: NET.into(),
                name: "external".into(),
                owner_uuids: vec![],
                pools: vec![],
            },
            Network {
                uuid: FABRIC.into(),
                name: "My Fabric".into(),
                owner_uuids: vec![U.into()],
                pools: vec![],
            },
        ]
        .into_iter()
        .map(|n| (n.uuid.clone(), n))
        .collect()
    }

    fn text(e: &Entry) -> String {
        let d = match &e.data {
            Data::A { ip } => format!("A {ip}"),
            Data::Aaaa { ip } => format!("AAAA {ip}"),
            Data::Txt { text } => format!("TXT {text}"),
            Data::Srv {
                priority,
                weight,
                port,
                target,
            } => format!("SRV {priority} {weight} {port} {target}"),
            Data::Cname { target } => format!("CNAME {target}"),
            Data::Ptr { target } => format!("PTR {target}"),
            Data::Ns { target } => format!("NS {target}"),
        };
        format!("{} {d}", e.name)
    }

    fn texts(r: &VmRecords) -> BTreeSet<String> {
        r.entries.iter().map(text).collect()
    }

    #[test]
    fn dnsify_lowercases_and_joins_runs() {
        assert_eq!(dnsify("Web 1"), "web-1");
        assert_eq!(dnsify("a__b..c"), "a-b-c");
        assert_eq!(dnsify("Jill.Smith"), "jill-smith");
        assert_eq!(dnsify("ok-name9"), "ok-name9");
    }

    #[test]
    fn service_tags_parse_as_the_grammar_says() {
        let s = parse_services("web:80,Web:443:priority=5:weight=20, db ,dns:port=53:port=5353")
            .unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "web");
        assert_eq!(
            s[0].ports,
            vec![
                SrvPort {
                    port: 80,
                    priority: 0,
                    weight: 10
                },
                SrvPort {
                    port: 443,
                    priority: 5,
                    weight: 20
                }
            ]
        );
        assert_eq!(s[1].name, "db");
        assert!(s[1].ports.is_empty());
        assert_eq!(s[2].ports[0].port, 5353, "the last port= wins");
        assert_eq!(parse_services("a.b-c:1").unwrap()[0].name, "a.b-c");
        // A repeated label and port gives one SRV.
        assert_eq!(parse_services("web:80,web:80").unwrap()[0].ports.len(), 1);
        for bad in [
            "",
            "web,",
            "-web",
            "we_b",
            "web:0",
            "web:65536",
            "web:x",
            "web:80:Key=1",
            "web:80:k=",
            "web:80:90",
            "web:priority=-1",
            "web:weight=70000",
        ] {
            assert!(parse_services(bad).is_err(), "{bad:?} must be refused");
        }
        let long = "a".repeat(64);
        assert!(parse_services(&long).is_err());
    }

    #[test]
    fn instance_names_follow_use_alias_and_use_login() {
        let nets = networks();
        let r = vm_records(&rules(false, false), &vm(), Some(&owner()), &nets, true);
        assert_eq!(
            texts(&r),
            [
                format!("{V}.inst.{U}.{Z} A 203.0.113.7"),
                format!("{V}.inst.{U}.{Z} TXT {V}"),
            ]
            .into_iter()
            .collect()
        );
        assert_eq!(r.names, vec![format!("{V}.inst.{U}.{Z}")]);
        assert_eq!(
            r.ptrs,
            vec![("203.0.113.7".parse().unwrap(), format!("{V}.inst.{U}.{Z}"))]
        );

        let r = vm_records(&rules(true, true), &vm(), Some(&owner()), &nets, true);
        let names: Vec<String> = r.names.clone();
        assert_eq!(
            names,
            vec![
                format!("{V}.inst.{U}.{Z}"),
                format!("{V}.inst.jill-smith.{Z}"),
                format!("web-1.inst.{U}.{Z}"),
                format!("web-1.inst.jill-smith.{Z}"),
            ]
        );
        // The PTR points at the friendliest name.
        assert_eq!(r.ptrs[0].1, format!("web-1.inst.jill-smith.{Z}"));

        // An alias of 63 characters or more is not used.
        let mut long = vm();
        long.alias = "x".repeat(63);
        let r = vm_records(&rules(true, false), &long, Some(&owner()), &nets, true);
        assert_eq!(r.names, vec![format!("{V}.inst.{U}.{Z}")]);
    }

    #[test]
    fn services_give_a_txt_and_srv_per_port_and_verifying_when_down() {
        let nets = networks();
        let mut v = vm();
        v.tags.insert(
            SERVICES_TAG.into(),
            TagValue::Text("web:80,web:8080:priority=1:weight=5".into()),
        );
        let r = vm_records(&rules(true, false), &v, Some(&owner()), &nets, true);
        let t = texts(&r);
        let svc = format!("web.svc.{U}.{Z}");
        let target = format!("web-1.inst.{U}.{Z}");
        for want in [
            format!("{svc} A 203.0.113.7"),
            format!("{svc} TXT {V}"),
            format!("{svc} SRV 0 10 80 {target}"),
            format!("{svc} SRV 1 5 8080 {target}"),
        ] {
            assert!(t.contains(&want), "{want} missing from {t:#?}");
        }
        assert!(r.names.contains(&svc));

        // Stopped: the instance keeps its names, the service only its TXT.
        v.state = "stopped".into();
        let r = vm_records(&rules(true, false), &v, Some(&owner()), &nets, true);
        let t = texts(&r);
        assert!(t.contains(&format!("{svc} TXT verifying:{V}")));
        assert!(!t.contains(&format!("{svc} A 203.0.113.7")));
        assert!(!t.iter().any(|e| e.contains(" SRV ")));
        assert!(t.contains(&format!("{target} A 203.0.113.7")));
        assert_eq!(r.listing.reasons, vec!["vm_down"]);

        // CN down and the status metadata do the same.
        v.state = "running".into();
        let r = vm_records(&rules(true, false), &v, Some(&owner()), &nets, false);
        assert_eq!(r.listing.reasons, vec!["cn_down"]);
        assert!(!r.listing.services && r.listing.instance);
        v.customer_metadata.insert(STATUS_KEY.into(), "down".into());
        let r = vm_records(&rules(true, false), &v, Some(&owner()), &nets, true);
        assert_eq!(r.listing.reasons, vec!["inst_en_flag"]);
        v.customer_metadata.insert(STATUS_KEY.into(), "up".into());
        assert!(listing(&v, Some(&owner()), true, true).services);
    }

    #[test]
    fn an_invalid_services_tag_is_ignored_with_its_reason() {
        let mut v = vm();
        v.tags
            .insert(SERVICES_TAG.into(), TagValue::Text("web:99999".into()));
        let r = vm_records(&rules(false, false), &v, Some(&owner()), &networks(), true);
        assert!(r.invalid_services.as_ref().unwrap().contains("port"));
        assert!(!texts(&r).iter().any(|t| t.contains(".svc.")));
        assert!(r.listing.instance);
        v.tags.insert(SERVICES_TAG.into(), TagValue::Bool(true));
        let r = vm_records(&rules(false, false), &v, Some(&owner()), &networks(), true);
        assert!(r.invalid_services.is_some());
    }

    #[test]
    fn flag_precedence() {
        let mut o = owner();
        let v = vm();
        o.triton_cns_enabled = false;
        let l = listing(&v, Some(&o), true, false);
        assert!(!l.instance && !l.services);
        assert_eq!(l.reasons, vec!["user_en_flag"]);
        o.triton_cns_enabled = true;
        o.approved_for_provisioning = false;
        assert_eq!(
            listing(&v, Some(&o), true, false).reasons,
            vec!["user_not_approved"]
        );
        // The PTR tag lists the instance even without the account flag.
        o.triton_cns_enabled = false;
        let mut p = v.clone();
        p.tags
            .insert(PTR_TAG.into(), TagValue::Text("Mail.Example.com".into()));
        let l = listing(&p, Some(&o), true, false);
        assert!(l.instance && !l.services);
        assert_eq!(l.ptr_name.as_deref(), Some("mail.example.com"));
        // A PTR tag that is no host name is not.
        p.tags
            .insert(PTR_TAG.into(), TagValue::Text("bad_name".into()));
        assert!(!listing(&p, Some(&o), true, false).instance);
        // The disable tag beats everything; `false` (and the docker form's "false")
        // does not disable.
        let o = owner();
        let mut d = v.clone();
        d.tags.insert(DISABLE_TAG.into(), TagValue::Bool(true));
        assert_eq!(
            listing(&d, Some(&o), true, false).reasons,
            vec!["inst_en_tag"]
        );
        d.tags
            .insert(DISABLE_TAG.into(), TagValue::Text("yes".into()));
        assert!(!listing(&d, Some(&o), true, false).instance);
        d.tags.insert(DISABLE_TAG.into(), TagValue::Bool(false));
        assert!(listing(&d, Some(&o), true, false).instance);
        let mut k = v.clone();
        k.tags.insert(
            format!("{DOCKER_PREFIX}{DISABLE_TAG}"),
            TagValue::Text("false".into()),
        );
        assert!(listing(&k, Some(&o), true, false).instance);
        k.tags.insert(
            format!("{DOCKER_PREFIX}{DISABLE_TAG}"),
            TagValue::Text("true".into()),
        );
        assert!(!listing(&k, Some(&o), true, false).instance);
        // Destroyed and failed VMs are listed nowhere.
        for state in ["destroyed", "failed"] {
            let mut f = v.clone();
            f.state = state.into();
            assert!(!listing(&f, Some(&o), true, false).instance, "{state}");
        }
        // The operator's VMs with a service are listed without the flag.
        let admin = Owner {
            login: "admin".into(),
            triton_cns_enabled: false,
            ..owner()
        };
        let l = listing(&v, Some(&admin), true, true);
        assert!(l.instance && l.services);
        assert!(!listing(&v, Some(&admin), true, false).instance);
        // No known owner: nothing.
        assert!(!listing(&v, None, true, false).instance);
    }

    #[test]
    fn admin_vms_get_their_role_as_a_service_and_the_bare_name() {
        let admin = Owner {
            uuid: U.into(),
            login: "admin".into(),
            triton_cns_enabled: false,
            approved_for_provisioning: true,
        };
        let mut v = vm();
        v.alias = String::new();
        v.tags
            .insert("smartdc_role".into(), TagValue::Text("CloudAPI".into()));
        let r = vm_records(&rules(true, false), &v, Some(&admin), &networks(), true);
        let t = texts(&r);
        assert!(t.contains(&format!("cloudapi.{Z} A 203.0.113.7")), "{t:#?}");
        assert!(t.contains(&format!("cloudapi.svc.{U}.{Z} A 203.0.113.7")));
        v.tags
            .insert("smartdc_role".into(), TagValue::Text("nat".into()));
        let r = vm_records(&rules(true, false), &v, Some(&admin), &networks(), true);
        assert!(!r.listed);
    }

    #[test]
    fn nics_choose_zones_and_admin_nics_are_never_used() {
        let r = rules(false, false);
        let nets = networks();
        let nic = |network: &str, tag: &str, vlan: u32| Nic {
            network_uuid: network.into(),
            ip: "10.0.0.5".into(),
            nic_tag: tag.into(),
            vlan_id: vlan,
        };
        assert_eq!(
            nic_zones(&r, &nic(NET, "external", 0), nets.get(NET)),
            vec![Z]
        );
        assert_eq!(
            nic_zones(&r, &nic(FABRIC, "sdc_overlay", 0), nets.get(FABRIC)),
            vec![W]
        );
        assert!(nic_zones(&r, &nic(NET, "admin", 0), None).is_empty());
        assert_eq!(nic_zones(&r, &nic(NET, "admin", 5), None), vec![Z]);
        // A pool in a zone's networks takes its member networks.
        let pooled = Network {
            uuid: "p1-net".into(),
            name: "p".into(),
            owner_uuids: vec![],
            pools: vec!["pool-1".into()],
        };
        let mut pr = r.clone();
        pr.forward_zones[0].networks = vec!["pool-1".into()];
        assert_eq!(
            nic_zones(&pr, &nic("p1-net", "x", 0), Some(&pooled)),
            vec![Z]
        );
        assert_eq!(nic_ip("10.1.2.3/24"), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(nic_ip("dhcp"), None);
        assert_eq!(nic_ip("addrconf"), None);
    }

    #[test]
    fn fabric_networks_owned_by_the_owner_get_prefixed_names_in_wildcard_zones() {
        let mut v = vm();
        v.nics = vec![Nic {
            network_uuid: FABRIC.into(),
            ip: "192.168.128.5".into(),
            nic_tag: "sdc_overlay".into(),
            vlan_id: 2,
        }];
        v.tags
            .insert(SERVICES_TAG.into(), TagValue::Text("db".into()));
        let r = vm_records(&rules(false, false), &v, Some(&owner()), &networks(), true);
        let t = texts(&r);
        for want in [
            format!("{V}.inst.{U}.{W} A 192.168.128.5"),
            format!("my-fabric.{V}.inst.{U}.{W} A 192.168.128.5"),
            format!("db.svc.{U}.{W} A 192.168.128.5"),
            format!("my-fabric.db.svc.{U}.{W} A 192.168.128.5"),
        ] {
            assert!(t.contains(&want), "{want} missing from {t:#?}");
        }
    }

    #[test]
    fn acme_challenge_gives_one_txt_per_token() {
        let mut v = vm();
        v.customer_metadata
            .insert(ACME_KEY.into(), "tok1  tok2".into());
        let r = vm_records(&rules(false, false), &v, Some(&owner()), &networks(), true);
        let t = texts(&r);
        let name = format!("_acme-challenge.{V}.inst.{U}.{Z}");
        assert!(t.contains(&format!("{name} TXT tok1")));
        assert!(t.contains(&format!("{name} TXT tok2")));
        assert!(!r.names.iter().any(|n| n.starts_with("_acme")));
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse("203.0.113.7".parse().unwrap()),
            (
                "113.0.203.in-addr.arpa".into(),
                "7.113.0.203.in-addr.arpa".into()
            )
        );
        let (zone, name) = reverse("2001:db8::1".parse().unwrap());
        assert_eq!(zone, "0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
        assert_eq!(name, format!("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.{zone}"));
        assert!(shortest("a.b", "aa.b"));
        assert!(shortest("a.b", "c.b"));
    }

    #[test]
    fn ptr_tag_sets_the_target() {
        let mut v = vm();
        v.tags
            .insert(PTR_TAG.into(), TagValue::Text("mail.example.com".into()));
        let r = vm_records(&rules(true, true), &v, Some(&owner()), &networks(), true);
        assert_eq!(r.ptrs[0].1, "mail.example.com");
    }

    #[test]
    fn suffixes_per_zone() {
        let r = rules(false, true);
        let s = suffixes_for_vm(&r, &owner(), &[NET.into(), FABRIC.into()], &networks());
        assert_eq!(
            s,
            vec![
                format!("svc.jill-smith.{Z}"),
                format!("inst.jill-smith.{Z}"),
                format!("svc.jill-smith.{W}"),
                format!("inst.jill-smith.{W}"),
            ]
        );
    }
}
