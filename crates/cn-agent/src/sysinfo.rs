//! Sysinfo: what the node is, with Triton's keys ("UUID", "MiB of Memory", "Network
//! Interfaces", ...), read from the real machine (/proc, /sys, statvfs) or made up for a
//! simulated node. Also the figures heartbeats carry: memory and disk in use.
//!
//! The server UUID is kept in `<state_dir>/server_uuid`, made once (a random v4 unless
//! the config names one), so the node keeps its identity across restarts.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::{Error, Result};

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The node's UUID: read from `<state_dir>/server_uuid`, else `configured`, else a new
/// random one, written there for next time.
pub fn server_uuid(state_dir: &Path, configured: Option<Uuid>) -> Result<Uuid> {
    let path = state_dir.join("server_uuid");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let uuid = Uuid::parse_str(text.trim())
                .map_err(|e| Error::invalid(&path.display().to_string(), e.to_string()))?;
            if let Some(c) = configured.filter(|c| *c != uuid) {
                return Err(Error::invalid(
                    "server_uuid",
                    format!("the config says {c} but {} says {uuid}", path.display()),
                ));
            }
            Ok(uuid)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let uuid = configured.unwrap_or_else(Uuid::new_v4);
            std::fs::create_dir_all(state_dir).map_err(|e| Error::io(state_dir, e))?;
            crate::linux::safefs::write_atomically(&path, format!("{uuid}\n").as_bytes())?;
            Ok(uuid)
        }
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Memory figures for heartbeats (CNAPI's meminfo).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

/// Disk figures for heartbeats (CNAPI's diskinfo), of the file system of the state dir.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskInfo {
    pub pool_size_bytes: u64,
    pub pool_alloc_bytes: u64,
}

/// Where a node's facts come from.
#[derive(Debug, Clone)]
pub enum NodeFacts {
    /// The machine cn-agent runs on.
    Real {
        uuid: Uuid,
        state_dir: std::path::PathBuf,
        /// nic tag -> bridge (the tags a bridge's member interfaces provide).
        nic_tags: BTreeMap<String, String>,
        datacenter: String,
        agent_port: u16,
    },
    /// A simulated node.
    Sim {
        uuid: Uuid,
        hostname: String,
        ram_mib: u64,
        cpus: u32,
        disk_bytes: u64,
        nic_tags: Vec<String>,
        datacenter: String,
        agent_port: u16,
        boot_time: u64,
    },
}

impl NodeFacts {
    pub fn uuid(&self) -> Uuid {
        match self {
            NodeFacts::Real { uuid, .. } | NodeFacts::Sim { uuid, .. } => *uuid,
        }
    }

    pub fn sysinfo(&self) -> Result<Value> {
        match self {
            NodeFacts::Real {
                uuid,
                state_dir,
                nic_tags,
                datacenter,
                agent_port,
            } => real_sysinfo(*uuid, state_dir, nic_tags, datacenter, *agent_port),
            NodeFacts::Sim {
                uuid,
                hostname,
                ram_mib,
                cpus,
                disk_bytes,
                nic_tags,
                datacenter,
                agent_port,
                boot_time,
            } => Ok(json!({
                "UUID": uuid.to_string(),
                "Hostname": hostname,
                "System Type": "Linux",
                "Live Image": "sim",
                "Boot Time": boot_time.to_string(),
                "Datacenter Name": datacenter,
                "CPU Type": "Simulated CPU",
                "CPU Total Cores": cpus,
                "CPU Online Count": cpus,
                "MiB of Memory": ram_mib.to_string(),
                "Disks": {"sim0": {"Size in GB": disk_bytes / 1_000_000_000}},
                "Zpool": "sim",
                "Zpool Size in GiB": disk_bytes >> 30,
                "Network Interfaces": {
                    "sim0": {
                        "MAC Address": sim_mac(*uuid),
                        "ip4addr": "",
                        "Link Status": "up",
                        "NIC Names": nic_tags,
                    }
                },
                "SDC Agents": [{"name": "cn-agent", "version": AGENT_VERSION}],
                "CN Agent Port": agent_port,
                "Simulated": true,
            })),
        }
    }

    /// Memory of the node; for a sim, total minus what its instances have.
    pub fn meminfo(&self, instances_ram_mib: u64) -> MemInfo {
        match self {
            NodeFacts::Real { .. } => read_meminfo(),
            NodeFacts::Sim { ram_mib, .. } => MemInfo {
                total_bytes: ram_mib << 20,
                available_bytes: ram_mib.saturating_sub(instances_ram_mib) << 20,
            },
        }
    }

