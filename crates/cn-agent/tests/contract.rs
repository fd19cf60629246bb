//! One contract, two zone backends. `contract` drives a backend through an instance's
//! life and checks each step through a probe that looks at what the backend made: for
//! `linux` the kernel itself (UTS namespace, addresses answering TCP from the host, cgroup
//! files, `dd` inside the instance against its disk quota, mounts, loop devices, links),
//! for `sim` what the simulator recorded.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cn_agent::linux::LinuxBackend;
use cn_agent::linux::leftovers::{cgroup_dirs, kill_cgroup};
use cn_agent::sim::{SimBackend, SimConfig, SimDelays};
use cn_agent::{
    Error, ImageSource, InstanceSpec, InstanceState, InstanceUpdate, NicSpec, Rollback, ZoneBackend,
};
use dc_testkit::node::{httpd_init, instance_spec};
use uuid::Uuid;

mod common;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Limits as read back: memory bytes, cpu percent, pids max.
type Limits = (u64, Option<u32>, Option<u64>);

trait Harness {
    type B: ZoneBackend;
    /// A new backend object over the same state (as after a restart of cn-agent).
    fn backend(&self) -> Self::B;
    fn image(&self) -> ImageSource;
    /// The `n`th test NIC: on the test nic tag, with its own address.
    fn nic(&self, n: u8) -> NicSpec;
    fn init(&self) -> Vec<String>;
    async fn hostname(&self, b: &Self::B, uuid: Uuid) -> Option<String>;
    /// Whether the instance answers on `ip` (waits a little for a booting one).
    async fn reachable(&self, b: &Self::B, uuid: Uuid, ip: Ipv4Addr, wait: Duration) -> bool;
    fn limits(&self, b: &Self::B, uuid: Uuid) -> Option<Limits>;
    async fn write_file(&self, b: &Self::B, uuid: Uuid, path: &str, contents: &str);
    async fn read_file(&self, b: &Self::B, uuid: Uuid, path: &str) -> Option<String>;
    /// Writes `mib` MiB of zeros to `path` from inside the instance (replacing the file);
    /// the error text on failure.
    async fn fill(&self, b: &Self::B, uuid: Uuid, path: &str, mib: u64) -> Result<(), String>;
    /// Size of the instance's disk as the kernel (or the simulator) has it.
    async fn disk_size(&self, b: &Self::B, uuid: Uuid) -> Option<u64>;
    /// Whatever of the instance is still around after destroy.
    fn leftovers(&self, b: &Self::B, uuid: Uuid) -> Vec<String>;
    /// After a snapshot of the running instance: how its processes were frozen for it
    /// (and that they run again), or why that cannot be seen.
    async fn was_frozen(&self, b: &Self::B, uuid: Uuid) -> Result<(), String>;
}

fn spec(h: &impl Harness, hostname: &str, nics: Vec<NicSpec>) -> InstanceSpec {
    instance_spec(h.image().image_uuid, hostname, nics, h.init())
}

/// An update of the disk quota (GiB) alone.
fn quota(gib: u64) -> InstanceUpdate {
    InstanceUpdate {
        quota: Some(gib),
        ..Default::default()
    }
}

