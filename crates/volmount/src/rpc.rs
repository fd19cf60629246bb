//! ONC RPC (RFC 5531) over TCP, record marking included, to one server address: a small
//! pool of connections, each carrying one call at a time, so as many calls are in
//! flight as FUSE hands over at once (up to [`Transport::max_connections`]).
//!
//! A call whose connection fails (the server restarted, a reset, a timeout) is sent
//! again on a new connection, with a growing pause between connection attempts, until
//! the call's deadline ([`Transport::retry_for`]); only then does the caller get an
//! error. Every call is retried this way, idempotent or not: a retried CREATE, REMOVE or
//! RENAME can answer EEXIST or ENOENT after the first one was done, which is NFS over
//! TCP's usual behaviour.

use std::io::{Cursor, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use nfs3_types::rpc::{
    RPC_VERSION_2, accept_stat_data, auth_unix, call_body, msg_body, opaque_auth, reply_body,
    rpc_msg,
};
use nfs3_types::xdr_codec::{Opaque, Pack, Unpack};

/// The largest reply record taken: a READ of the largest size plus its headers.
pub const MAX_RECORD: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("the server at {addr} did not answer within {waited:?}: {last}")]
    Unreachable {
        addr: SocketAddr,
        waited: Duration,
        last: String,
    },
    #[error("bad reply: {0}")]
    BadReply(String),
    #[error("the server refused the call: {0}")]
    Refused(String),
    #[error("cannot encode the call: {0}")]
    Encode(String),
}

/// Who a call is made as (AUTH_SYS, RFC 5531 appendix A).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cred {
    pub uid: u32,
    pub gid: u32,
}

impl Cred {
    pub const ROOT: Cred = Cred { uid: 0, gid: 0 };

    fn auth(self) -> opaque_auth<'static> {
        opaque_auth::auth_unix(&auth_unix {
            stamp: 0,
            machinename: Opaque::borrowed(b"volmount"),
            uid: self.uid,
            gid: self.gid,
            gids: vec![self.gid],
        })
    }
}

pub struct Transport {
    addr: SocketAddr,
    idle: Mutex<Pool>,
    freed: Condvar,
    xid: AtomicU32,
    /// How long one call keeps trying before it fails.
    pub retry_for: Duration,
    /// How long one attempt waits for its reply.
    pub reply_timeout: Duration,
    pub max_connections: usize,
}

struct Pool {
    idle: Vec<TcpStream>,
    open: usize,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

impl Transport {
    pub fn new(addr: SocketAddr, max_connections: usize) -> Transport {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
            .unwrap_or(1)
            ^ std::process::id().rotate_left(16);
        Transport {
            addr,
            idle: Mutex::new(Pool {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            xid: AtomicU32::new(seed),
            retry_for: Duration::from_secs(60),
            reply_timeout: Duration::from_secs(30),
            max_connections: max_connections.max(1),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Calls procedure `proc` of program `prog` version `vers` and decodes the result.
    pub fn call<A: Pack, R: Unpack>(
        &self,
        prog: u32,
        vers: u32,
        proc: u32,
        cred: Cred,
        args: &A,
    ) -> Result<R, RpcError> {
        let deadline = Instant::now() + self.retry_for;
        let mut backoff = BACKOFF_FIRST;
        let mut last;
        loop {
            let xid = self.xid.fetch_add(1, Ordering::Relaxed);
            let record = encode_call(xid, prog, vers, proc, cred, args)?;
            match self.attempt(xid, &record) {
                Ok(body) => return decode_result(&body),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(e)) => last = e,
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RpcError::Unreachable {
                    addr: self.addr,
                    waited: self.retry_for,
                    last: last.to_string(),
                });
            }
            tracing::warn!(server = %self.addr, error = %last, "NFS call failed; retrying");
            std::thread::sleep(backoff.min(deadline - now));
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn attempt(&self, xid: u32, record: &[u8]) -> Result<Vec<u8>, Attempt> {
        let mut conn = self.checkout().map_err(Attempt::Retry)?;
        let result = exchange(&mut conn, xid, record);
        match result {
            Ok(body) => {
                self.checkin(conn);
                parse_reply(&body, xid)
                    .map(|range| body[range].to_vec())
                    .map_err(Attempt::Fatal)
            }
            Err(e) => {
                // The connection is in an unknown state: closed, never reused.
                drop(conn);
                self.forget_one();
                Err(Attempt::Retry(e))
            }
        }
    }

    fn checkout(&self) -> std::io::Result<TcpStream> {
        let mut pool = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(conn) = pool.idle.pop() {
                return Ok(conn);
            }
            if pool.open < self.max_connections {
                pool.open += 1;
                break;
            }
            pool = self.freed.wait(pool).unwrap_or_else(|e| e.into_inner());
        }
        drop(pool);
        match self.connect() {
            Ok(conn) => Ok(conn),
            Err(e) => {
                self.forget_one();
                Err(e)
            }
        }
    }

    fn connect(&self) -> std::io::Result<TcpStream> {
        let conn = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT)?;
        conn.set_nodelay(true)?;
        conn.set_read_timeout(Some(self.reply_timeout))?;
        conn.set_write_timeout(Some(self.reply_timeout))?;
        Ok(conn)
    }

    fn checkin(&self, conn: TcpStream) {
        let mut pool = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        pool.idle.push(conn);
        self.freed.notify_one();
    }

    fn forget_one(&self) {
        let mut pool = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        pool.open = pool.open.saturating_sub(1);
        self.freed.notify_one();
    }
}

enum Attempt {
    Retry(std::io::Error),
    Fatal(RpcError),
}

fn encode_call<A: Pack>(
    xid: u32,
    prog: u32,
    vers: u32,
    proc: u32,
    cred: Cred,
    args: &A,
) -> Result<Vec<u8>, RpcError> {
    let auth = cred.auth();
    let msg = rpc_msg {
        xid,
        body: msg_body::CALL(call_body {
            rpcvers: RPC_VERSION_2,
            prog,
            vers,
            proc,
            cred: auth.borrow(),
            verf: opaque_auth::default(),
        }),
    };
    let len = msg.packed_size() + args.packed_size();
    let header = u32::try_from(len)
        .ok()
        .filter(|l| *l < 0x8000_0000)
        .ok_or_else(|| RpcError::Encode(format!("a call of {len} bytes")))?;
    let mut buf = Vec::with_capacity(len + 4);
    buf.extend_from_slice(&(header | 0x8000_0000).to_be_bytes());
    msg.pack(&mut buf)
        .map_err(|e| RpcError::Encode(e.to_string()))?;
    args.pack(&mut buf)
        .map_err(|e| RpcError::Encode(e.to_string()))?;
    Ok(buf)
}

/// Sends one call record and reads records until the one answering `xid`.
fn exchange(conn: &mut TcpStream, xid: u32, record: &[u8]) -> std::io::Result<Vec<u8>> {
    conn.write_all(record)?;
    loop {
        let reply = read_record(conn)?;
        // A reply to an earlier call of this connection cannot be here (each call's
        // reply is read before the next is sent), but a server may answer twice.
        if reply.len() >= 4 && reply[..4] == xid.to_be_bytes() {
            return Ok(reply);
        }
    }
}

/// Reads one RPC record (all its fragments), at most [`MAX_RECORD`] bytes.
pub fn read_record<R: Read>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mut header = [0u8; 4];
        r.read_exact(&mut header)?;
        let header = u32::from_be_bytes(header);
        let len = (header & 0x7fff_ffff) as usize;
        if out.len() + len > MAX_RECORD {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a reply record over {MAX_RECORD} bytes"),
            ));
        }
        // Read as it arrives: memory follows the bytes sent, not the length announced.
        let got = r.by_ref().take(len as u64).read_to_end(&mut out)?;
        if got < len {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if header & 0x8000_0000 != 0 {
            return Ok(out);
        }
    }
}

