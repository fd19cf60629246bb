//! What Portolan reads about a NIC (Triton's `sdc-portolan-moray` rows; the contract
//! is `portolan_client::buckets`): a fabric NIC's overlay row and the log entries of the
//! other compute nodes on its vnet, and a compute node's underlay address. The ops are
//! added to the NIC's own batch, so a NIC change Moray acknowledged and Portolan's rows
//! never disagree.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use moray_client::filter::Filter;
use moray_client::{BatchOp, EtagCondition, FindOptions};
use portolan_client::buckets::{
    self, CN_NET_EVENTS, CnNetEvent, LogRecord, RECORD_VERSION, UNDERLAY_MAPPINGS, UnderlayMapping,
    VNET_MAC_IP, VXLAN_PORT, VnetMacIp,
};
use uuid::Uuid;

use crate::error::{Result, StoreError};
use crate::ip;
use crate::mac;
use crate::model::{Network, Nic, OVERLAY_NIC_TAG};
use crate::store::{self, Stored};

use super::Napi;

/// The nic tag of compute nodes' underlay NICs (Triton's `UNDERLAY_TAG`).
pub const UNDERLAY_NIC_TAG: &str = "sdc_underlay";

/// Where a NIC is, as Portolan answers for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// A NIC on a fabric network, placed on a compute node, with an address.
    Overlay(Overlay),
    /// A compute node's NIC on its underlay network (`sdc_underlay`, belonging to the
    /// server).
    Underlay { cn_uuid: Uuid, ip: IpAddr },
}

/// A fabric NIC's overlay address and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlay {
    pub vnet_id: u32,
    pub vlan_id: u16,
    pub ip: IpAddr,
    pub mac: u64,
    pub cn_uuid: Uuid,
}

impl Overlay {
    fn key(&self) -> String {
        buckets::vnet_mac_ip_key(self.ip, self.vnet_id)
    }
}

impl Mapping {
    /// Whether `nic` can have a mapping at all, without its network: an overlay NIC is
    /// tagged `sdc_overlay` (its fabric network's tag) and placed; an underlay NIC is
    /// tagged `sdc_underlay` and a server's. Both have an address.
    pub fn possible(nic: &Nic) -> bool {
        let tag = nic.nic_tag.as_deref();
        nic.ip.is_some()
            && ((tag == Some(OVERLAY_NIC_TAG) && nic.cn_uuid.is_some())
                || (tag == Some(UNDERLAY_NIC_TAG) && nic.belongs_to_type == "server"))
    }

    /// The mapping of `nic` on `network` (the NIC's network), if it has one.
    pub fn of(nic: &Nic, network: Option<&Network>) -> Result<Option<Mapping>> {
        let (Some(ip_text), Some(network)) = (&nic.ip, network) else {
            return Ok(None);
        };
        let corrupt = |reason: String| StoreError::corrupt(format!("nic {}", nic.mac), reason);
        let ip = IpAddr::V4(Ipv4Addr::from(ip::parse_ip(ip_text).map_err(corrupt)?));
        if network.fabric
            && let (Some(vnet_id), Some(cn)) = (network.vnet_id, &nic.cn_uuid)
        {
            return Ok(Some(Mapping::Overlay(Overlay {
                vnet_id,
                vlan_id: u16::try_from(network.vlan_id)
                    .map_err(|_| corrupt(format!("vlan_id {} too large", network.vlan_id)))?,
                ip,
                mac: mac::parse(&nic.mac).map_err(corrupt)?,
                cn_uuid: Uuid::parse_str(cn).map_err(|e| corrupt(format!("cn_uuid: {e}")))?,
            })));
        }
        if network.nic_tag == UNDERLAY_NIC_TAG && nic.belongs_to_type == "server" {
            let cn_uuid = Uuid::parse_str(&nic.belongs_to_uuid)
                .map_err(|e| corrupt(format!("belongs_to_uuid: {e}")))?;
            return Ok(Some(Mapping::Underlay { cn_uuid, ip }));
        }
        Ok(None)
    }
}

impl Napi {
    /// The NIC's mapping, reading its network only when it may have one
    /// ([`Mapping::possible`]).
    pub(super) async fn mapping(&self, nic: &Nic) -> Result<Option<Mapping>> {
        if !Mapping::possible(nic) {
            return Ok(None);
        }
        let network = match &nic.network_uuid {
            Some(u) => self
                .store
                .get::<Network>(crate::store::NETWORKS, u)
                .await?
                .map(|s| s.value),
            None => None,
        };
        Mapping::of(nic, network.as_ref())
    }

