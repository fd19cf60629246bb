//! The `sim` backend: the same tasks, checks and state transitions as [`crate::linux`],
//! with no processes. Each step takes a configurable delay, so hundreds of simulated
//! compute nodes can run in one process. With a state file, instances survive a restart
//! of the backend object (as real instances survive a restart of cn-agent).
//!
//! What the linux backend makes real (hostname, addresses, cgroup limits, the disk and
//! its quota) the simulator records, and [`SimBackend::observe`] and the `disk_*` methods
//! expose it so the contract suite can check both backends the same way.
//!
//! Usage (CMon's numbers) is simulated: CPU time grows at a tenth of the instance's cap
//! while it runs, and the NIC, TCP and I/O counters grow with it ([`sim_nics`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::backend::{
    ImageSource, Instance, InstanceSpec, InstanceState, InstanceUpdate, InstanceUsage, IoUsage,
    NicUsage, Rollback, Snapshot, TcpUsage, ZoneBackend, check_new_snapshot, check_quota_change,
    check_rollback, find_snapshot, unix_now,
};
use crate::error::{Error, Result};

/// How long each simulated step takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimDelays {
    #[serde(with = "millis")]
    pub image: Duration,
    #[serde(with = "millis")]
    pub create: Duration,
    #[serde(with = "millis")]
    pub boot: Duration,
    #[serde(with = "millis")]
    pub shutdown: Duration,
    #[serde(with = "millis")]
    pub update: Duration,
    #[serde(with = "millis")]
    pub destroy: Duration,
    /// Taking, rolling back to or deleting a snapshot.
    #[serde(with = "millis")]
    pub snapshot: Duration,
}

impl Default for SimDelays {
    fn default() -> Self {
        SimDelays {
            image: Duration::ZERO,
            create: Duration::ZERO,
            boot: Duration::ZERO,
            shutdown: Duration::ZERO,
            update: Duration::ZERO,
            destroy: Duration::ZERO,
            snapshot: Duration::ZERO,
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// A simulated node: its step delays and the nic tags its NICs provide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    pub delays: SimDelays,
    pub nic_tags: Vec<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            delays: SimDelays::default(),
            nic_tags: vec!["admin".into(), "external".into()],
        }
    }
}

/// What the simulator pretends the kernel has, for one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimObservation {
    /// The hostname "inside" the instance; `None` while stopped.
    pub hostname: Option<String>,
    /// Addresses up on the instance's interfaces; empty while stopped.
    pub addresses: Vec<(String, Ipv4Addr)>,
    pub memory_limit_bytes: u64,
    /// Percent of one CPU; `None` is uncapped.
    pub cpu_quota_percent: Option<u32>,
    /// `None` is unlimited.
    pub pids_max: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SimZone {
    instance: Instance,
    /// The instance's disk: path to contents.
    disk: BTreeMap<String, String>,
    /// Files written by size only ([`SimBackend::disk_fill`]): path to bytes.
    #[serde(default)]
    filled: BTreeMap<String, u64>,
    /// The hostname of the current boot (a changed spec hostname applies at next boot).
    booted_hostname: Option<String>,
    /// CPU time accumulated by earlier boots.
    cpu_ns_before: u64,
    /// The contents of each snapshot (the names and times are in `instance.snapshots`).
    #[serde(default)]
    snapshot_disks: BTreeMap<String, SimDisk>,
}

/// A snapshot's copy of the disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SimDisk {
    disk: BTreeMap<String, String>,
    filled: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SimState {
    images: BTreeSet<Uuid>,
    zones: BTreeMap<Uuid, SimZone>,
}

/// A simulated zone backend. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct SimBackend {
    state: Arc<Mutex<SimState>>,
    delays: SimDelays,
    nic_tags: Arc<BTreeSet<String>>,
    state_file: Option<PathBuf>,
}

impl SimBackend {
    /// A simulator that keeps its state in memory only.
    pub fn in_memory(config: SimConfig) -> SimBackend {
        SimBackend {
            state: Arc::new(Mutex::new(SimState::default())),
            delays: config.delays,
            nic_tags: Arc::new(config.nic_tags.into_iter().collect()),
            state_file: None,
        }
    }

