//! Host-side file operations inside a tree the host does not trust: an instance's disk
//! (the upper layer of its overlay, which its tenant controls entirely), or an image
//! being extracted. Everything the agent reads, writes or removes there goes through a
//! [`Tree`]: a directory handle on the tree's top, with every path resolved from it by
//! `openat2(2)`, so no symlink, `..` or mount point the tenant planted can lead the
//! agent's root privileges onto the host's files.
//!
//! A tree resolves paths one of two ways:
//!
//! * [`Tree::open`], for an instance's files: `RESOLVE_IN_ROOT`, so a path is resolved as
//!   if the tree's top were `/`, as the instance itself sees it. A planted `etc ->
//!   /host/dir` leads to `<tree>/host/dir`, and `..` stops at the top. Mount points are
//!   never crossed (`RESOLVE_NO_XDEV`), magic links (`/proc/self/fd/...`) never followed.
//! * [`Tree::open_strict`], for what the agent builds itself (an image being
//!   extracted, snapshot directories): no symlink is followed at all
//!   (`RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`); a path through one is an error.
//!
//! Either way the last component of a path is never followed when something is written,
//! replaced or removed there: a write goes to a new file in the same directory that is
//! renamed over the name (so a symlink at the name is replaced, never written through),
//! and removal unlinks the name itself. Errors name the path and the rule broken.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// Who owns what the agent makes in a tree. Each instance's files belong to the
/// instance's root, which is a host uid and gid of the instance's own range once the
/// instance runs in a user namespace; `Owner::ROOT` until then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    pub const ROOT: Owner = Owner { uid: 0, gid: 0 };
}

/// Deepest directory a removal descends into with a handle per level; deeper
/// directories are moved up to the top of what is removed first, so a hostile tree of
/// any depth is removed with a bounded number of open files.
const REMOVE_DEPTH_MAX: usize = 32;
/// openat2 fails with EAGAIN when a rename elsewhere races a RESOLVE_IN_ROOT or
/// RESOLVE_BENEATH lookup; it is then tried again this many times.
const EAGAIN_TRIES: u32 = 64;

/// Symlinks that lead nowhere followed by one `create_dir_all` (the kernel's own limit
/// on links in a path is 40).
const LINK_HOPS_MAX: u32 = 40;
/// Names of temporary files are unique within the process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A directory handle on the top of an untrusted tree. See the module documentation.
#[derive(Debug)]
pub struct Tree {
    fd: OwnedFd,
    path: PathBuf,
    strict: bool,
}

impl Tree {
    /// The tree at `root`, whose own path is the host's (it must be a real directory,
    /// not a symlink); paths inside resolve as if `root` were `/`.
    pub fn open(root: &Path) -> Result<Tree> {
        Tree::open_with(root, false)
    }

    /// The tree at `root`; paths inside it never go through a symlink.
    pub fn open_strict(root: &Path) -> Result<Tree> {
        Tree::open_with(root, true)
    }

