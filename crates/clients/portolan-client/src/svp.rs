//! The SVP wire protocol (version 1), as Triton's Portolan and illumos' varpd speak it.
//!
//! Every message is a 16-byte header and a body of `size` bytes, all integers
//! big-endian:
//!
//! ```text
//! 0 ver u16 | 2 op u16 | 4 size u32 | 8 id u32 | 12 crc32 u32 | 16 body[size]
//! ```
//!
//! The CRC is CRC-32 (IEEE, zlib's `crc32`) over header and body with the crc field
//! zeroed. A response carries its request's id.
//!
//! [`decode_request`] and [`decode_response`] take the bytes received so far and give a
//! whole message and its length, [`Decoded::Incomplete`] when more bytes are needed, or a
//! [`FrameError`] naming the field and the rule broken. They never panic, and never
//! allocate more than the body they were given; a header announcing a frame of more
//! than [`MAX_FRAME_LEN`] bytes (1 MiB, header included) is refused before its body is
//! awaited. [`Request::encode`] and [`Response::encode`] write whole frames.
//!
//! BULK, SHOOTDOWN and the v2 ROUTE ops have op codes here but no bodies: neither
//! Triton's Portolan nor varpd implements them.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use uuid::Uuid;

/// The protocol version written and accepted.
pub const VERSION: u16 = 1;
/// The TCP port Portolan listens on (the year of the oldest surviving portolan chart).
pub const DEFAULT_PORT: u16 = 1296;
/// Header length.
pub const HEADER_LEN: usize = 16;
/// The largest frame, header included, either side accepts: 1 MiB.
pub const MAX_FRAME_LEN: usize = 1 << 20;
/// The largest body ([`MAX_FRAME_LEN`] less the header).
pub const MAX_BODY_LEN: usize = MAX_FRAME_LEN - HEADER_LEN;

/// Body of a VL2 request.
pub const VL2_REQ_LEN: usize = 12;
/// Body of a VL2 ack.
pub const VL2_ACK_LEN: usize = 20;
/// Body of a VL3 request.
pub const VL3_REQ_LEN: usize = 24;
/// Body of a VL3 ack.
pub const VL3_ACK_LEN: usize = 28;
/// Body of a LOG request.
pub const LOG_REQ_LEN: usize = 20;
/// A VL2 entry of a LOG ack.
pub const LOG_VL2_LEN: usize = 32;
/// A VL3 entry of a LOG ack.
pub const LOG_VL3_LEN: usize = 44;
/// A status-only body (LOG_RM ack; the head of a LOG ack).
pub const STATUS_LEN: usize = 4;

/// The op codes (`svp_op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Op {
    /// `SVP_R_UNKNOWN`.
    Unknown = 0x00,
    /// `SVP_R_PING`: empty body.
    Ping = 0x01,
    /// `SVP_R_PONG`: empty body.
    Pong = 0x02,
    /// `SVP_R_VL2_REQ`.
    Vl2Req = 0x03,
    /// `SVP_R_VL2_ACK`.
    Vl2Ack = 0x04,
    /// `SVP_R_VL3_REQ`.
    Vl3Req = 0x05,
    /// `SVP_R_VL3_ACK`.
    Vl3Ack = 0x06,
    /// `SVP_R_BULK_REQ` (implemented by nobody).
    BulkReq = 0x07,
    /// `SVP_R_BULK_ACK` (implemented by nobody).
    BulkAck = 0x08,
    /// `SVP_R_LOG_REQ`.
    LogReq = 0x09,
    /// `SVP_R_LOG_ACK`.
    LogAck = 0x0A,
    /// `SVP_R_LOG_RM`.
    LogRm = 0x0B,
    /// `SVP_R_LOG_RM_ACK`.
    LogRmAck = 0x0C,
    /// `SVP_R_SHOOTDOWN` (implemented by nobody).
    Shootdown = 0x0D,
    /// `SVP_R_ROUTE_REQ` (v2 only).
    RouteReq = 0x0E,
    /// `SVP_R_ROUTE_ACK` (v2 only).
    RouteAck = 0x0F,
}

impl Op {
    /// The op of a code, if it is one.
    pub fn from_code(code: u16) -> Option<Op> {
        use Op::*;
        Some(match code {
            0x00 => Unknown,
            0x01 => Ping,
            0x02 => Pong,
            0x03 => Vl2Req,
            0x04 => Vl2Ack,
            0x05 => Vl3Req,
            0x06 => Vl3Ack,
            0x07 => BulkReq,
            0x08 => BulkAck,
            0x09 => LogReq,
            0x0A => LogAck,
            0x0B => LogRm,
            0x0C => LogRmAck,
            0x0D => Shootdown,
            0x0E => RouteReq,
            0x0F => RouteAck,
            _ => return None,
        })
    }