    /// A simulator that keeps its state in `state_file` (read now if it exists).
    pub fn persistent(state_file: PathBuf, config: SimConfig) -> Result<SimBackend> {
        let state = match std::fs::read(&state_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                what: state_file.display().to_string(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SimState::default(),
            Err(e) => return Err(Error::io(&state_file, e)),
        };
        Ok(SimBackend {
            state: Arc::new(Mutex::new(state)),
            delays: config.delays,
            nic_tags: Arc::new(config.nic_tags.into_iter().collect()),
            state_file: Some(state_file),
        })
    }

    /// What the "kernel" has for the instance, or `None` when it does not exist.
    pub fn observe(&self, uuid: Uuid) -> Option<SimObservation> {
        let state = self.lock();
        let zone = state.zones.get(&uuid)?;
        let running = zone.instance.state == InstanceState::Running;
        let spec = &zone.instance.spec;
        Some(SimObservation {
            hostname: if running {
                zone.booted_hostname.clone()
            } else {
                None
            },
            addresses: if running {
                spec.nics
                    .iter()
                    .enumerate()
                    .filter_map(|(i, n)| n.ip.map(|ip| (n.interface_name(i), ip)))
                    .collect()
            } else {
                Vec::new()
            },
            memory_limit_bytes: spec.ram * MIB,
            cpu_quota_percent: (spec.cpu_cap > 0).then_some(spec.cpu_cap),
            pids_max: (spec.max_lwps > 0).then_some(spec.max_lwps),
        })
    }

    /// Writes a file on the instance's disk (only while it runs, as on a real one). Past
    /// the quota the write fails with ENOSPC, as on a real disk.
    pub fn disk_write(&self, uuid: Uuid, path: &str, contents: &str) -> Result<()> {
        self.with_running_zone(uuid, |zone| {
            let room = zone.room_for(path);
            if contents.len() as u64 > room {
                return Err(no_space(path));
            }
            zone.disk.insert(path.to_string(), contents.to_string());
            Ok(())
        })
    }

    /// Writes `bytes` of zeros to a file on the instance's disk (replacing the file), as
    /// `dd` would: past the quota the disk ends up full and the write fails with ENOSPC.
    pub fn disk_fill(&self, uuid: Uuid, path: &str, bytes: u64) -> Result<()> {
        self.with_running_zone(uuid, |zone| {
            let room = zone.room_for(path);
            zone.disk.remove(path);
            zone.filled.insert(path.to_string(), bytes.min(room));
            if bytes > room {
                return Err(no_space(path));
            }
            Ok(())
        })
    }

    /// Size of the instance's disk in bytes; `None` when it has no quota.
    pub fn disk_size(&self, uuid: Uuid) -> Option<u64> {
        let quota = self.lock().zones.get(&uuid)?.instance.spec.quota;
        (quota > 0).then_some(quota << 30)
    }

    fn with_running_zone(
        &self,
        uuid: Uuid,
        f: impl FnOnce(&mut SimZone) -> Result<()>,
    ) -> Result<()> {
        let mut state = self.lock();
        let zone = state.zones.get_mut(&uuid).ok_or(Error::VmNotFound(uuid))?;
        if zone.instance.state != InstanceState::Running {
            return Err(wrong_state(&zone.instance, "writing a file"));
        }
        let result = f(zone);
        drop(state);
        self.save()?;
        result
    }

    pub fn disk_read(&self, uuid: Uuid, path: &str) -> Option<String> {
        self.lock().zones.get(&uuid)?.disk.get(path).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self) -> Result<()> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let bytes = {
            let state = self.lock();
            serde_json::to_vec(&*state).map_err(|source| Error::Json {
                what: "sim state".into(),
                source,
            })?
        };
        write_atomically(path, &bytes)
    }

    fn check_tags(&self, spec: &InstanceSpec) -> Result<()> {
        match spec
            .nics
            .iter()
            .find(|n| !self.nic_tags.contains(&n.nic_tag))
        {
            Some(nic) => Err(Error::UnknownNicTag(nic.nic_tag.clone())),
            None => Ok(()),
        }
    }

    fn with_zone<T>(&self, uuid: Uuid, f: impl FnOnce(&mut SimZone) -> Result<T>) -> Result<T> {
        let out = {
            let mut state = self.lock();
            let zone = state.zones.get_mut(&uuid).ok_or(Error::VmNotFound(uuid))?;
            f(zone)?
        };
        self.save()?;
        Ok(out)
    }

