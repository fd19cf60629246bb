//! The zone backend: what turns cn-agent's tasks into instances. Two implementations keep
//! one contract (tests/contract.rs runs the same suite against both): [`crate::linux`]
//! builds real containers, [`crate::sim`] only keeps their state.
//!
//! The agent serializes the tasks of one instance, so a backend never sees two calls for
//! the same instance at once; calls for different instances do run concurrently.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

/// One NIC of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct NicSpec {
    /// Name inside the instance: eth0, eth1, ...
    pub interface: String,
    /// `aa:bb:cc:dd:ee:ff`; empty lets the kernel pick one.
    pub mac: String,
    pub ip: Option<Ipv4Addr>,
    /// Prefix length of the NIC's network.
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub resolvers: Vec<Ipv4Addr>,
    /// Names the bridge the NIC is plugged into.
    pub nic_tag: String,
    pub vlan_id: u16,
    pub mtu: u32,
    /// The primary NIC carries the default route.
    pub primary: bool,
    /// A fabric NIC's VXLAN network id (NAPI's `vnet_id`); 0 for other NICs.
    pub vnet_id: u32,
    /// A fabric NIC whose network has `internet_nat`: the node answers its gateway and
    /// NATs it to the external network ([`crate::linux::overlay::Overlay::ensure_nat`]).
    pub internet_nat: bool,
    /// NAPI's network of the NIC; it only labels the NIC's usage (CMon's `network_uuid`).
    pub network_uuid: String,
}

/// What an instance is: the `vmadm create` payload, reduced to what a Linux zone uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    pub uuid: Uuid,
    #[serde(default)]
    pub owner_uuid: String,
    #[serde(default)]
    pub alias: String,
    pub hostname: String,
    #[serde(default)]
    pub brand: String,
    pub image_uuid: Uuid,
    /// MiB; the memory limit.
    pub ram: u64,
    /// Percent of one CPU; 0 is uncapped.
    #[serde(default)]
    pub cpu_cap: u32,
    /// GiB of disk: what the instance can write (see [`check_quota_change`]); 0 is
    /// unlimited.
    #[serde(default)]
    pub quota: u64,
    /// 0 is unlimited.
    #[serde(default)]
    pub max_lwps: u64,
    #[serde(default)]
    pub nics: Vec<NicSpec>,
    /// argv of pid 1; empty means [`DEFAULT_INIT`].
    #[serde(default)]
    pub init: Vec<String>,
    #[serde(default)]
    pub customer_metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub internal_metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Boot at create and whenever cn-agent starts; as with `vmadm`, boot sets it and
    /// shutdown clears it, so it says whether the instance should be running.
    #[serde(default = "yes")]
    pub autoboot: bool,
    #[serde(default)]
    pub billing_id: String,
}

fn yes() -> bool {
    true
}

/// pid 1 of an instance whose spec names none.
pub const DEFAULT_INIT: &str = "/sbin/init";

/// Largest quota, GiB (1 PiB): far beyond any node, and its bytes fit a u64.
pub const MAX_QUOTA_GIB: u64 = 1 << 20;

/// Longest hostname the kernel accepts (`HOST_NAME_MAX`).
const HOSTNAME_MAX: usize = 64;

impl InstanceSpec {
    /// Rejects a spec that no backend could honour, naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.uuid.is_nil() {
            return Err(Error::invalid("uuid", "must not be the nil uuid"));
        }
        if self.hostname.is_empty() || self.hostname.len() > HOSTNAME_MAX {
            return Err(Error::invalid("hostname", "must be 1 to 64 characters"));
        }
        if !self
            .hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(Error::invalid(
                "hostname",
                "may hold only letters, digits, '-' and '.'",
            ));
        }
        if self.ram == 0 {
            return Err(Error::invalid("ram", "must be at least 1 MiB"));
        }
        if self.quota > MAX_QUOTA_GIB {
            return Err(Error::invalid(
                "quota",
                format!("must be at most {MAX_QUOTA_GIB} GiB"),
            ));
        }
        let mut interfaces = std::collections::BTreeSet::new();
        for (i, nic) in self.nics.iter().enumerate() {
            nic.validate(i)?;
            if !interfaces.insert(nic.interface_name(i)) {
                return Err(Error::invalid(
                    &format!("nics[{i}].interface"),
                    "is used by another NIC",
                ));
            }
        }
        if self.init.iter().any(|a| a.contains('\0')) {
            return Err(Error::invalid("init", "must not contain NUL bytes"));
        }
        crate::linux::volumes::parse(&self.internal_metadata)?;
        Ok(())
    }

    pub fn init_argv(&self) -> Vec<String> {
        if self.init.is_empty() {
            vec![DEFAULT_INIT.to_string()]
        } else {
            self.init.clone()
        }
    }
}

