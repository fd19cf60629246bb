//! What the linux backend's usage call reports for CMon, against a real instance: CPU
//! burnt inside shows as user time, bytes sent to it from the host show on its NIC and
//! its TCP counters, its memory matches its cgroup's, and a busy loop shows as load;
//! loops over a CPU cap show as throttling and run-queue wait; a full accept backlog in
//! a network namespace shows as listen drops.
//!
//! Needs root and /bin/busybox (busybox-static), as the linux tests of contract.rs.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use cn_agent::{InstanceSpec, InstanceUsage, NicSpec, ZoneBackend};
use uuid::Uuid;

mod common;

use common::Host;

const MIB: u64 = 1024 * 1024;
const SECOND_NS: u64 = 1_000_000_000;

impl Host {
    fn new() -> Host {
        Host::admin(
            "the usage test",
            'm',
            &["sh", "httpd", "nc", "timeout", "sleep", "cat", "dd", "sync"],
        )
    }

    /// A 128 MiB instance with one whole CPU, its NIC `n` on the bridge (on a network
    /// of its own uuid).
    fn spec(&self, hostname: &str, n: u8) -> InstanceSpec {
        let nic = NicSpec {
            network_uuid: Uuid::new_v4().to_string(),
            ..self.nic(0, n)
        };
        InstanceSpec {
            ram: 128,
            cpu_cap: 100,
            max_lwps: 100,
            ..self.0.spec(hostname, vec![nic])
        }
    }

    /// The instance's memory in use as its cgroup has it (`memory.current` on v2,
    /// `memory.usage_in_bytes` on v1).
    fn cgroup_memory(&self, uuid: Uuid) -> u64 {
        let root = Path::new("/sys/fs/cgroup");
        let rel = Path::new(&self.config.cgroup_parent).join(uuid.to_string());
        let file = if root.join("cgroup.controllers").exists() {
            root.join(rel).join("memory.current")
        } else {
            root.join("memory").join(rel).join("memory.usage_in_bytes")
        };
        std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .trim()
            .parse()
            .unwrap()
    }
}

async fn usage(b: &impl ZoneBackend, uuid: Uuid) -> InstanceUsage {
    b.usage(uuid).await.expect("usage")
}

/// Runs `script` (busy loops) in the instance, killed after `seconds` at the latest.
fn busy(h: &Host, uuid: Uuid, seconds: u32, script: &str) -> std::process::Child {
    let seconds = seconds.to_string();
    h.zlogin_command(
        uuid,
        &["timeout", "-s", "KILL", &seconds, "sh", "-c", script],
    )
    .spawn()
    .unwrap()
}

