//! The Moray buckets of fabrics (Triton's `sdc-portolan-moray`): one row per overlay
//! address, one per compute node's underlay address, and each node's invalidation log.
//!
//! Addresses are stored as IPv6 text (`::ffff:10.1.2.3` for IPv4), MACs as the 48-bit
//! number, as Triton stores them, so a lookup by either is one indexed equality.

use std::net::{IpAddr, Ipv6Addr};

use moray_client::typed::Bucket;
use moray_client::{BucketConfig, IndexDef, MorayClient};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Overlay address -> MAC and compute node: key [`vnet_mac_ip_key`].
pub const VNET_MAC_IP: &str = "portolan_vnet_mac_ip";
/// Compute node -> underlay address: key the node's UUID.
pub const UNDERLAY_MAPPINGS: &str = "portolan_underlay_mappings";
/// Each compute node's invalidation log: key a random UUID (the SVP log id).
pub const CN_NET_EVENTS: &str = "portolan_cn_net_events";

/// The UDP port VXLAN traffic goes to on a compute node's underlay address (IANA).
pub const VXLAN_PORT: u16 = 4789;
/// The record version written in every row (Triton's is 1).
pub const RECORD_VERSION: u32 = 1;

/// The buckets with their indexes, for the writer to create (schema version 0, as Triton).
pub fn bucket_configs() -> Vec<(&'static str, BucketConfig)> {
    let v = || BucketConfig::versioned(0);
    vec![
        (
            VNET_MAC_IP,
            v().with_index("mac", IndexDef::new("number"))
                .with_index("ip", IndexDef::new("string"))
                .with_index("cn_uuid", IndexDef::new("string"))
                .with_index("vnet_id", IndexDef::new("number"))
                .with_index("version", IndexDef::new("number"))
                .with_index("deleted", IndexDef::new("boolean")),
        ),
        (
            UNDERLAY_MAPPINGS,
            v().with_index("cn_uuid", IndexDef::new("string"))
                .with_index("ip", IndexDef::new("string"))
                .with_index("port", IndexDef::new("number")),
        ),
        (
            CN_NET_EVENTS,
            v().with_index("cn_uuid", IndexDef::new("string"))
                .with_index("vnet_id", IndexDef::new("number")),
        ),
    ]
}

/// The three buckets, typed, on one Moray client: for the writer (NAPI), the reader
/// (Portolan) and tests.
#[derive(Debug, Clone)]
pub struct Buckets {
    /// [`VNET_MAC_IP`].
    pub vnet_mac_ip: Bucket<VnetMacIp>,
    /// [`UNDERLAY_MAPPINGS`].
    pub underlay_mappings: Bucket<UnderlayMapping>,
    /// [`CN_NET_EVENTS`].
    pub cn_net_events: Bucket<CnNetEvent>,
}

impl Buckets {
    /// The buckets of [`bucket_configs`] on `moray`.
    pub fn new(moray: MorayClient) -> Buckets {
        let config = |name: &str| {
            bucket_configs()
                .into_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, c)| c)
                .unwrap_or_else(|| BucketConfig::versioned(0))
        };
        Buckets {
            vnet_mac_ip: Bucket::new(moray.clone(), VNET_MAC_IP, config(VNET_MAC_IP)),
            underlay_mappings: Bucket::new(
                moray.clone(),
                UNDERLAY_MAPPINGS,
                config(UNDERLAY_MAPPINGS),
            ),
            cn_net_events: Bucket::new(moray, CN_NET_EVENTS, config(CN_NET_EVENTS)),
        }
    }

    /// Creates the buckets (or upgrades them to these indexes) where needed.
    pub async fn ensure(&self) -> moray_client::Result<()> {
        self.vnet_mac_ip.ensure().await?;
        self.underlay_mappings.ensure().await?;
        self.cn_net_events.ensure().await
    }
}

/// An address as the buckets write it: IPv6 text, IPv4 in its mapped form.
pub fn ip_text(ip: IpAddr) -> String {
    to_v6(ip).to_string()
}

/// An address as 16 bytes' worth of IPv6 (IPv4 mapped), as SVP carries it.
pub fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The key of a [`VNET_MAC_IP`] row: `"<ip as IPv6 text>,<vnet_id>"`.
pub fn vnet_mac_ip_key(ip: IpAddr, vnet_id: u32) -> String {
    format!("{},{vnet_id}", ip_text(ip))
}

/// A MAC as the 48-bit number the buckets index.
pub fn mac_number(mac: [u8; 6]) -> u64 {
    mac.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b))
}

/// The MAC of a 48-bit number (the low six bytes).
pub fn mac_bytes(n: u64) -> [u8; 6] {
    let b = n.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// A row of [`VNET_MAC_IP`]: overlay IP and MAC on a vnet, and the node that hosts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VnetMacIp {
    /// The MAC as a 48-bit number ([`mac_number`]).
    pub mac: u64,
    /// The overlay address as IPv6 text ([`ip_text`]).
    pub ip: String,
    /// The compute node hosting the NIC.
    pub cn_uuid: Uuid,
    /// The fabric's VXLAN network id.
    pub vnet_id: u32,
    /// The NIC's VLAN on the fabric (not in Triton's row; the VL3 log entry carries it).
    #[serde(default)]
    pub vlan_id: u16,
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// The NIC went or moved: lookups answer NOTFOUND.
    #[serde(default)]
    pub deleted: bool,
}

/// A row of [`UNDERLAY_MAPPINGS`]: where a compute node takes VXLAN traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnderlayMapping {
    /// The compute node.
    pub cn_uuid: Uuid,
    /// Its underlay address as IPv6 text ([`ip_text`]).
    pub ip: String,
    /// Its VXLAN port ([`VXLAN_PORT`]).
    pub port: u16,
}

/// A row of [`CN_NET_EVENTS`]: something a compute node must forget or re-learn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CnNetEvent {
    /// The node whose log this is.
    pub cn_uuid: Uuid,
    /// The vnet the entry is about.
    pub vnet_id: u32,
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// What changed.
    pub record: LogRecord,
}

/// The entry of a node's log, as SVP's LOG_ACK carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum LogRecord {
    /// Forget where this MAC lives (its NIC went or moved).
    #[serde(rename = "SVP_LOG_VL2")]
    Vl2 {
        /// The MAC as a 48-bit number.
        mac: u64,
        /// The vnet.
        vnet_id: u32,
    },
    /// This IP's MAC changed (or is new): look it up again.
    #[serde(rename = "SVP_LOG_VL3")]
    Vl3 {
        /// The overlay address as IPv6 text.
        ip: String,
        /// The MAC as a 48-bit number.
        mac: u64,
        /// The VLAN on the fabric.
        vlan: u16,
        /// The vnet.
        vnet_id: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_numbers_are_written_as_triton_writes_them() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(vnet_mac_ip_key(ip, 4242), "::ffff:10.1.2.3,4242");
        let mac = [0x90, 0xb8, 0xd0, 0x12, 0x34, 0x56];
        assert_eq!(mac_number(mac), 0x90b8_d012_3456);
        assert_eq!(mac_bytes(mac_number(mac)), mac);
        let v3 = serde_json::to_value(LogRecord::Vl3 {
            ip: ip_text(ip),
            mac: 1,
            vlan: 5,
            vnet_id: 7,
        })
        .unwrap();
        assert_eq!(v3["type"], "SVP_LOG_VL3");
        assert_eq!(v3["ip"], "::ffff:10.1.2.3");
    }
}