    fn open_with(root: &Path, strict: bool) -> Result<Tree> {
        let fd = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => rule(root, e, "the top of the tree is not a directory"),
            e => Error::io(root, e.into()),
        })?;
        Ok(Tree {
            fd,
            path: root.to_path_buf(),
            strict,
        })
    }

    /// The host's path of the tree's top.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Where `rel` is on the host, for messages (not to be opened: that would follow
    /// whatever links are on the way).
    pub fn display_path(&self, rel: &Path) -> PathBuf {
        self.path.join(rel)
    }

    fn resolve_flags(&self) -> ResolveFlags {
        let base = ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV;
        if self.strict {
            base | ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS
        } else {
            base | ResolveFlags::IN_ROOT
        }
    }

    /// openat2 of `rel` from the top with this tree's rules.
    fn open_at(&self, rel: &Path, flags: OFlags, mode: Mode) -> Result<OwnedFd> {
        let rel_arg: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(
                &self.fd,
                rel_arg,
                flags | OFlags::CLOEXEC,
                mode,
                self.resolve_flags(),
            ) {
                Err(Errno::AGAIN) if tries < EAGAIN_TRIES => tries += 1,
                Err(e) => return Err(self.resolve_error(rel, e)),
                Ok(fd) => return Ok(fd),
            }
        }
    }

    fn resolve_error(&self, rel: &Path, e: Errno) -> Error {
        let path = self.display_path(rel);
        match e {
            Errno::LOOP if self.strict => rule(
                &path,
                e,
                "a symlink is on the way, and symlinks are not followed here",
            ),
            Errno::LOOP => rule(&path, e, "too many levels of symlinks"),
            Errno::XDEV => rule(
                &path,
                e,
                "the path crosses a mount point or leads outside the tree",
            ),
            Errno::NOSYS => rule(
                &path,
                e,
                "openat2(2) is missing: the agent needs Linux 5.6 or later",
            ),
            Errno::NOTDIR => rule(&path, e, "something on the way is not a directory"),
            e => Error::io(path, e.into()),
        }
    }

    /// A handle on the directory `rel` (`""`: the top).
    pub fn open_dir(&self, rel: &Path) -> Result<OwnedFd> {
        check_relative(&self.path, rel)?;
        self.open_at(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
    }

    /// The directory holding `rel` and `rel`'s last component, which must be a name.
    fn parent_of<'a>(&self, rel: &'a Path) -> Result<(OwnedFd, &'a OsStr)> {
        check_relative(&self.path, rel)?;
        let name = match rel.components().next_back() {
            Some(Component::Normal(name)) => name,
            _ => {
                return Err(rule(
                    &self.display_path(rel),
                    Errno::INVAL,
                    "the path must end in a name",
                ));
            }
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        let fd = self.open_dir(parent)?;
        Ok((fd, name))
    }

    /// `mkdir -p rel` inside the tree. Directories it makes get `mode` and `owner`;
    /// those already there are left as they are.
    pub fn create_dir_all(&self, rel: &Path, mode: u32, owner: Owner) -> Result<()> {
        self.create_dir_all_hops(rel, mode, owner, 0)
    }

    fn create_dir_all_hops(&self, rel: &Path, mode: u32, owner: Owner, hops: u32) -> Result<()> {
        check_relative(&self.path, rel)?;
        let mut done = PathBuf::new();
        for component in rel.components() {
            let Component::Normal(name) = component else {
                continue;
            };
            let parent = self.open_dir(&done)?;
            done.push(name);
            match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(mode)) {
                Ok(()) => {
                    let dir =
                        open_child_dir(&parent, name).map_err(|e| self.resolve_error(&done, e))?;
                    set_owner_mode(&dir, owner, mode).map_err(|e| self.io(&done, e))?;
                }
                // A directory, or a symlink the next lookup resolves with the tree's
                // rules; anything else fails there.
                Err(Errno::EXIST) => {
                    if !self.strict && hops < LINK_HOPS_MAX {
                        self.create_link_target(&parent, name, &done, mode, owner, hops)?;
                    }
                }
                Err(e) => return Err(self.io(&done, e)),
            }
        }
        // What is there now must be a directory reached by the rules.
        self.open_dir(rel).map(drop)
    }

    /// When `name` (at `rel`) is a symlink that leads nowhere, makes the directory it
    /// names, as `mkdir -p` through it would inside the instance: the link's target,
    /// taken as the instance takes it (an absolute one from the tree's top), is made
    /// with the same rules.
    fn create_link_target(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        rel: &Path,
        mode: u32,
        owner: Owner,
        hops: u32,
    ) -> Result<()> {
        match self.open_dir(rel) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            _ => return Ok(()),
        }
        let Ok(target) = rustix::fs::readlinkat(parent, name, Vec::new()) else {
            return Ok(());
        };
        let target = Path::new(OsStr::from_bytes(target.as_bytes()));
        let from = if target.is_absolute() {
            PathBuf::new()
        } else {
            rel.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let mut next = PathBuf::new();
        for component in from.join(target).components() {
            match component {
                Component::Normal(part) => next.push(part),
                // '..' above the top stays at the top, as in the instance.
                Component::ParentDir => {
                    next.pop();
                }
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            }
        }
        if next.as_os_str().is_empty() {
            return Ok(());
        }
        self.create_dir_all_hops(&next, mode, owner, hops + 1)
    }

    /// Makes the directory `rel` (its parent must exist). A directory already there is
    /// kept, with `mode` and `owner` set; anything else there is an error.
    pub fn create_dir(&self, rel: &Path, mode: u32, owner: Owner) -> Result<()> {
        let (parent, name) = self.parent_of(rel)?;
        match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(self.io(rel, e)),
        }
        let dir = open_child_dir(&parent, name).map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => rule(
                &self.display_path(rel),
                e,
                "something other than a directory is there",
            ),
            e => self.resolve_error(rel, e),
        })?;
        set_owner_mode(&dir, owner, mode).map_err(|e| self.io(rel, e))
    }

    /// Writes `contents` as the file `rel` atomically: a new file in the same
    /// directory (`O_EXCL|O_NOFOLLOW`), with `owner` and `mode`, renamed over `rel`.
    /// Whatever was at `rel` (a file, a symlink) is replaced, never written through; a
    /// directory there is an error. Not synced: what the agent writes in an instance's
    /// tree (its `etc` files, its metadata) is written again at every boot, so a crash
    /// loses nothing the next boot does not make again (an fsync here cost the boot
    /// a few ms per file).
    pub fn write_file(&self, rel: &Path, contents: &[u8], mode: u32, owner: Owner) -> Result<()> {
        let (parent, name) = self.parent_of(rel)?;
        write_in(&parent, name, contents, mode, Some(owner), false).map_err(|e| match e {
            WriteError::At(e) if e.raw_os_error() == Some(libc::EISDIR) => rule(
                &self.display_path(rel),
                Errno::ISDIR,
                "a directory is there; only a file or a symlink is replaced",
            ),
            WriteError::At(e) | WriteError::Other(e) => Error::io(self.display_path(rel), e),
        })
    }

    /// Removes the file or symlink `rel` (never what a symlink points to); nothing
    /// there is fine.
    pub fn remove_file(&self, rel: &Path) -> Result<()> {
        let (parent, name) = match self.parent_of(rel) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(());
            }
            other => other?,
        };
        match rustix::fs::unlinkat(&parent, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(Errno::ISDIR) => Err(rule(
                &self.display_path(rel),
                Errno::ISDIR,
                "a directory is there, not a file",
            )),
            Err(e) => Err(self.io(rel, e)),
        }
    }

    /// Reads the regular file `rel` (at most `max` bytes; more is an error). A FIFO or a
    /// device there is refused rather than opened for reading.
    pub fn read_file(&self, rel: &Path, max: u64) -> Result<Vec<u8>> {
        check_relative(&self.path, rel)?;
        let fd = self.open_at(rel, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| self.io(rel, e))?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(rule(
                &self.display_path(rel),
                Errno::INVAL,
                "not a regular file",
            ));
        }
        let mut out = Vec::new();
        std::fs::File::from(fd)
            .take(max + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::io(self.display_path(rel), e))?;
        if out.len() as u64 > max {
            return Err(rule(
                &self.display_path(rel),
                Errno::FBIG,
                &format!("longer than {max} bytes"),
            ));
        }
        Ok(out)
    }

    /// Whether `rel` is there (as anything, a dangling symlink too).
    pub fn exists(&self, rel: &Path) -> Result<bool> {
        let (parent, name) = match self.parent_of(rel) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(false);
            }
            other => other?,
        };
        match rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(self.io(rel, e)),
        }
    }

    /// Removes `rel` and everything below it, as `rm -rf` would, but never following
    /// a symlink (one is removed as the link it is) and never crossing into another
    /// mount: a mount point below `rel` is an error, and nothing of the file system
    /// mounted there is touched. Nothing at `rel` is fine.
    pub fn remove_tree(&self, rel: &Path) -> Result<()> {
        let (parent, name) = match self.parent_of(rel) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(());
            }
            other => other?,
        };
        remove_entry(&parent, name, &self.display_path(rel))
    }

    /// Removes everything in the directory `rel` (`""`: the top), keeping the
    /// directory itself. The same rules as [`Tree::remove_tree`].
    pub fn empty_dir(&self, rel: &Path) -> Result<()> {
        let dir = self.open_dir(rel)?;
        empty_dir(&dir, &self.display_path(rel))
    }

    /// Creates the file `rel` for writing (mode 0600 until [`set_attrs`] sets what it
    /// should be): `O_CREAT|O_EXCL|O_NOFOLLOW` in its directory, after removing a file
    /// or symlink already at the name (a directory there is an error).
    pub fn create_file(&self, rel: &Path) -> Result<std::fs::File> {
        let (parent, name) = self.parent_of(rel)?;
        self.clear_name(&parent, name, rel)?;
        let fd = rustix::fs::openat(
            &parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| self.io(rel, e))?;
        Ok(std::fs::File::from(fd))
    }

    /// Makes the symlink `rel` with `target` as its contents (which is never resolved
    /// here), owned by `owner`, replacing a file or symlink at the name.
    pub fn symlink(
        &self,
        rel: &Path,
        target: &[u8],
        owner: Owner,
        mtime: Option<i64>,
    ) -> Result<()> {
        let (parent, name) = self.parent_of(rel)?;
        self.clear_name(&parent, name, rel)?;
        rustix::fs::symlinkat(OsStr::from_bytes(target), &parent, name)
            .map_err(|e| self.io(rel, e))?;
        rustix::fs::chownat(
            &parent,
            name,
            Some(rustix::fs::Uid::from_raw(owner.uid)),
            Some(rustix::fs::Gid::from_raw(owner.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.io(rel, e))?;
        if let Some(mtime) = mtime {
            rustix::fs::utimensat(&parent, name, &timestamps(mtime), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| self.io(rel, e))?;
        }
        Ok(())
    }

    /// Makes `rel` a hard link to `target` (both inside the tree, each reached by the
    /// tree's rules; a symlink at `target` is linked as the link it is).
    pub fn hard_link(&self, target: &Path, rel: &Path) -> Result<()> {
        let (target_parent, target_name) = self.parent_of(target)?;
        let (parent, name) = self.parent_of(rel)?;
        self.clear_name(&parent, name, rel)?;
        rustix::fs::linkat(&target_parent, target_name, &parent, name, AtFlags::empty())
            .map_err(|e| self.io(rel, e))
    }

    /// Makes the FIFO `rel`, replacing a file or symlink at the name.
    pub fn mkfifo(&self, rel: &Path, mode: u32, owner: Owner, mtime: Option<i64>) -> Result<()> {
        let (parent, name) = self.parent_of(rel)?;
        self.clear_name(&parent, name, rel)?;
        rustix::fs::mkfifoat(&parent, name, Mode::from_raw_mode(0o600))
            .map_err(|e| self.io(rel, e))?;
        // Opened by its path only (O_PATH cannot chown); O_NONBLOCK so a FIFO never
        // blocks the open.
        let fd = rustix::fs::openat(
            &parent,
            name,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.io(rel, e))?;
        set_attrs(&fd, owner, mode, mtime).map_err(|e| Error::io(self.display_path(rel), e))
    }

    /// Sets owner, mode and modification time of the directory `rel` (`""`: the top).
    pub fn set_dir_attrs(
        &self,
        rel: &Path,
        owner: Owner,
        mode: u32,
        mtime: Option<i64>,
    ) -> Result<()> {
        let dir = self.open_dir(rel)?;
        set_attrs(&dir, owner, mode, mtime).map_err(|e| Error::io(self.display_path(rel), e))
    }

    /// Sets the modification time of the directory `rel`.
    pub fn set_dir_mtime(&self, rel: &Path, mtime: i64) -> Result<()> {
        let dir = self.open_dir(rel)?;
        rustix::fs::futimens(&dir, &timestamps(mtime)).map_err(|e| self.io(rel, e))
    }

    /// Makes room at `name` for something new: a file or symlink there is removed, a
    /// directory is an error.
    fn clear_name(&self, parent: &OwnedFd, name: &OsStr, rel: &Path) -> Result<()> {
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(self.io(rel, e)),
            Ok(st)
                if rustix::fs::FileType::from_raw_mode(st.st_mode)
                    == rustix::fs::FileType::Directory =>
            {
                Err(rule(
                    &self.display_path(rel),
                    Errno::ISDIR,
                    "a directory is there; only a file or a symlink is replaced",
                ))
            }
            Ok(_) => match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(self.io(rel, e)),
            },
        }
    }

    fn io(&self, rel: &Path, e: Errno) -> Error {
        Error::io(self.display_path(rel), e.into())
    }
}

