//! The gRPC face of VolAPI: thin handlers that call [`VolApi`] and convert to wire types.

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

triton_common::grpc_handlers! {
    impl VolApiRpc for Handler;
    handlers {
        create_volume(pb::CreateVolumeRequest) -> pb::Volume [owner = owner_uuid]
            |h, r| service::to_proto(&h.api.create(r).await?);

        get_volume(pb::GetVolumeRequest) -> pb::Volume [uuid = uuid]
            |h, r| service::to_proto(&h.api.get(&r.uuid, &r.owner_uuid).await?);

        list_volumes(pb::ListVolumesRequest) -> pb::ListVolumesResponse []
            |h, r| pb::ListVolumesResponse {
                volumes: h.api.list(&r).await?.iter().map(service::to_proto).collect(),
            };

        update_volume(pb::UpdateVolumeRequest) -> pb::Volume [uuid = uuid]
            |h, r| service::to_proto(&h.api.update(&r).await?);

        delete_volume(pb::DeleteVolumeRequest) -> pb::DeleteVolumeResponse [uuid = uuid]
            |h, r| {
                h.api.delete(&r).await?;
                pb::DeleteVolumeResponse {}
            };

        list_volume_sizes(pb::ListVolumeSizesRequest) -> pb::ListVolumeSizesResponse []
            |h, r| {
                let kind = &r.r#type;
                if !kind.is_empty() && kind != service::TRITONNFS {
                    return Err(crate::Error::invalid(
                        "type",
                        format!("must be {} (got {kind:?})", service::TRITONNFS),
                    )
                    .into());
                }
                let sizes = h.api.sizes().await?;
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

        get_volume_references(pb::GetVolumeReferencesRequest) -> pb::GetVolumeReferencesResponse [uuid = uuid]
            |h, r| pb::GetVolumeReferencesResponse {
                vm_uuids: h.api.get(&r.uuid, &r.owner_uuid).await?.refs,
            };

        add_volume_reference(pb::VolumeReferenceRequest) -> pb::VolumeReferenceResponse [uuid = uuid]
            |h, r| {
                h.api.add_reference(&r.uuid, &r.owner_uuid, &r.vm_uuid).await?;
                pb::VolumeReferenceResponse {}
            };

        remove_volume_reference(pb::VolumeReferenceRequest) -> pb::VolumeReferenceResponse [uuid = uuid]
            |h, r| {
                h.api.remove_reference(&r.uuid, &r.owner_uuid, &r.vm_uuid).await?;
                pb::VolumeReferenceResponse {}
            };

        add_volume_reservation(pb::AddVolumeReservationRequest) -> pb::VolumeReservation [volume = volume_name]
            |h, r| service::reservation_to_proto(&h.api.add_reservation(&r).await?);

        remove_volume_reservation(pb::RemoveVolumeReservationRequest) -> pb::RemoveVolumeReservationResponse [uuid = uuid]
            |h, r| {
                h.api.remove_reservation(&r.uuid, &r.owner_uuid).await?;
                pb::RemoveVolumeReservationResponse {}
            };

        list_volume_reservations(pb::ListVolumeReservationsRequest) -> pb::ListVolumeReservationsResponse []
            |h, r| pb::ListVolumeReservationsResponse {
                reservations: h
                    .api
                    .list_reservations(&r)
                    .await?
                    .iter()
                    .map(service::reservation_to_proto)
                    .collect(),
            };
    }
}