async fn contract<H: Harness>(h: &H) {
    let b = h.backend();
    let image = h.image();

    // Images install once.
    b.image_ensure_present(image.clone())
        .await
        .expect("install image");
    b.image_ensure_present(image.clone())
        .await
        .expect("install image again");
    assert!(b.image_present(image.image_uuid).await.unwrap());

    // Bad requests are refused before anything is built.
    let mut no_image = spec(h, "noimage", vec![]);
    no_image.image_uuid = Uuid::new_v4();
    assert!(matches!(
        b.create(no_image).await,
        Err(Error::ImageNotFound(_))
    ));
    let mut bad_tag = h.nic(9);
    bad_tag.nic_tag = "no-such-tag".into();
    let bad = spec(h, "badtag", vec![bad_tag]);
    let bad_uuid = bad.uuid;
    assert!(matches!(b.create(bad).await, Err(Error::UnknownNicTag(_))));
    assert!(matches!(b.get(bad_uuid).await, Err(Error::VmNotFound(_))));

    // create -> running, hostname set, address answering, limits as packaged.
    let nic0 = h.nic(0);
    let ip0 = nic0.ip.unwrap();
    let web = spec(h, "web0", vec![nic0]);
    let uuid = web.uuid;
    let created = b.create(web.clone()).await.expect("create");
    assert_eq!(created.state, InstanceState::Running);
    let first_boot = created.last_boot.expect("booted");
    assert!(matches!(
        b.create(web.clone()).await,
        Err(Error::VmExists(_))
    ));
    assert_eq!(h.hostname(&b, uuid).await.as_deref(), Some("web0"));
    assert!(
        h.reachable(&b, uuid, ip0, Duration::from_secs(5)).await,
        "{ip0} answers"
    );
    assert_eq!(h.limits(&b, uuid), Some((64 * MIB, Some(50), Some(64))));

    // stop keeps the disk; start brings the instance back with it.
    h.write_file(&b, uuid, "/disk-test.txt", "kept").await;
    let stopped = b.shutdown(uuid, STOP_GRACE).await.expect("stop");
    assert_eq!(stopped.state, InstanceState::Stopped);
    assert!(
        !stopped.spec.autoboot,
        "a stopped instance stays stopped at node boot"
    );
    assert_eq!(h.hostname(&b, uuid).await, None);
    assert!(
        !h.reachable(&b, uuid, ip0, Duration::ZERO).await,
        "stopped answers"
    );
    let stopped_again = b
        .shutdown(uuid, STOP_GRACE)
        .await
        .expect("stop a stopped one");
    assert_eq!(stopped_again.state, InstanceState::Stopped);
    let booted = b.boot(uuid).await.expect("start");
    assert_eq!(booted.state, InstanceState::Running);
    assert!(booted.spec.autoboot);
    assert_eq!(
        h.read_file(&b, uuid, "/disk-test.txt").await.as_deref(),
        Some("kept")
    );
    assert!(h.reachable(&b, uuid, ip0, Duration::from_secs(5)).await);

    // quota: the disk holds what the package says (1 GiB), grows at once while the
    // instance runs, and never shrinks below what is on it.
    assert_eq!(web.quota, 1);
    let full = h
        .fill(&b, uuid, "/big", 1100)
        .await
        .expect_err("1100 MiB on a 1 GiB disk");
    assert!(full.contains("No space left on device"), "{full}");
    let grown = b.update(uuid, quota(2)).await.expect("grow the quota");
    assert_eq!(grown.spec.quota, 2);
    let size = h.disk_size(&b, uuid).await.expect("a disk");
    assert!(size > 3 * GIB / 2 && size <= 2 * GIB, "{size}");
    h.fill(&b, uuid, "/big", 1100)
        .await
        .expect("1100 MiB on a 2 GiB disk");
    let usage = b.usage(uuid).await.expect("usage");
    assert!(usage.disk_used_bytes >= 1100 * MIB, "{usage:?}");
    assert_eq!(usage.disk_limit_bytes, 2 * GIB);
    match b.update(uuid, quota(1)).await {
        Err(Error::Invalid { field, message }) => {
            assert_eq!(field, "quota");
            assert!(message.contains("in use"), "{message}");
        }
        other => panic!("shrinking below what is used: {other:?}"),
    }
    assert_eq!(b.get(uuid).await.unwrap().spec.quota, 2);
    h.fill(&b, uuid, "/big", 0).await.expect("empty the file");

    // reboot: running again, disk kept (and still of the grown size).
    let rebooted = b.reboot(uuid, STOP_GRACE).await.expect("reboot");
    assert_eq!(rebooted.state, InstanceState::Running);
    assert!(rebooted.last_boot.unwrap() >= first_boot);
    assert_eq!(
        h.read_file(&b, uuid, "/disk-test.txt").await.as_deref(),
        Some("kept")
    );
    let size = h.disk_size(&b, uuid).await.expect("a disk");
    assert!(size > 3 * GIB / 2 && size <= 2 * GIB, "{size}");
    assert!(h.reachable(&b, uuid, ip0, Duration::from_secs(5)).await);

    snapshots(h, &b, uuid, ip0).await;

    // update: resize at once, rename, add and remove a NIC while running.
    let nic1 = h.nic(1);
    let ip1 = nic1.ip.unwrap();
    let mac1 = nic1.mac.clone();
    let updated = b
        .update(
            uuid,
            InstanceUpdate {
                ram: Some(128),
                cpu_cap: Some(150),
                max_lwps: Some(200),
                alias: Some("web-renamed".into()),
                add_nics: vec![nic1],
                ..Default::default()
            },
        )
        .await
        .expect("update");
    assert_eq!(updated.spec.alias, "web-renamed");
    assert_eq!(updated.spec.nics.len(), 2);
    assert_eq!(h.limits(&b, uuid), Some((128 * MIB, Some(150), Some(200))));
    assert!(
        h.reachable(&b, uuid, ip1, Duration::from_secs(5)).await,
        "added NIC answers"
    );
    let updated = b
        .update(
            uuid,
            InstanceUpdate {
                remove_nics: vec![mac1],
                ..Default::default()
            },
        )
        .await
        .expect("remove NIC");
    assert_eq!(updated.spec.nics.len(), 1);
    assert!(
        !h.reachable(&b, uuid, ip1, Duration::ZERO).await,
        "removed NIC answers"
    );
    assert!(h.reachable(&b, uuid, ip0, Duration::from_secs(5)).await);
    let bad_update = InstanceUpdate {
        remove_nics: vec!["02:99:99:99:99:99".into()],
        ..Default::default()
    };
    assert!(matches!(
        b.update(uuid, bad_update).await,
        Err(Error::Invalid { .. })
    ));

    // A second instance, created without booting.
    let mut idle = spec(h, "idle0", vec![h.nic(2)]);
    idle.autoboot = false;
    let idle_uuid = idle.uuid;
    assert_eq!(b.create(idle).await.unwrap().state, InstanceState::Stopped);

    // The agent restarts: instances are found as they are, and keep running.
    let pid_before = b.get(uuid).await.unwrap().pid;
    drop(b);
    let b = h.backend();
    let listed = b.list().await.expect("list");
    let states: Vec<(Uuid, InstanceState)> =
        listed.iter().map(|i| (i.spec.uuid, i.state)).collect();
    assert!(
        states.contains(&(uuid, InstanceState::Running)),
        "{states:?}"
    );
    assert!(
        states.contains(&(idle_uuid, InstanceState::Stopped)),
        "{states:?}"
    );
    assert_eq!(b.get(uuid).await.unwrap().pid, pid_before);
    assert_eq!(b.get(uuid).await.unwrap().spec.alias, "web-renamed");
    assert_eq!(
        snapshot_names(&b.get(uuid).await.unwrap()),
        ["first.snap_1-a"],
        "snapshots outlive a restart of the agent"
    );
    assert!(h.reachable(&b, uuid, ip0, Duration::from_secs(5)).await);
    let usage = b.usage(uuid).await.expect("usage");
    assert_eq!(usage.memory_limit_bytes, 128 * MIB);
    assert_eq!(usage.disk_limit_bytes, 2 * GIB);
    let size = h.disk_size(&b, uuid).await.expect("a disk");
    assert!(size > 3 * GIB / 2 && size <= 2 * GIB, "{size}");
    assert!(usage.processes >= 1, "{usage:?}");

    // destroy removes everything.
    b.destroy(uuid).await.expect("destroy");
    b.destroy(idle_uuid).await.expect("destroy idle");
    assert!(matches!(b.get(uuid).await, Err(Error::VmNotFound(_))));
    assert!(matches!(b.destroy(uuid).await, Err(Error::VmNotFound(_))));
    assert_eq!(h.leftovers(&b, uuid), Vec::<String>::new());
    assert_eq!(h.leftovers(&b, idle_uuid), Vec::<String>::new());
    assert!(b.list().await.unwrap().is_empty());
}