/// The host's directory `path` (whose own components the host controls), open.
pub(super) fn open_host_dir(path: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `path`, or `.` for the empty path (a file name's parent with no directory).
pub(super) fn dot_if_empty(path: &Path) -> &Path {
    if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    }
}

/// Removes the tree at `path` (a host path whose own components the host controls, such
/// as an instance's zone directory) without following symlinks below it or crossing a
/// mount point. Nothing there is fine.
pub fn remove_host_tree(path: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(rule(path, Errno::INVAL, "not a path to remove"));
    };
    let parent_fd = match open_host_dir(parent) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(Error::io(parent, e.into())),
    };
    remove_entry(&parent_fd, name, path)
}

/// Writes `bytes` to the host's file `path` atomically and durably (a state file of the
/// agent's, such as an instance's `zone.json`): a new file beside it, synced, renamed
/// over it, and the directory synced, so a crash leaves the old contents or the new,
/// never a mix or nothing.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(rule(path, Errno::INVAL, "not a path to write"));
    };
    let parent = dot_if_empty(parent);
    let dir = open_host_dir(parent).map_err(|e| Error::io(parent, e.into()))?;
    write_in(&dir, name, bytes, 0o644, None, true).map_err(|e| match e {
        WriteError::At(e) | WriteError::Other(e) => Error::io(path, e),
    })
}