    /// The code on the wire.
    pub fn code(self) -> u16 {
        self as u16
    }
}

/// A reply's status (`svp_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Status {
    /// `SVP_S_OK`.
    Ok = 0,
    /// `SVP_S_FATAL`: the server failed; the client should close the connection.
    Fatal = 1,
    /// `SVP_S_NOTFOUND`.
    NotFound = 2,
    /// `SVP_S_BADL3TYPE`: a VL3 request's type is neither IPv4 nor IPv6.
    BadL3Type = 3,
    /// `SVP_S_BADBULK`.
    BadBulk = 4,
}

impl Status {
    /// The status of a code, if it is one.
    pub fn from_code(code: u32) -> Option<Status> {
        Some(match code {
            0 => Status::Ok,
            1 => Status::Fatal,
            2 => Status::NotFound,
            3 => Status::BadL3Type,
            4 => Status::BadBulk,
            _ => return None,
        })
    }

    /// The code on the wire.
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// `svp_vl3_type`: IPv4 (mapped into IPv6 on the wire).
pub const VL3_TYPE_IP: u32 = 1;
/// `svp_vl3_type`: IPv6.
pub const VL3_TYPE_IPV6: u32 = 2;
/// `svp_log_type`: a VL2 entry.
pub const LOG_TYPE_VL2: u32 = 1;
/// `svp_log_type`: a VL3 entry.
pub const LOG_TYPE_VL3: u32 = 2;

/// The fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `svp_ver`.
    pub version: u16,
    /// `svp_op`, as received (an unknown code is kept).
    pub op: u16,
    /// `svp_size`: body length.
    pub size: u32,
    /// `svp_id`.
    pub id: u32,
    /// `svp_crc32`.
    pub crc: u32,
}

impl Header {
    /// The header of the first 16 bytes of `buf`, if there are that many.
    pub fn parse(buf: &[u8]) -> Option<Header> {
        Some(Header {
            version: u16_at(buf, 0)?,
            op: u16_at(buf, 2)?,
            size: u32_at(buf, 4)?,
            id: u32_at(buf, 8)?,
            crc: u32_at(buf, 12)?,
        })
    }
}

/// CRC-32 (IEEE) of a frame, computed as if its crc field (bytes 12..16) were zero.
pub fn frame_crc(frame: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let head = frame.len().min(12);
    h.update(&frame[..head]);
    if frame.len() >= HEADER_LEN {
        h.update(&[0; 4]);
        h.update(&frame[HEADER_LEN..]);
    }
    h.finalize()
}

/// Why bytes are not a valid frame. [`FrameError::frame_len`] says whether the whole bad
/// frame was received (so a reader can skip it and go on) or the stream cannot be
/// trusted from here on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// `svp_ver` is not [`VERSION`].
    BadVersion {
        /// The version received.
        version: u16,
        /// The message id.
        id: u32,
        /// The length of the frame (its body was received).
        len: usize,
    },
    /// `svp_size` announces more than [`MAX_BODY_LEN`]; the body is not awaited.
    TooLarge {
        /// The size announced.
        size: u32,
    },
    /// `svp_crc32` does not match header and body.
    BadCrc {
        /// The crc received.
        received: u32,
        /// The crc computed.
        computed: u32,
        /// The length of the frame.
        len: usize,
    },
    /// `svp_op` is no op this side takes.
    UnknownOp {
        /// The op code.
        op: u16,
        /// The message id.
        id: u32,
        /// The length of the frame.
        len: usize,
    },
    /// The body does not have the length its op (or the field named) requires.
    BodySize {
        /// The op.
        op: Op,
        /// The message id.
        id: u32,
        /// The body length received.
        size: usize,
        /// The rule, e.g. "must be 12 bytes".
        rule: String,
        /// The length of the frame.
        len: usize,
    },
    /// A field holds a value the protocol does not define.
    BadField {
        /// The op.
        op: Op,
        /// The message id.
        id: u32,
        /// The field, e.g. "status" or "log entry type".
        field: &'static str,
        /// The value received.
        value: u64,
        /// The length of the frame.
        len: usize,
    },
}

impl FrameError {
    /// The length of the bad frame when all of it was received: a reader may drop that
    /// many bytes and read on. `None` for a frame over the size limit.
    pub fn frame_len(&self) -> Option<usize> {
        match self {
            FrameError::TooLarge { .. } => None,
            FrameError::BadVersion { len, .. }
            | FrameError::BadCrc { len, .. }
            | FrameError::UnknownOp { len, .. }
            | FrameError::BodySize { len, .. }
            | FrameError::BadField { len, .. } => Some(*len),
        }
    }

