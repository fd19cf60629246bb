//! ONC RPC (RFC 5531) calls of NFSv3 and MOUNT v3 (RFC 1813): decoding a call, running
//! it on the [`Tree`], encoding the reply.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::Statx;
use rustix::io::Errno;

use crate::fs::{Attr, CreateHow, Cred, Handle, Sattr, SetTime, Tree};
use crate::xdr::{Reader, Writer, XdrError};

/// The NFS program number.
pub const NFS_PROGRAM: u32 = 100_003;
/// The MOUNT program number.
pub const MOUNT_PROGRAM: u32 = 100_005;
/// The one path this server exports.
pub const EXPORT_PATH: &str = "/exports/data";
/// The largest READ and WRITE this server takes (rtmax, wtmax).
pub const MAX_IO: u32 = 1024 * 1024;
/// The largest READDIR reply.
const MAX_DIR_REPLY: u32 = 1024 * 1024;

/// NFSv3 status codes (nfsstat3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Nfsstat {
    Perm = 1,
    NoEnt = 2,
    Io = 5,
    NxIo = 6,
    Acces = 13,
    Exist = 17,
    XDev = 18,
    NoDev = 19,
    NotDir = 20,
    IsDir = 21,
    Inval = 22,
    FBig = 27,
    NoSpc = 28,
    RoFs = 30,
    MLink = 31,
    NameTooLong = 63,
    NotEmpty = 66,
    DQuot = 69,
    Stale = 70,
    BadHandle = 10001,
    NotSync = 10002,
    BadCookie = 10003,
    NotSupp = 10004,
    TooSmall = 10005,
    ServerFault = 10006,
}

impl From<Errno> for Nfsstat {
    fn from(e: Errno) -> Self {
        match e {
            Errno::PERM => Self::Perm,
            Errno::NOENT => Self::NoEnt,
            Errno::NXIO => Self::NxIo,
            Errno::ACCESS => Self::Acces,
            Errno::EXIST => Self::Exist,
            Errno::XDEV => Self::XDev,
            Errno::NODEV => Self::NoDev,
            Errno::NOTDIR => Self::NotDir,
            Errno::ISDIR => Self::IsDir,
            Errno::INVAL => Self::Inval,
            Errno::FBIG => Self::FBig,
            Errno::NOSPC => Self::NoSpc,
            Errno::ROFS => Self::RoFs,
            Errno::MLINK => Self::MLink,
            Errno::NAMETOOLONG => Self::NameTooLong,
            Errno::NOTEMPTY => Self::NotEmpty,
            Errno::DQUOT => Self::DQuot,
            Errno::STALE => Self::Stale,
            // a symlink met inside a path: the server does not follow it
            Errno::LOOP => Self::Acces,
            Errno::OPNOTSUPP | Errno::NOSYS => Self::NotSupp,
            _ => Self::Io,
        }
    }
}

/// The context every call runs in.
pub struct Server {
    /// the exported tree
    pub tree: Tree,
    /// the write verifier: new at every start, so clients resend uncommitted writes
    pub verf: [u8; 8],
}

