//! A forked child that makes a few system calls, reports how they went through a pipe
//! and then waits to be killed: what the agent needs to make a namespace that only a
//! process can make for itself (a user namespace, a network namespace owned by one), and
//! then write its maps or bind it from `/proc/<pid>/ns` while the child holds it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The forked child; dropping it kills and reaps the child.
pub(crate) struct HeldChild {
    pid: libc::pid_t,
    read_end: OwnedFd,
}

impl HeldChild {
    /// Forks a child that runs `child`, writes the bytes it answers into the pipe and
    /// waits. An error names the step that failed (`pipe2` or `fork`).
    ///
    /// # Safety
    /// `child` runs between fork and kill in a process with other threads: it must make
    /// raw system calls only, on memory prepared before (no allocation, no locks).
    pub(crate) unsafe fn spawn<const N: usize>(
        child: impl FnOnce() -> [u8; N],
    ) -> Result<HeldChild, (&'static str, std::io::Error)> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2(2) fills the two-int array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(("pipe2", std::io::Error::last_os_error()));
        }
        // SAFETY: pipe2 returned two fresh fds that nothing else owns.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the child makes system calls only (the caller's promise for `child`)
        // and is killed, which is what a child of a multi-threaded process may do.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(("fork", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            let answer = child();
            // SAFETY: write(2) from a buffer on the stack, then pause(2) until killed.
            unsafe {
                libc::write(write_end.as_raw_fd(), answer.as_ptr().cast(), N);
                loop {
                    libc::pause();
                }
            }
        }
        Ok(HeldChild { pid, read_end })
    }

    pub(crate) fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// The child's answer; `None` when it ended without one.
    pub(crate) fn answer<const N: usize>(&self) -> Option<[u8; N]> {
        let mut answer = [0u8; N];
        // SAFETY: read(2) into a buffer we own, of its length.
        let n = unsafe { libc::read(self.read_end.as_raw_fd(), answer.as_mut_ptr().cast(), N) };
        (usize::try_from(n) == Ok(N)).then_some(answer)
    }
}

impl Drop for HeldChild {
    fn drop(&mut self) {
        // SAFETY: kill(2) and waitpid(2) on our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            let mut status = 0;
            libc::waitpid(self.pid, &mut status, 0);
        }
    }
}
