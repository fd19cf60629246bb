//! Starting an instance's pid 1 inside its namespaces and sandbox.
//!
//! The instance's user namespace (its own uid/gid range, [`super::idmap::make_userns`])
//! and its network namespace, owned by it ([`super::net::make_netns`]), are made before
//! (the backend's boot). Before the fork the agent makes a detached idmapped mount of the
//! image's root through the user namespace ([`super::idmap::idmapped_tree`]) and the
//! seccomp program
//! ([`super::sandbox::Filter`]). A thread of the agent unshares a PID namespace for its
//! children (only its own: the rest of the agent is untouched, and the thread forks
//! nothing else) and forks the instance's pid 1. Before it execs the init (`pre_exec`,
//! so only raw system calls on data prepared beforehand), that child, still host root:
//! 1. starts a new session (no signal from the agent's terminal reaches the instance);
//! 2. joins the instance's network namespace (NICs configured, sysctls set);
//! 3. unshares a mount namespace and makes every mount private, so nothing it mounts
//!    shows on the host and nothing the host mounts later shows inside. The namespace
//!    belongs to the host's user namespace: root in the instance can neither mount nor
//!    unmount anything in it (and the seccomp filter refuses the calls anyway);
//! 4. attaches the idmapped image root in it and mounts the overlay root (that as the
//!    lower layer, the instance's disk as the upper one; `nodev,nosuid`) and, inside it,
//!    a private /dev with only the allowed device nodes, /dev/shm, /dev/pts, the PID
//!    namespace's own /proc with its dangerous files read-only or masked, a
//!    read-only /sys (no cgroup file system at all), and the instance's volumes (FUSE
//!    mounts volmount made on the host, attached from detached copies);
//! 5. joins the instance's cgroups and unshares a cgroup namespace, so its cgroup is `/`
//!    inside;
//! 6. `pivot_root`s into the overlay and detaches the old root, so no path inside
//!    leads to the host's files (a chroot would leave the host's root mounted in the
//!    namespace, reachable by a root process that escapes the chroot or by a process
//!    that enters the namespace);
//!
//! then becomes the instance's root:
//! 7. drops its supplementary groups, joins the instance's user namespace and takes
//!    uid and gid 0 there (the host sees the range's base);
//! 8. unshares UTS and IPC namespaces, which then belong to the instance's user
//!    namespace (so its root may set its own hostname), and sets the hostname;
//! 9. cuts its capabilities to the container set, sets `no_new_privs` and installs the
//!    seccomp filter, last ([`super::sandbox::confine`]);
//!
//! then execs the init, which is pid 1 of its PID namespace. Every mount lives in the
//! instance's mount namespace only: when its last process exits, the kernel drops them
//! all, so none is ever left on the host. The thread reaps pid 1 when the instance
//! ends; a restart of cn-agent leaves the instance running (pid 1 is then reaped by the
//! host's init).
//!
//! The overlay is mounted by host root (before the user namespace is joined), so
//! copy-ups and whiteouts keep working as before and existing upper layers keep their
//! `trusted.overlay.*` attributes; the kernel creates each file in the upper layer with
//! the creating process's host ids (`base + n`).

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use uuid::Uuid;

use super::idmap::{self, IdRange};
use super::sandbox::{self, Filter};
use crate::error::{Error, Result};

/// Environment of pid 1.
pub const INIT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Device nodes bind-mounted from the host into the instance's /dev (with /dev/ptmx and
/// /dev/pts from the instance's own devpts, nothing else).
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// /proc entries made read-only inside (a read-only bind of themselves).
pub const PROC_READ_ONLY: [&str; 4] = ["sys", "sysrq-trigger", "irq", "bus"];
/// /proc files hidden behind /dev/null.
pub const PROC_MASKED_FILES: [&str; 6] = [
    "kcore",
    "keys",
    "timer_list",
    "sched_debug",
    "kmsg",
    "kallsyms",
];
/// /proc directories hidden behind an empty read-only tmpfs, where the kernel has them.
pub const PROC_MASKED_DIRS: [&str; 2] = ["acpi", "scsi"];