enum WriteError {
    /// The rename onto the name failed.
    At(std::io::Error),
    Other(std::io::Error),
}

/// The atomic write of `name` in the directory `dir`. Without `owner` the new file
/// belongs to the agent, with the mode the file had (or `mode` when it is new).
/// `durable`: the file is synced before the rename and the directory after it.
fn write_in(
    dir: &OwnedFd,
    name: &OsStr,
    contents: &[u8],
    mode: u32,
    owner: Option<Owner>,
    durable: bool,
) -> std::result::Result<(), WriteError> {
    let mut tmp_name = b".".to_vec();
    tmp_name.extend_from_slice(name.as_bytes());
    tmp_name.extend_from_slice(
        format!(
            ".tmp-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        )
        .as_bytes(),
    );
    let tmp_name = OsStr::from_bytes(&tmp_name);
    let other = |e: Errno| WriteError::Other(e.into());
    let mode = match owner {
        Some(_) => mode,
        None => match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st.st_mode & 0o7777,
            Err(_) => mode,
        },
    };
    let fd = rustix::fs::openat(
        dir,
        tmp_name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(other)?;
    let written = (|| {
        if let Some(owner) = owner {
            set_owner_mode(&fd, owner, mode).map_err(other)?;
        } else {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(other)?;
        }
        let mut file = std::fs::File::from(fd);
        file.write_all(contents).map_err(WriteError::Other)?;
        if durable {
            file.sync_all().map_err(WriteError::Other)?;
        }
        drop(file);
        rustix::fs::renameat(dir, tmp_name, dir, name).map_err(|e| WriteError::At(e.into()))?;
        if durable {
            rustix::fs::fsync(dir).map_err(other)?;
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = rustix::fs::unlinkat(dir, tmp_name, AtFlags::empty());
    }
    written
}

/// Opens the directory `name` in `parent`: never through a symlink, never across a
/// mount point.
fn open_child_dir(parent: &impl AsFd, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH
                | ResolveFlags::NO_SYMLINKS
                | ResolveFlags::NO_MAGICLINKS
                | ResolveFlags::NO_XDEV,
        ) {
            Err(Errno::AGAIN) if tries < EAGAIN_TRIES => tries += 1,
            other => return other,
        }
    }
}

fn set_owner_mode(fd: &impl AsFd, owner: Owner, mode: u32) -> rustix::io::Result<()> {
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(owner.uid)),
        Some(rustix::fs::Gid::from_raw(owner.gid)),
    )?;
    // After the chown, which clears set-id bits.
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))
}

