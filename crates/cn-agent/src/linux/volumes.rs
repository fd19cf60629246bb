//! NFS volumes mounted into instances: `internal_metadata["sdc:volumes"]`, a JSON array
//! of `{"name", "type", "mode", "mountpoint", "nfsvolume": "<ip>:<path>"}` as VMAPI
//! writes it (Triton's format).
//!
//! [`parse`] checks the list (both backends, through `InstanceSpec::validate`). At each
//! boot of a linux instance, before its pid 1 starts, [`start`] makes each mountpoint in
//! the instance's disk and runs one `volmount` per volume (the userspace NFSv3 client
//! behind FUSE) in a session of its own, inside the instance's network namespace, so its
//! traffic leaves through the instance's own NIC. volmount mounts on
//! `<zone>/volumes/<n>` in the host's mount namespace; a detached copy of that mount
//! (`open_tree`) is attached at the mountpoint inside the instance's mount namespace by
//! the launch ([`super::launch`]), under the overlay root, so it shows there and nowhere
//! else. [`stop`] unmounts and ends every volmount of the instance (stop, reboot,
//! destroy). A volmount is not the agent's child in any way that matters: it outlives a
//! restart of the agent, which leaves it alone; its pid is in `<zone>/volumes/<n>.pid`
//! and its log in `<n>.log`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::net::IpAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::idmap::IdRange;
use super::safefs::{Owner, Tree};
use crate::error::{Error, Result};

/// The key of `internal_metadata` that lists the volumes.
pub const METADATA_KEY: &str = "sdc:volumes";
/// The only volume type.
pub const TRITONNFS: &str = "tritonnfs";
/// Where the system lives: no volume is mounted at or under these.
pub const RESERVED: [&str; 12] = [
    "/proc", "/dev", "/sys", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
    "/usr", "/boot",
];
/// How long a volume has to be mounted before the boot fails.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a volmount has to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest mountpoint and volume name.
const PATH_MAX: usize = 1024;
const NAME_MAX: usize = 256;

/// One entry of `sdc:volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Volume {
    pub name: String,
    #[serde(rename = "type", default = "tritonnfs")]
    pub kind: String,
    #[serde(default = "rw")]
    pub mode: String,
    pub mountpoint: String,
    pub nfsvolume: String,
}

fn tritonnfs() -> String {
    TRITONNFS.into()
}

fn rw() -> String {
    "rw".into()
}

impl Volume {
    pub fn read_only(&self) -> bool {
        self.mode == "ro"
    }

    /// The mountpoint relative to the instance's root (`data/x` for `/data/x`).
    pub fn relative(&self) -> &Path {
        Path::new(self.mountpoint.trim_start_matches('/'))
    }
}

/// The instance's volumes, checked: each one's name, type, mode, mountpoint and
/// nfsvolume, and no two on one mountpoint or one inside another. No key, no volumes.
pub fn parse(internal_metadata: &BTreeMap<String, String>) -> Result<Vec<Volume>> {
    let Some(text) = internal_metadata.get(METADATA_KEY) else {
        return Ok(Vec::new());
    };
    let field = format!("internal_metadata.{METADATA_KEY}");
    let entries: Vec<serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| Error::invalid(&field, format!("must be a JSON array of volumes: {e}")))?;
    let mut volumes: Vec<Volume> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let at = format!("{field}[{i}]");
        let volume: Volume = serde_json::from_value(entry)
            .map_err(|e| Error::invalid(&at, format!("is not a volume: {e}")))?;
        check(&at, &volume)?;
        for other in &volumes {
            let (a, b) = (Path::new(&volume.mountpoint), Path::new(&other.mountpoint));
            if a.starts_with(b) || b.starts_with(a) {
                return Err(Error::invalid(
                    &format!("{at}.mountpoint"),
                    format!(
                        "{} of volume {:?} overlaps {} of volume {:?}: one volume per mountpoint, none inside another",
                        volume.mountpoint, volume.name, other.mountpoint, other.name
                    ),
                ));
            }
        }
        volumes.push(volume);
    }
    Ok(volumes)
}

