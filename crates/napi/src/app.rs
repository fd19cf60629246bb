//! NAPI's operations: validation, then reads and conditional writes in Moray. Request
//! handlers only; no background work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use moray_client::{EtagCondition, FindOptions, MorayError, Sort, SortOrder};
use triton_proto::napi::v1 as proto;

use crate::allocation;
use crate::config::SeedConfig;
use crate::error::{Error, FieldError, Result};
use crate::ip::{self, Subnet};
use crate::mac;
use crate::model::{
    FABRIC_MTU_DEFAULT, Fabric, FabricVlan, IpRecord, MAX_VNET_ID, MTU_DEFAULT, Network,
    NetworkPool, Nic, NicTag, OVERLAY_NIC_TAG,
};
use crate::store::{
    self, Conflict, FABRIC_VLANS, FABRICS, IPS, NETWORK_POOLS, NETWORKS, NIC_TAGS, NICS, Store,
    Stored,
};
use crate::validate::{self, Checks};
use moray_client::filter::Filter;

/// Attempts at provisioning one NIC before giving up with `ConcurrentUpdate`. Each
/// attempt that loses a race re-reads the network's used IPs, so the bound only matters
/// under heavy contention on one network; NAPI uses 20, and 200 concurrent provisions
/// on one /24 (the tested worst case) settle in well under 30.
pub const IP_PROVISION_ATTEMPTS: u32 = 50;
/// Attempts of other read-modify-write cycles (updates, fabric creation).
pub const UPDATE_ATTEMPTS: u32 = 10;
/// IP records read per page while looking for free addresses.
const IP_PAGE: u64 = 1000;

/// The NAPI application: every operation, on one Moray.
#[derive(Debug, Clone)]
pub struct Napi {
    store: Store,
    oui: u64,
    admin_uuid: String,
    /// Per network: the free addresses this NAPI hands out ([`allocation::Cursor`]).
    cursors: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<allocation::Cursor>>>>>,
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn random_u64() -> u64 {
    let b = *uuid::Uuid::new_v4().as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[9], b[10]])
}

fn not_found(kind: &'static str, id: impl Into<String>) -> Error {
    Error::NotFound {
        kind,
        id: id.into(),
    }
}

fn paged(limit: u32, offset: u32, sort: &str) -> FindOptions {
    FindOptions {
        limit: Some(u64::from(limit)),
        offset: u64::from(offset),
        no_count: true,
        sort: vec![Sort {
            attribute: sort.to_string(),
            order: SortOrder::Asc,
        }],
        ..Default::default()
    }
}

/// Validated provision range and gateway of a network on `subnet`.
fn check_range(
    c: &mut Checks,
    subnet: &Subnet,
    start: &str,
    end: &str,
    gateway: Option<&str>,
) -> Option<(u32, u32, Option<u32>)> {
    let s = c.take(validate::ip_in("provision_start_ip", start, subnet));
    let e = c.take(validate::ip_in("provision_end_ip", end, subnet));
    if let (Some(s), Some(e)) = (s, e)
        && s > e
    {
        c.push(FieldError::invalid(
            "provision_start_ip",
            "provision_start_ip must be before provision_end_ip",
        ));
        return None;
    }
    let gw = match gateway.filter(|g| !g.is_empty()) {
        Some(g) => Some(c.take(validate::ip_in("gateway", g, subnet))?),
        None => None,
    };
    Some((s?, e?, gw))
}

impl Napi {
    pub fn new(store: Store, oui: u64, admin_uuid: String) -> Self {
        Napi {
            store,
            oui,
            admin_uuid,
            cursors: Arc::default(),
        }
    }

    fn cursor(&self, network_uuid: &str) -> Arc<tokio::sync::Mutex<allocation::Cursor>> {
        self.cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(network_uuid.to_string())
            .or_default()
            .clone()
    }

    /// The network's IP records changed here other than by a provision (an address
    /// freed or reserved): the next allocation scans again, lowest first.
    async fn ips_changed(&self, network_uuid: &str) {
        self.cursor(network_uuid).lock().await.invalidate(None);
    }

    /// A free address of `network` for a new NIC, from the network's cursor (scanning
    /// when it has none left or its scan is old). `SubnetFull` when there is none.
    async fn next_free(&self, network: &Network) -> Result<u32> {
        let (start, end) = network.range()?;
        let shape = (start, end, network.excluded()?);
        let cursor = self.cursor(&network.uuid);
        let mut c = cursor.lock().await;
        if let Some(ip) = c.next(Instant::now(), &shape) {
            return Ok(ip);
        }
        // Scanning with the cursor held: concurrent allocators wait for this scan
        // instead of making their own.
        let n = c.begin_scan();
        let free = self.free_candidates(network).await?;
        c.end_scan(n, free, shape.clone(), Instant::now());
        c.next(Instant::now(), &shape)
            .ok_or_else(|| Error::SubnetFull {
                what: format!("network {}", network.uuid),
            })
    }

    pub async fn ping(&self) -> Result<()> {
        self.store.ping().await
    }

    // ------------------------------------------------------------ nic tags

    pub async fn create_nic_tag(&self, req: proto::CreateNicTagRequest) -> Result<NicTag> {
        let mut c = Checks::new();
        let name = c.take(validate::nic_tag_name("name", &req.name));
        let mtu = c.take(validate::nic_tag_mtu("mtu", req.mtu.unwrap_or(MTU_DEFAULT)));
        c.finish()?;
        let (Some(name), Some(mtu)) = (name, mtu) else {
            return Err(Error::invalid("name", "invalid"));
        };
        let tag = NicTag {
            name: name.clone(),
            uuid: new_uuid(),
            mtu,
        };
        match self
            .store
            .put(NIC_TAGS, &name, &tag, EtagCondition::MustNotExist)
            .await?
        {
            Ok(_) => Ok(tag),
            Err(e) if store::conflict(&e).is_some() => {
                Err(Error::InvalidParameters(vec![FieldError::duplicate(
                    "name",
                    format!("nic tag {name:?} already exists"),
                )]))
            }
            Err(e) => Err(Error::moray("putObject napi_nic_tags")(e)),
        }
    }

    async fn nic_tag(&self, name: &str) -> Result<Option<Stored<NicTag>>> {
        if validate::nic_tag_name("name", name).is_err() {
            return Ok(None);
        }
        self.store.get(NIC_TAGS, name).await
    }

