//! The FUSE file system: each kernel request becomes NFSv3 calls on the export.
//!
//! * inodes: a file's inode number is its NFS `fileid` (the export's root is FUSE's
//!   inode 1, and a file whose fileid is 1 takes the root's); the handle of every inode
//!   the kernel was given is kept, so requests on it go to the same server file. Handles
//!   are the server's and stay valid across its restarts.
//! * owners: server ids `0..count` are host ids `base..base+count` (the instance's
//!   range, so its root sees its files as its own), others show as 65534; a request is
//!   made as the caller's id mapped back (AUTH_SYS), and new files and `chown` carry
//!   the mapped-back ids.
//! * data: reads and writes in chunks of the server's `rtmax`/`wtmax` (FSINFO); writes
//!   are UNSTABLE and COMMITted at `close` (flush) and `fsync`; a COMMIT whose verifier
//!   differs from the writes' (the server lost them) fails with EIO.
//! * permissions are checked by the kernel (`default_permissions`) on the mapped ids.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use nfs3_types::nfs3::{
    COMMIT3args, CREATE3args, CREATE3resok, FSINFO3args, FSSTAT3args, GETATTR3args, LINK3args,
    LOOKUP3args, MKDIR3args, MKDIR3resok, Nfs3Option, Nfs3Result, READ3args, READDIRPLUS3args,
    READLINK3args, REMOVE3args, RENAME3args, RMDIR3args, SETATTR3args, SYMLINK3args, SYMLINK3resok,
    WRITE3args, cookieverf3, createhow3, diropargs3, fattr3, filename3, ftype3, nfs_fh3, nfspath3,
    nfstime3, post_op_fh3, sattr3, set_atime, set_mtime, stable_how, symlinkdata3, writeverf3,
};
use nfs3_types::xdr_codec::{Opaque, Unpack};

use crate::nfs::{self, Client, Procedure};
use crate::rpc::Cred;

/// The id a server id outside the range shows as (and a caller outside it is sent as).
pub const NOBODY: u32 = 65534;
/// Largest read and write the kernel is asked to send (its own cap is 256 pages).
pub const MAX_IO: u32 = 1 << 20;
/// How long the kernel may cache attributes and names.
const TTL: Duration = Duration::from_secs(1);
/// READDIRPLUS sizes: a batch a little larger than what one FUSE readdir takes.
const DIRCOUNT: u32 = 8 * 1024;
const MAXCOUNT: u32 = 32 * 1024;

/// Server ids `0..count` are host ids `base..base+count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub base: u32,
    pub count: u32,
}

impl IdMap {
    pub const IDENTITY: IdMap = IdMap {
        base: 0,
        count: u32::MAX,
    };

    pub fn to_host(self, id: u32) -> u32 {
        if id < self.count {
            self.base.saturating_add(id)
        } else {
            NOBODY
        }
    }