fn check(at: &str, v: &Volume) -> Result<()> {
    let name = &v.name;
    if name.is_empty()
        || name.len() > NAME_MAX
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::invalid(
            &format!("{at}.name"),
            format!("{name:?} must be 1 to {NAME_MAX} letters, digits, '-', '_' or '.'"),
        ));
    }
    if v.kind != TRITONNFS {
        return Err(Error::invalid(
            &format!("{at}.type"),
            format!(
                "{:?} of volume {name:?}: the only type is {TRITONNFS:?}",
                v.kind
            ),
        ));
    }
    if v.mode != "rw" && v.mode != "ro" {
        return Err(Error::invalid(
            &format!("{at}.mode"),
            format!("{:?} of volume {name:?} must be \"rw\" or \"ro\"", v.mode),
        ));
    }
    check_mountpoint(&v.mountpoint).map_err(|rule| {
        Error::invalid(
            &format!("{at}.mountpoint"),
            format!("{:?} of volume {name:?} {rule}", v.mountpoint),
        )
    })?;
    check_nfsvolume(&v.nfsvolume).map_err(|rule| {
        Error::invalid(
            &format!("{at}.nfsvolume"),
            format!("{:?} of volume {name:?} {rule}", v.nfsvolume),
        )
    })?;
    Ok(())
}

/// The rule a mountpoint breaks, if any.
pub fn check_mountpoint(mountpoint: &str) -> std::result::Result<(), String> {
    if !mountpoint.starts_with('/') {
        return Err("must be an absolute path".into());
    }
    if mountpoint.len() > PATH_MAX || mountpoint.contains('\0') {
        return Err(format!("must be at most {PATH_MAX} bytes, without NUL"));
    }
    let path = Path::new(mountpoint);
    let normal = path
        .components()
        .skip(1)
        .all(|c| matches!(c, Component::Normal(_)));
    let rebuilt: PathBuf = path.components().collect();
    if !normal || rebuilt.as_os_str() != path.as_os_str() {
        return Err("must be normalized (no '.', '..', '//' or trailing '/')".into());
    }
    if mountpoint == "/" {
        return Err("must not be / (the instance's root)".into());
    }
    if let Some(reserved) = RESERVED.iter().find(|r| path.starts_with(r)) {
        return Err(format!("is at or under {reserved}, which is reserved"));
    }
    Ok(())
}

/// The rule an `nfsvolume` breaks, if any: `<ip>:<absolute path>`.
pub fn check_nfsvolume(nfsvolume: &str) -> std::result::Result<(IpAddr, &str), String> {
    let (host, path) = match nfsvolume.strip_prefix('[') {
        Some(rest) => rest
            .split_once("]:")
            .ok_or("must be <ip>:<path> ([<ipv6>]:<path>)")?,
        None => nfsvolume.split_once(':').ok_or("must be <ip>:<path>")?,
    };
    let ip: IpAddr = host
        .parse()
        .map_err(|_| format!("must start with an IP address, not {host:?}"))?;
    if !path.starts_with('/') || path.contains('\0') || path.len() > PATH_MAX {
        return Err("must name an absolute export path".into());
    }
    Ok((ip, path))
}

/// What the boot of an instance gives volmount.
pub struct Plan<'a> {
    /// The volmount program.
    pub program: &'a Path,
    pub zone_dir: &'a Path,
    /// The instance's network namespace file.
    pub netns: &'a Path,
    pub ids: IdRange,
    /// The instance's disk's upper layer and its image's root (the lower one).
    pub upper: &'a Path,
    pub lower: &'a Path,
    /// Where the instance's root (the overlay) is mounted, in its mount namespace.
    pub root: &'a Path,
}