    /// The id of the bad message, when its header could be trusted.
    pub fn id(&self) -> Option<u32> {
        match self {
            FrameError::TooLarge { .. } | FrameError::BadCrc { .. } => None,
            FrameError::BadVersion { id, .. }
            | FrameError::UnknownOp { id, .. }
            | FrameError::BodySize { id, .. }
            | FrameError::BadField { id, .. } => Some(*id),
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadVersion { version, .. } => {
                write!(
                    f,
                    "svp_ver: {version} is not the supported version {VERSION}"
                )
            }
            FrameError::TooLarge { size } => write!(
                f,
                "svp_size: {size} bytes is over the limit of {MAX_BODY_LEN} bytes per body"
            ),
            FrameError::BadCrc {
                received, computed, ..
            } => write!(
                f,
                "svp_crc32: 0x{received:08x} does not match the frame's CRC-32 0x{computed:08x}"
            ),
            FrameError::UnknownOp { op, .. } => write!(f, "svp_op: unknown or unsupported op {op}"),
            FrameError::BodySize { op, size, rule, .. } => {
                write!(f, "svp_size: a {op:?} body of {size} bytes {rule}")
            }
            FrameError::BadField {
                op, field, value, ..
            } => write!(f, "{op:?} {field}: {value} is not a defined value"),
        }
    }
}

impl std::error::Error for FrameError {}

/// What a decoder made of the bytes so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T> {
    /// Not a whole frame yet: read more and try again with all of it.
    Incomplete,
    /// A whole frame: its id, its message and its length (drop that many bytes).
    Frame {
        /// `svp_id`.
        id: u32,
        /// The message.
        message: T,
        /// Bytes the frame took.
        len: usize,
    },
}

/// A request, as a compute node sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// PING.
    Ping,
    /// VL2_REQ: where does this MAC live on this vnet.
    Vl2 {
        /// The overlay MAC.
        mac: [u8; 6],
        /// The vnet.
        vnet_id: u32,
    },
    /// VL3_REQ: which MAC (and where) has this IP on this vnet.
    Vl3 {
        /// The overlay address, IPv4 mapped into IPv6.
        ip: Ipv6Addr,
        /// `svp_vl3_type` ([`VL3_TYPE_IP`] or [`VL3_TYPE_IPV6`]; kept as received).
        l3_type: u32,
        /// The vnet.
        vnet_id: u32,
    },
    /// LOG_REQ: the requester's invalidation log.
    Log {
        /// The most bytes of entries wanted.
        count: u32,
        /// The requester's underlay address.
        ip: Ipv6Addr,
    },
    /// LOG_RM: these log entries are done with.
    LogRm {
        /// The entries' ids.
        ids: Vec<Uuid>,
    },
}

/// Where a compute node takes VXLAN traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Underlay {
    /// Its underlay address (IPv4 when the wire held a mapped one).
    pub ip: IpAddr,
    /// Its VXLAN port.
    pub port: u16,
}

impl Underlay {
    /// The "nothing" an error or NOTFOUND reply carries: `::`, port 0.
    pub const NONE: Underlay = Underlay {
        ip: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        port: 0,
    };
}

/// One entry of a LOG ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogEntry {
    /// Forget where this MAC lives.
    Vl2 {
        /// The entry's id (for LOG_RM).
        id: Uuid,
        /// The MAC.
        mac: [u8; 6],
        /// The vnet.
        vnet_id: u32,
    },
    /// Look this IP up again.
    Vl3 {
        /// The entry's id (for LOG_RM).
        id: Uuid,
        /// The overlay address (IPv4 when the wire held a mapped one).
        ip: IpAddr,
        /// Its VLAN.
        vlan: u16,
        /// The vnet.
        vnet_id: u32,
    },
}

impl LogEntry {
    /// The entry's id.
    pub fn id(&self) -> Uuid {
        match self {
            LogEntry::Vl2 { id, .. } | LogEntry::Vl3 { id, .. } => *id,
        }
    }

    /// Its length on the wire.
    pub fn wire_len(&self) -> usize {
        match self {
            LogEntry::Vl2 { .. } => LOG_VL2_LEN,
            LogEntry::Vl3 { .. } => LOG_VL3_LEN,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            LogEntry::Vl2 { id, mac, vnet_id } => {
                out.extend_from_slice(&LOG_TYPE_VL2.to_be_bytes());
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(mac);
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&vnet_id.to_be_bytes());
            }
            LogEntry::Vl3 {
                id,
                ip,
                vlan,
                vnet_id,
            } => {
                out.extend_from_slice(&LOG_TYPE_VL3.to_be_bytes());
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(&crate::buckets::to_v6(*ip).octets());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&vlan.to_be_bytes());
                out.extend_from_slice(&vnet_id.to_be_bytes());
            }
        }
    }
}