/// Owner, then mode (a chown clears set-id bits), then modification time of an open
/// file.
pub fn set_attrs(
    fd: &impl AsFd,
    owner: Owner,
    mode: u32,
    mtime: Option<i64>,
) -> std::io::Result<()> {
    set_owner_mode(fd, owner, mode)?;
    if let Some(mtime) = mtime {
        rustix::fs::futimens(fd, &timestamps(mtime))?;
    }
    Ok(())
}

fn timestamps(mtime: i64) -> rustix::fs::Timestamps {
    let at = rustix::fs::Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    rustix::fs::Timestamps {
        last_access: at,
        last_modification: at,
    }
}

/// Removes `name` in `parent`: a non-directory is unlinked, a directory emptied first.
fn remove_entry(parent: &OwnedFd, name: &OsStr, shown: &Path) -> Result<()> {
    let stat = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(Error::io(shown, e.into())),
    };
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Directory {
        return match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::io(shown, e.into())),
        };
    }
    let dir = open_child_dir(parent, name).map_err(|e| removal_error(shown, e))?;
    empty_dir(&dir, shown)?;
    match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(removal_error(shown, e)),
    }
}

fn removal_error(shown: &Path, e: Errno) -> Error {
    match e {
        Errno::XDEV | Errno::BUSY => rule(
            shown,
            e,
            "a mount point; nothing on another file system is removed",
        ),
        Errno::LOOP | Errno::NOTDIR => rule(shown, e, "replaced by a symlink while being removed"),
        e => Error::io(shown, e.into()),
    }
}

