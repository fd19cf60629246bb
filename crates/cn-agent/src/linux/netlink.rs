//! The little of rtnetlink the overlay needs, over a raw `NETLINK_ROUTE` socket: the
//! kernel's neighbour-miss notices of VXLAN devices (`l2miss`, `l3miss`), and neighbour
//! and VXLAN forwarding entries added and removed.
//!
//! A socket belongs to the network namespace of the thread that opened it, for its whole
//! life: [`super::overlay`] opens its sockets in the node's namespace and uses them from
//! any thread.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

const NLMSG_HDR: usize = 16;
const NDMSG_LEN: usize = 12;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const RTM_GETNEIGH: u16 = 30;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NDA_PORT: u16 = 6;
const NUD_REACHABLE: u16 = 0x02;
const NUD_PERMANENT: u16 = 0x80;
const NTF_SELF: u8 = 0x02;
/// `RTNLGRP_NEIGH` as a bind mask (`RTMGRP_NEIGH`).
const RTMGRP_NEIGH: u32 = 0x4;

/// What a VXLAN device could not forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MissKind {
    /// An ARP request for this address found no neighbour entry (`l3miss`).
    L3(Ipv4Addr),
    /// A frame to this unicast MAC found no forwarding entry (`l2miss`).
    L2([u8; 6]),
}

/// A miss notice: the device's index and what was missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Miss {
    pub ifindex: u32,
    pub kind: MissKind,
}

/// The misses in one datagram read from a socket bound to the neighbour group. Other
/// messages (neighbour changes, IPv6 misses, anything cut short) are passed over.
pub fn parse_misses(buf: &[u8]) -> Vec<Miss> {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() >= at + NLMSG_HDR {
        let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        if len < NLMSG_HDR || at + len > buf.len() {
            break;
        }
        if kind == RTM_GETNEIGH
            && let Some(miss) = parse_miss(&buf[at + NLMSG_HDR..at + len])
        {
            out.push(miss);
        }
        at += align(len);
    }
    out
}

