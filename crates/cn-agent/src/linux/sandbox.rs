//! What confines a process of an instance once it is inside the instance's namespaces:
//! the capability set, `no_new_privs` and the seccomp filter. The instance's pid 1
//! ([`super::launch`]) and every command `zlogin` runs ([`super::zlogin`]) go through
//! [`confine`] as the last step before exec, so both hold exactly the same rights.
//!
//! * Capabilities: the container default set ([`DEFAULT_CAPS`], Docker's, with
//!   `CAP_NET_ADMIN` over the instance's own network namespace), in the instance's user
//!   namespace only (they mean nothing to the host). Everything else is
//!   dropped from the bounding set, so no exec (setuid file, file capabilities) gets it
//!   back; the ambient set is cleared.
//! * `no_new_privs`: an exec never grants more than the process has.
//! * seccomp: a deny list ([`Filter::container`]) of what a container has no business
//!   calling: kernel modules, kexec, mounts of any kind, swap, reboot, the clock, raw
//!   I/O ports, file handles, keyrings, bpf, perf, userfaultfd, quotas, entering or
//!   making namespaces, personalities other than Linux's, reading or writing another
//!   process's memory (process_vm_*, kcmp), and the ioctls that push input into a
//!   terminal (TIOCSTI, TIOCLINUX), which would let a program inside type into the
//!   shell of an operator whose terminal `zlogin` lent it. Denied calls fail with EPERM; clone3 fails
//!   with ENOSYS so the C library falls back to clone, whose flags the filter can read
//!   (clone3 passes them in memory). On x86_64 the x32 ABI and foreign architectures
//!   (i386 through `int 0x80`, whose numbers differ) are refused too.
//!
//!   ptrace is allowed: a process inside sees only its own instance (PID namespace) and
//!   can trace only processes of its own uid range (user namespace), which is what a
//!   tenant's debugger or strace needs.
//!
//! [`Filter::container`] allocates; [`confine`] does not, so it runs in a child between
//! fork and exec.

use std::io;

/// Capability numbers (linux/capability.h).
const CAP_CHOWN: u32 = 0;
const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_FOWNER: u32 = 3;
const CAP_FSETID: u32 = 4;
const CAP_KILL: u32 = 5;
const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_SETPCAP: u32 = 8;
const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_CHROOT: u32 = 18;
const CAP_MKNOD: u32 = 27;
const CAP_AUDIT_WRITE: u32 = 29;
const CAP_SETFCAP: u32 = 31;

/// The container default set (Docker's) and `CAP_NET_ADMIN`, which an instance's
/// processes hold. The instance's network namespace belongs to its user namespace
/// ([`super::net::make_netns`]), so `CAP_NET_ADMIN` there is over its own network stack
/// only (interfaces, addresses, routes, its own nftables), as a SmartOS zone with an
/// exclusive IP stack; what it may send is still what the host-side port guard lets
/// through ([`super::firewall`]).
pub const DEFAULT_CAPS: [u32; 15] = [
    CAP_CHOWN,
    CAP_DAC_OVERRIDE,
    CAP_FSETID,
    CAP_FOWNER,
    CAP_MKNOD,
    CAP_NET_RAW,
    CAP_SETGID,
    CAP_SETUID,
    CAP_SETFCAP,
    CAP_SETPCAP,
    CAP_NET_BIND_SERVICE,
    CAP_NET_ADMIN,
    CAP_SYS_CHROOT,
    CAP_KILL,
    CAP_AUDIT_WRITE,
];

