//! Allocation: the DAPI chain (sdc-designation, as CNAPI ships it) that picks the server
//! for a new instance. A pure function of its inputs, the servers, the open reservations,
//! the request, the configuration and a random seed, so every filter and scorer is tested
//! on its own (tests below) and the service only loads inputs and stores the reservation.
//!
//! The servers are shuffled and cut into chunks of 50; the chain runs on one chunk after
//! another until one yields a server. Hard filters drop servers, each with a reason;
//! `or` steps fall back to their input when they would leave nothing; scorers add to each
//! server's score and the highest score wins (ties go to the later server in the shuffled
//! list). When nothing fits, [`NoAllocation`] says why each server was dropped.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};
use triton_common::rng::Rng;
use uuid::Uuid;

use crate::model::{OverprovisionRatios, ServerRecord, ServerVm, sysinfo_u64};

const MIB: f64 = 1024.0 * 1024.0;
const GIB: u64 = 1 << 30;
/// Triton runs the chain on chunks of this many servers.
pub const CHUNK_SIZE: usize = 50;
/// Share of a zpool DAPI considers usable.
const POOL_USABLE: f64 = 0.94;
/// hard-filter-large-servers keeps this share of the emptiest servers back.
const LARGE_SERVER_RATIO: f64 = 0.15;

/// The allocator's settings (CNAPI's `ALLOC_*` SAPI metadata), with Triton's defaults.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AllocConfig {
    pub filter_headnode: bool,
    pub filter_min_resources: bool,
    /// Triton leaves hard-filter-min-disk off by default; we keep it on so a server
    /// without the disk for the quota is never picked.
    pub filter_min_disk: bool,
    pub filter_large_servers: bool,
    pub filter_capness: bool,
    pub filter_vm_limit: usize,
    /// MiB of free pool a server must keep; 0 disables hard-filter-min-free-disk.
    pub minimum_free_disk: u64,
    pub overprovision_ratio_cpu: f64,
    pub overprovision_ratio_ram: f64,
    pub overprovision_ratio_disk: f64,
    pub disable_override_overprovisioning: bool,
    pub weight_current_platform: f64,
    pub weight_next_reboot: f64,
    pub weight_num_owner_zones: f64,
    pub weight_uniform_random: f64,
    pub weight_unreserved_disk: f64,
    pub weight_unreserved_ram: f64,
}

