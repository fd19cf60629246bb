//! CNS's authoritative DNS server (reference 1.9, 1.10): queries over UDP and TCP, zone
//! transfers (AXFR, IXFR) to the secondaries the ACL allows, NOTIFY to them on every
//! commit. It reads the zones from `crate::zone::Zones` (a snapshot per request, never a
//! lock held across an await) and records what each secondary did in `crate::peers`.
//!
//! Bounded everywhere: a fixed number of UDP workers with one buffer each, at most
//! `MAX_TCP_CONNECTIONS` TCP connections (a permit taken before accept), an idle timeout
//! and a write timeout on each, messages no larger than their two-byte length, and at
//! most `notify::MAX_IN_FLIGHT` NOTIFYs or SOA checks in flight.
//!
//! The query path is `answer.rs` (every rule, on hickory-proto's messages), with
//! `fast.rs` in front of it on UDP: the common question's answer kept as bytes per
//! snapshot.
//!
//! `bind` then `Listener::serve` (tests bind port 0 and read the address), or `serve`.

pub mod acl;
pub mod answer;
pub mod fast;
mod notify;
mod tcp;
pub mod transfer;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

pub use acl::TransferAcl;

use crate::peers::Peers;
use crate::zone::Zones;

/// Open TCP connections at once; one more waits for a slot (not refused).
pub const MAX_TCP_CONNECTIONS: usize = 256;

/// The UDP socket's receive buffer asked for by default (`SO_RCVBUF`): 4 MiB, room
/// for tens of thousands of queries while the workers are busy (the kernel's default,
/// 208 KiB, overflowed at saturation). The kernel caps it at `net.core.rmem_max`.
pub const DEFAULT_UDP_RECV_BUFFER: usize = 4 << 20;
/// The UDP socket's send buffer asked for by default (`SO_SNDBUF`), capped at
/// `net.core.wmem_max`.
pub const DEFAULT_UDP_SEND_BUFFER: usize = 1 << 20;

/// The UDP socket's buffer sizes (bytes) to ask the kernel for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpBuffers {
    pub recv: usize,
    pub send: usize,
}

impl Default for UdpBuffers {
    fn default() -> Self {
        UdpBuffers {
            recv: DEFAULT_UDP_RECV_BUFFER,
            send: DEFAULT_UDP_SEND_BUFFER,
        }
    }
}

/// The DNS server failed to bind or stopped on a socket error.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("binding DNS on {proto} {addr}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The UDP and TCP sockets on one address and port.
pub struct Listener {
    udp: UdpSocket,
    tcp: TcpListener,
    addr: SocketAddr,
}

/// Binds UDP and TCP on `addr` with the default UDP buffers ([`bind_with`]).
pub async fn bind(addr: SocketAddr) -> Result<Listener, DnsError> {
    bind_with(addr, UdpBuffers::default()).await
}

/// Binds UDP and TCP on `addr`; with port 0 both get the same free port. The UDP
/// socket's buffers are set to `buffers`; when the kernel gives less (its
/// `net.core.rmem_max`/`wmem_max` cap), a warning names the sysctl.
pub async fn bind_with(addr: SocketAddr, buffers: UdpBuffers) -> Result<Listener, DnsError> {
    let listener = bind_sockets(addr).await?;
    set_udp_buffers(&listener.udp, buffers);
    Ok(listener)
}

