//! Networks: create, read, list, update and delete, with their provision ranges.

use moray_client::typed::RetryPolicy;
use moray_client::{EtagCondition, FindOptions, MorayError};
use triton_proto::napi::v1 as proto;

use crate::error::{Error, FieldError, Result};
use crate::ip;
use crate::model::{MTU_DEFAULT, Network, NetworkPool, Nic};
use crate::store::{self, Conflict, IPS, NETWORK_POOLS, NETWORKS, NICS, Stored};
use crate::validate::{self, Checks};
use moray_client::filter::Filter;

use super::{Napi, check_range, check_requested_range, gave_up, new_uuid, not_found, one};

impl Napi {
    #[tracing::instrument(skip_all, fields(name = %req.name, subnet = %req.subnet))]
    pub async fn create_network(&self, req: proto::CreateNetworkRequest) -> Result<Network> {
        let mut c = Checks::new();
        let uuid = match &req.uuid {
            Some(u) => c.take(validate::uuid("uuid", u)),
            None => Some(new_uuid()),
        };
        let name = c.take(validate::name("name", &req.name));
        let vlan_id = c.take(validate::vlan_id("vlan_id", req.vlan_id));
        let subnet = c.take(validate::subnet("subnet", &req.subnet));
        let tag_name = c.take(validate::nic_tag_name("nic_tag", &req.nic_tag));
        let resolvers = c.take(validate::resolvers("resolvers", &req.resolvers));
        let routes = c.take(validate::routes("routes", &req.routes));
        let owner_uuids = c.take(validate::uuids("owner_uuids", &req.owner_uuids));
        let description = c.take(validate::description("description", &req.description));
        let mtu = c.take(validate::network_mtu("mtu", req.mtu.unwrap_or(MTU_DEFAULT)));
        let range = check_requested_range(&mut c, subnet.as_ref(), &req);
        if let Some(tag) = &tag_name {
            match self.nic_tag(tag).await? {
                None => c.push(FieldError::invalid(
                    "nic_tag",
                    format!("nic tag {tag:?} does not exist"),
                )),
                Some(t) => {
                    if let Some(mtu) = mtu
                        && mtu > t.value.mtu
                    {
                        c.push(FieldError::invalid(
                            "mtu",
                            format!(
                                "network mtu must be under nic_tag mtu ({} for {tag:?})",
                                t.value.mtu
                            ),
                        ));
                    }
                }
            }
        }
        c.finish()?;
        let (
            Some(uuid),
            Some(name),
            Some(vlan_id),
            Some(subnet),
            Some(nic_tag),
            Some(resolvers),
            Some(routes),
            Some(owner_uuids),
            Some(description),
            Some(mtu),
            Some((start, end, gateway)),
        ) = (
            uuid,
            name,
            vlan_id,
            subnet,
            tag_name,
            resolvers,
            routes,
            owner_uuids,
            description,
            mtu,
            range,
        )
        else {
            return Err(Error::invalid("network", "invalid"));
        };
        let network = Network {
            name_key: Network::name_key(&name, None),
            uuid,
            name,
            vlan_id,
            family: "ipv4".into(),
            subnet: subnet.to_string(),
            provision_start_ip: ip::format_ip(start),
            provision_end_ip: ip::format_ip(end),
            nic_tag,
            gateway: gateway.map(ip::format_ip),
            resolvers,
            routes,
            owner_uuids,
            description,
            mtu,
            fabric: false,
            internet_nat: false,
            vnet_id: None,
            fabric_owner: None,
        };
        self.insert_network(network).await
    }

    pub(super) async fn insert_network(&self, network: Network) -> Result<Network> {
        match self
            .store
            .put(
                NETWORKS,
                &network.uuid,
                &network,
                EtagCondition::MustNotExist,
            )
            .await?
        {
            Ok(_) => {
                tracing::info!(uuid = %network.uuid, name = %network.name, subnet = %network.subnet, "network created");
                Ok(network)
            }
            Err(e) => Err(self.network_write_error(e, &network)),
        }
    }

    fn network_write_error(&self, e: MorayError, network: &Network) -> Error {
        match store::conflict(&e) {
            Some(Conflict::Unique { attribute }) if attribute == "name_key" => {
                Error::InvalidParameters(vec![FieldError::duplicate(
                    "name",
                    format!("a network named {:?} already exists", network.name),
                )])
            }
            Some(Conflict::Unique { .. }) | Some(Conflict::Etag { .. }) => {
                Error::InvalidParameters(vec![FieldError::duplicate(
                    "uuid",
                    format!("network {} already exists", network.uuid),
                )])
            }
            None => Error::moray("putObject napi_networks")(e),
        }
    }

    pub(super) async fn network(&self, uuid: &str) -> Result<Option<Stored<Network>>> {
        match validate::uuid("uuid", uuid) {
            Ok(u) => self.store.get(NETWORKS, &u).await,
            Err(_) => Ok(None),
        }
    }

    /// The network `uuid`, or ResourceNotFound.
    async fn existing_network(&self, uuid: &str) -> Result<Stored<Network>> {
        self.network(uuid)
            .await?
            .ok_or_else(|| not_found("network", uuid))
    }

    pub async fn get_network(&self, uuid: &str) -> Result<Network> {
        validate::uuid("uuid", uuid).map_err(one)?;
        Ok(self.existing_network(uuid).await?.value)
    }

