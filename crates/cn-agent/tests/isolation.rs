//! The instance sandbox of the linux backend, seen from inside a real instance through
//! the `zlogin` binary (as an operator or a tenant would), and from the host.
//!
//! Needs root and /bin/busybox (busybox-static), as the linux tests of contract.rs.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use cn_agent::linux::LinuxBackend;
use cn_agent::linux::idmap::{FIRST_BASE, IdRange, RANGE_SIZE};
use cn_agent::linux::net::send_to;
use cn_agent::linux::sandbox::default_caps_mask;
use cn_agent::{InstanceSpec, InstanceState, ZoneBackend};
use uuid::Uuid;

mod common;

use common::{Host, serves_page, set_recv_timeout};

impl Host {
    fn new() -> Host {
        Host::admin(
            "the isolation test",
            'i',
            &[
                "sh", "httpd", "id", "cat", "ls", "ps", "mknod", "mount", "touch", "chown", "echo",
                "stat", "hostname", "sleep",
            ],
        )
    }

    /// A 128 MiB instance with a whole CPU and 200 processes, its NIC `n` on the bridge.
    fn spec(&self, hostname: &str, n: u8) -> InstanceSpec {
        InstanceSpec {
            ram: 128,
            cpu_cap: 100,
            max_lwps: 200,
            ..self.0.spec(hostname, vec![self.nic(0, n)])
        }
    }

    fn ids(&self, b: &LinuxBackend, uuid: Uuid) -> IdRange {
        let record = std::fs::read(b.zone_dir(uuid).join("zone.json")).unwrap();
        let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
        serde_json::from_value(record["ids"].clone()).unwrap()
    }
}

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .trim()
        .to_string()
}

/// An ICMP echo to `to` through a datagram socket, sent and answered in the network
/// namespace at `netns` by a process with host uid and gid `id` and no capability.
fn icmp_echo_as(netns: &Path, id: u32, to: [u8; 4]) -> Result<(), i32> {
    let ns = std::fs::File::open(netns).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&ns);
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(to),
        },
        sin_zero: [0; 8],
    };
    // type 8 (echo request), code 0, checksum (the kernel fills it in), id, sequence.
    let echo: [u8; 8] = [8, 0, 0, 0, 0, 1, 0, 1];
    let timeout = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    // SAFETY: the child makes system calls only on memory prepared before the fork and
    // leaves with _exit.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(1);
            if libc::setns(fd, libc::CLONE_NEWNET) < 0
                || libc::setgroups(0, std::ptr::null()) < 0
                || libc::setresgid(id, id, id) < 0
                || libc::setresuid(id, id, id) < 0
            {
                libc::_exit(errno());
            }
            let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP);
            if sock < 0 {
                libc::_exit(errno());
            }
            set_recv_timeout(sock, timeout);
            if send_to(sock, &echo, &addr).is_err() {
                libc::_exit(errno());
            }
            let mut reply = [0u8; 64];
            let n = libc::recv(sock, reply.as_mut_ptr().cast(), reply.len(), 0);
            // type 0: echo reply.
            libc::_exit(if n >= 8 && reply[0] == 0 { 0 } else { 254 });
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        match libc::WEXITSTATUS(status) {
            0 => Ok(()),
            code => Err(code),
        }
    }
}

