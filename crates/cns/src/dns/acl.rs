//! Who may transfer a zone, and where NOTIFY goes (reference 1.10): the `allow_transfer`
//! addresses and networks, the zones' `peers` host names resolved to addresses, and
//! always 127.0.0.1 and ::1.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::RwLock;

/// The port secondaries listen on, where NOTIFY and the SOA check after a transfer go.
pub const DNS_PORT: u16 = 53;

/// An address with a prefix length (`10.0.0.0/8`, `fd00::/64`, or one host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// One host.
    pub fn host(addr: IpAddr) -> Cidr {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Cidr { addr, prefix }
    }

    /// Parses `a.b.c.d`, `a.b.c.d/n`, an IPv6 address or `addr/n`; the error says which
    /// rule the text breaks.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{text:?}: the prefix length must be 0 to {max}")),
            },
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is inside (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, unmap(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask32(self.prefix);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask128(self.prefix);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// A single host (/32 or /128).
    pub fn is_host(&self) -> bool {
        self.prefix == if self.addr.is_ipv4() { 32 } else { 128 }
    }
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d` (a dual-stack socket reports IPv4 clients so).
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// 127.0.0.1 or ::1: the server's own host, always allowed, never sent NOTIFY (as
/// Triton's `notify` skips them).
pub fn is_local(ip: IpAddr) -> bool {
    let ip = unmap(ip);
    ip == IpAddr::V4(Ipv4Addr::LOCALHOST) || ip == IpAddr::V6(Ipv6Addr::LOCALHOST)
}

/// A bad `allow_transfer` entry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("allow_transfer[{index}]: {reason}")]
pub struct AclError {
    pub index: usize,
    pub reason: String,
}

#[derive(Debug, Default)]
struct State {
    allow: Vec<Cidr>,
    /// The zones' `peers` host names, resolved by `resolve`.
    peer_names: Vec<String>,
    resolved: Vec<IpAddr>,
    notify_port: u16,
}

/// The transfer ACL and NOTIFY targets; shared, and changed in place when the config
/// changes (`set`).
#[derive(Debug)]
pub struct TransferAcl {
    state: RwLock<State>,
}

impl TransferAcl {
    /// `allow_transfer` (IPs or CIDRs) and the zones' `peers` (host names or addresses).
    pub fn new(allow_transfer: &[String], peers: &[String]) -> Result<TransferAcl, AclError> {
        let acl = TransferAcl {
            state: RwLock::new(State {
                notify_port: DNS_PORT,
                ..State::default()
            }),
        };
        acl.set(allow_transfer, peers)?;
        Ok(acl)
    }

    /// Replaces the allowed networks and peer names; nothing changes when an entry is
    /// bad. Peer names that are addresses count at once, others after `resolve`.
    pub fn set(&self, allow_transfer: &[String], peers: &[String]) -> Result<(), AclError> {
        let allow = allow_transfer
            .iter()
            .enumerate()
            .map(|(index, t)| Cidr::parse(t).map_err(|reason| AclError { index, reason }))
            .collect::<Result<Vec<_>, _>>()?;
        let mut peer_names: Vec<String> = peers.iter().map(|p| p.trim().to_string()).collect();
        peer_names.sort();
        peer_names.dedup();
        let resolved = peer_names
            .iter()
            .filter_map(|p| p.parse::<IpAddr>().ok())
            .collect();
        let mut state = self.write();
        state.allow = allow;
        state.peer_names = peer_names;
        state.resolved = resolved;
        Ok(())
    }

    /// Where secondaries listen for NOTIFY and the SOA check (53 unless a test says).
    pub fn set_notify_port(&self, port: u16) {
        self.write().notify_port = port;
    }

    pub fn notify_port(&self) -> u16 {
        self.read().notify_port
    }

    /// Resolves the peer host names (A and AAAA); a name that does not resolve is logged
    /// and left out until the next try.
    pub async fn resolve(&self) {
        let names = self.read().peer_names.clone();
        let mut resolved = Vec::new();
        for name in &names {
            if let Ok(ip) = name.parse::<IpAddr>() {
                resolved.push(ip);
                continue;
            }
            match tokio::net::lookup_host((name.as_str(), DNS_PORT)).await {
                Ok(addrs) => resolved.extend(addrs.map(|a| unmap(a.ip()))),
                Err(e) => {
                    tracing::warn!(peer = %name, error = %e, "failed to look up peer addresses")
                }
            }
        }
        resolved.sort();
        resolved.dedup();
        let mut state = self.write();
        // The names may have changed while resolving; keep what still applies.
        if state.peer_names == names {
            state.resolved = resolved;
        }
    }

    /// Whether `ip` may transfer zones.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = unmap(ip);
        if is_local(ip) {
            return true;
        }
        let state = self.read();
        state.allow.iter().any(|c| c.contains(ip)) || state.resolved.contains(&ip)
    }

    /// The configured secondaries NOTIFY goes to on every change: single-host
    /// `allow_transfer` entries and the resolved peers, but never 127.0.0.1 or ::1.
    pub fn notify_hosts(&self) -> Vec<SocketAddr> {
        let state = self.read();
        let mut hosts: Vec<IpAddr> = state
            .allow
            .iter()
            .filter(|c| c.is_host())
            .map(|c| c.addr)
            .chain(state.resolved.iter().copied())
            .filter(|ip| !is_local(*ip) && !ip.is_unspecified())
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
            .into_iter()
            .map(|ip| SocketAddr::new(ip, state.notify_port))
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        match self.state.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        match self.state.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn allows_listed_networks_peers_and_the_local_host_only() {
        let acl = TransferAcl::new(
            &strings(&["10.1.0.0/16", "192.0.2.7", "fd00:1::/64"]),
            &strings(&["198.51.100.9"]),
        )
        .unwrap();
        for ok in [
            "127.0.0.1",
            "::1",
            "10.1.200.3",
            "192.0.2.7",
            "fd00:1::5",
            "198.51.100.9",
            "::ffff:10.1.0.1",
        ] {
            assert!(acl.allows(ip(ok)), "{ok} should be allowed");
        }
        for refused in ["127.0.0.2", "10.2.0.1", "192.0.2.8", "fd00:2::5", "::2"] {
            assert!(!acl.allows(ip(refused)), "{refused} should be refused");
        }
        assert_eq!(
            acl.notify_hosts(),
            vec![
                "192.0.2.7:53".parse::<SocketAddr>().unwrap(),
                "198.51.100.9:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn a_bad_entry_names_its_index_and_rule_and_changes_nothing() {
        let acl = TransferAcl::new(&strings(&["10.0.0.1"]), &[]).unwrap();
        let err = acl
            .set(&strings(&["10.0.0.2", "10.0.0.0/33"]), &[])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "allow_transfer[1]: \"10.0.0.0/33\": the prefix length must be 0 to 32"
        );
        let err = acl.set(&strings(&["cns.example"]), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "allow_transfer[0]: \"cns.example\" is not an IP address or CIDR"
        );
        assert!(acl.allows(ip("10.0.0.1")));
        assert!(!acl.allows(ip("10.0.0.2")));
    }

    #[tokio::test]
    async fn peer_names_resolve() {
        let acl = TransferAcl::new(&[], &strings(&["localhost"])).unwrap();
        acl.resolve().await;
        assert!(acl.allows(ip("127.0.0.1")));
        // localhost resolves to loopback only, which NOTIFY never goes to.
        assert!(acl.notify_hosts().is_empty());
    }
}