    fn boot_zone(zone: &mut SimZone) {
        zone.instance.state = InstanceState::Running;
        zone.instance.last_boot = Some(unix_now());
        zone.instance.last_modified = unix_now();
        zone.booted_hostname = Some(zone.instance.spec.hostname.clone());
        zone.instance.spec.autoboot = true;
    }

    fn stop_zone(zone: &mut SimZone) {
        zone.cpu_ns_before = cpu_ns(zone);
        zone.instance.state = InstanceState::Stopped;
        zone.instance.last_modified = unix_now();
        zone.booted_hostname = None;
    }
}

const MIB: u64 = 1024 * 1024;

impl SimZone {
    /// What the disk and its snapshots use. A snapshot shares what has not changed
    /// since it was taken (copy-on-write, as a reflink copy on XFS); what it holds that
    /// the disk no longer has counts.
    fn used_bytes(&self) -> u64 {
        let written: u64 = self.disk.values().map(|c| c.len() as u64).sum();
        let held: u64 = self
            .snapshot_disks
            .values()
            .map(|snap| {
                let files: u64 = snap
                    .disk
                    .iter()
                    .filter(|(path, c)| self.disk.get(*path) != Some(*c))
                    .map(|(_, c)| c.len() as u64)
                    .sum();
                let filled: u64 = snap
                    .filled
                    .iter()
                    .filter(|(path, n)| self.filled.get(*path) != Some(*n))
                    .map(|(_, n)| *n)
                    .sum();
                files + filled
            })
            .sum();
        written + self.filled.values().sum::<u64>() + held
    }

    /// Bytes a write to `path` may have (what the file holds now is freed first).
    fn room_for(&self, path: &str) -> u64 {
        let quota = self.instance.spec.quota;
        if quota == 0 {
            return u64::MAX;
        }
        let current = self.disk.get(path).map(|c| c.len() as u64).unwrap_or(0)
            + self.filled.get(path).copied().unwrap_or(0);
        (quota << 30).saturating_sub(self.used_bytes() - current)
    }
}

fn no_space(path: &str) -> Error {
    Error::io(path, std::io::Error::from_raw_os_error(libc::ENOSPC))
}

fn wrong_state(instance: &Instance, action: &'static str) -> Error {
    Error::WrongState {
        uuid: instance.spec.uuid,
        state: instance.state.as_str().to_string(),
        action,
    }
}

/// Simulated CPU time: the instance burns 10% of its cap (or of one CPU) while running.
fn cpu_ns(zone: &SimZone) -> u64 {
    let running_for = match (zone.instance.state, zone.instance.last_boot) {
        (InstanceState::Running, Some(boot)) => unix_now().saturating_sub(boot),
        _ => 0,
    };
    let cap = if zone.instance.spec.cpu_cap > 0 {
        u64::from(zone.instance.spec.cpu_cap)
    } else {
        100
    };
    zone.cpu_ns_before + running_for * 1_000_000_000 * cap / 1000
}

/// Simulated NIC counters, growing with the simulated CPU time (`cpu_ns`, which only
/// grows): per NIC 100 bytes received and 50 sent per ms of CPU, in 1000-byte packets.
/// Made up, for CMon's benchmark and tests on simulated nodes.
fn sim_nics(spec: &InstanceSpec, cpu_ns: u64) -> Vec<NicUsage> {
    let rx = cpu_ns / 10_000;
    let tx = cpu_ns / 20_000;
    spec.nics
        .iter()
        .enumerate()
        .map(|(i, nic)| NicUsage {
            interface: nic.interface_name(i),
            mac: nic.mac.clone(),
            network_uuid: nic.network_uuid.clone(),
            nic_tag: nic.nic_tag.clone(),
            rx_bytes: rx,
            tx_bytes: tx,
            rx_packets: rx / 1000,
            tx_packets: tx / 1000,
        })
        .collect()
}

/// The agent's one way of writing a state file: temporary file, fsync, rename, fsync of
/// the directory.
pub(crate) use crate::linux::safefs::write_atomically;