/// A volume mounted on the host, to be attached in the instance's mount namespace.
pub struct Attach {
    /// A detached copy of the volume's mount (`open_tree(OPEN_TREE_CLONE)`).
    pub tree: OwnedFd,
    /// The mountpoint's host path under the instance's root.
    pub target: CString,
}

fn dir(zone_dir: &Path) -> PathBuf {
    zone_dir.join("volumes")
}

fn staging(zone_dir: &Path, i: usize) -> PathBuf {
    dir(zone_dir).join(i.to_string())
}

/// Mounts every volume of the instance on the host and gives what the launch attaches.
/// Leftovers of an earlier boot are stopped first. On an error every volume started
/// here is stopped again.
pub fn start(plan: &Plan<'_>, volumes: &[Volume]) -> Result<Vec<Attach>> {
    stop(plan.zone_dir);
    if volumes.is_empty() {
        return Ok(Vec::new());
    }
    let base = dir(plan.zone_dir);
    std::fs::create_dir_all(&base).map_err(|e| Error::io(&base, e))?;
    let mut out = Vec::with_capacity(volumes.len());
    for (i, volume) in volumes.iter().enumerate() {
        match start_one(plan, i, volume) {
            Ok(attach) => out.push(attach),
            Err(e) => {
                stop(plan.zone_dir);
                return Err(e);
            }
        }
    }
    Ok(out)
}

fn start_one(plan: &Plan<'_>, i: usize, volume: &Volume) -> Result<Attach> {
    make_mountpoint(plan, volume)?;
    let at = staging(plan.zone_dir, i);
    std::fs::create_dir_all(&at).map_err(|e| Error::io(&at, e))?;
    let log_path = dir(plan.zone_dir).join(format!("{i}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::io(&log_path, e))?;
    let log2 = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
    let mut command = Command::new(plan.program);
    command
        .arg("--source")
        .arg(&volume.nfsvolume)
        .arg("--mountpoint")
        .arg(&at)
        .arg("--netns")
        .arg(plan.netns)
        .arg("--uid-base")
        .arg(plan.ids.base.to_string())
        .arg("--id-count")
        .arg(plan.ids.size.to_string())
        .env_clear()
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    if volume.read_only() {
        command.arg("--read-only");
    }
    // SAFETY: setsid(2) between fork and exec: a session of its own, so no signal meant
    // for the agent's process group or terminal reaches it.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|source| Error::Spawn {
        command: plan.program.display().to_string(),
        source,
    })?;
    let pid = child.id();
    let pid_path = dir(plan.zone_dir).join(format!("{i}.pid"));
    std::fs::write(&pid_path, format!("{pid}\n")).map_err(|e| Error::io(&pid_path, e))?;
    let failed = |output: String| Error::Command {
        command: format!(
            "volmount of volume {:?} ({})",
            volume.name, volume.nfsvolume
        ),
        output,
    };
    let deadline = Instant::now() + MOUNT_TIMEOUT;
    loop {
        if is_fuse_mount(&at) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(failed(format!("exited ({status}): {}", tail(&log_path))));
        }
        if Instant::now() >= deadline {
            return Err(failed(format!(
                "not mounted within {MOUNT_TIMEOUT:?}: {}",
                tail(&log_path)
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Reaped here while the agent runs; after a restart of the agent, by init.
    std::thread::Builder::new()
        .name(format!("volmount-{pid}"))
        .stack_size(64 * 1024)
        .spawn(move || {
            let _ = child.wait();
        })
        .map_err(|e| Error::io(Path::new("volmount reaper thread"), e))?;
    let tree = clone_tree(&at)?;
    let target = plan.root.join(volume.relative());
    let target = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| Error::invalid("mountpoint", "contains a NUL byte"))?;
    Ok(Attach { tree, target })
}

/// Makes the mountpoint a real directory of the instance's disk, every component of
/// it a directory in the upper layer, so the path the launch mounts on goes through no
/// symlink. A component that is a symlink or a file in the instance's files or in its
/// image fails the boot.
fn make_mountpoint(plan: &Plan<'_>, volume: &Volume) -> Result<()> {
    let rel = volume.relative();
    let mut prefix = PathBuf::new();
    for part in rel.components() {
        prefix.push(part);
        let not_dir = |what: &str| {
            Error::invalid(
                "mountpoint",
                format!(
                    "{} of volume {:?}: /{} is {what}, not a directory",
                    volume.mountpoint,
                    volume.name,
                    prefix.display()
                ),
            )
        };
        let meta = std::fs::symlink_metadata(plan.upper.join(&prefix))
            .or_else(|_| std::fs::symlink_metadata(plan.lower.join(&prefix)));
        match meta {
            Ok(m) if m.file_type().is_symlink() => return Err(not_dir("a symlink")),
            Ok(m) if !m.is_dir() => return Err(not_dir("a file")),
            _ => {}
        }
    }
    let owner = Owner {
        uid: plan.ids.base,
        gid: plan.ids.base,
    };
    Tree::open_strict(plan.upper)?.create_dir_all(rel, 0o755, owner)
}

/// Whether `path` is a FUSE mount point in this mount namespace.
fn is_fuse_mount(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.as_os_str().as_bytes();
    text.lines().any(|line| {
        let mut fields = line.split(' ');
        fields.nth(4).map(str::as_bytes) == Some(want)
            && line
                .split_once(" - ")
                .is_some_and(|(_, rest)| rest.starts_with("fuse "))
    })
}

const OPEN_TREE_CLONE: libc::c_uint = 1;

fn clone_tree(path: &Path) -> Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid("volume mount", "path contains a NUL byte"))?;
    // SAFETY: open_tree(2) on a NUL-terminated path; the result is a new descriptor.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(Error::io(path, std::io::Error::last_os_error()));
    }
    // SAFETY: a descriptor open_tree just returned, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut lines: Vec<&str> = text.lines().rev().take(5).collect();
    lines.reverse();
    lines.join("\n")
}

