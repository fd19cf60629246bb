//! Fabrics: per-owner VLANs and the networks on them.

use moray_client::EtagCondition;
use moray_client::typed::RetryPolicy;
use triton_proto::napi::v1 as proto;

use crate::error::{Error, FieldError, Result};
use crate::ip;
use crate::model::{FABRIC_MTU_DEFAULT, Fabric, FabricVlan, MAX_VNET_ID, Network, OVERLAY_NIC_TAG};
use crate::store::{self, Conflict, FABRIC_VLANS, FABRICS, NETWORKS, Stored};
use crate::validate::{self, Checks};
use moray_client::filter::Filter;

use super::{Napi, check_requested_range, gave_up, new_uuid, not_found, one, random_u64};

/// Triton's default fabric of an account, as sdcadm's `default-fabric` and
/// napi-ufds-watcher make it (sdcadm `lib/default-fabric.js`: VLAN 2, subnet
/// 192.168.128.0/22, gateway .1, addresses .128.5 to .131.250; the names are the ones
/// CloudAPI shows every account).
pub const DEFAULT_VLAN_ID: u32 = 2;
pub const DEFAULT_VLAN_NAME: &str = "My-Fabric-VLAN";
pub const DEFAULT_NETWORK_NAME: &str = "My-Fabric-Network";
pub const DEFAULT_SUBNET: &str = "192.168.128.0/22";
pub const DEFAULT_GATEWAY: &str = "192.168.128.1";
pub const DEFAULT_PROVISION_START: &str = "192.168.128.5";
pub const DEFAULT_PROVISION_END: &str = "192.168.131.250";

impl Napi {
    /// The account's default fabric network, made with its VLAN when missing: VLAN
    /// [`DEFAULT_VLAN_ID`] (kept as it is when the account has one, whatever its name)
    /// and the network [`DEFAULT_NETWORK_NAME`] on it (found by name when it exists).
    /// Safe to call again and from several NAPIs at once.
    pub async fn default_fabric(&self, owner_uuid: &str, resolvers: &[String]) -> Result<Network> {
        let vlan = move || async move {
            match self.fabric_vlan(owner_uuid, DEFAULT_VLAN_ID).await {
                Ok(_) => Ok(Some(())),
                Err(Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        };
        find_or_make(vlan, move || async move {
            self.create_fabric_vlan(proto::CreateFabricVlanRequest {
                owner_uuid: owner_uuid.to_string(),
                vlan_id: DEFAULT_VLAN_ID,
                name: DEFAULT_VLAN_NAME.into(),
                description: String::new(),
            })
            .await
            .map(drop)
        })
        .await?;
        let network = move || async move {
            let nets = self.fabric_networks(owner_uuid, DEFAULT_VLAN_ID).await?;
            Ok(nets.into_iter().find(|n| n.name == DEFAULT_NETWORK_NAME))
        };
        find_or_make(network, move || async move {
            self.create_fabric_network(proto::CreateFabricNetworkRequest {
                owner_uuid: owner_uuid.to_string(),
                vlan_id: DEFAULT_VLAN_ID,
                name: DEFAULT_NETWORK_NAME.into(),
                subnet: DEFAULT_SUBNET.into(),
                provision_start_ip: DEFAULT_PROVISION_START.into(),
                provision_end_ip: DEFAULT_PROVISION_END.into(),
                gateway: Some(DEFAULT_GATEWAY.into()),
                resolvers: resolvers.to_vec(),
                ..Default::default()
            })
            .await
        })
        .await
    }

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
        let named = c.name_and_description(&req.name, &req.description);
        c.finish()?;
        let (Some(owner), Some(vlan_id), Some((name, description))) = (owner, vlan_id, named)
        else {
            return Err(Error::invalid("vlan", "invalid"));
        };
        let mut tries = RetryPolicy::DEFAULT.start();
        while tries.next().await {
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
        Err(gave_up(format!("create fabric VLAN {vlan_id} for {owner}")))
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
        let mut tries = RetryPolicy::DEFAULT.start();
        while tries.next().await {
            let stored = self.fabric_vlan(&req.owner_uuid, req.vlan_id).await?;
            let mut vlan = stored.value;
            let mut c = Checks::new();
            c.set_name_and_description(
                (&mut vlan.name, &mut vlan.description),
                req.name.as_deref(),
                req.description.as_deref(),
            );
            c.finish()?;
            let key = FabricVlan::key(&vlan.owner_uuid, vlan.vlan_id);
            if self
                .store
                .replace(FABRIC_VLANS, &key, &vlan, stored.etag)
                .await?
            {
                return Ok(vlan);
            }
        }
        Err(gave_up(format!("update fabric VLAN {}", req.vlan_id)))
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
        let range = check_requested_range(&mut c, subnet.as_ref(), &req);
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

    /// Triton's UpdateFabricNetwork: name, description, resolvers, routes and the
    /// provision range, on a network of this owner's VLAN (NotFound otherwise). The
    /// owner and VLAN of a fabric network never change, so checking them first and
    /// then updating by uuid cannot update another's.
    pub async fn update_fabric_network(
        &self,
        req: proto::UpdateFabricNetworkRequest,
    ) -> Result<Network> {
        let stored = self
            .fabric_network(&req.owner_uuid, req.vlan_id, &req.uuid)
            .await?;
        self.update_network(proto::UpdateNetworkRequest {
            uuid: stored.value.uuid,
            name: req.name,
            description: req.description,
            resolvers: req.resolvers,
            routes: req.routes,
            provision_start_ip: req.provision_start_ip,
            provision_end_ip: req.provision_end_ip,
            ..Default::default()
        })
        .await
    }

    pub async fn delete_fabric_network(&self, owner: &str, vlan_id: u32, uuid: &str) -> Result<()> {
        let stored = self.fabric_network(owner, vlan_id, uuid).await?;
        self.delete_network_record(stored).await
    }
}

/// What `find` finds, or else what `make` makes. When making fails because another
/// request made it meanwhile, `find` finds that one; otherwise making's error stands.
async fn find_or_make<T, Find, Made>(
    find: impl Fn() -> Find,
    make: impl FnOnce() -> Made,
) -> Result<T>
where
    Find: Future<Output = Result<Option<T>>>,
    Made: Future<Output = Result<T>>,
{
    if let Some(found) = find().await? {
        return Ok(found);
    }
    match make().await {
        Ok(made) => Ok(made),
        Err(e) => match find().await {
            Ok(Some(found)) => Ok(found),
            _ => Err(e),
        },
    }
}
