//! dhcpd's configuration: a TOML file, every key overridable by `DHCPD_<KEY>` (see
//! [`triton_common::config`]). Triton's booter takes the same facts from SAPI
//! (`serverIp`, `leaseTime`, `resolvers`, `napi.url`, `cnapi.url`, ...).

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};
use triton_common::problems::Problems;

/// Triton's `dhcp_lease_time` default: a day. Only advertised: the address is the NIC's
/// static one in NAPI, so a node that never renews keeps it anyway.
pub const DEFAULT_LEASE_SECS: u32 = 86_400;

/// Requests handled at once; a DISCOVER beyond it is dropped (with a log line) and the
/// client retransmits. Each holds a NAPI call at most.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 2048;

/// The configuration. Every address that serves is on the admin network: nothing listens
/// on 0.0.0.0 but the DHCP socket, which is bound to the admin interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The booter's own admin address (Triton's `serverIp`): `siaddr`, option 54 (server
    /// identifier), `next-server`, and the host in the boot file and iPXE script URLs.
    pub server_ip: String,
    /// The admin interface (a bridge in CoaL). The DHCP socket binds 0.0.0.0:`dhcp_port`
    /// on it alone (`SO_BINDTODEVICE`), so requests arriving on any other network never
    /// reach dhcpd. Empty: bound to `server_ip`'s interface as found in `ip -4 addr`.
    pub interface: String,
    /// DHCP server port (67).
    pub dhcp_port: u16,
    /// TFTP listen address (`server_ip:69`); empty: no TFTP.
    pub tftp_listen: String,
    /// HTTP listen address: boot files, iPXE scripts, `/ping`.
    pub http_listen: String,
    /// The HTTP address clients are told (in the boot file URL and the iPXE script);
    /// empty: `server_ip` and `http_listen`'s port.
    pub http_url: String,
    /// NAPI (gRPC): the admin NICs, their addresses and networks.
    pub napi_url: String,
    /// CNAPI (gRPC): boot parameters (`GetBootParams`), and what nodes are told in
    /// `triton.cnapi_url`.
    pub cnapi_url: String,
    /// The admin network's name in NAPI: addresses for requests that come without a relay.
    pub admin_network: String,
    /// The owner (and `belongs_to_uuid`) of the admin NICs dhcpd creates for MACs NAPI
    /// has not seen (Triton's `ufds_admin_uuid`).
    pub admin_uuid: String,
    /// Where the platform images are: `<data_dir>/os/<platform>/{vmlinuz,initrd}`; TFTP
    /// and HTTP serve only files under it (and the iPXE binaries).
    pub data_dir: String,
    /// Debian's `ipxe` package's directory: `undionly.kpxe` and `snponly.efi`.
    pub ipxe_dir: String,
    /// How iPXE fetches its script, kernel and initrd: "http" (Triton's `http_pxe_boot`,
    /// the default) or "tftp".
    pub boot_over: String,
    /// Option 51, seconds.
    pub lease_time_secs: u32,
    /// Resolvers appended to the NIC's own in option 6.
    pub resolvers: Vec<String>,
    /// Option 15; empty: not sent.
    pub dns_domain: String,
    /// See [`DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server_ip: "127.0.0.1".into(),
            interface: String::new(),
            dhcp_port: 67,
            tftp_listen: "127.0.0.1:69".into(),
            http_listen: "127.0.0.1:8082".into(),
            http_url: String::new(),
            napi_url: "http://127.0.0.1:2023".into(),
            cnapi_url: "http://127.0.0.1:2030".into(),
            admin_network: "admin".into(),
            admin_uuid: String::new(),
            data_dir: "/var/lib/triton/dhcpd".into(),
            ipxe_dir: "/usr/lib/ipxe".into(),
            boot_over: "http".into(),
            lease_time_secs: DEFAULT_LEASE_SECS,
            resolvers: Vec::new(),
            dns_domain: String::new(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// Whether iPXE fetches over HTTP or TFTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootOver {
    /// `http://server:port/...`
    Http,
    /// `tftp://server/...`
    Tftp,
}

