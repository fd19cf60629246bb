//! Seeding CoaL's `admin` and `external` nic tags and networks.

use triton_proto::napi::v1 as proto;

use crate::config::SeedConfig;
use crate::error::{Error, Result};

use super::Napi;

impl Napi {
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