/// Whether the instance on `ip` serves its page within 10 s.
fn serves(ip: Ipv4Addr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !serves_page(SocketAddr::from((ip, 80)), Duration::from_millis(500)) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_is_root_only_in_its_own_sandbox() {
    let h = Host::new();
    let (b, uuid) = h.backend_with(h.spec("sandbox0", 1)).await;
    let init = b.get(uuid).await.unwrap().pid.expect("running");
    let ids = h.ids(&b, uuid);
    assert_eq!(ids.size, RANGE_SIZE);
    assert!(ids.base >= FIRST_BASE, "{ids:?}");

    // Root inside, the range's base on the host.
    assert_eq!(h.inside(uuid, &["id", "-u"]).trim(), "0");
    assert_eq!(h.inside(uuid, &["id", "-g"]).trim(), "0");
    let uid = status_field(init, "Uid");
    assert_eq!(
        uid.split_whitespace().collect::<Vec<_>>(),
        vec![ids.base.to_string(); 4],
        "{uid}"
    );
    // The image's files belong to root inside (an idmapped image), none to nobody.
    assert_eq!(
        h.inside(uuid, &["stat", "-c", "%u %g", "/bin/busybox"])
            .trim(),
        "0 0"
    );

    // The init works: httpd on port 80, reached from the host.
    assert!(serves(h.ip(1)), "the instance serves its page");
    // ping works for any user of the instance with ICMP datagram sockets (iputils'
    // ping; net.ipv4.ping_group_range covers the instance's groups): an echo to the
    // gateway from the instance's network namespace with its root's ids and no
    // capability. busybox's raw-socket ping as root: network_isolation.rs.
    let netns = Path::new("/run/netns").join(format!("{}{uuid}", h.config.netns_prefix));
    assert_eq!(
        icmp_echo_as(&netns, ids.base, [10, 99, h.subnet(), 1]),
        Ok(())
    );

    // Files made inside belong to the range on the disk.
    h.inside(
        uuid,
        &[
            "sh",
            "-c",
            "touch /by-root && touch /by-1000 && chown 1000:1000 /by-1000",
        ],
    );
    let upper = b.disk(uuid).upper();
    let by_root = std::fs::symlink_metadata(upper.join("by-root")).unwrap();
    assert_eq!((by_root.uid(), by_root.gid()), (ids.base, ids.base));
    let by_1000 = std::fs::symlink_metadata(upper.join("by-1000")).unwrap();
    assert_eq!(
        (by_1000.uid(), by_1000.gid()),
        (ids.base + 1000, ids.base + 1000)
    );
    // So do the files the agent writes into it.
    let hosts = std::fs::symlink_metadata(upper.join("etc/hosts")).unwrap();
    assert_eq!(hosts.uid(), ids.base);

    // No device node, no write under /proc/sys, no mount of any kind.
    h.refused(uuid, &["mknod", "/tmp/sda", "b", "8", "0"]);
    h.refused(uuid, &["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"]);
    h.refused(uuid, &["sh", "-c", "echo 1 > /proc/sysrq-trigger"]);
    h.refused(uuid, &["mount", "-t", "tmpfs", "none", "/mnt"]);
    h.refused(uuid, &["mount", "-t", "proc", "proc", "/mnt"]);
    h.refused(uuid, &["mount", "-t", "sysfs", "sysfs", "/mnt"]);
    h.refused(
        uuid,
        &["mount", "-t", "cgroup", "-o", "memory", "cg", "/mnt"],
    );
    // The host's kernel memory and keys are masked.
    // (A kernel without one of them has nothing to hide.)
    for file in [
        "/proc/kcore",
        "/proc/keys",
        "/proc/kallsyms",
        "/proc/timer_list",
    ] {
        if Path::new(file).exists() {
            assert_eq!(h.inside(uuid, &["cat", file]), "", "{file}");
        }
    }
    // Only the allowed devices are in /dev.
    let dev = h.inside(uuid, &["ls", "/dev"]);
    let mut dev: Vec<&str> = dev.split_whitespace().collect();
    dev.sort();
    assert_eq!(
        dev,
        [
            "full", "null", "ptmx", "pts", "random", "shm", "tty", "urandom", "zero"
        ]
    );

    // On cgroup v1 the devices controller allows just those.
    let devices = Path::new("/sys/fs/cgroup/devices")
        .join(&h.config.cgroup_parent)
        .join(uuid.to_string())
        .join("devices.list");
    if devices.exists() {
        let list = std::fs::read_to_string(&devices).unwrap();
        let mut list: Vec<&str> = list.lines().collect();
        list.sort();
        // The policy spelled out here, not taken from the agent's own constant: a device
        // added to that list by mistake must fail this test.
        assert_eq!(
            list,
            [
                "c 136:* rwm",
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:2 rwm"
            ]
        );
    }

    // No host process is visible: pid 1 is the init, the rest is the command itself.
    let ps = h.inside(uuid, &["ps", "-o", "pid,comm"]);
    let procs: Vec<(u32, String)> = ps
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.parse().ok()?, f.next()?.to_string()))
        })
        .collect();
    assert!(procs.contains(&(1, "httpd".to_string())), "{ps}");
    for (pid, comm) in &procs {
        assert!(
            comm == "httpd" || comm == "ps",
            "a process not of the instance: {pid} {comm}"
        );
    }

    // The container capability set, no_new_privs, the seccomp filter: for zlogin's
    // commands and for the init alike.
    let status = h.inside(uuid, &["cat", "/proc/self/status"]);
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let caps = format!("{:016x}", default_caps_mask());
    assert_eq!(field("CapEff"), caps);
    assert_eq!(field("CapBnd"), caps);
    assert_eq!(field("CapAmb"), "0000000000000000");
    assert_eq!(field("NoNewPrivs"), "1");
    assert_eq!(field("Seccomp"), "2");
    assert_eq!(status_field(init, "CapEff"), caps);
    assert_eq!(status_field(init, "Seccomp"), "2");
    // Its own cgroup namespace: its cgroup is the root.
    let cgroup = h.inside(uuid, &["cat", "/proc/self/cgroup"]);
    assert!(cgroup.lines().all(|l| l.ends_with(":/")), "{cgroup}");

    // The limits cannot be lifted from inside: no cgroup file is there to write.
    let limit = |file: &str| {
        let root = Path::new("/sys/fs/cgroup");
        let rel = Path::new(&h.config.cgroup_parent).join(uuid.to_string());
        let path = if root.join("cgroup.controllers").exists() {
            root.join(rel).join(file)
        } else {
            root.join(file.split('.').next().unwrap())
                .join(rel)
                .join(file)
        };
        std::fs::read_to_string(path).unwrap().trim().to_string()
    };
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (memory_file, pids_file) = if v2 {
        ("memory.max", "pids.max")
    } else {
        ("memory.limit_in_bytes", "pids.max")
    };
    let (memory, pids) = (limit(memory_file), limit(pids_file));
    assert_eq!(memory, (128u64 << 20).to_string());
    assert_eq!(pids, "200");
    assert_eq!(h.inside(uuid, &["ls", "/sys/fs/cgroup"]).trim(), "");
    for path in [
        format!("/sys/fs/cgroup/memory/{memory_file}"),
        format!("/sys/fs/cgroup/{memory_file}"),
        format!("/sys/fs/cgroup/pids/{pids_file}"),
        format!("/sys/fs/cgroup/{pids_file}"),
    ] {
        h.refused(uuid, &["sh", "-c", &format!("echo 999999999 > {path}")]);
    }
    assert_eq!(limit(memory_file), memory);
    assert_eq!(limit(pids_file), pids);

    // Without a command: a shell, reading the caller's input.
    let mut shell = std::process::Command::new(env!("CARGO_BIN_EXE_zlogin"))
        .env_remove("CN_AGENT_CONFIG")
        .env("CN_AGENT_LINUX__CGROUP_PARENT", &h.config.cgroup_parent)
        .arg("--state-dir")
        .arg(&h.config.state_dir)
        .arg(uuid.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    shell
        .stdin
        .take()
        .unwrap()
        .write_all(b"id -u; hostname; exit 3\n")
        .unwrap();
    let out = shell.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\nsandbox0\n");
    // An instance that does not exist, or is not running, is a clear error.
    let unknown = h.zlogin(Uuid::new_v4(), &["id"]);
    assert_eq!(unknown.status.code(), Some(126));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("zlogin: "),
        "{unknown:?}"
    );

    // zlogin passes the command's status through.
    assert_eq!(
        h.zlogin(uuid, &["sh", "-c", "exit 7"]).status.code(),
        Some(7)
    );
    let missing = h.zlogin(uuid, &["/bin/no-such-command"]);
    assert!(!missing.status.success(), "{missing:?}");

    // Still all there after a reboot.
    b.reboot(uuid, Duration::from_secs(5))
        .await
        .expect("reboot");
    assert_eq!(h.ids(&b, uuid), ids);
    assert_eq!(h.inside(uuid, &["id", "-u"]).trim(), "0");
    assert!(serves(h.ip(1)), "the instance serves its page");
    b.destroy(uuid).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uid_ranges_are_disjoint_and_freed_by_destroy() {
    let h = Host::new();
    let b = h.backend_with_image().await;
    let mut specs = Vec::new();
    for n in 0..3 {
        let mut spec = h.spec(&format!("range{n}"), 10 + n);
        spec.autoboot = false;
        specs.push(spec);
    }
    let mut ranges = Vec::new();
    for spec in &specs[..2] {
        b.create(spec.clone()).await.expect("create");
        ranges.push(h.ids(&b, spec.uuid));
    }
    let (a, c) = (ranges[0], ranges[1]);
    assert!(
        a.base + a.size <= c.base || c.base + c.size <= a.base,
        "{a:?} and {c:?} overlap"
    );
    assert_eq!((a.slot(), c.slot()), (Some(0), Some(1)));
    // Destroy frees the range: the next instance gets it.
    b.destroy(specs[0].uuid).await.unwrap();
    b.create(specs[2].clone()).await.expect("create");
    assert_eq!(h.ids(&b, specs[2].uuid), a);
    for spec in &specs[1..] {
        b.destroy(spec.uuid).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_from_before_ranges_is_moved_into_one_at_boot() {
    let h = Host::new();
    let spec = InstanceSpec {
        autoboot: false,
        ..h.spec("legacy0", 20)
    };
    let (b, uuid) = h.backend_with(spec).await;
    // As an instance made before: no range in its record, its files owned by host ids
    // below 65536 (root's and a user's), a symlink to a host file among them.
    let dir = b.zone_dir(uuid);
    let record_path = dir.join("zone.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    record.as_object_mut().unwrap().remove("ids");
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    let host_file = h.dir.path().join("host-file");
    std::fs::write(&host_file, "the host's").unwrap();
    let disk = b.disk(uuid);
    disk.mount().unwrap();
    let upper = disk.upper();
    std::os::unix::fs::lchown(&upper, Some(0), Some(0)).unwrap();
    std::fs::create_dir(upper.join("home")).unwrap();
    std::fs::write(upper.join("home/user-file"), "mine").unwrap();
    std::os::unix::fs::lchown(upper.join("home/user-file"), Some(1000), Some(100)).unwrap();
    std::os::unix::fs::symlink(&host_file, upper.join("home/link")).unwrap();
    disk.unmount().unwrap();

    b.boot(uuid).await.expect("boot");
    let ids = h.ids(&b, uuid);
    let meta = |rel: &str| std::fs::symlink_metadata(upper.join(rel)).unwrap();
    assert_eq!(meta("").uid(), ids.base);
    assert_eq!(meta("home").uid(), ids.base);
    assert_eq!(
        (meta("home/user-file").uid(), meta("home/user-file").gid()),
        (ids.base + 1000, ids.base + 100)
    );
    assert_eq!(meta("home/link").uid(), ids.base);
    // The link was not followed: the host's file is as it was.
    let host = std::fs::metadata(&host_file).unwrap();
    assert_eq!((host.uid(), host.gid()), (0, 0));
    // Inside, the files are root's and the user's.
    assert_eq!(
        h.inside(uuid, &["stat", "-c", "%u %g", "/home/user-file"])
            .trim(),
        "1000 100"
    );
    assert_eq!(b.get(uuid).await.unwrap().state, InstanceState::Running);
    b.destroy(uuid).await.unwrap();
}