    pub fn to_server(self, id: u32) -> u32 {
        match id.checked_sub(self.base) {
            Some(inner) if inner < self.count => inner,
            _ => NOBODY,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub read_only: bool,
    pub ids: IdMap,
}

pub struct Volume {
    client: Client,
    root: nfs_fh3,
    root_fileid: u64,
    opts: Options,
    rtmax: u32,
    wtmax: u32,
    handles: RwLock<HashMap<u64, nfs_fh3>>,
    /// Open directories' cookie verifiers.
    dirs: Mutex<HashMap<u64, cookieverf3>>,
    /// Open files and who opened them: the kernel's write-back of cached writes comes
    /// from a kernel thread, and is sent as the opener.
    opens: Mutex<HashMap<u64, Cred>>,
    next_handle: AtomicU64,
    /// Files with UNSTABLE writes not yet committed, and the writes' verifier.
    unstable: Mutex<HashMap<u64, writeverf3>>,
}

fn err(e: nfs::Error) -> Errno {
    if let nfs::Error::Rpc(rpc) = &e {
        tracing::error!(error = %rpc, "NFS request failed");
    }
    Errno::from_i32(e.errno())
}

fn name3(name: &OsStr) -> filename3<'_> {
    filename3(Opaque::borrowed(name.as_bytes()))
}

fn kind(t: ftype3) -> FileType {
    match t {
        ftype3::NF3REG => FileType::RegularFile,
        ftype3::NF3DIR => FileType::Directory,
        ftype3::NF3BLK => FileType::BlockDevice,
        ftype3::NF3CHR => FileType::CharDevice,
        ftype3::NF3LNK => FileType::Symlink,
        ftype3::NF3SOCK => FileType::Socket,
        ftype3::NF3FIFO => FileType::NamedPipe,
    }
}

fn time3(t: TimeOrNow) -> (bool, nfstime3) {
    match t {
        TimeOrNow::Now => (true, nfstime3::default()),
        TimeOrNow::SpecificTime(t) => (false, nfstime3::try_from(t).unwrap_or_default()),
    }
}

impl Volume {
    /// MOUNTs `export` and reads the root's attributes and the server's sizes.
    pub fn connect(client: Client, export: &str, opts: Options) -> nfs::Result<Volume> {
        let root = client.mount(export)?;
        let attrs = client.call(
            Cred::ROOT,
            &GETATTR3args {
                object: root.clone(),
            },
        )?;
        let root_fileid = attrs.obj_attributes.fileid;
        let info = client.call(
            Cred::ROOT,
            &FSINFO3args {
                fsroot: root.clone(),
            },
        )?;
        let size = |max: u32| if max == 0 { MAX_IO } else { max.min(MAX_IO) };
        Ok(Volume {
            client,
            root,
            root_fileid,
            opts,
            rtmax: size(info.rtmax),
            wtmax: size(info.wtmax),
            handles: RwLock::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            opens: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            unstable: Mutex::new(HashMap::new()),
        })
    }

    pub fn rtmax(&self) -> u32 {
        self.rtmax
    }

    pub fn wtmax(&self) -> u32 {
        self.wtmax
    }

    fn ino_of(&self, fileid: u64) -> u64 {
        if fileid == self.root_fileid {
            1
        } else if fileid == 1 {
            self.root_fileid
        } else {
            fileid
        }
    }

    fn fh(&self, ino: INodeNo) -> Result<nfs_fh3, Errno> {
        if ino.0 == 1 {
            return Ok(self.root.clone());
        }
        self.handles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ino.0)
            .cloned()
            .ok_or(Errno::ESTALE)
    }

    /// An NFSv3 procedure's success, or the errno of its failure.
    fn nfs<A: Procedure>(&self, cred: Cred, args: &A) -> Result<A::Ok, Errno>
    where
        Nfs3Result<A::Ok, A::Fail>: Unpack,
    {
        self.client.call(cred, args).map_err(err)
    }

    fn cred(&self, req: &Request) -> Cred {
        Cred {
            uid: self.opts.ids.to_server(req.uid()),
            gid: self.opts.ids.to_server(req.gid()),
        }
    }

    /// A handle for a file being opened, remembering who opens it.
    fn opened(&self, req: &Request) -> FileHandle {
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.opens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(handle, self.cred(req));
        FileHandle(handle)
    }

