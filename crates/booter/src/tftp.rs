//! Read-only TFTP (RFC 1350) with the blksize, tsize and timeout options (RFC 2347, 2348,
//! 2349), for PXE ROMs that fetch `undionly.kpxe` or `snponly.efi`, and for iPXE when
//! `boot_over = "tftp"`. Each transfer has its own socket (its own port, the TID), sends a
//! block and waits for its ACK, resending up to [`MAX_RETRIES`] times; paths are those of
//! [`crate::files`]. A write request, `netascii` mode, or any other opcode is answered
//! with a TFTP error naming the reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::files::{Files, NotServed, Target};
use crate::ipxe::Scripts;

/// RFC 1350's block size, when the client asks for none.
pub const DEFAULT_BLKSIZE: u16 = 512;
/// RFC 2348's range.
pub const MIN_BLKSIZE: u16 = 8;
pub const MAX_BLKSIZE: u16 = 65464;
/// Resends of one block before the transfer is given up.
pub const MAX_RETRIES: u32 = 5;
/// Seconds to wait for an ACK when the client names no timeout (RFC 2349's range is
/// 1..255).
pub const DEFAULT_TIMEOUT_SECS: u8 = 1;
/// Transfers at once; a request beyond it gets error 0 "busy", and the client retries.
pub const MAX_TRANSFERS: usize = 256;

const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

/// TFTP's error codes (RFC 1350, 2347).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    NotDefined = 0,
    NotFound = 1,
    AccessViolation = 2,
    IllegalOperation = 4,
    UnknownTid = 5,
    BadOption = 8,
}

/// A read request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub filename: String,
    /// Options the client asked for that are served (blksize, tsize, timeout).
    pub blksize: Option<u16>,
    pub tsize: bool,
    pub timeout: Option<u8>,
}

/// A request refused, with the code and message the client is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub code: Code,
    pub message: String,
}

fn refused(code: Code, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

/// Parses a request on the server port: a read request, or the reason it is refused.
pub fn parse_request(bytes: &[u8]) -> Result<ReadRequest, Refused> {
    if bytes.len() < 2 {
        return Err(refused(
            Code::IllegalOperation,
            "packet shorter than an opcode",
        ));
    }
    match u16::from_be_bytes([bytes[0], bytes[1]]) {
        RRQ => {}
        WRQ => {
            return Err(refused(
                Code::AccessViolation,
                "dhcpd's TFTP is read-only: no write requests",
            ));
        }
        op => {
            return Err(refused(
                Code::IllegalOperation,
                format!("opcode {op} is not a request (1 = read)"),
            ));
        }
    }
    // filename NUL mode NUL (option NUL value NUL)*
    let body = &bytes[2..];
    if body.last() != Some(&0) {
        return Err(refused(
            Code::IllegalOperation,
            "request does not end with a NUL byte",
        ));
    }
    let fields: Vec<&[u8]> = body[..body.len() - 1].split(|b| *b == 0).collect();
    let text = |f: &[u8], what: &str| -> Result<String, Refused> {
        std::str::from_utf8(f)
            .map(str::to_string)
            .map_err(|_| refused(Code::IllegalOperation, format!("{what} is not UTF-8")))
    };
    let [filename, mode, options @ ..] = &fields[..] else {
        return Err(refused(
            Code::IllegalOperation,
            "request has no filename and mode",
        ));
    };
    let filename = text(filename, "filename")?;
    if filename.is_empty() {
        return Err(refused(Code::IllegalOperation, "empty filename"));
    }
    let mode = text(mode, "mode")?.to_ascii_lowercase();
    match mode.as_str() {
        "octet" => {}
        "netascii" => {
            return Err(refused(
                Code::IllegalOperation,
                "mode netascii is not served: boot files are binary, ask for octet",
            ));
        }
        other => {
            return Err(refused(
                Code::IllegalOperation,
                format!("mode {other:?} is not TFTP's (octet)"),
            ));
        }
    }
    if options.len() % 2 != 0 {
        return Err(refused(Code::BadOption, "an option has no value"));
    }
    let mut req = ReadRequest {
        filename,
        blksize: None,
        tsize: false,
        timeout: None,
    };
    for pair in options.chunks(2) {
        let name = text(pair[0], "option name")?.to_ascii_lowercase();
        let value = text(pair[1], "option value")?;
        match name.as_str() {
            "blksize" => {
                let n: u32 = value.parse().map_err(|_| {
                    refused(
                        Code::BadOption,
                        format!("blksize {value:?} is not a number"),
                    )
                })?;
                if n < u32::from(MIN_BLKSIZE) {
                    return Err(refused(
                        Code::BadOption,
                        format!("blksize {n} is under {MIN_BLKSIZE}"),
                    ));
                }
                // Larger than we send is answered with the most we send (RFC 2348).
                req.blksize = Some(n.min(u32::from(MAX_BLKSIZE)) as u16);
            }
            "tsize" => req.tsize = true,
            "timeout" => {
                let n: u8 = value.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    refused(Code::BadOption, format!("timeout {value:?} is not 1..255"))
                })?;
                req.timeout = Some(n);
            }
            // Unknown options are left out of the OACK (RFC 2347).
            _ => {}
        }
    }
    Ok(req)
}