/// A response, as Portolan sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// PONG.
    Pong,
    /// VL2_ACK (its status is a u16 on the wire).
    Vl2 {
        /// OK, NOTFOUND or FATAL.
        status: Status,
        /// The node, or [`Underlay::NONE`].
        underlay: Underlay,
    },
    /// VL3_ACK.
    Vl3 {
        /// OK, NOTFOUND, BADL3TYPE or FATAL.
        status: Status,
        /// The MAC, or zeros.
        mac: [u8; 6],
        /// The node, or [`Underlay::NONE`].
        underlay: Underlay,
    },
    /// LOG_ACK.
    Log {
        /// OK or FATAL.
        status: Status,
        /// The entries, oldest first.
        entries: Vec<LogEntry>,
    },
    /// LOG_RM_ACK.
    LogRm {
        /// OK or FATAL.
        status: Status,
    },
}

impl Response {
    /// The ack of `request`'s type carrying `status` and nothing else: what a server
    /// answers when it fails (FATAL) or finds nothing (NOTFOUND). A PING's is PONG.
    pub fn failure(request: &Request, status: Status) -> Response {
        match request {
            Request::Ping => Response::Pong,
            Request::Vl2 { .. } => Response::Vl2 {
                status,
                underlay: Underlay::NONE,
            },
            Request::Vl3 { .. } => Response::Vl3 {
                status,
                mac: [0; 6],
                underlay: Underlay::NONE,
            },
            Request::Log { .. } => Response::Log {
                status,
                entries: Vec::new(),
            },
            Request::LogRm { .. } => Response::LogRm { status },
        }
    }

    /// Its status (PONG has none).
    pub fn status(&self) -> Option<Status> {
        match self {
            Response::Pong => None,
            Response::Vl2 { status, .. }
            | Response::Vl3 { status, .. }
            | Response::Log { status, .. }
            | Response::LogRm { status } => Some(*status),
        }
    }

    /// The op it is sent with.
    pub fn op(&self) -> Op {
        match self {
            Response::Pong => Op::Pong,
            Response::Vl2 { .. } => Op::Vl2Ack,
            Response::Vl3 { .. } => Op::Vl3Ack,
            Response::Log { .. } => Op::LogAck,
            Response::LogRm { .. } => Op::LogRmAck,
        }
    }

    /// The whole frame, with `id` and its CRC.
    pub fn encode(&self, id: u32) -> Vec<u8> {
        let mut out = start_frame(self.op(), id);
        match self {
            Response::Pong => {}
            Response::Vl2 { status, underlay } => {
                // VL2_ACK's status is a u16; every status fits.
                let code = u16::try_from(status.code()).unwrap_or(u16::MAX);
                out.extend_from_slice(&code.to_be_bytes());
                out.extend_from_slice(&underlay.port.to_be_bytes());
                out.extend_from_slice(&crate::buckets::to_v6(underlay.ip).octets());
            }
            Response::Vl3 {
                status,
                mac,
                underlay,
            } => {
                out.extend_from_slice(&status.code().to_be_bytes());
                out.extend_from_slice(mac);
                out.extend_from_slice(&underlay.port.to_be_bytes());
                out.extend_from_slice(&crate::buckets::to_v6(underlay.ip).octets());
            }
            Response::Log { status, entries } => {
                out.extend_from_slice(&status.code().to_be_bytes());
                for e in entries {
                    e.encode(&mut out);
                }
            }
            Response::LogRm { status } => out.extend_from_slice(&status.code().to_be_bytes()),
        }
        finish_frame(out)
    }
}

impl Request {
    /// The op it is sent with.
    pub fn op(&self) -> Op {
        match self {
            Request::Ping => Op::Ping,
            Request::Vl2 { .. } => Op::Vl2Req,
            Request::Vl3 { .. } => Op::Vl3Req,
            Request::Log { .. } => Op::LogReq,
            Request::LogRm { .. } => Op::LogRm,
        }
    }

    /// The whole frame, with `id` and its CRC.
    pub fn encode(&self, id: u32) -> Vec<u8> {
        let mut out = start_frame(self.op(), id);
        match self {
            Request::Ping => {}
            Request::Vl2 { mac, vnet_id } => {
                out.extend_from_slice(mac);
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&vnet_id.to_be_bytes());
            }
            Request::Vl3 {
                ip,
                l3_type,
                vnet_id,
            } => {
                out.extend_from_slice(&ip.octets());
                out.extend_from_slice(&l3_type.to_be_bytes());
                out.extend_from_slice(&vnet_id.to_be_bytes());
            }
            Request::Log { count, ip } => {
                out.extend_from_slice(&count.to_be_bytes());
                out.extend_from_slice(&ip.octets());
            }
            Request::LogRm { ids } => {
                let count = u32::try_from(ids.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&count.to_be_bytes());
                for id in ids {
                    out.extend_from_slice(id.as_bytes());
                }
            }
        }
        finish_frame(out)
    }
}