    /// Who a request on open file `fh` is made as: its opener.
    fn opener(&self, req: &Request, fh: FileHandle) -> Cred {
        self.opens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh.0)
            .copied()
            .unwrap_or_else(|| self.cred(req))
    }

    fn writable(&self) -> Result<(), Errno> {
        if self.opts.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    fn attr(&self, a: &fattr3) -> FileAttr {
        let mtime = SystemTime::from(&a.mtime);
        FileAttr {
            ino: INodeNo(self.ino_of(a.fileid)),
            size: a.size,
            blocks: a.used.div_ceil(512),
            atime: SystemTime::from(&a.atime),
            mtime,
            ctime: SystemTime::from(&a.ctime),
            crtime: mtime,
            kind: kind(a.type_),
            perm: (a.mode & 0o7777) as u16,
            nlink: a.nlink,
            uid: self.opts.ids.to_host(a.uid),
            gid: self.opts.ids.to_host(a.gid),
            rdev: 0,
            blksize: MAX_IO,
            flags: 0,
        }
    }

    /// Keeps the handle of a file the kernel is told about and gives its attributes.
    fn remember(&self, fh: nfs_fh3, a: &fattr3) -> FileAttr {
        let attr = self.attr(a);
        if attr.ino.0 != 1 {
            self.handles
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(attr.ino.0, fh);
        }
        attr
    }

    fn getattr_fh(&self, fh: &nfs_fh3, cred: Cred) -> Result<fattr3, Errno> {
        let ok = self.nfs(cred, &GETATTR3args { object: fh.clone() })?;
        Ok(ok.obj_attributes)
    }

    fn lookup_in(&self, dir: nfs_fh3, name: &OsStr, cred: Cred) -> Result<FileAttr, Errno> {
        let ok = self.nfs(
            cred,
            &LOOKUP3args {
                what: diropargs3 {
                    dir,
                    name: name3(name),
                },
            },
        )?;
        let attrs = match ok.obj_attributes {
            Nfs3Option::Some(a) => a,
            Nfs3Option::None => self.getattr_fh(&ok.object, cred)?,
        };
        Ok(self.remember(ok.object, &attrs))
    }

    /// CREATE, MKDIR or SYMLINK (`args` makes the one or the other, for the caller) of
    /// `name` in `parent`: the new object, its handle and attributes looked up when the
    /// reply left them out.
    fn make<'a, A>(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &'a OsStr,
        args: impl FnOnce(diropargs3<'a>, Cred) -> A,
    ) -> Result<FileAttr, Errno>
    where
        A: Procedure<Ok: Made>,
        Nfs3Result<A::Ok, A::Fail>: Unpack,
    {
        self.writable()?;
        let dir = self.fh(parent)?;
        let cred = self.cred(req);
        let where_ = diropargs3 {
            dir: dir.clone(),
            name: name3(name),
        };
        match self.nfs(cred, &args(where_, cred))?.made() {
            (Nfs3Option::Some(fh), Nfs3Option::Some(a)) => Ok(self.remember(fh, &a)),
            (Nfs3Option::Some(fh), Nfs3Option::None) => {
                let a = self.getattr_fh(&fh, cred)?;
                Ok(self.remember(fh, &a))
            }
            _ => self.lookup_in(dir, name, cred),
        }
    }

    fn new_attrs(&self, cred: Cred, mode: Option<u32>) -> sattr3 {
        sattr3 {
            mode: mode.map_or(Nfs3Option::None, |m| Nfs3Option::Some(m & 0o7777)),
            uid: Nfs3Option::Some(cred.uid),
            gid: Nfs3Option::Some(cred.gid),
            ..sattr3::default()
        }
    }

    fn do_create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<FileAttr, Errno> {
        self.make(req, parent, name, |where_, cred| {
            let mut attrs = self.new_attrs(cred, Some(mode & !umask));
            if flags & libc::O_TRUNC != 0 {
                attrs.size = Nfs3Option::Some(0);
            }
            let how = if flags & libc::O_EXCL != 0 {
                createhow3::GUARDED(attrs)
            } else {
                createhow3::UNCHECKED(attrs)
            };
            CREATE3args { where_, how }
        })
    }

    /// REMOVE or RMDIR (`args` makes the one or the other) of `name` in `parent`.
    fn remove<'a, A: Procedure>(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &'a OsStr,
        args: impl FnOnce(diropargs3<'a>) -> A,
    ) -> Result<(), Errno>
    where
        Nfs3Result<A::Ok, A::Fail>: Unpack,
    {
        self.writable()?;
        let object = diropargs3 {
            dir: self.fh(parent)?,
            name: name3(name),
        };
        self.nfs(self.cred(req), &args(object)).map(drop)
    }

    /// The attributes a `setattr` changes, owners mapped back to the server's ids.
    fn changes(
        &self,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> sattr3 {
        let ids = self.opts.ids;
        sattr3 {
            mode: mode.map_or(Nfs3Option::None, |m| Nfs3Option::Some(m & 0o7777)),
            uid: uid.map_or(Nfs3Option::None, |u| Nfs3Option::Some(ids.to_server(u))),
            gid: gid.map_or(Nfs3Option::None, |g| Nfs3Option::Some(ids.to_server(g))),
            size: size.map_or(Nfs3Option::None, Nfs3Option::Some),
            atime: match atime.map(time3) {
                None => set_atime::DONT_CHANGE,
                Some((true, _)) => set_atime::SET_TO_SERVER_TIME,
                Some((false, t)) => set_atime::SET_TO_CLIENT_TIME(t),
            },
            mtime: match mtime.map(time3) {
                None => set_mtime::DONT_CHANGE,
                Some((true, _)) => set_mtime::SET_TO_SERVER_TIME,
                Some((false, t)) => set_mtime::SET_TO_CLIENT_TIME(t),
            },
        }
    }

    fn do_setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        new_attributes: sattr3,
    ) -> Result<FileAttr, Errno> {
        self.writable()?;
        let fh = self.fh(ino)?;
        let cred = self.cred(req);
        let ok = self.nfs(
            cred,
            &SETATTR3args {
                object: fh.clone(),
                new_attributes,
                guard: Nfs3Option::None,
            },
        )?;
        let a = match ok.obj_wcc.after {
            Nfs3Option::Some(a) => a,
            Nfs3Option::None => self.getattr_fh(&fh, cred)?,
        };
        Ok(self.attr(&a))
    }

    fn do_read(&self, cred: Cred, ino: INodeNo, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let fh = self.fh(ino)?;
        let mut out = Vec::with_capacity(size as usize);
        while out.len() < size as usize {
            let want = (size - out.len() as u32).min(self.rtmax);
            let ok = self.nfs(
                cred,
                &READ3args {
                    file: fh.clone(),
                    offset: offset + out.len() as u64,
                    count: want,
                },
            )?;
            let data = ok.data.as_ref();
            let n = data.len().min(want as usize);
            out.extend_from_slice(&data[..n]);
            if ok.eof || n == 0 {
                break;
            }
        }
        Ok(out)
    }

    fn do_write(&self, cred: Cred, ino: INodeNo, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        self.writable()?;
        let fh = self.fh(ino)?;
        let mut done = 0usize;
        while done < data.len() {
            let end = (done + self.wtmax as usize).min(data.len());
            let chunk = &data[done..end];
            let ok = self.nfs(
                cred,
                &WRITE3args {
                    file: fh.clone(),
                    offset: offset + done as u64,
                    count: chunk.len() as u32,
                    stable: stable_how::UNSTABLE,
                    data: Opaque::borrowed(chunk),
                },
            )?;
            if ok.count == 0 {
                return Err(Errno::EIO);
            }
            if ok.committed != stable_how::FILE_SYNC {
                let mut unstable = self.unstable.lock().unwrap_or_else(|e| e.into_inner());
                let verf = unstable.entry(ino.0).or_insert(ok.verf);
                if *verf != ok.verf {
                    // The server restarted between two writes: what came before may
                    // be lost; the COMMIT below cannot tell, so say so now.
                    tracing::error!(ino = ino.0, "write verifier changed between writes");
                    *verf = ok.verf;
                    return Err(Errno::EIO);
                }
            }
            done += (ok.count as usize).min(chunk.len());
        }
        Ok(done as u32)
    }

    fn commit(&self, cred: Cred, ino: INodeNo) -> Result<(), Errno> {
        let Some(verf) = self
            .unstable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ino.0)
        else {
            return Ok(());
        };
        let fh = self.fh(ino)?;
        let ok = self.nfs(
            cred,
            &COMMIT3args {
                file: fh,
                offset: 0,
                count: 0,
            },
        )?;
        if ok.verf != verf {
            tracing::error!(
                ino = ino.0,
                "the server restarted before a COMMIT; uncommitted writes may be lost"
            );
            return Err(Errno::EIO);
        }
        Ok(())
    }

    fn do_readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        handle: FileHandle,
        offset: u64,
        reply: &mut ReplyDirectory,
    ) -> Result<(), Errno> {
        let dir = self.fh(ino)?;
        let cred = self.cred(req);
        let mut cookie = offset;
        let mut verf = if offset == 0 {
            cookieverf3::default()
        } else {
            self.dirs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&handle.0)
                .copied()
                .unwrap_or_default()
        };
        loop {
            let ok = self.nfs(
                cred,
                &READDIRPLUS3args {
                    dir: dir.clone(),
                    cookie,
                    cookieverf: verf,
                    dircount: DIRCOUNT,
                    maxcount: MAXCOUNT,
                },
            )?;
            verf = ok.cookieverf;
            self.dirs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(handle.0, verf);
            let entries = ok.reply.entries.into_inner();
            let empty = entries.is_empty();
            for entry in entries {
                let name = OsStr::from_bytes(entry.name.as_ref());
                let (ino, kind) = match (entry.name_attributes, entry.name_handle) {
                    (Nfs3Option::Some(a), Nfs3Option::Some(fh)) if name != "." && name != ".." => {
                        let attr = self.remember(fh, &a);
                        (attr.ino, attr.kind)
                    }
                    (Nfs3Option::Some(a), _) => (INodeNo(self.ino_of(a.fileid)), kind(a.type_)),
                    _ => (INodeNo(self.ino_of(entry.fileid)), FileType::RegularFile),
                };
                if reply.add(ino, entry.cookie, kind, name) {
                    return Ok(());
                }
                cookie = entry.cookie;
            }
            if ok.reply.eof || empty {
                return Ok(());
            }
        }
    }

    fn do_statfs(&self, req: &Request) -> Result<[u64; 5], Errno> {
        let ok = self.nfs(
            self.cred(req),
            &FSSTAT3args {
                fsroot: self.root.clone(),
            },
        )?;
        Ok([
            ok.tbytes / 4096,
            ok.fbytes / 4096,
            ok.abytes / 4096,
            ok.tfiles,
            ok.afiles,
        ])
    }
}

