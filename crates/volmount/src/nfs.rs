//! The NFSv3 and MOUNT v3 client (RFC 1813) on [`Transport`]: both programs on one
//! TCP port (Triton's volume servers have no portmapper).

use std::net::SocketAddr;

use nfs3_types::mount::{MOUNT_PROGRAM, dirpath};
use nfs3_types::nfs3::{
    COMMIT3args, COMMIT3resfail, COMMIT3resok, CREATE3args, CREATE3resfail, CREATE3resok,
    FSINFO3args, FSINFO3resfail, FSINFO3resok, FSSTAT3args, FSSTAT3resfail, FSSTAT3resok,
    GETATTR3args, GETATTR3resok, LINK3args, LINK3resfail, LINK3resok, LOOKUP3args, LOOKUP3resfail,
    LOOKUP3resok, MKDIR3args, MKDIR3resfail, MKDIR3resok, NFS_PROGRAM, Nfs3Result, READ3args,
    READ3resfail, READ3resok, READDIRPLUS3args, READDIRPLUS3resfail, READDIRPLUS3resok,
    READLINK3args, READLINK3resfail, READLINK3resok, REMOVE3args, REMOVE3resfail, REMOVE3resok,
    RENAME3args, RENAME3resfail, RENAME3resok, RMDIR3args, RMDIR3resfail, RMDIR3resok,
    SETATTR3args, SETATTR3resfail, SETATTR3resok, SYMLINK3args, SYMLINK3resfail, SYMLINK3resok,
    WRITE3args, WRITE3resfail, WRITE3resok, nfs_fh3, nfsstat3,
};
use nfs3_types::xdr_codec::Void;
use nfs3_types::xdr_codec::{Opaque, Pack, Unpack};

use crate::rpc::{Cred, RpcError, Transport};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Nfs(nfsstat3),
    #[error("MOUNT of {path} refused: {status}")]
    Mount { path: String, status: String },
    #[error(transparent)]
    Rpc(#[from] RpcError),
}

impl Error {
    /// The errno a file system call gets for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Nfs(status) => errno_of(*status),
            Error::Mount { .. } => libc::EACCES,
            Error::Rpc(RpcError::Unreachable { .. }) => libc::EIO,
            Error::Rpc(_) => libc::EIO,
        }
    }
}

