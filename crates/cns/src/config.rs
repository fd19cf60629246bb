//! CNS's configuration: a TOML file, every key overridable by `CNS_<KEY>` (see
//! [`triton_common::config`]).
//!
//! The naming settings (reference 1.2: `my_name`, `hostmaster`, `forward_zones`,
//! `reverse_zones`, `allow_transfer`, `use_alias`, `use_login`) in the file are only the
//! *initial* ones: the live settings are one record in Moray (bucket `cns_config`),
//! seeded from the file on the first start and then changed only by UpdateConfig
//! (`cnsadm config`), so what an operator sets survives restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use moray_client::service::MorayService;
use serde::{Deserialize, Serialize};
use triton_common::field_error::FieldError;
use triton_common::problems::Problems;
use triton_proto::cns::v1 as pb;

use crate::names;

/// Default gRPC (admin API) listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2040";
/// Default DNS address (UDP and TCP).
pub const DEFAULT_DNS_LISTEN: &str = "127.0.0.1:5353";

/// One forward zone's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardZone {
    /// Network or network-pool uuids whose NICs' addresses go in this zone, or `*`.
    pub networks: Vec<String>,
    /// Secondary name servers (host names): in the NS set, allowed to transfer.
    pub peers: Vec<String>,
    /// CNS leaves the NS set and `peers[0]` is the SOA MNAME.
    pub hidden_primary: bool,
}

impl Default for ForwardZone {
    fn default() -> Self {
        ForwardZone {
            networks: vec!["*".into()],
            peers: Vec::new(),
            hidden_primary: false,
        }
    }
}

/// The settings of every reverse (`in-addr.arpa`, `ip6.arpa`) zone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReverseZones {
    pub peers: Vec<String>,
    pub hidden_primary: bool,
}

/// The live naming settings (reference 1.2), as kept in Moray and edited by cnsadm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// NS name of CNS itself (SOA MNAME unless a hidden primary).
    pub my_name: String,
    /// `local@domain`: the SOA RNAME with `@` made a `.`.
    pub hostmaster: String,
    /// Zone name (lower-case, no trailing dot) -> which networks it lists.
    pub forward_zones: BTreeMap<String, ForwardZone>,
    pub reverse_zones: ReverseZones,
    /// IPs or CIDRs allowed AXFR/IXFR (127.0.0.1 and ::1 always are).
    pub allow_transfer: Vec<String>,
    /// Also names with the VM's alias in place of its uuid (default true).
    pub use_alias: bool,
    /// Also names with the owner's login in place of its uuid.
    pub use_login: bool,
}

/// The forward zone of a config that names none.
pub const DEFAULT_ZONE: &str = "coal.cns.triton.local";

