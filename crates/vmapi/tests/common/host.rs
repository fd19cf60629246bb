//! The host side of a linux compute node for tests and the bench: a bridge, a subnet,
//! cgroup and namespace names unique to the run, and a busybox image; all removed when
//! the guard drops.

use std::path::{Path, PathBuf};

use cn_agent::linux::LinuxConfig;
use uuid::Uuid;

use super::{path_str, run};

/// Everything the test makes on the host has a run-unique name; dropping the guard
/// removes all of it, also when the test fails.
pub struct Host {
    pub config: LinuxConfig,
    pub bridge: String,
    pub subnet: u8,
    pub image: PathBuf,
    _dir: tempfile::TempDir,
}

impl Host {
    pub fn new() -> Host {
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
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("10.99.{subnet}.1/24"),
                "dev",
                &bridge,
            ],
        );
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

    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let root = Path::new("/sys/fs/cgroup");
        if root.join("cgroup.controllers").exists() {
            return vec![root.join(&self.config.cgroup_parent)];
        }
        ["memory", "cpu", "cpuacct", "pids"]
            .iter()
            .map(|c| root.join(c).join(&self.config.cgroup_parent))
            .collect()
    }

    pub fn memory_limit(&self, uuid: &str) -> Option<u64> {
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
        cn_agent::linux::leftovers::remove_all(&self.config, &self.bridge);
    }
}

/// busybox, and an init that serves a page with httpd (and so keeps the instance up).
fn build_image(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for sub in ["bin", "sbin", "www", "etc", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "httpd", "hostname", "sleep", "cat", "ls", "ip", "ps", "ping",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("www/index.html"), "hello from vmapi\n").unwrap();
    let init = root.join("sbin/init");
    std::fs::write(&init, "#!/bin/sh\nexec /bin/httpd -f -p 80 -h /www\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tarball = dir.join("image.tar.gz");
    run(
        "tar",
        &["-czf", path_str(&tarball), "-C", path_str(&root), "."],
    );
    tarball
}

pub fn pings(ip: &str) -> bool {
    std::process::Command::new("/bin/busybox")
        .args(["ping", "-c", "1", "-W", "2", ip])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