/// Checks an RPC reply (a whole record) for `xid` and gives the range of its results.
pub fn parse_reply(record: &[u8], xid: u32) -> Result<std::ops::Range<usize>, RpcError> {
    let mut cursor = Cursor::new(record);
    let (msg, _) =
        rpc_msg::unpack(&mut cursor).map_err(|e| RpcError::BadReply(format!("header: {e}")))?;
    if msg.xid != xid {
        return Err(RpcError::BadReply(format!(
            "xid {} where {xid} was expected",
            msg.xid
        )));
    }
    let accepted = match msg.body {
        msg_body::REPLY(reply_body::MSG_ACCEPTED(accepted)) => accepted,
        msg_body::REPLY(reply_body::MSG_DENIED(denied)) => {
            return Err(RpcError::Refused(format!("{denied:?}")));
        }
        msg_body::CALL(_) => return Err(RpcError::BadReply("a call, not a reply".into())),
    };
    match accepted.reply_data {
        accept_stat_data::SUCCESS => {}
        other => return Err(RpcError::Refused(format!("{other:?}"))),
    }
    let start = usize::try_from(cursor.position()).unwrap_or(record.len());
    Ok(start.min(record.len())..record.len())
}

/// Decodes a procedure's results, all of `body`.
pub fn decode_result<R: Unpack>(body: &[u8]) -> Result<R, RpcError> {
    let mut cursor = Cursor::new(body);
    let (value, _) = R::unpack(&mut cursor).map_err(|e| RpcError::BadReply(e.to_string()))?;
    if cursor.position() != body.len() as u64 {
        return Err(RpcError::BadReply(format!(
            "{} bytes left over after the results",
            body.len() as u64 - cursor.position()
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_several_fragments_are_joined() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&3u32.to_be_bytes());
        bytes.extend_from_slice(b"abc");
        bytes.extend_from_slice(&(0x8000_0000u32 | 2).to_be_bytes());
        bytes.extend_from_slice(b"de");
        let record = read_record(&mut Cursor::new(bytes)).unwrap();
        assert_eq!(record, b"abcde");
    }

    #[test]
    fn an_oversized_record_is_refused_before_it_is_read() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(0x8000_0000u32 | (MAX_RECORD as u32 + 1)).to_be_bytes());
        let err = read_record(&mut Cursor::new(bytes)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn garbage_is_a_bad_reply_not_a_panic() {
        assert!(matches!(
            parse_reply(&[0, 0, 0, 7, 0, 0], 7),
            Err(RpcError::BadReply(_))
        ));
        assert!(parse_reply(&[], 7).is_err());
    }

    #[test]
    fn a_call_encodes_its_auth_sys_identity() {
        let record = encode_call(
            9,
            100_003,
            3,
            0,
            Cred { uid: 5, gid: 6 },
            &nfs3_types::xdr_codec::Void,
        )
        .unwrap();
        // Marker, xid, CALL, rpcvers, prog, vers, proc, AUTH_UNIX.
        assert_eq!(record[0] & 0x80, 0x80);
        assert_eq!(&record[4..8], &9u32.to_be_bytes());
        assert_eq!(&record[28..32], &1u32.to_be_bytes());
    }
}
