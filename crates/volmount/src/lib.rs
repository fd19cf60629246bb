//! `volmount`: mounts a Triton NFS volume (`<ip>:/exports/data`, NFSv3 and MOUNT v3 on
//! TCP port 2049, no portmapper) at a directory through FUSE, with an NFSv3 client of
//! its own (the nodes' kernels have no NFS client). cn-agent runs one per volume of an
//! instance, inside the instance's network namespace (docs/compute.md, "Mounting
//! volumes").

pub mod fs;
pub mod nfs;
pub mod rpc;

use std::net::{IpAddr, SocketAddr};

/// The port of both MOUNT v3 and NFSv3 on a volume's server.
pub const NFS_PORT: u16 = 2049;

/// A volume's `nfsvolume`: `<ip>:<absolute path>` (an IPv6 address in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub ip: IpAddr,
    pub path: String,
}

impl Source {
    pub fn parse(text: &str) -> Result<Source, String> {
        let (host, path) = if let Some(rest) = text.strip_prefix('[') {
            let (host, rest) = rest
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: an unclosed '[' in the address"))?;
            let path = rest
                .strip_prefix(':')
                .ok_or_else(|| format!("{text:?}: must be <ip>:<path>"))?;
            (host, path)
        } else {
            text.split_once(':')
                .ok_or_else(|| format!("{text:?}: must be <ip>:<path>"))?
        };
        let ip: IpAddr = host
            .parse()
            .map_err(|_| format!("{text:?}: {host:?} is not an IP address"))?;
        if !path.starts_with('/') {
            return Err(format!("{text:?}: the path {path:?} must be absolute"));
        }
        if path.len() > nfs3_types::mount::MNTPATHLEN || path.contains('\0') {
            return Err(format!("{text:?}: the path is not a valid export path"));
        }
        Ok(Source {
            ip,
            path: path.to_string(),
        })
    }

    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip, port)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{ip}:{}", self.path),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}", self.path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_bad_ones_say_why() {
        let s = Source::parse("10.1.2.3:/exports/data").unwrap();
        assert_eq!(s.ip.to_string(), "10.1.2.3");
        assert_eq!(s.path, "/exports/data");
        assert_eq!(s.to_string(), "10.1.2.3:/exports/data");
        let s = Source::parse("[fd00::1]:/exports/data").unwrap();
        assert_eq!(s.to_string(), "[fd00::1]:/exports/data");
        assert!(
            Source::parse("10.1.2.3")
                .unwrap_err()
                .contains("<ip>:<path>")
        );
        assert!(
            Source::parse("nfs.example:/x")
                .unwrap_err()
                .contains("not an IP")
        );
        assert!(
            Source::parse("10.1.2.3:data")
                .unwrap_err()
                .contains("absolute")
        );
    }
}
