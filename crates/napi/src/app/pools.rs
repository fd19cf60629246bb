//! Network pools: named lists of networks of one nic tag.

use moray_client::{EtagCondition, MorayError};
use triton_proto::napi::v1 as proto;

use crate::error::{Error, FieldError, Result};
use crate::model::{Network, NetworkPool};
use crate::store::{self, Conflict, NETWORK_POOLS, NETWORKS, Stored};
use crate::validate::{self, Checks};

use super::{Napi, new_uuid, not_found, one};

impl Napi {
    /// Checks a pool's network list: at least one, each an existing network, all on one
    /// nic tag. Gives the normalized uuids and that tag.
    async fn check_pool_networks(
        &self,
        c: &mut Checks,
        networks: &[String],
    ) -> Result<Option<(Vec<String>, String)>> {
        if networks.is_empty() {
            c.push(FieldError::invalid(
                "networks",
                "network pool must contain at least one network",
            ));
            return Ok(None);
        }
        let Some(uuids) = c.take(validate::uuids("networks", networks)) else {
            return Ok(None);
        };
        let mut tags = Vec::new();
        for u in &uuids {
            match self.store.get::<Network>(NETWORKS, u).await? {
                Some(n) => tags.push(n.value.nic_tag),
                None => {
                    c.push(FieldError::invalid(
                        "networks",
                        format!("network {u} does not exist"),
                    ));
                    return Ok(None);
                }
            }
        }
        if tags.iter().any(|t| *t != tags[0]) {
            c.push(FieldError::invalid(
                "networks",
                "nic tags of all networks in a network pool must match",
            ));
            return Ok(None);
        }
        Ok(Some((uuids, tags.swap_remove(0))))
    }

    /// Writes `pool` under `etag`, naming a taken name as the caller's error.
    async fn write_pool(&self, pool: NetworkPool, etag: EtagCondition) -> Result<NetworkPool> {
        match self
            .store
            .put(NETWORK_POOLS, &pool.uuid, &pool, etag)
            .await?
        {
            Ok(_) => Ok(pool),
            Err(e) => Err(Self::pool_write_error(e, &pool)),
        }
    }

    fn pool_write_error(e: MorayError, pool: &NetworkPool) -> Error {
        match store::conflict(&e) {
            Some(Conflict::Unique { attribute }) if attribute == "name" => {
                Error::InvalidParameters(vec![FieldError::duplicate(
                    "name",
                    format!("a network pool named {:?} already exists", pool.name),
                )])
            }
            Some(_) => Error::Contention {
                what: format!("write network pool {}", pool.uuid),
                attempts: 1,
            },
            None => Error::moray("putObject napi_network_pools")(e),
        }
    }

    pub async fn create_network_pool(
        &self,
        req: proto::CreateNetworkPoolRequest,
    ) -> Result<NetworkPool> {
        let mut c = Checks::new();
        let named = c.name_and_description(&req.name, &req.description);
        let owner_uuids = c.take(validate::uuids("owner_uuids", &req.owner_uuids));
        let networks = self.check_pool_networks(&mut c, &req.networks).await?;
        c.finish()?;
        let (Some((name, description)), Some(owner_uuids), Some((networks, nic_tag))) =
            (named, owner_uuids, networks)
        else {
            return Err(Error::invalid("network pool", "invalid"));
        };
        let pool = NetworkPool {
            uuid: new_uuid(),
            name,
            description,
            networks,
            nic_tag,
            owner_uuids,
        };
        self.write_pool(pool, EtagCondition::MustNotExist).await
    }

    async fn network_pool(&self, uuid: &str) -> Result<Stored<NetworkPool>> {
        let u = validate::uuid("uuid", uuid).map_err(one)?;
        self.store
            .get::<NetworkPool>(NETWORK_POOLS, &u)
            .await?
            .ok_or_else(|| not_found("network pool", u))
    }

    pub async fn get_network_pool(&self, uuid: &str) -> Result<NetworkPool> {
        Ok(self.network_pool(uuid).await?.value)
    }

    pub async fn list_network_pools(
        &self,
        req: proto::ListNetworkPoolsRequest,
    ) -> Result<Vec<NetworkPool>> {
        let mut c = Checks::new();
        let limit = c.take(validate::limit("limit", req.limit));
        let provisionable_by = c.given(req.provisionable_by.as_deref(), |p| {
            validate::uuid("provisionable_by", p)
        });
        c.finish()?;
        let found = self
            .store
            .find_all::<NetworkPool>(NETWORK_POOLS, "(uuid=*)", "name")
            .await?;
        Ok(self.page(found, provisionable_by, req.offset, limit))
    }

    pub async fn update_network_pool(
        &self,
        req: proto::UpdateNetworkPoolRequest,
    ) -> Result<NetworkPool> {
        let stored = self.network_pool(&req.uuid).await?;
        let mut pool = stored.value;
        let mut c = Checks::new();
        c.set_name_and_description(
            (&mut pool.name, &mut pool.description),
            req.name.as_deref(),
            req.description.as_deref(),
        );
        c.set(&mut pool.owner_uuids, req.owner_uuids.as_ref(), |o| {
            validate::uuids("owner_uuids", &o.values)
        });
        if let Some(n) = &req.networks
            && let Some((networks, tag)) = self.check_pool_networks(&mut c, &n.values).await?
        {
            pool.networks = networks;
            pool.nic_tag = tag;
        }
        c.finish()?;
        self.write_pool(pool, EtagCondition::Is(stored.etag)).await
    }

    pub async fn delete_network_pool(&self, uuid: &str) -> Result<()> {
        let stored = self.network_pool(uuid).await?;
        self.delete(
            NETWORK_POOLS,
            &stored.value.uuid,
            EtagCondition::Is(stored.etag),
            "network pool",
        )
        .await
    }
}
