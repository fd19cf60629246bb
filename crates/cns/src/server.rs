//! The admin gRPC API (`triton.cns.v1.Cns`, proto/cns.proto): decodes each request and
//! calls `app.rs`.

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

triton_common::grpc_handlers! {
    impl CnsApi for Cns;
    handlers {
        get_vm_names(pb::GetVmNamesRequest) -> pb::GetVmNamesResponse [] |cns, r| {
            let bad: Vec<FieldError> = r
                .uuids
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
            let vms = cns
                .vm_names(&r.uuids)
                .into_iter()
                .map(|(uuid, n)| pb::VmNames {
                    uuid,
                    names: n.names,
                    last_visit_ms: n.last_visit_ms,
                })
                .collect();
            pb::GetVmNamesResponse { vms }
        };

        list_zones(pb::ListZonesRequest) -> pb::ListZonesResponse [] |cns, _| {
            let zones = cns
                .zones()
                .snapshot()
                .zones
                .values()
                .map(|z| pb::ZoneInfo {
                    name: model::text(&z.origin),
                    serial: z.serial,
                })
                .collect();
            pb::ListZonesResponse { zones }
        };

        list_peers(pb::ListPeersRequest) -> pb::ListPeersResponse [] |cns, _| pb::ListPeersResponse {
            peers: cns.peers().all().into_iter().map(|(a, p)| peer(a, p)).collect(),
        };

        delete_peer(pb::DeletePeerRequest) -> pb::DeletePeerResponse [] |cns, r| {
            cns.delete_peer(&r.address)?;
            pb::DeletePeerResponse {}
        };

        get_config(pb::GetConfigRequest) -> pb::Config [] |cns, _| cns.settings().to_proto();

        update_config(pb::UpdateConfigRequest) -> pb::Config [] |cns, r| {
            let Some(config) = r.config else {
                return Err(Error::Invalid(vec![FieldError::missing("config")]).into());
            };
            cns.update_config(Settings::from_proto(config)).await?.to_proto()
        };

        suffixes_for_vm(pb::SuffixesForVmRequest) -> pb::SuffixesForVmResponse [] |cns, r| {
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
            pb::SuffixesForVmResponse {
                suffixes: cns.suffixes_for_vm(&r.owner_uuid, &r.networks),
            }
        };
    }
}