/// Empties the directory `top` (shown as `shown` in errors). Subdirectories are
/// removed depth first with a handle per level; one deeper than
/// [`REMOVE_DEPTH_MAX`] is first moved up into `top` under a new name.
fn empty_dir(top: &OwnedFd, shown: &Path) -> Result<()> {
    // Each pass removes what it can; a directory moved up to `top` is met by the next.
    loop {
        let moved = empty_level(top, top, shown, 0)?;
        if !moved {
            return Ok(());
        }
    }
}

/// Empties `dir`, `depth` levels below `top`. Returns whether a directory was moved up
/// into `top` (so `top` must be emptied again).
fn empty_level(top: &OwnedFd, dir: &OwnedFd, shown: &Path, depth: usize) -> Result<bool> {
    let mut moved = false;
    loop {
        let names = list(dir).map_err(|e| Error::io(shown, e.into()))?;
        if names.is_empty() {
            return Ok(moved);
        }
        let mut removed_any = false;
        for (name, is_dir) in names {
            let name = OsStr::from_bytes(&name);
            let child_shown = shown.join(name);
            let is_dir = match is_dir {
                Some(d) => d,
                None => match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => {
                        rustix::fs::FileType::from_raw_mode(st.st_mode)
                            == rustix::fs::FileType::Directory
                    }
                    Err(Errno::NOENT) => continue,
                    Err(e) => return Err(Error::io(&child_shown, e.into())),
                },
            };
            if !is_dir {
                match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => removed_any = true,
                    Err(e) => return Err(Error::io(&child_shown, e.into())),
                }
                continue;
            }
            if depth + 1 >= REMOVE_DEPTH_MAX {
                let new_name = format!(
                    ".removing-{}-{}",
                    std::process::id(),
                    TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
                );
                rustix::fs::renameat(dir, name, top, new_name.as_str())
                    .map_err(|e| removal_error(&child_shown, e))?;
                moved = true;
                removed_any = true;
                continue;
            }
            let child = open_child_dir(dir, name).map_err(|e| removal_error(&child_shown, e))?;
            moved |= empty_level(top, &child, &child_shown, depth + 1)?;
            drop(child);
            match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => removed_any = true,
                Err(e) => return Err(removal_error(&child_shown, e)),
            }
        }
        if !removed_any {
            return Err(rule(shown, Errno::NOTEMPTY, "entries keep coming back"));
        }
    }
}

/// The names in a directory (without `.` and `..`), each with whether it is a
/// directory when the file system says so.
fn list(dir: &OwnedFd) -> rustix::io::Result<Vec<(Vec<u8>, Option<bool>)>> {
    let mut reader = rustix::fs::Dir::read_from(dir)?;
    let mut out = Vec::new();
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let is_dir = match entry.file_type() {
            rustix::fs::FileType::Unknown => None,
            t => Some(t == rustix::fs::FileType::Directory),
        };
        out.push((name.to_vec(), is_dir));
    }
    Ok(out)
}

/// `rel` must be relative and hold no `..`: the agent's own paths inside a tree are
/// always plain names.
fn check_relative(top: &Path, rel: &Path) -> Result<()> {
    for component in rel.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(rule(
                    &top.join(rel),
                    Errno::INVAL,
                    "a path inside the tree may not hold '..'",
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(rule(
                    &top.join(rel),
                    Errno::INVAL,
                    "a path inside the tree must be relative",
                ));
            }
        }
    }
    Ok(())
}