impl Default for Settings {
    fn default() -> Self {
        Settings {
            my_name: "cns.coal.triton.local".into(),
            hostmaster: "hostmaster@triton.local".into(),
            forward_zones: [(DEFAULT_ZONE.to_string(), ForwardZone::default())]
                .into_iter()
                .collect(),
            reverse_zones: ReverseZones::default(),
            allow_transfer: Vec::new(),
            use_alias: true,
            use_login: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `listen` (the admin gRPC API), `[grpc]`, `moray_url` (where the config, zones
    /// and IXFR steps are kept) and `moray_connect_secs` (how long start-up keeps trying
    /// Moray).
    #[serde(flatten)]
    pub service: MorayService,
    /// UDP and TCP address the DNS is served on (`CNS_DNS_LISTEN`).
    pub dns_listen: String,
    /// The DNS UDP socket's receive buffer in bytes (`SO_RCVBUF`; the kernel caps it
    /// at `net.core.rmem_max`, and CNS warns when it does).
    pub dns_udp_recv_buffer: usize,
    /// The DNS UDP socket's send buffer in bytes (`SO_SNDBUF`, capped at
    /// `net.core.wmem_max`).
    pub dns_udp_send_buffer: usize,
    /// The port NOTIFYs are sent to on each secondary (53; tests run secondaries on
    /// other ports).
    pub notify_port: u16,
    /// The services followed (gRPC URLs).
    pub vmapi_url: String,
    pub ufds_url: String,
    pub napi_url: String,
    pub cnapi_url: String,
    /// `<label>.<zone>` is CMon's name in every forward zone, and
    /// `<vm uuid>.<label>.<zone>` a CNAME to it for every listed VM and compute node.
    pub cmon_suffix_label: String,
    /// CMon's address: `cmon.<zone> A <it>` (none when empty: the CNAMEs still exist).
    pub cmon_address: String,
    /// Changes are gathered this long before a new serial is made (one serial per
    /// changed zone per window); an idle CNS commits the first change at once.
    pub commit_window_ms: u64,
    /// The newest this many IXFR steps of each zone are always kept (in memory and in
    /// Moray) for any secondary.
    pub journal_keep: usize,
    /// Steps beyond the newest `journal_keep` are kept while a known secondary needs
    /// them, but never more than `journal_max` per zone ...
    pub journal_max: usize,
    /// ... and none older than this many days (`journal.rs`).
    pub journal_keep_days: u64,
    /// How often the journal is collected (seconds; the first pass this long after
    /// start, so secondaries are known again after a restart).
    pub journal_gc_secs: u64,
    /// The initial naming settings (used when Moray holds none).
    #[serde(flatten)]
    pub initial: Settings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: MorayService::new(DEFAULT_LISTEN),
            dns_listen: DEFAULT_DNS_LISTEN.into(),
            dns_udp_recv_buffer: crate::dns::DEFAULT_UDP_RECV_BUFFER,
            dns_udp_send_buffer: crate::dns::DEFAULT_UDP_SEND_BUFFER,
            notify_port: 53,
            vmapi_url: "http://127.0.0.1:2025".into(),
            ufds_url: "http://127.0.0.1:1390".into(),
            napi_url: "http://127.0.0.1:2023".into(),
            cnapi_url: "http://127.0.0.1:2030".into(),
            cmon_suffix_label: "cmon".into(),
            cmon_address: String::new(),
            commit_window_ms: 250,
            journal_keep: 100,
            journal_max: 10_000,
            journal_keep_days: 7,
            journal_gc_secs: 60,
            // Empty here, so that the config loader takes `forward_zones` as a map of
            // the operator's zone names (a table whose default is empty is a map; one
            // with a default key is a struct and refuses other keys); a config naming
            // no zone gets DEFAULT_ZONE (`initial_settings`).
            initial: Settings {
                forward_zones: BTreeMap::new(),
                ..Settings::default()
            },
        }
    }
}

impl Config {
    /// The initial naming settings: the file's, with the zone [`DEFAULT_ZONE`] (every
    /// network) when it names no forward zone.
    pub fn initial_settings(&self) -> Settings {
        let mut s = self.initial.clone();
        if s.forward_zones.is_empty() {
            s.forward_zones
                .insert(DEFAULT_ZONE.to_string(), ForwardZone::default());
        }
        s
    }

