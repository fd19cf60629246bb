//! The `nfsserver` image, built from the real `nfsserver` binary and run as a zone runs
//! it: its `/sbin/init` as pid 1, chrooted into the unpacked image, in network, pid and
//! mount namespaces of its own. A client in that network namespace mounts
//! `/exports/data` over port 2049; the init starts the server again when it is killed,
//! and SIGTERM stops it with status 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Builds the `nfsserver` binary (debug) and returns its path.
fn nfsserver_binary() -> PathBuf {
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "-q",
            "-p",
            "nfsserver",
            "--bin",
            "nfsserver",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo build -p nfsserver failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo names the nfsserver executable")
}

/// A MOUNT v3 MNT call of `path` as an RPC record (AUTH_SYS, uid 0).
fn mnt_call(xid: u32, path: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for v in [xid, 0, 2, 100_005, 3, 1, 1, 20, 0, 0, 0, 0, 0, 0, 0] {
        body.extend_from_slice(&v.to_be_bytes());
    }
    body.extend_from_slice(&(path.len() as u32).to_be_bytes());
    body.extend_from_slice(path);
    body.resize(body.len().div_ceil(4) * 4, 0);
    let mut rec = (0x8000_0000u32 | body.len() as u32).to_be_bytes().to_vec();
    rec.extend_from_slice(&body);
    rec
}

/// The host pid of the one `nfsserver` running in the zone at `root` (waiting up to 20 s
/// for it to start).
fn server_in(root: &Path) -> u32 {
    let start = Instant::now();
    loop {
        match pids_in(root, "nfsserver")[..] {
            [pid] => return pid,
            [] if start.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            ref pids => panic!("nfsserver processes in the zone: {pids:?}"),
        }
    }
}

/// Connects to 127.0.0.1:2049 in the network namespace of `pid`, retrying while the
/// server starts listening (up to 20 s).
fn connect_in(pid: u32) -> TcpStream {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a namespace file it holds open.
        let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        let start = Instant::now();
        loop {
            match TcpStream::connect("127.0.0.1:2049") {
                Ok(s) => return s,
                Err(e) if start.elapsed() < Duration::from_secs(20) => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("nothing serves port 2049 in the image's namespace: {e}"),
            }
        }
    })
    .join()
    .unwrap()
}

/// MNT of `/exports/data`: the root's handle.
fn mount(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&mnt_call(7, b"/exports/data")).unwrap();
    let mut mark = [0u8; 4];
    s.read_exact(&mut mark).unwrap();
    let mut reply = vec![0u8; (u32::from_be_bytes(mark) & 0x7fff_ffff) as usize];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[..4], &7u32.to_be_bytes());
    assert_eq!(&reply[8..28], &[0u8; 20], "accepted, SUCCESS, MNT3_OK");
    let len = u32::from_be_bytes([reply[28], reply[29], reply[30], reply[31]]) as usize;
    reply[32..32 + len].to_vec()
}

/// Host pids of the processes chrooted into `root` whose command is `comm`.
fn pids_in(root: &Path, comm: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|r| r == root))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

struct Zone(Child);

impl Drop for Zone {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_nfsserver_image_serves_its_export_from_init() {
    let bin = nfsserver_binary();
    let dir = tempfile::tempdir().unwrap();
    let owner = "930896af-bf8c-48d4-885c-6573a94b1853";
    let built =
        sdcadm::images::build_nfsserver_image(&bin, &dir.path().join("out"), owner).unwrap();
    assert_eq!(built.manifest["name"], "nfsserver");
    assert_eq!(built.manifest["owner"], owner);
    assert_eq!(built.manifest["public"], false);
    assert_eq!(
        built.tarball.file_name().unwrap().to_str().unwrap(),
        format!(
            "nfsserver-{}.tar.gz",
            sdcadm::images::NFSSERVER_IMAGE_VERSION
        )
    );
    let root = dir.path().join("zone");
    common::unpack(&built.tarball, &root);
    let root = root.canonicalize().unwrap();
    assert!(
        !root.join("exports/data").exists(),
        "made at first boot, not shipped"
    );

    let proc_dir = root.join("proc");
    let mut zone = Zone(
        Command::new("unshare")
            .args(["--net", "--pid", "--fork", "--mount"])
            .arg(format!("--mount-proc={}", proc_dir.display()))
            .args([
                "sh",
                "-c",
                "ip link set lo up && exec chroot \"$0\" /sbin/init",
            ])
            .arg(&root)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let server = server_in(&root);
    let mut s = connect_in(server);
    let fh = mount(&mut s);
    assert_eq!(fh.len(), 20);
    assert!(root.join("exports/data").is_dir());

    // the init starts the server again when it dies, and the handle still works
    // SAFETY: a signal to a process this test started.
    unsafe { libc::kill(server as i32, libc::SIGKILL) };
    let start = Instant::now();
    while pids_in(&root, "nfsserver").iter().all(|p| *p == server) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the init did not start nfsserver again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut s = connect_in(server_in(&root));
    assert_eq!(mount(&mut s), fh, "the same root handle after the restart");

    // SIGTERM to the zone's init stops it all, with status 0
    let init = pids_in(&root, "init");
    assert_eq!(init.len(), 1, "{init:?}");
    // SAFETY: as above.
    unsafe { libc::kill(init[0] as i32, libc::SIGTERM) };
    let status = zone.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(pids_in(&root, "nfsserver").is_empty());
}