/// Handles one RPC record (a call): the reply record's payload, or `None` when the
/// record is not a call at all (then nothing is sent).
pub fn handle_record(server: &Server, record: &[u8]) -> Option<Vec<u8>> {
    let mut r = Reader::new(record);
    let xid = r.u32().ok()?;
    if r.u32().ok()? != 0 {
        return None; // a reply sent to the server
    }
    let mut w = Writer::default();
    w.u32(xid);
    w.u32(1); // REPLY
    let header = (|| -> Result<_, XdrError> {
        let rpcvers = r.u32()?;
        let prog = r.u32()?;
        let vers = r.u32()?;
        let procedure = r.u32()?;
        let flavor = r.u32()?;
        let body = r.opaque(400)?;
        let _verf_flavor = r.u32()?;
        let _verf = r.opaque(400)?;
        Ok((rpcvers, prog, vers, procedure, flavor, body))
    })();
    let Ok((rpcvers, prog, vers, procedure, flavor, body)) = header else {
        // the header itself is garbage
        accepted(&mut w, 4);
        return Some(w.buf);
    };
    if rpcvers != 2 {
        w.u32(1); // MSG_DENIED
        w.u32(0); // RPC_MISMATCH
        w.u32(2);
        w.u32(2);
        return Some(w.buf);
    }
    let cred = match flavor {
        0 => Cred::nobody(),
        1 => match auth_sys(body) {
            Ok(c) => c,
            Err(_) => {
                w.u32(1); // MSG_DENIED
                w.u32(1); // AUTH_ERROR
                w.u32(1); // AUTH_BADCRED
                return Some(w.buf);
            }
        },
        _ => {
            w.u32(1);
            w.u32(1);
            w.u32(5); // AUTH_TOOWEAK
            return Some(w.buf);
        }
    };
    let start = w.len();
    accepted(&mut w, 0);
    let result = match (prog, vers) {
        (NFS_PROGRAM, 3) => server
            .tree
            .as_caller(&cred, || nfs(server, procedure, &mut r, &mut w, &cred)),
        (MOUNT_PROGRAM, 3) => mount(server, procedure, &mut r, &mut w),
        (NFS_PROGRAM | MOUNT_PROGRAM, _) => {
            w.truncate(start);
            accepted(&mut w, 2);
            w.u32(3);
            w.u32(3);
            return Some(w.buf);
        }
        _ => {
            w.truncate(start);
            accepted(&mut w, 1); // PROG_UNAVAIL
            return Some(w.buf);
        }
    };
    match result {
        Ok(()) => {}
        Err(CallError::Garbage) => {
            w.truncate(start);
            accepted(&mut w, 4);
        }
        Err(CallError::NoProc) => {
            w.truncate(start);
            accepted(&mut w, 3);
        }
    }
    Some(w.buf)
}

fn accepted(w: &mut Writer, stat: u32) {
    w.u32(0); // MSG_ACCEPTED
    w.u32(0); // verifier: AUTH_NULL
    w.u32(0);
    w.u32(stat);
}

fn auth_sys(body: &[u8]) -> Result<Cred, XdrError> {
    let mut r = Reader::new(body);
    let _stamp = r.u32()?;
    let _machine = r.opaque(255)?;
    let uid = r.u32()?;
    let gid = r.u32()?;
    let n = r.u32()?;
    if n > 16 {
        return Err(XdrError::TooLong { len: n, max: 16 });
    }
    let gids = (0..n).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
    Ok(Cred { uid, gid, gids })
}

enum CallError {
    Garbage,
    NoProc,
}

impl From<XdrError> for CallError {
    fn from(_: XdrError) -> Self {
        Self::Garbage
    }
}

fn mount(
    server: &Server,
    procedure: u32,
    r: &mut Reader<'_>,
    w: &mut Writer,
) -> Result<(), CallError> {
    match procedure {
        0 => {}
        1 => {
            let path = r.opaque(1024)?;
            let path = std::str::from_utf8(path)
                .unwrap_or("")
                .trim_end_matches('/');
            if path != EXPORT_PATH {
                w.u32(2); // MNT3ERR_NOENT
                return Ok(());
            }
            match server.tree.root_handle() {
                Ok(h) => {
                    w.u32(0);
                    w.opaque(&h.encode());
                    w.u32(1);
                    w.u32(1); // AUTH_UNIX
                }
                Err(_) => w.u32(5),
            }
        }
        2 => w.bool(false), // DUMP: no list kept
        3 => {
            r.opaque(1024)?;
        }
        4 => {}
        5 => {
            w.bool(true);
            w.opaque(EXPORT_PATH.as_bytes());
            w.bool(false);
            w.bool(false);
        }
        _ => return Err(CallError::NoProc),
    }
    Ok(())
}

fn fh<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], XdrError> {
    r.opaque(64)
}

fn name<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], XdrError> {
    // longer names are read, and refused with NAMETOOLONG by the tree
    r.opaque(1024)
}

fn set_time(r: &mut Reader<'_>) -> Result<Option<SetTime>, XdrError> {
    Ok(match r.u32()? {
        0 => None,
        1 => Some(SetTime::Now),
        2 => Some(SetTime::At(r.u32()?, r.u32()?)),
        v => return Err(XdrError::BadDiscriminant(v)),
    })
}

