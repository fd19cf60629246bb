//! The exported tree: file handles, their resolution to paths under the root, and the
//! operations, all done relative to the root's descriptor with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)`, so no symlink a client made and no `..` ever
//! leads outside the root.
//!
//! File handles are `"TRN1" | inode (8 bytes) | birth time in ns (8 bytes)`. A handle
//! names an inode, not a path, so it survives renames and restarts of the server: the
//! server keeps a map from inode to (parent inode, name), filled by every lookup, create,
//! readdir and rename; a handle whose inode is not in the map (after a restart, or a
//! forged one) makes the server walk the whole tree once to fill it, and is STALE if
//! still unknown. The birth time (statx `btime`, 0 where the filesystem has none) tells a
//! reused inode number from the file the handle was made for.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Statx, StatxFlags};
use rustix::io::Errno;

use crate::proto::Nfsstat;

const HANDLE_MAGIC: &[u8; 4] = b"TRN1";
/// The length of every handle this server makes.
pub const HANDLE_LEN: usize = 20;
/// The longest name a directory entry may have.
pub const NAME_MAX: usize = 255;
/// At most this many entries are walked to find an unknown handle.
const SCAN_LIMIT: usize = 10_000_000;

/// A file handle, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handle {
    /// the inode number
    pub ino: u64,
    /// the inode's birth time in ns, or 0
    pub birth: u64,
}

impl Handle {
    /// The handle's bytes on the wire.
    pub fn encode(&self) -> [u8; HANDLE_LEN] {
        let mut out = [0u8; HANDLE_LEN];
        out[..4].copy_from_slice(HANDLE_MAGIC);
        out[4..12].copy_from_slice(&self.ino.to_be_bytes());
        out[12..20].copy_from_slice(&self.birth.to_be_bytes());
        out
    }

    /// Decodes a handle a client sent: anything not made by this server is BADHANDLE.
    pub fn decode(b: &[u8]) -> Result<Self, Nfsstat> {
        if b.len() != HANDLE_LEN || &b[..4] != HANDLE_MAGIC {
            return Err(Nfsstat::BadHandle);
        }
        let mut ino = [0u8; 8];
        ino.copy_from_slice(&b[4..12]);
        let mut birth = [0u8; 8];
        birth.copy_from_slice(&b[12..20]);
        Ok(Self {
            ino: u64::from_be_bytes(ino),
            birth: u64::from_be_bytes(birth),
        })
    }

    fn of(st: &Statx) -> Self {
        Self {
            ino: st.stx_ino,
            birth: birth(st),
        }
    }
}

fn birth(st: &Statx) -> u64 {
    if st.stx_mask & StatxFlags::BTIME.bits() == 0 {
        return 0;
    }
    let secs = u64::try_from(st.stx_btime.tv_sec).unwrap_or(0);
    secs.wrapping_mul(1_000_000_000)
        .wrapping_add(u64::from(st.stx_btime.tv_nsec))
}

/// The caller of a request, from its AUTH_SYS credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cred {
    /// user id
    pub uid: u32,
    /// primary group id
    pub gid: u32,
    /// supplementary groups (at most 16)
    pub gids: Vec<u32>,
}

impl Cred {
    /// The anonymous caller (AUTH_NULL): nobody.
    pub fn nobody() -> Self {
        Self {
            uid: 65534,
            gid: 65534,
            gids: vec![],
        }
    }
}

/// Takes on a caller's identity for the file system calls of this thread (`setfsuid`,
/// `setfsgid` and the thread's groups: Linux keeps them per thread), so the kernel checks
/// permissions and new files belong to the caller; the identity before comes back when
/// dropped (`None` is the server's own). A server not running as root keeps its own.
pub struct AsCaller {
    prev: Option<Option<Cred>>,
}

thread_local! {
    static CURRENT: std::cell::RefCell<Option<Cred>> = const { std::cell::RefCell::new(None) };
}

fn apply(cred: Option<&Cred>) {
    let (uid, gid, gids): (u32, u32, &[u32]) = match cred {
        Some(c) => (c.uid, c.gid, &c.gids),
        None => (0, 0, &[]),
    };
    // SAFETY: plain syscalls on this thread's credentials; the groups pointer and length
    // describe a live slice.
    unsafe {
        libc::syscall(libc::SYS_setgroups, gids.len(), gids.as_ptr());
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsuid, uid);
    }
}