fn start_frame(op: Op, id: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&op.code().to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out
}

fn finish_frame(mut out: Vec<u8>) -> Vec<u8> {
    let size = u32::try_from(out.len() - HEADER_LEN).unwrap_or(u32::MAX);
    out[4..8].copy_from_slice(&size.to_be_bytes());
    let crc = frame_crc(&out);
    out[12..16].copy_from_slice(&crc.to_be_bytes());
    out
}

/// A whole, checked frame: header fields and body.
struct Raw<'a> {
    op: u16,
    id: u32,
    body: &'a [u8],
    len: usize,
}

/// Splits off the first frame of `buf`: checks the version, the size limit and the CRC.
fn raw_frame(buf: &[u8]) -> Result<Option<Raw<'_>>, FrameError> {
    let Some(h) = Header::parse(buf) else {
        return Ok(None);
    };
    let size = h.size as usize;
    if size > MAX_BODY_LEN {
        return Err(FrameError::TooLarge { size: h.size });
    }
    let len = HEADER_LEN + size;
    let Some(frame) = buf.get(..len) else {
        return Ok(None);
    };
    let computed = frame_crc(frame);
    if computed != h.crc {
        return Err(FrameError::BadCrc {
            received: h.crc,
            computed,
            len,
        });
    }
    if h.version != VERSION {
        return Err(FrameError::BadVersion {
            version: h.version,
            id: h.id,
            len,
        });
    }
    Ok(Some(Raw {
        op: h.op,
        id: h.id,
        body: &frame[HEADER_LEN..],
        len,
    }))
}

impl Raw<'_> {
    fn exact(&self, op: Op, want: usize) -> Result<(), FrameError> {
        if self.body.len() == want {
            Ok(())
        } else {
            Err(self.size_error(op, format!("must be {want} bytes")))
        }
    }

    fn size_error(&self, op: Op, rule: String) -> FrameError {
        FrameError::BodySize {
            op,
            id: self.id,
            size: self.body.len(),
            rule,
            len: self.len,
        }
    }

    fn bad_field(&self, op: Op, field: &'static str, value: u64) -> FrameError {
        FrameError::BadField {
            op,
            id: self.id,
            field,
            value,
            len: self.len,
        }
    }

    fn unknown_op(&self) -> FrameError {
        FrameError::UnknownOp {
            op: self.op,
            id: self.id,
            len: self.len,
        }
    }

    fn status(&self, op: Op, code: u32) -> Result<Status, FrameError> {
        Status::from_code(code).ok_or_else(|| self.bad_field(op, "status", u64::from(code)))
    }
}

