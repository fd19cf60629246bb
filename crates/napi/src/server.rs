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
        networks: listed(list),
    }
}

/// Each of the app's records as its wire type.
fn listed<T, U: From<T>>(list: Vec<T>) -> Vec<U> {
    list.into_iter().map(Into::into).collect()
}

fn deleted(_: ()) -> proto::DeleteResponse {
    proto::DeleteResponse {}
}

/// `impl NapiRpc for NapiService`: the RPCs that hand their request to the [`Napi`]
/// method of the same name and answer with what it returns, from one line each; then
/// the rest as written. A line is
/// `method(Request) -> Answer`, the method taking the whole request, or
/// `method(Request: r => args)`, taking `args` made from the request `r`; then
/// `, convert` where the answer is not simply the method's result `.into()`.
macro_rules! napi_service {
    (
        delegated {$(
            $method:ident($req:ident $(: $r:ident => $($arg:expr),+)?)
                -> $answer:ident $(, $convert:expr)?;
        )*}
        $($rest:tt)*
    ) => {
        #[tonic::async_trait]
        impl NapiRpc for NapiService {
            $(
                async fn $method(&self, request: Request<proto::$req>) -> R<proto::$answer> {
                    let answer = napi_service!(@call self, $method, request $(, $r => $($arg),+)?);
                    ok(napi_service!(@convert answer $(, $convert)?))
                }
            )*
            $($rest)*
        }
    };
    (@call $self:ident, $method:ident, $request:ident) => {
        $self.app.$method($request.into_inner()).await?
    };
    (@call $self:ident, $method:ident, $request:ident, $r:ident => $($arg:expr),+) => {{
        let $r = $request.into_inner();
        $self.app.$method($($arg),+).await?
    }};
    (@convert $answer:ident) => {
        $answer.into()
    };
    (@convert $answer:ident, $convert:expr) => {
        ($convert)($answer)
    };
}

napi_service! {
    delegated {
        create_nic_tag(CreateNicTagRequest) -> NicTag;
        get_nic_tag(GetNicTagRequest: r => &r.name) -> NicTag;
        list_nic_tags(ListNicTagsRequest) -> ListNicTagsResponse,
            |tags| proto::ListNicTagsResponse { nic_tags: listed(tags) };
        update_nic_tag(UpdateNicTagRequest) -> NicTag;
        delete_nic_tag(DeleteNicTagRequest: r => &r.name) -> DeleteResponse, deleted;

        create_network(CreateNetworkRequest) -> Network;
        get_network(GetNetworkRequest: r => &r.uuid) -> Network;
        list_networks(ListNetworksRequest) -> ListNetworksResponse, networks;
        update_network(UpdateNetworkRequest) -> Network;
        delete_network(DeleteNetworkRequest: r => &r.uuid) -> DeleteResponse, deleted;

        create_network_pool(CreateNetworkPoolRequest) -> NetworkPool;
        get_network_pool(GetNetworkPoolRequest: r => &r.uuid) -> NetworkPool;
        list_network_pools(ListNetworkPoolsRequest) -> ListNetworkPoolsResponse,
            |pools| proto::ListNetworkPoolsResponse { pools: listed(pools) };
        update_network_pool(UpdateNetworkPoolRequest) -> NetworkPool;
        delete_network_pool(DeleteNetworkPoolRequest: r => &r.uuid) -> DeleteResponse, deleted;

        list_ips(ListIpsRequest) -> ListIpsResponse,
            |ips| proto::ListIpsResponse { ips: listed(ips) };
        get_ip(GetIpRequest: r => &r.network_uuid, &r.ip) -> Ip;
        update_ip(UpdateIpRequest) -> Ip;

        create_nic(CreateNicRequest) -> Nic, nic;
        create_nics(CreateNicsRequest: r => r.nics) -> CreateNicsResponse,
            |made: Vec<_>| proto::CreateNicsResponse { nics: made.into_iter().map(nic).collect() };
        get_nic(GetNicRequest: r => &r.mac) -> Nic, nic;
        list_nics(ListNicsRequest) -> ListNicsResponse,
            |nics: Vec<_>| proto::ListNicsResponse { nics: nics.into_iter().map(nic).collect() };
        update_nic(UpdateNicRequest) -> Nic, nic;
        delete_nic(DeleteNicRequest: r => &r.mac) -> DeleteResponse, deleted;

        get_fabric(GetFabricRequest: r => &r.owner_uuid) -> Fabric;
        create_fabric_vlan(CreateFabricVlanRequest) -> FabricVlan;
        get_fabric_vlan(GetFabricVlanRequest: r => &r.owner_uuid, r.vlan_id) -> FabricVlan;
        list_fabric_vlans(ListFabricVlansRequest: r => &r.owner_uuid) -> ListFabricVlansResponse,
            |vlans| proto::ListFabricVlansResponse { vlans: listed(vlans) };
        update_fabric_vlan(UpdateFabricVlanRequest) -> FabricVlan;
        delete_fabric_vlan(DeleteFabricVlanRequest: r => &r.owner_uuid, r.vlan_id)
            -> DeleteResponse, deleted;

        create_fabric_network(CreateFabricNetworkRequest) -> Network;
        get_fabric_network(GetFabricNetworkRequest: r => &r.owner_uuid, r.vlan_id, &r.uuid)
            -> Network;
        list_fabric_networks(ListFabricNetworksRequest: r => &r.owner_uuid, r.vlan_id)
            -> ListNetworksResponse, networks;
        update_fabric_network(UpdateFabricNetworkRequest) -> Network;
        delete_fabric_network(DeleteFabricNetworkRequest: r => &r.owner_uuid, r.vlan_id, &r.uuid)
            -> DeleteResponse, deleted;
    }

    async fn ping(&self, _: Request<proto::PingRequest>) -> R<proto::PingResponse> {
        self.app.ping().await?;
        ok(proto::PingResponse {
            status: "OK".into(),
        })
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