    pub async fn get_nic_tag(&self, name: &str) -> Result<NicTag> {
        self.nic_tag(name)
            .await?
            .map(|s| s.value)
            .ok_or_else(|| not_found("nic tag", name))
    }

    pub async fn list_nic_tags(&self, req: proto::ListNicTagsRequest) -> Result<Vec<NicTag>> {
        let limit = validate::limit("limit", req.limit).map_err(one)?;
        let found = self
            .store
            .find::<NicTag>(NIC_TAGS, "(name=*)", &paged(limit, req.offset, "name"))
            .await?;
        Ok(found.into_iter().map(|s| s.value).collect())
    }

    pub async fn update_nic_tag(&self, req: proto::UpdateNicTagRequest) -> Result<NicTag> {
        for _ in 0..UPDATE_ATTEMPTS {
            let stored = self
                .nic_tag(&req.name)
                .await?
                .ok_or_else(|| not_found("nic tag", &req.name))?;
            let mut tag = stored.value;
            if let Some(mtu) = req.mtu {
                let mtu = validate::nic_tag_mtu("mtu", mtu).map_err(one)?;
                let networks = self
                    .store
                    .find_all::<Network>(
                        NETWORKS,
                        &Filter::eq("nic_tag", &tag.name).to_string(),
                        "uuid",
                    )
                    .await?;
                if let Some(n) = networks.iter().find(|n| n.value.mtu > mtu) {
                    return Err(Error::invalid(
                        "mtu",
                        format!(
                            "nic_tag mtu update must support existing networks: network {} has mtu {}",
                            n.value.uuid, n.value.mtu
                        ),
                    ));
                }
                tag.mtu = mtu;
            }
            match self
                .store
                .put(NIC_TAGS, &tag.name, &tag, EtagCondition::Is(stored.etag))
                .await?
            {
                Ok(_) => return Ok(tag),
                Err(e) if store::conflict(&e).is_some() => continue,
                Err(e) => return Err(Error::moray("putObject napi_nic_tags")(e)),
            }
        }
        Err(Error::Contention {
            what: format!("update nic tag {}", req.name),
            attempts: UPDATE_ATTEMPTS,
        })
    }

    pub async fn delete_nic_tag(&self, name: &str) -> Result<()> {
        let stored = self
            .nic_tag(name)
            .await?
            .ok_or_else(|| not_found("nic tag", name))?;
        let users = self
            .store
            .find::<Network>(
                NETWORKS,
                &Filter::eq("nic_tag", name).to_string(),
                &FindOptions::limit(1),
            )
            .await?;
        if let Some(n) = users.first() {
            return Err(Error::InUse(format!(
                "nic tag {name:?} is used by network {} ({})",
                n.value.uuid, n.value.name
            )));
        }
        self.delete(NIC_TAGS, name, EtagCondition::Is(stored.etag), "nic tag")
            .await
    }

    async fn delete(
        &self,
        bucket: &str,
        key: &str,
        etag: EtagCondition,
        kind: &'static str,
    ) -> Result<()> {
        match self.store.delete(bucket, key, etag).await {
            Ok(()) => Ok(()),
            Err(e) if e.name() == "ObjectNotFoundError" => Err(not_found(kind, key)),
            Err(e) if store::conflict(&e).is_some() => Err(Error::Contention {
                what: format!("delete {kind} {key}"),
                attempts: 1,
            }),
            Err(e) => Err(Error::moray(format!("deleteObject {bucket}"))(e)),
        }
    }

    // ------------------------------------------------------------ networks

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
        let range = subnet.as_ref().and_then(|s| {
            check_range(
                &mut c,
                s,
                &req.provision_start_ip,
                &req.provision_end_ip,
                req.gateway.as_deref(),
            )
        });
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

