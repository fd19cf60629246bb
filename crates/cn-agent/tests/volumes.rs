//! NFS volumes in real linux instances (`sdc:volumes`): the volume's server is the real
//! `nfsserver` in a network namespace of its own on the instance's bridge (as a volume's
//! storage instance is on the tenant's network); cn-agent's linux backend mounts it with
//! the real `volmount` before the instance's init starts, and the test writes through
//! it from inside with `zlogin`. As root.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cn_agent::{InstanceSpec, InstanceState, ZoneBackend};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod common;

use common::Host;

impl Host {
    fn new() -> Host {
        Host::admin(
            "the volumes test",
            'v',
            &["sh", "httpd", "cat", "ls", "echo", "sleep"],
        )
    }
}

/// `ip ...`, which must work.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

/// nfsserver serving a temporary directory at `<addr>:2049` from a network namespace
/// plugged into `bridge`.
struct NfsServer {
    netns: String,
    veth: String,
    addr: Ipv4Addr,
    export: tempfile::TempDir,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NfsServer {
    fn start(bridge: &str, addr: Ipv4Addr) -> NfsServer {
        let id = &Uuid::new_v4().simple().to_string()[..8];
        let (netns, veth, peer) = (format!("tvs{id}"), format!("tvs{id}"), format!("tvp{id}"));
        ip(&["netns", "add", &netns]);
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &veth, "master", bridge, "up"]);
        ip(&["link", "set", &peer, "netns", &netns]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            &peer,
        ]);
        ip(&["-n", &netns, "link", "set", &peer, "up"]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        let export = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let (token, root, ns_file) = (
            shutdown.clone(),
            export.path().to_path_buf(),
            PathBuf::from(format!("/var/run/netns/{netns}")),
        );
        let thread = std::thread::spawn(move || {
            // The runtime's threads, started after this, are in the namespace too.
            let ns = std::fs::File::open(ns_file).unwrap();
            // SAFETY: setns(2) of this thread on an open descriptor.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(SocketAddr::from((addr, 2049)))
                    .await
                    .unwrap();
                tx.send(()).unwrap();
                nfsserver::serve(listener, root, token).await.unwrap();
            });
        });
        rx.recv_timeout(Duration::from_secs(30)).unwrap();
        NfsServer {
            netns,
            veth,
            addr,
            export,
            shutdown,
            thread: Some(thread),
        }
    }

    fn root(&self) -> &Path {
        self.export.path()
    }

    fn nfsvolume(&self) -> String {
        format!("{}:{}", self.addr, nfsserver::EXPORT_PATH)
    }
}

impl Drop for NfsServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

fn with_volumes(mut spec: InstanceSpec, volumes: &str) -> InstanceSpec {
    spec.internal_metadata
        .insert("sdc:volumes".into(), volumes.to_string());
    spec
}

