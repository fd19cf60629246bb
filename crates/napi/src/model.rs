//! NAPI's records as stored in Moray (one JSON object each), and their wire form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use triton_proto::napi::v1 as proto;

use crate::error::{Error, Result, StoreError};
use crate::ip::{self, Subnet};

/// Nic tag MTU bounds (NAPI `MTU_NICTAG_MIN`, `MTU_MAX`).
pub const NIC_TAG_MTU_MIN: u32 = 1500;
pub const MTU_MAX: u32 = 9000;
/// Network MTU lower bound (NAPI `MTU_NETWORK_MIN`).
pub const NETWORK_MTU_MIN: u32 = 576;
pub const MTU_DEFAULT: u32 = 1500;
/// Fabric networks ride VXLAN over a 1500 underlay: 1500 minus the 50-byte VXLAN header,
/// rounded down as Triton's `defaultOverlayMTU` is.
pub const FABRIC_MTU_DEFAULT: u32 = 1400;
/// Largest VXLAN network identifier (24 bits).
pub const MAX_VNET_ID: u32 = (1 << 24) - 1;
/// The nic tag of every fabric network (Triton's overlay tag).
pub const OVERLAY_NIC_TAG: &str = "sdc_overlay";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicTag {
    pub name: String,
    pub uuid: String,
    pub mtu: u32,
}

impl From<NicTag> for proto::NicTag {
    fn from(t: NicTag) -> Self {
        proto::NicTag {
            name: t.name,
            uuid: t.uuid,
            mtu: t.mtu,
        }
    }
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub uuid: String,
    pub name: String,
    /// Unique index: `net:<name>`, or `fabric:<owner>:<name>` for a fabric network, so
    /// fabric network names are unique per account and others per datacenter.
    pub name_key: String,
    pub vlan_id: u32,
    pub family: String,
    pub subnet: String,
    pub provision_start_ip: String,
    pub provision_end_ip: String,
    pub nic_tag: String,
    pub gateway: Option<String>,
    #[serde(default)]
    pub resolvers: Vec<String>,
    #[serde(default)]
    pub routes: BTreeMap<String, String>,
    #[serde(default)]
    pub owner_uuids: Vec<String>,
    #[serde(default)]
    pub description: String,
    pub mtu: u32,
    #[serde(default)]
    pub fabric: bool,
    #[serde(default)]
    pub internet_nat: bool,
    pub vnet_id: Option<u32>,
    /// Fabric networks: the account whose fabric it is on.
    pub fabric_owner: Option<String>,
}

impl Network {
    pub fn name_key(name: &str, fabric_owner: Option<&str>) -> String {
        match fabric_owner {
            Some(owner) => format!("fabric:{owner}:{name}"),
            None => format!("net:{name}"),
        }
    }

    pub fn parsed_subnet(&self) -> Result<Subnet> {
        Subnet::parse(&self.subnet).map_err(|reason| self.corrupt(reason))
    }

    /// The provision range, inclusive.
    pub fn range(&self) -> Result<(u32, u32)> {
        let start = ip::parse_ip(&self.provision_start_ip).map_err(|r| self.corrupt(r))?;
        let end = ip::parse_ip(&self.provision_end_ip).map_err(|r| self.corrupt(r))?;
        Ok((start, end))
    }

    /// The gateway's address, if the network has one.
    pub fn gateway_ip(&self) -> Result<Option<u32>> {
        match &self.gateway {
            Some(g) => Ok(Some(ip::parse_ip(g).map_err(|r| self.corrupt(r))?)),
            None => Ok(None),
        }
    }

    /// Addresses never handed out: the network and broadcast addresses and the gateway.
    pub fn excluded(&self) -> Result<Vec<u32>> {
        let subnet = self.parsed_subnet()?;
        let mut out = vec![subnet.network, subnet.broadcast()];
        if let Some(gw) = &self.gateway {
            out.push(ip::parse_ip(gw).map_err(|r| self.corrupt(r))?);
        }
        Ok(out)
    }

    pub fn netmask(&self) -> String {
        Subnet::parse(&self.subnet)
            .map(|s| s.netmask().to_string())
            .unwrap_or_default()
    }