fn error_packet(code: Code, message: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + message.len());
    p.extend(ERROR.to_be_bytes());
    p.extend((code as u16).to_be_bytes());
    p.extend(message.as_bytes());
    p.push(0);
    p
}

/// What is sent: bytes made here (a script) or a file read block by block.
enum Source {
    Bytes(Vec<u8>, usize),
    File(tokio::fs::File),
}

impl Source {
    async fn next(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        match self {
            Source::Bytes(b, at) => {
                let end = (*at + n).min(b.len());
                let chunk = b[*at..end].to_vec();
                *at = end;
                Ok(chunk)
            }
            Source::File(f) => {
                let mut chunk = vec![0u8; n];
                let mut got = 0;
                while got < n {
                    let r = f.read(&mut chunk[got..]).await?;
                    if r == 0 {
                        break;
                    }
                    got += r;
                }
                chunk.truncate(got);
                Ok(chunk)
            }
        }
    }
}

/// The TFTP server.
pub struct Tftp {
    pub socket: UdpSocket,
    pub files: Files,
    pub scripts: Arc<Scripts>,
}

impl Tftp {
    /// Binds `listen`.
    pub async fn bind(listen: &str, files: Files, scripts: Arc<Scripts>) -> Result<Tftp> {
        let socket = UdpSocket::bind(listen)
            .await
            .map_err(Error::bind("TFTP", listen))?;
        Ok(Tftp {
            socket,
            files,
            scripts,
        })
    }

