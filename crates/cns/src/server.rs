//! The admin gRPC API (`triton.cns.v1.Cns`, proto/cns.proto): decodes each request and
//! calls `app.rs`.

use tonic::{Request, Response, Status};
use triton_proto::cns::v1 as pb;
use triton_proto::cns::v1::cns_server::{Cns as CnsApi, CnsServer};

use crate::app::Cns;
use crate::config::Settings;
use crate::error::{Error, FieldError};
use crate::model;

pub fn service(cns: Cns) -> CnsServer<Cns> {
    CnsServer::new(cns)
}

fn peer(address: std::net::IpAddr, p: crate::peers::Peer) -> pb::Peer {
    pb::Peer {
        address: address.to_string(),
        serials: p.serials.into_iter().collect(),
        version: p.version,
        using_notify: p.using_notify,
        using_ixfr: p.using_ixfr,
        counters: p.counters.into_iter().collect(),
    }
}

#[tonic::async_trait]
impl CnsApi for Cns {
    async fn get_vm_names(
        &self,
        request: Request<pb::GetVmNamesRequest>,
    ) -> Result<Response<pb::GetVmNamesResponse>, Status> {
        let uuids = request.into_inner().uuids;
        let bad: Vec<FieldError> = uuids
            .iter()
            .enumerate()
            .filter(|(_, u)| !triton_types::id::is_uuid(u))
            .map(|(i, u)| {
                FieldError::invalid(
                    &format!("uuids[{i}]"),
                    format!("must be a uuid (got {u:?})"),
                )
            })
            .collect();
        if !bad.is_empty() {
            return Err(Error::Invalid(bad).into());
        }
        let vms = self
            .vm_names(&uuids)
            .into_iter()
            .map(|(uuid, n)| pb::VmNames {
                uuid,
                names: n.names,
                last_visit_ms: n.last_visit_ms,
            })
            .collect();
        Ok(Response::new(pb::GetVmNamesResponse { vms }))
    }

    async fn list_zones(
        &self,
        _request: Request<pb::ListZonesRequest>,
    ) -> Result<Response<pb::ListZonesResponse>, Status> {
        let zones = self
            .zones()
            .snapshot()
            .zones
            .values()
            .map(|z| pb::ZoneInfo {
                name: model::text(&z.origin),
                serial: z.serial,
            })
            .collect();
        Ok(Response::new(pb::ListZonesResponse { zones }))
    }

    async fn list_peers(
        &self,
        _request: Request<pb::ListPeersRequest>,
    ) -> Result<Response<pb::ListPeersResponse>, Status> {
        let peers = self
            .peers()
            .all()
            .into_iter()
            .map(|(a, p)| peer(a, p))
            .collect();
        Ok(Response::new(pb::ListPeersResponse { peers }))
    }

    async fn delete_peer(
        &self,
        request: Request<pb::DeletePeerRequest>,
    ) -> Result<Response<pb::DeletePeerResponse>, Status> {
        self.delete_peer(&request.into_inner().address)?;
        Ok(Response::new(pb::DeletePeerResponse {}))
    }

    async fn get_config(
        &self,
        _request: Request<pb::GetConfigRequest>,
    ) -> Result<Response<pb::Config>, Status> {
        Ok(Response::new(self.settings().to_proto()))
    }

    async fn update_config(
        &self,
        request: Request<pb::UpdateConfigRequest>,
    ) -> Result<Response<pb::Config>, Status> {
        let Some(config) = request.into_inner().config else {
            return Err(Error::Invalid(vec![FieldError::missing("config")]).into());
        };
        let settings = self.update_config(Settings::from_proto(config)).await?;
        Ok(Response::new(settings.to_proto()))
    }

    async fn suffixes_for_vm(
        &self,
        request: Request<pb::SuffixesForVmRequest>,
    ) -> Result<Response<pb::SuffixesForVmResponse>, Status> {
        let r = request.into_inner();
        let mut bad = Vec::new();
        if !triton_types::id::is_uuid(&r.owner_uuid) {
            bad.push(FieldError::invalid(
                "owner_uuid",
                format!("must be a uuid (got {:?})", r.owner_uuid),
            ));
        }
        for (i, n) in r.networks.iter().enumerate() {
            if !triton_types::id::is_uuid(n) {
                bad.push(FieldError::invalid(
                    &format!("networks[{i}]"),
                    format!("must be a uuid (got {n:?})"),
                ));
            }
        }
        if !bad.is_empty() {
            return Err(Error::Invalid(bad).into());
        }
        let suffixes = self.suffixes_for_vm(&r.owner_uuid, &r.networks);
        Ok(Response::new(pb::SuffixesForVmResponse { suffixes }))
    }
}