/// An error for `path` that says which rule refused it.
fn rule(path: &Path, e: Errno, what: &str) -> Error {
    let os: std::io::Error = e.into();
    Error::io(
        path,
        std::io::Error::new(os.kind(), format!("{what} ({os})")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    fn tree() -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        (dir, tree)
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_planted_absolute_etc_link_keeps_the_write_inside() {
        let (top, tree) = tree();
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("hosts"), "the host's").unwrap();
        symlink(host.path(), top.path().join("etc")).unwrap();

        tree.create_dir_all(Path::new("etc"), 0o755, Owner::ROOT)
            .unwrap();
        tree.write_file(Path::new("etc/hosts"), b"inside\n", 0o644, Owner::ROOT)
            .unwrap();

        // The host's directory is as it was.
        assert_eq!(listing(host.path()), vec!["hosts"]);
        assert_eq!(
            std::fs::read_to_string(host.path().join("hosts")).unwrap(),
            "the host's"
        );
        // The link resolved as the instance sees it: inside the tree.
        let inside = top
            .path()
            .join(host.path().strip_prefix("/").unwrap())
            .join("hosts");
        assert_eq!(std::fs::read_to_string(&inside).unwrap(), "inside\n");
        assert_eq!(
            tree.read_file(Path::new("etc/hosts"), 1024).unwrap(),
            b"inside\n"
        );
    }

    #[test]
    fn dot_dot_links_stop_at_the_top() {
        let (top, tree) = tree();
        let host = tempfile::tempdir().unwrap();
        // etc -> ../../../../../../<host dir>: as many ..s as it takes to reach / on the
        // host, then down into the host's directory.
        let depth = top.path().components().count();
        let mut target = PathBuf::new();
        for _ in 0..depth + 2 {
            target.push("..");
        }
        target.push(host.path().strip_prefix("/").unwrap());
        symlink(&target, top.path().join("etc")).unwrap();
        tree.create_dir_all(Path::new("etc"), 0o755, Owner::ROOT)
            .unwrap();
        tree.write_file(Path::new("etc/hostname"), b"web\n", 0o644, Owner::ROOT)
            .unwrap();
        assert!(listing(host.path()).is_empty());
        assert_eq!(
            tree.read_file(Path::new("etc/hostname"), 1024).unwrap(),
            b"web\n"
        );
        // '..' in the agent's own paths is refused outright.
        let err = tree
            .write_file(Path::new("../escape"), b"x", 0o644, Owner::ROOT)
            .unwrap_err();
        assert!(err.chain().contains("may not hold '..'"), "{}", err.chain());
    }

    #[test]
    fn a_symlink_at_the_final_name_is_replaced_not_followed() {
        let (top, tree) = tree();
        let host = tempfile::tempdir().unwrap();
        let host_file = host.path().join("resolv.conf");
        std::fs::write(&host_file, "the host's").unwrap();
        std::fs::create_dir(top.path().join("etc")).unwrap();
        symlink(&host_file, top.path().join("etc/resolv.conf")).unwrap();
        tree.write_file(
            Path::new("etc/resolv.conf"),
            b"nameserver 10.0.0.1\n",
            0o644,
            Owner {
                uid: 1234,
                gid: 5678,
            },
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(&host_file).unwrap(), "the host's");
        let written = top.path().join("etc/resolv.conf");
        let meta = std::fs::symlink_metadata(&written).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
        assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
        assert_eq!(
            std::fs::read_to_string(&written).unwrap(),
            "nameserver 10.0.0.1\n"
        );
        // No temporary file is left beside it.
        assert_eq!(listing(&top.path().join("etc")), vec!["resolv.conf"]);
        // A symlink is removed as a link.
        symlink(&host_file, top.path().join("etc/link")).unwrap();
        tree.remove_file(Path::new("etc/link")).unwrap();
        assert!(host_file.exists());
        assert!(!tree.exists(Path::new("etc/link")).unwrap());
    }

    #[test]
    fn a_directory_at_the_final_name_is_an_error_naming_it() {
        let (top, tree) = tree();
        std::fs::create_dir_all(top.path().join("etc/hosts")).unwrap();
        let err = tree
            .write_file(Path::new("etc/hosts"), b"x", 0o644, Owner::ROOT)
            .unwrap_err();
        let text = err.chain();
        assert!(
            text.contains("etc/hosts") && text.contains("a directory is there"),
            "{text}"
        );
    }

    #[test]
    fn strict_trees_refuse_any_symlink_on_the_way() {
        let top = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        std::fs::create_dir(top.path().join("real")).unwrap();
        symlink("real", top.path().join("inside")).unwrap();
        symlink(host.path(), top.path().join("out")).unwrap();
        let tree = Tree::open_strict(top.path()).unwrap();
        for rel in ["inside/f", "out/f"] {
            let err = tree
                .write_file(Path::new(rel), b"x", 0o644, Owner::ROOT)
                .unwrap_err();
            assert!(
                err.chain().contains("symlinks are not followed"),
                "{}",
                err.chain()
            );
        }
        assert!(listing(host.path()).is_empty());
        assert!(listing(&top.path().join("real")).is_empty());
        let err = tree
            .create_dir_all(Path::new("out/x/y"), 0o755, Owner::ROOT)
            .unwrap_err();
        assert!(err.chain().contains("out"), "{}", err.chain());
        assert!(listing(host.path()).is_empty());
    }

    #[test]
    fn reading_refuses_fifos_and_oversized_files() {
        let (top, tree) = tree();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            top.path().join("fifo"),
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
        let err = tree.read_file(Path::new("fifo"), 10).unwrap_err();
        assert!(
            err.chain().contains("not a regular file"),
            "{}",
            err.chain()
        );
        std::fs::write(top.path().join("big"), "0123456789abc").unwrap();
        let err = tree.read_file(Path::new("big"), 10).unwrap_err();
        assert!(err.chain().contains("longer than 10"), "{}", err.chain());
    }

    #[test]
    fn removal_never_follows_a_symlink_to_a_host_dir() {
        let (top, tree) = tree();
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("precious"), "keep").unwrap();
        let doomed = top.path().join("snapshots/old");
        std::fs::create_dir_all(doomed.join("a/b")).unwrap();
        std::fs::write(doomed.join("a/b/file"), "x").unwrap();
        symlink(host.path(), doomed.join("a/host")).unwrap();
        symlink(host.path().join("precious"), doomed.join("file-link")).unwrap();
        tree.remove_tree(Path::new("snapshots/old")).unwrap();
        assert!(!doomed.exists());
        assert_eq!(
            std::fs::read_to_string(host.path().join("precious")).unwrap(),
            "keep"
        );
        // A symlink as the thing to remove goes as a link.
        symlink(host.path(), top.path().join("snapshots/link")).unwrap();
        tree.remove_tree(Path::new("snapshots/link")).unwrap();
        assert_eq!(listing(host.path()), vec!["precious"]);
        // Nothing there is fine.
        tree.remove_tree(Path::new("snapshots/none")).unwrap();
        remove_host_tree(&top.path().join("no/such")).unwrap();
    }

    #[test]
    fn removal_handles_trees_deeper_than_its_handle_budget() {
        let (top, tree) = tree();
        let mut deep = top.path().join("deep");
        for i in 0..(REMOVE_DEPTH_MAX * 3) {
            deep.push(format!("d{i}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("leaf"), "x").unwrap();
        tree.remove_tree(Path::new("deep")).unwrap();
        assert!(listing(top.path()).is_empty());
    }

    /// Runs `f` with a tmpfs mounted on `mnt` (which takes root), unmounted after.
    fn on_tmpfs<T>(mnt: &Path, f: impl FnOnce() -> T) -> T {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(mnt)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mount a tmpfs on {} (as root)",
            mnt.display()
        );
        let out = f();
        let _ = std::process::Command::new("umount")
            .arg(mnt)
            .status()
            .unwrap();
        out
    }

    #[test]
    fn removal_does_not_cross_a_mount_point() {
        let (top, tree) = tree();
        let mnt = top.path().join("doomed/mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        std::fs::write(top.path().join("doomed/file"), "x").unwrap();
        let (result, kept) = on_tmpfs(&mnt, || {
            std::fs::write(mnt.join("on-the-mount"), "keep").unwrap();
            let result = tree.remove_tree(Path::new("doomed"));
            (result, std::fs::read_to_string(mnt.join("on-the-mount")))
        });
        let err = result.unwrap_err();
        assert!(
            err.chain().contains("doomed/mnt") && err.chain().contains("a mount point"),
            "{}",
            err.chain()
        );
        assert_eq!(kept.unwrap(), "keep");
        // What is beside the mount point went; after the unmount the rest goes too.
        tree.remove_tree(Path::new("doomed")).unwrap();
        assert!(listing(top.path()).is_empty());
    }

    #[test]
    fn writes_through_a_mount_point_are_refused() {
        let (top, tree) = tree();
        let mnt = top.path().join("etc");
        std::fs::create_dir(&mnt).unwrap();
        let (result, left) = on_tmpfs(&mnt, || {
            let result = tree.write_file(Path::new("etc/hosts"), b"x", 0o644, Owner::ROOT);
            (result, listing(&mnt))
        });
        let err = result.unwrap_err();
        assert!(err.chain().contains("mount point"), "{}", err.chain());
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn state_files_are_replaced_whole_and_keep_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zone.json");
        write_atomically(&path, b"one").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(listing(dir.path()), vec!["zone.json"]);
    }
}