fn sattr(r: &mut Reader<'_>) -> Result<Sattr, XdrError> {
    Ok(Sattr {
        mode: if r.bool()? { Some(r.u32()?) } else { None },
        // An id of -1 leaves it unchanged, as chown(2) reads it.
        uid: if r.bool()? { Some(r.u32()?) } else { None }.filter(|&id| id != u32::MAX),
        gid: if r.bool()? { Some(r.u32()?) } else { None }.filter(|&id| id != u32::MAX),
        size: if r.bool()? { Some(r.u64()?) } else { None },
        atime: set_time(r)?,
        mtime: set_time(r)?,
    })
}

fn ftype(st: &Statx) -> u32 {
    match u32::from(st.stx_mode) & libc::S_IFMT {
        libc::S_IFREG => 1,
        libc::S_IFDIR => 2,
        libc::S_IFBLK => 3,
        libc::S_IFCHR => 4,
        libc::S_IFLNK => 5,
        libc::S_IFSOCK => 6,
        libc::S_IFIFO => 7,
        _ => 1,
    }
}

fn time(w: &mut Writer, t: &rustix::fs::StatxTimestamp) {
    w.u32(t.tv_sec as u32);
    w.u32(t.tv_nsec);
}

fn fattr(w: &mut Writer, st: &Attr) {
    w.u32(ftype(st));
    w.u32(u32::from(st.stx_mode) & 0o7777);
    w.u32(st.stx_nlink);
    w.u32(st.stx_uid);
    w.u32(st.stx_gid);
    w.u64(st.stx_size);
    w.u64(st.stx_blocks.saturating_mul(512));
    w.u32(st.stx_rdev_major);
    w.u32(st.stx_rdev_minor);
    w.u64(0); // fsid: one file system
    w.u64(st.stx_ino);
    time(w, &st.stx_atime);
    time(w, &st.stx_mtime);
    time(w, &st.stx_ctime);
}

fn post_op(w: &mut Writer, st: Option<&Attr>) {
    match st {
        Some(st) => {
            w.bool(true);
            fattr(w, st);
        }
        None => w.bool(false),
    }
}

fn pre_op(w: &mut Writer, st: Option<&Attr>) {
    match st {
        Some(st) => {
            w.bool(true);
            w.u64(st.stx_size);
            time(w, &st.stx_mtime);
            time(w, &st.stx_ctime);
        }
        None => w.bool(false),
    }
}

fn wcc(w: &mut Writer, before: Option<&Attr>, after: Option<&Attr>) {
    pre_op(w, before);
    post_op(w, after);
}

fn status(w: &mut Writer, s: Nfsstat) {
    w.u32(s as u32);
}

/// Writes NFS3_OK and the object's attributes: how most successful replies begin.
fn ok_attr(w: &mut Writer, st: &Attr) {
    w.u32(0);
    post_op(w, Some(st));
}

/// Writes a failure with the object's attributes, if known (post_op_attr): the whole
/// of most failed replies.
fn fail_attr(w: &mut Writer, e: Nfsstat, attr: Option<&Attr>) {
    status(w, e);
    post_op(w, attr);
}

/// Writes a failure with the wcc data of the object changed: no attributes before,
/// `now` after.
fn fail_wcc(w: &mut Writer, e: Nfsstat, now: Option<&Attr>) {
    status(w, e);
    wcc(w, None, now);
}

fn post_op_fh(w: &mut Writer, h: &Handle) {
    w.bool(true);
    w.opaque(&h.encode());
}

/// Writes a failure with the wcc data of the directory `dir` (its attributes now).
fn fail_dir(w: &mut Writer, server: &Server, e: Nfsstat, dir: &[u8]) {
    fail_wcc(w, e, server.tree.dir_attr(dir).as_ref());
}

fn access_bits(st: &Attr, cred: &Cred, want: u32) -> u32 {
    let mode = u32::from(st.stx_mode);
    let is_dir = mode & libc::S_IFMT == libc::S_IFDIR;
    let (r, wr, x) = if cred.uid == 0 {
        (true, true, mode & 0o111 != 0 || is_dir)
    } else {
        let shift = if cred.uid == st.stx_uid {
            6
        } else if cred.gid == st.stx_gid || cred.gids.contains(&st.stx_gid) {
            3
        } else {
            0
        };
        let bits = (mode >> shift) & 7;
        (bits & 4 != 0, bits & 2 != 0, bits & 1 != 0)
    };
    let mut out = 0;
    if r {
        out |= 0x01; // READ
    }
    if x && is_dir {
        out |= 0x02; // LOOKUP
    }
    if wr {
        out |= 0x04 | 0x08; // MODIFY, EXTEND
        if is_dir {
            out |= 0x10; // DELETE
        }
    }
    if x && !is_dir {
        out |= 0x20; // EXECUTE
    }
    out & want
}

