//! The uid/gid range of an instance and what makes it its own.
//!
//! Each instance's root is an unprivileged id on the host: the instance's user namespace
//! maps ids 0..65536 inside to `base..base + 65536` on the host, `base = 1_000_000 +
//! slot * 65536`. The slot is the lowest one no zone record holds, picked under the
//! backend's lock at create, recorded in `zone.json` and free again once the record is
//! gone (destroy). Two instances never share a range, so neither do two accounts.
//!
//! * [`make_userns`]: a user namespace with the instance's map, made by a short-lived
//!   child that only unshares it (the agent writes its maps and keeps a handle to it).
//!   pid 1 of the instance joins it ([`super::launch`]), `zlogin` joins it through the
//!   instance's pid 1.
//! * [`idmapped_tree`]: the image's root, shared by every instance of the image, seen
//!   through an idmapped mount (on-disk id `n` shows as `base + n`), so the image's root
//!   files belong to the instance's root and the image is never copied or chowned. It
//!   is the overlay's lower layer.
//! * The upper layer (the instance's disk) holds its ids as they are on the host:
//!   `base + n`. [`shift_tree`] moves the files of an instance made before it had a
//!   range, once.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use serde::{Deserialize, Serialize};

use super::held::HeldChild;
use super::safefs::{dot_if_empty, open_host_dir};
use crate::error::{Error, Result};

/// The first host id handed to instances (above any id a distribution gives its users).
pub const FIRST_BASE: u32 = 1_000_000;
/// Ids per instance: a whole 16-bit range, as every distribution expects.
pub const RANGE_SIZE: u32 = 65536;
/// Slots below 2^31, which some tools take as the largest id.
pub const MAX_SLOTS: u32 = (i32::MAX as u32 - FIRST_BASE) / RANGE_SIZE;

// linux/mount.h, not in the libc crate for glibc targets.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// An instance's ids on the host: `base..base + size` are its 0..size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub base: u32,
    pub size: u32,
}

impl IdRange {
    pub fn of_slot(slot: u32) -> IdRange {
        IdRange {
            base: FIRST_BASE + slot * RANGE_SIZE,
            size: RANGE_SIZE,
        }
    }

    /// The slot this range is, if it is one of ours.
    pub fn slot(&self) -> Option<u32> {
        let offset = self.base.checked_sub(FIRST_BASE)?;
        (offset % RANGE_SIZE == 0 && self.size == RANGE_SIZE).then_some(offset / RANGE_SIZE)
    }

    /// The `uid_map`/`gid_map` line.
    pub fn map_line(&self) -> String {
        format!("0 {} {}\n", self.base, self.size)
    }
}

/// The lowest slot not in `used`.
pub fn free_slot(used: &[IdRange]) -> Result<IdRange> {
    let mut taken: Vec<u32> = used.iter().filter_map(IdRange::slot).collect();
    taken.sort_unstable();
    taken.dedup();
    let mut slot = 0;
    for t in taken {
        if t != slot {
            break;
        }
        slot += 1;
    }
    if slot >= MAX_SLOTS {
        return Err(Error::invalid(
            "uid range",
            format!("all {MAX_SLOTS} ranges of this node are in use"),
        ));
    }
    Ok(IdRange::of_slot(slot))
}

/// A new user namespace that maps 0..size to `range` (uids and gids), as a handle.
///
/// A forked child unshares it and waits; the agent writes its maps (which takes
/// CAP_SETUID in the parent namespace: the child cannot), opens the namespace and kills
/// the child. The handle keeps the namespace alive.
pub fn make_userns(range: IdRange) -> Result<OwnedFd> {
    let map = range.map_line();
    // SAFETY: the child makes one system call.
    let child = unsafe {
        HeldChild::spawn(|| {
            let unshared = libc::unshare(libc::CLONE_NEWUSER) == 0;
            [u8::from(unshared)]
        })
    }
    .map_err(|(step, e)| Error::io(step, e))?;
    if child.answer() != Some([1]) {
        return Err(Error::invalid(
            "user namespace",
            "the kernel refused to make one (unshare(CLONE_NEWUSER))",
        ));
    }
    let pid = child.pid();
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, &map).map_err(|e| Error::io(Path::new(&path), e))?;
    }
    let path = format!("/proc/{pid}/ns/user");
    std::fs::File::open(&path)
        .map(OwnedFd::from)
        .map_err(|e| Error::io(Path::new(&path), e))
}

/// A detached copy of the mount tree at `dir`, idmapped through `userns` (on-disk id `n`
/// shows as what `userns` maps `n` to). It is attached nowhere yet: the instance's pid 1
/// moves it into its own mount namespace (`move_mount`), so the host never sees it.
pub fn idmapped_tree(dir: &Path, userns: &OwnedFd) -> Result<OwnedFd> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(&dir.display().to_string(), "contains a NUL byte"))?;
    // SAFETY: open_tree(2) on a NUL-terminated path; the result is a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Error::io(dir, std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr(2) on our fd with a struct of the size we pass.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::invalid(
            &dir.display().to_string(),
            format!("cannot be idmapped (mount_setattr MOUNT_ATTR_IDMAP): {e}"),
        ));
    }
    Ok(tree)
}

