//! `coal up --pxe-cns N`: compute nodes that boot from the network. After the services
//! (the booter's `dhcpd` among them) are up, CoaL puts the newest platform image of
//! `$COAL_DIR/platforms/` into the booter's `os/`, makes it CNAPI's default platform and
//! starts N QEMU guests whose first NIC is a tap on the admin bridge (it PXE-boots: the
//! booter's DHCP, iPXE, the platform's kernel and initramfs, cn-agent) and whose second
//! is a tap on the external bridge (instances' external NICs). It waits until each
//! registers in CNAPI (unsetup: network-booted nodes wait for `sdcadm server setup`) and
//! prints the time from power-on to its first heartbeat.
//!
//! Guest i: admin MAC `52:54:00:c0:0a:<i>`, external MAC `52:54:00:c0:0e:<i>`, taps
//! `coalpxe<i>a` and `coalpxe<i>e`, its serial console in `logs/pxe-cn<i>.log`, its pid
//! in `run/pxe-cn<i>.pid`, its SMBIOS UUID (the server's UUID) fixed per CoaL and node,
//! and a sparse 64 GiB disk `data/pxe-cn<i>.qcow2` (`/dev/vda`, which the platform's init
//! formats and mounts as cn-agent's state: `triton.disk` in CNAPI's default boot
//! parameters), so the node keeps its instances across reboots and has room for their
//! disks.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use triton_proto::cnapi::v1 as cnapi;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;

use super::{Coal, process, seed};
use crate::error::Error;

/// Most network-booted guests.
pub const MAX_PXE_CNS: u32 = 8;
/// How long one guest may take from power-on to registering (QEMU without KVM is slow).
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// The guests' memory, MiB: cn-agent, the instances' disks in tmpfs and the instances.
const GUEST_RAM_MIB: u32 = 2048;
/// The guests' disk (sparse).
const GUEST_DISK: &str = "64G";

/// One network-booted guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PxeCn {
    pub index: u32,
    pub name: String,
    pub admin_mac: String,
    pub external_mac: String,
    pub admin_tap: String,
    pub external_tap: String,
}

/// Guest `i` (1-based).
pub fn node(i: u32) -> PxeCn {
    PxeCn {
        index: i,
        name: format!("pxe-cn{i}"),
        admin_mac: format!("52:54:00:c0:0a:{i:02x}"),
        external_mac: format!("52:54:00:c0:0e:{i:02x}"),
        admin_tap: format!("coalpxe{i}a"),
        external_tap: format!("coalpxe{i}e"),
    }
}

/// A UUID for guest `i` of the CoaL in `dir`, the same at every `up` (so CNAPI keeps
/// one record per guest): a v4-shaped UUID from a hash of both.
pub fn guest_uuid(dir: &Path, i: u32) -> uuid::Uuid {
    use std::hash::{Hash, Hasher};
    let mut bytes = [0u8; 16];
    for (half, salt) in [(0usize, "a"), (8, "b")] {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (dir, i, salt, "triton-coal-pxe").hash(&mut h);
        bytes[half..half + 8].copy_from_slice(&h.finish().to_be_bytes());
    }
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// The newest platform in `dir` (a directory holding `vmlinuz` and `initrd`).
pub fn newest_platform(dir: &Path) -> Option<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.path().join("vmlinuz").is_file() && e.path().join("initrd").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    found.sort();
    found.pop()
}

