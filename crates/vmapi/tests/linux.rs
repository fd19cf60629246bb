//! VMAPI driving a real `linux` cn-agent: instances are real containers on a test
//! bridge, their addresses answer ping from the host, resizes show in the cgroups, and
//! the image comes from IMGAPI over HTTP. Needs root and /bin/busybox (busybox-static).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cn_agent::ZoneBackend;
use cn_agent::linux::{LinuxBackend, LinuxConfig};
use common::{Dc, LinuxNode, Options, eventually, path_str, run};
use triton_proto::vmapi::v1 as pb;
use uuid::Uuid;

/// Everything the test makes on the host has a run-unique name; dropping the guard
/// removes all of it, also when the test fails.
struct Host {
    config: LinuxConfig,
    bridge: String,
    subnet: u8,
    image: PathBuf,
    _dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        // SAFETY: geteuid(2) has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "the linux test needs root");
        assert!(
            Path::new("/bin/busybox").exists(),
            "the linux test builds its image from /bin/busybox: apt-get install busybox-static"
        );
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4().simple().to_string();
        let routes = run("ip", &["-4", "route", "show"]);
        let mut subnet = u8::from_str_radix(&id[6..8], 16).unwrap();
        while routes.contains(&format!("10.99.{subnet}.")) {
            subnet = subnet.wrapping_add(1);
        }
        let bridge = format!("vb{}", &id[..6]);
        run("ip", &["link", "add", "name", &bridge, "type", "bridge"]);
        run("ip", &["addr", "add", &format!("10.99.{subnet}.1/24"), "dev", &bridge]);
        run("ip", &["link", "set", "dev", &bridge, "up"]);
        let config = LinuxConfig {
            state_dir: dir.path().join("cn"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: format!("triton-vt-{}", &id[..6]),
            netns_prefix: format!("vt{}-", &id[..6]),
            link_prefix: format!("v{}", &id[..3]),
            bridges: [("admin".to_string(), bridge.clone())].into(),
            create_bridges: false,
        };
        let image = build_image(dir.path());
        Host {
            config,
            bridge,
            subnet,
            image,
            _dir: dir,
        }
    }

    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let root = Path::new("/sys/fs/cgroup");
        if root.join("cgroup.controllers").exists() {
            return vec![root.join(&self.config.cgroup_parent)];
        }
        ["memory", "cpu", "cpuacct", "pids"]
            .iter()
            .map(|c| root.join(c).join(&self.config.cgroup_parent))
            .collect()
    }

    fn memory_limit(&self, uuid: &str) -> Option<u64> {
        let root = Path::new("/sys/fs/cgroup");
        let rel = Path::new(&self.config.cgroup_parent).join(uuid);
        let file = if root.join("cgroup.controllers").exists() {
            root.join(rel).join("memory.max")
        } else {
            root.join("memory").join(rel).join("memory.limit_in_bytes")
        };
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for dir in self.cgroup_dirs() {
            for child in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if child.path().is_dir() {
                    kill_cgroup(&child.path());
                    let _ = std::fs::remove_dir(child.path());
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
        for entry in std::fs::read_dir("/run/netns").into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&self.config.netns_prefix) {
                let _ = std::process::Command::new("ip").args(["netns", "del", &name]).output();
            }
        }
        for entry in std::fs::read_dir("/sys/class/net").into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&self.config.link_prefix) || name == self.bridge {
                let _ = std::process::Command::new("ip").args(["link", "del", &name]).output();
            }
        }
    }
}

