//! The `linux` backend: every instance is a real container.
//!
//! * root: an overlayfs whose lower layer is the image, extracted once per image and
//!   shared ([`image`]), and whose upper layer is the instance's own disk, kept across
//!   stop, start and reboot: a file system of `quota` GiB of its own ([`disk`]);
//!   entered with `pivot_root`, so the host's files are out of reach ([`launch`]);
//! * namespaces: user (a uid/gid range of the instance's own, [`idmap`]), mount, pid,
//!   uts (the instance's hostname), ipc, net and cgroup ([`launch`]); the container
//!   capability set, `no_new_privs` and a seccomp filter ([`sandbox`]); `zlogin` runs
//!   commands inside the same way ([`zlogin`]);
//! * cgroup limits from the package: memory = ram, cpu quota = cpu_cap,
//!   pids = max_lwps, on cgroup v1 or v2 ([`cgroup`]);
//! * one veth per NIC into the Linux bridge of its nic tag, the NIC's address,
//!   gateway and resolvers configured inside ([`net`]);
//! * the image's init command as pid 1.
//! * the instance's metadata as files under `/etc/triton/metadata/`, rewritten at each
//!   boot ([`metadata`]).
//! * its NFS volumes (`sdc:volumes`) mounted at their mountpoints before pid 1 starts,
//!   each by a `volmount` of its own in the instance's network namespace ([`volumes`]).
//!
//! The backend keeps nothing in memory that matters: an instance's spec is
//! `<state_dir>/zones/<uuid>/zone.json`, and whether it runs is read from its cgroup. A
//! new backend object (cn-agent restarted) finds every instance as it is.

pub mod cgroup;
mod command;
pub mod disk;
pub mod firewall;
mod held;
pub mod idmap;
pub mod image;
pub mod launch;
pub mod leftovers;
pub mod metadata;
pub mod net;
pub mod netlink;
pub mod overlay;
pub mod safefs;
pub mod sandbox;
pub mod usage;
pub mod volumes;
pub mod zlogin;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use self::cgroup::{Cgroups, Limits};
use self::disk::Disk;
use self::idmap::IdRange;
use self::launch::LaunchPlan;
use self::net::Network;
use self::safefs::{Owner, Tree, write_atomically};
use crate::backend::{
    ImageSource, Instance, InstanceSpec, InstanceState, InstanceUpdate, InstanceUsage, Rollback,
    Snapshot, ZoneBackend, check_new_snapshot, check_quota_change, check_rollback, find_snapshot,
    unix_now,
};
use crate::error::{Error, Result};

/// How long a booting instance has to show its pid 1.
const BOOT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long processes get to die after SIGKILL before the stop is an error.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a running instance's processes have to freeze for a snapshot.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `link_prefix`: with 8 hex digits and a NIC number it must fit IFNAMSIZ.
const LINK_PREFIX_MAX: usize = 4;

/// Where the linux backend keeps things, and how it names what it creates on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinuxConfig {
    /// `zones/` and `images/` live here.
    pub state_dir: PathBuf,
    /// Mount point of the cgroup file systems.
    pub cgroup_root: PathBuf,
    /// Instances' cgroups are `<cgroup_parent>/<uuid>` in each hierarchy.
    pub cgroup_parent: String,
    /// `ip netns` names are `<netns_prefix><uuid>`.
    pub netns_prefix: String,
    /// Host ends of veths are `<link_prefix><8 hex of the uuid><nic number>`.
    pub link_prefix: String,
    /// nic tag -> Linux bridge.
    pub bridges: BTreeMap<String, String>,
    /// Create a configured bridge that does not exist yet.
    pub create_bridges: bool,
    /// Host addresses and ports instances on tenant bridges may reach over UDP and TCP
    /// (the datacenter's DNS: CNS); every other host port is closed to them.
    pub tenant_services: Vec<std::net::SocketAddrV4>,
    /// The `volmount` program that mounts instances' volumes; unset: `volmount` beside
    /// the running executable.
    pub volmount_bin: Option<PathBuf>,
}

impl Default for LinuxConfig {
    fn default() -> Self {
        LinuxConfig {
            state_dir: PathBuf::from("/var/lib/cn-agent"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: "triton".into(),
            netns_prefix: "triton-".into(),
            link_prefix: "z".into(),
            bridges: BTreeMap::from([("admin".to_string(), "br-admin".to_string())]),
            create_bridges: true,
            tenant_services: Vec::new(),
            volmount_bin: None,
        }
    }
}

/// What zone.json holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ZoneRecord {
    spec: InstanceSpec,
    /// The last state the agent set. `running` and `stopped` are checked against the
    /// cgroup on every read; `provisioning` and `failed` are taken as they are.
    state: InstanceState,
    last_boot: Option<u64>,
    last_modified: u64,
    /// Names and times; each one's files are `<disk>/snapshots/<name>`.
    #[serde(default)]
    snapshots: Vec<Snapshot>,
    /// The instance's host uid/gid range ([`idmap`]); absent in a record made before
    /// instances had one, until its next boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ids: Option<IdRange>,
}