impl NicSpec {
    pub fn validate(&self, index: usize) -> Result<()> {
        let field = |f: &str| format!("nics[{index}].{f}");
        if self.nic_tag.is_empty() {
            return Err(Error::invalid(&field("nic_tag"), "is required"));
        }
        if !self.mac.is_empty() && parse_mac(&self.mac).is_none() {
            return Err(Error::invalid(&field("mac"), "is not a MAC address"));
        }
        if self.prefix_len > 32 {
            return Err(Error::invalid(&field("netmask"), "prefix longer than 32"));
        }
        if crate::linux::overlay::is_fabric_tag(&self.nic_tag) {
            crate::linux::overlay::fabric_vnet(
                &format!("nics[{index}]"),
                &self.nic_tag,
                self.vnet_id,
            )?;
        }
        let name = self.interface_name(index);
        if name.is_empty()
            || name.len() > 15
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::invalid(
                &field("interface"),
                "must be 1 to 15 letters, digits or '_'",
            ));
        }
        Ok(())
    }

    /// The interface name inside the instance (`eth<index>` when unset).
    pub fn interface_name(&self, index: usize) -> String {
        if self.interface.is_empty() {
            format!("eth{index}")
        } else {
            self.interface.clone()
        }
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(mac: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for byte in &mut out {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Parses a netmask as a dotted quad or a prefix length.
pub fn parse_netmask(netmask: &str) -> Option<u8> {
    if netmask.is_empty() {
        return Some(24);
    }
    if let Ok(len) = netmask.parse::<u8>() {
        return (len <= 32).then_some(len);
    }
    let mask: Ipv4Addr = netmask.parse().ok()?;
    let bits = u32::from(mask);
    let len = bits.leading_ones();
    (bits.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

/// States as VMAPI spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    Provisioning,
    Running,
    Stopped,
    Failed,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Provisioning => "provisioning",
            InstanceState::Running => "running",
            InstanceState::Stopped => "stopped",
            InstanceState::Failed => "failed",
        }
    }
}

/// An instance as the backend sees it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub spec: InstanceSpec,
    pub state: InstanceState,
    /// Host pid of pid 1 while running (linux only).
    pub pid: Option<u32>,
    /// Unix seconds of the last boot.
    pub last_boot: Option<u64>,
    /// Unix seconds of the last change.
    pub last_modified: u64,
    /// The instance's snapshots, oldest first.
    #[serde(default)]
    pub snapshots: Vec<Snapshot>,
}

/// A snapshot of an instance's disk (`vmadm create-snapshot`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub name: String,
    /// Unix seconds of when it was taken.
    pub created: u64,
}

/// Longest snapshot name (Triton's, which names ZFS snapshots `@vmsnap-<name>`).
pub const SNAPSHOT_NAME_MAX: usize = 64;

/// A snapshot name is 1 to 64 letters, digits, '_', '-' and '.' (Triton's rule), and
/// never `.` or `..`, since on the linux backend it names a directory.
pub fn validate_snapshot_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > SNAPSHOT_NAME_MAX {
        return Err(Error::invalid("name", "must be 1 to 64 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(Error::invalid(
            "name",
            format!("{name:?} may hold only letters, digits, '_', '-' and '.'"),
        ));
    }
    if name == "." || name == ".." {
        return Err(Error::invalid("name", format!("{name:?} is not a name")));
    }
    Ok(())
}