impl ZoneBackend for SimBackend {
    fn kind(&self) -> &'static str {
        "sim"
    }

    async fn reconcile(&self) -> Result<Vec<Uuid>> {
        let removed: Vec<Uuid> = {
            let mut state = self.lock();
            let half_made: Vec<Uuid> = state
                .zones
                .iter()
                .filter(|(_, z)| z.instance.state == InstanceState::Provisioning)
                .map(|(uuid, _)| *uuid)
                .collect();
            for uuid in &half_made {
                state.zones.remove(uuid);
            }
            half_made
        };
        if !removed.is_empty() {
            self.save()?;
        }
        Ok(removed)
    }

    async fn image_ensure_present(&self, image: ImageSource) -> Result<()> {
        if self.lock().images.contains(&image.image_uuid) {
            return Ok(());
        }
        tokio::time::sleep(self.delays.image).await;
        self.lock().images.insert(image.image_uuid);
        self.save()
    }

    async fn image_present(&self, image_uuid: Uuid) -> Result<bool> {
        Ok(self.lock().images.contains(&image_uuid))
    }

    async fn create(&self, spec: InstanceSpec) -> Result<Instance> {
        spec.validate()?;
        self.check_tags(&spec)?;
        {
            let mut state = self.lock();
            if state.zones.contains_key(&spec.uuid) {
                return Err(Error::VmExists(spec.uuid));
            }
            if !state.images.contains(&spec.image_uuid) {
                return Err(Error::ImageNotFound(spec.image_uuid));
            }
            state.zones.insert(
                spec.uuid,
                SimZone {
                    instance: Instance {
                        spec: spec.clone(),
                        state: InstanceState::Provisioning,
                        pid: None,
                        last_boot: None,
                        last_modified: unix_now(),
                        snapshots: Vec::new(),
                    },
                    disk: BTreeMap::new(),
                    filled: BTreeMap::new(),
                    booted_hostname: None,
                    cpu_ns_before: 0,
                    snapshot_disks: BTreeMap::new(),
                },
            );
        }
        tokio::time::sleep(self.delays.create).await;
        let uuid = spec.uuid;
        self.with_zone(uuid, |zone| {
            Self::stop_zone(zone);
            Ok(())
        })?;
        if spec.autoboot {
            self.boot(uuid).await
        } else {
            self.get(uuid).await
        }
    }

    async fn boot(&self, uuid: Uuid) -> Result<Instance> {
        let state = self.get(uuid).await?.state;
        match state {
            InstanceState::Running => return self.get(uuid).await,
            InstanceState::Stopped => {}
            _ => {
                let instance = self.get(uuid).await?;
                return Err(wrong_state(&instance, "boot"));
            }
        }
        tokio::time::sleep(self.delays.boot).await;
        self.with_zone(uuid, |zone| {
            Self::boot_zone(zone);
            Ok(zone.instance.clone())
        })
    }

    async fn shutdown(&self, uuid: Uuid, _timeout: Duration) -> Result<Instance> {
        let instance = self.get(uuid).await?;
        if instance.state != InstanceState::Running {
            return Ok(instance);
        }
        tokio::time::sleep(self.delays.shutdown).await;
        self.with_zone(uuid, |zone| {
            Self::stop_zone(zone);
            zone.instance.spec.autoboot = false;
            Ok(zone.instance.clone())
        })
    }

    async fn reboot(&self, uuid: Uuid, timeout: Duration) -> Result<Instance> {
        let instance = self.get(uuid).await?;
        if instance.state != InstanceState::Running {
            return Err(wrong_state(&instance, "reboot"));
        }
        self.shutdown(uuid, timeout).await?;
        self.boot(uuid).await
    }

    async fn update(&self, uuid: Uuid, update: InstanceUpdate) -> Result<Instance> {
        let current = self.get(uuid).await?;
        let next = update.apply_to(&current.spec)?;
        self.check_tags(&next)?;
        tokio::time::sleep(self.delays.update).await;
        self.with_zone(uuid, |zone| {
            check_quota_change(zone.instance.spec.quota, next.quota, zone.used_bytes())?;
            zone.instance.spec = next;
            zone.instance.last_modified = unix_now();
            Ok(zone.instance.clone())
        })
    }

    async fn create_snapshot(&self, uuid: Uuid, name: String) -> Result<Instance> {
        check_new_snapshot(&self.get(uuid).await?, &name)?;
        tokio::time::sleep(self.delays.snapshot).await;
        self.with_zone(uuid, |zone| {
            // Checked again under the lock: the state may have moved during the delay.
            check_new_snapshot(&zone.instance, &name)?;
            let copy = SimDisk {
                disk: zone.disk.clone(),
                filled: zone.filled.clone(),
            };
            zone.snapshot_disks.insert(name.clone(), copy);
            zone.instance.snapshots.push(Snapshot {
                name,
                created: unix_now(),
            });
            zone.instance.last_modified = unix_now();
            Ok(zone.instance.clone())
        })
    }

    async fn rollback_snapshot(&self, uuid: Uuid, rollback: Rollback) -> Result<Instance> {
        let Rollback {
            name,
            boot,
            timeout,
        } = rollback;
        check_rollback(&self.get(uuid).await?, &name)?;
        self.shutdown(uuid, timeout).await?;
        tokio::time::sleep(self.delays.snapshot).await;
        self.with_zone(uuid, |zone| {
            let copy =
                zone.snapshot_disks
                    .get(&name)
                    .cloned()
                    .ok_or_else(|| Error::SnapshotNotFound {
                        uuid,
                        name: name.clone(),
                    })?;
            zone.disk = copy.disk;
            zone.filled = copy.filled;
            zone.instance.last_modified = unix_now();
            Ok(())
        })?;
        if boot {
            self.boot(uuid).await
        } else {
            self.get(uuid).await
        }
    }

    async fn delete_snapshot(&self, uuid: Uuid, name: String) -> Result<Instance> {
        find_snapshot(&self.get(uuid).await?, &name)?;
        tokio::time::sleep(self.delays.snapshot).await;
        self.with_zone(uuid, |zone| {
            find_snapshot(&zone.instance, &name)?;
            zone.snapshot_disks.remove(&name);
            zone.instance.snapshots.retain(|s| s.name != name);
            zone.instance.last_modified = unix_now();
            Ok(zone.instance.clone())
        })
    }

    async fn destroy(&self, uuid: Uuid) -> Result<()> {
        self.get(uuid).await?;
        tokio::time::sleep(self.delays.destroy).await;
        self.lock().zones.remove(&uuid);
        self.save()
    }

    async fn get(&self, uuid: Uuid) -> Result<Instance> {
        let state = self.lock();
        let zone = state.zones.get(&uuid).ok_or(Error::VmNotFound(uuid))?;
        Ok(zone.instance.clone())
    }

    async fn list(&self) -> Result<Vec<Instance>> {
        Ok(self
            .lock()
            .zones
            .values()
            .map(|z| z.instance.clone())
            .collect())
    }

    async fn usage(&self, uuid: Uuid) -> Result<InstanceUsage> {
        let state = self.lock();
        let zone = state.zones.get(&uuid).ok_or(Error::VmNotFound(uuid))?;
        let running = zone.instance.state == InstanceState::Running;
        let spec = &zone.instance.spec;
        let cpu = cpu_ns(zone);
        let nics = sim_nics(spec, cpu);
        Ok(InstanceUsage {
            uuid,
            cpu_usage_ns: cpu,
            // A running simulated instance uses a quarter of its memory.
            memory_bytes: if running { spec.ram * MIB / 4 } else { 0 },
            memory_limit_bytes: spec.ram * MIB,
            net_rx_bytes: nics.iter().map(|n| n.rx_bytes).sum(),
            net_tx_bytes: nics.iter().map(|n| n.tx_bytes).sum(),
            processes: u64::from(running),
            disk_used_bytes: zone.used_bytes(),
            disk_limit_bytes: spec.quota << 30,
            cpu_user_ns: cpu / 5 * 4,
            cpu_sys_ns: cpu - cpu / 5 * 4,
            swap_bytes: 0,
            swap_limit_bytes: spec.ram * MIB,
            mem_anon_alloc_fail: 0,
            load_average: if running { 0.1 } else { 0.0 },
            nics,
            tcp: TcpUsage {
                active_opens: cpu / 10_000_000_000,
                passive_opens: cpu / 1_000_000_000,
                current_established: u64::from(running) * 2,
                retransmitted_segments: cpu / 100_000_000_000,
                failed_connection_attempts: cpu / 1_000_000_000_000,
                ..Default::default()
            },
            io: IoUsage {
                read_bytes: cpu / 25_000,
                write_bytes: cpu / 12_500,
                read_ops: cpu / 100_000_000,
                write_ops: cpu / 50_000_000,
            },
            cpu_wait_ns: cpu / 20,
            cpu_cap: crate::backend::CapUsage {
                percent: (spec.cpu_cap > 0).then_some(spec.cpu_cap),
                period_us: 100_000,
                ..Default::default()
            },
            ..Default::default()
        })
    }
}
