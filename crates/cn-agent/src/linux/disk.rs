//! An instance's disk: the upper and work directories of its overlay root, on a file
//! system of its own whose size is the instance's `quota`, so the kernel refuses (ENOSPC)
//! whatever would go beyond it.
//!
//! With a quota, the disk is an XFS file system in a sparse file, `<zone>/disk.img`,
//! mounted through a loop device on `<zone>/disk` (`mount -o loop`, which frees the loop
//! device again at unmount). It is mounted on the host while the instance runs (and for
//! a moment at create and resize), unmounted when it stops, so a stopped instance holds
//! no loop device and a reboot of the node needs nothing but the next boot. A quota of 0
//! means no limit: `<zone>/disk` is then a plain directory.
//!
//! XFS rather than ext4: both enforce a size, but growing a mounted ext4 needs
//! CAP_SYS_RESOURCE (which a sandboxed root can lack), while `xfs_growfs` needs only
//! CAP_SYS_ADMIN, which the agent needs anyway. Neither file system can shrink while
//! mounted, and XFS cannot shrink at all, so a quota only grows
//! ([`crate::backend::check_quota_change`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::command::run;
use super::safefs;
use crate::error::{Error, Result};

const GIB: u64 = 1024 * 1024 * 1024;
/// How long an unmount waits for the instance's last references to the file system to
/// go (its mount namespace is torn down as its last process exits).
const UNMOUNT_TRIES: u32 = 50;
const UNMOUNT_PAUSE: Duration = Duration::from_millis(20);

/// The disk of the instance whose directory is `zone_dir`.
#[derive(Debug, Clone)]
pub struct Disk {
    zone_dir: PathBuf,
}

impl Disk {
    pub fn new(zone_dir: &Path) -> Disk {
        Disk {
            zone_dir: zone_dir.to_path_buf(),
        }
    }

    /// Where the disk's file system is mounted (or the plain directory without a quota).
    pub fn mount_point(&self) -> PathBuf {
        self.zone_dir.join("disk")
    }

    /// The file holding the file system; absent without a quota.
    pub fn image(&self) -> PathBuf {
        self.zone_dir.join("disk.img")
    }

    /// The overlay's upper layer: the instance's own files.
    pub fn upper(&self) -> PathBuf {
        self.mount_point().join("upper")
    }

    /// The overlay's work directory (on the same file system as the upper layer).
    pub fn work(&self) -> PathBuf {
        self.mount_point().join("work")
    }

    /// Where the instance's snapshots are: on the disk's file system (so they count
    /// toward its size and copy by reflink), beside the overlay's directories and out of
    /// the instance's view.
    pub fn snapshots(&self) -> PathBuf {
        self.mount_point().join("snapshots")
    }

    /// A copy of the tree at `from` as `to` (which must not exist) on this disk: `cp -a
    /// --reflink=auto`, so on XFS with reflink (mkfs.xfs's default since xfsprogs 5.1)
    /// the copy shares every block until one side changes it. A failed copy leaves
    /// nothing behind.
    pub fn copy_tree(&self, from: &Path, to: &Path) -> Result<()> {
        let copied = run(
            "cp",
            &[
                "-a",
                "--reflink=auto",
                "--no-target-directory",
                &path_str(from)?,
                &path_str(to)?,
            ],
        );
        if copied.is_err() {
            remove_tree(to)?;
        }
        copied.map(|_| ())
    }

    pub fn has_image(&self) -> bool {
        self.image().exists()
    }