    /// What `--check-config` and start-up check beyond the keys' types: the initial
    /// naming settings (as UpdateConfig checks them), `dns_listen`, `cmon_address` and
    /// `cmon_suffix_label`; every problem at once.
    pub fn check(&self) -> Result<(), String> {
        let mut problems = match self.initial_settings().validated() {
            Ok(_) => Problems::new(),
            Err(errors) => Problems::from_found(errors),
        };
        problems.when(
            self.dns_listen.parse::<std::net::SocketAddr>().is_err(),
            format_args!(
                "dns_listen must be address:port (got {:?})",
                self.dns_listen
            ),
        );
        let address = self.cmon_address.trim();
        problems.when(
            !address.is_empty() && address.parse::<IpAddr>().is_err(),
            format_args!("cmon_address must be an IP address or empty (got {address:?})"),
        );
        problems.when(
            !is_host_name(&self.cmon_suffix_label) || self.cmon_suffix_label.contains('.'),
            format_args!(
                "cmon_suffix_label must be one DNS label (got {:?})",
                self.cmon_suffix_label
            ),
        );
        problems.when(self.journal_keep == 0, "journal_keep must be at least 1");
        problems.when(
            self.journal_max < self.journal_keep,
            format_args!(
                "journal_max must be at least journal_keep ({}; got {})",
                self.journal_keep, self.journal_max
            ),
        );
        problems.when(
            self.journal_gc_secs == 0,
            "journal_gc_secs must be at least 1",
        );
        problems.into_result()
    }
}

/// A DNS host name: labels of letters, digits and `-` (not first or last), each at most
/// 63, at most 253 in all; a trailing dot is allowed.
pub fn is_host_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn is_ip_or_cidr(s: &str) -> bool {
    match s.split_once('/') {
        None => s.parse::<IpAddr>().is_ok(),
        Some((ip, bits)) => match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
            (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
            _ => false,
        },
    }
}

fn check_peers(field: &str, peers: &[String], hidden: bool, errors: &mut Vec<FieldError>) {
    for (i, p) in peers.iter().enumerate() {
        if !is_host_name(p) {
            errors.push(FieldError::invalid(
                &format!("{field}.peers[{i}]"),
                format!("must be a host name (got {p:?})"),
            ));
        }
    }
    if hidden && peers.is_empty() {
        errors.push(FieldError::invalid(
            &format!("{field}.hidden_primary"),
            "needs at least one peer (peers[0] becomes the SOA MNAME)",
        ));
    }
}

impl Settings {
    /// The settings checked as reference 1.2 says, with zone names and host names
    /// lower-cased and trailing dots dropped; every bad field at once.
    pub fn validated(&self) -> Result<Settings, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut out = self.clone();
        out.my_name = lower_host(&self.my_name);
        if !is_host_name(&self.my_name) {
            errors.push(FieldError::invalid(
                "my_name",
                format!("must be a host name (got {:?})", self.my_name),
            ));
        }
        let hostmaster_ok = self
            .hostmaster
            .split_once('@')
            .is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !local.contains('.')
                    && !domain.is_empty()
                    && !domain.contains('@')
            });
        if !hostmaster_ok {
            errors.push(FieldError::invalid(
                "hostmaster",
                format!(
                    "must look like local@domain (^[^@.]+@[^@]+$; got {:?})",
                    self.hostmaster
                ),
            ));
        }
        let mut zones = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for (name, zone) in &self.forward_zones {
            let field = format!("forward_zones[{name:?}]");
            let lower = lower_host(name);
            if !is_host_name(name) {
                errors.push(FieldError::invalid(&field, "zone name must be a DNS name"));
            } else if lower.ends_with(".arpa") {
                errors.push(FieldError::invalid(
                    &field,
                    "a forward zone may not be under .arpa",
                ));
            } else if !seen.insert(lower.clone()) {
                errors.push(FieldError::invalid(
                    &field,
                    format!("is the zone {lower:?} again (zone names are lower-cased)"),
                ));
            }
            if zone.networks.is_empty() {
                errors.push(FieldError::invalid(
                    &format!("{field}.networks"),
                    "needs at least one network uuid or \"*\"",
                ));
            }
            for (i, n) in zone.networks.iter().enumerate() {
                let ok = n == "*"
                    || (!n.is_empty()
                        && n.chars().all(|c| {
                            (c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) || c == '-'
                        }));
                if !ok {
                    errors.push(FieldError::invalid(
                        &format!("{field}.networks[{i}]"),
                        format!("must be \"*\" or a network uuid (^[*]$|^[a-f0-9-]+$; got {n:?})"),
                    ));
                }
            }
            check_peers(&field, &zone.peers, zone.hidden_primary, &mut errors);
            let mut zone = zone.clone();
            zone.peers = zone.peers.iter().map(|p| lower_host(p)).collect();
            zones.insert(lower, zone);
        }
        out.forward_zones = zones;
        check_peers(
            "reverse_zones",
            &self.reverse_zones.peers,
            self.reverse_zones.hidden_primary,
            &mut errors,
        );
        out.reverse_zones.peers = self
            .reverse_zones
            .peers
            .iter()
            .map(|p| lower_host(p))
            .collect();
        for (i, a) in self.allow_transfer.iter().enumerate() {
            if !is_ip_or_cidr(a) {
                errors.push(FieldError::invalid(
                    &format!("allow_transfer[{i}]"),
                    format!("must be an IP address or CIDR (got {a:?})"),
                ));
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// What the naming rules read.
    pub fn rules(&self) -> names::Rules {
        names::Rules {
            forward_zones: self
                .forward_zones
                .iter()
                .map(|(name, z)| names::ForwardZone {
                    name: name.clone(),
                    networks: z.networks.clone(),
                })
                .collect(),
            use_alias: self.use_alias,
            use_login: self.use_login,
        }
    }

    /// As the admin API shows it.
    pub fn to_proto(&self) -> pb::Config {
        pb::Config {
            my_name: self.my_name.clone(),
            hostmaster: self.hostmaster.clone(),
            forward_zones: self
                .forward_zones
                .iter()
                .map(|(name, z)| {
                    (
                        name.clone(),
                        pb::ForwardZone {
                            networks: z.networks.clone(),
                            peers: z.peers.clone(),
                            hidden_primary: z.hidden_primary,
                        },
                    )
                })
                .collect(),
            reverse_zones: Some(pb::ReverseZones {
                peers: self.reverse_zones.peers.clone(),
                hidden_primary: self.reverse_zones.hidden_primary,
            }),
            allow_transfer: self.allow_transfer.clone(),
            use_alias: self.use_alias,
            use_login: self.use_login,
        }
    }

    /// From the admin API's message (not yet validated).
    pub fn from_proto(c: pb::Config) -> Settings {
        let reverse = c.reverse_zones.unwrap_or_default();
        Settings {
            my_name: c.my_name,
            hostmaster: c.hostmaster,
            forward_zones: c
                .forward_zones
                .into_iter()
                .map(|(name, z)| {
                    (
                        name,
                        ForwardZone {
                            networks: z.networks,
                            peers: z.peers,
                            hidden_primary: z.hidden_primary,
                        },
                    )
                })
                .collect(),
            reverse_zones: ReverseZones {
                peers: reverse.peers,
                hidden_primary: reverse.hidden_primary,
            },
            allow_transfer: c.allow_transfer,
            use_alias: c.use_alias,
            use_login: c.use_login,
        }
    }
}

fn lower_host(s: &str) -> String {
    s.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_and_file_keys() {
        let env = [
            ("CNS_DNS_LISTEN", "0.0.0.0:53"),
            ("CNS_MY_NAME", "ns1.example.com"),
            ("CNS_USE_LOGIN", "true"),
        ];
        let c: Config = triton_common::config::load_env("cns", &env).unwrap();
        assert_eq!(c.dns_listen, "0.0.0.0:53");
        assert_eq!(c.initial.my_name, "ns1.example.com");
        assert!(c.initial.use_login);
        assert!(c.initial.use_alias, "use_alias defaults to true");
        assert_eq!(c.service.listen, DEFAULT_LISTEN);
    }

    #[test]
    fn the_file_names_its_own_forward_zones() {
        let load = |text: &str| triton_common::config_text::load_text::<Config>("cns", text, &[]);
        let c = load(
            "my_name = \"ns1.example.com\"\n\
             [forward_zones.\"example.com\"]\n\
             networks = [\"*\"]\n\
             peers = [\"ns2.example.com\"]\n\
             [forward_zones.\"private.example.com\"]\n\
             networks = [\"2bd7c6a4-3c5a-4b36-9a2e-6a5f14c0a001\"]\n",
        )
        .unwrap();
        let zones: Vec<&str> = c.initial.forward_zones.keys().map(String::as_str).collect();
        assert_eq!(zones, vec!["example.com", "private.example.com"]);
        assert_eq!(
            c.initial.forward_zones["example.com"].peers,
            vec!["ns2.example.com"]
        );
        let seeded = c.initial_settings();
        assert!(!seeded.forward_zones.contains_key(DEFAULT_ZONE));
        assert_eq!(c.check(), Ok(()));

        // No zone named: the default zone, every network.
        let c = load("my_name = \"ns1.example.com\"\n").unwrap();
        assert!(c.initial.forward_zones.is_empty());
        let seeded = c.initial_settings();
        assert_eq!(
            seeded.forward_zones.keys().collect::<Vec<_>>(),
            vec![DEFAULT_ZONE]
        );
        assert_eq!(seeded.forward_zones[DEFAULT_ZONE].networks, vec!["*"]);

        // A misspelt key inside a zone, and a bad value, are refused.
        let e = load("[forward_zones.\"example.com\"]\nnetwork = [\"*\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("forward_zones") && e.contains("network"), "{e}");
        let e = load("[forward_zones.\"example.com\"]\nnetworks = \"*\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("forward_zones"), "{e}");
        // Validation names the zone.
        let c = load("[forward_zones.\"example.com\"]\nnetworks = [\"NOPE\"]\n").unwrap();
        let e = c.check().unwrap_err();
        assert!(
            e.contains("forward_zones[\"example.com\"].networks[0]"),
            "{e}"
        );
    }

    #[test]
    fn validation_names_every_bad_field_and_lower_cases_zones() {
        let mut s = Settings::default();
        s.forward_zones.clear();
        s.forward_zones.insert(
            "Pub.Example.COM.".into(),
            ForwardZone {
                networks: vec!["*".into()],
                peers: vec!["NS2.example.com".into()],
                hidden_primary: false,
            },
        );
        let ok = s.validated().unwrap();
        assert!(ok.forward_zones.contains_key("pub.example.com"));
        assert_eq!(
            ok.forward_zones["pub.example.com"].peers,
            vec!["ns2.example.com"]
        );

        let bad = Settings {
            my_name: "bad name".into(),
            hostmaster: "host.master@example.com".into(),
            forward_zones: [
                (
                    "a.example".to_string(),
                    ForwardZone {
                        networks: vec!["NOT-A-UUID!".into()],
                        peers: vec!["under_score".into()],
                        hidden_primary: false,
                    },
                ),
                ("A.example".to_string(), ForwardZone::default()),
                (
                    "b.example".to_string(),
                    ForwardZone {
                        networks: vec![],
                        peers: vec![],
                        hidden_primary: true,
                    },
                ),
            ]
            .into_iter()
            .collect(),
            reverse_zones: ReverseZones::default(),
            allow_transfer: vec!["10.0.0.0/33".into(), "192.0.2.1".into(), "::1/128".into()],
            use_alias: true,
            use_login: false,
        };
        let errors = bad.validated().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "my_name",
                "hostmaster",
                "forward_zones[\"a.example\"]",
                "forward_zones[\"a.example\"].networks[0]",
                "forward_zones[\"a.example\"].peers[0]",
                "forward_zones[\"b.example\"].networks",
                "forward_zones[\"b.example\"].hidden_primary",
                "allow_transfer[0]",
            ],
            "{errors:#?}"
        );
        assert!(errors[1].message.contains("local@domain"));
    }

    #[test]
    fn check_names_each_bad_key() {
        assert_eq!(Config::default().check(), Ok(()));
        let bad = Config {
            dns_listen: "nowhere".into(),
            cmon_address: "cmon-host".into(),
            cmon_suffix_label: "a.b".into(),
            initial: Settings {
                hostmaster: "nobody".into(),
                ..Settings::default()
            },
            ..Config::default()
        };
        let e = bad.check().unwrap_err();
        for key in [
            "hostmaster",
            "dns_listen",
            "cmon_address",
            "cmon_suffix_label",
        ] {
            assert!(e.contains(key), "{key} not named in {e}");
        }
    }

    #[test]
    fn proto_round_trip() {
        let s = Settings::default();
        assert_eq!(Settings::from_proto(s.to_proto()), s);
    }
}