/// Stack of the thread that forks and then reaps pid 1: it builds the command's argv
/// and waits, nothing more.
const LAUNCH_THREAD_STACK: usize = 256 * 1024;

pub struct LaunchPlan {
    pub uuid: Uuid,
    pub netns: PathBuf,
    /// The (empty) directory the overlay is mounted on.
    pub root: PathBuf,
    /// The image's root, shared by the image's instances.
    pub lower: PathBuf,
    /// An empty directory the idmapped image root is attached to (in the instance's
    /// mount namespace only).
    pub lower_mount: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub hostname: String,
    pub cgroup_procs: Vec<PathBuf>,
    pub init: Vec<String>,
    /// pid 1's stdout and stderr are appended here.
    pub console: PathBuf,
    /// The instance's host ids.
    pub ids: IdRange,
    /// The instance's user namespace (with `ids` as its map).
    pub userns: OwnedFd,
    /// Its volumes, mounted on the host, attached at their mountpoints under the
    /// overlay root ([`super::volumes`]).
    pub volumes: Vec<super::volumes::Attach>,
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
    userns: OwnedFd,
    lower_tree: OwnedFd,
    lower_mount: CString,
    root_mount: CString,
    overlay_opts: CString,
    dev: CString,
    dev_opts: CString,
    shm_opts: CString,
    devices: Vec<(CString, CString)>,
    shm: CString,
    pts: CString,
    ptmx: CString,
    proc: CString,
    proc_read_only: Vec<CString>,
    proc_masked_files: Vec<CString>,
    proc_masked_dirs: Vec<CString>,
    sys: CString,
    hostname: Vec<u8>,
    procs: Vec<CString>,
    volumes: Vec<(OwnedFd, CString)>,
    filter: Filter,
}