impl AsCaller {
    /// Acts as `cred` (`None`: as the server itself) until dropped.
    pub fn new(cred: Option<&Cred>) -> Self {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Self { prev: None };
        }
        let prev = CURRENT.with(|c| c.replace(cred.cloned()));
        apply(cred);
        Self { prev: Some(prev) }
    }

    /// The caller this thread acts as, if any.
    pub fn current() -> Option<Cred> {
        CURRENT.with(|c| c.borrow().clone())
    }
}

impl Drop for AsCaller {
    fn drop(&mut self) {
        if let Some(prev) = self.prev.take() {
            apply(prev.as_ref());
            CURRENT.with(|c| *c.borrow_mut() = prev);
        }
    }
}

struct Node {
    parent: u64,
    name: OsString,
}

#[derive(Default)]
struct Nodes {
    map: HashMap<u64, Node>,
    scanned: bool,
}

/// The exported tree.
pub struct Tree {
    root: OwnedFd,
    root_ino: u64,
    root_mnt: Option<u64>,
    nodes: Mutex<Nodes>,
    write_locks: Vec<Mutex<()>>,
}

const WRITE_LOCKS: usize = 64;

/// What an operation returns: attributes of an object.
pub type Attr = Statx;

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::BENEATH
        | ResolveFlags::NO_SYMLINKS
        | ResolveFlags::NO_XDEV
        | ResolveFlags::NO_MAGICLINKS
}

/// What every statx here asks for: the basic stats, the birth time handles carry, the
/// mount id that tells the root's file system from one mounted under it.
const STATX_WANTED: StatxFlags = StatxFlags::BASIC_STATS
    .union(StatxFlags::BTIME)
    .union(StatxFlags::MNT_ID);

fn stat_fd(fd: impl AsFd) -> Result<Statx, Errno> {
    rustix::fs::statx(
        fd,
        c"",
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        STATX_WANTED,
    )
}

/// Checks a name a client gave for a directory entry.
pub fn check_name(name: &[u8]) -> Result<&OsStr, Nfsstat> {
    if name.len() > NAME_MAX {
        return Err(Nfsstat::NameTooLong);
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(Nfsstat::Inval);
    }
    Ok(OsStr::from_bytes(name))
}

/// Checks a name for an entry to be made or removed: also not `.` or `..`.
fn check_new_name(name: &[u8]) -> Result<&OsStr, Nfsstat> {
    let n = check_name(name)?;
    if name == b"." || name == b".." {
        return Err(Nfsstat::Inval);
    }
    Ok(n)
}