/// A rollback to the snapshot `name` with the tests' grace period.
fn rollback(name: &str, boot: bool) -> Rollback {
    Rollback {
        name: name.into(),
        boot,
        timeout: STOP_GRACE,
    }
}

fn snapshot_names(instance: &cn_agent::Instance) -> Vec<&str> {
    instance.snapshots.iter().map(|s| s.name.as_str()).collect()
}

/// Snapshots of the running instance `uuid` (2 GiB disk, `/disk-test.txt` on it).
async fn snapshots<H: Harness>(h: &H, b: &H::B, uuid: Uuid, ip: Ipv4Addr) {
    const NAME: &str = "first.snap_1-a";
    // Taken while running: the instance keeps running.
    h.write_file(b, uuid, "/before.txt", "before").await;
    let snapped = b
        .create_snapshot(uuid, NAME.into())
        .await
        .expect("snapshot");
    assert_eq!(snapped.state, InstanceState::Running);
    assert_eq!(snapshot_names(&snapped), [NAME]);
    h.was_frozen(b, uuid)
        .await
        .expect("frozen for the snapshot");
    assert!(h.reachable(b, uuid, ip, Duration::from_secs(5)).await);

    // Bad and duplicate names are refused, naming the field; unknown ones are not found.
    let long = "x".repeat(65);
    for bad in [NAME, "", "a/b", "..", "has space", long.as_str()] {
        match b.create_snapshot(uuid, bad.into()).await {
            Err(Error::Invalid { field, .. }) => assert_eq!(field, "name", "{bad:?}"),
            other => panic!("snapshot named {bad:?}: {other:?}"),
        }
    }
    assert_eq!(snapshot_names(&b.get(uuid).await.unwrap()), [NAME]);
    assert!(matches!(
        b.rollback_snapshot(uuid, rollback("nope", true)).await,
        Err(Error::SnapshotNotFound { .. })
    ));
    assert!(matches!(
        b.delete_snapshot(uuid, "nope".into()).await,
        Err(Error::SnapshotNotFound { .. })
    ));
    assert_eq!(b.get(uuid).await.unwrap().state, InstanceState::Running);

    // Rollback: what was written after the snapshot is gone, what was before is back.
    h.write_file(b, uuid, "/before.txt", "changed").await;
    h.write_file(b, uuid, "/after.txt", "after").await;
    let rolled = b
        .rollback_snapshot(uuid, rollback(NAME, true))
        .await
        .expect("rollback");
    assert_eq!(rolled.state, InstanceState::Running);
    assert_eq!(snapshot_names(&rolled), [NAME], "the snapshot is kept");
    assert_eq!(
        h.read_file(b, uuid, "/before.txt").await.as_deref(),
        Some("before")
    );
    assert_eq!(h.read_file(b, uuid, "/after.txt").await, None);
    assert_eq!(
        h.read_file(b, uuid, "/disk-test.txt").await.as_deref(),
        Some("kept")
    );
    assert!(h.reachable(b, uuid, ip, Duration::from_secs(5)).await);

    // Of a stopped instance too; a rollback without boot leaves it stopped.
    b.shutdown(uuid, STOP_GRACE).await.expect("stop");
    let cold = b
        .create_snapshot(uuid, "cold".into())
        .await
        .expect("snapshot of a stopped instance");
    assert_eq!(cold.state, InstanceState::Stopped);
    let rolled = b
        .rollback_snapshot(uuid, rollback(NAME, false))
        .await
        .expect("rollback of a stopped instance");
    assert_eq!(rolled.state, InstanceState::Stopped);
    b.delete_snapshot(uuid, "cold".into())
        .await
        .expect("delete of a stopped instance's snapshot");
    b.boot(uuid).await.expect("boot");

    // A snapshot counts toward the disk: it holds what the instance deleted since, and
    // deleting it frees that.
    h.fill(b, uuid, "/big", 300).await.expect("300 MiB");
    let filled = b.usage(uuid).await.unwrap().disk_used_bytes;
    b.create_snapshot(uuid, "big".into())
        .await
        .expect("snapshot of 300 MiB");
    // Copy-on-write (a reflink copy on XFS): the snapshot shares the file's blocks.
    let shared = b.usage(uuid).await.unwrap().disk_used_bytes;
    assert!(
        shared < filled + 50 * MIB,
        "a snapshot copies nothing: {filled} -> {shared}"
    );
    h.fill(b, uuid, "/big", 0).await.expect("empty the file");
    let held = b.usage(uuid).await.unwrap().disk_used_bytes;
    assert!(held >= 300 * MIB, "the snapshot holds the file: {held}");
    let deleted = b.delete_snapshot(uuid, "big".into()).await.expect("delete");
    assert_eq!(snapshot_names(&deleted), [NAME]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let used = b.usage(uuid).await.unwrap().disk_used_bytes;
        if used + 250 * MIB <= held {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deleting the snapshot freed too little: {held} -> {used}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ------------------------------------------------------------------------- sim

struct SimHarness {
    dir: tempfile::TempDir,
    image: ImageSource,
}

impl SimHarness {
    fn new() -> SimHarness {
        SimHarness {
            dir: tempfile::tempdir().unwrap(),
            image: ImageSource {
                image_uuid: Uuid::new_v4(),
                path: PathBuf::from("/nonexistent/sim-image.tar"),
            },
        }
    }
}

impl Harness for SimHarness {
    type B = SimBackend;

    fn backend(&self) -> SimBackend {
        let delays = SimDelays {
            boot: Duration::from_millis(5),
            shutdown: Duration::from_millis(5),
            ..Default::default()
        };
        let config = SimConfig {
            delays,
            ..Default::default()
        };
        SimBackend::persistent(self.dir.path().join("sim.json"), config).unwrap()
    }
    fn image(&self) -> ImageSource {
        self.image.clone()
    }
    fn nic(&self, n: u8) -> NicSpec {
        let gateway = Ipv4Addr::new(10, 99, 0, 1);
        NicSpec {
            mac: format!("02:00:00:00:00:{n:02x}"),
            ip: Some(Ipv4Addr::new(10, 99, 0, 10 + n)),
            prefix_len: 24,
            gateway: Some(gateway),
            resolvers: vec![gateway],
            nic_tag: "admin".into(),
            primary: n == 0,
            ..Default::default()
        }
    }
    fn init(&self) -> Vec<String> {
        vec![]
    }
    async fn hostname(&self, b: &SimBackend, uuid: Uuid) -> Option<String> {
        b.observe(uuid)?.hostname
    }
    async fn reachable(&self, b: &SimBackend, uuid: Uuid, ip: Ipv4Addr, _: Duration) -> bool {
        b.observe(uuid)
            .is_some_and(|o| o.addresses.iter().any(|(_, a)| *a == ip))
    }
    fn limits(&self, b: &SimBackend, uuid: Uuid) -> Option<Limits> {
        let o = b.observe(uuid)?;
        Some((o.memory_limit_bytes, o.cpu_quota_percent, o.pids_max))
    }
    async fn write_file(&self, b: &SimBackend, uuid: Uuid, path: &str, contents: &str) {
        b.disk_write(uuid, path, contents).unwrap();
    }
    async fn read_file(&self, b: &SimBackend, uuid: Uuid, path: &str) -> Option<String> {
        b.disk_read(uuid, path)
    }
    async fn fill(&self, b: &SimBackend, uuid: Uuid, path: &str, mib: u64) -> Result<(), String> {
        b.disk_fill(uuid, path, mib * MIB).map_err(|e| e.chain())
    }
    async fn disk_size(&self, b: &SimBackend, uuid: Uuid) -> Option<u64> {
        b.disk_size(uuid)
    }
    async fn was_frozen(&self, _: &SimBackend, _: Uuid) -> Result<(), String> {
        Ok(())
    }
    fn leftovers(&self, b: &SimBackend, uuid: Uuid) -> Vec<String> {
        match b.observe(uuid) {
            Some(_) => vec![format!("sim still has {uuid}")],
            None => vec![],
        }
    }
}

#[tokio::test]
async fn sim_backend_keeps_the_contract() {
    contract(&SimHarness::new()).await;
}

#[tokio::test]
async fn sim_nodes_scale_to_hundreds_in_one_process() {
    // 300 simulated nodes, each with a few instances, all booting concurrently.
    let h = SimHarness::new();
    let image = h.image();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let image = image.clone();
        let specs: Vec<InstanceSpec> = (0..3)
            .map(|i| spec(&h, &format!("vm{i}"), vec![]))
            .collect();
        tasks.spawn(async move {
            let delays = SimDelays {
                create: Duration::from_millis(20),
                boot: Duration::from_millis(20),
                ..Default::default()
            };
            let node = SimBackend::in_memory(SimConfig {
                delays,
                ..Default::default()
            });
            node.image_ensure_present(image).await.unwrap();
            for s in specs {
                node.create(s).await.unwrap();
            }
            node.list().await.unwrap().len()
        });
    }
    let mut total = 0;
    while let Some(n) = tasks.join_next().await {
        total += n.unwrap();
    }
    assert_eq!(total, 900);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

// ------------------------------------------------------------------------- linux

use common::{Host as LinuxHarness, in_instance, serves_page};
use dc_testkit::run;

impl LinuxHarness {
    fn new() -> LinuxHarness {
        LinuxHarness::admin(
            "the linux backend test",
            't',
            &[
                "sh", "httpd", "hostname", "sleep", "cat", "ls", "ip", "ps", "mkdir", "dd",
                "readlink",
            ],
        )
    }
}

fn read_trim(path: PathBuf) -> String {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

impl Harness for LinuxHarness {
    type B = LinuxBackend;

    fn backend(&self) -> LinuxBackend {
        self.0.backend()
    }
    fn image(&self) -> ImageSource {
        self.image.clone()
    }
    fn nic(&self, n: u8) -> NicSpec {
        NicSpec {
            primary: n == 0,
            ..self.0.nic(0, n)
        }
    }
    fn init(&self) -> Vec<String> {
        httpd_init()
    }
    async fn hostname(&self, b: &LinuxBackend, uuid: Uuid) -> Option<String> {
        let pid = b.get(uuid).await.ok()?.pid?;
        let out = std::process::Command::new("nsenter")
            .args(["--target", &pid.to_string(), "--uts", "uname", "-n"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        // The address is configured on the right interface inside, too.
        let addrs = run(
            "nsenter",
            &[
                "--target",
                &pid.to_string(),
                "--net",
                "ip",
                "-4",
                "-o",
                "addr",
                "show",
            ],
        );
        assert!(addrs.contains(" eth0 "), "{addrs}");
        Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
    async fn reachable(&self, _: &LinuxBackend, _: Uuid, ip: Ipv4Addr, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let addr = SocketAddr::from((ip, 80));
        loop {
            let answered =
                tokio::task::spawn_blocking(move || serves_page(addr, Duration::from_millis(500)))
                    .await
                    .unwrap();
            if answered || Instant::now() >= deadline {
                return answered;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    fn limits(&self, _: &LinuxBackend, uuid: Uuid) -> Option<Limits> {
        let root = Path::new("/sys/fs/cgroup");
        let rel = Path::new(&self.config.cgroup_parent).join(uuid.to_string());
        if root.join("cgroup.controllers").exists() {
            let dir = root.join(rel);
            let memory = read_trim(dir.join("memory.max")).parse().ok()?;
            let cpu = read_trim(dir.join("cpu.max"));
            let mut parts = cpu.split(' ');
            let quota: Option<u64> = parts.next()?.parse().ok();
            let period: u64 = parts.next()?.parse().ok()?;
            let pids = read_trim(dir.join("pids.max")).parse().ok();
            return Some((memory, quota.map(|q| (q * 100 / period) as u32), pids));
        }
        let memory = read_trim(root.join("memory").join(&rel).join("memory.limit_in_bytes"))
            .parse()
            .ok()?;
        let cpu_dir = root.join("cpu").join(&rel);
        let quota: i64 = read_trim(cpu_dir.join("cpu.cfs_quota_us")).parse().ok()?;
        let period: i64 = read_trim(cpu_dir.join("cpu.cfs_period_us")).parse().ok()?;
        let pids = read_trim(root.join("pids").join(&rel).join("pids.max"))
            .parse()
            .ok();
        let cpu = (quota > 0).then(|| (quota * 100 / period) as u32);
        Some((memory, cpu, pids))
    }
    async fn write_file(&self, b: &LinuxBackend, uuid: Uuid, path: &str, contents: &str) {
        let pid = b.get(uuid).await.unwrap().pid.expect("running");
        let host_path = format!("/proc/{pid}/root{path}");
        std::fs::write(&host_path, contents).unwrap_or_else(|e| panic!("{host_path}: {e}"));
    }
    async fn read_file(&self, b: &LinuxBackend, uuid: Uuid, path: &str) -> Option<String> {
        let pid = b.get(uuid).await.ok()?.pid?;
        std::fs::read_to_string(format!("/proc/{pid}/root{path}")).ok()
    }
    async fn fill(&self, b: &LinuxBackend, uuid: Uuid, path: &str, mib: u64) -> Result<(), String> {
        let pid = b.get(uuid).await.unwrap().pid.expect("running");
        let of = format!("of={path}");
        let count = format!("count={mib}");
        let out = in_instance(pid, &["/bin/dd", "if=/dev/zero", &of, "bs=1M", &count]);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
    async fn disk_size(&self, b: &LinuxBackend, uuid: Uuid) -> Option<u64> {
        // The instance's root as the kernel reports it: the size of the file system under
        // its overlay (what `df /` shows inside).
        let pid = b.get(uuid).await.ok()?.pid?;
        let c = std::ffi::CString::new(format!("/proc/{pid}/root/")).unwrap();
        // SAFETY: statvfs(2) fills the zeroed struct we own from a NUL-terminated path.
        unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            (libc::statvfs(c.as_ptr(), &mut st) == 0).then(|| st.f_blocks * st.f_frsize)
        }
    }
    async fn was_frozen(&self, b: &LinuxBackend, uuid: Uuid) -> Result<(), String> {
        let pid = b.get(uuid).await.unwrap().pid.expect("running");
        let root = Path::new("/sys/fs/cgroup");
        let rel = Path::new(&self.config.cgroup_parent).join(uuid.to_string());
        let (dir, state_file, thawed) = if root.join("cgroup.controllers").exists() {
            (root.join(&rel), "cgroup.freeze", "0")
        } else if root.join("freezer/cgroup.procs").exists() {
            (root.join("freezer").join(&rel), "freezer.state", "THAWED")
        } else {
            // A v1 host without a freezer: SIGSTOP/SIGCONT leave nothing to look at.
            return Ok(());
        };
        let state = read_trim(dir.join(state_file));
        if state != thawed {
            return Err(format!("{state_file} is {state:?}"));
        }
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        if !procs.lines().any(|l| l.trim() == pid.to_string()) {
            return Err(format!("pid 1 ({pid}) is not in {}", dir.display()));
        }
        Ok(())
    }
    fn leftovers(&self, b: &LinuxBackend, uuid: Uuid) -> Vec<String> {
        let mut left = Vec::new();
        if b.zone_dir(uuid).exists() {
            left.push(format!("zone dir {}", b.zone_dir(uuid).display()));
        }
        for dir in cgroup_dirs(&self.config.cgroup_parent) {
            let dir = dir.join(uuid.to_string());
            if dir.exists() {
                left.push(format!("cgroup {}", dir.display()));
            }
        }
        let netns = Path::new("/run/netns").join(format!("{}{uuid}", self.config.netns_prefix));
        if netns.exists() {
            left.push(format!("netns {}", netns.display()));
        }
        let stem = format!(
            "{}{}",
            self.config.link_prefix,
            &uuid.simple().to_string()[..8]
        );
        for entry in std::fs::read_dir("/sys/class/net")
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&stem) {
                left.push(format!("link {name}"));
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for line in mounts.lines().filter(|l| l.contains(&uuid.to_string())) {
            left.push(format!("mount {line}"));
        }
        for entry in std::fs::read_dir("/sys/block")
            .into_iter()
            .flatten()
            .flatten()
        {
            let backing =
                std::fs::read_to_string(entry.path().join("loop/backing_file")).unwrap_or_default();
            if backing.contains(&uuid.to_string()) {
                left.push(format!(
                    "loop device {} on {}",
                    entry.file_name().to_string_lossy(),
                    backing.trim()
                ));
            }
        }
        left
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linux_backend_keeps_the_contract() {
    let h = LinuxHarness::new();
    contract(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linux_failed_boot_leaves_nothing_running() {
    let h = LinuxHarness::new();
    let b = h.backend();
    b.image_ensure_present(h.image()).await.unwrap();
    let mut broken = spec(&h, "broken", vec![h.nic(3)]);
    broken.init = vec!["/bin/no-such-init".into()];
    let uuid = broken.uuid;
    let err = b
        .create(broken)
        .await
        .expect_err("an init that does not exist");
    assert!(
        err.chain().contains("could not start") && err.chain().contains("no-such-init"),
        "{}",
        err.chain()
    );
    let failed = b.get(uuid).await.unwrap();
    assert_eq!(failed.state, InstanceState::Failed);
    // No process, namespace or veth is left; only the record, until destroy.
    let left: Vec<String> = h
        .leftovers(&b, uuid)
        .into_iter()
        .filter(|l| !l.starts_with("zone dir") && !l.starts_with("cgroup"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
    assert!(b.cgroups().pids(uuid).is_empty());
    b.destroy(uuid).await.unwrap();
    assert_eq!(h.leftovers(&b, uuid), Vec::<String>::new());
}

/// What of the host an instance can reach, from inside (empty: nothing).
fn host_reachable_from(pid: u32, host_marker: &Path) -> Vec<String> {
    let mut breaches = Vec::new();
    // Entering the instance's mount namespace lands at its root: the instance's files,
    // and nothing else. (With a chroot the namespace's root would be the host's.)
    let listing = in_instance(pid, &["/bin/ls", "-a", "/"]);
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(
        listing.lines().any(|l| l == "www"),
        "not the instance's root: {listing}"
    );
    let marker = host_marker.to_str().unwrap();
    let seen = in_instance(pid, &["/bin/cat", marker]);
    if seen.status.success() {
        breaches.push(format!("the host's {marker} is readable inside"));
    }
    for path in ["/..", "/../..", "/proc/1/root/..", "/proc/1/root/../.."] {
        let up = in_instance(pid, &["/bin/ls", "-a", path]);
        let up = String::from_utf8_lossy(&up.stdout).into_owned();
        if up != listing {
            breaches.push(format!("{path} is not the instance's root: {up}"));
        }
    }
    // pid 1's root is the root itself.
    let root = in_instance(pid, &["/bin/readlink", "/proc/1/root"]);
    let root = String::from_utf8_lossy(&root.stdout).trim().to_string();
    if root != "/" {
        breaches.push(format!("/proc/1/root is {root:?}"));
    }
    // No mount inside is the host's root file system.
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let host_root_dev = host_mounts
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&"/"))
        .map(|f| f[2].to_string())
        .expect("the host's root mount");
    let inside = in_instance(pid, &["/bin/cat", "/proc/self/mountinfo"]);
    assert!(inside.status.success(), "{inside:?}");
    for line in String::from_utf8_lossy(&inside.stdout).lines() {
        if line.split(' ').nth(2) == Some(host_root_dev.as_str()) {
            breaches.push(format!(
                "the host's root file system is mounted inside: {line}"
            ));
        }
    }
    breaches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linux_instance_cannot_reach_the_host_filesystem() {
    let h = LinuxHarness::new();
    let b = h.backend();
    b.image_ensure_present(h.image()).await.unwrap();
    // A file on the host, outside the instance's root.
    let marker = h.dir.path().join(format!("host-marker-{}", Uuid::new_v4()));
    std::fs::write(&marker, "the host's").unwrap();
    let jail = spec(&h, "jail0", vec![h.nic(4)]);
    let uuid = jail.uuid;
    b.create(jail).await.expect("create");
    let pid = b.get(uuid).await.unwrap().pid.expect("running");
    assert_eq!(host_reachable_from(pid, &marker), Vec::<String>::new());

    // Each boot makes the instance's root anew: still sealed after a stop and start, a
    // reboot, and with a restarted agent; the disk is kept throughout.
    h.write_file(&b, uuid, "/kept.txt", "kept").await;
    b.shutdown(uuid, STOP_GRACE).await.expect("stop");
    b.boot(uuid).await.expect("start");
    b.reboot(uuid, STOP_GRACE).await.expect("reboot");
    let b = h.backend();
    let instance = b.get(uuid).await.unwrap();
    assert_eq!(instance.state, InstanceState::Running);
    assert_eq!(
        h.read_file(&b, uuid, "/kept.txt").await.as_deref(),
        Some("kept")
    );
    let pid = instance.pid.expect("running");
    assert_eq!(host_reachable_from(pid, &marker), Vec::<String>::new());

    // A reboot of the node: every process gone, nothing mounted, a new agent. The
    // instance is found stopped (and meant to run), and boots with its disk.
    for dir in cgroup_dirs(&h.config.cgroup_parent) {
        kill_cgroup(&dir.join(uuid.to_string()));
    }
    b.disk(uuid)
        .unmount()
        .expect("unmount the disk as a reboot would");
    assert!(!b.disk(uuid).is_mounted());
    let b = h.backend();
    let found = b.get(uuid).await.unwrap();
    assert_eq!(found.state, InstanceState::Stopped);
    assert!(found.spec.autoboot);
    b.boot(uuid).await.expect("boot after a reboot of the node");
    assert_eq!(
        h.read_file(&b, uuid, "/kept.txt").await.as_deref(),
        Some("kept")
    );
    let pid = b.get(uuid).await.unwrap().pid.expect("running");
    assert_eq!(host_reachable_from(pid, &marker), Vec::<String>::new());

    b.destroy(uuid).await.expect("destroy");
    assert_eq!(h.leftovers(&b, uuid), Vec::<String>::new());
}
