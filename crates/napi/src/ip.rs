//! IPv4 subnets and addresses as NAPI validates them.

use std::fmt;
use std::net::Ipv4Addr;

/// Smallest prefix length of a network (NAPI's `SUBNET_MIN`: a /8 at most).
pub const MIN_PREFIX: u8 = 8;
/// Largest prefix length: a /30 still has two usable addresses.
pub const MAX_PREFIX: u8 = 30;

/// An IPv4 subnet in CIDR form whose address is the network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: u32,
    pub prefix: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/n`; the address must be the network address and `n` within
    /// [`MIN_PREFIX`]..=[`MAX_PREFIX`]. The error says what is wrong, for the field message.
    pub fn parse(text: &str) -> Result<Subnet, String> {
        let Some((addr, prefix)) = text.split_once('/') else {
            return Err(format!("{text:?} is not in CIDR form (a.b.c.d/n)"));
        };
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not in CIDR form (a.b.c.d/n)"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{text:?} has an invalid prefix length"))?;
        if !(MIN_PREFIX..=MAX_PREFIX).contains(&prefix) {
            return Err(format!(
                "prefix length must be between {MIN_PREFIX} and {MAX_PREFIX}, not {prefix}"
            ));
        }
        let subnet = Subnet {
            network: u32::from(addr) & mask(prefix),
            prefix,
        };
        if subnet.network != u32::from(addr) {
            return Err(format!(
                "{text:?} has host bits set (the subnet is {subnet})"
            ));
        }
        Ok(subnet)
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask(self.prefix))
    }

    pub fn broadcast(&self) -> u32 {
        self.network | !mask(self.prefix)
    }

    pub fn contains(&self, ip: u32) -> bool {
        ip & mask(self.prefix) == self.network
    }

    /// True when `other` shares an address with this subnet.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let p = self.prefix.min(other.prefix);
        self.network & mask(p) == other.network & mask(p)
    }

    /// In one of the RFC 1918 private ranges (fabric networks must be).
    pub fn is_private(&self) -> bool {
        ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
            .iter()
            .filter_map(|r| Subnet::parse(r).ok())
            .any(|r| r.prefix <= self.prefix && r.contains(self.network))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// Parses a dotted IPv4 address.
pub fn parse_ip(text: &str) -> Result<u32, String> {
    text.trim()
        .parse::<Ipv4Addr>()
        .map(u32::from)
        .map_err(|_| format!("{text:?} is not a valid IPv4 address"))
}

pub fn format_ip(ip: u32) -> String {
    Ipv4Addr::from(ip).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_computes() {
        let s = Subnet::parse("10.99.99.0/24").unwrap();
        assert_eq!(s.netmask().to_string(), "255.255.255.0");
        assert_eq!(format_ip(s.broadcast()), "10.99.99.255");
        assert!(s.contains(parse_ip("10.99.99.7").unwrap()));
        assert!(!s.contains(parse_ip("10.99.98.7").unwrap()));
        assert_eq!(s.to_string(), "10.99.99.0/24");
    }

    #[test]
    fn refuses_bad_subnets_with_a_reason() {
        assert!(Subnet::parse("10.0.0.0").unwrap_err().contains("CIDR"));
        assert!(
            Subnet::parse("10.0.0.5/24")
                .unwrap_err()
                .contains("10.0.0.0/24")
        );
        assert!(
            Subnet::parse("10.0.0.0/4")
                .unwrap_err()
                .contains("prefix length")
        );
        assert!(Subnet::parse("10.0.0.0/31").is_err());
        assert!(Subnet::parse("10.0.0.300/24").is_err());
        assert!(Subnet::parse("10.0.0.0/x").is_err());
    }

    #[test]
    fn private_and_overlap() {
        assert!(Subnet::parse("192.168.5.0/24").unwrap().is_private());
        assert!(Subnet::parse("172.20.0.0/16").unwrap().is_private());
        assert!(!Subnet::parse("172.32.0.0/16").unwrap().is_private());
        assert!(!Subnet::parse("8.8.8.0/24").unwrap().is_private());
        let a = Subnet::parse("10.0.0.0/16").unwrap();
        assert!(a.overlaps(&Subnet::parse("10.0.5.0/24").unwrap()));
        assert!(!a.overlaps(&Subnet::parse("10.1.0.0/24").unwrap()));
    }
}