/// The checks of a new snapshot that both backends make: a valid name, not in use, and
/// an instance that has a disk (running or stopped).
pub fn check_new_snapshot(instance: &Instance, name: &str) -> Result<()> {
    validate_snapshot_name(name)?;
    check_has_disk(instance, "a snapshot")?;
    if instance.snapshots.iter().any(|s| s.name == name) {
        return Err(Error::invalid(
            "name",
            format!("the instance already has a snapshot named {name:?}"),
        ));
    }
    Ok(())
}

/// The checks of a rollback that both backends make: the snapshot exists and the
/// instance has a disk (running or stopped).
pub fn check_rollback(instance: &Instance, name: &str) -> Result<()> {
    find_snapshot(instance, name)?;
    check_has_disk(instance, "a rollback")
}

/// [`Error::WrongState`] for `action` unless the instance is running or stopped.
fn check_has_disk(instance: &Instance, action: &'static str) -> Result<()> {
    if matches!(
        instance.state,
        InstanceState::Running | InstanceState::Stopped
    ) {
        return Ok(());
    }
    Err(Error::WrongState {
        uuid: instance.spec.uuid,
        state: instance.state.as_str().into(),
        action,
    })
}

/// A `machine_rollback_snapshot`: the snapshot to put back, whether the instance boots
/// after it, and the grace period of the stop before it (SIGKILL after `timeout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollback {
    pub name: String,
    pub boot: bool,
    pub timeout: Duration,
}

/// The snapshot named `name` of the instance, or [`Error::SnapshotNotFound`].
pub fn find_snapshot<'a>(instance: &'a Instance, name: &str) -> Result<&'a Snapshot> {
    instance
        .snapshots
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| Error::SnapshotNotFound {
            uuid: instance.spec.uuid,
            name: name.to_string(),
        })
}

/// A `machine_update`: every field that is set changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceUpdate {
    pub ram: Option<u64>,
    pub cpu_cap: Option<u32>,
    pub quota: Option<u64>,
    pub max_lwps: Option<u64>,
    pub alias: Option<String>,
    /// Applied at the next boot, as on SmartOS.
    pub hostname: Option<String>,
    pub add_nics: Vec<NicSpec>,
    /// MACs of the NICs to remove.
    pub remove_nics: Vec<String>,
}

impl InstanceUpdate {
    /// The spec after the update (NIC changes included), validated.
    pub fn apply_to(&self, spec: &InstanceSpec) -> Result<InstanceSpec> {
        let mut next = spec.clone();
        triton_common::set_given!(self => next [ram, cpu_cap, quota, max_lwps, alias, hostname]);
        for mac in &self.remove_nics {
            let before = next.nics.len();
            next.nics.retain(|n| !n.mac.eq_ignore_ascii_case(mac));
            if next.nics.len() == before {
                return Err(Error::invalid(
                    "remove_nics",
                    format!("the instance has no NIC {mac}"),
                ));
            }
        }
        for nic in &self.add_nics {
            let mut nic = nic.clone();
            if nic.interface.is_empty() {
                nic.interface = free_interface_name(&next.nics);
            }
            next.nics.push(nic);
        }
        // Name the interfaces explicitly so removing one does not rename the others.
        for (i, nic) in next.nics.iter_mut().enumerate() {
            if nic.interface.is_empty() {
                nic.interface = format!("eth{i}");
            }
        }
        next.validate()?;
        Ok(next)
    }
}