    /// The ops that take Portolan's rows from `before` to `after` (a NIC's mappings
    /// before and after its change), each row written on the etag read here, so a
    /// batch that raced another writer of the same row fails and is retried:
    ///
    /// - overlay, new or moved: the row `deleted: false`; the old row, when its key
    ///   changed, `deleted: true`;
    /// - overlay gone: the row `deleted: true`;
    /// - log entries for every other compute node with live rows on the vnet: VL3 for a
    ///   new address (or a new MAC on it), VL2 when the MAC went or moved;
    /// - underlay: the row put, or deleted when the NIC goes (if it is still its row).
    pub(super) async fn portolan_ops(
        &self,
        before: Option<&Mapping>,
        after: Option<&Mapping>,
    ) -> Result<Vec<BatchOp>> {
        let mut ops = Vec::new();
        if before == after {
            return Ok(ops);
        }
        let overlay = |m: Option<&Mapping>| match m {
            Some(Mapping::Overlay(o)) => Some(*o),
            _ => None,
        };
        let underlay = |m: Option<&Mapping>| match m {
            Some(Mapping::Underlay { cn_uuid, ip }) => Some((*cn_uuid, *ip)),
            _ => None,
        };

        // Overlay rows.
        let (old, new) = (overlay(before), overlay(after));
        if let Some(n) = new {
            let key = n.key();
            let row = VnetMacIp {
                mac: n.mac,
                ip: buckets::ip_text(n.ip),
                cn_uuid: n.cn_uuid,
                vnet_id: n.vnet_id,
                vlan_id: n.vlan_id,
                version: RECORD_VERSION,
                deleted: false,
            };
            let etag = self.row_etag::<VnetMacIp>(VNET_MAC_IP, &key).await?;
            ops.push(store::put_op(VNET_MAC_IP, &key, &row, etag.condition())?);
        }
        if let Some(o) = old
            && new.is_none_or(|n| n.key() != o.key())
            && let Some(s) = self.store.get::<VnetMacIp>(VNET_MAC_IP, &o.key()).await?
            && s.value.mac == o.mac
            && !s.value.deleted
        {
            let row = VnetMacIp {
                deleted: true,
                ..s.value
            };
            ops.push(store::put_op(
                VNET_MAC_IP,
                &o.key(),
                &row,
                EtagCondition::Is(s.etag),
            )?);
        }
        // Log entries for the other nodes on the vnet: VL2 when the MAC went or moved
        // (not for the node it is on now), VL3 for a new address or a new MAC on it.
        let where_ = |o: &Overlay| (o.vnet_id, o.ip, o.mac, o.cn_uuid);
        let what = |o: &Overlay| (o.vnet_id, o.ip, o.mac);
        if let Some(o) = old.filter(|o| new.is_none_or(|n| where_(&n) != where_(o))) {
            let here = new.map_or(o.cn_uuid, |n| n.cn_uuid);
            for cn in self.vnet_cns(o.vnet_id, o.mac, here).await? {
                let record = LogRecord::Vl2 {
                    mac: o.mac,
                    vnet_id: o.vnet_id,
                };
                ops.push(event_op(cn, o.vnet_id, record)?);
            }
        }
        if let Some(n) = new.filter(|n| old.is_none_or(|o| what(&o) != what(n))) {
            for cn in self.vnet_cns(n.vnet_id, n.mac, n.cn_uuid).await? {
                let record = LogRecord::Vl3 {
                    ip: buckets::ip_text(n.ip),
                    mac: n.mac,
                    vlan: n.vlan_id,
                    vnet_id: n.vnet_id,
                };
                ops.push(event_op(cn, n.vnet_id, record)?);
            }
        }

        // Underlay rows: one per compute node.
        let (old, new) = (underlay(before), underlay(after));
        if let Some((cn_uuid, ip)) = new {
            let key = cn_uuid.to_string();
            let row = UnderlayMapping {
                cn_uuid,
                ip: buckets::ip_text(ip),
                port: VXLAN_PORT,
            };
            let etag = self
                .row_etag::<UnderlayMapping>(UNDERLAY_MAPPINGS, &key)
                .await?;
            ops.push(store::put_op(
                UNDERLAY_MAPPINGS,
                &key,
                &row,
                etag.condition(),
            )?);
        }
        if let Some((cn_uuid, ip)) = old
            && new.is_none_or(|(c, _)| c != cn_uuid)
        {
            let key = cn_uuid.to_string();
            if let Some(s) = self
                .store
                .get::<UnderlayMapping>(UNDERLAY_MAPPINGS, &key)
                .await?
                && s.value.ip == buckets::ip_text(ip)
            {
                ops.push(store::delete_op(
                    UNDERLAY_MAPPINGS,
                    &key,
                    EtagCondition::Is(s.etag),
                ));
            }
        }
        Ok(ops)
    }

    async fn row_etag<T: serde::de::DeserializeOwned>(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<RowEtag> {
        Ok(RowEtag(
            self.store
                .get::<T>(bucket, key)
                .await?
                .map(|s: Stored<T>| s.etag),
        ))
    }

    /// The compute nodes with live rows on `vnet_id` other than `mac`'s, but `except`.
    async fn vnet_cns(&self, vnet_id: u32, mac: u64, except: Uuid) -> Result<BTreeSet<Uuid>> {
        let filter = Filter::and([Filter::eq("vnet_id", vnet_id), Filter::eq("deleted", false)]);
        let rows = self
            .store
            .find::<VnetMacIp>(
                VNET_MAC_IP,
                &filter.to_string(),
                &FindOptions {
                    no_limit: true,
                    no_count: true,
                    ..Default::default()
                },
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|s| s.value)
            .filter(|r| r.mac != mac && r.cn_uuid != except)
            .map(|r| r.cn_uuid)
            .collect())
    }
}

/// The etag a row was read at, or none.
struct RowEtag(Option<String>);

impl RowEtag {
    fn condition(self) -> EtagCondition {
        match self.0 {
            Some(e) => EtagCondition::Is(e),
            None => EtagCondition::MustNotExist,
        }
    }
}

/// One entry of `cn`'s log (key: a new log id).
fn event_op(cn_uuid: Uuid, vnet_id: u32, record: LogRecord) -> Result<BatchOp> {
    let event = CnNetEvent {
        cn_uuid,
        vnet_id,
        version: RECORD_VERSION,
        record,
    };
    store::put_op(
        CN_NET_EVENTS,
        &Uuid::new_v4().to_string(),
        &event,
        EtagCondition::MustNotExist,
    )
}