/// The volmount processes running for `uuid` (their pid files).
fn volmounts(host: &Host, uuid: Uuid) -> Vec<u32> {
    cn_agent::linux::volumes::running(&host.config.state_dir.join("zones").join(uuid.to_string()))
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linux_an_instance_writes_to_its_volume_and_the_file_is_on_the_server() {
    let host = Host::new();
    let bridge = host.bridges[0].name.clone();
    let server = NfsServer::start(&bridge, host.ip(200));
    std::fs::write(server.root().join("seed"), "from the server\n").unwrap();
    let backend = host.backend_with_image().await;
    let spec = with_volumes(
        host.spec("vol-a", vec![host.nic(0, 1)]),
        &format!(
            r#"[{{"name":"vol1","type":"tritonnfs","mode":"rw","mountpoint":"/data","nfsvolume":"{0}"}},
                {{"name":"vol2","type":"tritonnfs","mode":"ro","mountpoint":"/srv/ro","nfsvolume":"{0}"}}]"#,
            server.nfsvolume()
        ),
    );
    let uuid = spec.uuid;
    let instance = backend.create(spec).await.unwrap();
    assert_eq!(instance.state, InstanceState::Running);

    // Written inside, as the instance's root: on the server, owned by the server's root.
    assert_eq!(
        host.inside(uuid, &["cat", "/data/seed"]),
        "from the server\n"
    );
    host.inside(uuid, &["sh", "-c", "echo written inside > /data/hello"]);
    let on_server = server.root().join("hello");
    assert_eq!(
        std::fs::read_to_string(&on_server).unwrap(),
        "written inside\n"
    );
    assert_eq!(std::fs::metadata(&on_server).unwrap().uid(), 0);
    // The instance's root sees it as its own.
    let ls = host.inside(uuid, &["ls", "-ln", "/data/hello"]);
    assert!(ls.contains(" 0 "), "owner inside: {ls}");
    // The read-only volume: the same files, no writes.
    assert_eq!(
        host.inside(uuid, &["cat", "/srv/ro/hello"]),
        "written inside\n"
    );
    let refused = host.refused(uuid, &["sh", "-c", "echo x > /srv/ro/new"]);
    assert!(refused.contains("Read-only"), "{refused}");
    assert!(!server.root().join("new").exists());
    // The mount is the instance's: nothing is mounted at its path on the host.
    let host_path = host
        .config
        .state_dir
        .join(format!("zones/{uuid}/root/data"));
    assert!(!host_path.join("hello").exists());

    // The agent restarted (a new backend over the same state): the volmounts are left
    // running and the mount keeps working.
    let before = volmounts(&host, uuid);
    assert_eq!(before.len(), 2);
    drop(backend);
    let backend = host.backend();
    assert_eq!(
        backend.get(uuid).await.unwrap().state,
        InstanceState::Running
    );
    assert_eq!(volmounts(&host, uuid), before);
    host.inside(uuid, &["sh", "-c", "echo again > /data/again"]);
    assert_eq!(
        std::fs::read_to_string(server.root().join("again")).unwrap(),
        "again\n"
    );

    // Stop: the volmounts end. Boot: mounted again.
    backend
        .shutdown(uuid, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(volmounts(&host, uuid).is_empty());
    backend.boot(uuid).await.unwrap();
    assert_eq!(host.inside(uuid, &["cat", "/data/again"]), "again\n");
    backend.destroy(uuid).await.unwrap();
    for pid in before {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                comm.trim() != "volmount"
            }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linux_bad_volumes_fail_the_create_naming_the_volume_and_leave_nothing() {
    let host = Host::new();
    let backend = host.backend_with_image().await;
    for (mountpoint, rule) in [
        ("/", "must not be /"),
        ("/proc/x", "reserved"),
        ("/dev", "reserved"),
        ("/etc", "reserved"),
        ("data", "absolute"),
        ("/data/../etc", "normalized"),
    ] {
        let spec = with_volumes(
            host.spec("vol-bad", vec![host.nic(0, 2)]),
            &format!(
                r#"[{{"name":"myvol","mountpoint":"{mountpoint}","nfsvolume":"10.0.0.9:/exports/data"}}]"#
            ),
        );
        let uuid = spec.uuid;
        let err = backend.create(spec).await.unwrap_err().to_string();
        assert!(
            err.contains("myvol") && err.contains("mountpoint") && err.contains(rule),
            "{mountpoint}: {err}"
        );
        assert!(
            !host
                .config
                .state_dir
                .join("zones")
                .join(uuid.to_string())
                .exists()
        );
    }
    // A server that does not answer fails the boot with volmount's word, bounded.
    let spec = with_volumes(
        host.spec("vol-gone", vec![host.nic(0, 3)]),
        &format!(
            r#"[{{"name":"gone","mountpoint":"/data","nfsvolume":"{}:/exports/data"}}]"#,
            host.ip(201)
        ),
    );
    let uuid = spec.uuid;
    let err = backend.create(spec).await.unwrap_err().to_string();
    assert!(err.contains("volume \"gone\""), "{err}");
    assert!(volmounts(&host, uuid).is_empty());
}

/// The real `cn-agent` binary on the test host's state (no CNAPI), started in a process
/// group of its own; its stdout says when it listens.
fn start_agent(host: &Host) -> std::process::Child {
    let config = host.config.state_dir.join("agent.toml");
    let bridges: Vec<String> = host
        .config
        .bridges
        .iter()
        .map(|(tag, bridge)| format!("\"{tag}={bridge}\""))
        .collect();
    std::fs::write(
        &config,
        format!(
            r#"state_dir = "{}"
backend = "linux"
listen = "127.0.0.1:0"
nic_tags = [{}]
[linux]
cgroup_parent = "{}"
netns_prefix = "{}"
link_prefix = "{}"
create_bridges = false
volmount_bin = "{}"
"#,
            host.config.state_dir.display(),
            bridges.join(", "),
            host.config.cgroup_parent,
            host.config.netns_prefix,
            host.config.link_prefix,
            dc_testkit::linux::volmount_bin().display(),
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cn-agent"))
        .arg("--config")
        .arg(&config)
        .env_remove("CN_AGENT_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(host.config.state_dir.join("agent.log"))
                .unwrap(),
        )
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(
        line.contains("listening on"),
        "cn-agent said {line:?}: {}",
        std::fs::read_to_string(host.config.state_dir.join("agent.log")).unwrap_or_default()
    );
    child
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linux_the_volume_stays_mounted_across_a_kill_9_of_the_agent_binary() {
    let host = Host::new();
    let bridge = host.bridges[0].name.clone();
    let server = NfsServer::start(&bridge, host.ip(202));
    let backend = host.backend_with_image().await;
    let spec = with_volumes(
        host.spec("vol-k", vec![host.nic(0, 4)]),
        &format!(
            r#"[{{"name":"vol1","mountpoint":"/data","nfsvolume":"{}"}}]"#,
            server.nfsvolume()
        ),
    );
    let uuid = spec.uuid;
    backend.create(spec).await.unwrap();
    // The instance's processes die without a stop (as in a crash of the node): it is
    // stopped and still autoboot, so the agent binary boots it, and its volmount is the
    // agent's child.
    backend
        .cgroups()
        .kill_all(uuid, Duration::from_secs(10))
        .unwrap();
    cn_agent::linux::volumes::stop(&host.config.state_dir.join("zones").join(uuid.to_string()));
    assert_eq!(
        backend.get(uuid).await.unwrap().state,
        InstanceState::Stopped
    );

    let mut agent = start_agent(&host);
    let mut booted = false;
    for _ in 0..500 {
        if backend.get(uuid).await.unwrap().state == InstanceState::Running
            && volmounts(&host, uuid).len() == 1
        {
            booted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        booted,
        "the agent did not boot the instance with its volume"
    );
    let pids = volmounts(&host, uuid);
    host.inside(uuid, &["sh", "-c", "echo before > /data/f"]);

    // kill -9: the volmount is not in the agent's process group or session.
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert!(
        pids.iter().all(|p| alive(*p)),
        "volmount died with the agent"
    );
    host.inside(uuid, &["sh", "-c", "echo after kill >> /data/f"]);
    // Started again, the agent leaves the running volmount alone.
    let mut agent = start_agent(&host);
    host.inside(uuid, &["sh", "-c", "echo after restart >> /data/f"]);
    assert_eq!(volmounts(&host, uuid), pids);
    assert_eq!(
        std::fs::read_to_string(server.root().join("f")).unwrap(),
        "before\nafter kill\nafter restart\n"
    );
    // SAFETY: kill(2) of our child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    agent.wait().unwrap();
    backend.destroy(uuid).await.unwrap();
    assert!(!pids.iter().any(|p| alive(*p)));
}
