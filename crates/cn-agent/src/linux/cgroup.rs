//! Cgroup limits and accounting of instances: memory = ram, cpu quota = cpu_cap,
//! pids = max_lwps, and an equal block I/O weight. Works on cgroup v2 (a unified
//! hierarchy with the controllers) and on cgroup v1 (one hierarchy per controller),
//! whichever the host has.
//!
//! Swap: a package's max_swap is not part of the spec (SmartOS sets it to ram by
//! default), so memory + swap is held at ram: `memory.swap.max` 0 on v2,
//! `memory.memsw.limit_in_bytes` = ram on v1 where the kernel accounts swap (the file
//! exists); without swap accounting the line is skipped with a log line.
//!
//! Block I/O: `io.weight` (v2) or `blkio.weight` (v1) at the default weight, so every
//! instance gets an equal share under contention. These files exist only with an I/O
//! scheduler that weighs (BFQ; CFQ on old kernels): where the file is absent the limit
//! is skipped with a log line (on this project's hosts, v1 with mq-deadline or none,
//! it is absent).
//!
//! Devices (v1): the instance's `devices` cgroup denies every device but the ones its
//! /dev holds (`devices.deny a`, then `c 1:3` null, `1:5` zero, `1:7` full, `1:8`
//! random, `1:9` urandom, `5:0` tty, `5:2` ptmx and `136:*` the pty slaves). v2 has no
//! devices file (it takes a BPF program); there the user namespace is what stops device
//! access: root inside cannot make a device node (CAP_MKNOD counts only on the host),
//! and every file system it can write is `nodev`.
//!
//! Root in the instance cannot lift any of it: the cgroup files stay owned by host
//! root, the instance's processes have no capability on the host, and no cgroup file
//! system is mounted inside (its /sys is read-only and its cgroup namespace starts at
//! its own cgroup).
//!
//! An instance's cgroup is `<parent>/<uuid>` in each hierarchy. Whether an instance runs
//! is read from its cgroup: it runs while the cgroup holds processes. That holds across
//! restarts of cn-agent, which keeps no pids of its own.
//!
//! What is written where is one pure function, [`limit_files`], so both versions are
//! checked by unit tests on any host. (CI and CoaL hosts here run cgroup v1; the v2 path
//! is exercised by those tests, on a directory laid out like a cgroup2 mount, only.)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::usage;
use crate::backend::{CapUsage, CollectorTime, IoUsage};
use crate::error::{Error, Result};

/// CPU period for the CFS quota: 100 ms, the kernel default.
const CPU_PERIOD_US: u64 = 100_000;
const MIB: u64 = 1024 * 1024;

/// v1 controllers an instance joins: the three that limit, and cpuacct for CPU time.
const V1_CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];
/// v1 controllers an instance joins where the host mounts them.
const V1_OPTIONAL: [&str; 2] = ["blkio", "devices"];
/// The default block I/O weight of v1 (`blkio.weight`, 10..1000) and v2 (`io.weight`,
/// 1..10000): an equal share.
const BLKIO_WEIGHT_V1: u32 = 500;
const IO_WEIGHT_V2: u32 = 100;
/// v1 device rules: everything denied, then the nodes of an instance's /dev allowed.
pub const V1_DEVICES_ALLOWED: [&str; 8] = [
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// The limits of one instance, as written to (and read back from) its cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    /// Percent of one CPU; `None` is uncapped.
    pub cpu_percent: Option<u32>,
    /// `None` is unlimited.
    pub pids_max: Option<u64>,
}

impl Limits {
    pub fn from_package(ram_mib: u64, cpu_cap: u32, max_lwps: u64) -> Limits {
        Limits {
            memory_bytes: ram_mib * MIB,
            cpu_percent: (cpu_cap > 0).then_some(cpu_cap),
            pids_max: (max_lwps > 0).then_some(max_lwps),
        }
    }
}

/// Which cgroup interface the files of [`limit_files`] belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// One file a limit is written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitFile {
    /// On v1, the hierarchy the file is in; on v2 every file is in the one directory.
    pub controller: &'static str,
    pub file: &'static str,
    pub value: String,
    /// A file the kernel may lack (`memory.swap.max` without swap accounting); failing
    /// to write it is not an error.
    pub optional: bool,
}

