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

#[tonic::async_trait]
impl VolApiRpc for Handler {
    #[tracing::instrument(skip_all, fields(owner = %request.get_ref().owner_uuid))]
    async fn create_volume(&self, request: Request<pb::CreateVolumeRequest>) -> Reply<pb::Volume> {
        let v = self.api.create(request.into_inner()).await?;
        Ok(Response::new(service::to_proto(&v)))
    }

    #[tracing::instrument(skip_all, fields(uuid = %request.get_ref().uuid))]
    async fn get_volume(&self, request: Request<pb::GetVolumeRequest>) -> Reply<pb::Volume> {
        let r = request.get_ref();
        let v = self.api.get(&r.uuid, &r.owner_uuid).await?;
        Ok(Response::new(service::to_proto(&v)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_volumes(
        &self,
        request: Request<pb::ListVolumesRequest>,
    ) -> Reply<pb::ListVolumesResponse> {
        let list = self.api.list(request.get_ref()).await?;
        Ok(Response::new(pb::ListVolumesResponse {
            volumes: list.iter().map(service::to_proto).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(uuid = %request.get_ref().uuid))]
    async fn update_volume(&self, request: Request<pb::UpdateVolumeRequest>) -> Reply<pb::Volume> {
        let v = self.api.update(request.get_ref()).await?;
        Ok(Response::new(service::to_proto(&v)))
    }

    #[tracing::instrument(skip_all, fields(uuid = %request.get_ref().uuid))]
    async fn delete_volume(
        &self,
        request: Request<pb::DeleteVolumeRequest>,
    ) -> Reply<pb::DeleteVolumeResponse> {
        self.api.delete(request.get_ref()).await?;
        Ok(Response::new(pb::DeleteVolumeResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn list_volume_sizes(
        &self,
        request: Request<pb::ListVolumeSizesRequest>,
    ) -> Reply<pb::ListVolumeSizesResponse> {
        let kind = &request.get_ref().r#type;
        if !kind.is_empty() && kind != service::TRITONNFS {
            return Err(crate::Error::invalid(
                "type",
                format!("must be {} (got {kind:?})", service::TRITONNFS),
            )
            .into());
        }
        let sizes = self.api.sizes().await?;
        Ok(Response::new(pb::ListVolumeSizesResponse {
            sizes: sizes
                .into_iter()
                .map(|(size, _)| pb::VolumeSize {
                    size,
                    r#type: service::TRITONNFS.into(),
                })
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(uuid = %request.get_ref().uuid))]
    async fn get_volume_references(
        &self,
        request: Request<pb::GetVolumeReferencesRequest>,
    ) -> Reply<pb::GetVolumeReferencesResponse> {
        let r = request.get_ref();
        let v = self.api.get(&r.uuid, &r.owner_uuid).await?;
        Ok(Response::new(pb::GetVolumeReferencesResponse {
            vm_uuids: v.refs,
        }))
    }

    #[tracing::instrument(skip_all, fields(uuid = %request.get_ref().uuid))]
    async fn add_volume_reference(
        &self,
        request: Request<pb::VolumeReferenceRequest>,
    ) -> Reply<pb::VolumeReferenceResponse> {
        let r = request.get_ref();
        self.api
            .add_reference(&r.uuid, &r.owner_uuid, &r.vm_uuid)
            .await?;
        Ok(Response::new(pb::VolumeReferenceResponse {}))
    }

    #[tracing::instrument(skip_all, fields(uuid = %request.get_ref().uuid))]
    async fn remove_volume_reference(
        &self,
        request: Request<pb::VolumeReferenceRequest>,
    ) -> Reply<pb::VolumeReferenceResponse> {
        let r = request.get_ref();
        self.api
            .remove_reference(&r.uuid, &r.owner_uuid, &r.vm_uuid)
            .await?;
        Ok(Response::new(pb::VolumeReferenceResponse {}))
    }

    #[tracing::instrument(skip_all, fields(volume = %request.get_ref().volume_name))]
    async fn add_volume_reservation(
        &self,
        request: Request<pb::AddVolumeReservationRequest>,
    ) -> Reply<pb::VolumeReservation> {
        let r = self.api.add_reservation(request.get_ref()).await?;
        Ok(Response::new(service::reservation_to_proto(&r)))
    }

    #[tracing::instrument(skip_all, fields(uuid = %request.get_ref().uuid))]
    async fn remove_volume_reservation(
        &self,
        request: Request<pb::RemoveVolumeReservationRequest>,
    ) -> Reply<pb::RemoveVolumeReservationResponse> {
        let r = request.get_ref();
        self.api.remove_reservation(&r.uuid, &r.owner_uuid).await?;
        Ok(Response::new(pb::RemoveVolumeReservationResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn list_volume_reservations(
        &self,
        request: Request<pb::ListVolumeReservationsRequest>,
    ) -> Reply<pb::ListVolumeReservationsResponse> {
        let list = self.api.list_reservations(request.get_ref()).await?;
        Ok(Response::new(pb::ListVolumeReservationsResponse {
            reservations: list.iter().map(service::reservation_to_proto).collect(),
        }))
    }
}