impl Tree {
    /// Opens the tree at `root` (a directory).
    pub fn open(root: &Path) -> std::io::Result<Self> {
        let fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = stat_fd(&fd)?;
        Ok(Self {
            root: fd,
            root_ino: st.stx_ino,
            root_mnt: (st.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(st.stx_mnt_id),
            nodes: Mutex::new(Nodes::default()),
            write_locks: (0..WRITE_LOCKS).map(|_| Mutex::new(())).collect(),
        })
    }

    /// The root's handle.
    pub fn root_handle(&self) -> Result<Handle, Nfsstat> {
        Ok(Handle::of(&stat_fd(&self.root)?))
    }

    /// Runs `f` as the caller.
    pub fn as_caller<T>(&self, cred: &Cred, f: impl FnOnce() -> T) -> T {
        let _guard = AsCaller::new(Some(cred));
        f()
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, Nodes> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path_of(&self, ino: u64) -> Option<PathBuf> {
        if ino == self.root_ino {
            return Some(PathBuf::from("."));
        }
        let nodes = self.nodes();
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != self.root_ino {
            let node = nodes.map.get(&cur)?;
            parts.push(node.name.clone());
            cur = node.parent;
            if parts.len() > 4096 {
                return None;
            }
        }
        Some(parts.iter().rev().collect())
    }

    fn remember(&self, parent: u64, name: &OsStr, ino: u64) {
        if ino == self.root_ino {
            return;
        }
        self.nodes().map.insert(
            ino,
            Node {
                parent,
                name: name.to_owned(),
            },
        );
    }

    fn forget(&self, parent: u64, name: &OsStr, ino: u64) {
        let mut nodes = self.nodes();
        if nodes
            .map
            .get(&ino)
            .is_some_and(|n| n.parent == parent && n.name == name)
        {
            nodes.map.remove(&ino);
        }
    }

    /// Walks the whole tree (as root) to learn every inode's place.
    fn scan(&self) {
        let _root = AsCaller::new(None);
        let mut found = Vec::new();
        let mut stack = vec![(self.root_ino, PathBuf::from("."))];
        let mut seen = 0usize;
        while let Some((dir_ino, path)) = stack.pop() {
            let Ok(fd) = self.open_rel(&path, OFlags::RDONLY | OFlags::DIRECTORY) else {
                continue;
            };
            let Ok(dir) = rustix::fs::Dir::read_from(&fd) else {
                continue;
            };
            for entry in dir.flatten() {
                let name = entry.file_name();
                if name == c"." || name == c".." {
                    continue;
                }
                seen += 1;
                if seen > SCAN_LIMIT {
                    break;
                }
                // the inode number statx gives, which handles carry: on overlayfs a
                // directory entry's d_ino may be another one
                let Ok(st) = rustix::fs::statx(&fd, name, AtFlags::SYMLINK_NOFOLLOW, STATX_WANTED)
                else {
                    continue;
                };
                if !self.same_mount(&st) {
                    continue;
                }
                let name = OsStr::from_bytes(name.to_bytes()).to_owned();
                if st.stx_mode & libc::S_IFMT as u16 == libc::S_IFDIR as u16 {
                    stack.push((st.stx_ino, path.join(&name)));
                }
                found.push((st.stx_ino, dir_ino, name));
            }
        }
        let mut nodes = self.nodes();
        for (ino, parent, name) in found {
            nodes.map.entry(ino).or_insert(Node { parent, name });
        }
        nodes.scanned = true;
    }

    fn open_rel(&self, rel: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
        rustix::fs::openat2(
            &self.root,
            rel,
            flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            resolve_flags(),
        )
    }

    /// Resolves a handle to its path under the root (`.` for the root), checking that the
    /// object there is the one the handle was made for.
    pub fn resolve(&self, fh: &[u8]) -> Result<(PathBuf, Attr), Nfsstat> {
        let h = Handle::decode(fh)?;
        for attempt in 0..2 {
            if let Some(path) = self.path_of(h.ino)
                && let Ok(fd) = self.open_rel(&path, OFlags::PATH)
                && let Ok(st) = stat_fd(&fd)
                && Handle::of(&st) == h
                && self.same_mount(&st)
            {
                return Ok((path, st));
            }
            if attempt == 0 {
                let rescan = {
                    let mut nodes = self.nodes();
                    nodes.map.remove(&h.ino);
                    !nodes.scanned
                };
                if rescan {
                    self.scan();
                    continue;
                }
            }
            break;
        }
        Err(Nfsstat::Stale)
    }

    /// Whether `st` is on the root's mount (not a file system mounted under it). By mount
    /// id, not device: overlayfs may give a file the device of the layer it is on.
    fn same_mount(&self, st: &Statx) -> bool {
        if st.stx_mask & StatxFlags::MNT_ID.bits() != 0 && self.root_mnt.is_some() {
            Some(st.stx_mnt_id) == self.root_mnt
        } else {
            true
        }
    }

    /// Opens what a handle names.
    pub fn open_handle(&self, fh: &[u8], flags: OFlags) -> Result<(OwnedFd, PathBuf), Nfsstat> {
        let (path, st) = self.resolve(fh)?;
        let fd = match self.open_rel(&path, flags) {
            // The owner may read and write their file whatever its mode, as with Linux's
            // own NFS server: a client creates a file 0444 and then writes it (git's
            // objects, tar, cp -p); the permission was checked when it was opened there.
            Err(Errno::ACCESS)
                if AsCaller::current().is_some_and(|c| c.uid == st.stx_uid)
                    && st.stx_mode & libc::S_IFMT as u16 == libc::S_IFREG as u16 =>
            {
                let _own = AsCaller::new(None);
                self.open_rel(&path, flags)?
            }
            r => r?,
        };
        let now = stat_fd(&fd)?;
        if Handle::of(&now) != Handle::of(&st) {
            return Err(Nfsstat::Stale);
        }
        Ok((fd, path))
    }

    /// The attributes of what a handle names.
    pub fn getattr(&self, fh: &[u8]) -> Result<Attr, Nfsstat> {
        Ok(self.resolve(fh)?.1)
    }

    /// The directory a handle names, opened as a path for `*at` calls.
    fn dir(&self, fh: &[u8]) -> Result<(OwnedFd, Attr, PathBuf), Nfsstat> {
        let (path, st) = self.resolve(fh)?;
        if st.stx_mode & libc::S_IFMT as u16 != libc::S_IFDIR as u16 {
            return Err(Nfsstat::NotDir);
        }
        let fd = self.open_rel(&path, OFlags::PATH | OFlags::DIRECTORY)?;
        Ok((fd, st, path))
    }

    /// The attributes of a directory, for the wcc data of a reply.
    pub fn dir_attr(&self, fh: &[u8]) -> Option<Attr> {
        self.resolve(fh).ok().map(|r| r.1)
    }

    /// Looks `name` up in a directory: its handle and attributes.
    pub fn lookup(&self, dir: &[u8], name: &[u8]) -> Result<(Handle, Attr), Nfsstat> {
        let name = check_name(name)?;
        let (dfd, dst, dpath) = self.dir(dir)?;
        if name == "." {
            return Ok((Handle::of(&dst), dst));
        }
        if name == ".." {
            if dst.stx_ino == self.root_ino {
                return Ok((Handle::of(&dst), dst));
            }
            let parent = dpath.parent().map(Path::to_path_buf).unwrap_or_default();
            let parent = if parent.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                parent
            };
            let fd = self.open_rel(&parent, OFlags::PATH)?;
            let st = stat_fd(&fd)?;
            return Ok((Handle::of(&st), st));
        }
        let st = rustix::fs::statx(&dfd, name, AtFlags::SYMLINK_NOFOLLOW, STATX_WANTED)?;
        if !self.same_mount(&st) {
            return Err(Nfsstat::Acces);
        }
        self.remember(dst.stx_ino, name, st.stx_ino);
        Ok((Handle::of(&st), st))
    }

    fn stat_at(&self, dfd: &OwnedFd, name: &OsStr) -> Result<Attr, Nfsstat> {
        Ok(rustix::fs::statx(
            dfd,
            name,
            AtFlags::SYMLINK_NOFOLLOW,
            STATX_WANTED,
        )?)
    }

    /// Creates a regular file. `exclusive` makes an existing one an error; `verf` is the
    /// EXCLUSIVE create's verifier, kept in the file's times as RFC 1813 suggests so a
    /// retried create finds its own file.
    pub fn create(
        &self,
        dir: &[u8],
        name: &[u8],
        how: CreateHow,
    ) -> Result<(Handle, Attr, Attr), Nfsstat> {
        let name = check_new_name(name)?;
        let (dfd, dst, _) = self.dir(dir)?;
        let (flags, mode, sattr) = match &how {
            CreateHow::Unchecked(s) => (OFlags::CREATE, s.mode.unwrap_or(0o644), Some(s)),
            CreateHow::Guarded(s) => (
                OFlags::CREATE | OFlags::EXCL,
                s.mode.unwrap_or(0o644),
                Some(s),
            ),
            CreateHow::Exclusive(_) => (OFlags::CREATE | OFlags::EXCL, 0o644, None),
        };
        let opened = rustix::fs::openat(
            &dfd,
            name,
            flags | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode & 0o7777),
        );
        let fd = match (opened, &how) {
            (Ok(fd), _) => fd,
            (Err(Errno::EXIST), CreateHow::Exclusive(verf)) => {
                let st = self.stat_at(&dfd, name)?;
                if exclusive_verf(&st) == *verf {
                    self.remember(dst.stx_ino, name, st.stx_ino);
                    return Ok((Handle::of(&st), st, self.stat_at(&dfd, OsStr::new("."))?));
                }
                return Err(Nfsstat::Exist);
            }
            (Err(e), _) => return Err(e.into()),
        };
        match &how {
            CreateHow::Exclusive(verf) => {
                let (a, m) = verf_times(verf);
                rustix::fs::futimens(
                    &fd,
                    &rustix::fs::Timestamps {
                        last_access: a,
                        last_modification: m,
                    },
                )?;
            }
            _ => {
                if let Some(s) = sattr {
                    set_fd_attrs(&fd, s)?;
                }
            }
        }
        let st = stat_fd(&fd)?;
        self.remember(dst.stx_ino, name, st.stx_ino);
        let dst = self.stat_at(&dfd, OsStr::new("."))?;
        Ok((Handle::of(&st), st, dst))
    }