fn cores() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_counts_what_the_instance_does() {
    let h = Host::new();
    let spec = h.spec("usage0", 1);
    let spec_nic = spec.nics[0].clone();
    let (b, uuid) = h.backend_with(spec).await;

    // The NIC is named as in the spec.
    let before = usage(&b, uuid).await;
    assert_eq!(before.nics.len(), 1, "{before:?}");
    let nic = &before.nics[0];
    assert_eq!(
        (
            nic.interface.as_str(),
            nic.mac.as_str(),
            nic.nic_tag.as_str(),
            nic.network_uuid.as_str()
        ),
        (
            "eth0",
            spec_nic.mac.as_str(),
            "admin",
            spec_nic.network_uuid.as_str()
        )
    );

    // A shell loop burning CPU inside for 3 s shows as at least 1 s of user time (the
    // machine may be busy), and never more than the wall time on every core.
    let started = Instant::now();
    let out = h.zlogin(
        uuid,
        &[
            "timeout",
            "-s",
            "KILL",
            "3",
            "sh",
            "-c",
            "while :; do :; done",
        ],
    );
    let wall = started.elapsed();
    assert!(
        !out.status.success(),
        "the loop ends by its timeout: {out:?}"
    );
    let burnt = usage(&b, uuid).await;
    let user = burnt.cpu_user_ns - before.cpu_user_ns;
    let limit = wall.as_nanos() as u64 * cores();
    eprintln!("user time +{user} ns over {wall:?}");
    assert!(
        user >= SECOND_NS && user <= limit,
        "user time rose by {user} ns over {wall:?} on {} cores",
        cores()
    );
    assert!(burnt.cpu_sys_ns >= before.cpu_sys_ns);
    assert!(burnt.cpu_usage_ns >= burnt.cpu_user_ns, "{burnt:?}");

    // 10 MiB sent from the host to nc in the instance.
    let mut listener = h
        .zlogin_command(uuid, &["nc", "-l", "-p", "5001"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let to = SocketAddr::from((h.ip(1), 5001));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("nc in the instance never listened on {to}: {e}"),
        }
    };
    let chunk = vec![0x5au8; MIB as usize];
    for _ in 0..10 {
        stream.write_all(&chunk).unwrap();
    }
    drop(stream);
    let status = listener.wait().unwrap();
    assert!(status.success(), "nc: {status:?}");
    let sent = usage(&b, uuid).await;
    let rx = sent.nics[0].rx_bytes - burnt.nics[0].rx_bytes;
    eprintln!("eth0 rx +{rx} bytes; {:?}", sent.tcp);
    assert!(rx >= 10 * MIB, "eth0 received {rx} bytes");
    assert!(sent.nics[0].rx_packets > burnt.nics[0].rx_packets);
    assert!(sent.nics[0].tx_packets > burnt.nics[0].tx_packets, "acks");
    assert!(
        sent.net_rx_bytes - burnt.net_rx_bytes >= 10 * MIB,
        "{sent:?}"
    );
    assert!(
        sent.tcp.passive_opens > burnt.tcp.passive_opens,
        "nc's connection is a passive open: {sent:?}"
    );

    // Memory as the cgroup has it, within 5 %.
    let reported = usage(&b, uuid).await.memory_bytes;
    let cgroup = h.cgroup_memory(uuid);
    let diff = reported.abs_diff(cgroup);
    eprintln!("memory: usage {reported}, cgroup {cgroup}");
    assert!(
        diff * 20 <= cgroup,
        "usage says {reported} bytes, the cgroup {cgroup}"
    );

    // A busy loop running shows as load.
    let mut burner = busy(&h, uuid, 30, "while :; do :; done");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut load = 0.0;
    while Instant::now() < deadline {
        load = usage(&b, uuid).await.load_average;
        if load >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = burner.kill();
    let _ = burner.wait();
    assert!(load >= 1.0, "load stayed {load} with a loop running");

    b.destroy(uuid).await.expect("destroy");
    assert!(
        b.usage(uuid).await.is_err(),
        "a destroyed instance has none"
    );
}

/// An instance capped at a fifth of a CPU running two busy loops: its cap is reported,
/// cpu.stat's throttled periods and time rise, its threads' run-queue wait rises (they
/// wait while the cap holds them back), and the cpucap collector is available.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_instance_shows_throttling_and_wait() {
    let h = Host::new();
    let b = h.backend_with_image().await;
    let spec = InstanceSpec {
        cpu_cap: 20,
        ..h.spec("usage1", 2)
    };
    let uuid = spec.uuid;
    b.create(spec).await.expect("create");
    let before = usage(&b, uuid).await;
    assert_eq!(before.cpu_cap.percent, Some(20), "{before:?}");
    let names: Vec<&str> = before.collectors.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "zone_misc",
            "memcap",
            "cpucap",
            "zone_vfs",
            "link",
            "tcp",
            "zfs"
        ]
    );
    assert!(before.collectors.iter().all(|c| c.available), "{before:?}");

    let mut burner = busy(&h, uuid, 60, "while :; do :; done & while :; do :; done");
    // Read while the loops run (a thread's wait leaves the sum when it exits).
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut now = usage(&b, uuid).await;
    while Instant::now() < deadline {
        now = usage(&b, uuid).await;
        if now.cpu_cap.throttled_periods >= before.cpu_cap.throttled_periods + 10
            && now.cpu_wait_ns >= before.cpu_wait_ns + SECOND_NS / 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = burner.kill();
    let _ = burner.wait();
    eprintln!(
        "before {:?} wait {}; now {:?} wait {}",
        before.cpu_cap, before.cpu_wait_ns, now.cpu_cap, now.cpu_wait_ns
    );
    assert!(
        now.cpu_cap.throttled_periods >= before.cpu_cap.throttled_periods + 10,
        "throttled periods {:?} -> {:?}",
        before.cpu_cap,
        now.cpu_cap
    );
    assert!(now.cpu_cap.throttled_ns > before.cpu_cap.throttled_ns);
    assert!(now.cpu_cap.periods >= now.cpu_cap.throttled_periods);
    assert!(
        now.cpu_wait_ns >= before.cpu_wait_ns + SECOND_NS / 2,
        "run-queue wait {} -> {} ns",
        before.cpu_wait_ns,
        now.cpu_wait_ns
    );
    b.destroy(uuid).await.expect("destroy");
}

/// A listener whose accept backlog is full in a network namespace of its own: the
/// SYNs the kernel drops for it count as ListenOverflows, which the namespace read
/// (the one the instances' usage uses) reports as `listen_overflows`.
#[test]
fn a_full_backlog_counts_as_listen_drops() {
    use std::os::fd::AsRawFd;
    let name = format!("cmon-usage-{}", std::process::id());
    let ip = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    };
    ip(&["netns", "add", &name]);
    ip(&["-n", &name, "link", "set", "lo", "up"]);
    let path = Path::new("/run/netns").join(&name);
    let before = cn_agent::linux::usage::read_netns(&path, &[]).expect("the namespace");
    let file = std::fs::File::open(&path).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns(2) on an open namespace file, for this thread only.
            assert_eq!(
                unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            // SAFETY: listen(2) again on a listening socket only changes its backlog.
            assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
            let to = listener.local_addr().unwrap();
            let clients: Vec<_> = (0..6)
                .filter_map(|_| TcpStream::connect_timeout(&to, Duration::from_millis(300)).ok())
                .collect();
            drop(clients);
        })
        .join()
        .unwrap();
    });
    let after = cn_agent::linux::usage::read_netns(&path, &[]).expect("the namespace");
    ip(&["netns", "del", &name]);
    eprintln!("{:?} -> {:?}", before.tcp, after.tcp);
    assert!(
        after.tcp.listen_overflows > before.tcp.listen_overflows,
        "{:?} -> {:?}",
        before.tcp,
        after.tcp
    );
}