#[derive(Clone)]
pub struct LinuxBackend {
    inner: Arc<Inner>,
}

struct Inner {
    zones_dir: PathBuf,
    images_dir: PathBuf,
    cgroups: Cgroups,
    net: Network,
    image_locks: Mutex<HashMap<Uuid, Arc<Mutex<()>>>>,
    /// Held while a uid range is picked and recorded, so two instances never get one.
    ids_lock: Mutex<()>,
    volmount: PathBuf,
}

impl LinuxBackend {
    /// Opens (and creates) the state directory and detects the host's cgroups. Instances
    /// already there are found as they are, running or not.
    pub fn new(config: LinuxConfig) -> Result<LinuxBackend> {
        LinuxBackend::with_overlay(config, None)
    }

    /// As [`LinuxBackend::new`], with the node's overlay for fabric NICs.
    pub fn with_overlay(
        config: LinuxConfig,
        overlay: Option<Arc<overlay::Overlay>>,
    ) -> Result<LinuxBackend> {
        if config.link_prefix.is_empty() || config.link_prefix.len() > LINK_PREFIX_MAX {
            return Err(Error::invalid("link_prefix", "must be 1 to 4 characters"));
        }
        if config.cgroup_parent.is_empty() || config.cgroup_parent.contains("..") {
            return Err(Error::invalid("cgroup_parent", "must be a relative path"));
        }
        for (tag, bridge) in &config.bridges {
            if bridge.is_empty() || bridge.len() > net::IFNAME_MAX {
                return Err(Error::invalid(
                    &format!("bridges.{tag}"),
                    "must be 1 to 15 characters",
                ));
            }
        }
        let volmount = volumes::program(config.volmount_bin.as_deref());
        let zones_dir = config.state_dir.join("zones");
        let images_dir = config.state_dir.join("images");
        for dir in [&zones_dir, &images_dir] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let cgroups = Cgroups::detect(&config.cgroup_root, &config.cgroup_parent)?;
        let net = Network {
            netns_prefix: config.netns_prefix,
            link_prefix: config.link_prefix,
            bridges: config.bridges,
            create_bridges: config.create_bridges,
            tenant_services: config.tenant_services,
            overlay,
        };
        // Tenant bridges closed to the host, instance ports guarded (firewall.rs).
        net.install_firewall()?;
        Ok(LinuxBackend {
            inner: Arc::new(Inner {
                zones_dir,
                images_dir,
                cgroups,
                net,
                image_locks: Mutex::new(HashMap::new()),
                ids_lock: Mutex::new(()),
                volmount,
            }),
        })
    }

    pub fn cgroups(&self) -> &Cgroups {
        &self.inner.cgroups
    }

    pub fn network(&self) -> &Network {
        &self.inner.net
    }

    /// The directory of the instance (disk, config, console log).
    pub fn zone_dir(&self, uuid: Uuid) -> PathBuf {
        self.inner.zone_dir(uuid)
    }

    /// The instance's disk.
    pub fn disk(&self, uuid: Uuid) -> Disk {
        self.inner.disk(uuid)
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::Join(e.to_string()))?
    }
}

impl Inner {
    fn zone_dir(&self, uuid: Uuid) -> PathBuf {
        self.zones_dir.join(uuid.to_string())
    }

    fn disk(&self, uuid: Uuid) -> Disk {
        Disk::new(&self.zone_dir(uuid))
    }

    fn record_path(&self, uuid: Uuid) -> PathBuf {
        self.zone_dir(uuid).join("zone.json")
    }