/// The cookie of a directory entry: a hash of its name, so it stays valid whatever is
/// added or removed around it (entries are returned in cookie order). The high bit is
/// set so no name's cookie is 0 (the start), 1 (`.`) or 2 (`..`).
pub fn cookie_of(name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | (1 << 63)
}

fn nfs(
    server: &Server,
    procedure: u32,
    r: &mut Reader<'_>,
    w: &mut Writer,
    cred: &Cred,
) -> Result<(), CallError> {
    let tree = &server.tree;
    match procedure {
        0 => {}
        1 => {
            let h = fh(r)?;
            match tree.getattr(h) {
                Ok(st) => {
                    w.u32(0);
                    fattr(w, &st);
                }
                Err(e) => status(w, e),
            }
        }
        2 => {
            let h = fh(r)?;
            let s = sattr(r)?;
            let guard = if r.bool()? {
                Some((r.u32()?, r.u32()?))
            } else {
                None
            };
            match tree.setattr(h, &s, guard) {
                Ok((before, after)) => {
                    w.u32(0);
                    wcc(w, Some(&before), Some(&after));
                }
                Err(e) => fail_wcc(w, e, tree.getattr(h).ok().as_ref()),
            }
        }
        3 => {
            let dir = fh(r)?;
            let n = name(r)?;
            match tree.lookup(dir, n) {
                Ok((h, st)) => {
                    w.u32(0);
                    w.opaque(&h.encode());
                    post_op(w, Some(&st));
                    post_op(w, tree.dir_attr(dir).as_ref());
                }
                Err(e) => fail_attr(w, e, tree.dir_attr(dir).as_ref()),
            }
        }
        4 => {
            let h = fh(r)?;
            let want = r.u32()?;
            match tree.getattr(h) {
                Ok(st) => {
                    ok_attr(w, &st);
                    w.u32(access_bits(&st, cred, want));
                }
                Err(e) => fail_attr(w, e, None),
            }
        }
        5 => {
            let h = fh(r)?;
            match tree.readlink(h) {
                Ok((target, st)) => {
                    ok_attr(w, &st);
                    w.opaque(&target);
                }
                Err(e) => fail_attr(w, e, tree.getattr(h).ok().as_ref()),
            }
        }
        6 => {
            let h = fh(r)?;
            let offset = r.u64()?;
            let count = r.u32()?.min(MAX_IO);
            match tree.read(h, offset, count) {
                Ok((data, eof, st)) => {
                    ok_attr(w, &st);
                    w.u32(data.len() as u32);
                    w.bool(eof);
                    w.opaque(&data);
                }
                Err(e) => fail_attr(w, e, tree.getattr(h).ok().as_ref()),
            }
        }
        7 => {
            let h = fh(r)?;
            let offset = r.u64()?;
            let count = r.u32()?;
            let stable = r.u32()?;
            let data = r.opaque(MAX_IO)?;
            if stable > 2 {
                return Err(CallError::Garbage);
            }
            let data = &data[..data.len().min(count as usize)];
            match tree.write(h, offset, data, stable != 0) {
                Ok((before, after)) => {
                    w.u32(0);
                    wcc(w, Some(&before), Some(&after));
                    w.u32(data.len() as u32);
                    w.u32(if stable == 0 { 0 } else { 2 });
                    w.fixed(&server.verf);
                }
                Err(e) => fail_wcc(w, e, tree.getattr(h).ok().as_ref()),
            }
        }
        8 => {
            let dir = fh(r)?;
            let n = name(r)?;
            let how = match r.u32()? {
                0 => CreateHow::Unchecked(sattr(r)?),
                1 => CreateHow::Guarded(sattr(r)?),
                2 => CreateHow::Exclusive(r.fixed::<8>()?),
                v => return Err(XdrError::BadDiscriminant(v).into()),
            };
            made(w, server, dir, tree.create(dir, n, how));
        }
        9 => {
            let dir = fh(r)?;
            let n = name(r)?;
            let s = sattr(r)?;
            made(w, server, dir, tree.mkdir(dir, n, &s));
        }
        10 => {
            let dir = fh(r)?;
            let n = name(r)?;
            let s = sattr(r)?;
            let target = r.opaque(4096)?;
            made(w, server, dir, tree.symlink(dir, n, target, &s));
        }
        11 => {
            // MKNOD: devices, sockets and fifos are not stored on a volume
            let dir = fh(r)?;
            fail_dir(w, server, Nfsstat::NotSupp, dir);
        }
        12 | 13 => {
            let dir = fh(r)?;
            let n = name(r)?;
            match tree.remove(dir, n, procedure == 13) {
                Ok(dst) => {
                    w.u32(0);
                    wcc(w, None, Some(&dst));
                }
                Err(e) => fail_dir(w, server, e, dir),
            }
        }
        14 => {
            let from_dir = fh(r)?;
            let from = name(r)?;
            let to_dir = fh(r)?;
            let to = name(r)?;
            match tree.rename(from_dir, from, to_dir, to) {
                Ok((f, t)) => {
                    w.u32(0);
                    wcc(w, None, Some(&f));
                    wcc(w, None, Some(&t));
                }
                Err(e) => {
                    fail_wcc(w, e, tree.dir_attr(from_dir).as_ref());
                    wcc(w, None, tree.dir_attr(to_dir).as_ref());
                }
            }
        }
        15 => {
            let file = fh(r)?;
            let dir = fh(r)?;
            let n = name(r)?;
            match tree.link(file, dir, n) {
                Ok((st, dst)) => {
                    ok_attr(w, &st);
                    wcc(w, None, Some(&dst));
                }
                Err(e) => {
                    fail_attr(w, e, tree.getattr(file).ok().as_ref());
                    wcc(w, None, tree.dir_attr(dir).as_ref());
                }
            }
        }
        16 | 17 => {
            let dir = fh(r)?;
            let cookie = r.u64()?;
            let _verf = r.fixed::<8>()?;
            let (dircount, maxcount) = if procedure == 16 {
                let c = r.u32()?;
                (c, c)
            } else {
                (r.u32()?, r.u32()?)
            };
            readdir(
                server,
                w,
                dir,
                cookie,
                dircount,
                maxcount.min(MAX_DIR_REPLY),
                procedure == 17,
            );
        }
        18 => {
            let h = fh(r)?;
            match (tree.getattr(h), tree.statvfs()) {
                (Ok(st), Ok(vfs)) => {
                    ok_attr(w, &st);
                    let frsize = vfs.f_frsize.max(1);
                    w.u64(vfs.f_blocks.saturating_mul(frsize));
                    w.u64(vfs.f_bfree.saturating_mul(frsize));
                    w.u64(vfs.f_bavail.saturating_mul(frsize));
                    w.u64(vfs.f_files);
                    w.u64(vfs.f_ffree);
                    w.u64(vfs.f_favail);
                    w.u32(0); // invarsec
                }
                (Err(e), _) | (_, Err(e)) => fail_attr(w, e, None),
            }
        }
        19 => {
            let h = fh(r)?;
            match tree.getattr(h) {
                Ok(st) => {
                    ok_attr(w, &st);
                    w.u32(MAX_IO); // rtmax
                    w.u32(MAX_IO); // rtpref
                    w.u32(4096); // rtmult
                    w.u32(MAX_IO); // wtmax
                    w.u32(MAX_IO); // wtpref
                    w.u32(4096); // wtmult
                    w.u32(64 * 1024); // dtpref
                    w.u64(i64::MAX as u64); // maxfilesize
                    w.u32(0); // time_delta: 1 ns
                    w.u32(1);
                    w.u32(0x1 | 0x2 | 0x8 | 0x10); // LINK, SYMLINK, HOMOGENEOUS, CANSETTIME
                }
                Err(e) => fail_attr(w, e, None),
            }
        }
        20 => {
            let h = fh(r)?;
            match tree.getattr(h) {
                Ok(st) => {
                    ok_attr(w, &st);
                    w.u32(65000); // linkmax
                    w.u32(crate::fs::NAME_MAX as u32);
                    w.bool(true); // no_trunc
                    w.bool(true); // chown_restricted
                    w.bool(false); // case_insensitive
                    w.bool(true); // case_preserving
                }
                Err(e) => fail_attr(w, e, None),
            }
        }
        21 => {
            let h = fh(r)?;
            let _offset = r.u64()?;
            let _count = r.u32()?;
            match tree.commit(h) {
                Ok((before, after)) => {
                    w.u32(0);
                    wcc(w, Some(&before), Some(&after));
                    w.fixed(&server.verf);
                }
                Err(e) => fail_wcc(w, e, tree.getattr(h).ok().as_ref()),
            }
        }
        _ => return Err(CallError::NoProc),
    }
    Ok(())
}