/// Gives every file under `root` that still has a host id below `range.size` (made
/// before the instance had a range) the id `range.base + id`; files with other ids are
/// left alone, so a walk cut short can run again. Never follows a symlink (links are
/// chowned themselves) and never leaves `root`'s file system. setuid and setgid bits,
/// which a chown clears, are put back.
pub fn shift_tree(root: &Path, range: IdRange) -> Result<()> {
    let dir = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(root, e.into()))?;
    let stat = rustix::fs::fstat(&dir).map_err(|e| Error::io(root, e.into()))?;
    shift_one(&dir, c".", &stat, range).map_err(|e| Error::io(root, e.into()))?;
    shift_dir(dir, stat.st_dev, range, root)
}

fn shifted(id: u32, range: IdRange) -> Option<u32> {
    (id < range.size).then(|| range.base + id)
}

fn shift_one(
    dir: &impl AsFd,
    name: &std::ffi::CStr,
    stat: &rustix::fs::Stat,
    range: IdRange,
) -> rustix::io::Result<()> {
    let (uid, gid) = (shifted(stat.st_uid, range), shifted(stat.st_gid, range));
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    rustix::fs::chownat(
        dir,
        name,
        uid.map(rustix::fs::Uid::from_raw),
        gid.map(rustix::fs::Gid::from_raw),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    let mode = stat.st_mode & 0o7777;
    let is_file = FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile;
    if is_file && mode & 0o6000 != 0 {
        rustix::fs::chmodat(dir, name, Mode::from_raw_mode(mode), AtFlags::empty())?;
    }
    Ok(())
}

fn shift_dir(dir: OwnedFd, dev: u64, range: IdRange, shown: &Path) -> Result<()> {
    let io = |e: rustix::io::Errno| Error::io(shown, e.into());
    let mut entries = rustix::fs::Dir::read_from(&dir).map_err(io)?;
    let mut subdirs: Vec<CString> = Vec::new();
    for entry in entries.by_ref() {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let stat = match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(s) => s,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(io(e)),
        };
        shift_one(&dir, name, &stat, range).map_err(io)?;
        if FileType::from_raw_mode(stat.st_mode) == FileType::Directory && stat.st_dev == dev {
            subdirs.push(name.to_owned());
        }
    }
    drop(entries);
    for name in subdirs {
        let child = rustix::fs::openat(
            &dir,
            &name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io)?;
        let path = shown.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
        shift_dir(child, dev, range, &path)?;
    }
    Ok(())
}

/// Sets the owner of each of `paths` (relative to `root`, which is trusted) that a
/// host-root process just wrote to the instance's root (`range.base`), without following
/// a symlink at any step. A path that does not exist is skipped.
pub fn own_paths(root: &Path, paths: &[&str], range: IdRange) -> Result<()> {
    for rel in paths {
        let full = root.join(rel);
        let Some(parent) = full.parent() else {
            continue;
        };
        let Some(name) = full.file_name() else {
            continue;
        };
        let how = rustix::fs::ResolveFlags::NO_SYMLINKS | rustix::fs::ResolveFlags::NO_XDEV;
        let rel_parent = dot_if_empty(parent.strip_prefix(root).unwrap_or(Path::new("")));
        let top = open_host_dir(root).map_err(|e| Error::io(root, e.into()))?;
        let dir = match rustix::fs::openat2(
            &top,
            rel_parent,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            how,
        ) {
            Ok(d) => d,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(Error::io(&full, e.into())),
        };
        let stat = match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(s) => s,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(Error::io(&full, e.into())),
        };
        // Only what the agent made (host root's); a tenant's own files stay theirs.
        if stat.st_uid == 0 {
            rustix::fs::chownat(
                &dir,
                name,
                Some(rustix::fs::Uid::from_raw(range.base)),
                Some(rustix::fs::Gid::from_raw(range.base)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| Error::io(&full, e.into()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_lowest_free_ones() {
        assert_eq!(free_slot(&[]).unwrap(), IdRange::of_slot(0));
        assert_eq!(IdRange::of_slot(0).base, 1_000_000);
        assert_eq!(IdRange::of_slot(2).base, 1_000_000 + 2 * 65536);
        let used = [
            IdRange::of_slot(0),
            IdRange::of_slot(1),
            IdRange::of_slot(3),
        ];
        assert_eq!(free_slot(&used).unwrap(), IdRange::of_slot(2));
        let used = [IdRange::of_slot(1)];
        assert_eq!(free_slot(&used).unwrap(), IdRange::of_slot(0));
        assert_eq!(IdRange::of_slot(7).slot(), Some(7));
        assert_eq!(
            IdRange {
                base: 5,
                size: 65536
            }
            .slot(),
            None
        );
        assert_eq!(IdRange::of_slot(1).map_line(), "0 1065536 65536\n");
        // The last slot ends below 2^31.
        let last = IdRange::of_slot(MAX_SLOTS - 1);
        assert!(u64::from(last.base) + u64::from(last.size) <= i32::MAX as u64);
        let full: Vec<IdRange> = (0..MAX_SLOTS).map(IdRange::of_slot).collect();
        let err = free_slot(&full).unwrap_err();
        assert!(err.chain().contains("uid range"), "{}", err.chain());
    }
}
