//! Every zone's records from what the followers hold: each VM's records by the naming
//! rules (`names.rs`), the PTRs (the shortest target per address), the CMON names, and
//! each zone's NS set and SOA fields (reference 1.7).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::Settings;
use crate::names::{self, Data};

/// A compute node booted less than this long ago counts as down (reference 1.3).
pub const BOOT_GRACE: Duration = Duration::from_secs(120);

/// What CNS keeps of a compute node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Server {
    pub uuid: String,
    pub hostname: String,
    pub setup: bool,
    /// CNAPI's status: `running`, or `unknown` once its heartbeats stopped (CNAPI's
    /// lifetime, 11 s by default).
    pub status: String,
    /// Whether CNAPI has had a heartbeat from it at all.
    pub heartbeat: bool,
    /// When it last booted (ms since the epoch), if known.
    pub last_boot_ms: Option<u64>,
}

impl Server {
    /// Up: set up, heard from, `running`, and booted at least [`BOOT_GRACE`] ago. When
    /// the boot grace is what keeps it down, the second gives when that ends.
    pub fn up(&self, now: SystemTime) -> (bool, Option<SystemTime>) {
        if !self.setup || !self.heartbeat || self.status != "running" {
            return (false, None);
        }
        if let Some(boot) = self.last_boot_ms {
            let until = UNIX_EPOCH + Duration::from_millis(boot) + BOOT_GRACE;
            if until > now {
                return (false, Some(until));
            }
        }
        (true, None)
    }
}

/// What the followers hold.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    pub vms: BTreeMap<String, names::Vm>,
    pub owners: BTreeMap<String, names::Owner>,
    pub networks: BTreeMap<String, names::Network>,
    /// network uuid -> the pools it is in.
    pub pools: BTreeMap<String, Vec<String>>,
    pub servers: BTreeMap<String, Server>,
}

/// CMon's names (config `cmon_suffix_label`, `cmon_address`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cmon {
    pub label: String,
    pub address: Option<IpAddr>,
}

/// One zone as built: SOA fields and records (name, data).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuiltZone {
    pub mname: String,
    pub rname: String,
    pub records: BTreeSet<(String, Data)>,
}

/// Every zone, and what GetVmNames answers.
#[derive(Clone, Debug, Default)]
pub struct Built {
    pub zones: BTreeMap<String, BuiltZone>,
    /// vm uuid -> its names.
    pub vm_names: BTreeMap<String, Vec<String>>,
    /// VMs whose services tag was ignored, and why.
    pub invalid_services: BTreeMap<String, String>,
    /// The next time a compute node's boot grace ends (a rebuild is due then).
    pub wake_at: Option<SystemTime>,
}

fn zone_head(my_name: &str, hostmaster: &str, peers: &[String], hidden: bool) -> BuiltZone {
    let mname = match (hidden, peers.first()) {
        (true, Some(first)) => first.clone(),
        _ => my_name.to_string(),
    };
    BuiltZone {
        mname,
        rname: hostmaster.replacen('@', ".", 1),
        records: BTreeSet::new(),
    }
}

fn ns_set(zone: &str, my_name: &str, peers: &[String], hidden: bool) -> Vec<(String, Data)> {
    let mut out = Vec::new();
    if !hidden {
        out.push((
            zone.to_string(),
            Data::Ns {
                target: my_name.to_string(),
            },
        ));
    }
    for p in peers {
        out.push((zone.to_string(), Data::Ns { target: p.clone() }));
    }
    out
}

