//! `zlogin UUID [CMD...]`: a command inside a running instance, as SmartOS's zlogin.
//!
//! The command runs exactly as the instance's own processes do: in its cgroups (joined
//! first, from the host), in every namespace of its pid 1 (cgroup, IPC, UTS, network,
//! PID, mount and, last, user, through `/proc/<pid 1>/ns/*`), as root of its user
//! namespace (its host uid is the instance's range's base), with the container
//! capability set, `no_new_privs` and the seccomp filter ([`super::sandbox`]). Nothing
//! of the host's is inherited but the standard input, output and error.
//!
//! [`enter`] must run in a single-threaded process (joining a user or mount namespace
//! takes one): the `zlogin` binary. It forks once, after joining the PID namespace, so
//! the command is a process of the instance's PID namespace; the `zlogin` process waits
//! for it and exits with its status.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Command;

use uuid::Uuid;

use super::LinuxConfig;
use super::cgroup::Cgroups;
use super::launch::{self, INIT_PATH, become_instance_root};
use super::sandbox::{self, Filter};
use crate::error::{Error, Result};

/// The shell run when no command is given.
pub const SHELL: &str = "/bin/sh";

/// The namespaces joined before the fork, in this order (the user namespace is joined
/// by the child, last, when host root's rights are no longer needed).
const NAMESPACES: [(&str, libc::c_int); 6] = [
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("mnt", libc::CLONE_NEWNS),
];

/// A running instance, found as the agent finds it.
pub struct Target {
    pub uuid: Uuid,
    /// Host pid of its pid 1.
    pub init: u32,
    cgroup_procs: Vec<std::path::PathBuf>,
}

/// The running instance `uuid` of the node whose agent keeps its state in
/// `config.state_dir` and its cgroups under `config.cgroup_root`/`cgroup_parent`.
pub fn find(config: &LinuxConfig, uuid: Uuid) -> Result<Target> {
    let record = config
        .state_dir
        .join("zones")
        .join(uuid.to_string())
        .join("zone.json");
    if !record.exists() {
        return Err(Error::VmNotFound(uuid));
    }
    let cgroups = Cgroups::detect(&config.cgroup_root, &config.cgroup_parent)?;
    let init = launch::find_init(&cgroups.pids(uuid)).ok_or_else(|| Error::WrongState {
        uuid,
        state: "stopped".into(),
        action: "zlogin",
    })?;
    Ok(Target {
        uuid,
        init,
        cgroup_procs: cgroups.procs_files(uuid),
    })
}

/// Runs `argv` (the shell when empty) inside `target` and returns its exit code
/// (128 + the signal when a signal ended it). The calling process must be
/// single-threaded; it is left inside the instance's namespaces and cgroups.
pub fn enter(target: &Target, argv: &[String]) -> Result<i32> {
    let shell = [SHELL.to_string()];
    let argv = if argv.is_empty() { &shell[..] } else { argv };
    let ns_dir = Path::new("/proc").join(target.init.to_string()).join("ns");
    // Every handle first: once in the mount namespace, /proc is the instance's.
    let open = |name: &str| {
        let path = ns_dir.join(name);
        File::open(&path).map_err(|e| Error::io(&path, e))
    };
    let userns = open("user")?;
    let same_userns = match (
        std::fs::metadata(ns_dir.join("user")),
        std::fs::metadata("/proc/self/ns/user"),
    ) {
        (Ok(a), Ok(b)) => {
            use std::os::unix::fs::MetadataExt;
            a.ino() == b.ino() && a.dev() == b.dev()
        }
        _ => false,
    };
    if same_userns {
        return Err(Error::invalid(
            "UUID",
            format!(
                "instance {} runs without a user namespace of its own (started before \
                 instances had one); it can be entered after its next boot",
                target.uuid
            ),
        ));
    }
    let joined: Vec<(File, libc::c_int, &str)> = NAMESPACES
        .iter()
        .map(|(name, flag)| open(name).map(|f| (f, *flag, *name)))
        .collect::<Result<_>>()?;
    let filter = Filter::container();
    let pid = std::process::id().to_string();
    for file in &target.cgroup_procs {
        std::fs::write(file, &pid).map_err(|e| Error::io(file, e))?;
    }
    for (file, flag, name) in &joined {
        // SAFETY: setns(2) on a descriptor we own.
        if unsafe { libc::setns(file.as_raw_fd(), *flag) } < 0 {
            return Err(Error::io(
                ns_dir.join(name),
                std::io::Error::last_os_error(),
            ));
        }
    }
    drop(joined);
    // The mount namespace's root is the instance's; start there.
    std::env::set_current_dir("/").map_err(|e| Error::io(Path::new("/"), e))?;

    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env_clear()
        .env("PATH", INIT_PATH)
        .env("HOME", "/root");
    for key in ["TERM", "LANG"] {
        if let Ok(value) = std::env::var(key) {
            command.env(key, value);
        }
    }
    let userns_fd = userns.as_raw_fd();
    // SAFETY: the closure runs in the forked child (of a single-threaded process) before
    // exec and makes system calls only, on memory prepared above.
    unsafe {
        command.pre_exec(move || {
            become_instance_root(userns_fd)?;
            sandbox::confine(&filter)
        });
    }
    let status = command.status().map_err(|e| Error::Command {
        command: format!("{} in instance {}", argv[0], target.uuid),
        output: e.to_string(),
    })?;
    drop(userns);
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    })
}

/// `argv` as C strings, for callers that check the command before entering.
pub fn check_argv(argv: &[String]) -> Result<()> {
    for (i, arg) in argv.iter().enumerate() {
        CString::new(arg.as_bytes())
            .map_err(|_| Error::invalid(&format!("CMD[{i}]"), "contains a NUL byte"))?;
    }
    Ok(())
}