    /// Serves until `shutdown`.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<()> {
        let local = self.socket.local_addr().map_err(|source| Error::Serve {
            what: "TFTP",
            source,
        })?;
        let this = Arc::new(self);
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_TRANSFERS));
        let mut buf = vec![0u8; 1024];
        loop {
            let Some((n, peer)) =
                crate::udp::next_datagram(&this.socket, &mut buf, &shutdown, "TFTP").await
            else {
                return Ok(());
            };
            let req = match parse_request(&buf[..n]) {
                Ok(r) => r,
                Err(why) => {
                    tracing::info!(%peer, reason = %why.message, "TFTP request refused");
                    let _ = this
                        .socket
                        .send_to(&error_packet(why.code, &why.message), peer)
                        .await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                let _ = this
                    .socket
                    .send_to(&error_packet(Code::NotDefined, "busy: try again"), peer)
                    .await;
                continue;
            };
            let this = this.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    () = this.transfer(local, peer, req) => {}
                }
                drop(permit);
            });
        }
    }

    async fn transfer(&self, local: SocketAddr, peer: SocketAddr, req: ReadRequest) {
        let socket = match UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "TFTP transfer socket");
                return;
            }
        };
        if socket.connect(peer).await.is_err() {
            return;
        }
        let (source, size) = match self.open(&req.filename).await {
            Ok(s) => s,
            Err(why) => {
                tracing::info!(%peer, file = %req.filename, reason = %why.message, "TFTP read refused");
                let _ = socket.send(&error_packet(why.code, &why.message)).await;
                return;
            }
        };
        tracing::info!(%peer, file = %req.filename, bytes = size, "TFTP transfer started");
        match send_file(&socket, peer, &req, source, size).await {
            Ok(blocks) => {
                tracing::info!(%peer, file = %req.filename, bytes = size, blocks, "TFTP transfer done")
            }
            Err(why) => {
                tracing::info!(%peer, file = %req.filename, reason = %why, "TFTP transfer ended early")
            }
        }
    }

    async fn open(&self, filename: &str) -> Result<(Source, u64), Refused> {
        match self.files.resolve(filename) {
            Ok(Target::Script(mac)) => match self.scripts.script(mac).await {
                Ok(s) => {
                    let len = s.len() as u64;
                    Ok((Source::Bytes(s.into_bytes(), 0), len))
                }
                Err(e) => Err(refused(Code::NotFound, format!("{filename}: {e}"))),
            },
            Ok(Target::File(path)) => {
                let f = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| refused(Code::NotFound, format!("{filename}: {e}")))?;
                let len = f
                    .metadata()
                    .await
                    .map_err(|e| refused(Code::NotFound, format!("{filename}: {e}")))?
                    .len();
                Ok((Source::File(f), len))
            }
            Err(e @ NotServed::Missing(_)) => Err(refused(Code::NotFound, e.to_string())),
            Err(e @ NotServed::Outside(_)) => Err(refused(Code::AccessViolation, e.to_string())),
        }
    }
}

/// Sends `packet` and waits for the ACK of `block`, resending on timeout; `Ok` once acked.
async fn send_and_wait(
    socket: &UdpSocket,
    peer: SocketAddr,
    packet: &[u8],
    block: u16,
    wait: Duration,
) -> std::result::Result<(), String> {
    let mut buf = [0u8; 516];
    for _ in 0..=MAX_RETRIES {
        socket
            .send(packet)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let r = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await;
            let Ok(r) = r else {
                break; // resend
            };
            let (n, from) = match r {
                Ok(x) => x,
                // An ICMP error for an earlier datagram: the client is gone.
                Err(e) => return Err(format!("receive: {e}")),
            };
            if from != peer {
                let _ = socket
                    .send_to(&error_packet(Code::UnknownTid, "unknown transfer id"), from)
                    .await;
                continue;
            }
            if n < 4 {
                continue;
            }
            match u16::from_be_bytes([buf[0], buf[1]]) {
                ACK if u16::from_be_bytes([buf[2], buf[3]]) == block => return Ok(()),
                // A duplicate ACK of an earlier block: wait on (no resend, RFC 1123's
                // Sorcerer's Apprentice fix).
                ACK => {}
                ERROR => {
                    let msg = String::from_utf8_lossy(&buf[4..n.max(4)]);
                    return Err(format!("client sent error: {}", msg.trim_end_matches('\0')));
                }
                op => return Err(format!("client sent opcode {op} during a read")),
            }
        }
    }
    Err(format!(
        "no ACK of block {block} after {MAX_RETRIES} resends"
    ))
}