/// [`DEFAULT_CAPS`] as a bit mask (bit n = capability n), as `/proc/<pid>/status` shows
/// `CapEff`.
pub const fn default_caps_mask() -> u64 {
    let mut mask = 0u64;
    let mut i = 0;
    while i < DEFAULT_CAPS.len() {
        mask |= 1 << DEFAULT_CAPS[i];
        i += 1;
    }
    mask
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

// seccomp and classic BPF (linux/seccomp.h, linux/filter.h, linux/audit.h).
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
/// BPF_LD | BPF_W | BPF_ABS (0x00 | 0x00 | 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JGE_K: u16 = 0x05 | 0x30;
const BPF_JSET_K: u16 = 0x05 | 0x40;
const BPF_RET_K: u16 = 0x06;
/// Offsets in `struct seccomp_data`: nr, arch, then instruction_pointer and args[6].
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
/// The low 32 bits of args[0] and args[1] (little-endian).
const DATA_ARG0_LO: u32 = 16;
const DATA_ARG1_LO: u32 = 24;

/// ioctl requests refused: pushing input into a terminal (TIOCSTI) or a virtual
/// console's selection (TIOCLINUX). Without this, a program inside could type commands
/// into the shell of an operator whose terminal `zlogin` lent it.
const DENIED_IOCTLS: [u32; 2] = [0x5412, 0x541c];

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Every namespace flag of clone(2) and unshare(2) but CLONE_NEWTIME, whose bit is
/// part of clone's exit signal.
const CLONE_NS_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;
const CLONE_NEWTIME: u32 = 0x80;

/// personality(2) values a program may set: Linux's (0), its 32-bit flavour, the
/// UNAME26 flag of old software, and 0xffffffff, which only reads the current one.
const PERSONALITIES: [u32; 5] = [0, 0x0008, 0x0002_0000, 0x0002_0008, 0xffff_ffff];

/// System calls refused outright with EPERM.
#[cfg(target_arch = "x86_64")]
const DENIED: &[libc::c_long] = &[libc::SYS_iopl, libc::SYS_ioperm, libc::SYS_lookup_dcookie];
#[cfg(target_arch = "aarch64")]
const DENIED: &[libc::c_long] = &[libc::SYS_lookup_dcookie];

const DENIED_EVERYWHERE: &[libc::c_long] = &[
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_syslog,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_quotactl,
    libc::SYS_setns,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kcmp,
];

/// A seccomp program, ready to install.
pub struct Filter {
    program: Vec<libc::sock_filter>,
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

impl Filter {
    /// The instance filter: see the module documentation.
    pub fn container() -> Filter {
        let eperm = SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let enosys = SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        let mut p = vec![
            stmt(BPF_LD_W_ABS, DATA_ARCH),
            jump(BPF_JEQ_K, AUDIT_ARCH, 1, 0),
            stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
            stmt(BPF_LD_W_ABS, DATA_NR),
        ];
        #[cfg(target_arch = "x86_64")]
        {
            p.push(jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1));
            p.push(stmt(BPF_RET_K, enosys));
        }
        // Each denied number: "equal? return EPERM : skip the return".
        for nr in DENIED_EVERYWHERE.iter().chain(DENIED) {
            p.push(jump(BPF_JEQ_K, *nr as u32, 0, 1));
            p.push(stmt(BPF_RET_K, eperm));
        }
        p.push(jump(BPF_JEQ_K, libc::SYS_clone3 as u32, 0, 1));
        p.push(stmt(BPF_RET_K, enosys));
        // clone and unshare with a namespace flag: the block loads args[0], refuses when
        // a flag is set, and loads the number back for the checks after it.
        for (nr, mask) in [
            (libc::SYS_clone, CLONE_NS_FLAGS),
            (libc::SYS_unshare, CLONE_NS_FLAGS | CLONE_NEWTIME),
        ] {
            p.push(jump(BPF_JEQ_K, nr as u32, 0, 4));
            p.push(stmt(BPF_LD_W_ABS, DATA_ARG0_LO));
            p.push(jump(BPF_JSET_K, mask, 0, 1));
            p.push(stmt(BPF_RET_K, eperm));
            p.push(stmt(BPF_LD_W_ABS, DATA_NR));
        }
        // ioctl with a refused request.
        let pairs = 2 * DENIED_IOCTLS.len() as u8;
        p.push(jump(BPF_JEQ_K, libc::SYS_ioctl as u32, 0, pairs + 2));
        p.push(stmt(BPF_LD_W_ABS, DATA_ARG1_LO));
        for request in DENIED_IOCTLS {
            p.push(jump(BPF_JEQ_K, request, 0, 1));
            p.push(stmt(BPF_RET_K, eperm));
        }
        p.push(stmt(BPF_LD_W_ABS, DATA_NR));
        // personality: one of PERSONALITIES, or EPERM.
        let n = PERSONALITIES.len() as u8;
        p.push(jump(BPF_JEQ_K, libc::SYS_personality as u32, 0, n + 3));
        p.push(stmt(BPF_LD_W_ABS, DATA_ARG0_LO));
        for (j, value) in PERSONALITIES.iter().enumerate() {
            p.push(jump(BPF_JEQ_K, *value, n - j as u8, 0));
        }
        p.push(stmt(BPF_RET_K, eperm));
        p.push(stmt(BPF_LD_W_ABS, DATA_NR));
        p.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
        Filter { program: p }
    }

    pub fn len(&self) -> usize {
        self.program.len()
    }

    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }
}

/// Cuts the calling process down to an instance's rights: the bounding set to
/// [`DEFAULT_CAPS`], the permitted, effective and inheritable sets to it as well, the
/// ambient set cleared, `no_new_privs` set, then `filter` installed. The process must
/// already be in the instance's user namespace with root's ids there.
///
/// Only system calls on memory that exists already: safe between fork and exec.
pub fn confine(filter: &Filter) -> io::Result<()> {
    let mask = default_caps_mask();
    // SAFETY (whole block): prctl(2) and capset(2) with integer arguments and pointers
    // to values that live on this stack frame or in `filter`.
    unsafe {
        for cap in 0..64u32 {
            if mask & (1 << cap) != 0 {
                continue;
            }
            if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) < 0 {
                // EINVAL: past the last capability this kernel knows.
                if io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                    break;
                }
                return Err(io::Error::last_os_error());
            }
        }
        let low = mask as u32;
        let high = (mask >> 32) as u32;
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [
            CapData {
                effective: low,
                permitted: low,
                inheritable: low,
            },
            CapData {
                effective: high,
                permitted: high,
                inheritable: high,
            },
        ];
        if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        install(filter)
    }
}