fn free_interface_name(nics: &[NicSpec]) -> String {
    let used: Vec<String> = nics
        .iter()
        .enumerate()
        .map(|(i, n)| n.interface_name(i))
        .collect();
    (0..)
        .map(|i| format!("eth{i}"))
        .find(|name| !used.contains(name))
        .unwrap_or_default()
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSource {
    pub image_uuid: Uuid,
    /// A tarball of the image's root (gzip or not) or a directory holding it.
    pub path: PathBuf,
}

/// Resource use of one instance, for heartbeats and CMon. The linux backend reads the
/// instance's cgroup and network namespace (each field names its source); the sim
/// backend makes up numbers that grow while an instance runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceUsage {
    pub uuid: Uuid,
    pub cpu_usage_ns: u64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    /// Bytes received by the instance.
    pub net_rx_bytes: u64,
    /// Bytes sent by the instance.
    pub net_tx_bytes: u64,
    pub processes: u64,
    /// Bytes in use on the instance's disk.
    #[serde(default)]
    pub disk_used_bytes: u64,
    /// Size of the instance's disk (its quota); 0 is unlimited.
    #[serde(default)]
    pub disk_limit_bytes: u64,
    /// cpu.stat user_usec (v2), in ns; see [`crate::linux::usage`].
    #[serde(default)]
    pub cpu_user_ns: u64,
    /// cpu.stat system_usec (v2), in ns.
    #[serde(default)]
    pub cpu_sys_ns: u64,
    /// memory.swap.current (v2).
    #[serde(default)]
    pub swap_bytes: u64,
    /// The limit on memory + swap (SmartOS's swap cap counts both); 0 is unlimited.
    #[serde(default)]
    pub swap_limit_bytes: u64,
    /// memory.events max + oom (v2): times an allocation hit the memory limit.
    #[serde(default)]
    pub mem_anon_alloc_fail: u64,
    /// Linux keeps no load average per cgroup: the instance's threads in state R or D
    /// now, the quantity the kernel's load average averages.
    #[serde(default)]
    pub load_average: f64,
    /// Per NIC, as the instance sees it.
    #[serde(default)]
    pub nics: Vec<NicUsage>,
    /// The instance's /proc/net/snmp "Tcp:" counters.
    #[serde(default)]
    pub tcp: TcpUsage,
    /// io.stat (v2), summed over devices.
    #[serde(default)]
    pub io: IoUsage,
    /// Run-queue wait of the instance's threads, ns: /proc/<tid>/schedstat's run delay
    /// summed over the threads in its cgroup now.
    #[serde(default)]
    pub cpu_wait_ns: u64,
    /// The CPU cap and how often it held the instance back.
    #[serde(default)]
    pub cpu_cap: CapUsage,
    /// io.pressure "some" total (v2), ns; `None` where the host has no per-cgroup I/O
    /// pressure (v1).
    #[serde(default)]
    pub io_wait_ns: Option<u64>,
    /// How each part was read (CMon's per-collector meta-metrics).
    #[serde(default)]
    pub collectors: Vec<CollectorTime>,
}

/// The CPU cap of an instance's cgroup and its cpu.stat throttling counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapUsage {
    /// Percent of one CPU (v2 cpu.max, v1 cfs_quota_us / cfs_period_us); `None`: no cap.
    pub percent: Option<u32>,
    /// The enforcement period, us.
    pub period_us: u64,
    /// nr_periods: periods in which the instance ran.
    pub periods: u64,
    /// nr_throttled: periods in which it reached its cap.
    pub throttled_periods: u64,
    /// v2 throttled_usec, v1 throttled_time, in ns.
    pub throttled_ns: u64,
}

/// One part of a usage answer, named as Triton's cmon-agent collectors: whether the
/// host has a source for it, and how long reading it took.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CollectorTime {
    pub name: String,
    pub available: bool,
    pub seconds: f64,
}

/// Counters of one NIC of an instance, inside its network namespace (rx is what the
/// instance received), named from the instance's spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicUsage {
    pub interface: String,
    pub mac: String,
    pub network_uuid: String,
    pub nic_tag: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// The "Tcp:" line of an instance's /proc/net/snmp.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpUsage {
    /// ActiveOpens.
    pub active_opens: u64,
    /// PassiveOpens.
    pub passive_opens: u64,
    /// CurrEstab.
    pub current_established: u64,
    /// RetransSegs.
    pub retransmitted_segments: u64,
    /// AttemptFails.
    pub failed_connection_attempts: u64,
    /// /proc/net/netstat TcpExt ListenOverflows: a full accept backlog.
    #[serde(default)]
    pub listen_overflows: u64,
    /// TcpExt TCPReqQFullDrop: SYNs dropped on a full request (half-open) queue.
    #[serde(default)]
    pub request_queue_full_drops: u64,
    /// TcpExt TCPAbortOnTimeout: connections dropped after retransmission timeouts.
    #[serde(default)]
    pub timeout_aborts: u64,
}

