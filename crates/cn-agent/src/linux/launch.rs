//! Starting an instance's pid 1 inside its namespaces.
//!
//! A thread of the agent unshares a PID namespace for its children (only its own: the
//! rest of the agent is untouched, and the thread forks nothing else) and forks the
//! instance's pid 1. Before it execs the init (`pre_exec`, so only raw system calls on
//! data prepared beforehand), that child:
//! 1. starts a new session (no signal from the agent's terminal reaches the instance);
//! 2. joins the instance's network namespace (made by `ip netns add`, NICs configured);
//! 3. unshares mount, UTS and IPC namespaces and makes every mount private, so nothing
//!    it mounts shows on the host and nothing the host mounts later shows inside;
//! 4. mounts the overlay root (image as the lower layer, the instance's disk as the
//!    upper one) and, inside it, a private /dev with the usual device nodes, /dev/shm,
//!    /dev/pts, the PID namespace's own /proc and a read-only /sys;
//! 5. sets the hostname and joins the instance's cgroups;
//! 6. `pivot_root`s into the overlay and detaches the old root, so no path inside
//!    leads to the host's files (a chroot would leave the host's root mounted in the
//!    namespace, reachable by a root process that escapes the chroot or by a process
//!    that enters the namespace);
//!
//! then execs the init, which is pid 1 of its PID namespace. Every mount lives in the
//! instance's mount namespace only: when its last process exits, the kernel drops them
//! all, so none is ever left on the host. The thread reaps pid 1 when the instance
//! ends; a restart of cn-agent leaves the instance running (pid 1 is then reaped by the
//! host's init).

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
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Stack of the thread that forks and then reaps pid 1: it builds the command's argv
/// and waits, nothing more.
const LAUNCH_THREAD_STACK: usize = 256 * 1024;

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
    proc: CString,
    sys: CString,
    hostname: Vec<u8>,
    procs: Vec<CString>,
}

/// Starts the instance; returns the host pid of its pid 1. An error is what kept pid 1
/// from starting (the child also notes a failed step on the console).
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
    let Some(program) = plan.init.first() else {
        return Err(Error::invalid("init", "must name a program"));
    };
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
        proc: cpath(&plan.root.join("proc"))?,
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

    // The program is looked up after the pivot (execvp in the child), so it is the
    // image's, found on the PATH given here.
    let mut command = Command::new(program);
    command
        .args(&plan.init[1..])
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

    let uuid = plan.uuid;
    let (started_tx, started_rx) = std::sync::mpsc::channel::<std::io::Result<u32>>();
    std::thread::Builder::new()
        .name(format!("init-{}", &uuid.simple().to_string()[..8]))
        .stack_size(LAUNCH_THREAD_STACK)
        .spawn(move || {
            // SAFETY: unshare(2) takes no pointers. CLONE_NEWPID changes the PID
            // namespace of this thread's future children only; it forks pid 1 and
            // nothing else, then ends when pid 1 does.
            if unsafe { libc::unshare(libc::CLONE_NEWPID) } < 0 {
                let _ = started_tx.send(Err(std::io::Error::last_os_error()));
                return;
            }
            let mut child = match command.spawn() {
                Ok(child) => child,
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            let _ = started_tx.send(Ok(child.id()));
            match child.wait() {
                Ok(status) => tracing::info!(%uuid, %status, "instance ended"),
                Err(e) => tracing::warn!(%uuid, error = %e, "cannot wait for instance"),
            }
        })
        .map_err(|source| Error::Launch { uuid, source })?;
    match started_rx.recv() {
        Ok(Ok(pid)) => Ok(pid),
        Ok(Err(source)) => Err(Error::Launch { uuid, source }),
        Err(_) => Err(Error::Launch {
            uuid,
            source: std::io::Error::other("the launch thread ended without an answer"),
        }),
    }
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

/// The child's side: see the module documentation. It is pid 1 of the new PID
/// namespace already, so the /proc it mounts is that namespace's.
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
        // The overlay is a mount point of its own, which is what pivot_root asks of the
        // new root (no bind mount of the root onto itself is needed).
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
        check(
            libc::mount(
                c"proc".as_ptr(),
                p.proc.as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            ),
            b"mount /proc",
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
        // "0" is the writing process itself, whatever PID namespace it is in.
        for file in &p.procs {
            let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            check(fd, b"open cgroup.procs")?;
            let rc = libc::write(fd, c"0".as_ptr().cast(), 1);
            libc::close(fd);
            if rc < 0 {
                return Err(fail(b"join cgroup"));
            }
        }
        // pivot_root(".", "."): the old root ends up stacked on the new one, and the
        // detaching unmount takes it (and every host mount under it) away.
        check(libc::chdir(p.root_mount.as_ptr()), b"chdir to the root")?;
        check(
            libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int,
            b"pivot_root",
        )?;
        check(
            libc::umount2(c".".as_ptr(), libc::MNT_DETACH),
            b"detach the old root",
        )?;
        check(libc::chdir(c"/".as_ptr()), b"chdir /")?;
    }
    Ok(())
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
