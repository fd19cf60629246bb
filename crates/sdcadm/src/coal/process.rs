//! CoaL's processes: started detached (`setsid`, own session and process group), output
//! appended to `$COAL_DIR/logs/<svc>.log`, identity kept in `$COAL_DIR/run/<svc>.pid` as
//! "<pid> <start time>" so a pid reused after a crash or reboot is never taken for ours.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::Error;

/// How long a service gets to stop after its stop signal before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat), and
/// whether it is a zombie.
fn stat(pid: u32) -> Option<(u64, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let state = fields.first()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, *state == "Z" || *state == "X"))
}

/// A started service's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pid {
    pub pid: u32,
    pub start: u64,
}

impl Pid {
    pub fn of(pid: u32) -> Option<Pid> {
        stat(pid).map(|(start, _)| Pid { pid, start })
    }

    /// Still the same process, and not a zombie.
    pub fn alive(&self) -> bool {
        matches!(stat(self.pid), Some((start, false)) if start == self.start)
    }
}

pub fn read_pid(path: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace();
    let pid = it.next()?.parse().ok()?;
    let start = it.next()?.parse().ok()?;
    Some(Pid { pid, start })
}

pub fn write_pid(path: &Path, pid: Pid) -> Result<(), Error> {
    std::fs::write(path, format!("{} {}\n", pid.pid, pid.start))
        .map_err(|e| Error::io("write the pid file", path, e))
}

/// What to start.
pub struct Spawn<'a> {
    pub program: &'a Path,
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub log: &'a Path,
    pub run_as: Option<&'a str>,
    pub cwd: &'a Path,
    /// Run inside this network namespace (a linux compute node of CoaL's).
    pub netns: Option<&'a Netns>,
}

/// A network namespace to start a process in, as `ip netns exec` does (its own mount
/// namespace, a slave of the host's, with a `/sys` of the namespace's links) but with
/// the host's cgroup file systems kept at `/sys/fs/cgroup`, where cn-agent makes its
/// instances' cgroups.
#[derive(Debug, Clone)]
pub struct Netns {
    /// `/run/netns/<name>`.
    pub path: PathBuf,
    /// An empty directory the cgroup mounts are parked on while `/sys` is replaced.
    pub park: PathBuf,
}

/// Starts a detached process: `setsid [setpriv --reuid U --regid U --init-groups --]
/// program args`; both exec, so the pid is the program's.
pub fn spawn(s: &Spawn<'_>) -> Result<(Pid, std::process::Child), Error> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(s.log)
        .map_err(|e| Error::io("open the log", s.log, e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| Error::io("open the log", s.log, e))?;
    let mut cmd = Command::new("setsid");
    if let Some(user) = s.run_as {
        cmd.args([
            "setpriv",
            &format!("--reuid={user}"),
            &format!("--regid={user}"),
            "--init-groups",
            "--",
        ]);
    }
    if let Some(ns) = s.netns {
        enter_on_exec(&mut cmd, ns)?;
    }
    cmd.arg(s.program)
        .args(s.args)
        .envs(s.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(s.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    let child = cmd.spawn().map_err(|e| Error::Command {
        command: format!("setsid {}", s.program.display()),
        detail: e.to_string(),
    })?;
    let pid = child.id();
    let id = Pid::of(pid).ok_or_else(|| Error::Command {
        command: format!("setsid {}", s.program.display()),
        detail: "exited at once".into(),
    })?;
    Ok((id, child))
}

/// Makes `cmd` enter `ns` between fork and exec.
fn enter_on_exec(cmd: &mut Command, ns: &Netns) -> Result<(), Error> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    let file = std::fs::File::open(&ns.path)
        .map_err(|e| Error::io("open the network namespace", &ns.path, e))?;
    std::fs::create_dir_all(&ns.park).map_err(|e| Error::io("create", &ns.park, e))?;
    let c = |b: &[u8]| {
        std::ffi::CString::new(b).map_err(|_| Error::Check(format!("{:?} holds a NUL", ns.park)))
    };
    let park = c(ns.park.as_os_str().as_bytes())?;
    let (root, sys, cgroup, sysfs) = (c(b"/")?, c(b"/sys")?, c(b"/sys/fs/cgroup")?, c(b"sysfs")?);
    let step = |rc: i32| {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: between fork and exec only system calls run here (no allocation, no
    // lock): every string and the namespace's descriptor were made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let none: *const libc::c_char = std::ptr::null();
            let no_data: *const libc::c_void = std::ptr::null();
            step(libc::unshare(libc::CLONE_NEWNS))?;
            // Nothing mounted here goes back to the host.
            step(libc::mount(
                none,
                root.as_ptr(),
                none,
                libc::MS_REC | libc::MS_SLAVE,
                no_data,
            ))?;
            step(libc::mount(
                cgroup.as_ptr(),
                park.as_ptr(),
                none,
                libc::MS_BIND | libc::MS_REC,
                no_data,
            ))?;
            step(libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET))?;
            step(libc::umount2(sys.as_ptr(), libc::MNT_DETACH))?;
            step(libc::mount(
                sysfs.as_ptr(),
                sys.as_ptr(),
                sysfs.as_ptr(),
                0,
                no_data,
            ))?;
            step(libc::mount(
                park.as_ptr(),
                cgroup.as_ptr(),
                none,
                libc::MS_MOVE,
                no_data,
            ))
        });
    }
    Ok(())
}

pub fn signal_number(name: Option<&str>) -> i32 {
    match name {
        Some("INT") => libc::SIGINT,
        Some("QUIT") => libc::SIGQUIT,
        Some("KILL") => libc::SIGKILL,
        _ => libc::SIGTERM,
    }
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory effects; a stale pid only gets ESRCH.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Sends the stop signal, waits up to [`STOP_TIMEOUT`], then kills the whole process group.
/// Returns whether it had to kill.
pub fn stop(pid: Pid, signal: i32) -> bool {
    if !pid.alive() {
        return false;
    }
    let Ok(p) = i32::try_from(pid.pid) else {
        return false;
    };
    kill(p, signal);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if !pid.alive() {
            // The group may hold helpers (postgres's backends exit with the postmaster).
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    kill(-p, libc::SIGKILL);
    kill(p, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// Kills one process by id (a leftover found by a sweep).
pub fn kill_pid(pid: u32) {
    if let Ok(p) = i32::try_from(pid) {
        kill(p, libc::SIGKILL);
    }
}

/// The last `n` lines of a log, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `name` resolved: a path with a slash as is, else the first match on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