    /// Makes a directory.
    pub fn mkdir(
        &self,
        dir: &[u8],
        name: &[u8],
        sattr: &Sattr,
    ) -> Result<(Handle, Attr, Attr), Nfsstat> {
        let name = check_new_name(name)?;
        let (dfd, dst, _) = self.dir(dir)?;
        rustix::fs::mkdirat(
            &dfd,
            name,
            Mode::from_raw_mode(sattr.mode.unwrap_or(0o755) & 0o7777),
        )?;
        self.made(&dfd, &dst, name, sattr)
    }

    /// What MKDIR and SYMLINK return of the entry `name` they just made in a directory
    /// (`dfd`, whose attributes were `dst`), once `sattr` is set on it.
    fn made(
        &self,
        dfd: &OwnedFd,
        dst: &Attr,
        name: &OsStr,
        sattr: &Sattr,
    ) -> Result<(Handle, Attr, Attr), Nfsstat> {
        let fd = rustix::fs::openat(
            dfd,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        set_path_attrs(&fd, sattr)?;
        let st = stat_fd(&fd)?;
        self.remember(dst.stx_ino, name, st.stx_ino);
        Ok((Handle::of(&st), st, self.stat_at(dfd, OsStr::new("."))?))
    }

    /// Makes a symbolic link. Its target is stored as given: the server never follows it.
    pub fn symlink(
        &self,
        dir: &[u8],
        name: &[u8],
        target: &[u8],
        sattr: &Sattr,
    ) -> Result<(Handle, Attr, Attr), Nfsstat> {
        let name = check_new_name(name)?;
        if target.is_empty() || target.contains(&0) {
            return Err(Nfsstat::Inval);
        }
        let (dfd, dst, _) = self.dir(dir)?;
        rustix::fs::symlinkat(OsStr::from_bytes(target), &dfd, name)?;
        // a symlink's mode and size are its own business
        let mut s = sattr.clone();
        s.mode = None;
        s.size = None;
        self.made(&dfd, &dst, name, &s)
    }

    /// The target of a symbolic link.
    pub fn readlink(&self, fh: &[u8]) -> Result<(Vec<u8>, Attr), Nfsstat> {
        let (path, st) = self.resolve(fh)?;
        if st.stx_mode & libc::S_IFMT as u16 != libc::S_IFLNK as u16 {
            return Err(Nfsstat::Inval);
        }
        let (parent, name) = split(&path);
        let pfd = self.open_rel(&parent, OFlags::PATH | OFlags::DIRECTORY)?;
        let target = rustix::fs::readlinkat(&pfd, &name, Vec::new())?;
        Ok((target.into_bytes(), st))
    }

    /// Removes a name that is not a directory (`rmdir` false) or an empty directory.
    pub fn remove(&self, dir: &[u8], name: &[u8], rmdir: bool) -> Result<Attr, Nfsstat> {
        let name = check_name(name)?;
        if name == "." || name == ".." {
            return Err(if rmdir {
                Nfsstat::Inval
            } else {
                Nfsstat::Acces
            });
        }
        let (dfd, dst, _) = self.dir(dir)?;
        let st = self.stat_at(&dfd, name)?;
        let is_dir = st.stx_mode & libc::S_IFMT as u16 == libc::S_IFDIR as u16;
        if rmdir && !is_dir {
            return Err(Nfsstat::NotDir);
        }
        if !rmdir && is_dir {
            return Err(Nfsstat::IsDir);
        }
        rustix::fs::unlinkat(
            &dfd,
            name,
            if rmdir {
                AtFlags::REMOVEDIR
            } else {
                AtFlags::empty()
            },
        )?;
        self.forget(dst.stx_ino, name, st.stx_ino);
        if st.stx_nlink > 1 && !is_dir {
            // another name of the file is still there: find it again when asked
            self.nodes().scanned = false;
        }
        self.stat_at(&dfd, OsStr::new("."))
    }

    /// Renames `from` in one directory to `to` in another (or the same).
    pub fn rename(
        &self,
        from_dir: &[u8],
        from: &[u8],
        to_dir: &[u8],
        to: &[u8],
    ) -> Result<(Attr, Attr), Nfsstat> {
        let from = check_new_name(from)?;
        let to = check_new_name(to)?;
        let (ffd, fst, _) = self.dir(from_dir)?;
        let (tfd, tst, _) = self.dir(to_dir)?;
        let moved = self.stat_at(&ffd, from)?;
        let replaced = self.stat_at(&tfd, to).ok();
        rustix::fs::renameat(&ffd, from, &tfd, to)?;
        if let Some(r) = replaced
            && r.stx_ino != moved.stx_ino
        {
            self.forget(tst.stx_ino, to, r.stx_ino);
        }
        self.remember(tst.stx_ino, to, moved.stx_ino);
        let _ = fst;
        Ok((
            self.stat_at(&ffd, OsStr::new("."))?,
            self.stat_at(&tfd, OsStr::new("."))?,
        ))
    }

    /// Makes a hard link to a file.
    pub fn link(&self, file: &[u8], dir: &[u8], name: &[u8]) -> Result<(Attr, Attr), Nfsstat> {
        let name = check_new_name(name)?;
        let (path, st) = self.resolve(file)?;
        if st.stx_mode & libc::S_IFMT as u16 == libc::S_IFDIR as u16 {
            return Err(Nfsstat::IsDir);
        }
        let (dfd, _, _) = self.dir(dir)?;
        let (parent, fname) = split(&path);
        let pfd = self.open_rel(&parent, OFlags::PATH | OFlags::DIRECTORY)?;
        rustix::fs::linkat(&pfd, &fname, &dfd, name, AtFlags::empty())?;
        let st = self.stat_at(&dfd, name)?;
        Ok((st, self.stat_at(&dfd, OsStr::new("."))?))
    }

    /// Sets attributes; `guard` is the ctime the client expects (SETATTR's guard).
    pub fn setattr(
        &self,
        fh: &[u8],
        s: &Sattr,
        guard: Option<(u32, u32)>,
    ) -> Result<(Attr, Attr), Nfsstat> {
        let (path, before) = self.resolve(fh)?;
        if let Some((sec, nsec)) = guard
            && (before.stx_ctime.tv_sec != i64::from(sec) || before.stx_ctime.tv_nsec != nsec)
        {
            return Err(Nfsstat::NotSync);
        }
        let fd = self.open_rel(&path, OFlags::PATH)?;
        if Handle::of(&stat_fd(&fd)?) != Handle::of(&before) {
            return Err(Nfsstat::Stale);
        }
        if let Some(size) = s.size {
            if before.stx_mode & libc::S_IFMT as u16 != libc::S_IFREG as u16 {
                return Err(
                    if before.stx_mode & libc::S_IFMT as u16 == libc::S_IFDIR as u16 {
                        Nfsstat::IsDir
                    } else {
                        Nfsstat::Inval
                    },
                );
            }
            let (w, _) = self.open_handle(fh, OFlags::WRONLY)?;
            rustix::fs::ftruncate(&w, size)?;
        }
        let mut rest = s.clone();
        rest.size = None;
        set_path_attrs(&fd, &rest)?;
        let after = stat_fd(&fd)?;
        Ok((before, after))
    }

    /// Reads up to `count` bytes at `offset`: the data and whether the file ends there.
    pub fn read(
        &self,
        fh: &[u8],
        offset: u64,
        count: u32,
    ) -> Result<(Vec<u8>, bool, Attr), Nfsstat> {
        let (fd, _) = self.open_handle(fh, OFlags::RDONLY)?;
        let st = stat_fd(&fd)?;
        match st.stx_mode & libc::S_IFMT as u16 {
            m if m == libc::S_IFDIR as u16 => return Err(Nfsstat::IsDir),
            m if m != libc::S_IFREG as u16 => return Err(Nfsstat::Inval),
            _ => {}
        }
        let mut buf = vec![0u8; count as usize];
        let mut got = 0usize;
        while got < buf.len() {
            let n = rustix::io::pread(&fd, &mut buf[got..], offset + got as u64)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        buf.truncate(got);
        let eof = offset + got as u64 >= st.stx_size;
        Ok((buf, eof, st))
    }

    /// Writes `data` at `offset`, synced when `sync`. A write that fails leaves the file as
    /// long as it was (no partial data past the old end: a full disk leaves no garbage).
    pub fn write(
        &self,
        fh: &[u8],
        offset: u64,
        data: &[u8],
        sync: bool,
    ) -> Result<(Attr, Attr), Nfsstat> {
        let (fd, _) = self.open_handle(fh, OFlags::WRONLY)?;
        // one write at a time per file (striped by inode), so the size before is this
        // write's own and cutting a failed write back removes nothing another one wrote
        let _lock = self.write_locks[(Handle::decode(fh)?.ino % WRITE_LOCKS as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let before = stat_fd(&fd)?;
        if before.stx_mode & libc::S_IFMT as u16 != libc::S_IFREG as u16 {
            return Err(Nfsstat::Inval);
        }
        let mut done = 0usize;
        let result = (|| {
            while done < data.len() {
                let n = rustix::io::pwrite(&fd, &data[done..], offset + done as u64)?;
                if n == 0 {
                    return Err(Errno::NOSPC);
                }
                done += n;
            }
            if sync {
                rustix::fs::fdatasync(&fd)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            if offset + done as u64 > before.stx_size {
                let _ = rustix::fs::ftruncate(&fd, before.stx_size);
            }
            return Err(e.into());
        }
        Ok((before, stat_fd(&fd)?))
    }

    /// Syncs a file to disk.
    pub fn commit(&self, fh: &[u8]) -> Result<(Attr, Attr), Nfsstat> {
        let (fd, _) = self.open_handle(fh, OFlags::RDONLY)?;
        let before = stat_fd(&fd)?;
        rustix::fs::fsync(&fd)?;
        Ok((before, stat_fd(&fd)?))
    }

    /// Every entry of a directory (without `.` and `..`), with its inode.
    pub fn list(&self, fh: &[u8]) -> Result<(Vec<(OsString, u64)>, Attr), Nfsstat> {
        let (path, st) = self.resolve(fh)?;
        if st.stx_mode & libc::S_IFMT as u16 != libc::S_IFDIR as u16 {
            return Err(Nfsstat::NotDir);
        }
        let fd = self.open_rel(&path, OFlags::RDONLY | OFlags::DIRECTORY)?;
        let dir = rustix::fs::Dir::new(fd)?;
        let mut out = Vec::new();
        for entry in dir {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            out.push((OsString::from_vec(name.to_vec()), entry.ino()));
        }
        Ok((out, st))
    }

    /// Looks up an entry listed by [`Tree::list`] for READDIRPLUS.
    pub fn entry_attr(&self, dir: &[u8], name: &OsStr) -> Option<(Handle, Attr)> {
        self.lookup(dir, name.as_bytes()).ok()
    }

    /// `statvfs` of the root.
    pub fn statvfs(&self) -> Result<rustix::fs::StatVfs, Nfsstat> {
        Ok(rustix::fs::fstatvfs(&self.root)?)
    }
}

fn split(path: &Path) -> (PathBuf, OsString) {
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let parent = if parent.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        parent
    };
    let name = path
        .file_name()
        .map(OsStr::to_owned)
        .unwrap_or_else(|| OsString::from("."));
    (parent, name)
}

/// How a time is set by SETATTR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    /// the server's current time
    Now,
    /// a given time (seconds, nanoseconds)
    At(u32, u32),
}

/// The attributes a client sets (sattr3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sattr {
    /// permission bits
    pub mode: Option<u32>,
    /// owner
    pub uid: Option<u32>,
    /// group
    pub gid: Option<u32>,
    /// size (truncate or extend)
    pub size: Option<u64>,
    /// access time
    pub atime: Option<SetTime>,
    /// modification time
    pub mtime: Option<SetTime>,
}

/// How CREATE makes a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateHow {
    /// create or open
    Unchecked(Sattr),
    /// create, EXIST if there
    Guarded(Sattr),
    /// create once, with this verifier
    Exclusive([u8; 8]),
}

fn verf_times(verf: &[u8; 8]) -> (rustix::fs::Timespec, rustix::fs::Timespec) {
    let a = u32::from_be_bytes([verf[0], verf[1], verf[2], verf[3]]);
    let m = u32::from_be_bytes([verf[4], verf[5], verf[6], verf[7]]);
    (
        rustix::fs::Timespec {
            tv_sec: i64::from(a),
            tv_nsec: 0,
        },
        rustix::fs::Timespec {
            tv_sec: i64::from(m),
            tv_nsec: 0,
        },
    )
}

fn exclusive_verf(st: &Statx) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&(st.stx_atime.tv_sec as u32).to_be_bytes());
    out[4..].copy_from_slice(&(st.stx_mtime.tv_sec as u32).to_be_bytes());
    out
}