/// The files that carry `limits` and their values, in the order they are written.
pub fn limit_files(version: Version, limits: Limits) -> Vec<LimitFile> {
    let file = |controller, file, value: String| LimitFile {
        controller,
        file,
        value,
        optional: false,
    };
    let pids = pids_value(limits.pids_max);
    match version {
        Version::V2 => vec![
            file("memory", "memory.max", limits.memory_bytes.to_string()),
            // No swap beyond the memory limit, as a zone's max_swap = ram.
            LimitFile {
                optional: true,
                ..file("memory", "memory.swap.max", "0".into())
            },
            file(
                "cpu",
                "cpu.max",
                match limits.cpu_percent {
                    Some(pct) => format!("{} {CPU_PERIOD_US}", cpu_quota_us(pct)),
                    None => format!("max {CPU_PERIOD_US}"),
                },
            ),
            file("pids", "pids.max", pids),
            LimitFile {
                optional: true,
                ..file("io", "io.weight", format!("default {IO_WEIGHT_V2}"))
            },
        ],
        Version::V1 => vec![
            file(
                "memory",
                "memory.limit_in_bytes",
                limits.memory_bytes.to_string(),
            ),
            // Memory + swap = ram (after memory.limit_in_bytes: the kernel wants memsw
            // never below it). Absent without swap accounting.
            LimitFile {
                optional: true,
                ..file(
                    "memory",
                    "memory.memsw.limit_in_bytes",
                    limits.memory_bytes.to_string(),
                )
            },
            // The period first: the kernel checks the quota against it.
            file("cpu", "cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
            file(
                "cpu",
                "cpu.cfs_quota_us",
                match limits.cpu_percent {
                    Some(pct) => cpu_quota_us(pct).to_string(),
                    None => "-1".into(),
                },
            ),
            file("pids", "pids.max", pids),
            LimitFile {
                optional: true,
                ..file("blkio", "blkio.weight", BLKIO_WEIGHT_V1.to_string())
            },
        ],
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// The unified hierarchy mounted at this path.
    V2(PathBuf),
    /// Controller name and the directory of its hierarchy (deduplicated: on hosts that
    /// mount `cpu,cpuacct` together, both names lead to one directory).
    V1(Vec<(String, PathBuf)>),
}

/// The cgroups of the instances of one node.
#[derive(Debug, Clone)]
pub struct Cgroups {
    hierarchy: Hierarchy,
    parent: String,
    /// v1: the freezer hierarchy, when the host mounts one. Instances join it only to
    /// be frozen (for a snapshot), so a host without it still runs them.
    v1_freezer: Option<PathBuf>,
}

impl Cgroups {
    /// Detects the host's cgroup version under `root` (normally `/sys/fs/cgroup`).
    pub fn detect(root: &Path, parent: &str) -> Result<Cgroups> {
        let hierarchy = if root.join("cgroup.controllers").exists() {
            Hierarchy::V2(root.to_path_buf())
        } else {
            let mut dirs: Vec<(String, PathBuf)> = Vec::new();
            for name in V1_CONTROLLERS {
                let dir = root.join(name);
                let canonical = std::fs::canonicalize(&dir).map_err(|e| Error::io(&dir, e))?;
                if !dirs.iter().any(|(_, d)| *d == canonical) {
                    dirs.push((name.to_string(), canonical));
                }
            }
            for name in V1_OPTIONAL {
                let Ok(canonical) = std::fs::canonicalize(root.join(name)) else {
                    tracing::info!(controller = name, "no cgroup v1 hierarchy; not used");
                    continue;
                };
                if canonical.join("cgroup.procs").exists()
                    && !dirs.iter().any(|(_, d)| *d == canonical)
                {
                    dirs.push((name.to_string(), canonical));
                }
            }
            Hierarchy::V1(dirs)
        };
        let v1_freezer = match hierarchy {
            Hierarchy::V1(_) => std::fs::canonicalize(root.join("freezer"))
                .ok()
                .filter(|d| d.join("cgroup.procs").exists()),
            Hierarchy::V2(_) => None,
        };
        Ok(Cgroups {
            hierarchy,
            parent: parent.to_string(),
            v1_freezer,
        })
    }

    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// Every directory of the instance's cgroup (one on v2, one per hierarchy on v1).
    pub fn dirs(&self, uuid: Uuid) -> Vec<PathBuf> {
        let rel = Path::new(&self.parent).join(uuid.to_string());
        match &self.hierarchy {
            Hierarchy::V2(root) => vec![root.join(rel)],
            Hierarchy::V1(dirs) => dirs.iter().map(|(_, d)| d.join(&rel)).collect(),
        }
    }

    /// The `cgroup.procs` files a process writes its pid to, to join the instance.
    pub fn procs_files(&self, uuid: Uuid) -> Vec<PathBuf> {
        self.dirs(uuid)
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    fn controller_dir(&self, uuid: Uuid, controller: &str) -> PathBuf {
        let rel = Path::new(&self.parent).join(uuid.to_string());
        match &self.hierarchy {
            Hierarchy::V2(root) => root.join(rel),
            Hierarchy::V1(dirs) => {
                // A controller the host lacks (optional ones) leads to a path that does
                // not exist, so its files are skipped.
                let base = dirs
                    .iter()
                    .find(|(name, _)| name == controller)
                    .or_else(|| {
                        // Mounted together with another one ("cpu,cpuacct").
                        dirs.iter().find(|(_, d)| {
                            d.file_name()
                                .and_then(|n| n.to_str())
                                .is_some_and(|n| n.split(',').any(|c| c == controller))
                        })
                    })
                    .map(|(_, d)| d.clone())
                    .unwrap_or_else(|| PathBuf::from("/nonexistent-cgroup").join(controller));
                base.join(rel)
            }
        }
    }

    /// Creates the instance's cgroup (idempotent) and sets its limits.
    pub fn create(&self, uuid: Uuid, limits: Limits) -> Result<()> {
        if let Hierarchy::V2(root) = &self.hierarchy {
            // Controllers must be enabled in every ancestor's subtree_control.
            let parent = root.join(&self.parent);
            mkdir(&parent)?;
            enable_controllers(root)?;
            enable_controllers(&parent)?;
        }
        for dir in self.dirs(uuid) {
            mkdir(&dir)?;
        }
        self.set_devices(uuid)?;
        self.set_limits(uuid, limits)
    }

    pub fn set_limits(&self, uuid: Uuid, limits: Limits) -> Result<()> {
        let version = match &self.hierarchy {
            Hierarchy::V2(_) => Version::V2,
            Hierarchy::V1(_) => Version::V1,
        };
        for f in limit_files(version, limits) {
            let path = self.controller_dir(uuid, f.controller).join(f.file);
            if f.optional && !path.exists() {
                tracing::info!(%uuid, file = f.file, "the host's cgroups lack this limit; skipped");
                continue;
            }
            let memsw = path.with_file_name("memory.memsw.limit_in_bytes");
            if f.file == "memory.limit_in_bytes"
                && memsw.exists()
                && write(&path, &f.value).is_err()
            {
                // Raising: memory + swap may never be below memory, so it goes first.
                write(&memsw, &f.value)?;
            }
            write(&path, &f.value)?;
        }
        Ok(())
    }

    /// v1: the instance's device allow-list (nothing without a devices hierarchy).
    fn set_devices(&self, uuid: Uuid) -> Result<()> {
        let Hierarchy::V1(dirs) = &self.hierarchy else {
            return Ok(());
        };
        if !dirs.iter().any(|(name, _)| name == "devices") {
            tracing::info!(%uuid, "no devices cgroup on this host; /dev is what limits devices");
            return Ok(());
        }
        let dir = self.controller_dir(uuid, "devices");
        write(&dir.join("devices.deny"), "a")?;
        for rule in V1_DEVICES_ALLOWED {
            write(&dir.join("devices.allow"), rule)?;
        }
        Ok(())
    }

    /// The limits as the kernel has them now.
    pub fn read_limits(&self, uuid: Uuid) -> Result<Limits> {
        match &self.hierarchy {
            Hierarchy::V2(_) => {
                let dir = self.controller_dir(uuid, "memory");
                let memory_bytes = read_u64(&dir.join("memory.max"))?.unwrap_or(u64::MAX);
                let cpu_percent = parse_cpu_max(&read(&dir.join("cpu.max"))?);
                let pids_max = read_u64(&dir.join("pids.max"))?;
                Ok(Limits {
                    memory_bytes,
                    cpu_percent,
                    pids_max,
                })
            }
            Hierarchy::V1(_) => {
                let mem = self.controller_dir(uuid, "memory");
                let memory_bytes =
                    read_u64(&mem.join("memory.limit_in_bytes"))?.unwrap_or(u64::MAX);
                let cpu = self.controller_dir(uuid, "cpu");
                let period = read_u64(&cpu.join("cpu.cfs_period_us"))?.unwrap_or(CPU_PERIOD_US);
                let quota = read(&cpu.join("cpu.cfs_quota_us"))?;
                let cpu_percent = quota
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|q| *q > 0)
                    .map(|q| (q as u64 * 100 / period.max(1)) as u32);
                let pids = self.controller_dir(uuid, "pids");
                let pids_max = read_u64(&pids.join("pids.max"))?;
                Ok(Limits {
                    memory_bytes,
                    cpu_percent,
                    pids_max,
                })
            }
        }
    }

    pub fn exists(&self, uuid: Uuid) -> bool {
        self.dirs(uuid).iter().any(|d| d.exists())
    }

    /// Pids of every process in the instance (the union over hierarchies).
    pub fn pids(&self, uuid: Uuid) -> Vec<u32> {
        let mut pids: Vec<u32> = Vec::new();
        for file in self.procs_files(uuid) {
            if let Ok(text) = std::fs::read_to_string(&file) {
                pids.extend(parse_pids(&text));
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// The instance's processes ([`Cgroups::pids`]) that are not in `known`.
    fn pids_not_in(&self, uuid: Uuid, known: &[u32]) -> Vec<u32> {
        self.pids(uuid)
            .into_iter()
            .filter(|p| !known.contains(p))
            .collect()
    }

    /// SIGKILLs every process of the instance and waits up to `wait` for them to go.
    pub fn kill_all(&self, uuid: Uuid, wait: Duration) -> Result<()> {
        let deadline = Instant::now() + wait;
        loop {
            let pids = self.pids(uuid);
            if pids.is_empty() {
                return Ok(());
            }
            if let Hierarchy::V2(_) = &self.hierarchy {
                let kill = self.controller_dir(uuid, "memory").join("cgroup.kill");
                if kill.exists() {
                    let _ = write(&kill, "1");
                }
            }
            for pid in pids {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "processes of instance {uuid} survived SIGKILL for {wait:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops every process of the instance where it stands, so its files can be copied
    /// consistently (a snapshot); [`Cgroups::thaw`] lets them go on. On v2 this is the
    /// cgroup freezer (`cgroup.freeze`, waited for in `cgroup.events`); on v1 the
    /// freezer hierarchy (the instance's processes join `freezer/<parent>/<uuid>` for
    /// it, `freezer.state` FROZEN), and on a v1 host without one every process gets
    /// SIGSTOP (repeated until no new process appears) and SIGCONT at thaw.
    pub fn freeze(&self, uuid: Uuid, wait: Duration) -> Result<()> {
        let deadline = Instant::now() + wait;
        match &self.hierarchy {
            Hierarchy::V2(_) => {
                let dir = self.controller_dir(uuid, "memory");
                write(&dir.join("cgroup.freeze"), "1")?;
                let frozen = || {
                    let events = read(&dir.join("cgroup.events"))?;
                    Ok(events.lines().any(|l| l.trim() == "frozen 1"))
                };
                until_frozen(uuid, wait, deadline, frozen, || {
                    let _ = write(&dir.join("cgroup.freeze"), "0");
                })
            }
            Hierarchy::V1(_) => match self.v1_freezer_dir(uuid) {
                Some(dir) => {
                    mkdir(&dir)?;
                    // Every process of the instance into its freezer cgroup; a child
                    // forked meanwhile by one already moved is born there, one by a
                    // process not yet moved is caught by the next round.
                    loop {
                        let inside = parse_pids(&read(&dir.join("cgroup.procs"))?);
                        let outside = self.pids_not_in(uuid, &inside);
                        if outside.is_empty() {
                            break;
                        }
                        for pid in outside {
                            // A process that exited meanwhile cannot be moved: fine.
                            let _ = write(&dir.join("cgroup.procs"), &pid.to_string());
                        }
                        if Instant::now() >= deadline {
                            return Err(Error::Timeout(format!(
                                "instance {uuid} kept starting processes for {wait:?}"
                            )));
                        }
                    }
                    write(&dir.join("freezer.state"), "FROZEN")?;
                    let frozen = || Ok(read(&dir.join("freezer.state"))?.trim() == "FROZEN");
                    until_frozen(uuid, wait, deadline, frozen, || {
                        let _ = write(&dir.join("freezer.state"), "THAWED");
                    })
                }
                None => {
                    let mut stopped: Vec<u32> = Vec::new();
                    loop {
                        let new = self.pids_not_in(uuid, &stopped);
                        if new.is_empty() {
                            return Ok(());
                        }
                        for pid in new {
                            // SAFETY: kill(2) has no memory-safety preconditions.
                            unsafe {
                                libc::kill(pid as libc::pid_t, libc::SIGSTOP);
                            }
                            stopped.push(pid);
                        }
                        if Instant::now() >= deadline {
                            self.thaw(uuid);
                            return Err(Error::Timeout(format!(
                                "instance {uuid} kept starting processes for {wait:?}"
                            )));
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            },
        }
    }

    /// Undoes [`Cgroups::freeze`]. A failure is logged: the instance may stay frozen,
    /// which an operator must see.
    pub fn thaw(&self, uuid: Uuid) {
        match &self.hierarchy {
            Hierarchy::V2(_) => {
                let file = self.controller_dir(uuid, "memory").join("cgroup.freeze");
                if let Err(e) = write(&file, "0") {
                    tracing::error!(%uuid, error = %e.chain(), "cannot thaw the instance");
                }
            }
            Hierarchy::V1(_) => match self.v1_freezer_dir(uuid) {
                Some(dir) => {
                    if let Err(e) = write(&dir.join("freezer.state"), "THAWED") {
                        tracing::error!(%uuid, error = %e.chain(), "cannot thaw the instance");
                    }
                }
                None => {
                    for pid in self.pids(uuid) {
                        // SAFETY: kill(2) has no memory-safety preconditions.
                        unsafe {
                            libc::kill(pid as libc::pid_t, libc::SIGCONT);
                        }
                    }
                }
            },
        }
    }

    /// v1: the instance's cgroup in the freezer hierarchy, when the host has one.
    fn v1_freezer_dir(&self, uuid: Uuid) -> Option<PathBuf> {
        self.v1_freezer
            .as_ref()
            .map(|root| root.join(&self.parent).join(uuid.to_string()))
    }

    /// Removes the instance's cgroup (its processes must be gone).
    pub fn remove(&self, uuid: Uuid) -> Result<()> {
        for dir in self.dirs(uuid).into_iter().chain(self.v1_freezer_dir(uuid)) {
            // A cgroup whose last process just exited can be busy for a moment.
            let mut tries = 0;
            loop {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if tries < 50 => {
                        tries += 1;
                        tracing::debug!(dir = %dir.display(), error = %e, "cgroup busy, retrying");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(Error::io(&dir, e)),
                }
            }
        }
        Ok(())
    }

    /// CPU time (ns), memory in use (bytes) and process count.
    pub fn usage(&self, uuid: Uuid) -> (u64, u64, u64) {
        let processes = self.pids(uuid).len() as u64;
        match &self.hierarchy {
            Hierarchy::V2(_) => {
                let dir = self.controller_dir(uuid, "memory");
                let cpu = read(&dir.join("cpu.stat"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("usage_usec "))
                            .and_then(|v| v.trim().parse::<u64>().ok())
                    })
                    .map(|us| us * 1000)
                    .unwrap_or(0);
                let mem = read_u64(&dir.join("memory.current"))
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                (cpu, mem, processes)
            }
            Hierarchy::V1(_) => {
                let cpu = read_u64(&self.controller_dir(uuid, "cpuacct").join("cpuacct.usage"))
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                let mem = read_u64(
                    &self
                        .controller_dir(uuid, "memory")
                        .join("memory.usage_in_bytes"),
                )
                .ok()
                .flatten()
                .unwrap_or(0);
                (cpu, mem, processes)
            }
        }
    }
}

/// The counters of an instance's cgroup beyond [`Cgroups::usage`], for CMon.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    pub cpu_user_ns: u64,
    pub cpu_sys_ns: u64,
    /// Swap in use.
    pub swap_bytes: u64,
    /// The limit on memory + swap (SmartOS's swap cap counts both); 0 is unlimited.
    pub swap_limit_bytes: u64,
    /// Times the cgroup hit its memory limit.
    pub mem_fail: u64,
    pub io: IoUsage,
    /// Threads running, runnable or in uninterruptible sleep now.
    pub runnable: u64,
    /// Run-queue wait of the threads now, ns (schedstat).
    pub cpu_wait_ns: u64,
    pub cap: CapUsage,
    /// io.pressure "some" total (v2), ns.
    pub io_wait_ns: Option<u64>,
    /// Each part's source and reading time (zone_misc, memcap, cpucap, zone_vfs).
    pub collectors: Vec<CollectorTime>,
}

impl Cgroups {
    /// v2: `cpu.stat` user/system and throttling, `cpu.max`, `memory.swap.current`,
    /// `memory.max` + `memory.swap.max`, `memory.events` max + oom, `io.stat`,
    /// `io.pressure`, `cgroup.threads`.
    /// v1: `cpuacct.usage` split as `cpuacct.stat` user:system (the ticks it counts
    /// are sampled, `cpuacct.usage` is exact), cpu's `cpu.stat` throttling and
    /// `cpu.cfs_quota_us` / `cpu.cfs_period_us`, `memory.memsw.usage_in_bytes` −
    /// `memory.usage_in_bytes`, `memory.memsw.limit_in_bytes`, `memory.failcnt` +
    /// `memory.oom_control` oom_kill, `blkio.throttle.io_service_bytes_recursive` and
    /// `io_serviced_recursive`, the cpu hierarchy's `tasks`. Both: the threads'
    /// `/proc/<tid>/schedstat` run delay. A file the host lacks counts 0.
    pub fn counters(&self, uuid: Uuid) -> Counters {
        let text = |controller: &str, file: &str| {
            std::fs::read_to_string(self.controller_dir(uuid, controller).join(file))
                .unwrap_or_default()
        };
        let number = |controller: &str, file: &str| {
            read_u64(&self.controller_dir(uuid, controller).join(file))
                .ok()
                .flatten()
        };
        let tids = |controller: &str, file: &str| -> Vec<u32> {
            text(controller, file)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        };
        let mut collectors = Vec::new();
        let c = &mut collectors;
        let v2 = matches!(self.hierarchy, Hierarchy::V2(_));
        let threads_file = if v2 { "cgroup.threads" } else { "tasks" };
        let ((cpu_user_ns, cpu_sys_ns), runnable, cpu_wait_ns) =
            usage::timed(c, "zone_misc", || {
                let threads = tids("cpu", threads_file);
                let cpu = if v2 {
                    usage::parse_cpu_stat(&text("cpu", "cpu.stat"))
                } else {
                    usage::split_cpu(
                        number("cpuacct", "cpuacct.usage").unwrap_or(0),
                        &text("cpuacct", "cpuacct.stat"),
                    )
                };
                (
                    (
                        cpu,
                        usage::runnable(&threads),
                        usage::run_queue_wait(&threads),
                    ),
                    true,
                )
            });
        let (swap_bytes, swap_limit_bytes, mem_fail) = usage::timed(c, "memcap", || {
            let values = if v2 {
                let swap_limit_bytes = match (
                    number("memory", "memory.max"),
                    read_u64(&self.controller_dir(uuid, "memory").join("memory.swap.max")),
                ) {
                    (Some(mem), Ok(Some(swap))) => mem.saturating_add(swap),
                    _ => 0,
                };
                (
                    number("memory", "memory.swap.current").unwrap_or(0),
                    swap_limit_bytes,
                    usage::parse_memory_events(&text("memory", "memory.events")),
                )
            } else {
                let memsw = number("memory", "memory.memsw.usage_in_bytes");
                let mem = number("memory", "memory.usage_in_bytes").unwrap_or(0);
                (
                    memsw.map(|m| m.saturating_sub(mem)).unwrap_or(0),
                    number("memory", "memory.memsw.limit_in_bytes").unwrap_or(0),
                    number("memory", "memory.failcnt")
                        .unwrap_or(0)
                        .saturating_add(usage::parse_oom_kills(&text(
                            "memory",
                            "memory.oom_control",
                        ))),
                )
            };
            (values, true)
        });
        let cap = usage::timed(c, "cpucap", || {
            let (quota, period_us) = if v2 {
                let max = text("cpu", "cpu.max");
                let mut parts = max.split_whitespace();
                let quota = parts.next().unwrap_or("max").to_string();
                let period = parts
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(CPU_PERIOD_US);
                (quota, period)
            } else {
                (
                    text("cpu", "cpu.cfs_quota_us"),
                    number("cpu", "cpu.cfs_period_us").unwrap_or(CPU_PERIOD_US),
                )
            };
            let (periods, throttled_periods, throttled_ns) =
                usage::parse_throttling(&text("cpu", "cpu.stat"));
            let percent = usage::cap_percent(&quota, period_us);
            // As Triton's cpucap collector: nothing to say of an instance with no cap.
            let available = percent.is_some();
            (
                CapUsage {
                    percent,
                    period_us,
                    periods,
                    throttled_periods,
                    throttled_ns,
                },
                available,
            )
        });
        let (io, io_wait_ns) = usage::timed(c, "zone_vfs", || {
            let io = if v2 {
                usage::parse_io_stat(&text("io", "io.stat"))
            } else {
                let (read_bytes, write_bytes) =
                    usage::parse_blkio(&text("blkio", "blkio.throttle.io_service_bytes_recursive"));
                let (read_ops, write_ops) =
                    usage::parse_blkio(&text("blkio", "blkio.throttle.io_serviced_recursive"));
                IoUsage {
                    read_bytes,
                    write_bytes,
                    read_ops,
                    write_ops,
                }
            };
            let wait = if v2 {
                usage::parse_pressure_some(&text("io", "io.pressure"))
            } else {
                None
            };
            ((io, wait), true)
        });
        Counters {
            cpu_user_ns,
            cpu_sys_ns,
            swap_bytes,
            swap_limit_bytes,
            mem_fail,
            io,
            runnable,
            cpu_wait_ns,
            cap,
            io_wait_ns,
            collectors,
        }
    }
}

/// Percent of one CPU from v2's `cpu.max` ("<quota> <period>" or "max <period>").
fn parse_cpu_max(text: &str) -> Option<u32> {
    let mut parts = text.split_whitespace();
    let quota = parts.next().unwrap_or("max");
    let period = parts
        .next()
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(CPU_PERIOD_US);
    quota
        .parse::<u64>()
        .ok()
        .map(|q| (q * 100 / period.max(1)) as u32)
}

fn cpu_quota_us(percent: u32) -> u64 {
    u64::from(percent) * CPU_PERIOD_US / 100
}

/// The pids of a `cgroup.procs` file, one a line.
fn parse_pids(text: &str) -> Vec<u32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn pids_value(max: Option<u64>) -> String {
    max.map(|m| m.to_string()).unwrap_or_else(|| "max".into())
}

fn enable_controllers(dir: &Path) -> Result<()> {
    let available = read(&dir.join("cgroup.controllers"))?;
    for controller in ["memory", "cpu", "pids", "io"] {
        if available.split_whitespace().any(|c| c == controller) {
            write(
                &dir.join("cgroup.subtree_control"),
                &format!("+{controller}"),
            )?;
        }
    }
    Ok(())
}

fn mkdir(dir: &Path) -> Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
        }
        Err(e) => Err(Error::io(dir, e)),
    }
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| Error::io(path, e))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// A number, or `None` for "max" and v1's "unlimited" (huge) values.
fn read_u64(path: &Path) -> Result<Option<u64>> {
    let text = read(path)?;
    let text = text.trim();
    if text == "max" {
        return Ok(None);
    }
    match text.parse::<u64>() {
        // v1 reports "no limit" as the largest page-aligned i64.
        Ok(v) if v >= i64::MAX as u64 - 4096 => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(_) => Err(Error::invalid(
            &path.display().to_string(),
            format!("unexpected value {text:?}"),
        )),
    }
}

/// Polls `frozen` until it holds; at `deadline` runs `thaw` (what undoes the freeze that
/// did not take) and fails.
fn until_frozen(
    uuid: Uuid,
    wait: Duration,
    deadline: Instant,
    frozen: impl Fn() -> Result<bool>,
    thaw: impl FnOnce(),
) -> Result<()> {
    loop {
        if frozen()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            thaw();
            return Err(Error::Timeout(format!(
                "instance {uuid} did not freeze within {wait:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(version: Version, limits: Limits) -> Vec<(&'static str, String)> {
        limit_files(version, limits)
            .into_iter()
            .map(|f| (f.file, f.value))
            .collect()
    }

    fn owned(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        pairs.iter().map(|(f, v)| (*f, v.to_string())).collect()
    }

    #[test]
    fn a_package_maps_to_v2_files() {
        let capped = Limits::from_package(64, 50, 64);
        assert_eq!(
            pairs(Version::V2, capped),
            owned(&[
                ("memory.max", "67108864"),
                ("memory.swap.max", "0"),
                ("cpu.max", "50000 100000"),
                ("pids.max", "64"),
                ("io.weight", "default 100"),
            ])
        );
        let uncapped = Limits::from_package(1024, 0, 0);
        assert_eq!(
            pairs(Version::V2, uncapped),
            owned(&[
                ("memory.max", "1073741824"),
                ("memory.swap.max", "0"),
                ("cpu.max", "max 100000"),
                ("pids.max", "max"),
                ("io.weight", "default 100"),
            ])
        );
        // Only the swap limit and the I/O weight may be missing from a kernel.
        let optional: Vec<&str> = limit_files(Version::V2, capped)
            .into_iter()
            .filter(|f| f.optional)
            .map(|f| f.file)
            .collect();
        assert_eq!(optional, ["memory.swap.max", "io.weight"]);
    }

    #[test]
    fn a_package_maps_to_v1_files() {
        assert_eq!(
            pairs(Version::V1, Limits::from_package(64, 150, 200)),
            owned(&[
                ("memory.limit_in_bytes", "67108864"),
                ("memory.memsw.limit_in_bytes", "67108864"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "150000"),
                ("pids.max", "200"),
                ("blkio.weight", "500"),
            ])
        );
        assert_eq!(
            pairs(Version::V1, Limits::from_package(64, 0, 0)),
            owned(&[
                ("memory.limit_in_bytes", "67108864"),
                ("memory.memsw.limit_in_bytes", "67108864"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "-1"),
                ("pids.max", "max"),
                ("blkio.weight", "500"),
            ])
        );
        for f in limit_files(Version::V1, Limits::from_package(64, 0, 0)) {
            assert!(
                V1_CONTROLLERS.contains(&f.controller) || V1_OPTIONAL.contains(&f.controller),
                "{f:?}"
            );
            assert!(f.file.starts_with(f.controller), "{f:?}");
        }
    }

    #[test]
    fn cpu_max_reads_back_as_percent() {
        assert_eq!(parse_cpu_max("50000 100000"), Some(50));
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(150));
        assert_eq!(parse_cpu_max("max 100000"), None);
    }

    /// A directory laid out like a cgroup2 mount (not a real one: the files are plain
    /// files here), so the v2 code path runs end to end on a v1 host.
    #[test]
    fn v2_limits_go_to_one_directory_and_read_back() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("cgroup.controllers"),
            "cpu memory pids io\n",
        )
        .unwrap();
        let parent = root.path().join("triton");
        std::fs::create_dir(&parent).unwrap();
        std::fs::write(parent.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let cgroups = Cgroups::detect(root.path(), "triton").unwrap();
        assert_eq!(
            cgroups.hierarchy(),
            &Hierarchy::V2(root.path().to_path_buf())
        );
        let uuid = Uuid::new_v4();
        let limits = Limits::from_package(64, 50, 64);
        cgroups.create(uuid, limits).unwrap();
        let dir = parent.join(uuid.to_string());
        assert_eq!(cgroups.dirs(uuid), vec![dir.clone()]);
        assert_eq!(cgroups.procs_files(uuid), vec![dir.join("cgroup.procs")]);
        // The optional files are absent in a plain directory: skipped, not an error.
        for f in limit_files(Version::V2, limits) {
            let written = std::fs::read_to_string(dir.join(f.file));
            if f.optional {
                assert!(written.is_err(), "{f:?}");
            } else {
                assert_eq!(written.unwrap(), f.value);
            }
        }
        // The controllers are enabled for the children of the root and of the parent
        // (each write is one "+controller"; the last one stays in a plain file).
        assert_eq!(
            std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap(),
            "+pids"
        );
        assert_eq!(cgroups.read_limits(uuid).unwrap(), limits);
        let resized = Limits::from_package(128, 0, 0);
        cgroups.set_limits(uuid, resized).unwrap();
        assert_eq!(cgroups.read_limits(uuid).unwrap(), resized);
    }

    #[test]
    fn v1_limits_go_to_each_controller_and_read_back() {
        let root = tempfile::tempdir().unwrap();
        for controller in V1_CONTROLLERS {
            std::fs::create_dir(root.path().join(controller)).unwrap();
        }
        let cgroups = Cgroups::detect(root.path(), "triton").unwrap();
        let uuid = Uuid::new_v4();
        let limits = Limits::from_package(64, 150, 200);
        cgroups.create(uuid, limits).unwrap();
        for f in limit_files(Version::V1, limits)
            .into_iter()
            .filter(|f| !f.optional)
        {
            let path = root
                .path()
                .join(f.controller)
                .join("triton")
                .join(uuid.to_string())
                .join(f.file);
            assert_eq!(std::fs::read_to_string(&path).unwrap(), f.value, "{path:?}");
        }
        assert_eq!(cgroups.dirs(uuid).len(), V1_CONTROLLERS.len());
        assert_eq!(cgroups.read_limits(uuid).unwrap(), limits);
    }
}