/// Builds every zone from `inputs` under `settings` at `now`.
pub fn build(settings: &Settings, cmon: &Cmon, inputs: &Inputs, now: SystemTime) -> Built {
    let rules = settings.rules();
    let mut built = Built::default();
    for (name, z) in &settings.forward_zones {
        let mut zone = zone_head(
            &settings.my_name,
            &settings.hostmaster,
            &z.peers,
            z.hidden_primary,
        );
        zone.records
            .extend(ns_set(name, &settings.my_name, &z.peers, z.hidden_primary));
        if let Some(address) = cmon.address {
            let data = match address {
                IpAddr::V4(ip) => Data::A { ip },
                IpAddr::V6(ip) => Data::Aaaa { ip },
            };
            zone.records
                .insert((format!("{}.{name}", cmon.label), data));
        }
        built.zones.insert(name.clone(), zone);
    }
    let cmon_cname = |built: &mut Built, uuid: &str| {
        for (name, zone) in built.zones.iter_mut() {
            if settings.forward_zones.contains_key(name) {
                zone.records.insert((
                    format!("{}.{}.{name}", uuid.to_ascii_lowercase(), cmon.label),
                    Data::Cname {
                        target: format!("{}.{name}", cmon.label),
                    },
                ));
            }
        }
    };
    let mut up = BTreeMap::new();
    for (uuid, server) in &inputs.servers {
        let (is_up, until) = server.up(now);
        up.insert(uuid.as_str(), is_up);
        if let Some(until) = until {
            built.wake_at = Some(built.wake_at.map_or(until, |w| w.min(until)));
        }
        if server.setup {
            cmon_cname(&mut built, uuid);
        }
    }
    let networks: BTreeMap<String, names::Network> = inputs
        .networks
        .iter()
        .map(|(uuid, n)| {
            let mut n = n.clone();
            n.pools = inputs.pools.get(uuid).cloned().unwrap_or_default();
            (uuid.clone(), n)
        })
        .collect();
    let mut ptrs: BTreeMap<IpAddr, String> = BTreeMap::new();
    for (uuid, vm) in &inputs.vms {
        let owner = inputs.owners.get(&vm.owner_uuid);
        let cn_up = up.get(vm.server_uuid.as_str()).copied().unwrap_or(false);
        let r = names::vm_records(&rules, vm, owner, &networks, cn_up);
        if let Some(reason) = r.invalid_services {
            built.invalid_services.insert(uuid.clone(), reason);
        }
        if !r.listed {
            continue;
        }
        for e in r.entries {
            if let Some(zone) = built.zones.get_mut(&e.zone) {
                zone.records.insert((e.name, e.data));
            }
        }
        for (ip, target) in r.ptrs {
            if ptrs.get(&ip).is_none_or(|t| names::shortest(&target, t)) {
                ptrs.insert(ip, target);
            }
        }
        cmon_cname(&mut built, uuid);
        if !r.names.is_empty() {
            built.vm_names.insert(uuid.clone(), r.names);
        }
    }
    for (ip, target) in ptrs {
        let (zone, name) = names::reverse(ip);
        let entry = built
            .zones
            .entry(zone.clone())
            .or_insert_with(|| empty_reverse(settings, &zone));
        entry.records.insert((name, Data::Ptr { target }));
    }
    built
}

/// An empty reverse zone (one CNS served before, whose last PTR went): kept, with its
/// NS set, as Triton keeps it.
pub fn empty_reverse(settings: &Settings, zone: &str) -> BuiltZone {
    let reverse = &settings.reverse_zones;
    let mut z = zone_head(
        &settings.my_name,
        &settings.hostmaster,
        &reverse.peers,
        reverse.hidden_primary,
    );
    z.records.extend(ns_set(
        zone,
        &settings.my_name,
        &reverse.peers,
        reverse.hidden_primary,
    ));
    z
}

/// Triton's serial for `now` (reference 1.8): minutes and tens of seconds since 1900,
/// month counted from 0 as JavaScript's `getUTCMonth`.
pub fn time_serial(now: SystemTime) -> u32 {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = triton_common::time::civil_from_days(days);
    let (h, min, s) = (rem / 3600, (rem / 60) % 60, rem % 60);
    let serial =
        ((((((y - 1900) as u64 * 12 + u64::from(m - 1)) * 31 + u64::from(d - 1)) * 24 + h) * 60
            + min)
            * 6)
            + s / 10;
    u32::try_from(serial).unwrap_or(u32::MAX)
}

