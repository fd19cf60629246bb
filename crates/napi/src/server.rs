//! The gRPC service: thin handlers over [`Napi`].

use tonic::{Request, Response, Status};
use triton_proto::napi::v1 as proto;
use triton_proto::napi::v1::napi_server::Napi as NapiRpc;

use crate::app::Napi;
use crate::model::{Network, Nic};
use crate::watch::{Watch, WatchNetworksStream, WatchNicsStream};

/// Full gRPC service name, for the health service.
pub const SERVICE_NAME: &str = "triton.napi.v1.Napi";

pub struct NapiService {
    app: Napi,
    watch: Watch,
}

impl NapiService {
    pub fn new(app: Napi, watch: Watch) -> Self {
        NapiService { app, watch }
    }
}

type R<T> = Result<Response<T>, Status>;

fn ok<T>(v: T) -> R<T> {
    Ok(Response::new(v))
}

fn nic((nic, network): (Nic, Option<Network>)) -> proto::Nic {
    nic.into_proto(network.as_ref())
}

fn networks(list: Vec<Network>) -> proto::ListNetworksResponse {
    proto::ListNetworksResponse {
        networks: list.into_iter().map(Into::into).collect(),
    }
}

#[tonic::async_trait]
impl NapiRpc for NapiService {
    async fn ping(&self, _: Request<proto::PingRequest>) -> R<proto::PingResponse> {
        self.app.ping().await?;
        ok(proto::PingResponse {
            status: "OK".into(),
        })
    }

    async fn create_nic_tag(&self, r: Request<proto::CreateNicTagRequest>) -> R<proto::NicTag> {
        ok(self.app.create_nic_tag(r.into_inner()).await?.into())
    }

    async fn get_nic_tag(&self, r: Request<proto::GetNicTagRequest>) -> R<proto::NicTag> {
        ok(self.app.get_nic_tag(&r.into_inner().name).await?.into())
    }

    async fn list_nic_tags(
        &self,
        r: Request<proto::ListNicTagsRequest>,
    ) -> R<proto::ListNicTagsResponse> {
        let tags = self.app.list_nic_tags(r.into_inner()).await?;
        ok(proto::ListNicTagsResponse {
            nic_tags: tags.into_iter().map(Into::into).collect(),
        })
    }

    async fn update_nic_tag(&self, r: Request<proto::UpdateNicTagRequest>) -> R<proto::NicTag> {
        ok(self.app.update_nic_tag(r.into_inner()).await?.into())
    }

    async fn delete_nic_tag(
        &self,
        r: Request<proto::DeleteNicTagRequest>,
    ) -> R<proto::DeleteResponse> {
        self.app.delete_nic_tag(&r.into_inner().name).await?;
        ok(proto::DeleteResponse {})
    }

    async fn create_network(&self, r: Request<proto::CreateNetworkRequest>) -> R<proto::Network> {
        ok(self.app.create_network(r.into_inner()).await?.into())
    }

    async fn get_network(&self, r: Request<proto::GetNetworkRequest>) -> R<proto::Network> {
        ok(self.app.get_network(&r.into_inner().uuid).await?.into())
    }

    async fn list_networks(
        &self,
        r: Request<proto::ListNetworksRequest>,
    ) -> R<proto::ListNetworksResponse> {
        ok(networks(self.app.list_networks(r.into_inner()).await?))
    }

    async fn update_network(&self, r: Request<proto::UpdateNetworkRequest>) -> R<proto::Network> {
        ok(self.app.update_network(r.into_inner()).await?.into())
    }

    async fn delete_network(
        &self,
        r: Request<proto::DeleteNetworkRequest>,
    ) -> R<proto::DeleteResponse> {
        self.app.delete_network(&r.into_inner().uuid).await?;
        ok(proto::DeleteResponse {})
    }

    async fn create_network_pool(
        &self,
        r: Request<proto::CreateNetworkPoolRequest>,
    ) -> R<proto::NetworkPool> {
        ok(self.app.create_network_pool(r.into_inner()).await?.into())
    }

    async fn get_network_pool(
        &self,
        r: Request<proto::GetNetworkPoolRequest>,
    ) -> R<proto::NetworkPool> {
        ok(self
            .app
            .get_network_pool(&r.into_inner().uuid)
            .await?
            .into())
    }

    async fn list_network_pools(
        &self,
        r: Request<proto::ListNetworkPoolsRequest>,
    ) -> R<proto::ListNetworkPoolsResponse> {
        let pools = self.app.list_network_pools(r.into_inner()).await?;
        ok(proto::ListNetworkPoolsResponse {
            pools: pools.into_iter().map(Into::into).collect(),
        })
    }

    async fn update_network_pool(
        &self,
        r: Request<proto::UpdateNetworkPoolRequest>,
    ) -> R<proto::NetworkPool> {
        ok(self.app.update_network_pool(r.into_inner()).await?.into())
    }

    async fn delete_network_pool(
        &self,
        r: Request<proto::DeleteNetworkPoolRequest>,
    ) -> R<proto::DeleteResponse> {
        self.app.delete_network_pool(&r.into_inner().uuid).await?;
        ok(proto::DeleteResponse {})
    }

    async fn list_ips(&self, r: Request<proto::ListIpsRequest>) -> R<proto::ListIpsResponse> {
        let ips = self.app.list_ips(r.into_inner()).await?;
        ok(proto::ListIpsResponse {
            ips: ips.into_iter().map(Into::into).collect(),
        })
    }