/// Asks for `buffers` on `udp` and warns when the kernel gives less. Linux reports
/// twice the size asked for (its bookkeeping), so less than the size asked means capped.
fn set_udp_buffers(udp: &UdpSocket, buffers: UdpBuffers) {
    let sock = socket2::SockRef::from(udp);
    let sets = [
        (
            "receive",
            "net.core.rmem_max",
            buffers.recv,
            sock.set_recv_buffer_size(buffers.recv)
                .and_then(|_| sock.recv_buffer_size()),
        ),
        (
            "send",
            "net.core.wmem_max",
            buffers.send,
            sock.set_send_buffer_size(buffers.send)
                .and_then(|_| sock.send_buffer_size()),
        ),
    ];
    for (which, sysctl, asked, got) in sets {
        match got {
            Ok(got) if got >= asked => {
                tracing::debug!(buffer = which, bytes = got, "DNS UDP socket buffer set");
            }
            Ok(got) => tracing::warn!(
                buffer = which,
                asked,
                got,
                "DNS UDP socket buffer smaller than asked: raise {sysctl} to at least {asked}"
            ),
            Err(e) => tracing::warn!(buffer = which, error = %e, "DNS UDP socket buffer not set"),
        }
    }
}

async fn bind_sockets(addr: SocketAddr) -> Result<Listener, DnsError> {
    let bind_err = |proto, addr, source| DnsError::Bind {
        proto,
        addr,
        source,
    };
    if addr.port() != 0 {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|e| bind_err("tcp", addr, e))?;
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|e| bind_err("udp", addr, e))?;
        return Ok(Listener { udp, tcp, addr });
    }
    // Port 0: take a TCP port, then the same UDP port; another process may hold that
    // one, so try a few times.
    let mut last = None;
    for _ in 0..20 {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|e| bind_err("tcp", addr, e))?;
        let bound = tcp.local_addr().map_err(|e| bind_err("tcp", addr, e))?;
        match UdpSocket::bind(bound).await {
            Ok(udp) => {
                return Ok(Listener {
                    udp,
                    tcp,
                    addr: bound,
                });
            }
            Err(e) => last = Some((bound, e)),
        }
    }
    let (bound, e) = last.unwrap_or((
        addr,
        std::io::Error::other("no port free for both UDP and TCP"),
    ));
    Err(bind_err("udp", bound, e))
}

impl Listener {
    /// The address both sockets are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The UDP socket's receive and send buffer sizes as the kernel reports them.
    pub fn udp_buffers(&self) -> std::io::Result<UdpBuffers> {
        let sock = socket2::SockRef::from(&self.udp);
        Ok(UdpBuffers {
            recv: sock.recv_buffer_size()?,
            send: sock.send_buffer_size()?,
        })
    }

    /// Serves until `shutdown` is cancelled: queries and transfers, NOTIFY on every
    /// commit of `zones`, transfers and NOTIFY results recorded in `peers`.
    pub async fn serve(
        self,
        zones: Arc<Zones>,
        acl: Arc<TransferAcl>,
        peers: Peers,
        shutdown: CancellationToken,
    ) -> Result<(), DnsError> {
        let server = Arc::new(Server {
            zones,
            acl,
            peers,
            local: self.addr,
            shutdown: shutdown.clone(),
            probes: notify::Probes::new(),
        });
        tracing::info!(addr = %self.addr, "DNS listening on UDP and TCP");
        let udp = Arc::new(self.udp);
        let tasks = tokio_util::task::TaskTracker::new();
        tasks.spawn(tcp::accept(server.clone(), self.tcp));
        tasks.spawn(notify::run(server.clone()));
        udp::serve(server.clone(), udp).await;
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
        tracing::info!(addr = %self.addr, "DNS stopped");
        Ok(())
    }
}

/// Binds `addr` and serves (`bind` then `Listener::serve`).
pub async fn serve(
    addr: SocketAddr,
    zones: Arc<Zones>,
    acl: Arc<TransferAcl>,
    peers: Peers,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    bind(addr).await?.serve(zones, acl, peers, shutdown).await
}

/// What every part of the server shares.
struct Server {
    zones: Arc<Zones>,
    acl: Arc<TransferAcl>,
    peers: Peers,
    /// The server's own address: NOTIFYs and SOA checks go out from its IP.
    local: SocketAddr,
    shutdown: CancellationToken,
    probes: notify::Probes,
}

#[cfg(test)]
mod tests;
