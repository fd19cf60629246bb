//! The gRPC face of VolAPI: thin handlers that call [`VolApi`] and convert to wire types.

use tonic::{Request, Response, Status};
use triton_proto::volapi::v1 as pb;
use triton_proto::volapi::v1::vol_api_server::{VolApi as VolApiRpc, VolApiServer};

use crate::service::{self, VolApi};

pub fn service(api: VolApi) -> VolApiServer<Handler> {
    VolApiServer::new(Handler { api })
}

#[derive(Debug, Clone)]
pub struct Handler {
    api: VolApi,
}

type Reply<T> = Result<Response<T>, Status>;

/// The handlers: each names its request and answer, the request fields its trace
/// span shows, and makes the answer from the request `r` and the [`VolApi`] `api`.
macro_rules! handlers {
    ($(
        $method:ident($req:ident) -> $answer:ident [$($span:ident = $field:ident),*]
            |$api:ident, $r:ident| $body:expr;
    )*) => {
        #[tonic::async_trait]
        impl VolApiRpc for Handler {
            $(
                #[tracing::instrument(skip_all, fields($($span = %request.get_ref().$field),*))]
                async fn $method(&self, request: Request<pb::$req>) -> Reply<pb::$answer> {
                    let ($api, $r) = (&self.api, request.into_inner());
                    Ok(Response::new($body))
                }
            )*
        }
    };
}

handlers! {
    create_volume(CreateVolumeRequest) -> Volume [owner = owner_uuid]
        |api, r| service::to_proto(&api.create(r).await?);

    get_volume(GetVolumeRequest) -> Volume [uuid = uuid]
        |api, r| service::to_proto(&api.get(&r.uuid, &r.owner_uuid).await?);

    list_volumes(ListVolumesRequest) -> ListVolumesResponse []
        |api, r| pb::ListVolumesResponse {
            volumes: api.list(&r).await?.iter().map(service::to_proto).collect(),
        };

    update_volume(UpdateVolumeRequest) -> Volume [uuid = uuid]
        |api, r| service::to_proto(&api.update(&r).await?);

    delete_volume(DeleteVolumeRequest) -> DeleteVolumeResponse [uuid = uuid]
        |api, r| {
            api.delete(&r).await?;
            pb::DeleteVolumeResponse {}
        };

    list_volume_sizes(ListVolumeSizesRequest) -> ListVolumeSizesResponse []
        |api, r| {
            let kind = &r.r#type;
            if !kind.is_empty() && kind != service::TRITONNFS {
                return Err(crate::Error::invalid(
                    "type",
                    format!("must be {} (got {kind:?})", service::TRITONNFS),
                )
                .into());
            }
            let sizes = api.sizes().await?;
            pb::ListVolumeSizesResponse {
                sizes: sizes
                    .into_iter()
                    .map(|(size, _)| pb::VolumeSize {
                        size,
                        r#type: service::TRITONNFS.into(),
                    })
                    .collect(),
            }
        };

    get_volume_references(GetVolumeReferencesRequest) -> GetVolumeReferencesResponse [uuid = uuid]
        |api, r| pb::GetVolumeReferencesResponse {
            vm_uuids: api.get(&r.uuid, &r.owner_uuid).await?.refs,
        };

    add_volume_reference(VolumeReferenceRequest) -> VolumeReferenceResponse [uuid = uuid]
        |api, r| {
            api.add_reference(&r.uuid, &r.owner_uuid, &r.vm_uuid).await?;
            pb::VolumeReferenceResponse {}
        };

    remove_volume_reference(VolumeReferenceRequest) -> VolumeReferenceResponse [uuid = uuid]
        |api, r| {
            api.remove_reference(&r.uuid, &r.owner_uuid, &r.vm_uuid).await?;
            pb::VolumeReferenceResponse {}
        };

    add_volume_reservation(AddVolumeReservationRequest) -> VolumeReservation [volume = volume_name]
        |api, r| service::reservation_to_proto(&api.add_reservation(&r).await?);

    remove_volume_reservation(RemoveVolumeReservationRequest) -> RemoveVolumeReservationResponse [uuid = uuid]
        |api, r| {
            api.remove_reservation(&r.uuid, &r.owner_uuid).await?;
            pb::RemoveVolumeReservationResponse {}
        };

    list_volume_reservations(ListVolumeReservationsRequest) -> ListVolumeReservationsResponse []
        |api, r| pb::ListVolumeReservationsResponse {
            reservations: api
                .list_reservations(&r)
                .await?
                .iter()
                .map(service::reservation_to_proto)
                .collect(),
        };
}