    async fn insert_network(&self, network: Network) -> Result<Network> {
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

    async fn network(&self, uuid: &str) -> Result<Option<Stored<Network>>> {
        match validate::uuid("uuid", uuid) {
            Ok(u) => self.store.get(NETWORKS, &u).await,
            Err(_) => Ok(None),
        }
    }

    pub async fn get_network(&self, uuid: &str) -> Result<Network> {
        validate::uuid("uuid", uuid).map_err(one)?;
        self.network(uuid)
            .await?
            .map(|s| s.value)
            .ok_or_else(|| not_found("network", uuid))
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
        let provisionable_by = match &req.provisionable_by {
            Some(p) => c.take(validate::uuid("provisionable_by", p)),
            None => None,
        };
        c.finish()?;
        let found = self
            .store
            .find_all::<Network>(
                NETWORKS,
                &Filter::and_else(terms, Filter::present("uuid")).to_string(),
                "name",
            )
            .await?;
        Ok(found
            .into_iter()
            .map(|s| s.value)
            .filter(|n| match &provisionable_by {
                Some(p) => n.provisionable_by(p, &self.admin_uuid),
                None => true,
            })
            .skip(req.offset as usize)
            .take(limit.unwrap_or(validate::MAX_LIMIT) as usize)
            .collect())
    }

    pub async fn update_network(&self, req: proto::UpdateNetworkRequest) -> Result<Network> {
        validate::uuid("uuid", &req.uuid).map_err(one)?;
        for _ in 0..UPDATE_ATTEMPTS {
            let stored = self
                .network(&req.uuid)
                .await?
                .ok_or_else(|| not_found("network", &req.uuid))?;
            let mut n = stored.value;
            let subnet = n.parsed_subnet()?;
            let mut c = Checks::new();
            if let Some(name) = &req.name
                && let Some(name) = c.take(validate::name("name", name))
            {
                n.name_key = Network::name_key(&name, n.fabric_owner.as_deref());
                n.name = name;
            }
            if let Some(d) = &req.description
                && let Some(d) = c.take(validate::description("description", d))
            {
                n.description = d;
            }
            if let Some(r) = &req.resolvers
                && let Some(r) = c.take(validate::resolvers("resolvers", &r.values))
            {
                n.resolvers = r;
            }
            if let Some(r) = &req.routes
                && let Some(r) = c.take(validate::routes("routes", &r.routes))
            {
                n.routes = r;
            }
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
        Err(Error::Contention {
            what: format!("update network {}", req.uuid),
            attempts: UPDATE_ATTEMPTS,
        })
    }

    #[tracing::instrument(skip(self))]
    pub async fn delete_network(&self, uuid: &str) -> Result<()> {
        validate::uuid("uuid", uuid).map_err(one)?;
        let stored = self
            .network(uuid)
            .await?
            .ok_or_else(|| not_found("network", uuid))?;
        self.delete_network_record(stored).await
    }

    async fn delete_network_record(&self, stored: Stored<Network>) -> Result<()> {
        let uuid = stored.value.uuid.clone();
        let pools = self
            .store
            .find::<NetworkPool>(
                NETWORK_POOLS,
                &Filter::eq("networks", &uuid).to_string(),
                &FindOptions::limit(1),
            )
            .await?;
        if let Some(p) = pools.first() {
            return Err(Error::InUse(format!(
                "network {uuid} is in network pool {} ({})",
                p.value.uuid, p.value.name
            )));
        }
        let nics = self
            .store
            .find::<Nic>(
                NICS,
                &Filter::eq("network_uuid", &uuid).to_string(),
                &FindOptions::limit(1),
            )
            .await?;
        if let Some(nic) = nics.first() {
            return Err(Error::InUse(format!(
                "network {uuid} has NICs (e.g. {} with IP {})",
                nic.value.mac,
                nic.value.ip.as_deref().unwrap_or("-")
            )));
        }
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

    // ------------------------------------------------------------ network pools

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
        let name = c.take(validate::name("name", &req.name));
        let description = c.take(validate::description("description", &req.description));
        let owner_uuids = c.take(validate::uuids("owner_uuids", &req.owner_uuids));
        let networks = self.check_pool_networks(&mut c, &req.networks).await?;
        c.finish()?;
        let (Some(name), Some(description), Some(owner_uuids), Some((networks, nic_tag))) =
            (name, description, owner_uuids, networks)
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
        match self
            .store
            .put(
                NETWORK_POOLS,
                &pool.uuid,
                &pool,
                EtagCondition::MustNotExist,
            )
            .await?
        {
            Ok(_) => Ok(pool),
            Err(e) => Err(Self::pool_write_error(e, &pool)),
        }
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
        let provisionable_by = match &req.provisionable_by {
            Some(p) => c.take(validate::uuid("provisionable_by", p)),
            None => None,
        };
        c.finish()?;
        let found = self
            .store
            .find_all::<NetworkPool>(NETWORK_POOLS, "(uuid=*)", "name")
            .await?;
        Ok(found
            .into_iter()
            .map(|s| s.value)
            .filter(|p| match &provisionable_by {
                Some(o) => p.provisionable_by(o, &self.admin_uuid),
                None => true,
            })
            .skip(req.offset as usize)
            .take(limit.unwrap_or(validate::MAX_LIMIT) as usize)
            .collect())
    }

    pub async fn update_network_pool(
        &self,
        req: proto::UpdateNetworkPoolRequest,
    ) -> Result<NetworkPool> {
        let stored = self.network_pool(&req.uuid).await?;
        let mut pool = stored.value;
        let mut c = Checks::new();
        if let Some(n) = &req.name
            && let Some(n) = c.take(validate::name("name", n))
        {
            pool.name = n;
        }
        if let Some(d) = &req.description
            && let Some(d) = c.take(validate::description("description", d))
        {
            pool.description = d;
        }
        if let Some(o) = &req.owner_uuids
            && let Some(o) = c.take(validate::uuids("owner_uuids", &o.values))
        {
            pool.owner_uuids = o;
        }
        if let Some(n) = &req.networks
            && let Some((networks, tag)) = self.check_pool_networks(&mut c, &n.values).await?
        {
            pool.networks = networks;
            pool.nic_tag = tag;
        }
        c.finish()?;
        match self
            .store
            .put(
                NETWORK_POOLS,
                &pool.uuid,
                &pool,
                EtagCondition::Is(stored.etag),
            )
            .await?
        {
            Ok(_) => Ok(pool),
            Err(e) => Err(Self::pool_write_error(e, &pool)),
        }
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

    // ------------------------------------------------------------ IPs

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
        for _ in 0..UPDATE_ATTEMPTS {
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
        Err(Error::Contention {
            what: format!("update IP {key}"),
            attempts: UPDATE_ATTEMPTS,
        })
    }

    /// Up to [`allocation::CANDIDATES`] free addresses of the network's provision range,
    /// lowest first, read from the IP records page by page.
    async fn free_candidates(&self, network: &Network) -> Result<Vec<u32>> {
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
            let full = allocation::collect_free(
                from,
                known_to,
                &used,
                &excluded,
                allocation::CANDIDATES,
                &mut out,
            );
            if full || known_to >= end {
                return Ok(out);
            }
            from = known_to + 1;
        }
    }

    // ------------------------------------------------------------ NICs

    #[tracing::instrument(skip_all, fields(network_uuid = req.network_uuid.as_deref().unwrap_or(""), owner_uuid = %req.owner_uuid, belongs_to_uuid = %req.belongs_to_uuid))]
    pub async fn create_nic(&self, req: proto::CreateNicRequest) -> Result<(Nic, Option<Network>)> {
        let mut c = Checks::new();
        let given_mac = match &req.mac {
            Some(m) => c.take(mac::parse(m).map_err(|e| FieldError::invalid("mac", e))),
            None => None,
        };
        let owner_uuid = c.take(validate::uuid("owner_uuid", &req.owner_uuid));
        let belongs_to_uuid = c.take(validate::uuid("belongs_to_uuid", &req.belongs_to_uuid));
        let belongs_to_type = c.take(validate::one_of(
            "belongs_to_type",
            &req.belongs_to_type,
            validate::BELONGS_TO_TYPES,
        ));
        let state = c.take(validate::one_of(
            "state",
            req.state.as_deref().unwrap_or("running"),
            validate::NIC_STATES,
        ));
        let cn_uuid = match &req.cn_uuid {
            Some(u) if !u.is_empty() => c.take(validate::uuid("cn_uuid", u)),
            _ => None,
        };
        let vlan_id = match req.vlan_id {
            Some(v) => c.take(validate::vlan_id("vlan_id", v)),
            None => Some(0),
        };
        let mut tags_provided = Vec::new();
        for t in &req.nic_tags_provided {
            if let Some(t) = c.take(validate::nic_tag_name("nic_tags_provided", t)) {
                if self.nic_tag(&t).await?.is_none() {
                    c.push(FieldError::invalid(
                        "nic_tags_provided",
                        format!("nic tag {t:?} does not exist"),
                    ));
                }
                tags_provided.push(t);
            }
        }
        // The networks to try, in order: one, or a pool's.
        let mut targets: Vec<Network> = Vec::new();
        let mut pool: Option<NetworkPool> = None;
        let mut requested_ip = None;
        match &req.network_uuid {
            Some(nu) => {
                if let Some(nu) = c.take(validate::uuid("network_uuid", nu)) {
                    if let Some(n) = self.store.get::<Network>(NETWORKS, &nu).await? {
                        let n = n.value;
                        if let Some(owner) = &owner_uuid
                            && !n.provisionable_by(owner, &self.admin_uuid)
                        {
                            c.push(FieldError::invalid(
                                "owner_uuid",
                                format!("owner cannot provision on network {}", n.uuid),
                            ));
                        }
                        if let Some(ip) = &req.ip {
                            // The operator's own NICs may take any address of the
                            // subnet; everyone else's stay in the provision range.
                            let whole_subnet = owner_uuid.as_deref() == Some(&self.admin_uuid);
                            requested_ip = c.take(validate::nic_ip(
                                "ip",
                                ip,
                                &n.parsed_subnet()?,
                                n.gateway_ip()?,
                                n.range()?,
                                whole_subnet,
                            ));
                        }
                        targets.push(n);
                    } else if let Some(p) =
                        self.store.get::<NetworkPool>(NETWORK_POOLS, &nu).await?
                    {
                        let p = p.value;
                        if let Some(owner) = &owner_uuid
                            && !p.provisionable_by(owner, &self.admin_uuid)
                        {
                            c.push(FieldError::invalid(
                                "owner_uuid",
                                format!("owner cannot provision on network pool {}", p.uuid),
                            ));
                        }
                        if req.ip.is_some() {
                            c.push(FieldError::invalid(
                                "ip",
                                "IP cannot be specified with a network pool",
                            ));
                        }
                        for u in &p.networks {
                            if let Some(n) = self.store.get::<Network>(NETWORKS, u).await?
                                && owner_uuid
                                    .as_ref()
                                    .is_none_or(|o| n.value.provisionable_by(o, &self.admin_uuid))
                            {
                                targets.push(n.value);
                            }
                        }
                        pool = Some(p);
                    } else {
                        c.push(FieldError::invalid(
                            "network_uuid",
                            format!("network {nu} does not exist"),
                        ));
                    }
                }
                if req.nic_tag.is_some() {
                    c.push(FieldError::invalid(
                        "nic_tag",
                        "cannot be given with network_uuid (the network's is used)",
                    ));
                }
            }
            None => {
                if req.ip.is_some() {
                    c.push(FieldError::invalid("ip", "requires network_uuid"));
                }
                if let Some(tag) = &req.nic_tag
                    && let Some(tag) = c.take(validate::nic_tag_name("nic_tag", tag))
                    && self.nic_tag(&tag).await?.is_none()
                {
                    c.push(FieldError::invalid(
                        "nic_tag",
                        format!("nic tag {tag:?} does not exist"),
                    ));
                }
            }
        }
        c.finish()?;
        let (
            Some(owner_uuid),
            Some(belongs_to_uuid),
            Some(belongs_to_type),
            Some(state),
            Some(vlan_id),
        ) = (owner_uuid, belongs_to_uuid, belongs_to_type, state, vlan_id)
        else {
            return Err(Error::invalid("nic", "invalid"));
        };
        let now = triton_common::time::now_rfc3339();
        let nic = Nic {
            mac: given_mac.map(mac::format).unwrap_or_default(),
            owner_uuid: owner_uuid.clone(),
            belongs_to_uuid: belongs_to_uuid.clone(),
            belongs_to_type: belongs_to_type.clone(),
            primary: req.primary,
            state,
            cn_uuid,
            model: req.model.clone().filter(|m| !m.is_empty()),
            network_uuid: None,
            ip: None,
            nic_tag: req.nic_tag.clone(),
            vlan_id,
            nic_tags_provided: tags_provided,
            allow_dhcp_spoofing: req.allow_dhcp_spoofing,
            allow_ip_spoofing: req.allow_ip_spoofing,
            allow_mac_spoofing: req.allow_mac_spoofing,
            allow_restricted_traffic: req.allow_restricted_traffic,
            allow_unfiltered_promisc: req.allow_unfiltered_promisc,
            underlay: req.underlay,
            created_timestamp: now.clone(),
            modified_timestamp: now,
        };

        let Some(pool) = pool else {
            let network = targets.pop();
            return self
                .provision_on(nic, network, requested_ip, given_mac.is_some())
                .await;
        };
        for network in targets {
            match self
                .provision_on(nic.clone(), Some(network), None, given_mac.is_some())
                .await
            {
                Err(Error::SubnetFull { what }) => {
                    tracing::debug!(pool = %pool.uuid, %what, "pool network full; trying the next");
                }
                other => return other,
            }
        }
        Err(Error::SubnetFull {
            what: format!("network pool {} (all its networks are full)", pool.uuid),
        })
    }

    /// Writes `nic` (and, on a network, its IP: `requested_ip` or a free one) in one
    /// batch, retrying lost races. `mac_given`: the NIC's MAC came from the caller (a
    /// taken one is then an error, not a reason to draw another).
    async fn provision_on(
        &self,
        mut nic: Nic,
        network: Option<Network>,
        requested_ip: Option<u32>,
        mac_given: bool,
    ) -> Result<(Nic, Option<Network>)> {
        let given_mac = if mac_given {
            Some(mac::parse(&nic.mac).map_err(|e| Error::invalid("mac", e))?)
        } else {
            None
        };
        if let Some(n) = &network {
            nic.network_uuid = Some(n.uuid.clone());
            nic.nic_tag = Some(n.nic_tag.clone());
            nic.vlan_id = n.vlan_id;
        }
        let (owner_uuid, belongs_to_uuid, belongs_to_type) = (
            nic.owner_uuid.clone(),
            nic.belongs_to_uuid.clone(),
            nic.belongs_to_type.clone(),
        );
        for attempt in 0..IP_PROVISION_ATTEMPTS {
            nic.mac = mac::format(given_mac.unwrap_or_else(|| mac::random(self.oui)));
            let clear_primary = if nic.primary {
                self.clear_primary_ops(&nic.belongs_to_uuid, &nic.mac)
                    .await?
            } else {
                Vec::new()
            };
            let mut ops = Vec::new();
            // An address from the network's cursor, to give back or mark written.
            let mut from_cursor = None;
            if let Some(net) = &network {
                let ip_num = match requested_ip {
                    Some(ip) => ip,
                    None => {
                        let ip = self.next_free(net).await?;
                        from_cursor = Some((net.uuid.clone(), ip));
                        ip
                    }
                };
                let record = IpRecord {
                    belongs_to_uuid: Some(belongs_to_uuid.clone()),
                    belongs_to_type: Some(belongs_to_type.clone()),
                    owner_uuid: Some(owner_uuid.clone()),
                    mac: Some(nic.mac.clone()),
                    ..IpRecord::free(&net.uuid, ip_num)
                };
                nic.ip = Some(record.ip.clone());
                ops.push(store::put_op(
                    IPS,
                    &IpRecord::key(&net.uuid, ip_num),
                    &record,
                    EtagCondition::MustNotExist,
                ));
            }
            ops.push(store::put_op(
                NICS,
                &nic.mac,
                &nic,
                EtagCondition::MustNotExist,
            ));
            let ops = match ops.into_iter().collect::<Result<Vec<_>>>() {
                Ok(mut ops) => {
                    ops.extend(clear_primary);
                    ops
                }
                Err(e) => {
                    if let Some((net, ip)) = &from_cursor {
                        self.cursor(net).lock().await.give_back(*ip);
                    }
                    return Err(e);
                }
            };
            let written = self.store.batch(&ops).await;
            if let Some((net, ip)) = &from_cursor {
                let cursor = self.cursor(net);
                let mut c = cursor.lock().await;
                match &written {
                    Ok(()) => c.written(*ip),
                    Err(e) if matches!(store::conflict(e), Some(Conflict::Etag { bucket, .. }) if bucket == IPS) =>
                    {
                        // Taken by someone else: this scan is out of date.
                        c.invalidate(Some(*ip));
                    }
                    Err(_) => c.give_back(*ip),
                }
            }
            let Err(e) = written else {
                tracing::info!(mac = %nic.mac, ip = ?nic.ip, attempt, "NIC provisioned");
                return Ok((nic, network));
            };
            match store::conflict(&e) {
                Some(Conflict::Etag { bucket, key }) if bucket == NICS && key == nic.mac => {
                    if given_mac.is_some() {
                        return Err(Error::InvalidParameters(vec![FieldError::duplicate(
                            "mac",
                            format!("a NIC with MAC {} already exists", nic.mac),
                        )]));
                    }
                }
                Some(Conflict::Unique { attribute }) if attribute == "mac" => {
                    if given_mac.is_some() {
                        return Err(Error::InvalidParameters(vec![FieldError::duplicate(
                            "mac",
                            format!("a NIC with MAC {} already exists", nic.mac),
                        )]));
                    }
                }
                Some(Conflict::Etag { bucket, .. }) if bucket == IPS => {
                    if requested_ip.is_some() {
                        // Never who holds it (another tenant's VM, its owner, a
                        // reservation): the caller may be anyone.
                        let ip = nic.ip.clone().unwrap_or_default();
                        return Err(Error::InvalidParameters(vec![FieldError::used_by(
                            "ip",
                            format!("ip {ip} is already in use"),
                        )]));
                    }
                }
                Some(_) => {}
                None => return Err(Error::moray("batch provision NIC")(e)),
            }
            tracing::debug!(attempt, mac = %nic.mac, ip = ?nic.ip, "provision conflict; retrying");
        }
        Err(Error::Contention {
            what: format!(
                "provision a NIC on network {}",
                network.map(|n| n.uuid).unwrap_or_default()
            ),
            attempts: IP_PROVISION_ATTEMPTS,
        })
    }

    /// Puts that clear `primary` on the other NICs of `belongs_to_uuid`.
    async fn clear_primary_ops(
        &self,
        belongs_to_uuid: &str,
        except_mac: &str,
    ) -> Result<Vec<moray_client::BatchOp>> {
        // By owner only, `primary` checked here: with `(primary=true)` in the filter
        // PostgreSQL may walk the `primary` index, every primary NIC of every VM.
        let others = self
            .store
            .find_all::<Nic>(
                NICS,
                &Filter::eq("belongs_to_uuid", belongs_to_uuid).to_string(),
                "mac",
            )
            .await?;
        let now = triton_common::time::now_rfc3339();
        others
            .into_iter()
            .filter(|s| s.value.primary && s.value.mac != except_mac)
            .map(|s| {
                let mut n = s.value;
                n.primary = false;
                n.modified_timestamp = now.clone();
                store::put_op(NICS, &n.mac.clone(), &n, EtagCondition::Is(s.etag))
            })
            .collect()
    }

    async fn nic(&self, mac_text: &str) -> Result<Stored<Nic>> {
        let m = mac::parse(mac_text).map_err(|e| Error::invalid("mac", e))?;
        let key = mac::format(m);
        self.store
            .get::<Nic>(NICS, &key)
            .await?
            .ok_or_else(|| not_found("nic", key))
    }

    async fn with_network(&self, nic: Nic) -> Result<(Nic, Option<Network>)> {
        let network = match &nic.network_uuid {
            Some(u) => self
                .store
                .get::<Network>(NETWORKS, u)
                .await?
                .map(|s| s.value),
            None => None,
        };
        Ok((nic, network))
    }

    pub async fn get_nic(&self, mac_text: &str) -> Result<(Nic, Option<Network>)> {
        let nic = self.nic(mac_text).await?.value;
        self.with_network(nic).await
    }

    pub async fn list_nics(
        &self,
        req: proto::ListNicsRequest,
    ) -> Result<Vec<(Nic, Option<Network>)>> {
        let mut c = Checks::new();
        let limit = c.take(validate::limit("limit", req.limit));
        let mut terms = Vec::new();
        for (field, value) in [
            ("belongs_to_uuid", &req.belongs_to_uuid),
            ("owner_uuid", &req.owner_uuid),
            ("network_uuid", &req.network_uuid),
            ("cn_uuid", &req.cn_uuid),
        ] {
            if let Some(v) = value
                && let Some(v) = c.take(validate::uuid(field, v))
            {
                terms.push(Filter::eq(field, v));
            }
        }
        if let Some(t) = &req.belongs_to_type
            && let Some(t) = c.take(validate::one_of(
                "belongs_to_type",
                t,
                validate::BELONGS_TO_TYPES,
            ))
        {
            terms.push(Filter::eq("belongs_to_type", t));
        }
        if let Some(s) = &req.state
            && let Some(s) = c.take(validate::one_of("state", s, validate::NIC_STATES))
        {
            terms.push(Filter::eq("state", s));
        }
        if let Some(t) = &req.nic_tag {
            terms.push(Filter::eq("nic_tag", t));
        }
        c.finish()?;
        let limit = limit.unwrap_or(validate::MAX_LIMIT);
        let filter = Filter::and_else(terms, Filter::present("mac")).to_string();
        let found = if req.belongs_to_uuid.is_some() {
            // One instance's NICs are few: read them all by the owner's index and page
            // here. Sorted and limited in Moray, PostgreSQL may instead walk the `mac`
            // index through every NIC of the datacenter.
            let mut all = self
                .store
                .find::<Nic>(
                    NICS,
                    &filter,
                    &FindOptions {
                        no_limit: true,
                        no_count: true,
                        ..Default::default()
                    },
                )
                .await?;
            all.sort_by(|a, b| a.value.mac.cmp(&b.value.mac));
            all.into_iter()
                .skip(req.offset as usize)
                .take(limit as usize)
                .collect()
        } else {
            self.store
                .find::<Nic>(NICS, &filter, &paged(limit, req.offset, "mac"))
                .await?
        };
        let mut networks: std::collections::HashMap<String, Option<Network>> = Default::default();
        let mut out = Vec::with_capacity(found.len());
        for s in found {
            let nic = s.value;
            let network = match &nic.network_uuid {
                Some(u) => {
                    if !networks.contains_key(u) {
                        let n = self
                            .store
                            .get::<Network>(NETWORKS, u)
                            .await?
                            .map(|s| s.value);
                        networks.insert(u.clone(), n);
                    }
                    networks.get(u).cloned().flatten()
                }
                None => None,
            };
            out.push((nic, network));
        }
        Ok(out)
    }

    pub async fn update_nic(&self, req: proto::UpdateNicRequest) -> Result<(Nic, Option<Network>)> {
        for _ in 0..UPDATE_ATTEMPTS {
            let stored = self.nic(&req.mac).await?;
            let mut nic = stored.value;
            let mut c = Checks::new();
            if let Some(s) = &req.state
                && let Some(s) = c.take(validate::one_of("state", s, validate::NIC_STATES))
            {
                nic.state = s;
            }
            if let Some(u) = &req.cn_uuid {
                if u.is_empty() {
                    nic.cn_uuid = None;
                } else if let Some(u) = c.take(validate::uuid("cn_uuid", u)) {
                    nic.cn_uuid = Some(u);
                }
            }
            if let Some(m) = &req.model {
                nic.model = Some(m.clone()).filter(|m| !m.is_empty());
            }
            if let Some(tags) = &req.nic_tags_provided {
                let mut out = Vec::new();
                for t in &tags.values {
                    if let Some(t) = c.take(validate::nic_tag_name("nic_tags_provided", t)) {
                        if self.nic_tag(&t).await?.is_none() {
                            c.push(FieldError::invalid(
                                "nic_tags_provided",
                                format!("nic tag {t:?} does not exist"),
                            ));
                        }
                        out.push(t);
                    }
                }
                nic.nic_tags_provided = out;
            }
            for (value, field) in [
                (req.allow_dhcp_spoofing, &mut nic.allow_dhcp_spoofing),
                (req.allow_ip_spoofing, &mut nic.allow_ip_spoofing),
                (req.allow_mac_spoofing, &mut nic.allow_mac_spoofing),
                (
                    req.allow_restricted_traffic,
                    &mut nic.allow_restricted_traffic,
                ),
                (
                    req.allow_unfiltered_promisc,
                    &mut nic.allow_unfiltered_promisc,
                ),
                (req.underlay, &mut nic.underlay),
            ] {
                if let Some(v) = value {
                    *field = v;
                }
            }
            c.finish()?;
            let mut ops = Vec::new();
            if let Some(p) = req.primary {
                if p && !nic.primary {
                    ops.extend(
                        self.clear_primary_ops(&nic.belongs_to_uuid, &nic.mac)
                            .await?,
                    );
                }
                nic.primary = p;
            }
            nic.modified_timestamp = triton_common::time::now_rfc3339();
            ops.insert(
                0,
                store::put_op(NICS, &nic.mac, &nic, EtagCondition::Is(stored.etag))?,
            );
            match self.store.batch(&ops).await {
                Ok(()) => return self.with_network(nic).await,
                Err(e) if store::conflict(&e).is_some() => continue,
                Err(e) => return Err(Error::moray("batch update NIC")(e)),
            }
        }
        Err(Error::Contention {
            what: format!("update NIC {}", req.mac),
            attempts: UPDATE_ATTEMPTS,
        })
    }

    /// Deletes the NIC and frees its IP in one transaction (a reserved IP stays
    /// reserved, only unassigned).
    #[tracing::instrument(skip(self))]
    pub async fn delete_nic(&self, mac_text: &str) -> Result<()> {
        for _ in 0..UPDATE_ATTEMPTS {
            let stored = self.nic(mac_text).await?;
            let nic = stored.value;
            let mut ops = vec![store::delete_op(
                NICS,
                &nic.mac,
                EtagCondition::Is(stored.etag),
            )];
            if let (Some(net), Some(ip)) = (&nic.network_uuid, &nic.ip) {
                let ip_num = ip::parse_ip(ip).map_err(|reason| Error::Corrupt {
                    what: format!("nic {}", nic.mac),
                    reason,
                })?;
                let key = IpRecord::key(net, ip_num);
                if let Some(rec) = self.store.get::<IpRecord>(IPS, &key).await?
                    && rec.value.mac.as_deref() == Some(nic.mac.as_str())
                {
                    if rec.value.reserved {
                        let freed = IpRecord {
                            reserved: true,
                            ..IpRecord::free(net, ip_num)
                        };
                        ops.push(store::put_op(
                            IPS,
                            &key,
                            &freed,
                            EtagCondition::Is(rec.etag),
                        )?);
                    } else {
                        ops.push(store::delete_op(IPS, &key, EtagCondition::Is(rec.etag)));
                    }
                }
            }
            match self.store.batch(&ops).await {
                Ok(()) => {
                    tracing::info!(mac = %nic.mac, ip = ?nic.ip, "NIC deleted, IP released");
                    if let Some(net) = &nic.network_uuid {
                        self.ips_changed(net).await;
                    }
                    return Ok(());
                }
                Err(e) if e.name() == "ObjectNotFoundError" => {
                    return Err(not_found("nic", nic.mac));
                }
                Err(e) if store::conflict(&e).is_some() => continue,
                Err(e) => return Err(Error::moray("batch delete NIC")(e)),
            }
        }
        Err(Error::Contention {
            what: format!("delete NIC {mac_text}"),
            attempts: UPDATE_ATTEMPTS,
        })
    }

    // ------------------------------------------------------------ fabrics

    pub async fn get_fabric(&self, owner_uuid: &str) -> Result<Fabric> {
        let owner = validate::uuid("owner_uuid", owner_uuid).map_err(one)?;
        self.store
            .get::<Fabric>(FABRICS, &owner)
            .await?
            .map(|s| s.value)
            .ok_or_else(|| not_found("fabric", owner))
    }

    #[tracing::instrument(skip_all, fields(owner_uuid = %req.owner_uuid, vlan_id = req.vlan_id))]
    pub async fn create_fabric_vlan(
        &self,
        req: proto::CreateFabricVlanRequest,
    ) -> Result<FabricVlan> {
        let mut c = Checks::new();
        let owner = c.take(validate::uuid("owner_uuid", &req.owner_uuid));
        let vlan_id = c.take(validate::vlan_id("vlan_id", req.vlan_id));
        let name = c.take(validate::name("name", &req.name));
        let description = c.take(validate::description("description", &req.description));
        c.finish()?;
        let (Some(owner), Some(vlan_id), Some(name), Some(description)) =
            (owner, vlan_id, name, description)
        else {
            return Err(Error::invalid("vlan", "invalid"));
        };
        for _ in 0..UPDATE_ATTEMPTS {
            let mut ops = Vec::new();
            let vnet_id = match self.store.get::<Fabric>(FABRICS, &owner).await? {
                Some(f) => f.value.vnet_id,
                None => {
                    let fabric = Fabric {
                        owner_uuid: owner.clone(),
                        vnet_id: 1 + (random_u64() % u64::from(MAX_VNET_ID)) as u32,
                    };
                    ops.push(store::put_op(
                        FABRICS,
                        &owner,
                        &fabric,
                        EtagCondition::MustNotExist,
                    )?);
                    fabric.vnet_id
                }
            };
            let vlan = FabricVlan {
                owner_uuid: owner.clone(),
                vlan_id,
                name: name.clone(),
                description: description.clone(),
                vnet_id,
            };
            ops.push(store::put_op(
                FABRIC_VLANS,
                &FabricVlan::key(&owner, vlan_id),
                &vlan,
                EtagCondition::MustNotExist,
            )?);
            let Err(e) = self.store.batch(&ops).await else {
                return Ok(vlan);
            };
            match store::conflict(&e) {
                Some(Conflict::Etag { bucket, .. }) if bucket == FABRIC_VLANS => {
                    return Err(Error::InvalidParameters(vec![FieldError::duplicate(
                        "vlan_id",
                        format!("VLAN ID {vlan_id} is already in use"),
                    )]));
                }
                // Another request created this owner's fabric, or another owner holds
                // the vnet_id drawn: read again and draw again.
                Some(_) => continue,
                None => return Err(Error::moray("batch create fabric VLAN")(e)),
            }
        }
        Err(Error::Contention {
            what: format!("create fabric VLAN {vlan_id} for {owner}"),
            attempts: UPDATE_ATTEMPTS,
        })
    }

    async fn fabric_vlan(&self, owner_uuid: &str, vlan_id: u32) -> Result<Stored<FabricVlan>> {
        let mut c = Checks::new();
        let owner = c.take(validate::uuid("owner_uuid", owner_uuid));
        let vlan_id = c.take(validate::vlan_id("vlan_id", vlan_id));
        c.finish()?;
        let (Some(owner), Some(vlan_id)) = (owner, vlan_id) else {
            return Err(Error::invalid("vlan_id", "invalid"));
        };
        let key = FabricVlan::key(&owner, vlan_id);
        self.store
            .get::<FabricVlan>(FABRIC_VLANS, &key)
            .await?
            .ok_or_else(|| not_found("fabric VLAN", key))
    }

    pub async fn get_fabric_vlan(&self, owner_uuid: &str, vlan_id: u32) -> Result<FabricVlan> {
        Ok(self.fabric_vlan(owner_uuid, vlan_id).await?.value)
    }

    pub async fn list_fabric_vlans(&self, owner_uuid: &str) -> Result<Vec<FabricVlan>> {
        let owner = validate::uuid("owner_uuid", owner_uuid).map_err(one)?;
        let found = self
            .store
            .find_all::<FabricVlan>(
                FABRIC_VLANS,
                &Filter::eq("owner_uuid", &owner).to_string(),
                "vlan_id",
            )
            .await?;
        Ok(found.into_iter().map(|s| s.value).collect())
    }

    pub async fn update_fabric_vlan(
        &self,
        req: proto::UpdateFabricVlanRequest,
    ) -> Result<FabricVlan> {
        for _ in 0..UPDATE_ATTEMPTS {
            let stored = self.fabric_vlan(&req.owner_uuid, req.vlan_id).await?;
            let mut vlan = stored.value;
            let mut c = Checks::new();
            if let Some(n) = &req.name
                && let Some(n) = c.take(validate::name("name", n))
            {
                vlan.name = n;
            }
            if let Some(d) = &req.description
                && let Some(d) = c.take(validate::description("description", d))
            {
                vlan.description = d;
            }
            c.finish()?;
            let key = FabricVlan::key(&vlan.owner_uuid, vlan.vlan_id);
            match self
                .store
                .put(FABRIC_VLANS, &key, &vlan, EtagCondition::Is(stored.etag))
                .await?
            {
                Ok(_) => return Ok(vlan),
                Err(e) if store::conflict(&e).is_some() => continue,
                Err(e) => return Err(Error::moray("putObject napi_fabric_vlans")(e)),
            }
        }
        Err(Error::Contention {
            what: format!("update fabric VLAN {}", req.vlan_id),
            attempts: UPDATE_ATTEMPTS,
        })
    }

    pub async fn delete_fabric_vlan(&self, owner_uuid: &str, vlan_id: u32) -> Result<()> {
        let stored = self.fabric_vlan(owner_uuid, vlan_id).await?;
        let vlan = stored.value;
        let nets = self.fabric_networks(&vlan.owner_uuid, vlan.vlan_id).await?;
        if let Some(n) = nets.first() {
            return Err(Error::InUse(format!(
                "fabric VLAN {} has networks (e.g. {} {})",
                vlan.vlan_id, n.uuid, n.name
            )));
        }
        self.delete(
            FABRIC_VLANS,
            &FabricVlan::key(&vlan.owner_uuid, vlan.vlan_id),
            EtagCondition::Is(stored.etag),
            "fabric VLAN",
        )
        .await
    }

    async fn fabric_networks(&self, owner: &str, vlan_id: u32) -> Result<Vec<Network>> {
        let found = self
            .store
            .find_all::<Network>(
                NETWORKS,
                &Filter::and([
                    Filter::eq("fabric_owner", owner),
                    Filter::eq("vlan_id", vlan_id),
                ])
                .to_string(),
                "name",
            )
            .await?;
        Ok(found.into_iter().map(|s| s.value).collect())
    }

    #[tracing::instrument(skip_all, fields(owner_uuid = %req.owner_uuid, vlan_id = req.vlan_id, name = %req.name))]
    pub async fn create_fabric_network(
        &self,
        req: proto::CreateFabricNetworkRequest,
    ) -> Result<Network> {
        let vlan = self.fabric_vlan(&req.owner_uuid, req.vlan_id).await?.value;
        let mut c = Checks::new();
        let name = c.take(validate::name("name", &req.name));
        let subnet = c.take(validate::subnet("subnet", &req.subnet));
        if let Some(s) = &subnet {
            if !s.is_private() {
                c.push(FieldError::invalid(
                    "subnet",
                    format!("{s} is not within a private (RFC 1918) range"),
                ));
            }
            if s.prefix > 24 {
                c.push(FieldError::invalid(
                    "subnet",
                    "a fabric subnet must be between /8 and /24",
                ));
            }
        }
        let resolvers = c.take(validate::resolvers("resolvers", &req.resolvers));
        let routes = c.take(validate::routes("routes", &req.routes));
        let description = c.take(validate::description("description", &req.description));
        let mtu = c.take(validate::network_mtu(
            "mtu",
            req.mtu.unwrap_or(FABRIC_MTU_DEFAULT),
        ));
        let range = subnet.as_ref().and_then(|s| {
            check_range(
                &mut c,
                s,
                &req.provision_start_ip,
                &req.provision_end_ip,
                req.gateway.as_deref(),
            )
        });
        c.finish()?;
        let (
            Some(name),
            Some(subnet),
            Some(resolvers),
            Some(routes),
            Some(description),
            Some(mtu),
            Some((start, end, gateway)),
        ) = (name, subnet, resolvers, routes, description, mtu, range)
        else {
            return Err(Error::invalid("network", "invalid"));
        };
        let network = Network {
            uuid: new_uuid(),
            name_key: Network::name_key(&name, Some(&vlan.owner_uuid)),
            name,
            vlan_id: vlan.vlan_id,
            family: "ipv4".into(),
            subnet: subnet.to_string(),
            provision_start_ip: ip::format_ip(start),
            provision_end_ip: ip::format_ip(end),
            nic_tag: OVERLAY_NIC_TAG.into(),
            internet_nat: req.internet_nat.unwrap_or(gateway.is_some()),
            gateway: gateway.map(ip::format_ip),
            resolvers,
            routes,
            owner_uuids: vec![vlan.owner_uuid.clone()],
            description,
            mtu,
            fabric: true,
            vnet_id: Some(vlan.vnet_id),
            fabric_owner: Some(vlan.owner_uuid.clone()),
        };
        self.insert_network(network).await
    }

    async fn fabric_network(
        &self,
        owner: &str,
        vlan_id: u32,
        uuid: &str,
    ) -> Result<Stored<Network>> {
        let vlan = self.fabric_vlan(owner, vlan_id).await?.value;
        let stored = self
            .network(uuid)
            .await?
            .filter(|s| {
                s.value.fabric_owner.as_deref() == Some(vlan.owner_uuid.as_str())
                    && s.value.vlan_id == vlan.vlan_id
            })
            .ok_or_else(|| not_found("fabric network", uuid))?;
        Ok(stored)
    }

    pub async fn get_fabric_network(
        &self,
        owner: &str,
        vlan_id: u32,
        uuid: &str,
    ) -> Result<Network> {
        Ok(self.fabric_network(owner, vlan_id, uuid).await?.value)
    }

    pub async fn list_fabric_networks(&self, owner: &str, vlan_id: u32) -> Result<Vec<Network>> {
        let vlan = self.fabric_vlan(owner, vlan_id).await?.value;
        self.fabric_networks(&vlan.owner_uuid, vlan.vlan_id).await
    }

    pub async fn delete_fabric_network(&self, owner: &str, vlan_id: u32, uuid: &str) -> Result<()> {
        let stored = self.fabric_network(owner, vlan_id, uuid).await?;
        self.delete_network_record(stored).await
    }

    // ------------------------------------------------------------ seeding

    /// Creates CoaL's `admin` and `external` nic tags and networks when missing.
    pub async fn seed(&self, seed: &SeedConfig) -> Result<()> {
        for (name, net) in [("admin", &seed.admin), ("external", &seed.external)] {
            match self
                .create_nic_tag(proto::CreateNicTagRequest {
                    name: name.into(),
                    mtu: None,
                })
                .await
            {
                Ok(_) => tracing::info!(nic_tag = name, "seeded nic tag"),
                Err(Error::InvalidParameters(e)) if e.iter().all(|e| e.code == "Duplicate") => {}
                Err(e) => return Err(e),
            }
            let existing = self
                .list_networks(proto::ListNetworksRequest {
                    name: Some(name.into()),
                    ..Default::default()
                })
                .await?;
            if !existing.is_empty() {
                continue;
            }
            let owner_uuids = if name == "admin" && !self.admin_uuid.is_empty() {
                vec![self.admin_uuid.clone()]
            } else {
                vec![]
            };
            let created = self
                .create_network(proto::CreateNetworkRequest {
                    name: name.into(),
                    vlan_id: net.vlan_id,
                    subnet: net.subnet.clone(),
                    provision_start_ip: net.provision_start_ip.clone(),
                    provision_end_ip: net.provision_end_ip.clone(),
                    nic_tag: name.into(),
                    gateway: Some(net.gateway.clone()).filter(|g| !g.is_empty()),
                    resolvers: net.resolvers.clone(),
                    owner_uuids,
                    description: format!("CoaL {name} network"),
                    ..Default::default()
                })
                .await;
            match created {
                Ok(n) => {
                    tracing::info!(network = %n.uuid, name, subnet = %n.subnet, "seeded network")
                }
                // Another NAPI seeded it at the same moment.
                Err(Error::InvalidParameters(e)) if e.iter().all(|e| e.code == "Duplicate") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// One field error as the request's error.
fn one(e: FieldError) -> Error {
    Error::InvalidParameters(vec![e])
}