/// RFC 1813's status to the errno a local file system would give.
pub fn errno_of(status: nfsstat3) -> i32 {
    use nfsstat3::*;
    match status {
        NFS3_OK => 0,
        NFS3ERR_PERM => libc::EPERM,
        NFS3ERR_NOENT => libc::ENOENT,
        NFS3ERR_IO => libc::EIO,
        NFS3ERR_NXIO => libc::ENXIO,
        NFS3ERR_ACCES => libc::EACCES,
        NFS3ERR_EXIST => libc::EEXIST,
        NFS3ERR_XDEV => libc::EXDEV,
        NFS3ERR_NODEV => libc::ENODEV,
        NFS3ERR_NOTDIR => libc::ENOTDIR,
        NFS3ERR_ISDIR => libc::EISDIR,
        NFS3ERR_INVAL => libc::EINVAL,
        NFS3ERR_FBIG => libc::EFBIG,
        NFS3ERR_NOSPC => libc::ENOSPC,
        NFS3ERR_ROFS => libc::EROFS,
        NFS3ERR_MLINK => libc::EMLINK,
        NFS3ERR_NAMETOOLONG => libc::ENAMETOOLONG,
        NFS3ERR_NOTEMPTY => libc::ENOTEMPTY,
        NFS3ERR_DQUOT => libc::EDQUOT,
        NFS3ERR_STALE | NFS3ERR_BADHANDLE => libc::ESTALE,
        NFS3ERR_REMOTE => libc::EREMOTE,
        NFS3ERR_NOT_SYNC | NFS3ERR_BAD_COOKIE | NFS3ERR_BADTYPE => libc::EINVAL,
        NFS3ERR_NOTSUPP => libc::EOPNOTSUPP,
        NFS3ERR_TOOSMALL => libc::ERANGE,
        NFS3ERR_JUKEBOX => libc::EAGAIN,
        NFS3ERR_SERVERFAULT => libc::EIO,
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// An NFSv3 procedure's arguments: which procedure they are for, and what its reply
/// carries on success and on failure.
pub trait Procedure: Pack {
    const PROC: NFS_PROGRAM;
    type Ok;
    type Fail;
}

macro_rules! procedures {
    ($($args:ty => $proc:ident, $ok:ty, $fail:ty;)*) => {$(
        impl Procedure for $args {
            const PROC: NFS_PROGRAM = NFS_PROGRAM::$proc;
            type Ok = $ok;
            type Fail = $fail;
        }
    )*};
}

procedures! {
    GETATTR3args => NFSPROC3_GETATTR, GETATTR3resok, Void;
    SETATTR3args => NFSPROC3_SETATTR, SETATTR3resok, SETATTR3resfail;
    LOOKUP3args<'_> => NFSPROC3_LOOKUP, LOOKUP3resok, LOOKUP3resfail;
    READLINK3args => NFSPROC3_READLINK, READLINK3resok<'static>, READLINK3resfail;
    READ3args => NFSPROC3_READ, READ3resok<'static>, READ3resfail;
    WRITE3args<'_> => NFSPROC3_WRITE, WRITE3resok, WRITE3resfail;
    CREATE3args<'_> => NFSPROC3_CREATE, CREATE3resok, CREATE3resfail;
    MKDIR3args<'_> => NFSPROC3_MKDIR, MKDIR3resok, MKDIR3resfail;
    SYMLINK3args<'_> => NFSPROC3_SYMLINK, SYMLINK3resok, SYMLINK3resfail;
    REMOVE3args<'_> => NFSPROC3_REMOVE, REMOVE3resok, REMOVE3resfail;
    RMDIR3args<'_> => NFSPROC3_RMDIR, RMDIR3resok, RMDIR3resfail;
    RENAME3args<'_, '_> => NFSPROC3_RENAME, RENAME3resok, RENAME3resfail;
    LINK3args<'_> => NFSPROC3_LINK, LINK3resok, LINK3resfail;
    READDIRPLUS3args => NFSPROC3_READDIRPLUS, READDIRPLUS3resok<'static>, READDIRPLUS3resfail;
    FSSTAT3args => NFSPROC3_FSSTAT, FSSTAT3resok, FSSTAT3resfail;
    FSINFO3args => NFSPROC3_FSINFO, FSINFO3resok, FSINFO3resfail;
    COMMIT3args => NFSPROC3_COMMIT, COMMIT3resok, COMMIT3resfail;
}

pub struct Client {
    transport: Transport,
}

impl Client {
    pub fn new(addr: SocketAddr, max_connections: usize) -> Client {
        Client {
            transport: Transport::new(addr, max_connections),
        }
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub fn transport_mut(&mut self) -> &mut Transport {
        &mut self.transport
    }

    /// MOUNT v3 MNT of `path`: the export's root handle.
    pub fn mount(&self, path: &str) -> Result<nfs_fh3> {
        let args = dirpath(Opaque::borrowed(path.as_bytes()));
        let res: MountReply = self.transport.call(
            nfs3_types::mount::PROGRAM,
            nfs3_types::mount::VERSION,
            MOUNT_PROGRAM::MOUNTPROC3_MNT as u32,
            Cred::ROOT,
            &args,
        )?;
        match res {
            MountReply::Ok(fh) => Ok(nfs_fh3 {
                data: Opaque::owned(fh),
            }),
            MountReply::Err(status) => Err(Error::Mount {
                path: path.to_string(),
                status: match status {
                    1 => "MNT3ERR_PERM".into(),
                    2 => "MNT3ERR_NOENT".into(),
                    13 => "MNT3ERR_ACCES".into(),
                    20 => "MNT3ERR_NOTDIR".into(),
                    other => format!("MOUNT status {other}"),
                },
            }),
        }
    }

    /// An NFSv3 procedure: its success, or the reply's status as the error.
    pub fn call<A: Procedure>(&self, cred: Cred, args: &A) -> Result<A::Ok>
    where
        Nfs3Result<A::Ok, A::Fail>: Unpack,
    {
        let res: Nfs3Result<A::Ok, A::Fail> = self.transport.call(
            nfs3_types::nfs3::PROGRAM,
            nfs3_types::nfs3::VERSION,
            A::PROC as u32,
            cred,
            args,
        )?;
        match res {
            Nfs3Result::Ok(v) => Ok(v),
            Nfs3Result::Err((status, _)) => Err(Error::Nfs(status)),
        }
    }
}

/// MNT's reply, read by hand: the handle (at most 64 bytes, RFC 1813) and nothing of the
/// auth flavours after it, whose count a generic decoder would allocate for unchecked.
#[derive(Debug)]
pub enum MountReply {
    Ok(Vec<u8>),
    Err(u32),
}

impl nfs3_types::xdr_codec::Unpack for MountReply {
    fn unpack(input: &mut impl std::io::Read) -> nfs3_types::xdr_codec::Result<(Self, usize)> {
        let (status, mut n) = u32::unpack(input)?;
        if status != 0 {
            return Ok((MountReply::Err(status), n));
        }
        let (len, l) = u32::unpack(input)?;
        n += l;
        if len as usize > nfs3_types::mount::FHSIZE3 {
            return Err(nfs3_types::xdr_codec::Error::InvalidEnumValue(len));
        }
        let padded = (len as usize).div_ceil(4) * 4;
        let mut fh = vec![0u8; padded];
        input
            .read_exact(&mut fh)
            .map_err(nfs3_types::xdr_codec::Error::Io)?;
        fh.truncate(len as usize);
        n += padded;
        // The flavours: read through to the end, none kept.
        let mut rest = Vec::new();
        n += input
            .read_to_end(&mut rest)
            .map_err(nfs3_types::xdr_codec::Error::Io)?;
        Ok((MountReply::Ok(fh), n))
    }
}