impl Default for AllocConfig {
    fn default() -> Self {
        AllocConfig {
            filter_headnode: true,
            filter_min_resources: true,
            filter_min_disk: true,
            filter_large_servers: true,
            filter_capness: true,
            filter_vm_limit: 224,
            minimum_free_disk: 0,
            overprovision_ratio_cpu: 4.0,
            overprovision_ratio_ram: 1.0,
            overprovision_ratio_disk: 1.0,
            disable_override_overprovisioning: false,
            weight_current_platform: 1.0,
            weight_next_reboot: 0.5,
            weight_num_owner_zones: 0.0,
            weight_uniform_random: 0.5,
            weight_unreserved_disk: 1.0,
            weight_unreserved_ram: 2.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Locality {
    pub near: Vec<String>,
    pub far: Vec<String>,
    pub strict: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffinityOp {
    Equal,
    NotEqual,
}

/// `instance==web*`, `role!=db`, with `is_soft` for `==~` / `!=~`.
#[derive(Debug, Clone, PartialEq)]
pub struct AffinityRule {
    pub key: String,
    pub op: AffinityOp,
    pub value: String,
    pub is_soft: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct VmRequest {
    pub vm_uuid: Uuid,
    pub owner_uuid: String,
    /// MiB; 0 means the package's max_physical_memory.
    pub ram: u64,
    /// GiB; 0 means the package's.
    pub quota: u64,
    pub cpu_cap: Option<u32>,
    pub brand: String,
    /// Replace the package's traits when set.
    pub traits: Option<Map<String, Value>>,
    pub locality: Option<Locality>,
    pub affinity: Vec<AffinityRule>,
    pub internal_metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageRequest {
    pub uuid: Option<Uuid>,
    pub traits: Option<Map<String, Value>>,
    pub min_platform: String,
    pub max_platform: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PackageRequest {
    pub uuid: Option<Uuid>,
    pub max_physical_memory: u64,
    pub quota: u64,
    pub cpu_cap: Option<u32>,
    pub traits: Option<Map<String, Value>>,
    pub overprovision_cpu: Option<f64>,
    pub overprovision_ram: Option<f64>,
    pub overprovision_disk: Option<f64>,
    /// Deprecated `alloc_server_spread`: min-ram, max-ram, min-owner, random.
    pub alloc_server_spread: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct AllocationRequest {
    pub vm: VmRequest,
    pub image: ImageRequest,
    pub package: Option<PackageRequest>,
    /// Every one must be provided by the server.
    pub nic_tags: Vec<String>,
    /// One of each set must be provided.
    pub nic_tag_requirements: Vec<Vec<String>>,
    /// Only these servers, when not empty.
    pub servers: Vec<Uuid>,
}

impl AllocationRequest {
    /// MiB the instance needs.
    pub fn ram(&self) -> u64 {
        match (self.vm.ram, &self.package) {
            (0, Some(p)) => p.max_physical_memory,
            (ram, _) => ram,
        }
    }

    /// GiB of disk the instance needs.
    pub fn quota(&self) -> u64 {
        match (self.vm.quota, &self.package) {
            (0, Some(p)) => p.quota,
            (q, _) => q,
        }
    }

    pub fn cpu_cap(&self) -> Option<u32> {
        self.vm
            .cpu_cap
            .or_else(|| self.package.as_ref().and_then(|p| p.cpu_cap))
            .filter(|c| *c > 0)
    }

    /// The instance as an entry of a server's `vms` (what a reservation holds).
    pub fn as_server_vm(&self) -> ServerVm {
        ServerVm {
            uuid: self.vm.vm_uuid.to_string(),
            owner_uuid: self.vm.owner_uuid.clone(),
            alias: String::new(),
            brand: self.vm.brand.clone(),
            state: "provisioning".into(),
            max_physical_memory: self.ram(),
            quota: self.quota(),
            cpu_cap: self.cpu_cap(),
            last_modified: String::new(),
            tags: BTreeMap::new(),
        }
    }
}

/// One step of the chain, as Triton reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub step: String,
    pub remaining: Vec<Uuid>,
    /// Server uuid (or "*") to what the step did with it.
    pub reasons: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub server: Uuid,
    pub steps: Vec<Step>,
}

/// Most per-server reasons a [`NoAllocation`] message lists.
pub const MAX_REASONS_SHOWN: usize = 20;

/// NoAllocatableServersError: why each server was dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct NoAllocation {
    pub reasons: BTreeMap<Uuid, String>,
    pub steps: Vec<Step>,
}

impl std::fmt::Display for NoAllocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "No compute resources available")?;
        if self.reasons.is_empty() {
            return write!(f, ": no servers to choose from");
        }
        // The message travels in an HTTP/2 header (grpc-message): with hundreds of
        // servers, every reason would pass the peer's header limit and the call would
        // end in a protocol error instead of this one. `reasons` keeps them all.
        let mut first = true;
        for (uuid, reason) in self.reasons.iter().take(MAX_REASONS_SHOWN) {
            write!(f, "{} {uuid}: {reason}", if first { ":" } else { ";" })?;
            first = false;
        }
        if self.reasons.len() > MAX_REASONS_SHOWN {
            write!(
                f,
                "; and {} more servers",
                self.reasons.len() - MAX_REASONS_SHOWN
            )?;
        }
        Ok(())
    }
}

/// A server during allocation.
#[derive(Debug, Clone)]
struct Cand<'a> {
    s: &'a ServerRecord,
    /// Heartbeat VMs plus the reserved ones.
    vms: Vec<ServerVm>,
    ratios: Option<OverprovisionRatios>,
    unreserved_cpu: i64,
    unreserved_ram: i64,
    unreserved_disk: i64,
    score: f64,
}

/// Runs the chain. `reservations` are VMs allocated but not yet in heartbeats, per server.
pub fn allocate(
    servers: &[ServerRecord],
    reservations: &BTreeMap<Uuid, Vec<ServerVm>>,
    req: &AllocationRequest,
    config: &AllocConfig,
    seed: u64,
) -> Result<Allocation, NoAllocation> {
    let mut rng = Rng::new(seed);
    let mut pool: Vec<&ServerRecord> = servers
        .iter()
        .filter(|s| req.servers.is_empty() || req.servers.contains(&s.uuid))
        .collect();
    // Fisher-Yates, so ties and chunking are random.
    for i in (1..pool.len()).rev() {
        let j = rng.below(i + 1);
        pool.swap(i, j);
    }
    let hints = Hints::from_request(req, servers, reservations);
    let mut dropped: BTreeMap<Uuid, String> = BTreeMap::new();
    let mut all_steps = Vec::new();
    for chunk in pool.chunks(CHUNK_SIZE) {
        let cands: Vec<Cand> = chunk
            .iter()
            .map(|s| Cand {
                s,
                vms: Vec::new(),
                ratios: s.overprovision_ratios,
                unreserved_cpu: 0,
                unreserved_ram: 0,
                unreserved_disk: 0,
                score: 0.0,
            })
            .collect();
        let mut chain = Chain {
            req,
            config,
            reservations,
            hints: &hints,
            rng: &mut rng,
            steps: Vec::new(),
            dropped: &mut dropped,
        };
        let winner = chain.run(cands);
        all_steps.append(&mut chain.steps);
        if let Some(server) = winner {
            return Ok(Allocation {
                server,
                steps: all_steps,
            });
        }
    }
    Err(NoAllocation {
        reasons: dropped,
        steps: all_steps,
    })
}

/// Locality hints after affinity rules are turned into them (calculate-affinity).
#[derive(Debug, Default)]
struct Hints {
    strict_near: Vec<String>,
    strict_far: Vec<String>,
    soft_near: Vec<String>,
    soft_far: Vec<String>,
    /// A strict `==` rule that no instance matches.
    unmatched: Option<String>,
}

impl Hints {
    /// `reservations` count as the servers' own instances: an instance allocated a moment
    /// ago, before its node's heartbeat lists it, is still matched by a rule naming it.
    fn from_request(
        req: &AllocationRequest,
        servers: &[ServerRecord],
        reservations: &BTreeMap<Uuid, Vec<ServerVm>>,
    ) -> Hints {
        let mut h = Hints::default();
        if let Some(l) = &req.vm.locality {
            let (near, far) = if l.strict {
                (&mut h.strict_near, &mut h.strict_far)
            } else {
                (&mut h.soft_near, &mut h.soft_far)
            };
            near.extend(l.near.iter().cloned());
            far.extend(l.far.iter().cloned());
        }
        let owner_vms: Vec<&ServerVm> = servers
            .iter()
            .flat_map(|s| s.vms.values())
            .chain(reservations.values().flatten())
            .filter(|vm| vm.owner_uuid == req.vm.owner_uuid)
            .collect();
        for rule in &req.vm.affinity {
            let matched: Vec<String> = owner_vms
                .iter()
                .filter(|vm| match rule.key.as_str() {
                    "instance" | "container" => {
                        vm.uuid == rule.value || glob(&rule.value, &vm.alias)
                    }
                    tag => vm.tags.get(tag).is_some_and(|v| glob(&rule.value, v)),
                })
                .map(|vm| vm.uuid.clone())
                .collect();
            let op = match rule.op {
                AffinityOp::Equal => "==",
                AffinityOp::NotEqual => "!=",
            };
            if matched.is_empty() {
                if rule.op == AffinityOp::Equal && !rule.is_soft {
                    h.unmatched = Some(format!("{}{op}{}", rule.key, rule.value));
                }
                continue;
            }
            let target = match (rule.op, rule.is_soft) {
                (AffinityOp::Equal, false) => &mut h.strict_near,
                (AffinityOp::NotEqual, false) => &mut h.strict_far,
                (AffinityOp::Equal, true) => &mut h.soft_near,
                (AffinityOp::NotEqual, true) => &mut h.soft_far,
            };
            target.extend(matched);
        }
        h
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    true
}

struct Chain<'r, 'a> {
    req: &'r AllocationRequest,
    config: &'r AllocConfig,
    reservations: &'r BTreeMap<Uuid, Vec<ServerVm>>,
    hints: &'r Hints,
    rng: &'r mut Rng,
    steps: Vec<Step>,
    dropped: &'a mut BTreeMap<Uuid, String>,
}

type Verdict = Option<String>;

impl Chain<'_, '_> {
    fn record(&mut self, step: &str, cands: &[Cand], reasons: BTreeMap<String, String>) {
        self.steps.push(Step {
            step: step.to_string(),
            remaining: cands.iter().map(|c| c.s.uuid).collect(),
            reasons,
        });
    }

    /// A hard filter: `verdict` gives the reason to drop a server, or `None` to keep it.
    fn hard(&mut self, step: &str, cands: &mut Vec<Cand>, verdict: impl Fn(&Cand) -> Verdict) {
        let mut reasons = BTreeMap::new();
        cands.retain(|c| match verdict(c) {
            Some(reason) => {
                self.dropped
                    .entry(c.s.uuid)
                    .or_insert_with(|| reason.clone());
                reasons.insert(c.s.uuid.to_string(), reason);
                false
            }
            None => true,
        });
        self.record(step, cands, reasons);
    }

    /// `['or', filter, identity]`: the filter, unless it would leave nothing.
    fn or_identity(
        &mut self,
        step: &str,
        cands: &mut Vec<Cand>,
        keep: impl Fn(&[Cand]) -> Vec<bool>,
    ) {
        let flags = keep(cands);
        let mut reasons = BTreeMap::new();
        if flags.iter().any(|k| *k) {
            let mut i = 0;
            cands.retain(|c| {
                let k = flags[i];
                i += 1;
                if !k {
                    reasons.insert(c.s.uuid.to_string(), format!("{step}: set aside"));
                }
                k
            });
        } else if !cands.is_empty() {
            reasons.insert("*".into(), "would leave no servers; ignored".into());
        }
        self.record(step, cands, reasons);
    }

    fn run(&mut self, mut cands: Vec<Cand>) -> Option<Uuid> {
        let req = self.req;
        let config = self.config;
        let ram = req.ram();
        let cpu_cap = req.cpu_cap();

        self.hard("hard-filter-setup", &mut cands, |c| {
            (!c.s.setup).then(|| "server is not set up".into())
        });
        self.hard("hard-filter-running", &mut cands, |c| {
            (c.s.status != "running").then(|| format!("server status is {}", c.s.status))
        });
        self.hard("hard-filter-invalid-servers", &mut cands, |c| {
            if !c.s.sysinfo.is_object() {
                Some("server has no sysinfo".into())
            } else if c.s.memory_total_bytes == 0 {
                Some("server has reported no memory".into())
            } else {
                None
            }
        });
        let forced = req
            .vm
            .internal_metadata
            .get("force_designation_failure")
            .is_some_and(|v| v == "true");
        self.hard("hard-filter-force-failure", &mut cands, |_| {
            forced.then(|| "force_designation_failure is set".into())
        });
        self.hard("hard-filter-reserved", &mut cands, |c| {
            c.s.reserved.then(|| "server is reserved".into())
        });
        if config.minimum_free_disk > 0 {
            self.hard("hard-filter-min-free-disk", &mut cands, |c| {
                let free = (c.s.disk_pool_size_bytes as f64 * POOL_USABLE
                    - c.s.disk_pool_alloc_bytes as f64)
                    / MIB;
                (free < config.minimum_free_disk as f64).then(|| {
                    format!(
                        "server has {} MiB free pool, the minimum is {} MiB",
                        free.floor(),
                        config.minimum_free_disk
                    )
                })
            });
        }
        self.hard("hard-filter-vlans", &mut cands, |c| {
            let has = |t: &String| c.s.nic_tags.contains(t);
            if let Some(missing) = req.nic_tags.iter().find(|t| !has(t)) {
                return Some(format!("server does not provide nic tag {missing}"));
            }
            req.nic_tag_requirements
                .iter()
                .find(|alts| !alts.is_empty() && !alts.iter().any(has))
                .map(|alts| format!("server provides none of nic tags {}", alts.join(", ")))
        });
        self.hard("hard-filter-platform-versions", &mut cands, |c| {
            let platform = c.s.current_platform.as_str();
            let (min, max) = (&req.image.min_platform, &req.image.max_platform);
            if platform.is_empty() {
                return None;
            }
            if !min.is_empty() && platform < min.as_str() {
                return Some(format!(
                    "platform {platform} is older than the image's minimum {min}"
                ));
            }
            if !max.is_empty() && platform > max.as_str() {
                return Some(format!(
                    "platform {platform} is newer than the image's maximum {max}"
                ));
            }
            None
        });
        let requested = requested_traits(req);
        self.hard("hard-filter-traits", &mut cands, |c| {
            traits_mismatch(&requested, &c.s.traits)
        });
        if config.filter_headnode {
            self.hard("hard-filter-headnode", &mut cands, |c| {
                c.s.headnode.then(|| "server is a headnode".into())
            });
        }

        // override-overprovisioning: every server and the package get the configured
        // ratios, unless the operator turned the override off.
        let configured = OverprovisionRatios {
            cpu: config.overprovision_ratio_cpu,
            ram: config.overprovision_ratio_ram,
            disk: config.overprovision_ratio_disk,
        };
        let pkg_ratios = if config.disable_override_overprovisioning {
            req.package.as_ref().map(|p| OverprovisionRatios {
                cpu: p.overprovision_cpu.unwrap_or(configured.cpu),
                ram: p.overprovision_ram.unwrap_or(1.0),
                disk: p.overprovision_disk.unwrap_or(configured.disk),
            })
        } else {
            for c in cands.iter_mut() {
                c.ratios = Some(configured);
            }
            Some(configured)
        };
        self.record("override-overprovisioning", &cands, BTreeMap::new());
        if let Some(pkg) = pkg_ratios {
            self.hard("hard-filter-overprovision-ratios", &mut cands, |c| {
                let server = c.ratios.unwrap_or(OverprovisionRatios {
                    cpu: configured.cpu,
                    ram: 1.0,
                    disk: configured.disk,
                });
                let r2 = |x: f64| (x * 100.0).round() as i64;
                (r2(server.cpu) != r2(pkg.cpu)
                    || r2(server.ram) != r2(pkg.ram)
                    || r2(server.disk) != r2(pkg.disk))
                .then(|| "server's overprovision ratios differ from the package's".into())
            });
        }

        // load-server-vms and calculate-ticketed-vms.
        for c in cands.iter_mut() {
            c.vms = c.s.vms.values().cloned().collect();
            if let Some(reserved) = self.reservations.get(&c.s.uuid) {
                for vm in reserved {
                    if !c.vms.iter().any(|v| v.uuid == vm.uuid) {
                        c.vms.push(vm.clone());
                    }
                }
            }
        }
        self.record("calculate-ticketed-vms", &cands, BTreeMap::new());

        if config.filter_capness {
            self.hard("hard-filter-capness", &mut cands, |c| {
                let live = c.vms.iter().filter(|v| v.state != "failed");
                match cpu_cap {
                    Some(_) => live.clone().any(|v| v.cpu_cap.is_none()).then(|| {
                        "instance has a cpu_cap but the server has uncapped instances".into()
                    }),
                    None => live.clone().any(|v| v.cpu_cap.is_some()).then(|| {
                        "instance has no cpu_cap but the server has capped instances".into()
                    }),
                }
            });
        }
        let limit = config.filter_vm_limit;
        self.hard("hard-filter-vm-count", &mut cands, |c| {
            (c.vms.len() >= limit)
                .then(|| format!("server has {} instances, the limit is {limit}", c.vms.len()))
        });

        for c in cands.iter_mut() {
            calculate_unreserved(c);
        }
        self.record("calculate-server-unreserved", &cands, BTreeMap::new());

        let heavy = matches!(req.vm.brand.as_str(), "kvm" | "bhyve");
        let pkg = pkg_ratios.unwrap_or(configured);
        if config.filter_min_resources {
            let need_ram = if heavy {
                ram as f64
            } else {
                ram as f64 / pkg.ram
            };
            self.hard("hard-filter-min-ram", &mut cands, |c| {
                short(c.unreserved_ram, need_ram, "MiB of unreserved RAM")
            });
            if let Some(cap) = cpu_cap {
                let need_cpu = f64::from(cap) / pkg.cpu;
                self.hard("hard-filter-min-cpu", &mut cands, |c| {
                    short(c.unreserved_cpu, need_cpu, "unreserved centi-CPUs")
                });
            }
            if config.filter_min_disk {
                let need_disk = (req.quota() * 1024) as f64 / pkg.disk;
                self.hard("hard-filter-min-disk", &mut cands, |c| {
                    short(c.unreserved_disk, need_disk, "MiB of unreserved disk")
                });
            }
        }

        // Strict locality (and strict affinity rules).
        let owner = req.vm.owner_uuid.clone();
        let hints = self.hints;
        if let Some(rule) = &hints.unmatched {
            self.hard("calculate-affinity", &mut cands, |_| {
                Some(format!("no instance matches affinity rule {rule}"))
            });
        } else {
            self.record("calculate-affinity", &cands, BTreeMap::new());
        }
        if !hints.strict_far.is_empty() {
            self.hard("hard-filter-locality-hints (far)", &mut cands, |c| {
                holds_any(c, &hints.strict_far, &owner).map(|vm| format!("exclude: inst!={vm}"))
            });
        }
        if !hints.strict_near.is_empty() {
            self.hard("hard-filter-locality-hints (near)", &mut cands, |c| {
                (!holds_all(c, &hints.strict_near, &owner))
                    .then(|| format!("exclude: inst=={}", hints.strict_near.join(",")))
            });
        }

        self.or_identity("hard-filter-reservoir", &mut cands, |cs| {
            cs.iter().map(|c| !c.s.reservoir).collect()
        });
        if config.filter_large_servers {
            self.or_identity("hard-filter-large-servers", &mut cands, |cs| {
                let set_aside = (cs.len() as f64 * LARGE_SERVER_RATIO).floor() as usize;
                let mut keep = vec![true; cs.len()];
                if set_aside >= 1 {
                    let mut order: Vec<usize> = (0..cs.len()).collect();
                    order.sort_by(|a, b| cs[*b].unreserved_ram.cmp(&cs[*a].unreserved_ram));
                    for i in order.into_iter().take(set_aside) {
                        keep[i] = false;
                    }
                }
                keep
            });
        }
        if !hints.soft_far.is_empty() {
            self.or_identity("soft-filter-locality-hints (far)", &mut cands, |cs| {
                cs.iter()
                    .map(|c| holds_any(c, &hints.soft_far, &owner).is_none())
                    .collect()
            });
        }
        if !hints.soft_near.is_empty() {
            self.or_identity("soft-filter-locality-hints (near)", &mut cands, |cs| {
                cs.iter()
                    .map(|c| holds_any(c, &hints.soft_near, &owner).is_some())
                    .collect()
            });
        }

        if cands.is_empty() {
            return None;
        }
        self.score(&mut cands);
        // Highest score wins; on a tie the later server (the list is shuffled).
        let mut best = 0;
        for (i, c) in cands.iter().enumerate() {
            if c.score >= cands[best].score {
                best = i;
            }
        }
        Some(cands[best].s.uuid)
    }

    fn score(&mut self, cands: &mut [Cand]) {
        let config = self.config;
        let mut w_ram = config.weight_unreserved_ram;
        let mut w_owner = config.weight_num_owner_zones;
        let mut w_random = config.weight_uniform_random;
        match self
            .req
            .package
            .as_ref()
            .map(|p| p.alloc_server_spread.as_str())
        {
            Some("min-ram") => w_ram = -w_ram.abs().max(1.0),
            Some("max-ram") => w_ram = w_ram.abs().max(1.0),
            Some("min-owner") => w_owner = w_owner.abs().max(1.0),
            Some("random") => w_random = w_random.abs().max(1.0),
            _ => {}
        }
        let owner = self.req.vm.owner_uuid.clone();
        self.linear("score-unreserved-ram", cands, w_ram, |c| {
            c.unreserved_ram as f64
        });
        self.linear(
            "score-unreserved-disk",
            cands,
            config.weight_unreserved_disk,
            |c| c.unreserved_disk as f64,
        );
        // Fewer of the owner's instances is better.
        self.linear("score-num-owner-zones", cands, w_owner, |c| {
            -(c.vms.iter().filter(|v| v.owner_uuid == owner).count() as f64)
        });
        self.ranked(
            "score-current-platform",
            cands,
            config.weight_current_platform,
            |a, b| a.s.current_platform.cmp(&b.s.current_platform),
        );
        // A later (or no) scheduled reboot is better.
        self.ranked(
            "score-next-reboot",
            cands,
            config.weight_next_reboot,
            |a, b| {
                let key = |c: &Cand| {
                    if c.s.next_reboot.is_empty() {
                        "\u{10ffff}".to_string()
                    } else {
                        c.s.next_reboot.clone()
                    }
                };
                key(a).cmp(&key(b))
            },
        );
        if w_random != 0.0 {
            let mut reasons = BTreeMap::new();
            for c in cands.iter_mut() {
                let add = self.rng.unit() * w_random.abs();
                c.score += add;
                reasons.insert(c.s.uuid.to_string(), format!("increased score by {add:.3}"));
            }
            self.record("score-uniform-random", cands, reasons);
        }
    }

    /// Triton's linear scorer over a numeric metric: more is better (less with a negative
    /// weight).
    fn linear(
        &mut self,
        step: &str,
        cands: &mut [Cand],
        weight: f64,
        metric: impl Fn(&Cand) -> f64,
    ) {
        self.ranked(step, cands, weight, |a, b| {
            metric(a)
                .partial_cmp(&metric(b))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    }

    /// Sorts best first by `cmp` (greater is better; reversed for a negative weight); the
    /// server at rank i of n gains `(n-1-i)/(n-1) × |weight|`, a lone one `|weight|`.
    fn ranked(
        &mut self,
        step: &str,
        cands: &mut [Cand],
        weight: f64,
        cmp: impl Fn(&Cand, &Cand) -> std::cmp::Ordering,
    ) {
        if weight == 0.0 || cands.is_empty() {
            return;
        }
        let mut order: Vec<usize> = (0..cands.len()).collect();
        order.sort_by(|a, b| {
            let o = cmp(&cands[*b], &cands[*a]);
            if weight < 0.0 { o.reverse() } else { o }
        });
        let n = cands.len();
        let mut reasons = BTreeMap::new();
        for (rank, i) in order.into_iter().enumerate() {
            let add = if n == 1 {
                weight.abs()
            } else {
                (n - 1 - rank) as f64 / (n - 1) as f64 * weight.abs()
            };
            cands[i].score += add;
            reasons.insert(
                cands[i].s.uuid.to_string(),
                format!("increased score by {add:.3}"),
            );
        }
        self.record(step, cands, reasons);
    }
}

/// The first VM of `uuids` the server holds for `owner`.
fn holds_any(c: &Cand, uuids: &[String], owner: &str) -> Option<String> {
    uuids
        .iter()
        .find(|u| c.vms.iter().any(|v| &v.uuid == *u && v.owner_uuid == owner))
        .cloned()
}

fn holds_all(c: &Cand, uuids: &[String], owner: &str) -> bool {
    uuids
        .iter()
        .all(|u| c.vms.iter().any(|v| &v.uuid == u && v.owner_uuid == owner))
}

/// calculate-server-unreserved: cpu in centi-CPUs, ram and disk in MiB, all floored.
fn calculate_unreserved(c: &mut Cand) {
    let s = c.s;
    let ratios = c.ratios.unwrap_or(OverprovisionRatios {
        cpu: 4.0,
        ram: 1.0,
        disk: 1.0,
    });
    let cpus = sysinfo_u64(&s.sysinfo, "CPU Online Count")
        .or_else(|| sysinfo_u64(&s.sysinfo, "CPU Total Cores"))
        .unwrap_or(0);
    let live: Vec<&ServerVm> = c.vms.iter().filter(|v| v.state != "failed").collect();
    let mut cpu = 100.0 * cpus as f64;
    // An uncapped instance may use every CPU.
    if live.iter().any(|v| v.cpu_cap.is_none()) {
        cpu = 0.0;
    } else {
        cpu -= live
            .iter()
            .map(|v| f64::from(v.cpu_cap.unwrap_or(0)) / ratios.cpu)
            .sum::<f64>();
    }
    let mut ram = s.memory_total_bytes as f64 / MIB * (1.0 - s.reservation_ratio);
    for v in &live {
        let heavy = matches!(v.brand.as_str(), "kvm" | "bhyve");
        ram -= v.max_physical_memory as f64 / if heavy { 1.0 } else { ratios.ram };
    }
    let pool = s.disk_pool_size_bytes as f64 * POOL_USABLE;
    let zone_quota: u64 = live.iter().map(|v| v.quota * GIB).sum();
    let zone_quota_used = s.disk_zone_quota_used_bytes as f64;
    let by_quota = pool
        - s.disk_system_used_bytes as f64
        - s.disk_installed_images_used_bytes as f64
        - s.disk_cores_quota_used_bytes as f64
        - zone_quota_used
        - (zone_quota as f64 - zone_quota_used).max(0.0) / ratios.disk;
    let by_alloc = pool - s.disk_pool_alloc_bytes as f64;
    c.unreserved_cpu = cpu.floor() as i64;
    c.unreserved_ram = ram.floor() as i64;
    c.unreserved_disk = (by_quota.min(by_alloc) / MIB).floor() as i64;
}

/// The short chain of Triton's `POST /capacity`: unreserved cpu (centi-CPUs), ram and
/// disk (MiB) of a server, counting its reservations, after override-overprovisioning.
pub fn unreserved(
    server: &ServerRecord,
    reserved: &[ServerVm],
    config: &AllocConfig,
) -> (i64, i64, i64) {
    let mut vms: Vec<ServerVm> = server.vms.values().cloned().collect();
    for vm in reserved {
        if !vms.iter().any(|v| v.uuid == vm.uuid) {
            vms.push(vm.clone());
        }
    }
    let ratios = if config.disable_override_overprovisioning {
        server.overprovision_ratios
    } else {
        Some(OverprovisionRatios {
            cpu: config.overprovision_ratio_cpu,
            ram: config.overprovision_ratio_ram,
            disk: config.overprovision_ratio_disk,
        })
    };
    let mut c = Cand {
        s: server,
        vms,
        ratios,
        unreserved_cpu: 0,
        unreserved_ram: 0,
        unreserved_disk: 0,
        score: 0.0,
    };
    calculate_unreserved(&mut c);
    (c.unreserved_cpu, c.unreserved_ram, c.unreserved_disk)
}

/// The requested traits: the VM's (or else the package's), with the image's on top.
fn requested_traits(req: &AllocationRequest) -> Map<String, Value> {
    let mut out = req
        .vm
        .traits
        .clone()
        .or_else(|| req.package.as_ref().and_then(|p| p.traits.clone()))
        .unwrap_or_default();
    if let Some(img) = &req.image.traits {
        for (k, v) in img {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// Why a server's traits do not match the request, or `None` when they do.
/// Why a server with `have` of a resource is dropped for an instance that needs `need`
/// (`what` names the unit and the resource), or none when it has enough.
fn short(have: i64, need: f64, what: &str) -> Verdict {
    ((have as f64) < need).then(|| {
        format!(
            "server has {have} {what}, the instance needs {}",
            need.ceil()
        )
    })
}

fn traits_mismatch(requested: &Map<String, Value>, server: &Map<String, Value>) -> Verdict {
    if requested.is_empty() {
        return (!server.is_empty()).then(|| {
            let keys: BTreeSet<&String> = server.keys().collect();
            format!("server has traits {keys:?} and the request none")
        });
    }
    if requested.len() != server.len() {
        return Some(format!(
            "server has {} traits, the request {}",
            server.len(),
            requested.len()
        ));
    }
    for (key, want) in requested {
        let Some(have) = server.get(key) else {
            return Some(format!("server lacks trait {key}"));
        };
        let ok = match (want, have) {
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::String(a), Value::String(b)) => a == b,
            (Value::String(a), Value::Array(bs)) => bs.iter().any(|b| b.as_str() == Some(a)),
            (Value::Array(as_), Value::String(b)) => as_.iter().any(|a| a.as_str() == Some(b)),
            (Value::Array(as_), Value::Array(bs)) => as_.iter().any(|a| bs.contains(a)),
            _ => false,
        };
        if !ok {
            return Some(format!(
                "trait {key}: server has {have}, the request {want}"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests;