fn parse_miss(body: &[u8]) -> Option<Miss> {
    if body.len() < NDMSG_LEN {
        return None;
    }
    let family = i32::from(body[0]);
    let ifindex = i32::from_ne_bytes([body[4], body[5], body[6], body[7]]);
    let ifindex = u32::try_from(ifindex).ok().filter(|i| *i > 0)?;
    if family != libc::AF_INET {
        return None;
    }
    let mut dst = None;
    let mut lladdr = None;
    let mut at = NDMSG_LEN;
    while body.len() >= at + 4 {
        let len = usize::from(u16::from_ne_bytes([body[at], body[at + 1]]));
        let kind = u16::from_ne_bytes([body[at + 2], body[at + 3]]) & 0x3fff;
        if len < 4 || at + len > body.len() {
            break;
        }
        let data = &body[at + 4..at + len];
        match (kind, data.len()) {
            (NDA_DST, 4) => dst = Some(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
            (NDA_LLADDR, 6) => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(data);
                lladdr = Some(mac);
            }
            _ => {}
        }
        at += align(len);
    }
    let kind = match (dst, lladdr) {
        (Some(ip), None) => MissKind::L3(ip),
        (None, Some(mac)) if mac[0] & 1 == 0 && mac != [0; 6] => MissKind::L2(mac),
        _ => return None,
    };
    Some(Miss { ifindex, kind })
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// A netlink request under construction.
struct Message {
    buf: Vec<u8>,
}

impl Message {
    fn neigh(kind: u16, flags: u16, family: u8, ifindex: u32, state: u16, ntf: u8) -> Message {
        let mut buf = vec![0u8; NLMSG_HDR];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.push(family);
        buf.extend_from_slice(&[0, 0, 0]);
        buf.extend_from_slice(&ifindex.to_ne_bytes());
        buf.extend_from_slice(&state.to_ne_bytes());
        buf.push(ntf);
        buf.push(0);
        Message { buf }
    }

    fn attr(mut self, kind: u16, data: &[u8]) -> Message {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// setsockopt(2) of the `SOL_SOCKET` option `name` to `value`.
fn set_option<T>(fd: &OwnedFd, name: libc::c_int, value: &T) -> std::io::Result<()> {
    // SAFETY: setsockopt(2) on a descriptor we hold, with a value that outlives the call
    // and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A `NETLINK_ROUTE` socket.
pub struct Socket {
    fd: OwnedFd,
    /// Requests wait for their answer one at a time.
    seq: Mutex<u32>,
}

impl Socket {
    /// A socket for requests, in the calling thread's network namespace.
    pub fn requests() -> std::io::Result<Socket> {
        Socket::open(0)
    }

    /// A socket that receives the neighbour group's notices (misses among them), in the
    /// calling thread's network namespace; a read waits at most `timeout`.
    pub fn neighbour_notices(timeout: Duration) -> std::io::Result<Socket> {
        let socket = Socket::open(RTMGRP_NEIGH)?;
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
        };
        set_option(&socket.fd, libc::SO_RCVTIMEO, &tv)?;
        // A burst of misses must not be lost to a small buffer (best effort).
        let size: libc::c_int = 1 << 20;
        let _ = set_option(&socket.fd, libc::SO_RCVBUF, &size);
        Ok(socket)
    }

    fn open(groups: u32) -> std::io::Result<Socket> {
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; all zeroes is valid.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = groups;
        // SAFETY: bind(2) with an address we own and its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Socket {
            fd,
            seq: Mutex::new(0),
        })
    }

    /// Reads one datagram; `None` when the read timed out.
    pub fn recv(&self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        // SAFETY: recv(2) into a buffer we own.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
                // The kernel dropped notices: the instances ask again.
                Some(libc::ENOBUFS) => Ok(Some(0)),
                _ => Err(e),
            };
        }
        Ok(Some(n as usize))
    }

    /// Sends `message` and waits for the kernel's answer to it.
    fn request(&self, message: Message) -> std::io::Result<()> {
        let mut seq = self.seq.lock().unwrap_or_else(|e| e.into_inner());
        *seq = seq.wrapping_add(1);
        let bytes = message.finish(*seq);
        // SAFETY: send(2) from a buffer we own.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 8192];
        loop {
            // SAFETY: recv(2) into a buffer we own.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(e);
            }
            let n = n as usize;
            let mut at = 0;
            while n >= at + NLMSG_HDR {
                let len =
                    u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
                let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                let got =
                    u32::from_ne_bytes([buf[at + 8], buf[at + 9], buf[at + 10], buf[at + 11]]);
                if len < NLMSG_HDR || at + len > n {
                    break;
                }
                if got == *seq && kind == NLMSG_ERROR && len >= NLMSG_HDR + 4 {
                    let b = &buf[at + NLMSG_HDR..at + NLMSG_HDR + 4];
                    let code = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
                    return match code {
                        0 => Ok(()),
                        c => Err(std::io::Error::from_raw_os_error(-c)),
                    };
                }
                if got == *seq && kind == NLMSG_DONE {
                    return Ok(());
                }
                at += align(len);
            }
        }
    }

    /// `ip neigh replace <ip> lladdr <mac> dev <ifindex> nud permanent`: the answer the
    /// VXLAN device's ARP proxy gives for `ip`.
    pub fn set_neighbour(&self, ifindex: u32, ip: Ipv4Addr, mac: [u8; 6]) -> std::io::Result<()> {
        self.request(
            Message::neigh(
                RTM_NEWNEIGH,
                NLM_F_CREATE | NLM_F_REPLACE,
                libc::AF_INET as u8,
                ifindex,
                NUD_PERMANENT,
                0,
            )
            .attr(NDA_DST, &ip.octets())
            .attr(NDA_LLADDR, &mac),
        )
    }

    /// `ip neigh del <ip> dev <ifindex>`; an entry that is not there is fine.
    pub fn remove_neighbour(&self, ifindex: u32, ip: Ipv4Addr) -> std::io::Result<()> {
        let message = Message::neigh(RTM_DELNEIGH, 0, libc::AF_INET as u8, ifindex, 0, 0)
            .attr(NDA_DST, &ip.octets());
        absent_is_fine(self.request(message))
    }

    /// `bridge fdb replace <mac> dev <ifindex> dst <underlay> [port <port>] self`: where
    /// the VXLAN device sends frames for `mac`. Aged out by the device when unused.
    pub fn set_forwarding(
        &self,
        ifindex: u32,
        mac: [u8; 6],
        underlay: Ipv4Addr,
        port: u16,
    ) -> std::io::Result<()> {
        let mut message = Message::neigh(
            RTM_NEWNEIGH,
            NLM_F_CREATE | NLM_F_REPLACE,
            libc::AF_BRIDGE as u8,
            ifindex,
            NUD_REACHABLE,
            NTF_SELF,
        )
        .attr(NDA_LLADDR, &mac)
        .attr(NDA_DST, &underlay.octets());
        if port != 0 {
            message = message.attr(NDA_PORT, &port.to_be_bytes());
        }
        self.request(message)
    }

    /// `bridge fdb del <mac> dev <ifindex> self`; an entry that is not there is fine.
    pub fn remove_forwarding(&self, ifindex: u32, mac: [u8; 6]) -> std::io::Result<()> {
        let message = Message::neigh(RTM_DELNEIGH, 0, libc::AF_BRIDGE as u8, ifindex, 0, NTF_SELF)
            .attr(NDA_LLADDR, &mac);
        absent_is_fine(self.request(message))
    }
}

