//! The gRPC face of PAPI: thin handlers that call [`Papi`] and convert to wire types.

use triton_proto::papi::v1 as proto;
use triton_proto::papi::v1::papi_server::{Papi as PapiRpc, PapiServer};

use crate::package::{self, PACKAGE_FORMAT_VERSION, Package};
use crate::service::Papi;

/// The tonic service for `papi`.
pub fn service(papi: Papi) -> PapiServer<Handler> {
    PapiServer::new(Handler { papi })
}

#[derive(Debug, Clone)]
pub struct Handler {
    papi: Papi,
}

triton_common::grpc_handlers! {
    impl PapiRpc for Handler;
    handlers {
        create_package(proto::CreatePackageRequest) -> proto::Package [uuid = uuid]
            |h, r| {
                let pkg = h.papi.create(r).await?;
                tracing::info!(uuid = %pkg.uuid, name = %pkg.name, version = %pkg.version, "package created");
                to_proto(pkg)
            };
        get_package(proto::GetPackageRequest) -> proto::Package [uuid = uuid]
            |h, r| to_proto(h.papi.get(&r.uuid, &r.owner_uuids).await?);
        list_packages(proto::ListPackagesRequest) -> proto::ListPackagesResponse []
            |h, r| {
                let (packages, total) = h.papi.list(&r).await?;
                proto::ListPackagesResponse {
                    packages: packages.into_iter().map(to_proto).collect(),
                    total,
                }
            };
        update_package(proto::UpdatePackageRequest) -> proto::Package [uuid = uuid]
            |h, r| {
                let pkg = h.papi.update(r).await?;
                tracing::info!("package updated");
                to_proto(pkg)
            };
        delete_package(proto::DeletePackageRequest) -> proto::DeletePackageResponse [uuid = uuid]
            |h, r| {
                h.papi.delete(&r.uuid, r.force).await?;
                tracing::info!("package deleted");
                proto::DeletePackageResponse {}
            };
    }
}

pub fn to_proto(p: Package) -> proto::Package {
    proto::Package {
        v: PACKAGE_FORMAT_VERSION,
        uuid: p.uuid,
        name: p.name,
        version: p.version,
        active: p.active,
        max_physical_memory: p.max_physical_memory,
        max_swap: p.max_swap,
        quota: p.quota,
        cpu_cap: p.cpu_cap,
        vcpus: p.vcpus,
        max_lwps: p.max_lwps,
        zfs_io_priority: p.zfs_io_priority,
        fss: p.fss,
        default: p.default,
        group: p.group.unwrap_or_default(),
        description: p.description.unwrap_or_default(),
        common_name: p.common_name.unwrap_or_default(),
        owner_uuids: p.owner_uuids.unwrap_or_default(),
        networks: p.networks.unwrap_or_default(),
        traits: p.traits.as_ref().map(triton_types::value::struct_from_json),
        billing_tag: p.billing_tag.unwrap_or_default(),
        brand: p.brand.unwrap_or_default(),
        os: p.os.unwrap_or_default(),
        parent: p.parent.unwrap_or_default(),
        min_platform: p.min_platform.unwrap_or_default().into_iter().collect(),
        flexible_disk: p.flexible_disk.unwrap_or(false),
        disks: p
            .disks
            .unwrap_or_default()
            .iter()
            .map(package::disk_from_json)
            .collect(),
        alloc_server_spread: p.alloc_server_spread.unwrap_or_default(),
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}
