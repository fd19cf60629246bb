//! The DHCP server: one UDP socket on port 67 bound to the admin interface
//! (`SO_BINDTODEVICE`, so broadcasts on other networks never reach it), each request
//! handled on its own task (at most `max_in_flight` at once), answered as RFC 2131 says
//! with the address NAPI holds for the MAC (`leases`).
//!
//! - DISCOVER: OFFER with the NIC's address (the NIC made on first contact).
//! - REQUEST: ACK when the address asked for (option 50, or `ciaddr`) is the NIC's, NAK
//!   when it is not; silence when it names another server (option 54) or NAPI has no NIC.
//! - INFORM: ACK with the options and no address or lease time, to `ciaddr`.
//! - RELEASE: logged; the address stays the NIC's in NAPI (nothing to free).
//! - DECLINE: logged as a warning: another host answers on the NIC's address.
//!
//! Replies go to the relay (the request's source) when `giaddr` is set, to `ciaddr` when
//! the client has an address, else broadcast to 255.255.255.255:68. A request that is not
//! answered gets one log line with the MAC and the reason.

pub mod leases;
pub mod packet;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use leases::{LeaseError, Leases};
use packet::{Answer, Dropped, Facts, Kind, MAX_REQUEST_BYTES, Request};

/// Port clients listen on.
const CLIENT_PORT: u16 = 68;
/// The DHCP socket's receive buffer asked for (SO_RCVBUF), bytes.
pub const RECV_BUFFER: usize = 4 << 20;

/// The running server's shared parts.
pub struct Dhcp {
    pub socket: Arc<UdpSocket>,
    pub leases: Arc<Leases>,
    pub facts: Arc<Facts>,
    pub max_in_flight: usize,
}

/// A UDP socket on 0.0.0.0:`port` that sees only `interface`'s traffic and may
/// broadcast.
pub fn bind_on_interface(interface: &str, port: u16) -> Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let bind = Error::bind("DHCP", format!("{addr} on {interface}"));
    let make = || -> std::io::Result<UdpSocket> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket.bind_device(Some(interface.as_bytes()))?;
        socket.set_broadcast(true)?;
        // A burst of PXE ROMs (a rack powered on) arrives faster than new MACs are
        // answered; the default buffer (about 200 DISCOVERs) overflowed and the kernel
        // dropped the rest. The kernel caps this at net.core.rmem_max.
        socket.set_recv_buffer_size(RECV_BUFFER)?;
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        UdpSocket::from_std(socket.into())
    };
    make().map_err(bind)
}

/// The interface that holds `ip` (`getifaddrs`).
pub fn interface_of(ip: Ipv4Addr) -> Result<String> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `addrs` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return Err(Error::Interface(format!(
            "cannot list interfaces: {}",
            std::io::Error::last_os_error()
        )));
    }
    let mut found = None;
    let mut cur = addrs;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs made, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null()
            // SAFETY: ifa_addr points at a sockaddr of the family it names.
            && i32::from(unsafe { (*ifa.ifa_addr).sa_family }) == libc::AF_INET
        {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            if Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)) == ip {
                // SAFETY: ifa_name is a NUL-terminated string of the list.
                let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
                found = Some(name.to_string_lossy().into_owned());
                break;
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `addrs` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(addrs) };
    found.ok_or_else(|| {
        Error::Interface(format!(
            "no interface holds server_ip {ip}; set interface to the admin one"
        ))
    })
}

