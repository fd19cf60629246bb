//! IPs: the records of a network's addresses, and the scan for free ones.

use moray_client::EtagCondition;
use moray_client::typed::RetryPolicy;
use triton_proto::napi::v1 as proto;

use crate::allocation;
use crate::error::{Error, Result};
use crate::model::{IpRecord, Network};
use crate::store::{self, IPS, NETWORKS, Stored};
use crate::validate;
use moray_client::filter::Filter;

use super::{IP_PAGE, Napi, gave_up, not_found, one, paged};

impl Napi {
    async fn network_for_field(&self, field: &str, uuid: &str) -> Result<Stored<Network>> {
        let u = validate::uuid(field, uuid).map_err(one)?;
        self.store
            .get::<Network>(NETWORKS, &u)
            .await?
            .ok_or_else(|| not_found("network", u))
    }

    pub async fn list_ips(&self, req: proto::ListIpsRequest) -> Result<Vec<IpRecord>> {
        let network = self
            .network_for_field("network_uuid", &req.network_uuid)
            .await?
            .value;
        let limit = validate::limit("limit", req.limit).map_err(one)?;
        let found = self
            .store
            .find::<IpRecord>(
                IPS,
                &Filter::eq("network_uuid", &network.uuid).to_string(),
                &paged(limit, req.offset, "ip_num"),
            )
            .await?;
        Ok(found.into_iter().map(|s| s.value).collect())
    }

    pub async fn get_ip(&self, network_uuid: &str, ip: &str) -> Result<IpRecord> {
        let network = self
            .network_for_field("network_uuid", network_uuid)
            .await?
            .value;
        let subnet = network.parsed_subnet()?;
        let n = validate::ip_in("ip", ip, &subnet).map_err(one)?;
        Ok(self
            .store
            .get::<IpRecord>(IPS, &IpRecord::key(&network.uuid, n))
            .await?
            .map(|s| s.value)
            .unwrap_or_else(|| IpRecord::free(&network.uuid, n)))
    }

    pub async fn update_ip(&self, req: proto::UpdateIpRequest) -> Result<IpRecord> {
        let network = self
            .network_for_field("network_uuid", &req.network_uuid)
            .await?
            .value;
        let subnet = network.parsed_subnet()?;
        let n = validate::ip_in("ip", &req.ip, &subnet).map_err(one)?;
        let key = IpRecord::key(&network.uuid, n);
        let Some(reserved) = req.reserved else {
            return self.get_ip(&network.uuid, &req.ip).await;
        };
        let mut tries = RetryPolicy::DEFAULT.start();
        while tries.next().await {
            let current = self.store.get::<IpRecord>(IPS, &key).await?;
            let (mut record, cond) = match current {
                Some(s) => (s.value, EtagCondition::Is(s.etag)),
                None => (
                    IpRecord::free(&network.uuid, n),
                    EtagCondition::MustNotExist,
                ),
            };
            record.reserved = reserved;
            let result = if !reserved && record.belongs_to_uuid.is_none() {
                if cond == EtagCondition::MustNotExist {
                    return Ok(record);
                }
                self.store.delete(IPS, &key, cond).await
            } else {
                self.store.put(IPS, &key, &record, cond).await?.map(|_| ())
            };
            match result {
                Ok(()) => {
                    self.ips_changed(&network.uuid).await;
                    return Ok(record);
                }
                Err(e) if store::conflict(&e).is_some() || e.name() == "ObjectNotFoundError" => {
                    continue;
                }
                Err(e) => return Err(Error::moray("update IP")(e)),
            }
        }
        Err(gave_up(format!("update IP {key}")))
    }

    /// Up to `want` free addresses of the network's provision range, lowest first, read
    /// from the IP records page by page.
    pub(super) async fn free_candidates(&self, network: &Network, want: usize) -> Result<Vec<u32>> {
        let (start, end) = network.range()?;
        let excluded = network.excluded()?;
        let mut out = Vec::new();
        let mut from = start;
        loop {
            let filter = Filter::and([
                Filter::eq("network_uuid", &network.uuid),
                Filter::ge("ip_num", from),
                Filter::le("ip_num", end),
            ])
            .to_string();
            let mut options = paged(IP_PAGE as u32, 0, "ip_num");
            options.limit = Some(IP_PAGE);
            let page = self.store.find::<IpRecord>(IPS, &filter, &options).await?;
            let used: Vec<u32> = page.iter().map(|r| r.value.ip_num).collect();
            let known_to = match used.last() {
                Some(last) if page.len() as u64 >= IP_PAGE => *last,
                _ => end,
            };
            let full = allocation::collect_free(from, known_to, &used, &excluded, want, &mut out);
            if full || known_to >= end {
                return Ok(out);
            }
            from = known_to + 1;
        }
    }
}