fn kill_cgroup(dir: &Path) {
    for _ in 0..100 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        if procs.trim().is_empty() {
            return;
        }
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// busybox, and an init that serves a page with httpd (and so keeps the instance up).
fn build_image(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for sub in ["bin", "sbin", "www", "etc", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "httpd", "hostname", "sleep", "cat", "ls", "ip", "ps", "ping"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("www/index.html"), "hello from vmapi\n").unwrap();
    let init = root.join("sbin/init");
    std::fs::write(&init, "#!/bin/sh\nexec /bin/httpd -f -p 80 -h /www\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tarball = dir.join("image.tar.gz");
    run("tar", &["-czf", path_str(&tarball), "-C", path_str(&root), "."]);
    tarball
}

fn pings(ip: &str) -> bool {
    std::process::Command::new("/bin/busybox")
        .args(["ping", "-c", "1", "-W", "2", ip])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

async fn act(dc: &Dc, which: &str, uuid: &str) {
    let req = pb::VmActionRequest {
        uuid: uuid.into(),
        timeout_seconds: 1,
        ..Default::default()
    };
    let mut c = dc.vmapi.clone();
    let r = match which {
        "start" => c.start_vm(req).await,
        "stop" => c.stop_vm(req).await,
        _ => c.reboot_vm(req).await,
    }
    .unwrap()
    .into_inner();
    let job = dc.wait_job(&r.job_uuid).await;
    assert_eq!(job.execution, "succeeded", "{which}: {job:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linux_instances_through_vmapi() {
    let host = Host::new();
    let s = host.subnet;
    let dc = Dc::start(Options {
        sim_nodes: 0,
        subnet: format!("10.99.{s}.0/24"),
        first_ip: format!("10.99.{s}.10"),
        last_ip: format!("10.99.{s}.250"),
        gateway: Some(format!("10.99.{s}.1")),
        linux: Some(LinuxNode {
            config: host.config.clone(),
        }),
        image_file: Some(host.image.clone()),
        ..Default::default()
    })
    .await;
    let node = LinuxBackend::new(host.config.clone()).unwrap();

    // Provision: the image comes from IMGAPI, the IP from NAPI, and it answers.
    let started = Instant::now();
    let r = dc
        .vmapi
        .clone()
        .create_vm(dc.create_request("linux0"))
        .await
        .unwrap()
        .into_inner();
    let job = dc.wait_job(&r.job_uuid).await;
    let took = started.elapsed();
    assert_eq!(job.execution, "succeeded", "{job:?}");
    eprintln!("first provision on linux (image download included): {took:?}");
    let vm = dc.vm(&r.vm_uuid).await;
    assert_eq!(vm.state, "running");
    let ip = vm.nics[0].ip.clone();
    assert!(ip.starts_with(&format!("10.99.{s}.")), "{ip}");
    assert!(pings(&ip), "{ip} answers ping");
    let id: Uuid = vm.uuid.parse().unwrap();
    assert_eq!(node.get(id).await.unwrap().state.as_str(), "running");
    assert_eq!(host.memory_limit(&vm.uuid), Some(256 << 20));

    // stop / start / reboot, in VMAPI and on the node.
    act(&dc, "stop", &vm.uuid).await;
    assert_eq!(dc.vm(&vm.uuid).await.state, "stopped");
    assert_eq!(node.get(id).await.unwrap().state.as_str(), "stopped");
    assert!(!pings(&ip), "a stopped instance answers ping");
    act(&dc, "start", &vm.uuid).await;
    assert_eq!(dc.vm(&vm.uuid).await.state, "running");
    assert!(pings(&ip));
    let boot_before = node.get(id).await.unwrap().last_boot;
    act(&dc, "reboot", &vm.uuid).await;
    assert_eq!(dc.vm(&vm.uuid).await.state, "running");
    assert!(node.get(id).await.unwrap().last_boot >= boot_before);
    assert!(pings(&ip));

    // resize + rename + tag.
    let u = dc
        .vmapi
        .clone()
        .update_vm(pb::UpdateVmRequest {
            uuid: vm.uuid.clone(),
            ram: Some(128),
            alias: Some("linux0-renamed".into()),
            set_tags: [(
                "env".to_string(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue("test".into())),
                },
            )]
            .into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dc.wait_job(&u.job_uuid).await.execution, "succeeded");
    let after = dc.vm(&vm.uuid).await;
    assert_eq!((after.ram, after.alias.as_str()), (128, "linux0-renamed"));
    assert!(after.tags.contains_key("env"));
    assert_eq!(host.memory_limit(&vm.uuid), Some(128 << 20));
    assert_eq!(node.get(id).await.unwrap().spec.alias, "linux0-renamed");

    // An instance that dies shows `stopped` (from the node's heartbeats).
    for dir in host.cgroup_dirs() {
        kill_cgroup(&dir.join(&vm.uuid));
    }
    eventually("VM stopped after its processes died", Duration::from_secs(30), || async {
        dc.vm(&vm.uuid).await.state == "stopped"
    })
    .await;
    act(&dc, "start", &vm.uuid).await;
    assert!(pings(&ip));

    // A second provision, image already on the node: the speed target.
    let started = Instant::now();
    let r2 = dc
        .vmapi
        .clone()
        .create_vm(dc.create_request("linux1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dc.wait_job(&r2.job_uuid).await.execution, "succeeded");
    eprintln!("provision on linux, image present: {:?}", started.elapsed());
    let vm2 = dc.vm(&r2.vm_uuid).await;
    assert_ne!(vm2.nics[0].ip, ip, "two VMs, two IPs");
    assert!(pings(&vm2.nics[0].ip));

    // delete: gone from the node, IP released.
    for uuid in [&vm.uuid, &vm2.uuid] {
        let d = dc
            .vmapi
            .clone()
            .delete_vm(pb::DeleteVmRequest {
                uuid: uuid.clone(),
                owner_uuid: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(dc.wait_job(&d.job_uuid).await.execution, "succeeded");
        assert_eq!(dc.vm(uuid).await.state, "destroyed");
        assert!(node.get(uuid.parse().unwrap()).await.is_err());
        assert!(dc.napi_nics(uuid).await.is_empty());
    }
    assert!(!pings(&ip));
}