    /// Makes the disk (`quota_gib` 0: no limit) and leaves it mounted.
    pub fn create(&self, quota_gib: u64) -> Result<()> {
        let mount_point = self.mount_point();
        std::fs::create_dir(&mount_point).map_err(|e| Error::io(&mount_point, e))?;
        if quota_gib > 0 {
            let image = self.image();
            let file = std::fs::File::create_new(&image).map_err(|e| Error::io(&image, e))?;
            file.set_len(quota_gib * GIB)
                .map_err(|e| Error::io(&image, e))?;
            drop(file);
            // -K: no discard of a fresh sparse file.
            run("mkfs.xfs", &["-q", "-K", &path_str(&image)?])?;
            self.mount()?;
        }
        for dir in [self.upper(), self.work()] {
            std::fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(())
    }

    /// Moves the disk of a zone made before disks had quotas (`<zone>/upper` and
    /// `<zone>/work`) to where it is now; it keeps no limit.
    pub fn adopt_legacy(&self) -> Result<()> {
        let (old_upper, mount_point) = (self.zone_dir.join("upper"), self.mount_point());
        if !old_upper.is_dir() || mount_point.exists() {
            return Ok(());
        }
        std::fs::create_dir(&mount_point).map_err(|e| Error::io(&mount_point, e))?;
        for (from, to) in [
            (old_upper, self.upper()),
            (self.zone_dir.join("work"), self.work()),
        ] {
            let moved = match std::fs::rename(&from, &to) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&to),
                other => other,
            };
            moved.map_err(|e| Error::io(&to, e))?;
        }
        tracing::info!(zone = %self.zone_dir.display(), "moved a disk without quota to disk/");
        Ok(())
    }

    pub fn is_mounted(&self) -> bool {
        is_mount_point(&self.mount_point())
    }

    /// Mounts the disk unless it is mounted already (or has no image).
    pub fn mount(&self) -> Result<()> {
        if !self.has_image() || self.is_mounted() {
            return Ok(());
        }
        // discard: space freed inside goes back to the host's file system.
        run(
            "mount",
            &[
                "-t",
                "xfs",
                "-o",
                "loop,discard",
                &path_str(&self.image())?,
                &path_str(&self.mount_point())?,
            ],
        )?;
        Ok(())
    }

    /// Unmounts the disk if it is mounted. The file system may stay busy for a moment
    /// after the instance's last process exited; past that this is an error and the
    /// disk stays mounted (the next boot uses it as it is).
    pub fn unmount(&self) -> Result<()> {
        let mount_point = self.mount_point();
        if !self.has_image() {
            return Ok(());
        }
        let c = cpath(&mount_point)?;
        let mut tries = 0;
        while self.is_mounted() {
            // SAFETY: umount2(2) on a NUL-terminated path.
            if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
                continue;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EBUSY) || tries >= UNMOUNT_TRIES {
                return Err(Error::io(&mount_point, e));
            }
            tries += 1;
            std::thread::sleep(UNMOUNT_PAUSE);
        }
        Ok(())
    }

    /// Unmounts for good (destroy): a file system still busy is detached, and its loop
    /// device goes when the last user lets go of it.
    pub fn release(&self) {
        let device = self.loop_device();
        if let Err(e) = self.unmount() {
            tracing::warn!(error = %e.chain(), "disk busy; detaching it");
            if let Ok(c) = cpath(&self.mount_point()) {
                // SAFETY: umount2(2) on a NUL-terminated path.
                unsafe {
                    libc::umount2(c.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
        // The kernel lets go of an autoclear loop device after the unmount returns (a
        // deferred rundown); wait a bounded while so a destroyed instance leaves none.
        if let Some(name) = device.as_deref().and_then(|d| d.strip_prefix("/dev/")) {
            let backing = Path::new("/sys/block").join(name).join("loop/backing_file");
            let image = self.image();
            for _ in 0..UNMOUNT_TRIES * 5 {
                let held = std::fs::read_to_string(&backing)
                    .is_ok_and(|b| Path::new(b.trim().trim_end_matches(" (deleted)")) == image);
                if !held {
                    return;
                }
                std::thread::sleep(UNMOUNT_PAUSE);
            }
            tracing::warn!(device = name, "loop device still held after the unmount");
        }
    }

    /// Bytes in use: from the mounted file system, else what the image file holds.
    pub fn used_bytes(&self) -> u64 {
        if self.is_mounted()
            && let Some((size, free)) = statvfs(&self.mount_point())
        {
            return size.saturating_sub(free);
        }
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.image())
            .map(|m| m.blocks() * 512)
            .unwrap_or(0)
    }

    /// Grows the file system to `quota_gib` (checked by the caller: larger than now).
    /// Online when mounted; otherwise it is mounted for the resize and unmounted after.
    pub fn grow(&self, quota_gib: u64) -> Result<()> {
        let image = self.image();
        if !self.has_image() {
            return Err(Error::invalid(
                "quota",
                "this instance's disk was made without a size limit and cannot get one",
            ));
        }
        let was_mounted = self.is_mounted();
        self.mount()?;
        let result = (|| {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&image)
                .map_err(|e| Error::io(&image, e))?;
            file.set_len(quota_gib * GIB)
                .map_err(|e| Error::io(&image, e))?;
            let device = self.loop_device().ok_or_else(|| Error::Command {
                command: "resize of the disk".into(),
                output: format!("no loop device holds {}", image.display()),
            })?;
            run("losetup", &["--set-capacity", &device])?;
            run("xfs_growfs", &["-d", &path_str(&self.mount_point())?])?;
            Ok(())
        })();
        if !was_mounted {
            self.unmount()?;
        }
        result
    }

    /// The loop device the mounted disk is on (`/dev/loopN`).
    fn loop_device(&self) -> Option<String> {
        let mount_point = self.mount_point();
        let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        text.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = unescape(fields.get(4)?);
            if Path::new(&point) != mount_point {
                return None;
            }
            let dash = fields.iter().position(|f| *f == "-")?;
            Some(fields.get(dash + 2)?.to_string())
        })
    }
}

/// Removes a tree on the disk if it is there (a snapshot, a staged rollback): `path`
/// itself is the agent's, what is below it is the tenant's, so nothing below is
/// followed through a symlink or removed across a mount point ([`safefs`]).
pub fn remove_tree(path: &Path) -> Result<()> {
    safefs::remove_host_tree(path)
}

/// Total and available bytes of the file system holding `path`.
pub fn statvfs(path: &Path) -> Option<(u64, u64)> {
    let c = cpath(path).ok()?;
    // SAFETY: statvfs(2) fills the zeroed struct we own from a NUL-terminated path.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        let unit = st.f_frsize as u64;
        Some((st.f_blocks as u64 * unit, st.f_bavail as u64 * unit))
    }
}

/// Whether `path` is a mount point in this process's mount namespace.
fn is_mount_point(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|text| {
            text.lines()
                .filter_map(|l| l.split(' ').nth(4))
                .any(|p| Path::new(&unescape(p)) == path)
        })
        .unwrap_or(false)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub(super) fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let (b'\\', Some(digits)) = (bytes[i], octal) {
            let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
            if let Ok(v) = u8::try_from(value) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn path_str(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| Error::invalid("state_dir", format!("{} is not UTF-8", path.display())))
}

fn cpath(path: &Path) -> Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(&path.display().to_string(), "contains a NUL byte"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_unescape() {
        assert_eq!(unescape(r"/var/lib/a\040b"), "/var/lib/a b");
        assert_eq!(unescape(r"/x\134y"), r"/x\y");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/odd\04"), r"/odd\04");
    }
}