/// The pids of the instance's volmounts, from their pid files, with the files' paths.
pub fn running(zone_dir: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir(zone_dir)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pid"))
        .filter_map(|p| {
            let pid = std::fs::read_to_string(&p).ok()?.trim().parse().ok()?;
            Some((pid, p))
        })
        .filter(|(pid, _)| is_volmount(*pid))
        .collect()
}

fn is_volmount(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "volmount")
}

/// Unmounts every volume of the instance on the host and ends its volmounts (SIGTERM,
/// then SIGKILL after [`STOP_TIMEOUT`]). Whatever is not there is passed over.
pub fn stop(zone_dir: &Path) {
    let base = dir(zone_dir);
    for mount_point in super::mounts_under(&base) {
        if let Ok(c) = CString::new(mount_point.as_os_str().as_bytes()) {
            // SAFETY: umount2(2) on a NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
    let pids = running(zone_dir);
    for (pid, _) in &pids {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(*pid as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for (pid, file) in pids {
        while is_volmount(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if is_volmount(pid) {
            tracing::warn!(pid, "volmount did not stop on SIGTERM; killing it");
            // SAFETY: as above.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        let _ = std::fs::remove_file(file);
    }
}

/// The volmount program: the configured one, or `volmount` beside the running
/// executable (cn-agent's).
pub fn program(configured: Option<&Path>) -> PathBuf {
    if let Some(p) = configured {
        return p.to_path_buf();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("volmount")))
        .unwrap_or_else(|| PathBuf::from("volmount"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(json: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(METADATA_KEY.to_string(), json.to_string())])
    }

    fn one(mountpoint: &str) -> String {
        format!(
            r#"[{{"name":"vol1","type":"tritonnfs","mode":"rw","mountpoint":"{mountpoint}","nfsvolume":"10.1.2.3:/exports/data"}}]"#
        )
    }

    fn error(json: &str) -> String {
        parse(&meta(json)).unwrap_err().to_string()
    }

    #[test]
    fn triton_volumes_parse_with_their_defaults() {
        let v = parse(&meta(
            r#"[{"name":"vol1","mountpoint":"/data","nfsvolume":"10.1.2.3:/exports/data"},
                {"name":"v2","type":"tritonnfs","mode":"ro","mountpoint":"/srv/v2","nfsvolume":"[fd00::5]:/exports/data"}]"#,
        ))
        .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].kind.as_str(), v[0].read_only()), ("tritonnfs", false));
        assert!(v[1].read_only());
        assert_eq!(v[1].relative(), Path::new("srv/v2"));
        assert!(parse(&BTreeMap::new()).unwrap().is_empty());
    }

    #[test]
    fn bad_mountpoints_are_refused_naming_the_volume_and_the_rule() {
        for (mountpoint, rule) in [
            ("/", "must not be /"),
            ("data", "absolute"),
            ("/data/", "normalized"),
            ("/data/../etc", "normalized"),
            ("/a//b", "normalized"),
            ("/./data", "normalized"),
            ("/proc", "reserved"),
            ("/dev/shm/x", "reserved"),
            ("/sys", "reserved"),
            ("/etc/triton", "reserved"),
            ("/usr/local", "reserved"),
        ] {
            let e = error(&one(mountpoint));
            assert!(
                e.contains("sdc:volumes[0].mountpoint")
                    && e.contains("\"vol1\"")
                    && e.contains(rule),
                "{mountpoint}: {e}"
            );
        }
        // Close to reserved is fine.
        assert!(parse(&meta(&one("/devdata"))).is_ok());
        assert!(parse(&meta(&one("/var/lib/data"))).is_ok());
    }

    #[test]
    fn other_bad_entries_say_which_field() {
        let e = error("{}");
        assert!(e.contains("JSON array"), "{e}");
        let e = error(r#"[{"name":"v","mountpoint":"/d"}]"#);
        assert!(
            e.contains("sdc:volumes[0]") && e.contains("nfsvolume"),
            "{e}"
        );
        let e = error(
            r#"[{"name":"v","mode":"rx","mountpoint":"/d","nfsvolume":"10.0.0.1:/exports/data"}]"#,
        );
        assert!(
            e.contains("[0].mode") && e.contains("\"rw\" or \"ro\""),
            "{e}"
        );
        let e = error(
            r#"[{"name":"v","type":"nfs","mountpoint":"/d","nfsvolume":"10.0.0.1:/exports/data"}]"#,
        );
        assert!(e.contains("[0].type"), "{e}");
        let e = error(r#"[{"name":"v","mountpoint":"/d","nfsvolume":"server:/exports/data"}]"#);
        assert!(
            e.contains("[0].nfsvolume") && e.contains("IP address"),
            "{e}"
        );
        let e = error(r#"[{"name":"v","mountpoint":"/d","nfsvolume":"10.0.0.1:exports"}]"#);
        assert!(e.contains("absolute export path"), "{e}");
        let e = error(r#"[{"name":"a b","mountpoint":"/d","nfsvolume":"10.0.0.1:/e"}]"#);
        assert!(e.contains("[0].name"), "{e}");
        let e = error(
            r#"[{"name":"a","mountpoint":"/d","nfsvolume":"10.0.0.1:/e"},
                {"name":"b","mountpoint":"/d/x","nfsvolume":"10.0.0.1:/e"}]"#,
        );
        assert!(
            e.contains("[1].mountpoint") && e.contains("overlaps"),
            "{e}"
        );
        let e = error(
            r#"[{"name":"a","mountpoint":"/d","nfsvolume":"10.0.0.1:/e"},
                {"name":"b","mountpoint":"/d","nfsvolume":"10.0.0.1:/e"}]"#,
        );
        assert!(e.contains("overlaps"), "{e}");
    }
}