/// An instance cgroup's io.stat, summed over devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoUsage {
    /// rbytes.
    pub read_bytes: u64,
    /// wbytes.
    pub write_bytes: u64,
    /// rios.
    pub read_ops: u64,
    /// wios.
    pub write_ops: u64,
}

const GIB: u64 = 1024 * 1024 * 1024;

/// Whether an instance whose disk has `from_gib` (`used_bytes` of it in use) may get a
/// quota of `to_gib`; the one rule both backends apply. A quota grows, at once and also
/// while the instance runs; it never shrinks (an XFS file system cannot), and an
/// instance made without a quota (0) keeps none.
pub fn check_quota_change(from_gib: u64, to_gib: u64, used_bytes: u64) -> Result<()> {
    if to_gib == from_gib {
        return Ok(());
    }
    if from_gib == 0 {
        return Err(Error::invalid(
            "quota",
            "the instance was made without a quota (0, unlimited) and cannot get one",
        ));
    }
    if to_gib == 0 {
        return Err(Error::invalid(
            "quota",
            format!("0 (unlimited) cannot replace a quota of {from_gib} GiB"),
        ));
    }
    if to_gib.saturating_mul(GIB) < used_bytes {
        return Err(Error::invalid(
            "quota",
            format!(
                "{to_gib} GiB is less than the {} MiB in use on the instance's disk",
                used_bytes.div_ceil(1024 * 1024)
            ),
        ));
    }
    if to_gib < from_gib {
        return Err(Error::invalid(
            "quota",
            format!("{to_gib} GiB is less than the current {from_gib} GiB; a disk can only grow"),
        ));
    }
    Ok(())
}

