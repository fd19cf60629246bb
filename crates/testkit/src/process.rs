use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};
use std::time::{Duration, Instant};

use crate::TestkitError;

type SpawnRequest = (Command, Sender<std::io::Result<Child>>);

/// Spawns `command` so that it dies with the test process, never earlier.
///
/// The kernel's parent-death signal fires when the *thread* that forked the child exits,
/// not the process: a database started from a short-lived thread (tokio's blocking pool
/// ends idle threads after 10 s) would be killed under a running test. So every child is
/// forked by one spawner thread that lives as long as the process.
pub fn spawn_tied(mut command: Command) -> std::io::Result<Child> {
    die_with_parent(&mut command);
    static SPAWNER: OnceLock<Mutex<Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("the test kit needs one thread to spawn its servers from");
        Mutex::new(tx)
    });
    let (reply, answer) = channel();
    spawner
        .lock()
        .map_err(|_| std::io::Error::other("test kit spawner lock poisoned"))?
        .send((command, reply))
        .map_err(|_| std::io::Error::other("test kit spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("test kit spawner thread is gone"))?
}

/// Makes the child receive SIGKILL when the thread that forked it dies (see [`spawn_tied`]),
/// so a killed test never leaves a database running. Set after any uid change, which would
/// clear it.
fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches only the calling (child) process.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
/// The last resort for waiting on an outside process; returns whether it became true.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A temp dir named `prefix...`, removed when dropped.
pub(crate) fn temp_dir(prefix: &str) -> Result<tempfile::TempDir, TestkitError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|source| TestkitError::Io {
            path: std::env::temp_dir().display().to_string(),
            source,
        })
}

/// A new (empty) log file at `path`, for a process's output.
pub(crate) fn log_file(path: &std::path::Path) -> Result<std::fs::File, TestkitError> {
    std::fs::File::create(path).map_err(|source| TestkitError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Waits up to 30 s for `ready`; if it never is, calls `stop` and fails naming `what`,
/// with the tail of its `log`.
pub(crate) fn wait_ready(
    what: &str,
    log: &std::path::Path,
    ready: impl FnMut() -> bool,
    stop: impl FnOnce(),
) -> Result<(), TestkitError> {
    if wait_until(Duration::from_secs(READY_SECS), ready) {
        return Ok(());
    }
    stop();
    Err(TestkitError::NotReady {
        what: what.into(),
        seconds: READY_SECS,
        log: tail(log, 30),
    })
}

/// How long a started process may take to answer.
const READY_SECS: u64 = 30;