/// Starts the instance; returns the host pid of its pid 1. An error is what kept pid 1
/// from starting (the child also notes a failed step on the console).
pub fn launch(plan: &LaunchPlan) -> Result<u32> {
    for path in [&plan.lower_mount, &plan.upper, &plan.work] {
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
    let userns = plan
        .userns
        .try_clone()
        .map_err(|e| Error::io(Path::new("user namespace handle"), e))?;
    let lower_tree = idmap::idmapped_tree(&plan.lower, &userns)?;
    let dev_dir = plan.root.join("dev");
    let mut devices = Vec::new();
    for name in DEVICES {
        devices.push((
            cpath(&Path::new("/dev").join(name))?,
            cpath(&dev_dir.join(name))?,
        ));
    }
    let proc_dir = plan.root.join("proc");
    let in_proc = |names: &[&str]| -> Result<Vec<CString>> {
        names.iter().map(|n| cpath(&proc_dir.join(n))).collect()
    };
    let base = plan.ids.base;
    let prepared = Prepared {
        netns,
        userns,
        lower_tree,
        lower_mount: cpath(&plan.lower_mount)?,
        root_mount: cpath(&plan.root)?,
        overlay_opts: cstr(
            "overlay options",
            format!(
                "lowerdir={},upperdir={},workdir={}",
                plan.lower_mount.display(),
                plan.upper.display(),
                plan.work.display()
            )
            .as_bytes(),
        )?,
        dev: cpath(&dev_dir)?,
        dev_opts: cstr(
            "/dev options",
            format!("mode=755,size=65536k,uid={base},gid={base}").as_bytes(),
        )?,
        shm_opts: cstr(
            "/dev/shm options",
            format!("mode=1777,size=65536k,uid={base},gid={base}").as_bytes(),
        )?,
        devices,
        shm: cpath(&dev_dir.join("shm"))?,
        pts: cpath(&dev_dir.join("pts"))?,
        ptmx: cpath(&dev_dir.join("ptmx"))?,
        proc: cpath(&proc_dir)?,
        proc_read_only: in_proc(&PROC_READ_ONLY)?,
        proc_masked_files: in_proc(&PROC_MASKED_FILES)?,
        proc_masked_dirs: in_proc(&PROC_MASKED_DIRS)?,
        sys: cpath(&plan.root.join("sys"))?,
        hostname: plan.hostname.as_bytes().to_vec(),
        procs: plan
            .cgroup_procs
            .iter()
            .map(|p| cpath(p))
            .collect::<Result<_>>()?,
        volumes: plan
            .volumes
            .iter()
            .map(|v| {
                v.tree
                    .try_clone()
                    .map(|tree| (tree, v.target.clone()))
                    .map_err(|e| Error::io(Path::new("volume mount handle"), e))
            })
            .collect::<Result<_>>()?,
        filter: Filter::container(),
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
            // The user namespace and image handles went with `command` into the child.
            drop(command);
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

/// [`check`], but `ENOENT` (the kernel has no such entry, or the image no such
/// directory) is no failure.
fn check_unless_absent(rc: libc::c_int, step: &[u8]) -> std::io::Result<()> {
    if rc < 0 && errno() != Some(libc::ENOENT) {
        Err(fail(step))
    } else {
        Ok(())
    }
}

fn errno() -> Option<i32> {
    std::io::Error::last_os_error().raw_os_error()
}

/// Writes `value` to the file at `path` (a cgroup's procs file).
///
/// # Safety
/// Raw system calls only: callable between fork and exec.
unsafe fn write_file(path: &std::ffi::CStr, value: &[u8], step: &[u8]) -> std::io::Result<()> {
    // SAFETY: open/write/close on a NUL-terminated path and a valid buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        check(fd, step)?;
        let rc = libc::write(fd, value.as_ptr().cast(), value.len());
        libc::close(fd);
        if rc < 0 {
            return Err(fail(step));
        }
    }
    Ok(())
}

/// A read-only bind of `target` onto itself, `nosuid,nodev,noexec` (a bind mount takes
/// its flags from a remount). `ENOENT`: the kernel has no such entry, nothing to do.
///
/// # Safety
/// Raw system calls only: callable between fork and exec.
unsafe fn bind_read_only(source: &std::ffi::CStr, target: &std::ffi::CStr) -> std::io::Result<()> {
    // SAFETY: mount(2) with NUL-terminated strings.
    unsafe {
        if mount(
            Some(source),
            target,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        ) < 0
        {
            if errno() == Some(libc::ENOENT) {
                return Ok(());
            }
            return Err(fail(b"bind a /proc entry"));
        }
        check(
            mount(
                None,
                target,
                None,
                libc::MS_BIND
                    | libc::MS_REMOUNT
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV
                    | libc::MS_NOEXEC,
                None,
            ),
            b"make a /proc entry read-only",
        )
    }
}

/// The child's side: see the module documentation. It is pid 1 of the new PID
/// namespace already, so the /proc it mounts is that namespace's.
fn enter(p: &Prepared) -> std::io::Result<()> {
    // SAFETY (whole block): plain system calls on NUL-terminated strings, buffers and
    // descriptors that `Prepared` owns and that outlive the calls.
    unsafe {
        check(libc::setsid(), b"setsid")?;
        check(
            libc::setns(p.netns.as_raw_fd(), libc::CLONE_NEWNET),
            b"setns(net)",
        )?;
        check(libc::unshare(libc::CLONE_NEWNS), b"unshare(mount)")?;
        check(
            mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None),
            b"make / private",
        )?;
        check(
            move_mount(&p.lower_tree, &p.lower_mount),
            b"attach the idmapped image",
        )?;
        // The overlay is a mount point of its own, which is what pivot_root asks of the
        // new root (no bind mount of the root onto itself is needed).
        check(
            mount(
                Some(c"overlay"),
                &p.root_mount,
                Some(c"overlay"),
                libc::MS_NOSUID | libc::MS_NODEV,
                Some(&p.overlay_opts),
            ),
            b"mount overlay",
        )?;
        // /dev: no node but the bind mounts below works (nodev), and root inside cannot
        // make one anyway (mknod of a device takes CAP_MKNOD on the host).
        check(
            mount(
                Some(c"tmpfs"),
                &p.dev,
                Some(c"tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_STRICTATIME,
                Some(&p.dev_opts),
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
                mount(Some(src), dst, None, libc::MS_BIND, None),
                b"bind device node",
            )?;
        }
        check(libc::mkdir(p.shm.as_ptr(), 0o1777), b"mkdir /dev/shm")?;
        check(
            mount(
                Some(c"shm"),
                &p.shm,
                Some(c"tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV,
                Some(&p.shm_opts),
            ),
            b"mount /dev/shm",
        )?;
        check(libc::mkdir(p.pts.as_ptr(), 0o755), b"mkdir /dev/pts")?;
        check(
            mount(
                Some(c"devpts"),
                &p.pts,
                Some(c"devpts"),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                Some(c"newinstance,ptmxmode=0666,mode=0620"),
            ),
            b"mount /dev/pts",
        )?;
        check(
            libc::symlink(c"pts/ptmx".as_ptr(), p.ptmx.as_ptr()),
            b"link /dev/ptmx",
        )?;
        check(
            mount(
                Some(c"proc"),
                &p.proc,
                Some(c"proc"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                None,
            ),
            b"mount /proc",
        )?;
        for entry in &p.proc_read_only {
            bind_read_only(entry, entry)?;
        }
        for entry in &p.proc_masked_files {
            check_unless_absent(
                mount(Some(c"/dev/null"), entry, None, libc::MS_BIND, None),
                b"mask a /proc file",
            )?;
        }
        for entry in &p.proc_masked_dirs {
            check_unless_absent(
                mount(
                    Some(c"tmpfs"),
                    entry,
                    Some(c"tmpfs"),
                    libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    Some(c"size=0"),
                ),
                b"mask a /proc directory",
            )?;
        }
        // /sys is optional: an image without the directory gets none.
        check_unless_absent(
            mount(
                Some(c"sysfs"),
                &p.sys,
                Some(c"sysfs"),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                None,
            ),
            b"mount /sys",
        )?;
        // The volumes, on mountpoints the agent made as directories of the disk.
        for (tree, target) in &p.volumes {
            check(move_mount(tree, target), b"attach a volume")?;
        }
        // "0" is the writing process itself, whatever PID namespace it is in.
        for file in &p.procs {
            write_file(file, b"0", b"join cgroup")?;
        }
        check(libc::unshare(libc::CLONE_NEWCGROUP), b"unshare(cgroup)")?;
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
        become_instance_root(p.userns.as_raw_fd())?;
        check(
            libc::unshare(libc::CLONE_NEWUTS | libc::CLONE_NEWIPC),
            b"unshare(uts, ipc)",
        )?;
        check(
            libc::sethostname(p.hostname.as_ptr().cast(), p.hostname.len()),
            b"sethostname",
        )?;
        sandbox::confine(&p.filter).inspect_err(|_| {
            fail(b"confine (capabilities, no_new_privs, seccomp)");
        })?;
    }
    Ok(())
}

/// mount(2) with C strings, `None` for a null pointer.
///
/// # Safety
/// A raw system call only: callable between fork and exec.
unsafe fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> libc::c_int {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: NUL-terminated strings or null pointers, as mount(2) takes them.
    unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    }
}

/// move_mount(2) of the detached mount `tree` (an open_tree(2) or fsmount(2) descriptor)
/// onto `target`.
///
/// # Safety
/// A raw system call only: callable between fork and exec.
unsafe fn move_mount(tree: &OwnedFd, target: &CStr) -> libc::c_int {
    // SAFETY: a descriptor we hold and NUL-terminated paths.
    unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ) as libc::c_int
    }
}

/// linux/mount.h.
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// Drops the supplementary groups, joins the user namespace `userns` and takes uid and
/// gid 0 in it: the calling (single-threaded) process is then the instance's root,
/// with every capability in the instance's namespaces and none on the host.
///
/// Raw system calls only: callable between fork and exec.
pub fn become_instance_root(userns: libc::c_int) -> std::io::Result<()> {
    // SAFETY: system calls with integer arguments (setgroups with an empty list).
    unsafe {
        check(libc::setgroups(0, std::ptr::null()), b"setgroups")?;
        check(libc::setns(userns, libc::CLONE_NEWUSER), b"setns(user)")?;
        check(libc::setresgid(0, 0, 0), b"setresgid")?;
        check(libc::setresuid(0, 0, 0), b"setresuid")?;
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
