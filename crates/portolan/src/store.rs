//! Moray access: the lookups of Triton's `lib/backend/moray.js`, on the typed buckets of
//! `portolan_client::buckets`. Every call reads Moray; the answers' cache is `cache.rs`.

use std::net::{IpAddr, Ipv6Addr};

use futures::{StreamExt, TryStreamExt};
use moray_client::filter::Filter;
use moray_client::typed::Bucket;
use moray_client::{FindOptions, MorayClient, MorayError, Sort, SortOrder};
use portolan_client::buckets::{
    Buckets, CnNetEvent, LogRecord, UnderlayMapping, ip_text, mac_bytes, mac_number,
    vnet_mac_ip_key,
};
use portolan_client::svp::{LOG_VL2_LEN, LogEntry, Underlay};
use uuid::Uuid;

/// The most log events one LOG request reads (Moray's own default page).
pub const LOG_FETCH_MAX: u64 = 1000;
/// LOG_RM deletes at most this many events at once.
const REMOVE_CONCURRENCY: usize = 16;

/// Why a lookup could not be answered (the reply is FATAL).
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// A Moray call failed; `what` names it.
    #[error("Moray {what} failed")]
    Moray {
        what: String,
        #[source]
        source: MorayError,
    },
    /// A stored row that does not make sense.
    #[error("{bucket} {key}: {reason}")]
    Corrupt {
        bucket: &'static str,
        key: String,
        reason: String,
    },
    /// LOG_REQ from an address no compute node has as its underlay address.
    #[error("no compute node has underlay address {0}")]
    UnknownRequester(IpAddr),
    /// LOG_REQ from an address more than one compute node claims.
    #[error("more than one compute node has underlay address {0}")]
    AmbiguousRequester(IpAddr),
}

fn moray(what: &'static str) -> impl FnOnce(MorayError) -> LookupError {
    move |source| LookupError::Moray {
        what: what.to_string(),
        source,
    }
}

/// The value of `key` in `bucket`, if it has a row there.
async fn get_value<T: serde::Serialize + serde::de::DeserializeOwned>(
    bucket: &Bucket<T>,
    key: &str,
) -> Result<Option<T>, LookupError> {
    let row = bucket.get(key).await.map_err(|source| LookupError::Moray {
        what: format!("get {}", bucket.name()),
        source,
    })?;
    Ok(row.map(|v| v.value))
}

/// The fabric buckets, read.
#[derive(Debug, Clone)]
pub struct Store {
    buckets: Buckets,
}

impl Store {
    pub fn new(moray: MorayClient) -> Store {
        Store {
            buckets: Buckets::new(moray),
        }
    }

    /// Creates the buckets if NAPI has not yet, so lookups before NAPI's first fabric
    /// NIC answer NOTFOUND rather than FATAL.
    pub async fn ensure(&self) -> Result<(), MorayError> {
        self.buckets.ensure().await
    }

    /// VL2: the node hosting `mac` on `vnet_id` (a row not marked deleted), and that
    /// node's underlay address; `None` when either is missing.
    pub async fn vl2(&self, mac: [u8; 6], vnet_id: u32) -> Result<Option<Underlay>, LookupError> {
        let filter = Filter::and([
            Filter::eq("mac", mac_number(mac)),
            Filter::eq("vnet_id", vnet_id),
        ]);
        let rows = self
            .buckets
            .vnet_mac_ip
            .find_values(&filter, &FindOptions::limit(16))
            .await
            .map_err(moray("find portolan_vnet_mac_ip"))?;
        let Some(row) = rows.into_iter().find(|r| !r.deleted) else {
            return Ok(None);
        };
        self.underlay(row.cn_uuid).await
    }

    /// VL3: the MAC that has `ip` on `vnet_id`, and its node's underlay address; `None`
    /// when there is no such row, it is marked deleted, or its node has no underlay row.
    pub async fn vl3(
        &self,
        ip: Ipv6Addr,
        vnet_id: u32,
    ) -> Result<Option<([u8; 6], Underlay)>, LookupError> {
        let key = vnet_mac_ip_key(IpAddr::V6(ip), vnet_id);
        let row = get_value(&self.buckets.vnet_mac_ip, &key).await?;
        let Some(row) = row.filter(|r| !r.deleted) else {
            return Ok(None);
        };
        Ok(self
            .underlay(row.cn_uuid)
            .await?
            .map(|u| (mac_bytes(row.mac), u)))
    }

    async fn underlay(&self, cn_uuid: Uuid) -> Result<Option<Underlay>, LookupError> {
        let key = cn_uuid.to_string();
        let row = get_value(&self.buckets.underlay_mappings, &key).await?;
        row.map(|v| underlay_of(&key, &v)).transpose()
    }

