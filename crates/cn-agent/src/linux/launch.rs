//! Starting an instance's pid 1 inside its namespaces.
//!
//! The agent forks a child that, before it execs anything (`pre_exec`, so only raw
//! system calls on data prepared beforehand):
//! 1. starts a new session (no signal from the agent's terminal reaches the instance);
//! 2. joins the instance's network namespace (made by `ip netns add`, NICs configured);
//! 3. unshares mount, UTS and IPC namespaces;
//! 4. mounts the overlay root (image as the lower layer, the instance's disk as the
//!    upper one), a private /dev with the usual device nodes, /dev/shm, /dev/pts and a
//!    read-only /sys, all visible inside the instance only: when its last process exits,
//!    the kernel drops every one of these mounts, so none is ever left on the host;
//! 5. sets the hostname;
//! 6. joins the instance's cgroups (so everything it starts is limited and counted);
//!
//! then execs util-linux `unshare --pid --fork --mount-proc --root=<root>`, which makes
//! the PID namespace and runs the image's init as pid 1 chrooted into the overlay.
//! The `unshare` process stays as the parent of pid 1 (in the instance's cgroup), and a
//! thread of the agent reaps it when the instance ends. Neither depends on the agent
//! staying up: a restart of cn-agent leaves the instance running.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use uuid::Uuid;

use crate::error::{Error, Result};

/// Environment of pid 1.
const INIT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Device nodes bind-mounted from the host into the instance's /dev.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

pub struct LaunchPlan {
    pub uuid: Uuid,
    pub netns: PathBuf,
    /// The (empty) directory the overlay is mounted on.
    pub root: PathBuf,
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub hostname: String,
    pub cgroup_procs: Vec<PathBuf>,
    pub init: Vec<String>,
    /// pid 1's stdout and stderr are appended here.
    pub console: PathBuf,
    /// util-linux `unshare`.
    pub unshare: PathBuf,
}

fn cstr(what: &str, bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::invalid(what, "contains a NUL byte"))
}

fn cpath(path: &Path) -> Result<CString> {
    cstr(&path.display().to_string(), path.as_os_str().as_bytes())
}

/// Everything the child needs, allocated before the fork.
struct Prepared {
    netns: File,
    root_mount: CString,
    overlay_opts: CString,
    dev: CString,
    devices: Vec<(CString, CString)>,
    shm: CString,
    pts: CString,
    ptmx: CString,
    sys: CString,
    hostname: Vec<u8>,
    procs: Vec<CString>,
}

/// Starts the instance; returns the host pid of the `unshare` wrapper, whose child is the
/// instance's pid 1.
pub fn launch(plan: &LaunchPlan) -> Result<u32> {
    for path in [&plan.lower, &plan.upper, &plan.work] {
        let text = path.display().to_string();
        if text.contains(',') || text.contains(':') {
            return Err(Error::invalid(
                "state_dir",
                format!("{text} holds ',' or ':', which overlayfs options cannot carry"),
            ));
        }
    }
    let netns = File::open(&plan.netns).map_err(|e| Error::io(&plan.netns, e))?;
    let dev_dir = plan.root.join("dev");
    let mut devices = Vec::new();
    for name in DEVICES {
        devices.push((
            cpath(&Path::new("/dev").join(name))?,
            cpath(&dev_dir.join(name))?,
        ));
    }
    let prepared = Prepared {
        netns,
        root_mount: cpath(&plan.root)?,
        overlay_opts: cstr(
            "overlay options",
            format!(
                "lowerdir={},upperdir={},workdir={}",
                plan.lower.display(),
                plan.upper.display(),
                plan.work.display()
            )
            .as_bytes(),
        )?,
        dev: cpath(&dev_dir)?,
        devices,
        shm: cpath(&dev_dir.join("shm"))?,
        pts: cpath(&dev_dir.join("pts"))?,
        ptmx: cpath(&dev_dir.join("ptmx"))?,
        sys: cpath(&plan.root.join("sys"))?,
        hostname: plan.hostname.as_bytes().to_vec(),
        procs: plan
            .cgroup_procs
            .iter()
            .map(|p| cpath(p))
            .collect::<Result<_>>()?,
    };

    let console = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&plan.console)
        .map_err(|e| Error::io(&plan.console, e))?;
    let console2 = console
        .try_clone()
        .map_err(|e| Error::io(&plan.console, e))?;

    let mut command = Command::new(&plan.unshare);
    command
        .arg("--pid")
        .arg("--fork")
        .arg("--mount-proc")
        .arg(format!("--root={}", plan.root.display()))
        .arg("--wd=/")
        .arg("--")
        .args(&plan.init)
        .env_clear()
        .env("PATH", INIT_PATH)
        .env("HOME", "/root")
        .env("container", "triton")
        .stdin(Stdio::null())
        .stdout(console)
        .stderr(console2);
    // SAFETY: the closure runs in the forked child before exec. It only makes system
    // calls on memory prepared above (no allocation, no locks), which is what
    // async-signal-safety requires of a child forked from a multi-threaded process.
    unsafe {
        command.pre_exec(move || enter(&prepared));
    }
    let child = command.spawn().map_err(|source| Error::Launch {
        uuid: plan.uuid,
        source,
    })?;
    let pid = child.id();
    let uuid = plan.uuid;
    // Reap the wrapper when the instance ends; a small stack is plenty for a wait.
    let reaper = std::thread::Builder::new()
        .name(format!("reap-{}", &uuid.simple().to_string()[..8]))
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut child = child;
            match child.wait() {
                Ok(status) => tracing::info!(%uuid, %status, "instance ended"),
                Err(e) => tracing::warn!(%uuid, error = %e, "cannot wait for instance"),
            }
        });
    if let Err(e) = reaper {
        tracing::warn!(%uuid, error = %e, "cannot start the reaper thread; the wrapper will be a zombie until cn-agent exits");
    }
    Ok(pid)
}