/// Writes the reply of CREATE, MKDIR or SYMLINK in `dir`: the new object's handle and
/// attributes and the directory's wcc data, or the failure with the directory's.
fn made(w: &mut Writer, server: &Server, dir: &[u8], made: Result<(Handle, Attr, Attr), Nfsstat>) {
    match made {
        Ok((h, st, dst)) => {
            w.u32(0);
            post_op_fh(w, &h);
            post_op(w, Some(&st));
            wcc(w, None, Some(&dst));
        }
        Err(e) => fail_dir(w, server, e, dir),
    }
}

#[allow(clippy::too_many_arguments)]
fn readdir(
    server: &Server,
    w: &mut Writer,
    dir: &[u8],
    cookie: u64,
    dircount: u32,
    maxcount: u32,
    plus: bool,
) {
    let tree = &server.tree;
    let (mut entries, dst) = match tree.list(dir) {
        Ok(l) => l,
        Err(e) => return fail_attr(w, e, tree.dir_attr(dir).as_ref()),
    };
    let (self_h, parent) = match (tree.lookup(dir, b"."), tree.lookup(dir, b"..")) {
        (Ok(s), Ok(p)) => (s, p),
        (Err(e), _) | (_, Err(e)) => return fail_attr(w, e, None),
    };
    let mut all: Vec<(u64, Vec<u8>, u64)> = Vec::with_capacity(entries.len() + 2);
    all.push((1, b".".to_vec(), self_h.1.stx_ino));
    all.push((2, b"..".to_vec(), parent.1.stx_ino));
    for (name, ino) in entries.drain(..) {
        let bytes = name.as_bytes().to_vec();
        all.push((cookie_of(&bytes), bytes, ino));
    }
    all.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let start = w.len();
    ok_attr(w, &dst);
    w.fixed(&[0u8; 8]); // cookieverf: cookies never expire
    // what is left once the list's end (false, eof) is written
    let limit = maxcount.max(512) as usize;
    let mut names_size = 0usize;
    let mut any = false;
    let mut eof = true;
    for (c, name, ino) in all.into_iter().filter(|e| e.0 > cookie) {
        let mark = w.len();
        w.bool(true);
        w.u64(ino);
        w.opaque(&name);
        w.u64(c);
        if plus {
            let looked = if name == b"." {
                Some(self_h)
            } else if name == b".." {
                Some(parent)
            } else {
                tree.entry_attr(dir, OsStr::from_bytes(&name))
            };
            match looked {
                Some((h, st)) => {
                    post_op(w, Some(&st));
                    post_op_fh(w, &h);
                }
                None => {
                    post_op(w, None);
                    w.bool(false);
                }
            }
        }
        names_size += 24 + name.len();
        if w.len() - start + 8 > limit || (plus && names_size > dircount.max(512) as usize) {
            w.truncate(mark);
            eof = false;
            break;
        }
        any = true;
    }
    if !any && !eof {
        w.truncate(start);
        fail_attr(w, Nfsstat::TooSmall, Some(&dst));
        return;
    }
    w.bool(false);
    w.bool(eof);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the rpc fuzz target: a SETATTR owner of -1 reached rustix's `Uid::from_raw`,
    /// which refuses it; -1 now leaves the owner as it is, as chown(2) reads it.
    #[test]
    fn an_owner_of_minus_one_is_no_change() {
        let mut bytes = Vec::new();
        // mode not set; uid set to -1; gid set to 7; size, atime, mtime not set.
        for word in [0u32, 1, u32::MAX, 1, 7, 0, 0, 0] {
            bytes.extend_from_slice(&word.to_be_bytes());
        }
        let s = sattr(&mut Reader::new(&bytes)).unwrap();
        assert_eq!(s.uid, None);
        assert_eq!(s.gid, Some(7));
    }
}