impl Dhcp {
    /// Serves until `shutdown`.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<()> {
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.max_in_flight));
        // One byte over the most we read, to tell an oversized datagram.
        let mut buf = vec![0u8; MAX_REQUEST_BYTES + 1];
        loop {
            let Some((n, src)) =
                crate::udp::next_datagram(&this.socket, &mut buf, &shutdown, "DHCP").await
            else {
                return Ok(());
            };
            let req = match packet::parse(&buf[..n]) {
                Ok(req) => req,
                Err(Dropped::NotRequest) => continue,
                Err(why) => {
                    tracing::info!(%src, reason = %why, "DHCP packet dropped");
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::warn!(mac = %req.mac, %src, "DHCP request dropped: {} requests in flight", this.max_in_flight);
                continue;
            };
            let this = this.clone();
            tokio::spawn(async move {
                this.handle(req, src).await;
                drop(permit);
            });
        }
    }

    async fn handle(&self, req: Request, src: SocketAddr) {
        let mac = req.mac;
        let kind = req.kind;
        let (answer, lease) = match self.decide(&req).await {
            Ok(Some(a)) => a,
            Ok(None) => return,
            Err(why) => {
                tracing::info!(%mac, ?kind, giaddr = %req.giaddr, reason = %why, "DHCP request not answered");
                return;
            }
        };
        let bytes = match packet::reply(&req, answer, lease.as_ref(), &self.facts) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(%mac, ?kind, error = %e, "DHCP reply not built");
                return;
            }
        };
        let to = destination(&req, answer, src);
        match self.socket.send_to(&bytes, to).await {
            Ok(_) => {
                tracing::debug!(%mac, ?kind, ?answer, %to, ip = ?lease.map(|l| l.ip), "DHCP reply sent")
            }
            Err(e) => tracing::warn!(%mac, %to, error = %e, "DHCP reply not sent"),
        }
    }

    /// What to answer: `Ok(None)` is a deliberate silence (logged here).
    async fn decide(
        &self,
        req: &Request,
    ) -> Result<Option<(Answer, Option<packet::Lease>)>, LeaseError> {
        let mac = req.mac;
        // A client that says where it is must say an admin network.
        for (what, ip) in [("giaddr", req.giaddr), ("ciaddr", req.ciaddr)] {
            if !ip.is_unspecified() && !self.leases.on_admin_network(ip).await? {
                return Err(LeaseError::Refused(format!(
                    "{what} {ip} is in no admin network NAPI knows"
                )));
            }
        }
        match req.kind {
            Kind::Discover => {
                let lease = self.leases.lease(mac, req.giaddr, true).await?;
                Ok(Some((Answer::Offer, Some(lease))))
            }
            Kind::Request => {
                if let Some(id) = req.server_id
                    && id != self.facts.server_ip
                {
                    tracing::debug!(%mac, server = %id, "REQUEST for another server");
                    return Ok(None);
                }
                let lease = match self.leases.cached(mac) {
                    Some(l) => l,
                    None => self.leases.lease(mac, req.giaddr, false).await?,
                };
                let asked = req.requested_ip.unwrap_or(req.ciaddr);
                if asked != lease.ip {
                    tracing::info!(%mac, %asked, napi = %lease.ip, "DHCP NAK: not the NIC's address");
                    return Ok(Some((Answer::Nak, None)));
                }
                Ok(Some((Answer::Ack, Some(lease))))
            }
            Kind::Inform => {
                let lease = self.leases.lease(mac, req.giaddr, false).await?;
                Ok(Some((Answer::InformAck, Some(lease))))
            }
            Kind::Release => {
                tracing::info!(%mac, ip = %req.ciaddr, "DHCP RELEASE: the address stays the NIC's in NAPI");
                Ok(None)
            }
            Kind::Decline => {
                tracing::warn!(%mac, ip = ?req.requested_ip, "DHCP DECLINE: another host answers on this NIC's address; check the admin network");
                Ok(None)
            }
        }
    }
}

/// Where a reply goes (RFC 2131 4.1).
fn destination(req: &Request, answer: Answer, src: SocketAddr) -> SocketAddr {
    if !req.giaddr.is_unspecified() {
        return src;
    }
    if answer != Answer::Nak && !req.ciaddr.is_unspecified() {
        return SocketAddr::V4(SocketAddrV4::new(req.ciaddr, CLIENT_PORT));
    }
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT))
}