fn absent_is_fine(result: std::io::Result<()>) -> std::io::Result<()> {
    match result {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENODEV)) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(kind: u16, family: u8, ifindex: i32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut m = Message::neigh(kind, 0, family, ifindex as u32, 0, 0);
        for (k, d) in attrs {
            m = m.attr(*k, d);
        }
        m.finish(0)
    }

    #[test]
    fn misses_are_read_and_everything_else_passed_over() {
        let mut buf = notice(
            RTM_GETNEIGH,
            libc::AF_INET as u8,
            7,
            &[(NDA_DST, &[10, 0, 0, 2])],
        );
        buf.extend(notice(
            RTM_GETNEIGH,
            libc::AF_INET as u8,
            7,
            &[(NDA_LLADDR, &[2, 8, 0x20, 1, 2, 3])],
        ));
        // A neighbour change, a broadcast MAC, an IPv6 miss, no attributes.
        buf.extend(notice(
            RTM_NEWNEIGH,
            libc::AF_INET as u8,
            7,
            &[(NDA_DST, &[10, 0, 0, 3])],
        ));
        buf.extend(notice(
            RTM_GETNEIGH,
            libc::AF_INET as u8,
            7,
            &[(NDA_LLADDR, &[0xff; 6])],
        ));
        buf.extend(notice(
            RTM_GETNEIGH,
            libc::AF_INET6 as u8,
            7,
            &[(NDA_DST, &[0xfe; 16])],
        ));
        buf.extend(notice(RTM_GETNEIGH, libc::AF_INET as u8, 7, &[]));
        let misses = parse_misses(&buf);
        assert_eq!(
            misses,
            vec![
                Miss {
                    ifindex: 7,
                    kind: MissKind::L3(Ipv4Addr::new(10, 0, 0, 2))
                },
                Miss {
                    ifindex: 7,
                    kind: MissKind::L2([2, 8, 0x20, 1, 2, 3])
                },
            ]
        );
    }

    #[test]
    fn cut_or_lying_lengths_end_the_parse_without_a_panic() {
        let whole = notice(
            RTM_GETNEIGH,
            libc::AF_INET as u8,
            7,
            &[(NDA_DST, &[10, 0, 0, 2])],
        );
        for cut in 0..whole.len() {
            assert!(parse_misses(&whole[..cut]).is_empty());
        }
        let mut lying = whole.clone();
        lying[0..4].copy_from_slice(&10_000u32.to_ne_bytes());
        assert!(parse_misses(&lying).is_empty());
        let mut attr_lying = whole.clone();
        attr_lying[NLMSG_HDR + NDMSG_LEN..NLMSG_HDR + NDMSG_LEN + 2]
            .copy_from_slice(&200u16.to_ne_bytes());
        assert!(parse_misses(&attr_lying).is_empty());
    }
}