    pub fn diskinfo(&self) -> DiskInfo {
        match self {
            NodeFacts::Real { state_dir, .. } => statvfs(state_dir).unwrap_or_default(),
            NodeFacts::Sim { disk_bytes, .. } => DiskInfo {
                pool_size_bytes: *disk_bytes,
                pool_alloc_bytes: 0,
            },
        }
    }

    pub fn boot_time(&self) -> u64 {
        match self {
            NodeFacts::Real { .. } => read_boot_time().unwrap_or(0),
            NodeFacts::Sim { boot_time, .. } => *boot_time,
        }
    }
}

fn sim_mac(uuid: Uuid) -> String {
    let b = uuid.as_bytes();
    format!("02:5a:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The node's memory as /proc/meminfo has it; zeroes where it cannot be read.
fn read_meminfo() -> MemInfo {
    let m = std::fs::read_to_string("/proc/meminfo")
        .map(|text| crate::linux::usage::parse_meminfo(&text))
        .unwrap_or_default();
    MemInfo {
        total_bytes: m.total,
        available_bytes: m.available,
    }
}

fn read_boot_time() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn statvfs(path: &Path) -> Option<DiskInfo> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) fills the zeroed struct we pass; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    let size = st.f_blocks as u64 * st.f_frsize as u64;
    let free = st.f_bfree as u64 * st.f_frsize as u64;
    Some(DiskInfo {
        pool_size_bytes: size,
        pool_alloc_bytes: size.saturating_sub(free),
    })
}

/// CPU count from a kernel cpu list ("0-3,6").
fn count_cpu_list(list: &str) -> u32 {
    list.split(',')
        .filter(|p| !p.is_empty())
        .map(|part| match part.split_once('-') {
            Some((a, b)) => match (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 0,
            },
            None => u32::from(part.trim().parse::<u32>().is_ok()),
        })
        .sum()
}

/// IPv4 addresses per interface, from `ip -4 -o addr show`.
fn ipv4_addresses() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(o) = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
    else {
        return out;
    };
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let (Some(name), Some(pos)) = (fields.get(1), fields.iter().position(|f| *f == "inet"))
            && let Some(cidr) = fields.get(pos + 1)
        {
            let ip = cidr.split('/').next().unwrap_or_default();
            out.entry(name.to_string())
                .or_insert_with(|| ip.to_string());
        }
    }
    out
}

/// The platform image's build stamp, written into its initramfs (images/platform): the
/// node's "Live Image" when it booted one, else the kernel's release.
pub const PLATFORM_FILE: &str = "/etc/triton/platform";

/// A kernel command line as sysinfo's "Boot Parameters" (as Triton's): `name=value`
/// words as they are, a bare word as `"true"`; the later of two equal names wins.
pub fn boot_parameters(cmdline: &str) -> serde_json::Map<String, Value> {
    cmdline
        .split_whitespace()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), Value::String(v.to_string())),
            None => (w.to_string(), Value::String("true".into())),
        })
        .collect()
}

