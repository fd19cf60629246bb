//! A compute node's SVP client: one TCP connection to Portolan, one request at a time
//! on it (as illumos' varpd keeps it), each bounded by a timeout.
//!
//! ```no_run
//! # async fn example() -> Result<(), portolan_client::client::SvpError> {
//! use portolan_client::client::SvpClient;
//!
//! let mut svp = SvpClient::connect("10.99.99.30:1296").await?;
//! svp.ping().await?;
//! if let Some(answer) = svp.vl3("192.168.128.5".parse().unwrap(), 4242).await? {
//!     println!("{:02x?} on {}", answer.mac, answer.underlay.ip);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! NOTFOUND is `Ok(None)`; FATAL and the other non-OK statuses are errors. After a FATAL
//! answer (the protocol says the client closes the connection then) and after any error
//! that is not a status (a timeout, a broken or closed connection, a bad frame) the
//! client is spent: every later call fails with [`SvpError::Broken`] and the caller
//! connects again.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use uuid::Uuid;

use crate::buckets::to_v6;
use crate::svp::{
    Decoded, FrameError, LogEntry, Op, Request, Response, Status, Underlay, VL3_TYPE_IP,
    VL3_TYPE_IPV6, decode_response,
};

/// How long a request waits for its answer by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The answer to a VL3 lookup: the MAC that has the address, and its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Vl3Answer {
    /// The overlay MAC.
    pub mac: [u8; 6],
    /// The compute node hosting it.
    pub underlay: Underlay,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum SvpError {
    /// The TCP connection could not be made.
    #[error("connect to Portolan at {addr}: {source}")]
    Connect {
        /// The address given.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("SVP connection: {0}")]
    Io(#[from] io::Error),
    /// Portolan closed the connection.
    #[error("Portolan closed the connection")]
    Closed,
    /// No answer within the timeout.
    #[error("no answer to {op:?} within {after:?}")]
    Timeout {
        /// The request's op.
        op: Op,
        /// The timeout.
        after: Duration,
    },
    /// The answer was not a valid frame.
    #[error("bad answer: {0}")]
    Frame(#[from] FrameError),
    /// The answer was of another type than the request's ack.
    #[error("{request:?} answered with {answer:?}")]
    Unexpected {
        /// The request's op.
        request: Op,
        /// The answer's op.
        answer: Op,
    },
    /// Portolan answered with a status other than OK or NOTFOUND (FATAL: it failed).
    #[error("Portolan answered {op:?} with status {status:?}")]
    Status {
        /// The ack's op.
        op: Op,
        /// The status.
        status: Status,
    },
    /// An earlier request on this connection failed; connect again.
    #[error("the SVP connection failed earlier; connect again")]
    Broken,
}

/// One connection to Portolan.
#[derive(Debug)]
pub struct SvpClient {
    stream: TcpStream,
    buf: Vec<u8>,
    next_id: u32,
    timeout: Duration,
    broken: bool,
}

impl SvpClient {
    /// Connects (within [`DEFAULT_TIMEOUT`]) to Portolan at `addr` (`host:port`).
    pub async fn connect(addr: impl ToSocketAddrs + std::fmt::Display) -> Result<Self, SvpError> {
        let name = addr.to_string();
        let stream = match tokio::time::timeout(DEFAULT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(SvpError::Connect { addr: name, source }),
            Err(_) => {
                return Err(SvpError::Connect {
                    addr: name,
                    source: io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
                });
            }
        };
        stream.set_nodelay(true)?;
        Ok(SvpClient {
            stream,
            buf: Vec::with_capacity(4096),
            next_id: 1,
            timeout: DEFAULT_TIMEOUT,
            broken: false,
        })
    }

    /// The same client waiting `timeout` for each answer.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// PING → PONG.
    pub async fn ping(&mut self) -> Result<(), SvpError> {
        match self.call(&Request::Ping).await? {
            Response::Pong => Ok(()),
            other => Err(unexpected(Op::Ping, &other)),
        }
    }

    /// Where `mac` lives on `vnet_id`; `None` when Portolan knows no such NIC.
    pub async fn vl2(&mut self, mac: [u8; 6], vnet_id: u32) -> Result<Option<Underlay>, SvpError> {
        match self.call(&Request::Vl2 { mac, vnet_id }).await? {
            Response::Vl2 { status, underlay } => answer(Op::Vl2Ack, status, underlay),
            other => Err(unexpected(Op::Vl2Req, &other)),
        }
    }

    /// Which MAC has `ip` on `vnet_id`, and where; `None` when nothing has it.
    pub async fn vl3(&mut self, ip: IpAddr, vnet_id: u32) -> Result<Option<Vl3Answer>, SvpError> {
        let l3_type = match ip.to_canonical() {
            IpAddr::V4(_) => VL3_TYPE_IP,
            IpAddr::V6(_) => VL3_TYPE_IPV6,
        };
        let req = Request::Vl3 {
            ip: to_v6(ip),
            l3_type,
            vnet_id,
        };
        match self.call(&req).await? {
            Response::Vl3 {
                status,
                mac,
                underlay,
            } => answer(Op::Vl3Ack, status, Vl3Answer { mac, underlay }),
            other => Err(unexpected(Op::Vl3Req, &other)),
        }
    }

    /// The log of the node whose underlay address is `underlay_ip`: at most `max_bytes`
    /// of entries (a VL2 entry is 32 bytes, a VL3 entry 44), oldest first.
    pub async fn log(
        &mut self,
        underlay_ip: IpAddr,
        max_bytes: u32,
    ) -> Result<Vec<LogEntry>, SvpError> {
        let req = Request::Log {
            count: max_bytes,
            ip: to_v6(underlay_ip),
        };
        match self.call(&req).await? {
            Response::Log { status, entries } => match status {
                Status::Ok => Ok(entries),
                status => Err(SvpError::Status {
                    op: Op::LogAck,
                    status,
                }),
            },
            other => Err(unexpected(Op::LogReq, &other)),
        }
    }

    /// Removes these entries from the log (ids already gone are fine).
    pub async fn log_rm(&mut self, ids: &[Uuid]) -> Result<(), SvpError> {
        let req = Request::LogRm { ids: ids.to_vec() };
        match self.call(&req).await? {
            Response::LogRm { status: Status::Ok } => Ok(()),
            Response::LogRm { status } => Err(SvpError::Status {
                op: Op::LogRmAck,
                status,
            }),
            other => Err(unexpected(Op::LogRm, &other)),
        }
    }

    /// Sends `req` and waits for the answer with its id.
    async fn call(&mut self, req: &Request) -> Result<Response, SvpError> {
        if self.broken {
            return Err(SvpError::Broken);
        }
        self.broken = true;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let frame = req.encode(id);
        let timeout = self.timeout;
        let exchange = async {
            self.stream.write_all(&frame).await?;
            self.read_answer(id).await
        };
        let response = match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(SvpError::Timeout {
                    op: req.op(),
                    after: timeout,
                });
            }
        };
        self.broken = response.status() == Some(Status::Fatal);
        Ok(response)
    }

    async fn read_answer(&mut self, id: u32) -> Result<Response, SvpError> {
        loop {
            match decode_response(&self.buf)? {
                Decoded::Frame {
                    id: got,
                    message,
                    len,
                } => {
                    self.buf.drain(..len);
                    if got == id {
                        return Ok(message);
                    }
                    // Not ours: an answer to an earlier request; skip it.
                }
                Decoded::Incomplete => {
                    if self.stream.read_buf(&mut self.buf).await? == 0 {
                        return Err(SvpError::Closed);
                    }
                }
            }
        }
    }
}

fn answer<T>(op: Op, status: Status, value: T) -> Result<Option<T>, SvpError> {
    match status {
        Status::Ok => Ok(Some(value)),
        Status::NotFound => Ok(None),
        status => Err(SvpError::Status { op, status }),
    }
}

fn unexpected(request: Op, answer: &Response) -> SvpError {
    SvpError::Unexpected {
        request,
        answer: answer.op(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_silent_server_times_out_and_spends_the_client() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move { listener.accept().await.unwrap() });
        let mut svp = SvpClient::connect(addr)
            .await
            .unwrap()
            .with_timeout(Duration::from_millis(100));
        let _held = accept.await.unwrap();
        let e = svp.ping().await.unwrap_err();
        assert!(matches!(e, SvpError::Timeout { op: Op::Ping, .. }), "{e}");
        assert!(matches!(svp.ping().await, Err(SvpError::Broken)));
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = SvpClient::connect(addr).await.unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("connect to Portolan at {addr}:")),
            "{e}"
        );
    }
}