fn run(program: &str, args: &[&str]) -> Result<(), Error> {
    crate::error::output(
        std::process::Command::new(program).args(args),
        &format!("{program} {}", args.join(" ")),
    )
    .map(drop)
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// A tap `name` as a port of `bridge`, up.
fn tap(name: &str, bridge: &str) -> Result<(), Error> {
    if !link_exists(name) {
        run("ip", &["tuntap", "add", "dev", name, "mode", "tap"])?;
    }
    run("ip", &["link", "set", name, "master", bridge])?;
    run("ip", &["link", "set", name, "up"])
}

/// How QEMU runs guests: `COAL_PXE_ACCEL` (`tcg` or `kvm`), TCG by default. KVM is not
/// the default although /dev/kvm may exist: on the nested hosts CoaL is tried on, a KVM
/// guest stops right after the kernel's decompression.
fn accel() -> String {
    std::env::var("COAL_PXE_ACCEL")
        .ok()
        .filter(|a| a == "kvm" || a == "tcg")
        .unwrap_or_else(|| "tcg".into())
}

impl Coal {
    fn bridge_of(&self, nic_tag: &str) -> Result<String, Error> {
        self.deployment
            .coal
            .bridges
            .iter()
            .find(|b| b.nic_tag == nic_tag)
            .map(|b| b.name.clone())
            .ok_or_else(|| {
                Error::Check(format!(
                    "--pxe-cns: no bridge with nic tag {nic_tag} in [coal] bridges"
                ))
            })
    }

    fn platforms_dir(&self) -> PathBuf {
        self.dir.join("platforms")
    }

    /// Boots the network-booted guests `--pxe-cns` asks for and waits until each has
    /// registered in CNAPI.
    pub async fn pxe_up(&self) -> Result<(), Error> {
        let n = self.state.pxe_cns;
        if n == 0 {
            return Ok(());
        }
        let p = &self.progress;
        if n > MAX_PXE_CNS {
            return Err(Error::Usage(format!(
                "--pxe-cns {n}: at most {MAX_PXE_CNS}"
            )));
        }
        if self.deployment.service("dhcpd").is_none() || !self.is_up("dhcpd") {
            return Err(Error::Check(
                "--pxe-cns: the booter (service dhcpd of deploy/services.toml) is not running"
                    .into(),
            ));
        }
        let qemu = process::which("qemu-system-x86_64").ok_or_else(|| {
            Error::Check(
                "--pxe-cns: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86 ipxe-qemu)"
                    .into(),
            )
        })?;
        let platform = newest_platform(&self.platforms_dir()).ok_or_else(|| {
            Error::Check(format!(
                "--pxe-cns: no platform image in {} (scripts/coal up --pxe-cns N builds one: images/platform/build.sh)",
                self.platforms_dir().display()
            ))
        })?;
        // Into the booter's os/, where it serves it from.
        let os = self.ctx.data_dir("dhcpd").join("os").join(&platform);
        if !os.join("initrd").is_file() {
            std::fs::create_dir_all(&os).map_err(|e| Error::io("create", &os, e))?;
            for f in ["vmlinuz", "initrd"] {
                let from = self.platforms_dir().join(&platform).join(f);
                std::fs::copy(&from, os.join(f)).map_err(|e| Error::io("copy", &from, e))?;
            }
        }
        let cnapi_addr = self
            .addr_of("cnapi", "grpc")
            .ok_or_else(|| Error::Check("--pxe-cns: no cnapi in deploy/services.toml".into()))?;
        let mut c = CnapiClient::new(seed::channel(&cnapi_addr).await?);
        c.set_boot_params(cnapi::SetBootParamsRequest {
            server_uuid: "default".into(),
            platform: platform.clone(),
            kernel_args: [("console", "ttyS0"), ("triton.disk", "/dev/vda")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            kernel_flags: vec![],
            replace: false,
        })
        .await
        .map_err(Error::api("cnapi SetBootParams default"))?;
        p.step(format!(
            "pxe: platform {platform} in {} and CNAPI's default",
            os.display()
        ));

        let admin = self.bridge_of("admin")?;
        let external = self.bridge_of("external")?;
        let accel = accel();
        let mut booting: Vec<(PxeCn, Instant)> = Vec::new();
        for i in 1..=n {
            let cn = node(i);
            let pid_path = self.pid_path(&cn.name);
            if process::read_pid(&pid_path).is_some_and(|pid| pid.alive()) {
                p.step(format!("{}: running", cn.name));
                continue;
            }
            tap(&cn.admin_tap, &admin)?;
            tap(&cn.external_tap, &external)?;
            let log = self.log_path(&cn.name);
            let qemu_pid = self.sub("run").join(format!("{}.qemu-pid", cn.name));
            let _ = std::fs::remove_file(&qemu_pid);
            let uuid = guest_uuid(&self.dir, i).to_string();
            let disk = self.sub("data").join(format!("{}.qcow2", cn.name));
            if !disk.exists() {
                let disk_path = disk.display().to_string();
                run(
                    "qemu-img",
                    &["create", "-q", "-f", "qcow2", &disk_path, GUEST_DISK],
                )?;
            }
            let args: Vec<String> = vec![
                "-name".into(),
                cn.name.clone(),
                "-accel".into(),
                accel.clone(),
                "-m".into(),
                GUEST_RAM_MIB.to_string(),
                "-smp".into(),
                "2".into(),
                "-uuid".into(),
                uuid.clone(),
                "-display".into(),
                "none".into(),
                "-monitor".into(),
                "none".into(),
                "-serial".into(),
                format!("file:{}", log.display()),
                "-boot".into(),
                "n".into(),
                "-drive".into(),
                format!("file={},if=virtio,format=qcow2", disk.display()),
                "-netdev".into(),
                format!(
                    "tap,id=admin,ifname={},script=no,downscript=no",
                    cn.admin_tap
                ),
                "-device".into(),
                format!("virtio-net-pci,netdev=admin,mac={}", cn.admin_mac),
                "-netdev".into(),
                format!(
                    "tap,id=external,ifname={},script=no,downscript=no",
                    cn.external_tap
                ),
                // No boot ROM on the external NIC: only the admin NIC PXE-boots.
                "-device".into(),
                format!(
                    "virtio-net-pci,netdev=external,mac={},romfile=",
                    cn.external_mac
                ),
                "-daemonize".into(),
                "-pidfile".into(),
                qemu_pid.display().to_string(),
            ];
            let powered_on = Instant::now();
            let out = std::process::Command::new(&qemu)
                .args(&args)
                .output()
                .map_err(|e| Error::io("run", &qemu, e))?;
            if !out.status.success() {
                return Err(Error::Service {
                    service: cn.name.clone(),
                    message: format!(
                        "qemu-system-x86_64 failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                    log: Some(log),
                });
            }
            let pid = std::fs::read_to_string(&qemu_pid)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .and_then(process::Pid::of)
                .ok_or_else(|| Error::Service {
                    service: cn.name.clone(),
                    message: "QEMU started but left no pid".into(),
                    log: Some(log.clone()),
                })?;
            process::write_pid(&pid_path, pid)?;
            p.step(format!(
                "{}: powered on (QEMU {accel}, pid {}, admin MAC {}, uuid {uuid}, console {})",
                cn.name,
                pid.pid,
                cn.admin_mac,
                log.display()
            ));
            booting.push((cn, powered_on));
        }
        for (cn, powered_on) in booting {
            self.wait_registered(&mut c, &cn, powered_on).await?;
        }
        Ok(())
    }

    /// Waits until the guest's admin MAC belongs to a server CNAPI has heard from.
    async fn wait_registered(
        &self,
        c: &mut CnapiClient<tonic::transport::Channel>,
        cn: &PxeCn,
        powered_on: Instant,
    ) -> Result<(), Error> {
        let log = self.log_path(&cn.name);
        let mut last_note = String::new();
        let mut last_print = Instant::now();
        loop {
            let params = c
                .get_boot_params(cnapi::GetBootParamsRequest {
                    mac: cn.admin_mac.clone(),
                })
                .await
                .map_err(Error::api("cnapi GetBootParams"))?
                .into_inner();
            if !params.server_uuid.is_empty() {
                let server = c
                    .get_server(cnapi::GetServerRequest {
                        uuid: params.server_uuid.clone(),
                    })
                    .await
                    .map_err(Error::api("cnapi GetServer"))?
                    .into_inner();
                if !server.last_heartbeat.is_empty() {
                    self.progress.step(format!(
                        "{}: registered as {} ({}, setup {}) {:.1}s after power-on",
                        cn.name,
                        server.uuid,
                        server.status,
                        server.setup,
                        powered_on.elapsed().as_secs_f64()
                    ));
                    return Ok(());
                }
            }
            if powered_on.elapsed() > BOOT_TIMEOUT {
                return Err(Error::Service {
                    service: cn.name.clone(),
                    message: format!(
                        "not registered in CNAPI within {}s; its console:\n{}",
                        BOOT_TIMEOUT.as_secs(),
                        process::tail(&log, 15)
                    ),
                    log: Some(log),
                });
            }
            // Progress: the console's last line of the platform's init, or the firmware.
            let note = console_note(&log);
            if note != last_note || last_print.elapsed() > Duration::from_secs(15) {
                self.progress.step(format!(
                    "{}: booting ({}s): {note}",
                    cn.name,
                    powered_on.elapsed().as_secs()
                ));
                last_note = note;
                last_print = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Stops the guests and removes their taps.
    pub fn pxe_down(&self) {
        let p = &self.progress;
        for i in 1..=MAX_PXE_CNS {
            let cn = node(i);
            let pid_path = self.pid_path(&cn.name);
            if let Some(pid) = process::read_pid(&pid_path) {
                if pid.alive() {
                    p.step(format!("{}: powering off (pid {})", cn.name, pid.pid));
                    process::stop(pid, libc::SIGTERM);
                }
                let _ = std::fs::remove_file(&pid_path);
            }
            for t in [&cn.admin_tap, &cn.external_tap] {
                if link_exists(t) {
                    p.step(format!("removing tap {t}"));
                    if let Err(e) = run("ip", &["link", "del", t]) {
                        p.step(format!("WARNING: {}", crate::error::chain(&e)));
                    }
                }
            }
        }
    }
}

/// What a guest's console last said: the init's last `triton-init:` line, else whether
/// the firmware or the kernel is at work.
fn console_note(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    if let Some(line) = text.lines().rev().find(|l| l.contains("triton-init: ")) {
        return line.trim().to_string();
    }
    if text.contains("Linux version") {
        "the kernel is starting".into()
    } else if text.contains("iPXE") {
        "iPXE (DHCP, then the boot script)".into()
    } else {
        "firmware".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_have_distinct_fixed_identities() {
        let a = node(1);
        let b = node(2);
        assert_ne!(a.admin_mac, b.admin_mac);
        assert_eq!(a.admin_mac, "52:54:00:c0:0a:01");
        assert!(a.admin_tap.len() <= 15 && a.external_tap.len() <= 15);
        let dir = Path::new("/var/tmp/triton-coal");
        assert_eq!(guest_uuid(dir, 1), guest_uuid(dir, 1));
        assert_ne!(guest_uuid(dir, 1), guest_uuid(dir, 2));
    }

    #[test]
    fn the_newest_platform_is_the_last_stamp() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(newest_platform(dir.path()), None);
        for p in ["20261201T0900Z", "20261206T0900Z", "20261209T0900Z"] {
            std::fs::create_dir(dir.path().join(p)).unwrap();
            std::fs::write(dir.path().join(p).join("vmlinuz"), b"x").unwrap();
            if p != "20261209T0900Z" {
                std::fs::write(dir.path().join(p).join("initrd"), b"x").unwrap();
            }
        }
        assert_eq!(
            newest_platform(dir.path()).as_deref(),
            Some("20261206T0900Z")
        );
    }
}