async fn send_file(
    socket: &UdpSocket,
    peer: SocketAddr,
    req: &ReadRequest,
    mut source: Source,
    size: u64,
) -> std::result::Result<u64, String> {
    let wait = Duration::from_secs(u64::from(req.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS)));
    let blksize = req.blksize.unwrap_or(DEFAULT_BLKSIZE);
    if req.blksize.is_some() || req.tsize || req.timeout.is_some() {
        let mut oack = OACK.to_be_bytes().to_vec();
        let mut opt = |name: &str, value: String| {
            oack.extend(name.as_bytes());
            oack.push(0);
            oack.extend(value.as_bytes());
            oack.push(0);
        };
        if let Some(b) = req.blksize {
            opt("blksize", b.to_string());
        }
        if req.tsize {
            opt("tsize", size.to_string());
        }
        if let Some(t) = req.timeout {
            opt("timeout", t.to_string());
        }
        send_and_wait(socket, peer, &oack, 0, wait).await?;
    }
    let mut block: u16 = 1;
    let mut blocks = 0u64;
    loop {
        let chunk = source
            .next(usize::from(blksize))
            .await
            .map_err(|e| format!("read: {e}"))?;
        let last = chunk.len() < usize::from(blksize);
        let mut packet = Vec::with_capacity(4 + chunk.len());
        packet.extend(DATA.to_be_bytes());
        packet.extend(block.to_be_bytes());
        packet.extend(&chunk);
        send_and_wait(socket, peer, &packet, block, wait).await?;
        blocks += 1;
        if last {
            return Ok(blocks);
        }
        // Past block 65535 the count starts again at 0, as most clients expect.
        block = block.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(fields: &[&str]) -> Vec<u8> {
        let mut p = RRQ.to_be_bytes().to_vec();
        for f in fields {
            p.extend(f.as_bytes());
            p.push(0);
        }
        p
    }

    #[test]
    fn read_requests_and_options() {
        let r = parse_request(&rrq(&[
            "undionly.kpxe",
            "OCTET",
            "blksize",
            "1428",
            "tsize",
            "0",
            "windowsize",
            "4",
        ]))
        .unwrap();
        assert_eq!(r.filename, "undionly.kpxe");
        assert_eq!(r.blksize, Some(1428));
        assert!(r.tsize);
        assert_eq!(r.timeout, None);
        let big = parse_request(&rrq(&["f", "octet", "blksize", "100000"])).unwrap();
        assert_eq!(big.blksize, Some(MAX_BLKSIZE));
    }

    #[test]
    fn bad_requests_are_refused_with_a_code() {
        let cases: Vec<(Vec<u8>, Code, &str)> = vec![
            (vec![0], Code::IllegalOperation, "shorter"),
            (
                {
                    let mut p = rrq(&["f", "octet"]);
                    p[1] = 2;
                    p
                },
                Code::AccessViolation,
                "read-only",
            ),
            (
                {
                    let mut p = rrq(&["f", "octet"]);
                    p[1] = 9;
                    p
                },
                Code::IllegalOperation,
                "opcode 9",
            ),
            (rrq(&["f"]), Code::IllegalOperation, "no filename and mode"),
            (
                rrq(&["f", "octet"])[..6].to_vec(),
                Code::IllegalOperation,
                "NUL",
            ),
            (rrq(&["f", "netascii"]), Code::IllegalOperation, "netascii"),
            (rrq(&["f", "mail"]), Code::IllegalOperation, "mail"),
            (
                rrq(&["", "octet"]),
                Code::IllegalOperation,
                "empty filename",
            ),
            (rrq(&["f", "octet", "blksize"]), Code::BadOption, "no value"),
            (
                rrq(&["f", "octet", "blksize", "4"]),
                Code::BadOption,
                "under 8",
            ),
            (
                rrq(&["f", "octet", "timeout", "0"]),
                Code::BadOption,
                "timeout",
            ),
        ];
        for (bytes, code, text) in cases {
            let e = parse_request(&bytes).unwrap_err();
            assert_eq!(e.code, code, "{bytes:?}: {e}");
            assert!(e.message.contains(text), "{bytes:?}: {e}");
        }
    }

    #[test]
    fn error_packets_name_the_reason() {
        let p = error_packet(Code::NotFound, "x: no such file");
        assert_eq!(&p[..4], &[0, 5, 0, 1]);
        assert_eq!(&p[4..], b"x: no such file\0");
    }
}