    fn corrupt(&self, reason: String) -> Error {
        StoreError::corrupt(format!("network {}", self.uuid), reason).into()
    }
}

impl From<Network> for proto::Network {
    fn from(n: Network) -> Self {
        let netmask = n.netmask();
        proto::Network {
            public: n.owner_uuids.is_empty() && !n.fabric,
            uuid: n.uuid,
            name: n.name,
            vlan_id: n.vlan_id,
            family: n.family,
            subnet: n.subnet,
            netmask,
            provision_start_ip: n.provision_start_ip,
            provision_end_ip: n.provision_end_ip,
            nic_tag: n.nic_tag,
            gateway: n.gateway.unwrap_or_default(),
            resolvers: n.resolvers,
            routes: n.routes.into_iter().collect(),
            owner_uuids: n.owner_uuids,
            description: n.description,
            mtu: n.mtu,
            fabric: n.fabric,
            internet_nat: n.internet_nat,
            vnet_id: n.vnet_id,
        }
    }
}

/// A network pool; key: its uuid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPool {
    pub uuid: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub networks: Vec<String>,
    pub nic_tag: String,
    #[serde(default)]
    pub owner_uuids: Vec<String>,
}

/// A network or a network pool: NICs go on it for its owners (anyone when it has none)
/// and for the operator.
pub trait Provisionable {
    /// The accounts it belongs to; empty: public.
    fn owner_uuids(&self) -> &[String];

    /// Whether `owner` may provision on it; the operator (`admin_uuid`, when set) always
    /// may.
    fn provisionable_by(&self, owner: &str, admin_uuid: &str) -> bool {
        let owners = self.owner_uuids();
        owners.is_empty()
            || owners.iter().any(|o| o == owner)
            || (!admin_uuid.is_empty() && owner == admin_uuid)
    }
}

impl Provisionable for Network {
    fn owner_uuids(&self) -> &[String] {
        &self.owner_uuids
    }
}

impl Provisionable for NetworkPool {
    fn owner_uuids(&self) -> &[String] {
        &self.owner_uuids
    }
}

impl From<NetworkPool> for proto::NetworkPool {
    fn from(p: NetworkPool) -> Self {
        proto::NetworkPool {
            uuid: p.uuid,
            name: p.name,
            description: p.description,
            networks: p.networks,
            nic_tags_present: vec![p.nic_tag.clone()],
            nic_tag: p.nic_tag,
            family: "ipv4".into(),
            owner_uuids: p.owner_uuids,
        }
    }
}

/// One IP in use or reserved on a network; key `<network_uuid>/<ip>`. A free IP has no
/// record, so "at most one record per key" is "never one address for two NICs".
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpRecord {
    pub network_uuid: String,
    pub ip: String,
    /// The address as a number, for range queries and ordering.
    pub ip_num: u32,
    #[serde(default)]
    pub reserved: bool,
    pub belongs_to_uuid: Option<String>,
    pub belongs_to_type: Option<String>,
    pub owner_uuid: Option<String>,
    pub mac: Option<String>,
}

impl IpRecord {
    pub fn key(network_uuid: &str, ip_num: u32) -> String {
        format!("{network_uuid}/{}", ip::format_ip(ip_num))
    }

    pub fn free(network_uuid: &str, ip_num: u32) -> IpRecord {
        IpRecord {
            network_uuid: network_uuid.to_string(),
            ip: ip::format_ip(ip_num),
            ip_num,
            reserved: false,
            belongs_to_uuid: None,
            belongs_to_type: None,
            owner_uuid: None,
            mac: None,
        }
    }
}

impl From<IpRecord> for proto::Ip {
    fn from(r: IpRecord) -> Self {
        proto::Ip {
            free: !r.reserved && r.belongs_to_uuid.is_none(),
            ip: r.ip,
            network_uuid: r.network_uuid,
            reserved: r.reserved,
            belongs_to_type: r.belongs_to_type.unwrap_or_default(),
            belongs_to_uuid: r.belongs_to_uuid.unwrap_or_default(),
            owner_uuid: r.owner_uuid.unwrap_or_default(),
            mac: r.mac.unwrap_or_default(),
        }
    }
}

