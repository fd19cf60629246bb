//! Removing everything a `linux` backend with one config made on this host: its
//! instances' processes and cgroups, the disks mounted under its state dir (their loop
//! devices go with the mounts), its network namespaces, veths, bridge and nftables tables
//! (`<netns_prefix>guard` and `<netns_prefix>host`). Test harnesses
//! and benches call it when they end, whatever state a failed test left.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{LinuxConfig, mounts_under};

/// Best effort: every step goes on whatever the one before it managed.
pub fn remove_all(config: &LinuxConfig, bridge: &str) {
    for dir in cgroup_dirs(&config.cgroup_parent) {
        for child in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if child.path().is_dir() {
                kill_cgroup(&child.path());
                let _ = std::fs::remove_dir(child.path());
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
    for mount_point in mounts_under(&config.state_dir) {
        let Ok(c) = std::ffi::CString::new(mount_point.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: umount2(2) on a NUL-terminated path.
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
    for entry in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&config.netns_prefix) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &name])
                .output();
        }
    }
    for entry in std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&config.link_prefix) || name == bridge {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &name])
                .output();
        }
    }
    super::firewall::remove_tables(&config.netns_prefix);
}

/// The cgroup directories instances of `parent` live in: one on v2, one per controller
/// on v1 (the freezer's, used for snapshots, included).
pub fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.join(parent)];
    }
    [
        "memory", "cpu", "cpuacct", "pids", "freezer", "blkio", "devices",
    ]
    .iter()
    .map(|c| root.join(c).join(parent))
    .collect()
}

/// SIGKILLs every process of the cgroup at `dir` until none is left (2 s at most).
pub fn kill_cgroup(dir: &Path) {
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