/// Turns tasks into instances. See the module documentation for the contract.
pub trait ZoneBackend: Send + Sync + 'static {
    /// "linux" or "sim".
    fn kind(&self) -> &'static str;

    /// Installs the image once; later calls for the same image do nothing.
    fn image_ensure_present(&self, image: ImageSource) -> impl Future<Output = Result<()>> + Send;

    /// Whether the image is installed.
    fn image_present(&self, image_uuid: Uuid) -> impl Future<Output = Result<bool>> + Send;

    /// Creates the instance from its (installed) image, and boots it when `autoboot`.
    fn create(&self, spec: InstanceSpec) -> impl Future<Output = Result<Instance>> + Send;

    /// Boots a stopped instance; a running one is left alone.
    fn boot(&self, uuid: Uuid) -> impl Future<Output = Result<Instance>> + Send;

    /// Stops the instance: SIGTERM to pid 1, SIGKILL to everything after `timeout`. Its
    /// disk is kept.
    fn shutdown(
        &self,
        uuid: Uuid,
        timeout: Duration,
    ) -> impl Future<Output = Result<Instance>> + Send;

    /// Shutdown then boot.
    fn reboot(
        &self,
        uuid: Uuid,
        timeout: Duration,
    ) -> impl Future<Output = Result<Instance>> + Send;

    /// Resizes (at once, also while running), renames, and adds or removes NICs.
    fn update(
        &self,
        uuid: Uuid,
        update: InstanceUpdate,
    ) -> impl Future<Output = Result<Instance>> + Send;

    /// Takes a consistent snapshot of the instance's disk (its processes frozen while it
    /// is copied), running or stopped; the instance stays as it was.
    fn create_snapshot(
        &self,
        uuid: Uuid,
        name: String,
    ) -> impl Future<Output = Result<Instance>> + Send;

    /// Stops the instance (SIGTERM, SIGKILL after the rollback's `timeout`), puts its disk
    /// back as the snapshot has it, and boots it when `boot`. The snapshot is kept.
    fn rollback_snapshot(
        &self,
        uuid: Uuid,
        rollback: Rollback,
    ) -> impl Future<Output = Result<Instance>> + Send;

    /// Removes the snapshot and frees its space.
    fn delete_snapshot(
        &self,
        uuid: Uuid,
        name: String,
    ) -> impl Future<Output = Result<Instance>> + Send;

    /// Stops the instance and removes everything it had.
    fn destroy(&self, uuid: Uuid) -> impl Future<Output = Result<()>> + Send;

    fn get(&self, uuid: Uuid) -> impl Future<Output = Result<Instance>> + Send;

    fn list(&self) -> impl Future<Output = Result<Vec<Instance>>> + Send;

    fn usage(&self, uuid: Uuid) -> impl Future<Output = Result<InstanceUsage>> + Send;

    /// Settles what a crash of the agent left half done; run once at agent start,
    /// before any task. An instance whose create did not finish (still `provisioning`,
    /// or a directory without its record) is removed with everything it had, so the
    /// `machine_create` that VMAPI sends again (it finds the task unknown to the
    /// restarted agent) starts afresh. Returns the instances removed.
    fn reconcile(&self) -> impl Future<Output = Result<Vec<Uuid>>> + Send;
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small valid spec for the unit tests.
    pub(crate) fn spec() -> InstanceSpec {
        InstanceSpec {
            uuid: Uuid::new_v4(),
            owner_uuid: String::new(),
            alias: "web0".into(),
            hostname: "web0".into(),
            brand: "joyent-minimal".into(),
            image_uuid: Uuid::new_v4(),
            ram: 128,
            cpu_cap: 50,
            quota: 1,
            max_lwps: 100,
            nics: vec![NicSpec {
                mac: "02:00:00:00:00:01".into(),
                nic_tag: "admin".into(),
                ..Default::default()
            }],
            init: vec![],
            customer_metadata: Default::default(),
            internal_metadata: Default::default(),
            tags: Default::default(),
            autoboot: true,
            billing_id: String::new(),
        }
    }

    #[test]
    fn quotas_only_grow_and_never_below_what_is_used() {
        assert!(check_quota_change(1, 1, 5 * GIB).is_ok());
        assert!(check_quota_change(1, 2, GIB / 2).is_ok());
        let field_and_message = |r: Result<()>| match r {
            Err(Error::Invalid { field, message }) => (field, message),
            other => panic!("{other:?}"),
        };
        let (field, message) = field_and_message(check_quota_change(2, 1, GIB + 1));
        assert_eq!(field, "quota");
        assert!(message.contains("in use"), "{message}");
        let (field, message) = field_and_message(check_quota_change(2, 1, 0));
        assert_eq!(field, "quota");
        assert!(message.contains("only grow"), "{message}");
        assert_eq!(field_and_message(check_quota_change(0, 1, 0)).0, "quota");
        assert_eq!(field_and_message(check_quota_change(1, 0, 0)).0, "quota");
    }

    #[test]
    fn netmasks_parse_as_quads_or_lengths() {
        assert_eq!(parse_netmask("255.255.255.0"), Some(24));
        assert_eq!(parse_netmask("255.255.0.0"), Some(16));
        assert_eq!(parse_netmask("20"), Some(20));
        assert_eq!(parse_netmask("255.0.255.0"), None);
        assert_eq!(parse_netmask("33"), None);
    }

    #[test]
    fn bad_specs_name_the_field() {
        let mut s = spec();
        s.hostname = "bad host".into();
        assert!(matches!(s.validate(), Err(Error::Invalid { field, .. }) if field == "hostname"));
        let mut s = spec();
        s.nics[0].mac = "zz".into();
        assert!(
            matches!(s.validate(), Err(Error::Invalid { field, .. }) if field == "nics[0].mac")
        );
        assert!(spec().validate().is_ok());
    }

    #[test]
    fn update_adds_and_removes_nics_without_renaming_the_others() {
        let s = spec();
        let update = InstanceUpdate {
            ram: Some(256),
            add_nics: vec![NicSpec {
                mac: "02:00:00:00:00:02".into(),
                nic_tag: "external".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let s2 = update.apply_to(&s).unwrap();
        assert_eq!(s2.ram, 256);
        assert_eq!(s2.nics[1].interface, "eth1");
        let remove = InstanceUpdate {
            remove_nics: vec!["02:00:00:00:00:01".into()],
            ..Default::default()
        };
        let s3 = remove.apply_to(&s2).unwrap();
        assert_eq!(s3.nics.len(), 1);
        assert_eq!(s3.nics[0].interface, "eth1");
        let missing = InstanceUpdate {
            remove_nics: vec!["02:00:00:00:00:09".into()],
            ..Default::default()
        };
        assert!(missing.apply_to(&s3).is_err());
    }
}