/// Writes a note to the console (fd 2) and returns the current errno as an error.
fn fail(step: &[u8]) -> std::io::Error {
    let err = std::io::Error::last_os_error();
    let prefix = b"cn-agent launch: ";
    // SAFETY: write(2) on fd 2 with valid buffers.
    unsafe {
        libc::write(2, prefix.as_ptr().cast(), prefix.len());
        libc::write(2, step.as_ptr().cast(), step.len());
        libc::write(2, b" failed\n".as_ptr().cast(), 8);
    }
    err
}

fn check(rc: libc::c_int, step: &[u8]) -> std::io::Result<()> {
    if rc < 0 { Err(fail(step)) } else { Ok(()) }
}

/// The child's side: see the module documentation.
fn enter(p: &Prepared) -> std::io::Result<()> {
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY (whole block): plain system calls on NUL-terminated strings and buffers that
    // `Prepared` owns and that outlive the calls.
    unsafe {
        check(libc::setsid(), b"setsid")?;
        check(
            libc::setns(p.netns.as_raw_fd(), libc::CLONE_NEWNET),
            b"setns(net)",
        )?;
        check(
            libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC),
            b"unshare",
        )?;
        check(
            libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
            b"make / private",
        )?;
        check(
            libc::mount(
                c"overlay".as_ptr(),
                p.root_mount.as_ptr(),
                c"overlay".as_ptr(),
                0,
                p.overlay_opts.as_ptr().cast(),
            ),
            b"mount overlay",
        )?;
        check(
            libc::mount(
                c"tmpfs".as_ptr(),
                p.dev.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_STRICTATIME,
                c"mode=755,size=65536k".as_ptr().cast(),
            ),
            b"mount /dev",
        )?;
        for (src, dst) in &p.devices {
            let fd = libc::open(
                dst.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o666,
            );
            check(fd, b"create device node")?;
            libc::close(fd);
            check(
                libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    null,
                    libc::MS_BIND,
                    std::ptr::null(),
                ),
                b"bind device node",
            )?;
        }
        check(libc::mkdir(p.shm.as_ptr(), 0o1777), b"mkdir /dev/shm")?;
        check(
            libc::mount(
                c"shm".as_ptr(),
                p.shm.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"mode=1777,size=65536k".as_ptr().cast(),
            ),
            b"mount /dev/shm",
        )?;
        check(libc::mkdir(p.pts.as_ptr(), 0o755), b"mkdir /dev/pts")?;
        check(
            libc::mount(
                c"devpts".as_ptr(),
                p.pts.as_ptr(),
                c"devpts".as_ptr(),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                c"newinstance,ptmxmode=0666,mode=0620".as_ptr().cast(),
            ),
            b"mount /dev/pts",
        )?;
        check(
            libc::symlink(c"pts/ptmx".as_ptr(), p.ptmx.as_ptr()),
            b"link /dev/ptmx",
        )?;
        // /sys is optional: an image without the directory gets none.
        let rc = libc::mount(
            c"sysfs".as_ptr(),
            p.sys.as_ptr(),
            c"sysfs".as_ptr(),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        );
        if rc < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT) {
            return Err(fail(b"mount /sys"));
        }
        check(
            libc::sethostname(p.hostname.as_ptr().cast(), p.hostname.len()),
            b"sethostname",
        )?;
        let mut digits = [0u8; 20];
        let pid_text = format_pid(libc::getpid() as u32, &mut digits);
        for file in &p.procs {
            let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            check(fd, b"open cgroup.procs")?;
            let rc = libc::write(fd, pid_text.as_ptr().cast(), pid_text.len());
            libc::close(fd);
            if rc < 0 {
                return Err(fail(b"join cgroup"));
            }
        }
    }
    Ok(())
}

/// Decimal digits of `pid` in `buf`, without allocating.
fn format_pid(mut pid: u32, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (pid % 10) as u8;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    &buf[start..]
}

/// The host pid of the instance's pid 1 among `pids` (the one that is pid 1 in its own
/// PID namespace).
pub fn find_init(pids: &[u32]) -> Option<u32> {
    pids.iter().copied().find(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                status.lines().find_map(|l| {
                    l.strip_prefix("NSpid:").map(|rest| {
                        let ids: Vec<&str> = rest.split_whitespace().collect();
                        ids.len() >= 2 && ids.last() == Some(&"1")
                    })
                })
            })
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_format_without_allocating() {
        let mut buf = [0u8; 20];
        assert_eq!(format_pid(0, &mut buf), b"0");
        assert_eq!(format_pid(4194304, &mut buf), b"4194304");
    }
}