/// The reply of a procedure that makes an object: its handle and attributes, if given.
trait Made {
    fn made(self) -> (post_op_fh3, Nfs3Option<fattr3>);
}

macro_rules! made {
    ($($ok:ty),*) => {$(
        impl Made for $ok {
            fn made(self) -> (post_op_fh3, Nfs3Option<fattr3>) {
                (self.obj, self.obj_attributes)
            }
        }
    )*};
}

made!(CREATE3resok, MKDIR3resok, SYMLINK3resok);

fn answer_entry(reply: ReplyEntry, result: Result<FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn answer_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for Volume {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_IO);
        let _ = config.set_max_readahead(MAX_IO);
        let _ = config.set_max_background(64);
        if !self.opts.read_only {
            // The kernel caches writes and sends them back in the background, several at
            // once, as it does for a local disk; close and fsync still wait for them
            // (and then COMMIT).
            let _ = config.add_capabilities(fuser::InitFlags::FUSE_WRITEBACK_CACHE);
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = self
            .fh(parent)
            .and_then(|dir| self.lookup_in(dir, name, self.cred(req)));
        answer_entry(reply, result);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let result = self
            .fh(ino)
            .and_then(|fh| self.getattr_fh(&fh, self.cred(req)));
        match result {
            Ok(a) => reply.attr(&TTL, &self.attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let changes = self.changes(mode, uid, gid, size, atime, mtime);
        match self.do_setattr(req, ino, changes) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let result = self.fh(ino).and_then(|fh| {
            let ok = self.nfs(self.cred(req), &READLINK3args { symlink: fh })?;
            Ok(ok.data.0.to_vec())
        });
        match result {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // Regular files only: devices, FIFOs and sockets have no use on a shared volume.
        if mode & libc::S_IFMT != libc::S_IFREG {
            reply.error(Errno::EPERM);
            return;
        }
        answer_entry(
            reply,
            self.do_create(req, parent, name, mode, umask, libc::O_EXCL),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self.make(req, parent, name, |where_, cred| MKDIR3args {
            where_,
            attributes: self.new_attrs(cred, Some(mode & !umask)),
        });
        answer_entry(reply, result);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer_empty(
            reply,
            self.remove(req, parent, name, |object| REMOVE3args { object }),
        );
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer_empty(
            reply,
            self.remove(req, parent, name, |object| RMDIR3args { object }),
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let result = self.make(req, parent, link_name, |where_, cred| SYMLINK3args {
            where_,
            symlink: symlinkdata3 {
                symlink_attributes: self.new_attrs(cred, None),
                symlink_data: nfspath3(Opaque::borrowed(target.as_os_str().as_bytes())),
            },
        });
        answer_entry(reply, result);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self.writable().and_then(|()| {
            if !flags.is_empty() {
                // NFSv3 has no exchange and no no-replace.
                return Err(Errno::EINVAL);
            }
            self.nfs(
                self.cred(req),
                &RENAME3args {
                    from: diropargs3 {
                        dir: self.fh(parent)?,
                        name: name3(name),
                    },
                    to: diropargs3 {
                        dir: self.fh(newparent)?,
                        name: name3(newname),
                    },
                },
            )
            .map(drop)
        });
        answer_empty(reply, result);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let result = self.writable().and_then(|()| {
            let file = self.fh(ino)?;
            let dir = self.fh(newparent)?;
            let cred = self.cred(req);
            let ok = self.nfs(
                cred,
                &LINK3args {
                    file: file.clone(),
                    link: diropargs3 {
                        dir,
                        name: name3(newname),
                    },
                },
            )?;
            let a = match ok.file_attributes {
                Nfs3Option::Some(a) => a,
                Nfs3Option::None => self.getattr_fh(&file, cred)?,
            };
            Ok(self.remember(file, &a))
        });
        answer_entry(reply, result);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.opts.read_only && flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            reply.error(Errno::EROFS);
            return;
        }
        match self.fh(ino) {
            Ok(_) => reply.opened(self.opened(req), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.do_read(self.opener(req, fh), ino, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.do_write(self.opener(req, fh), ino, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        answer_empty(reply, self.commit(self.opener(req, fh), ino));
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        answer_empty(reply, self.commit(self.opener(req, fh), ino));
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // The last close: anything still uncommitted is committed as its opener.
        let result = self.commit(self.opener(req, fh), ino);
        self.opens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        answer_empty(reply, result);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if let Err(e) = self.fh(ino) {
            reply.error(e);
            return;
        }
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        reply.opened(FileHandle(handle), FopenFlags::empty());
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.do_readdir(req, ino, fh, offset, &mut reply) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory operations are synchronous on the server (RFC 1813).
        reply.ok();
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.do_statfs(req) {
            Ok([blocks, bfree, bavail, files, ffree]) => {
                reply.statfs(blocks, bfree, bavail, files, ffree, 4096, 255, 4096)
            }
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.do_create(req, parent, name, mode, umask, flags) {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                self.opened(req),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_into_the_range_and_back() {
        let ids = IdMap {
            base: 200_000,
            count: 65536,
        };
        assert_eq!(ids.to_host(0), 200_000);
        assert_eq!(ids.to_host(1000), 201_000);
        assert_eq!(ids.to_host(70_000), NOBODY);
        assert_eq!(ids.to_server(200_000), 0);
        assert_eq!(ids.to_server(265_535), 65535);
        assert_eq!(ids.to_server(0), NOBODY);
        assert_eq!(ids.to_server(265_536), NOBODY);
        assert_eq!(IdMap::IDENTITY.to_server(7), 7);
        assert_eq!(IdMap::IDENTITY.to_host(7), 7);
    }
}