impl Config {
    /// Every problem at once, each naming its key and the rule.
    pub fn check(&self) -> Result<(), String> {
        let mut problems = Problems::new();
        match self.server_ip.parse::<Ipv4Addr>() {
            Ok(ip) if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() => problems
                .push(format_args!(
                    "server_ip: must be the booter's own unicast IPv4 admin address, not {ip}"
                )),
            Ok(_) => {}
            Err(_) => problems.push(format_args!(
                "server_ip: must be an IPv4 address (the booter's admin address), not {:?}",
                self.server_ip
            )),
        }
        for (key, value, optional) in [
            ("tftp_listen", &self.tftp_listen, true),
            ("http_listen", &self.http_listen, false),
        ] {
            if optional && value.is_empty() {
                continue;
            }
            match value.parse::<SocketAddr>() {
                Ok(a) if a.ip().is_unspecified() => problems.push(format_args!(
                    "{key}: must be an admin address (host:port), not every address ({value})"
                )),
                Ok(_) => {}
                Err(_) => problems.push(format_args!("{key}: must be host:port, not {value:?}")),
            }
        }
        problems.when(
            self.interface.len() > 15 || self.interface.contains('/'),
            format_args!(
                "interface: must be a network interface name (at most 15 characters, no '/'), \
                 not {:?}",
                self.interface
            ),
        );
        problems.when(
            !matches!(self.boot_over.as_str(), "http" | "tftp"),
            format_args!(
                "boot_over: must be \"http\" or \"tftp\", not {:?}",
                self.boot_over
            ),
        );
        problems.when(
            self.boot_over == "tftp" && self.tftp_listen.is_empty(),
            "boot_over: \"tftp\" needs tftp_listen",
        );
        for r in &self.resolvers {
            problems.when(
                r.parse::<Ipv4Addr>().is_err(),
                format_args!("resolvers: {r:?} is not an IPv4 address"),
            );
        }
        problems.when(
            self.admin_network.is_empty(),
            "admin_network: must name NAPI's admin network",
        );
        problems.when(self.data_dir.is_empty(), "data_dir: must be a directory");
        problems.when(
            self.lease_time_secs == 0,
            "lease_time_secs: must be at least 1",
        );
        problems.when(self.max_in_flight == 0, "max_in_flight: must be at least 1");
        problems.into_result()
    }

    /// `boot_over` as its enum (after [`Config::check`]).
    pub fn boot_over(&self) -> BootOver {
        if self.boot_over == "tftp" {
            BootOver::Tftp
        } else {
            BootOver::Http
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_defaults() {
        let env = [
            ("DHCPD_SERVER_IP", "10.99.99.7"),
            ("DHCPD_INTERFACE", "coal-admin"),
            ("DHCPD_RESOLVERS", "[\"8.8.8.8\"]"),
        ];
        let c: Config = triton_common::config::load_env("dhcpd", &env).unwrap();
        assert_eq!(c.server_ip, "10.99.99.7");
        assert_eq!(c.interface, "coal-admin");
        assert_eq!(c.resolvers, vec!["8.8.8.8".to_string()]);
        assert_eq!(c.lease_time_secs, DEFAULT_LEASE_SECS);
        assert!(c.check().is_ok());
    }

    #[test]
    fn check_names_every_bad_key() {
        let c = Config {
            server_ip: "0.0.0.0".into(),
            http_listen: "0.0.0.0:80".into(),
            tftp_listen: "nope".into(),
            boot_over: "ftp".into(),
            resolvers: vec!["dns.example".into()],
            ..Config::default()
        };
        let e = c.check().unwrap_err();
        for key in [
            "server_ip:",
            "http_listen:",
            "tftp_listen:",
            "boot_over:",
            "resolvers:",
        ] {
            assert!(e.contains(key), "{key} missing from {e}");
        }
    }
}