/// The first frame in `buf`, its body read by `message` (given the frame's op).
fn decode<M>(
    buf: &[u8],
    message: impl FnOnce(&Raw<'_>, Op) -> Result<M, FrameError>,
) -> Result<Decoded<M>, FrameError> {
    let Some(raw) = raw_frame(buf)? else {
        return Ok(Decoded::Incomplete);
    };
    let op = Op::from_code(raw.op).ok_or_else(|| raw.unknown_op())?;
    let message = message(&raw, op)?;
    Ok(Decoded::Frame {
        id: raw.id,
        message,
        len: raw.len,
    })
}

/// The first request in `buf` (a server's decoder).
pub fn decode_request(buf: &[u8]) -> Result<Decoded<Request>, FrameError> {
    decode(buf, |raw, op| {
        let b = raw.body;
        Ok(match op {
            Op::Ping => {
                raw.exact(op, 0)?;
                Request::Ping
            }
            Op::Vl2Req => {
                raw.exact(op, VL2_REQ_LEN)?;
                Request::Vl2 {
                    mac: mac_at(b, 0),
                    vnet_id: u32_at(b, 8).unwrap_or_default(),
                }
            }
            Op::Vl3Req => {
                raw.exact(op, VL3_REQ_LEN)?;
                Request::Vl3 {
                    ip: ip_at(b, 0),
                    l3_type: u32_at(b, 16).unwrap_or_default(),
                    vnet_id: u32_at(b, 20).unwrap_or_default(),
                }
            }
            Op::LogReq => {
                raw.exact(op, LOG_REQ_LEN)?;
                Request::Log {
                    count: u32_at(b, 0).unwrap_or_default(),
                    ip: ip_at(b, 4),
                }
            }
            Op::LogRm => {
                let Some(count) = u32_at(b, 0) else {
                    return Err(raw.size_error(op, "must be at least 4 bytes (count)".into()));
                };
                let want = u64::from(count) * 16 + 4;
                if b.len() as u64 != want {
                    return Err(raw.size_error(
                        op,
                        format!("must be 4 + 16 * count ({count}) = {want} bytes"),
                    ));
                }
                let ids = b[4..]
                    .chunks_exact(16)
                    .map(|c| Uuid::from_bytes(c.try_into().unwrap_or_default()))
                    .collect();
                Request::LogRm { ids }
            }
            _ => return Err(raw.unknown_op()),
        })
    })
}

/// The first response in `buf` (a client's decoder).
pub fn decode_response(buf: &[u8]) -> Result<Decoded<Response>, FrameError> {
    decode(buf, |raw, op| {
        let b = raw.body;
        Ok(match op {
            Op::Pong => {
                raw.exact(op, 0)?;
                Response::Pong
            }
            Op::Vl2Ack => {
                raw.exact(op, VL2_ACK_LEN)?;
                let code = u16_at(b, 0).unwrap_or_default();
                Response::Vl2 {
                    status: raw.status(op, u32::from(code))?,
                    underlay: Underlay {
                        ip: ip_at(b, 4).to_canonical(),
                        port: u16_at(b, 2).unwrap_or_default(),
                    },
                }
            }
            Op::Vl3Ack => {
                raw.exact(op, VL3_ACK_LEN)?;
                Response::Vl3 {
                    status: raw.status(op, u32_at(b, 0).unwrap_or_default())?,
                    mac: mac_at(b, 4),
                    underlay: Underlay {
                        ip: ip_at(b, 12).to_canonical(),
                        port: u16_at(b, 10).unwrap_or_default(),
                    },
                }
            }
            Op::LogAck => {
                let Some(code) = u32_at(b, 0) else {
                    return Err(raw.size_error(op, "must be at least 4 bytes (status)".into()));
                };
                let status = raw.status(op, code)?;
                let mut entries = Vec::new();
                let mut at = STATUS_LEN;
                while at < b.len() {
                    let Some(kind) = u32_at(b, at) else {
                        return Err(raw.size_error(op, format!("ends inside a log entry at {at}")));
                    };
                    let want = match kind {
                        LOG_TYPE_VL2 => LOG_VL2_LEN,
                        LOG_TYPE_VL3 => LOG_VL3_LEN,
                        other => return Err(raw.bad_field(op, "log entry type", u64::from(other))),
                    };
                    let Some(e) = b.get(at..at + want) else {
                        return Err(raw.size_error(
                            op,
                            format!("ends inside a {want}-byte log entry at {at}"),
                        ));
                    };
                    let id = Uuid::from_bytes(e[4..20].try_into().unwrap_or_default());
                    entries.push(if kind == LOG_TYPE_VL2 {
                        LogEntry::Vl2 {
                            id,
                            mac: mac_at(e, 20),
                            vnet_id: u32_at(e, 28).unwrap_or_default(),
                        }
                    } else {
                        LogEntry::Vl3 {
                            id,
                            ip: ip_at(e, 20).to_canonical(),
                            vlan: u16_at(e, 38).unwrap_or_default(),
                            vnet_id: u32_at(e, 40).unwrap_or_default(),
                        }
                    });
                    at += want;
                }
                Response::Log { status, entries }
            }
            Op::LogRmAck => {
                raw.exact(op, STATUS_LEN)?;
                Response::LogRm {
                    status: raw.status(op, u32_at(b, 0).unwrap_or_default())?,
                }
            }
            _ => return Err(raw.unknown_op()),
        })
    })
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Six bytes at `at` (callers checked the length; zeros otherwise).
fn mac_at(b: &[u8], at: usize) -> [u8; 6] {
    b.get(at..at + 6)
        .and_then(|s| s.try_into().ok())
        .unwrap_or_default()
}

/// Sixteen bytes at `at` as an address (callers checked the length; `::` otherwise).
fn ip_at(b: &[u8], at: usize) -> Ipv6Addr {
    let octets: [u8; 16] = b
        .get(at..at + 16)
        .and_then(|s| s.try_into().ok())
        .unwrap_or_default();
    Ipv6Addr::from(octets)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame written field by field from the reference's tables.
    fn frame(op: u16, id: u32, body: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[0x00, 0x01]);
        f.extend_from_slice(&op.to_be_bytes());
        f.extend_from_slice(&(body.len() as u32).to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&[0; 4]);
        f.extend_from_slice(body);
        let crc = crc32fast::hash(&f);
        f[12..16].copy_from_slice(&crc.to_be_bytes());
        f
    }

    fn request(buf: &[u8]) -> (u32, Request, usize) {
        match decode_request(buf).unwrap() {
            Decoded::Frame { id, message, len } => (id, message, len),
            Decoded::Incomplete => panic!("incomplete"),
        }
    }

    fn response(buf: &[u8]) -> Response {
        match decode_response(buf).unwrap() {
            Decoded::Frame { message, .. } => message,
            Decoded::Incomplete => panic!("incomplete"),
        }
    }

    const MAC: [u8; 6] = [0x90, 0xb8, 0xd0, 0x01, 0x02, 0x03];
    const V4: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3];

    #[test]
    fn ping_is_a_bare_header_with_the_crc_over_it() {
        let ping = Request::Ping.encode(7);
        assert_eq!(ping, frame(1, 7, &[]));
        assert_eq!(&ping[..12], &[0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(request(&ping), (7, Request::Ping, 16));
        assert_eq!(response(&frame(2, 7, &[])), Response::Pong);
        assert_eq!(Response::Pong.encode(7), frame(2, 7, &[]));
    }

    #[test]
    fn vl2_request_and_ack() {
        let mut body = MAC.to_vec();
        body.extend_from_slice(&[0, 0, 0x00, 0x00, 0x10, 0x92]);
        let f = frame(3, 9, &body);
        let req = Request::Vl2 {
            mac: MAC,
            vnet_id: 0x1092,
        };
        assert_eq!(request(&f), (9, req.clone(), 28));
        assert_eq!(req.encode(9), f);

        // status u16 OK, port 4789, ::ffff:10.1.2.3
        let mut ack = vec![0, 0, 0x12, 0xb5];
        ack.extend_from_slice(&V4);
        let ack = frame(4, 9, &ack);
        let resp = Response::Vl2 {
            status: Status::Ok,
            underlay: Underlay {
                ip: "10.1.2.3".parse().unwrap(),
                port: 4789,
            },
        };
        assert_eq!(response(&ack), resp);
        assert_eq!(resp.encode(9), ack);
        let mut notfound = vec![0, 2, 0, 0];
        notfound.extend_from_slice(&[0; 16]);
        assert_eq!(
            response(&frame(4, 9, &notfound)),
            Response::failure(&req, Status::NotFound)
        );
    }

    #[test]
    fn vl3_request_and_ack() {
        let mut body = V4.to_vec();
        body.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0x10, 0x92]);
        let f = frame(5, 1, &body);
        let req = Request::Vl3 {
            ip: Ipv6Addr::from(V4),
            l3_type: VL3_TYPE_IP,
            vnet_id: 0x1092,
        };
        assert_eq!(request(&f).1, req);
        assert_eq!(req.encode(1), f);

        let mut ack = vec![0, 0, 0, 0];
        ack.extend_from_slice(&MAC);
        ack.extend_from_slice(&[0x12, 0xb5]);
        ack.extend_from_slice(&V4);
        let resp = Response::Vl3 {
            status: Status::Ok,
            mac: MAC,
            underlay: Underlay {
                ip: "10.1.2.3".parse().unwrap(),
                port: 4789,
            },
        };
        assert_eq!(response(&frame(6, 1, &ack)), resp);
        assert_eq!(resp.encode(1), frame(6, 1, &ack));
    }

    #[test]
    fn log_request_ack_and_rm() {
        let mut body = vec![0, 0, 0x01, 0x00];
        body.extend_from_slice(&V4);
        assert_eq!(
            request(&frame(9, 2, &body)).1,
            Request::Log {
                count: 256,
                ip: Ipv6Addr::from(V4)
            }
        );

        let a = Uuid::from_bytes([0xaa; 16]);
        let b = Uuid::from_bytes([0xbb; 16]);
        let mut ack = vec![0, 0, 0, 0];
        ack.extend_from_slice(&[0, 0, 0, 1]);
        ack.extend_from_slice(&[0xaa; 16]);
        ack.extend_from_slice(&MAC);
        ack.extend_from_slice(&[0, 0, 0, 0, 0, 7]);
        ack.extend_from_slice(&[0, 0, 0, 2]);
        ack.extend_from_slice(&[0xbb; 16]);
        ack.extend_from_slice(&V4);
        ack.extend_from_slice(&[0, 0, 0, 5, 0, 0, 0, 7]);
        assert_eq!(ack.len(), 4 + 32 + 44);
        let resp = Response::Log {
            status: Status::Ok,
            entries: vec![
                LogEntry::Vl2 {
                    id: a,
                    mac: MAC,
                    vnet_id: 7,
                },
                LogEntry::Vl3 {
                    id: b,
                    ip: "10.1.2.3".parse().unwrap(),
                    vlan: 5,
                    vnet_id: 7,
                },
            ],
        };
        assert_eq!(response(&frame(10, 2, &ack)), resp);
        assert_eq!(resp.encode(2), frame(10, 2, &ack));

        let mut rm = vec![0, 0, 0, 2];
        rm.extend_from_slice(&[0xaa; 16]);
        rm.extend_from_slice(&[0xbb; 16]);
        let req = Request::LogRm { ids: vec![a, b] };
        assert_eq!(request(&frame(11, 3, &rm)).1, req);
        assert_eq!(req.encode(3), frame(11, 3, &rm));
        assert_eq!(
            response(&frame(12, 3, &[0, 0, 0, 1])),
            Response::LogRm {
                status: Status::Fatal
            }
        );
    }

    #[test]
    fn a_frame_is_incomplete_until_its_last_byte() {
        let f = Request::Vl2 {
            mac: MAC,
            vnet_id: 1,
        }
        .encode(1);
        for n in 0..f.len() {
            assert_eq!(decode_request(&f[..n]), Ok(Decoded::Incomplete), "{n}");
        }
        let mut two = f.clone();
        two.extend_from_slice(&Request::Ping.encode(2));
        assert_eq!(request(&two).2, f.len());
    }

    #[test]
    fn bad_frames_name_the_field_and_the_rule() {
        let mut bad_crc = Request::Ping.encode(1);
        bad_crc[15] ^= 1;
        let e = decode_request(&bad_crc).unwrap_err();
        assert!(matches!(e, FrameError::BadCrc { len: 16, .. }), "{e:?}");
        assert!(e.to_string().starts_with("svp_crc32:"), "{e}");

        let mut v2 = frame(1, 1, &[]);
        v2[1] = 2;
        let crc = frame_crc(&v2);
        v2[12..16].copy_from_slice(&crc.to_be_bytes());
        let e = decode_request(&v2).unwrap_err();
        assert_eq!(e.to_string(), "svp_ver: 2 is not the supported version 1");

        let e = decode_request(&frame(0x42, 5, &[])).unwrap_err();
        assert_eq!(e.to_string(), "svp_op: unknown or unsupported op 66");
        assert_eq!((e.id(), e.frame_len()), (Some(5), Some(16)));
        // An ack is not a request, nor a request an ack; BULK is implemented by nobody.
        assert!(matches!(
            decode_request(&frame(2, 1, &[])),
            Err(FrameError::UnknownOp { op: 2, .. })
        ));
        assert!(matches!(
            decode_response(&frame(1, 1, &[])),
            Err(FrameError::UnknownOp { op: 1, .. })
        ));
        assert!(matches!(
            decode_request(&frame(7, 1, &[0, 0, 0, 1])),
            Err(FrameError::UnknownOp { op: 7, .. })
        ));

        let e = decode_request(&frame(3, 1, &[0; 11])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "svp_size: a Vl2Req body of 11 bytes must be 12 bytes"
        );

        let mut rm = vec![0, 0, 0, 2];
        rm.extend_from_slice(&[0; 16]);
        let e = decode_request(&frame(11, 1, &rm)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "svp_size: a LogRm body of 20 bytes must be 4 + 16 * count (2) = 36 bytes"
        );
        let e = decode_request(&frame(11, 1, &[0, 0])).unwrap_err();
        assert!(matches!(e, FrameError::BodySize { op: Op::LogRm, .. }));

        let mut huge = frame(1, 1, &[]);
        huge[4..8].copy_from_slice(&(MAX_BODY_LEN as u32 + 1).to_be_bytes());
        let e = decode_request(&huge).unwrap_err();
        assert_eq!(e.frame_len(), None);
        assert_eq!(
            e.to_string(),
            "svp_size: 1048561 bytes is over the limit of 1048560 bytes per body"
        );
        huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_request(&huge).is_err());

        let mut log = vec![0, 0, 0, 0, 0, 0, 0, 3];
        log.extend_from_slice(&[0; 28]);
        let e = decode_response(&frame(10, 1, &log)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "LogAck log entry type: 3 is not a defined value"
        );
        let mut short = vec![0, 0, 0, 0, 0, 0, 0, 1];
        short.extend_from_slice(&[0; 20]);
        let e = decode_response(&frame(10, 1, &short)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "svp_size: a LogAck body of 28 bytes ends inside a 32-byte log entry at 4"
        );
        let e = decode_response(&frame(12, 1, &[0, 0, 0, 9])).unwrap_err();
        assert_eq!(e.to_string(), "LogRmAck status: 9 is not a defined value");
    }
}