/// A NIC; key: its MAC, `aa:bb:cc:dd:ee:ff`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub mac: String,
    pub owner_uuid: String,
    pub belongs_to_uuid: String,
    pub belongs_to_type: String,
    pub primary: bool,
    pub state: String,
    pub cn_uuid: Option<String>,
    pub model: Option<String>,
    pub network_uuid: Option<String>,
    pub ip: Option<String>,
    pub nic_tag: Option<String>,
    #[serde(default)]
    pub vlan_id: u32,
    #[serde(default)]
    pub nic_tags_provided: Vec<String>,
    #[serde(default)]
    pub allow_dhcp_spoofing: bool,
    #[serde(default)]
    pub allow_ip_spoofing: bool,
    #[serde(default)]
    pub allow_mac_spoofing: bool,
    #[serde(default)]
    pub allow_restricted_traffic: bool,
    #[serde(default)]
    pub allow_unfiltered_promisc: bool,
    #[serde(default)]
    pub underlay: bool,
    pub created_timestamp: String,
    pub modified_timestamp: String,
}

impl Nic {
    /// The wire form, with the network's settings (netmask, gateway, ...) filled in.
    pub fn into_proto(self, network: Option<&Network>) -> proto::Nic {
        let mut out = proto::Nic {
            mac: self.mac,
            ip: self.ip.unwrap_or_default(),
            vlan_id: self.vlan_id,
            nic_tag: self.nic_tag.unwrap_or_default(),
            network_uuid: self.network_uuid.unwrap_or_default(),
            primary: self.primary,
            owner_uuid: self.owner_uuid,
            belongs_to_uuid: self.belongs_to_uuid,
            belongs_to_type: self.belongs_to_type,
            cn_uuid: self.cn_uuid.unwrap_or_default(),
            state: self.state,
            model: self.model.unwrap_or_default(),
            nic_tags_provided: self.nic_tags_provided,
            allow_dhcp_spoofing: self.allow_dhcp_spoofing,
            allow_ip_spoofing: self.allow_ip_spoofing,
            allow_mac_spoofing: self.allow_mac_spoofing,
            allow_restricted_traffic: self.allow_restricted_traffic,
            allow_unfiltered_promisc: self.allow_unfiltered_promisc,
            underlay: self.underlay,
            created_timestamp: self.created_timestamp,
            modified_timestamp: self.modified_timestamp,
            ..Default::default()
        };
        if let Some(n) = network {
            out.netmask = n.netmask();
            out.gateway = n.gateway.clone().unwrap_or_default();
            out.resolvers = n.resolvers.clone();
            out.routes = n.routes.clone().into_iter().collect();
            out.mtu = n.mtu;
            out.fabric = n.fabric;
            out.internet_nat = n.internet_nat;
            out.vnet_id = n.vnet_id;
            out.vlan_id = n.vlan_id;
            out.nic_tag = n.nic_tag.clone();
        }
        out
    }
}

/// An account's fabric; key: the owner uuid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fabric {
    pub owner_uuid: String,
    pub vnet_id: u32,
}

impl From<Fabric> for proto::Fabric {
    fn from(f: Fabric) -> Self {
        proto::Fabric {
            owner_uuid: f.owner_uuid,
            vnet_id: f.vnet_id,
        }
    }
}

/// A VLAN on an account's fabric; key `<owner_uuid>:<vlan_id>` (as NAPI's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FabricVlan {
    pub owner_uuid: String,
    pub vlan_id: u32,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub vnet_id: u32,
}

impl FabricVlan {
    pub fn key(owner_uuid: &str, vlan_id: u32) -> String {
        format!("{owner_uuid}:{vlan_id}")
    }
}

impl From<FabricVlan> for proto::FabricVlan {
    fn from(v: FabricVlan) -> Self {
        proto::FabricVlan {
            owner_uuid: v.owner_uuid,
            vlan_id: v.vlan_id,
            name: v.name,
            description: v.description,
            vnet_id: v.vnet_id,
        }
    }
}