/// The serial after `current`: the time serial, but never lower than `current + 1`.
pub fn next_serial(current: Option<u32>, now: SystemTime) -> u32 {
    let t = time_serial(now);
    match current {
        Some(c) => t.max(c.saturating_add(1)),
        None => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ForwardZone;

    #[test]
    fn serials_follow_time_and_only_grow() {
        // 2026-01-01T00:00:25Z
        let t = UNIX_EPOCH + Duration::from_secs(1_767_225_625);
        let s = time_serial(t);
        assert_eq!(s, ((((126 * 12) * 31) * 24) * 60) * 6 + 2);
        assert_eq!(time_serial(t + Duration::from_secs(10)), s + 1);
        assert_eq!(next_serial(Some(s + 50), t), s + 51);
        assert_eq!(next_serial(Some(s - 5), t), s);
        assert_eq!(next_serial(None, t), s);
    }

    #[test]
    fn zones_get_ns_soa_cmon_and_ptrs() {
        let settings = Settings {
            forward_zones: [
                (
                    "a.example".to_string(),
                    ForwardZone {
                        networks: vec!["*".into()],
                        peers: vec!["ns2.example".into()],
                        hidden_primary: false,
                    },
                ),
                (
                    "b.example".to_string(),
                    ForwardZone {
                        networks: vec!["*".into()],
                        peers: vec!["ns3.example".into()],
                        hidden_primary: true,
                    },
                ),
            ]
            .into_iter()
            .collect(),
            ..Settings::default()
        };
        let cmon = Cmon {
            label: "cmon".into(),
            address: Some("10.0.0.9".parse().unwrap()),
        };
        let mut inputs = Inputs::default();
        let owner = names::Owner {
            uuid: "u1".into(),
            login: "jo".into(),
            triton_cns_enabled: true,
            approved_for_provisioning: true,
        };
        inputs.owners.insert("u1".into(), owner);
        inputs.servers.insert(
            "cn1".into(),
            Server {
                uuid: "cn1".into(),
                hostname: "h".into(),
                setup: true,
                status: "running".into(),
                heartbeat: true,
                last_boot_ms: Some(0),
            },
        );
        let vm = |uuid: &str, alias: &str| names::Vm {
            uuid: uuid.into(),
            alias: alias.into(),
            owner_uuid: "u1".into(),
            state: "running".into(),
            server_uuid: "cn1".into(),
            nics: vec![names::Nic {
                network_uuid: "n1".into(),
                ip: "10.1.2.3".into(),
                nic_tag: "external".into(),
                vlan_id: 0,
            }],
            ..names::Vm::default()
        };
        // Two VMs claim one address: the shorter PTR target wins.
        inputs.vms.insert("v1".into(), vm("v1", "longer-alias"));
        inputs.vms.insert("v2".into(), vm("v2", "web"));
        let built = build(&settings, &cmon, &inputs, SystemTime::now());
        let a = &built.zones["a.example"];
        assert_eq!(a.mname, "cns.coal.triton.local");
        assert_eq!(a.rname, "hostmaster.triton.local");
        assert!(a.records.contains(&(
            "a.example".into(),
            Data::Ns {
                target: "cns.coal.triton.local".into()
            }
        )));
        assert!(a.records.contains(&(
            "cmon.a.example".into(),
            Data::A {
                ip: "10.0.0.9".parse().unwrap()
            }
        )));
        for uuid in ["v1", "v2", "cn1"] {
            assert!(a.records.contains(&(
                format!("{uuid}.cmon.a.example"),
                Data::Cname {
                    target: "cmon.a.example".into()
                }
            )));
        }
        let b = &built.zones["b.example"];
        assert_eq!(b.mname, "ns3.example");
        let ns: Vec<_> = b
            .records
            .iter()
            .filter(|(_, d)| matches!(d, Data::Ns { .. }))
            .collect();
        assert_eq!(ns.len(), 1, "a hidden primary is not in its NS set");
        let rev = &built.zones["2.1.10.in-addr.arpa"];
        let ptrs: Vec<_> = rev
            .records
            .iter()
            .filter(|(_, d)| matches!(d, Data::Ptr { .. }))
            .collect();
        assert_eq!(
            ptrs,
            vec![&(
                "3.2.1.10.in-addr.arpa".to_string(),
                Data::Ptr {
                    target: "web.inst.u1.a.example".into()
                }
            )]
        );
        assert_eq!(built.vm_names["v2"].len(), 4);

        // A node that booted a minute ago is down: no service, and a wake-up is due.
        inputs.servers.get_mut("cn1").unwrap().last_boot_ms = Some(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
                - 60_000,
        );
        let built = build(&settings, &cmon, &inputs, SystemTime::now());
        assert!(built.wake_at.is_some());
    }
}