fn timespec(t: Option<SetTime>) -> rustix::fs::Timespec {
    match t {
        None => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        Some(SetTime::Now) => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        Some(SetTime::At(s, n)) => rustix::fs::Timespec {
            tv_sec: i64::from(s),
            tv_nsec: i64::from(n.min(999_999_999)) as _,
        },
    }
}

/// Sets attributes through an open (non-O_PATH) descriptor.
fn set_fd_attrs(fd: &OwnedFd, s: &Sattr) -> Result<(), Nfsstat> {
    if s.uid.is_some() || s.gid.is_some() {
        rustix::fs::fchown(
            fd,
            s.uid.map(rustix::fs::Uid::from_raw),
            s.gid.map(rustix::fs::Gid::from_raw),
        )?;
    }
    if let Some(mode) = s.mode {
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777))?;
    }
    if let Some(size) = s.size {
        rustix::fs::ftruncate(fd, size)?;
    }
    if s.atime.is_some() || s.mtime.is_some() {
        rustix::fs::futimens(
            fd,
            &rustix::fs::Timestamps {
                last_access: timespec(s.atime),
                last_modification: timespec(s.mtime),
            },
        )?;
    }
    Ok(())
}

/// Sets attributes (not the size) through an O_PATH descriptor, never following a symlink.
fn set_path_attrs(fd: &OwnedFd, s: &Sattr) -> Result<(), Nfsstat> {
    if s.uid.is_some() || s.gid.is_some() {
        rustix::fs::chownat(
            fd,
            c"",
            s.uid.map(rustix::fs::Uid::from_raw),
            s.gid.map(rustix::fs::Gid::from_raw),
            AtFlags::EMPTY_PATH,
        )?;
    }
    if let Some(mode) = s.mode {
        let st = stat_fd(fd)?;
        if st.stx_mode & libc::S_IFMT as u16 != libc::S_IFLNK as u16 {
            // an O_PATH descriptor takes no fchmod: its /proc link names the same inode
            let proc_path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .map_err(|_| Nfsstat::ServerFault)?;
            rustix::fs::chmodat(
                rustix::fs::CWD,
                proc_path.as_c_str(),
                Mode::from_raw_mode(mode & 0o7777),
                AtFlags::empty(),
            )?;
        }
    }
    if s.atime.is_some() || s.mtime.is_some() {
        rustix::fs::utimensat(
            fd,
            c"",
            &rustix::fs::Timestamps {
                last_access: timespec(s.atime),
                last_modification: timespec(s.mtime),
            },
            AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    Ok(())
}

#[allow(dead_code)]
fn cstr(b: &CStr) -> &OsStr {
    OsStr::from_bytes(b.to_bytes())
}
