//! What cn-agent's linux tests share: the test's host (dc-testkit's `LinuxHost`, which
//! each test extends with methods of its own) and commands run inside its instances, with
//! `zlogin` as an operator would or with `nsenter` from the host.

// Each test uses its part of this module.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

use cn_agent::linux::LinuxBackend;
use cn_agent::{InstanceSpec, ZoneBackend};
use dc_testkit::linux::{LinuxHost, NODE_PAGE};
use uuid::Uuid;

/// The test's linux host; removes what it made on drop, also when the test fails.
pub struct Host(pub LinuxHost);

impl std::ops::Deref for Host {
    type Target = LinuxHost;
    fn deref(&self) -> &LinuxHost {
        &self.0
    }
}

impl Host {
    /// A host with one `admin` bridge ([`LinuxHost::admin`]).
    pub fn admin(who: &str, stem: char, applets: &[&str]) -> Host {
        Host(LinuxHost::admin(who, stem, applets))
    }

    /// A `linux` backend on this host with the host's image present.
    pub async fn backend_with_image(&self) -> LinuxBackend {
        let b = self.backend();
        b.image_ensure_present(self.image.clone())
            .await
            .expect("the image is present");
        b
    }

    /// A `linux` backend on this host with the host's image present and the instance
    /// `spec` created on it, and the instance's uuid.
    pub async fn backend_with(&self, spec: InstanceSpec) -> (LinuxBackend, Uuid) {
        let b = self.backend_with_image().await;
        let uuid = spec.uuid;
        b.create(spec).await.expect("create");
        (b, uuid)
    }

    /// `zlogin UUID argv...` as an operator runs it on the node, not started yet: the
    /// command runs as the instance's root, with its namespaces, capabilities and seccomp
    /// filter.
    pub fn zlogin_command(&self, uuid: Uuid, argv: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_zlogin"));
        command
            .env_remove("CN_AGENT_CONFIG")
            .env("CN_AGENT_LINUX__CGROUP_PARENT", &self.config.cgroup_parent)
            .arg("--state-dir")
            .arg(&self.config.state_dir)
            .arg(uuid.to_string())
            .args(argv);
        command
    }

    /// `zlogin UUID argv...`, run to its end.
    pub fn zlogin(&self, uuid: Uuid, argv: &[&str]) -> Output {
        self.zlogin_command(uuid, argv).output().unwrap()
    }

    /// The standard output of a command that must work inside.
    pub fn inside(&self, uuid: Uuid, argv: &[&str]) -> String {
        let out = self.zlogin(uuid, argv);
        assert!(out.status.success(), "zlogin {argv:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What a command that must fail inside says (its standard error).
    pub fn refused(&self, uuid: Uuid, argv: &[&str]) -> String {
        let out = self.zlogin(uuid, argv);
        assert!(!out.status.success(), "zlogin {argv:?} worked: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Whether a command inside exits 0.
    pub fn works_inside(&self, uuid: Uuid, argv: &[&str]) -> bool {
        self.zlogin(uuid, argv).status.success()
    }
}

/// Runs `argv` inside the instance whose pid 1 has host pid `pid`: in its mount, PID,
/// UTS, IPC and network namespaces. Entering the mount namespace makes its root the
/// process's root, so the program and every path are the instance's (every symlink
/// resolves as the instance sees it).
pub fn in_instance(pid: u32, argv: &[&str]) -> Output {
    let target = pid.to_string();
    let mut args = vec![
        "--target", &target, "--mount", "--pid", "--uts", "--ipc", "--net", "--",
    ];
    args.extend_from_slice(argv);
    Command::new("nsenter").args(&args).output().unwrap()
}

/// `cat path` inside the instance whose pid 1 has host pid `pid`, which must work.
pub fn cat_inside(pid: u32, path: &str) -> String {
    let out = in_instance(pid, &["/bin/cat", path]);
    assert!(out.status.success(), "cat {path} inside: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `to` answers `GET /` over HTTP with the test image's page ([`NODE_PAGE`]),
/// connecting for up to `connect` and reading for up to 5 s.
pub fn serves_page(to: SocketAddr, connect: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&to, connect) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains(NODE_PAGE.trim())
}

/// Sets the receive timeout (`SO_RCVTIMEO`) of socket `sock`.
///
/// # Safety
///
/// `sock` must be an open socket. It only calls setsockopt(2) on memory of its own, so a
/// forked child may call it.
pub unsafe fn set_recv_timeout(sock: libc::c_int, timeout: libc::timeval) {
    // SAFETY: the caller's socket, and a timeval that lives across the call.
    unsafe {
        libc::setsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
}