    pub async fn list_networks(&self, req: proto::ListNetworksRequest) -> Result<Vec<Network>> {
        let mut c = Checks::new();
        let limit = c.take(validate::limit("limit", req.limit));
        let mut terms = Vec::new();
        if let Some(name) = &req.name {
            terms.push(Filter::eq("name", name));
        }
        if let Some(v) = req.vlan_id {
            terms.push(Filter::eq("vlan_id", v));
        }
        if let Some(tag) = &req.nic_tag {
            terms.push(Filter::eq("nic_tag", tag));
        }
        if let Some(f) = req.fabric {
            terms.push(Filter::eq("fabric", f));
        }
        if let Some(o) = &req.owner_uuid
            && let Some(o) = c.take(validate::uuid("owner_uuid", o))
        {
            terms.push(Filter::eq("owner_uuids", o));
        }
        let provisionable_by = c.given(req.provisionable_by.as_deref(), |p| {
            validate::uuid("provisionable_by", p)
        });
        c.finish()?;
        let found = self
            .store
            .find_all::<Network>(
                NETWORKS,
                &Filter::and_else(terms, Filter::present("uuid")).to_string(),
                "name",
            )
            .await?;
        Ok(self.page(found, provisionable_by, req.offset, limit))
    }

    pub async fn update_network(&self, req: proto::UpdateNetworkRequest) -> Result<Network> {
        validate::uuid("uuid", &req.uuid).map_err(one)?;
        let mut tries = RetryPolicy::DEFAULT.start();
        while tries.next().await {
            let stored = self.existing_network(&req.uuid).await?;
            let mut n = stored.value;
            let subnet = n.parsed_subnet()?;
            let mut c = Checks::new();
            if let Some(name) = &req.name
                && let Some(name) = c.take(validate::name("name", name))
            {
                n.name_key = Network::name_key(&name, n.fabric_owner.as_deref());
                n.name = name;
            }
            c.set(&mut n.description, req.description.as_deref(), |d| {
                validate::description("description", d)
            });
            c.set(&mut n.resolvers, req.resolvers.as_ref(), |r| {
                validate::resolvers("resolvers", &r.values)
            });
            c.set(&mut n.routes, req.routes.as_ref(), |r| {
                validate::routes("routes", &r.routes)
            });
            if let Some(o) = &req.owner_uuids
                && let Some(o) = c.take(validate::uuids("owner_uuids", &o.values))
            {
                if n.fabric {
                    c.push(FieldError::invalid(
                        "owner_uuids",
                        "the owner of a fabric network cannot change",
                    ));
                } else {
                    n.owner_uuids = o;
                }
            }
            if let Some(mtu) = req.mtu
                && let Some(mtu) = c.take(validate::network_mtu("mtu", mtu))
            {
                if !n.fabric
                    && let Some(tag) = self.nic_tag(&n.nic_tag).await?
                    && mtu > tag.value.mtu
                {
                    c.push(FieldError::invalid(
                        "mtu",
                        format!("network mtu must be under nic_tag mtu ({})", tag.value.mtu),
                    ));
                }
                n.mtu = mtu;
            }
            let start = req
                .provision_start_ip
                .clone()
                .unwrap_or(n.provision_start_ip.clone());
            let end = req
                .provision_end_ip
                .clone()
                .unwrap_or(n.provision_end_ip.clone());
            let gateway = match &req.gateway {
                Some(g) => Some(g.clone()),
                None => n.gateway.clone(),
            };
            if let Some((s, e, gw)) = check_range(&mut c, &subnet, &start, &end, gateway.as_deref())
            {
                n.provision_start_ip = ip::format_ip(s);
                n.provision_end_ip = ip::format_ip(e);
                n.gateway = gw.map(ip::format_ip);
            }
            c.finish()?;
            match self
                .store
                .put(NETWORKS, &n.uuid, &n, EtagCondition::Is(stored.etag))
                .await?
            {
                Ok(_) => return Ok(n),
                Err(e) => match store::conflict(&e) {
                    Some(Conflict::Etag { .. }) => continue,
                    _ => return Err(self.network_write_error(e, &n)),
                },
            }
        }
        Err(gave_up(format!("update network {}", req.uuid)))
    }

    #[tracing::instrument(skip(self))]
    pub async fn delete_network(&self, uuid: &str) -> Result<()> {
        validate::uuid("uuid", uuid).map_err(one)?;
        let stored = self.existing_network(uuid).await?;
        self.delete_network_record(stored).await
    }

    pub(super) async fn delete_network_record(&self, stored: Stored<Network>) -> Result<()> {
        let uuid = stored.value.uuid.clone();
        self.store
            .refuse_in_use(NETWORK_POOLS, "networks", &uuid, |p: NetworkPool| {
                format!("network {uuid} is in network pool {} ({})", p.uuid, p.name)
            })
            .await?;
        self.store
            .refuse_in_use(NICS, "network_uuid", &uuid, |nic: Nic| {
                let ip = nic.ip.as_deref().unwrap_or("-");
                format!("network {uuid} has NICs (e.g. {} with IP {ip})", nic.mac)
            })
            .await?;
        let ops = vec![
            moray_client::BatchOp::DeleteMany {
                bucket: IPS.into(),
                filter: Filter::eq("network_uuid", &uuid).to_string(),
                options: FindOptions {
                    no_limit: true,
                    ..Default::default()
                },
            },
            store::delete_op(NETWORKS, &uuid, EtagCondition::Is(stored.etag)),
        ];
        match self.store.batch(&ops).await {
            Ok(()) => Ok(()),
            Err(e) if e.name() == "ObjectNotFoundError" => Err(not_found("network", uuid)),
            Err(e) if store::conflict(&e).is_some() => Err(Error::Contention {
                what: format!("delete network {uuid}"),
                attempts: 1,
            }),
            Err(e) => Err(Error::moray("batch delete network")(e)),
        }
    }
}