    async fn get_ip(&self, r: Request<proto::GetIpRequest>) -> R<proto::Ip> {
        let r = r.into_inner();
        ok(self.app.get_ip(&r.network_uuid, &r.ip).await?.into())
    }

    async fn update_ip(&self, r: Request<proto::UpdateIpRequest>) -> R<proto::Ip> {
        ok(self.app.update_ip(r.into_inner()).await?.into())
    }

    async fn create_nic(&self, r: Request<proto::CreateNicRequest>) -> R<proto::Nic> {
        ok(nic(self.app.create_nic(r.into_inner()).await?))
    }

    async fn create_nics(
        &self,
        r: Request<proto::CreateNicsRequest>,
    ) -> R<proto::CreateNicsResponse> {
        let made = self.app.create_nics(r.into_inner().nics).await?;
        ok(proto::CreateNicsResponse {
            nics: made.into_iter().map(nic).collect(),
        })
    }

    async fn get_nic(&self, r: Request<proto::GetNicRequest>) -> R<proto::Nic> {
        ok(nic(self.app.get_nic(&r.into_inner().mac).await?))
    }

    async fn list_nics(&self, r: Request<proto::ListNicsRequest>) -> R<proto::ListNicsResponse> {
        let nics = self.app.list_nics(r.into_inner()).await?;
        ok(proto::ListNicsResponse {
            nics: nics.into_iter().map(nic).collect(),
        })
    }

    async fn update_nic(&self, r: Request<proto::UpdateNicRequest>) -> R<proto::Nic> {
        ok(nic(self.app.update_nic(r.into_inner()).await?))
    }

    async fn delete_nic(&self, r: Request<proto::DeleteNicRequest>) -> R<proto::DeleteResponse> {
        self.app.delete_nic(&r.into_inner().mac).await?;
        ok(proto::DeleteResponse {})
    }

    async fn get_fabric(&self, r: Request<proto::GetFabricRequest>) -> R<proto::Fabric> {
        ok(self
            .app
            .get_fabric(&r.into_inner().owner_uuid)
            .await?
            .into())
    }

    async fn create_fabric_vlan(
        &self,
        r: Request<proto::CreateFabricVlanRequest>,
    ) -> R<proto::FabricVlan> {
        ok(self.app.create_fabric_vlan(r.into_inner()).await?.into())
    }

    async fn get_fabric_vlan(
        &self,
        r: Request<proto::GetFabricVlanRequest>,
    ) -> R<proto::FabricVlan> {
        let r = r.into_inner();
        ok(self
            .app
            .get_fabric_vlan(&r.owner_uuid, r.vlan_id)
            .await?
            .into())
    }

    async fn list_fabric_vlans(
        &self,
        r: Request<proto::ListFabricVlansRequest>,
    ) -> R<proto::ListFabricVlansResponse> {
        let vlans = self
            .app
            .list_fabric_vlans(&r.into_inner().owner_uuid)
            .await?;
        ok(proto::ListFabricVlansResponse {
            vlans: vlans.into_iter().map(Into::into).collect(),
        })
    }

    async fn update_fabric_vlan(
        &self,
        r: Request<proto::UpdateFabricVlanRequest>,
    ) -> R<proto::FabricVlan> {
        ok(self.app.update_fabric_vlan(r.into_inner()).await?.into())
    }

    async fn delete_fabric_vlan(
        &self,
        r: Request<proto::DeleteFabricVlanRequest>,
    ) -> R<proto::DeleteResponse> {
        let r = r.into_inner();
        self.app
            .delete_fabric_vlan(&r.owner_uuid, r.vlan_id)
            .await?;
        ok(proto::DeleteResponse {})
    }

    async fn create_fabric_network(
        &self,
        r: Request<proto::CreateFabricNetworkRequest>,
    ) -> R<proto::Network> {
        ok(self.app.create_fabric_network(r.into_inner()).await?.into())
    }

    async fn get_fabric_network(
        &self,
        r: Request<proto::GetFabricNetworkRequest>,
    ) -> R<proto::Network> {
        let r = r.into_inner();
        ok(self
            .app
            .get_fabric_network(&r.owner_uuid, r.vlan_id, &r.uuid)
            .await?
            .into())
    }

    async fn list_fabric_networks(
        &self,
        r: Request<proto::ListFabricNetworksRequest>,
    ) -> R<proto::ListNetworksResponse> {
        let r = r.into_inner();
        ok(networks(
            self.app
                .list_fabric_networks(&r.owner_uuid, r.vlan_id)
                .await?,
        ))
    }

    async fn update_fabric_network(
        &self,
        r: Request<proto::UpdateFabricNetworkRequest>,
    ) -> R<proto::Network> {
        ok(self.app.update_fabric_network(r.into_inner()).await?.into())
    }

    async fn delete_fabric_network(
        &self,
        r: Request<proto::DeleteFabricNetworkRequest>,
    ) -> R<proto::DeleteResponse> {
        let r = r.into_inner();
        self.app
            .delete_fabric_network(&r.owner_uuid, r.vlan_id, &r.uuid)
            .await?;
        ok(proto::DeleteResponse {})
    }

    type WatchNicsStream = WatchNicsStream;

    async fn watch_nics(&self, r: Request<proto::WatchNicsRequest>) -> R<Self::WatchNicsStream> {
        ok(self.watch.watch_nics(r.into_inner()).await?)
    }

    type WatchNetworksStream = WatchNetworksStream;

    async fn watch_networks(
        &self,
        r: Request<proto::WatchNetworksRequest>,
    ) -> R<Self::WatchNetworksStream> {
        ok(self.watch.watch_networks(r.into_inner()).await?)
    }
}