    fn read_record(&self, uuid: Uuid) -> Result<ZoneRecord> {
        let path = self.record_path(uuid);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::VmNotFound(uuid));
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            what: path.display().to_string(),
            source,
        })
    }

    fn write_record(&self, record: &ZoneRecord) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| Error::Json {
            what: "zone record".into(),
            source,
        })?;
        write_atomically(&self.record_path(record.spec.uuid), &bytes)
    }

    fn set_state(&self, uuid: Uuid, state: InstanceState, booted: bool) -> Result<()> {
        let mut record = self.read_record(uuid)?;
        record.state = state;
        record.last_modified = unix_now();
        if booted {
            record.last_boot = Some(unix_now());
            // As `vmadm start`: a started instance comes back after a reboot of the node.
            record.spec.autoboot = true;
        }
        self.write_record(&record)
    }

    fn instance(&self, record: ZoneRecord) -> Instance {
        let uuid = record.spec.uuid;
        let (state, pid) = match record.state {
            InstanceState::Provisioning | InstanceState::Failed => (record.state, None),
            InstanceState::Running | InstanceState::Stopped => {
                let pids = self.cgroups.pids(uuid);
                if pids.is_empty() {
                    (InstanceState::Stopped, None)
                } else {
                    (InstanceState::Running, launch::find_init(&pids))
                }
            }
        };
        Instance {
            spec: record.spec,
            state,
            pid,
            last_boot: record.last_boot,
            last_modified: record.last_modified,
            snapshots: record.snapshots,
        }
    }

    fn get(&self, uuid: Uuid) -> Result<Instance> {
        let record = self.read_record(uuid)?;
        Ok(self.instance(record))
    }

    fn list(&self) -> Result<Vec<Instance>> {
        let mut out = Vec::new();
        for uuid in self.zone_dirs()? {
            match self.get(uuid) {
                Ok(instance) => out.push(instance),
                // Being created or destroyed right now.
                Err(Error::VmNotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(%uuid, error = %e.chain(), "skipping unreadable zone")
                }
            }
        }
        out.sort_by_key(|i| i.spec.uuid);
        Ok(out)
    }

    fn image_lock(&self, uuid: Uuid) -> Arc<Mutex<()>> {
        let mut locks = self.image_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(uuid).or_default().clone()
    }

    fn image_ensure_present(&self, source: &ImageSource) -> Result<()> {
        let lock = self.image_lock(source.image_uuid);
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        image::ensure_present(&self.images_dir, source)
    }

    fn create(&self, spec: &InstanceSpec) -> Result<()> {
        spec.validate()?;
        self.net.check_tags(&spec.nics)?;
        if !image::is_present(&self.images_dir, spec.image_uuid) {
            return Err(Error::ImageNotFound(spec.image_uuid));
        }
        let dir = self.zone_dir(spec.uuid);
        if let Err(e) = std::fs::create_dir(&dir) {
            return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::VmExists(spec.uuid)
            } else {
                Error::io(&dir, e)
            });
        }
        let made = self
            .record_new(spec)
            .and_then(|ids| self.make_disk(spec, ids));
        if let Err(e) = made {
            // Leave nothing behind, so the create can be tried again.
            self.disk(spec.uuid).release();
            if let Err(cleanup) = safefs::remove_host_tree(&dir) {
                tracing::warn!(uuid = %spec.uuid, error = %cleanup.chain(), "cleanup after a failed create failed");
            }
            return Err(e);
        }
        if spec.autoboot {
            // Provisioning until its first boot is done (`first_boot`): a crash before
            // then undoes the whole create, and the record is written once less.
            return Ok(());
        }
        self.set_state(spec.uuid, InstanceState::Stopped, false)
    }

    /// Writes the first record of a new instance, with a uid range of its own: the lowest
    /// free slot among every record's, picked and written under `ids_lock`.
    fn record_new(&self, spec: &InstanceSpec) -> Result<IdRange> {
        let _held = self.ids_lock.lock().unwrap_or_else(|e| e.into_inner());
        let ids = idmap::free_slot(&self.ranges_in_use())?;
        self.write_record(&ZoneRecord {
            spec: spec.clone(),
            state: InstanceState::Provisioning,
            last_boot: None,
            last_modified: unix_now(),
            snapshots: Vec::new(),
            ids: Some(ids),
        })?;
        Ok(ids)
    }

    /// The uid ranges of every instance on the node (a destroyed one's record is gone,
    /// and its range with it).
    fn ranges_in_use(&self) -> Vec<IdRange> {
        let Ok(entries) = std::fs::read_dir(&self.zones_dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| Uuid::parse_str(e.file_name().to_str()?).ok())
            .filter_map(|uuid| self.read_record(uuid).ok()?.ids)
            .collect()
    }

    /// The instance's uid range. An instance made before instances had one gets one
    /// now, and the files of its disk (its upper layer and snapshots, all owned by host
    /// ids below 65536 until now) are moved into it, once.
    fn ensure_ids(&self, uuid: Uuid) -> Result<IdRange> {
        if let Some(ids) = self.read_record(uuid)?.ids {
            return Ok(ids);
        }
        let ids = {
            let _held = self.ids_lock.lock().unwrap_or_else(|e| e.into_inner());
            let mut record = self.read_record(uuid)?;
            let ids = idmap::free_slot(&self.ranges_in_use())?;
            record.ids = Some(ids);
            self.write_record(&record)?;
            ids
        };
        let disk = self.disk(uuid);
        tracing::info!(%uuid, base = ids.base, "moving the instance's files into its uid range");
        idmap::shift_tree(&disk.upper(), ids)?;
        if disk.snapshots().is_dir() {
            idmap::shift_tree(&disk.snapshots(), ids)?;
        }
        Ok(ids)
    }

    /// The instance's disk with the mount points the image may lack, left unmounted. The
    /// upper layer's top and what is made here belong to the instance's root.
    fn make_disk(&self, spec: &InstanceSpec, ids: IdRange) -> Result<()> {
        let dir = self.zone_dir(spec.uuid);
        let root = dir.join("root");
        std::fs::create_dir(&root).map_err(|e| Error::io(&root, e))?;
        let disk = self.disk(spec.uuid);
        disk.create(spec.quota)?;
        let lower = image::image_root(&self.images_dir, spec.image_uuid);
        let top = disk.upper();
        std::os::unix::fs::lchown(&top, Some(ids.base), Some(ids.base))
            .map_err(|e| Error::io(&top, e))?;
        let upper = Tree::open(&top)?;
        for mount_point in ["dev", "proc", "sys", "etc"] {
            if std::fs::symlink_metadata(lower.join(mount_point)).is_err() {
                upper.create_dir(Path::new(mount_point), 0o755, owner(ids))?;
            }
        }
        // The handle keeps the file system busy.
        drop(upper);
        disk.unmount()
    }

    /// /etc/hostname, /etc/hosts and /etc/resolv.conf on the instance's disk, owned by
    /// `owner` (the instance's root). The disk is the tenant's: paths resolve inside it
    /// as the instance sees them (a planted `etc -> /host/dir` leads to the instance's
    /// own `/host/dir`, never the host's), and a symlink at a file's name (as
    /// systemd-resolved's `resolv.conf`) is replaced, not written through ([`safefs`]).
    fn write_etc(&self, spec: &InstanceSpec, owner: Owner) -> Result<()> {
        let upper = Tree::open(&self.disk(spec.uuid).upper())?;
        upper.create_dir_all(Path::new("etc"), 0o755, owner)?;
        let mut hosts = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
        for nic in &spec.nics {
            if let Some(ip) = nic.ip {
                hosts.push_str(&format!("{ip}\t{}\n", spec.hostname));
            }
        }
        let mut resolvers: Vec<String> = Vec::new();
        for r in spec.nics.iter().flat_map(|n| n.resolvers.iter()) {
            let r = r.to_string();
            if !resolvers.contains(&r) {
                resolvers.push(r);
            }
        }
        let resolv: String = resolvers
            .iter()
            .map(|r| format!("nameserver {r}\n"))
            .collect();
        for (name, contents) in [
            ("hostname", format!("{}\n", spec.hostname)),
            ("hosts", hosts),
            ("resolv.conf", resolv),
        ] {
            upper.write_file(
                &Path::new("etc").join(name),
                contents.as_bytes(),
                0o644,
                owner,
            )?;
        }
        Ok(())
    }

    fn boot(&self, uuid: Uuid) -> Result<Instance> {
        self.boot_from(uuid, InstanceState::Stopped)
    }

    /// The boot that ends a create with `autoboot`: from `provisioning`.
    fn first_boot(&self, uuid: Uuid) -> Result<Instance> {
        self.boot_from(uuid, InstanceState::Provisioning)
    }

    /// Boots the instance if it is in state `from` (running already is fine).
    fn boot_from(&self, uuid: Uuid, from: InstanceState) -> Result<Instance> {
        let instance = self.get(uuid)?;
        match instance.state {
            InstanceState::Running => return Ok(instance),
            state if state == from => {}
            _ => {
                return Err(Error::WrongState {
                    uuid,
                    state: instance.state.as_str().into(),
                    action: "boot",
                });
            }
        }
        let spec = &instance.spec;
        let result = self.start_processes(spec);
        match result {
            Ok(()) => {
                self.set_state(uuid, InstanceState::Running, true)?;
                self.get(uuid)
            }
            Err(e) => {
                // Leave nothing half-started behind.
                if let Err(cleanup) = self.stop_processes(uuid, None) {
                    tracing::warn!(%uuid, error = %cleanup.chain(), "cleanup after a failed boot failed");
                }
                Err(e)
            }
        }
    }

    fn start_processes(&self, spec: &InstanceSpec) -> Result<()> {
        let uuid = spec.uuid;
        let dir = self.zone_dir(uuid);
        self.cgroups.create(
            uuid,
            Limits::from_package(spec.ram, spec.cpu_cap, spec.max_lwps),
        )?;
        if !self.cgroups.pids(uuid).is_empty() {
            // Leftovers of a crashed boot: never run two copies.
            self.cgroups.kill_all(uuid, KILL_TIMEOUT)?;
        }
        let disk = self.disk(uuid);
        disk.adopt_legacy()?;
        disk.mount()?;
        let ids = self.ensure_ids(uuid)?;
        self.write_etc(spec, owner(ids))?;
        metadata::write(
            uuid,
            &disk.upper(),
            &spec.customer_metadata,
            &spec.internal_metadata,
            owner(ids),
        )?;
        let lower_mount = dir.join("lower");
        if let Err(e) = std::fs::create_dir(&lower_mount)
            && e.kind() != std::io::ErrorKind::AlreadyExists
        {
            return Err(Error::io(&lower_mount, e));
        }
        // The user namespace first: the network namespace belongs to it.
        let userns = idmap::make_userns(ids)?;
        self.net.setup(uuid, &spec.nics, &userns)?;
        let root = dir.join("root");
        let lower = image::image_root(&self.images_dir, spec.image_uuid);
        let netns = self.net.netns_path(uuid);
        let volumes = volumes::start(
            &volumes::Plan {
                program: &self.volmount,
                zone_dir: &dir,
                netns: &netns,
                ids,
                upper: &disk.upper(),
                lower: &lower,
                root: &root,
            },
            &volumes::parse(&spec.internal_metadata)?,
        )?;
        let plan = LaunchPlan {
            uuid,
            netns,
            root,
            lower,
            lower_mount,
            upper: disk.upper(),
            work: disk.work(),
            hostname: spec.hostname.clone(),
            cgroup_procs: self.cgroups.procs_files(uuid),
            init: spec.init_argv(),
            console: dir.join("console.log"),
            ids,
            userns,
            volumes,
        };
        let console_tail = || {
            let console = std::fs::read_to_string(&plan.console).unwrap_or_default();
            let mut tail: Vec<&str> = console.lines().rev().take(10).collect();
            tail.reverse();
            tail.join("\n")
        };
        let init = launch::launch(&plan).map_err(|e| Error::Command {
            command: format!("boot of instance {uuid}"),
            output: format!(
                "pid 1 {:?} could not start: {}; console: {}",
                plan.init[0],
                e.chain(),
                console_tail()
            ),
        })?;
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            if launch::find_init(&self.cgroups.pids(uuid)).is_some() {
                return Ok(());
            }
            let init_alive = std::fs::read_to_string(format!("/proc/{init}/stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false);
            if !init_alive || Instant::now() >= deadline {
                return Err(Error::Command {
                    command: format!("boot of instance {uuid}"),
                    output: if init_alive {
                        format!(
                            "pid 1 did not appear within {BOOT_TIMEOUT:?}; console: {}",
                            console_tail()
                        )
                    } else {
                        format!("the instance exited at once; console: {}", console_tail())
                    },
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM to pid 1 (when `grace` is set), SIGKILL to whatever is left after it, then
    /// the network namespace and its veths go and the disk is unmounted.
    fn stop_processes(&self, uuid: Uuid, grace: Option<Duration>) -> Result<()> {
        if let Some(grace) = grace {
            let pids = self.cgroups.pids(uuid);
            if let Some(init) = launch::find_init(&pids) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe {
                    libc::kill(init as libc::pid_t, libc::SIGTERM);
                }
                let deadline = Instant::now() + grace;
                while Instant::now() < deadline && !self.cgroups.pids(uuid).is_empty() {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        if self.cgroups.exists(uuid) {
            self.cgroups.kill_all(uuid, KILL_TIMEOUT)?;
        }
        volumes::stop(&self.zone_dir(uuid));
        self.net.teardown(uuid)?;
        self.unmount_disk(uuid);
        Ok(())
    }

    /// A disk that stays busy stays mounted; the next boot uses it as it is.
    fn unmount_disk(&self, uuid: Uuid) {
        if let Err(e) = self.disk(uuid).unmount() {
            tracing::warn!(%uuid, error = %e.chain(), "the disk of a stopped instance stays mounted");
        }
    }

    fn shutdown(&self, uuid: Uuid, grace: Duration) -> Result<Instance> {
        let instance = self.get(uuid)?;
        if instance.state == InstanceState::Running {
            self.stop_processes(uuid, Some(grace))?;
        } else {
            // Its processes died without a stop (killed, crashed): the disk and the
            // volumes are still in use by nothing.
            volumes::stop(&self.zone_dir(uuid));
            self.unmount_disk(uuid);
        }
        if matches!(
            instance.state,
            InstanceState::Running | InstanceState::Stopped
        ) {
            // As `vmadm stop`: a stopped instance stays stopped after a reboot of the node.
            let mut record = self.read_record(uuid)?;
            record.state = InstanceState::Stopped;
            record.spec.autoboot = false;
            record.last_modified = unix_now();
            self.write_record(&record)?;
        }
        self.get(uuid)
    }

    fn update(&self, uuid: Uuid, update: &InstanceUpdate) -> Result<Instance> {
        let mut record = self.read_record(uuid)?;
        let instance = self.instance(record.clone());
        let next = update.apply_to(&record.spec)?;
        self.net.check_tags(&next.nics)?;
        if next.quota != record.spec.quota {
            let disk = self.disk(uuid);
            check_quota_change(record.spec.quota, next.quota, disk.used_bytes())?;
            disk.grow(next.quota)?;
        }
        if self.cgroups.exists(uuid) {
            self.cgroups.set_limits(
                uuid,
                Limits::from_package(next.ram, next.cpu_cap, next.max_lwps),
            )?;
        }
        if instance.state == InstanceState::Running {
            for (index, nic) in record.spec.nics.iter().enumerate() {
                if update
                    .remove_nics
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(&nic.mac))
                {
                    self.net.remove_nic(uuid, nic, index)?;
                }
            }
            let first_new = next.nics.len() - update.add_nics.len();
            for (index, nic) in next.nics.iter().enumerate().skip(first_new) {
                self.net.add_nic(uuid, nic, index)?;
            }
        }
        record.spec = next;
        record.last_modified = unix_now();
        self.write_record(&record)?;
        self.get(uuid)
    }

    /// Runs `f` with the instance's disk mounted, and unmounts it after if it was not
    /// mounted before (a stopped instance holds no loop device).
    fn with_disk_mounted<T>(&self, uuid: Uuid, f: impl FnOnce(&Disk) -> Result<T>) -> Result<T> {
        let disk = self.disk(uuid);
        disk.adopt_legacy()?;
        let was_mounted = disk.is_mounted();
        disk.mount()?;
        let result = f(&disk);
        if !was_mounted {
            self.unmount_disk(uuid);
        }
        result
    }

    /// A copy of the instance's upper layer, `<disk>/snapshots/<name>`, taken with its
    /// processes frozen so what is copied is one moment's state.
    fn create_snapshot(&self, uuid: Uuid, name: &str) -> Result<Instance> {
        let mut record = self.read_record(uuid)?;
        let instance = self.instance(record.clone());
        check_new_snapshot(&instance, name)?;
        let running = instance.state == InstanceState::Running;
        self.with_disk_mounted(uuid, |disk| {
            let dir = disk.snapshots();
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            let to = dir.join(name);
            // Left over by a take that died half-way (its name was never recorded).
            disk::remove_tree(&to)?;
            if running {
                self.cgroups.freeze(uuid, FREEZE_TIMEOUT)?;
            }
            let copied = disk.copy_tree(&disk.upper(), &to);
            if running {
                self.cgroups.thaw(uuid);
            }
            copied
        })?;
        record.snapshots.push(Snapshot {
            name: name.to_string(),
            created: unix_now(),
        });
        record.last_modified = unix_now();
        self.write_record(&record)?;
        self.get(uuid)
    }

    /// Stops the instance, makes its upper layer a copy of the snapshot (the snapshot
    /// stays as it is, for the next rollback), and boots it when `boot`.
    fn rollback_snapshot(&self, uuid: Uuid, rollback: &Rollback) -> Result<Instance> {
        let Rollback {
            name,
            boot,
            timeout,
        } = rollback;
        check_rollback(&self.get(uuid)?, name)?;
        self.shutdown(uuid, *timeout)?;
        self.with_disk_mounted(uuid, |disk| {
            let base = disk.mount_point();
            let (staged, old) = (base.join("rollback"), base.join("upper.old"));
            disk::remove_tree(&staged)?;
            disk::remove_tree(&old)?;
            // Copy first: a copy that fails (no room) leaves the disk as it was.
            disk.copy_tree(&disk.snapshots().join(name), &staged)?;
            let upper = disk.upper();
            std::fs::rename(&upper, &old).map_err(|e| Error::io(&upper, e))?;
            if let Err(e) = std::fs::rename(&staged, &upper) {
                // Put the instance's own files back rather than leave it without any.
                if let Err(back) = std::fs::rename(&old, &upper) {
                    tracing::error!(%uuid, error = %back, "the instance's files are left in upper.old");
                }
                return Err(Error::io(&upper, e));
            }
            disk::remove_tree(&old)
        })?;
        let mut record = self.read_record(uuid)?;
        record.last_modified = unix_now();
        self.write_record(&record)?;
        if *boot {
            self.boot(uuid)
        } else {
            self.get(uuid)
        }
    }

    fn delete_snapshot(&self, uuid: Uuid, name: &str) -> Result<Instance> {
        let mut record = self.read_record(uuid)?;
        find_snapshot(&self.instance(record.clone()), name)?;
        self.with_disk_mounted(uuid, |disk| disk::remove_tree(&disk.snapshots().join(name)))?;
        record.snapshots.retain(|s| s.name != name);
        record.last_modified = unix_now();
        self.write_record(&record)?;
        self.get(uuid)
    }

    fn destroy(&self, uuid: Uuid) -> Result<()> {
        self.read_record(uuid)?;
        self.remove_everything(uuid)
    }

    /// See [`ZoneBackend::reconcile`]. Also removes what image imports and downloads a
    /// crash cut short. A zone whose record cannot be read is left for an operator.
    fn reconcile(&self) -> Result<Vec<Uuid>> {
        if let Ok(entries) = std::fs::read_dir(&self.images_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(".partial-") || name.starts_with(".download-") {
                    tracing::info!(leftover = %name, "removing an image import that did not finish");
                    if let Err(e) = safefs::remove_host_tree(&entry.path()) {
                        tracing::warn!(error = %e.chain(), "cannot remove an unfinished image import");
                    }
                }
            }
        }
        let mut removed = Vec::new();
        for uuid in self.zone_dirs()? {
            let unfinished = match self.read_record(uuid) {
                Ok(record) => record.state == InstanceState::Provisioning,
                // The directory without its record: a create cut short before the
                // record was written, or a destroy after it was removed.
                Err(Error::VmNotFound(_)) => true,
                Err(e) => {
                    tracing::warn!(%uuid, error = %e.chain(), "zone record unreadable; left as it is");
                    false
                }
            };
            if !unfinished {
                continue;
            }
            tracing::warn!(%uuid, "removing an instance whose create (or destroy) did not finish");
            match self.remove_everything(uuid) {
                Ok(()) => removed.push(uuid),
                Err(e) => {
                    tracing::error!(%uuid, error = %e.chain(), "cannot remove an unfinished instance")
                }
            }
        }
        Ok(removed)
    }

    /// The instances that have a directory under the zones directory (named by uuid;
    /// anything else there is passed over).
    fn zone_dirs(&self) -> Result<Vec<Uuid>> {
        let entries =
            std::fs::read_dir(&self.zones_dir).map_err(|e| Error::io(&self.zones_dir, e))?;
        Ok(entries
            .flatten()
            .filter_map(|entry| {
                entry
                    .file_name()
                    .to_str()
                    .and_then(|n| Uuid::parse_str(n).ok())
            })
            .collect())
    }

    /// Stops the instance and removes its processes, network, cgroups, disk and
    /// directory, whatever of them there is.
    fn remove_everything(&self, uuid: Uuid) -> Result<()> {
        self.stop_processes(uuid, None)?;
        self.cgroups.remove(uuid)?;
        let dir = self.zone_dir(uuid);
        // The disk is the one mount of the instance's on the host (the overlay, /dev,
        // /proc and /sys live in its own mount namespace and went with its processes).
        self.disk(uuid).release();
        // Unmount anything an operator mounted here by hand.
        for mount_point in mounts_under(&dir) {
            let Ok(c) = std::ffi::CString::new(mount_point.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: umount2(2) on a NUL-terminated path.
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
        // Nothing below is followed through a symlink or removed across a mount point.
        safefs::remove_host_tree(&dir)
    }

    fn usage(&self, uuid: Uuid) -> Result<InstanceUsage> {
        let instance = self.get(uuid)?;
        let (cpu, memory, processes) = if self.cgroups.exists(uuid) {
            self.cgroups.usage(uuid)
        } else {
            (0, 0, 0)
        };
        let limit = self
            .cgroups
            .read_limits(uuid)
            .map(|l| l.memory_bytes)
            .unwrap_or(instance.spec.ram * 1024 * 1024);
        let (rx, tx) = self.net.counters(uuid);
        let mut counters = self.cgroups.counters(uuid);
        let collectors = &mut counters.collectors;
        let netns = usage::timed(collectors, "link", || {
            match usage::read_netns(&self.net.netns_path(uuid), &instance.spec.nics) {
                Some(n) => (n, true),
                None => (usage::NetnsCounters::default(), false),
            }
        });
        // Read together with the NICs (one visit to the namespace).
        collectors.push(crate::backend::CollectorTime {
            name: "tcp".into(),
            ..collectors[collectors.len() - 1].clone()
        });
        let disk_used_bytes =
            usage::timed(collectors, "zfs", || (self.disk(uuid).used_bytes(), true));
        Ok(InstanceUsage {
            uuid,
            cpu_usage_ns: cpu,
            memory_bytes: memory,
            memory_limit_bytes: limit,
            net_rx_bytes: rx,
            net_tx_bytes: tx,
            processes,
            disk_used_bytes,
            disk_limit_bytes: instance.spec.quota << 30,
            cpu_user_ns: counters.cpu_user_ns,
            cpu_sys_ns: counters.cpu_sys_ns,
            swap_bytes: counters.swap_bytes,
            swap_limit_bytes: counters.swap_limit_bytes,
            mem_anon_alloc_fail: counters.mem_fail,
            load_average: counters.runnable as f64,
            nics: netns.nics,
            tcp: netns.tcp,
            io: counters.io,
            cpu_wait_ns: counters.cpu_wait_ns,
            cpu_cap: counters.cap,
            io_wait_ns: counters.io_wait_ns,
            collectors: counters.collectors,
        })
    }
}

/// What the agent writes into an instance belongs to the instance's root.
fn owner(ids: IdRange) -> Owner {
    Owner {
        uid: ids.base,
        gid: ids.base,
    }
}

/// Mount points at or below `dir` in this process's mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    // Deepest first.
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// [`ZoneBackend`] methods that run the inner backend's method of the same name on the
/// blocking pool, with the instance's uuid and a reference to the argument.
macro_rules! on_the_blocking_pool {
    ($($method:ident($arg:ident: $ty:ty);)*) => {$(
        async fn $method(&self, uuid: Uuid, $arg: $ty) -> Result<Instance> {
            self.blocking(move |inner| inner.$method(uuid, &$arg)).await
        }
    )*};
}

impl ZoneBackend for LinuxBackend {
    fn kind(&self) -> &'static str {
        "linux"
    }

    async fn image_ensure_present(&self, image: ImageSource) -> Result<()> {
        self.blocking(move |inner| inner.image_ensure_present(&image))
            .await
    }

    async fn image_present(&self, image_uuid: Uuid) -> Result<bool> {
        Ok(image::is_present(&self.inner.images_dir, image_uuid))
    }

    async fn create(&self, spec: InstanceSpec) -> Result<Instance> {
        let uuid = spec.uuid;
        let autoboot = spec.autoboot;
        self.blocking(move |inner| inner.create(&spec)).await?;
        if !autoboot {
            return self.get(uuid).await;
        }
        match self.blocking(move |inner| inner.first_boot(uuid)).await {
            Ok(instance) => Ok(instance),
            Err(e) => {
                let _ = self
                    .blocking(move |inner| inner.set_state(uuid, InstanceState::Failed, false))
                    .await;
                Err(e)
            }
        }
    }

    async fn boot(&self, uuid: Uuid) -> Result<Instance> {
        self.blocking(move |inner| inner.boot(uuid)).await
    }

    async fn shutdown(&self, uuid: Uuid, timeout: Duration) -> Result<Instance> {
        self.blocking(move |inner| inner.shutdown(uuid, timeout))
            .await
    }

    async fn reboot(&self, uuid: Uuid, timeout: Duration) -> Result<Instance> {
        self.blocking(move |inner| {
            let instance = inner.get(uuid)?;
            if instance.state != InstanceState::Running {
                return Err(Error::WrongState {
                    uuid,
                    state: instance.state.as_str().into(),
                    action: "reboot",
                });
            }
            inner.shutdown(uuid, timeout)?;
            inner.boot(uuid)
        })
        .await
    }

    on_the_blocking_pool! {
        update(update: InstanceUpdate);
        create_snapshot(name: String);
        rollback_snapshot(rollback: Rollback);
        delete_snapshot(name: String);
    }

    async fn destroy(&self, uuid: Uuid) -> Result<()> {
        self.blocking(move |inner| inner.destroy(uuid)).await
    }

    async fn reconcile(&self) -> Result<Vec<Uuid>> {
        self.blocking(|inner| inner.reconcile()).await
    }

    async fn get(&self, uuid: Uuid) -> Result<Instance> {
        self.blocking(move |inner| inner.get(uuid)).await
    }

    async fn list(&self) -> Result<Vec<Instance>> {
        self.blocking(|inner| inner.list()).await
    }

    async fn usage(&self, uuid: Uuid) -> Result<InstanceUsage> {
        self.blocking(move |inner| inner.usage(uuid)).await
    }
}