/// Sets no_new_privs and installs `filter` on the calling thread.
///
/// # Safety
/// Raw system calls only: callable between fork and exec.
unsafe fn install(filter: &Filter) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: filter.program.len() as libc::c_ushort,
        filter: filter.program.as_ptr().cast_mut(),
    };
    // SAFETY: prctl(2) with a program that outlives the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &fprog as *const libc::sock_fprog,
            ) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_set_is_dockers_and_net_admin() {
        // CapEff of a Docker container: 00000000a80425fb; NET_ADMIN is bit 12.
        assert_eq!(default_caps_mask(), 0xa804_25fb | 1 << 12);
        assert_eq!(default_caps_mask(), 0xa804_35fb);
    }

    #[test]
    fn every_jump_of_the_filter_lands_inside_it() {
        let f = Filter::container();
        assert!(f.len() < 255, "{}", f.len());
        for (i, ins) in f.program.iter().enumerate() {
            if ins.code & 0x07 == 0x05 {
                assert!(i + 1 + (ins.jt.max(ins.jf) as usize) < f.len(), "at {i}");
            }
        }
        let last = f.program.last().map(|i| (i.code, i.k));
        assert_eq!(last, Some((BPF_RET_K, SECCOMP_RET_ALLOW)));
    }

    /// Runs `check` in a forked child after `confine`-like installation of the filter
    /// (no_new_privs and the filter only, so it needs no privileges), and returns the
    /// child's exit code.
    fn in_filtered_child(check: fn() -> i32) -> i32 {
        let f = Filter::container();
        // SAFETY: the child makes system calls only and leaves with _exit.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                if install(&f).is_err() {
                    libc::_exit(100);
                }
                libc::_exit(check());
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            assert!(libc::WIFEXITED(status), "{status:#x}");
            libc::WEXITSTATUS(status)
        }
    }

    fn errno() -> i32 {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    #[test]
    fn the_filter_refuses_what_a_container_must_not_do() {
        // mount: EPERM whatever the privileges.
        assert_eq!(
            in_filtered_child(|| unsafe {
                let rc = libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                );
                if rc < 0 { errno() } else { 0 }
            }),
            libc::EPERM
        );
        // unshare with a namespace flag: EPERM; without one it passes.
        assert_eq!(
            in_filtered_child(|| unsafe {
                if libc::unshare(libc::CLONE_NEWUSER) < 0 {
                    errno()
                } else {
                    0
                }
            }),
            libc::EPERM
        );
        assert_eq!(
            in_filtered_child(|| unsafe { libc::unshare(libc::CLONE_FS) }),
            0
        );
        // clone3: ENOSYS, so the C library falls back to clone.
        assert_eq!(
            in_filtered_child(|| unsafe {
                if libc::syscall(libc::SYS_clone3, 0usize, 0usize) < 0 {
                    errno()
                } else {
                    0
                }
            }),
            libc::ENOSYS
        );
        // A plain fork still works, and so does reading the personality.
        assert_eq!(
            in_filtered_child(|| unsafe {
                let pid = libc::fork();
                if pid == 0 {
                    libc::_exit(7);
                }
                let mut status = 0;
                libc::waitpid(pid, &mut status, 0);
                libc::WEXITSTATUS(status)
            }),
            7
        );
        assert_eq!(
            in_filtered_child(|| unsafe {
                if libc::personality(0xffff_ffff) < 0 {
                    errno()
                } else {
                    0
                }
            }),
            0
        );
        assert_eq!(
            in_filtered_child(|| unsafe {
                // ADDR_NO_RANDOMIZE: refused.
                if libc::personality(0x0040000) < 0 {
                    errno()
                } else {
                    0
                }
            }),
            libc::EPERM
        );
        // TIOCSTI is refused before the descriptor is even looked at (EBADF otherwise);
        // other ioctls pass.
        assert_eq!(
            in_filtered_child(|| unsafe {
                if libc::ioctl(-1, libc::TIOCSTI, c"x".as_ptr()) < 0 {
                    errno()
                } else {
                    0
                }
            }),
            libc::EPERM
        );
        assert_eq!(
            in_filtered_child(|| unsafe {
                if libc::ioctl(-1, libc::FIONREAD, std::ptr::null_mut::<libc::c_int>()) < 0 {
                    errno()
                } else {
                    0
                }
            }),
            libc::EBADF
        );
        assert_eq!(
            in_filtered_child(|| unsafe {
                if libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0) < 0 {
                    errno()
                } else {
                    0
                }
            }),
            libc::EPERM
        );
    }
}