    /// LOG: the node whose underlay address is `ip`, then its oldest events, as many as
    /// fit in `count` bytes of entries (and in `max_bytes`, the reply's room).
    pub async fn log(
        &self,
        ip: Ipv6Addr,
        count: u32,
        max_bytes: usize,
    ) -> Result<Vec<LogEntry>, LookupError> {
        let requester = IpAddr::V6(ip).to_canonical();
        let nodes = self
            .buckets
            .underlay_mappings
            .find_values(
                &Filter::eq("ip", ip_text(requester)),
                &FindOptions::limit(2),
            )
            .await
            .map_err(moray("find portolan_underlay_mappings"))?;
        let cn_uuid = match nodes.as_slice() {
            [node] => node.cn_uuid,
            [] => return Err(LookupError::UnknownRequester(requester)),
            _ => return Err(LookupError::AmbiguousRequester(requester)),
        };
        let room = (count as usize).min(max_bytes);
        let wanted = (room / LOG_VL2_LEN) as u64;
        if wanted == 0 {
            return Ok(Vec::new());
        }
        let options = FindOptions {
            limit: Some(wanted.min(LOG_FETCH_MAX)),
            sort: vec![
                Sort {
                    attribute: "_mtime".into(),
                    order: SortOrder::Asc,
                },
                Sort {
                    attribute: "_id".into(),
                    order: SortOrder::Asc,
                },
            ],
            no_count: true,
            ..Default::default()
        };
        let events = &self.buckets.cn_net_events;
        // The raw objects, for their keys (the log ids).
        let objects = events
            .client()
            .find_objects(
                events.name(),
                &Filter::eq("cn_uuid", cn_uuid).to_string(),
                &options,
            )
            .await
            .map_err(moray("find portolan_cn_net_events"))?;
        let mut entries = Vec::with_capacity(objects.len());
        let mut used = 0;
        for object in objects {
            let event =
                events
                    .decode(&object.key, object.value)
                    .map_err(|e| LookupError::Corrupt {
                        bucket: portolan_client::buckets::CN_NET_EVENTS,
                        key: object.key.clone(),
                        reason: e.to_string(),
                    })?;
            let entry = entry_of(&object.key, &event)?;
            if used + entry.wire_len() > room {
                break;
            }
            used += entry.wire_len();
            entries.push(entry);
        }
        Ok(entries)
    }

    /// LOG_RM: deletes these events; ones already gone are fine.
    pub async fn log_rm(&self, ids: &[Uuid]) -> Result<(), LookupError> {
        let keys: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        futures::stream::iter(keys)
            .map(|key| {
                let events = self.buckets.cn_net_events.clone();
                async move { events.remove(&key).await }
            })
            .buffer_unordered(REMOVE_CONCURRENCY)
            .try_collect::<Vec<bool>>()
            .await
            .map_err(moray("delete portolan_cn_net_events"))?;
        Ok(())
    }
}

fn underlay_of(key: &str, row: &UnderlayMapping) -> Result<Underlay, LookupError> {
    let ip = parse_ip(&row.ip).ok_or_else(|| LookupError::Corrupt {
        bucket: portolan_client::buckets::UNDERLAY_MAPPINGS,
        key: key.to_string(),
        reason: format!("ip {:?} is not an IP address", row.ip),
    })?;
    Ok(Underlay { ip, port: row.port })
}

fn entry_of(key: &str, event: &CnNetEvent) -> Result<LogEntry, LookupError> {
    let corrupt = |reason: String| LookupError::Corrupt {
        bucket: portolan_client::buckets::CN_NET_EVENTS,
        key: key.to_string(),
        reason,
    };
    let id = Uuid::parse_str(key).map_err(|_| corrupt("the key is not a UUID".into()))?;
    Ok(match &event.record {
        LogRecord::Vl2 { mac, vnet_id } => LogEntry::Vl2 {
            id,
            mac: mac_bytes(*mac),
            vnet_id: *vnet_id,
        },
        LogRecord::Vl3 {
            ip, vlan, vnet_id, ..
        } => LogEntry::Vl3 {
            id,
            ip: parse_ip(ip)
                .ok_or_else(|| corrupt(format!("record.ip {ip:?} is not an IP address")))?,
            vlan: *vlan,
            vnet_id: *vnet_id,
        },
    })
}

/// A stored address (IPv6 text, IPv4 mapped; plain IPv4 text is taken too), IPv4 when
/// it is a mapped one.
fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}