fn real_sysinfo(
    uuid: Uuid,
    state_dir: &Path,
    nic_tags: &BTreeMap<String, String>,
    datacenter: &str,
    agent_port: u16,
) -> Result<Value> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let total_cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count() as u32;
    let online = read("/sys/devices/system/cpu/online")
        .map(|l| count_cpu_list(&l))
        .unwrap_or(total_cores);
    let cpu_type = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let mem = read_meminfo();

    let mut disks = serde_json::Map::new();
    if let Ok(entries) = std::fs::read_dir("/sys/block") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if ["loop", "ram", "zram", "dm-", "sr"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                continue;
            }
            let sectors: u64 = read(entry.path().join("size"))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            disks.insert(name, json!({"Size in GB": sectors * 512 / 1_000_000_000}));
        }
    }

    // Tags per interface: a bridge provides its tag, and so do its member interfaces.
    let mut tags_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (tag, bridge) in nic_tags {
        tags_of.entry(bridge.clone()).or_default().push(tag.clone());
        if let Ok(members) =
            std::fs::read_dir(Path::new("/sys/class/net").join(bridge).join("brif"))
        {
            for m in members.flatten() {
                tags_of
                    .entry(m.file_name().to_string_lossy().into_owned())
                    .or_default()
                    .push(tag.clone());
            }
        }
    }
    let addresses = ipv4_addresses();
    let mut nics = serde_json::Map::new();
    let mut virtual_nics = serde_json::Map::new();
    if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "lo" {
                continue;
            }
            let path = entry.path();
            let physical = path.join("device").exists();
            let tags = tags_of.get(&name).cloned().unwrap_or_default();
            // Instances' veths and other virtual links are not the node's NICs; bridges
            // that carry a nic tag are reported as virtual NICs.
            if !physical && tags.is_empty() {
                continue;
            }
            let nic = json!({
                "MAC Address": read(path.join("address")).unwrap_or_default(),
                "ip4addr": addresses.get(&name).cloned().unwrap_or_default(),
                "Link Status": read(path.join("operstate")).unwrap_or_default(),
                "NIC Names": tags,
            });
            if physical {
                nics.insert(name, nic);
            } else {
                virtual_nics.insert(name, nic);
            }
        }
    }
    let disk = statvfs(state_dir).unwrap_or_default();
    Ok(json!({
        "UUID": uuid.to_string(),
        "Hostname": read("/proc/sys/kernel/hostname").unwrap_or_default(),
        "System Type": "Linux",
        "Live Image": read(PLATFORM_FILE)
            .or_else(|| read("/proc/sys/kernel/osrelease"))
            .unwrap_or_default(),
        "Boot Parameters": boot_parameters(&read("/proc/cmdline").unwrap_or_default()),
        "Boot Time": read_boot_time().unwrap_or(0).to_string(),
        "Datacenter Name": datacenter,
        "CPU Type": cpu_type,
        "CPU Total Cores": total_cores,
        "CPU Online Count": online,
        "MiB of Memory": (mem.total_bytes >> 20).to_string(),
        "Disks": disks,
        "Zpool": state_dir.display().to_string(),
        "Zpool Size in GiB": disk.pool_size_bytes >> 30,
        "Network Interfaces": nics,
        "Virtual Network Interfaces": virtual_nics,
        "SDC Agents": [{"name": "cn-agent", "version": AGENT_VERSION}],
        "CN Agent Port": agent_port,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_count() {
        assert_eq!(count_cpu_list("0-3"), 4);
        assert_eq!(count_cpu_list("0-3,6,8-9"), 7);
        assert_eq!(count_cpu_list("0"), 1);
    }

    #[test]
    fn a_kernel_command_line_becomes_boot_parameters() {
        let p = boot_parameters(
            "BOOT_IMAGE=/vmlinuz console=ttyS0 triton.cnapi_url=http://10.99.99.7:2030 quiet",
        );
        assert_eq!(p["triton.cnapi_url"], "http://10.99.99.7:2030");
        assert_eq!(p["console"], "ttyS0");
        assert_eq!(p["quiet"], "true");
        assert!(boot_parameters("").is_empty());
    }

    #[test]
    fn server_uuid_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = server_uuid(dir.path(), None).unwrap();
        assert_eq!(server_uuid(dir.path(), None).unwrap(), first);
        assert!(server_uuid(dir.path(), Some(Uuid::new_v4())).is_err());
        let other = tempfile::tempdir().unwrap();
        let chosen = Uuid::new_v4();
        assert_eq!(server_uuid(other.path(), Some(chosen)).unwrap(), chosen);
    }

    #[test]
    fn real_sysinfo_reads_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let uuid = Uuid::new_v4();
        let facts = NodeFacts::Real {
            uuid,
            state_dir: dir.path().to_path_buf(),
            nic_tags: BTreeMap::new(),
            datacenter: "dc1".into(),
            agent_port: 5309,
        };
        let s = facts.sysinfo().unwrap();
        assert_eq!(s["UUID"], uuid.to_string());
        let mem_mib: u64 = s["MiB of Memory"].as_str().unwrap().parse().unwrap();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let kib: u64 = meminfo
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(mem_mib, kib / 1024);
        assert_eq!(
            s["CPU Total Cores"].as_u64().unwrap() as usize,
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .max(s["CPU Total Cores"].as_u64().unwrap() as usize)
        );
        assert_eq!(
            s["Hostname"].as_str().unwrap(),
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap()
                .trim()
        );
        assert!(s["Boot Time"].as_str().unwrap().parse::<u64>().unwrap() > 1_000_000_000);
        // eth0 (or whatever NIC the machine has) with its MAC.
        let nics = s["Network Interfaces"].as_object().unwrap();
        for (name, nic) in nics {
            let mac = std::fs::read_to_string(format!("/sys/class/net/{name}/address")).unwrap();
            assert_eq!(nic["MAC Address"], mac.trim());
        }
        assert!(facts.diskinfo().pool_size_bytes > 0);
        assert!(facts.meminfo(0).total_bytes > 0);
    }
}
