//! NAPI's `WatchNetworks`: each network's name and owners. The network pools have no
//! feed: they are read (ListNetworkPools) after the snapshot and after each network
//! change, so a pool edited alone is seen at the next network change or restart.

use std::collections::BTreeMap;

use tonic::transport::Channel;
use triton_proto::napi::v1 as pb;
use triton_proto::napi::v1::napi_client::NapiClient;

use super::Shared;
use crate::names::Network;

/// Its client for ListNetworkPools.
pub struct Networks(pub NapiClient<Channel>);

feed!(Networks: pb::WatchNetworksRequest => Network, FEEDS[2], inputs.networks,
keep: |n| Network {
    uuid: n.uuid.to_ascii_lowercase(),
    name: n.name.clone(),
    owner_uuids: n
        .owner_uuids
        .iter()
        .map(|o| o.to_ascii_lowercase())
        .collect(),
    pools: Vec::new(),
}, {
    async fn after(&mut self, shared: &Shared) {
        self.read_pools(shared).await;
    }
});

impl Networks {
    /// Reads the pools again, and wakes the builder if they changed.
    async fn read_pools(&mut self, shared: &Shared) {
        let pools = match self
            .0
            .list_network_pools(pb::ListNetworkPoolsRequest::default())
            .await
        {
            Ok(p) => p.into_inner().pools,
            Err(status) => {
                tracing::warn!(%status, "NAPI ListNetworkPools failed; pools as before");
                return;
            }
        };
        let mut by_network: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for pool in pools {
            for n in &pool.networks {
                by_network
                    .entry(n.to_ascii_lowercase())
                    .or_default()
                    .push(pool.uuid.to_ascii_lowercase());
            }
        }
        let mut state = shared.lock();
        if state.inputs.pools != by_network {
            state.inputs.pools = by_network;
            shared.touch(&mut state);
        }
    }
}
