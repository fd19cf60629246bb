//! The caller's side of every endpoint: [`Tenant`] (the shared state and the
//! authenticated caller, one extractor) and the look-ups of what the caller may reach.
//! Whatever the caller may not see answers exactly as what does not exist.

use std::future::Future;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::StatusCode;
use http::request::Parts;
use triton_proto::imgapi::v1 as imgapi;
use triton_proto::napi::v1 as napi;
use triton_proto::napi::v1::napi_client::NapiClient;
use triton_proto::papi::v1 as papi;
use triton_proto::vmapi::v1 as vmapi;
use triton_proto::vmapi::v1::vmapi_client::VmapiClient;

use super::{Answer, found, images, is_uuid, networks, volumes};
use crate::AppState;
use crate::auth::Caller;
use crate::backends::Chan;
use crate::error::ApiError;

/// What a handler acts as: the shared state and the authenticated caller.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub app: Arc<AppState>,
    pub caller: Caller,
}

impl FromRequestParts<Arc<AppState>> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let caller = parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::internal("the request was not authenticated"))?;
        Ok(Tenant {
            app: state.clone(),
            caller,
        })
    }
}

/// One thing of the caller's, by id: `not_found` for an id that is not a uuid (no
/// backend is asked), for one the backend does not have, and for one `visible` refuses.
pub async fn lookup<T>(
    service: &'static str,
    id: &str,
    not_found: impl Fn() -> ApiError,
    answer: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    visible: impl FnOnce(&T) -> bool,
) -> Result<T, ApiError> {
    if !is_uuid(id) {
        return Err(not_found());
    }
    let thing = found(answer.await, service, &not_found)?;
    if visible(&thing) {
        Ok(thing)
    } else {
        Err(not_found())
    }
}

impl Tenant {
    /// The caller's account uuid, which owns what it makes.
    pub fn owner(&self) -> &str {
        &self.caller.account.uuid
    }

    /// A VMAPI client, for a call on the caller's behalf.
    pub fn vmapi(&self) -> VmapiClient<Chan> {
        self.app.backends.vmapi.clone()
    }

    /// A NAPI client, for a call on the caller's behalf.
    pub fn napi(&self) -> NapiClient<Chan> {
        self.app.backends.napi.clone()
    }

    /// A VM of the caller's (destroyed ones included), or 404. A volume's storage VM
    /// is not a machine of the caller's ([`volumes::is_volume_storage`]).
    pub async fn machine(&self, id: &str) -> Result<vmapi::Vm, ApiError> {
        let mut client = self.vmapi();
        let request = vmapi::GetVmRequest {
            uuid: id.to_string(),
            owner_uuid: self.owner().to_string(),
        };
        lookup(
            "vmapi",
            id,
            || ApiError::not_found(format!("{id} does not exist")),
            client.get_vm(request),
            |vm| vm.owner_uuid == self.owner() && !volumes::is_volume_storage(vm),
        )
        .await
    }

    /// A VM of the caller's that still exists: a destroyed one answers 410 Gone.
    pub async fn live_machine(&self, id: &str) -> Result<vmapi::Vm, ApiError> {
        let vm = self.machine(id).await?;
        if vm.state == "destroyed" {
            return Err(ApiError::new(
                StatusCode::GONE,
                "ResourceNotFound",
                format!("{id} has been deleted"),
            ));
        }
        Ok(vm)
    }

    /// A network the caller may use, or 404.
    pub async fn network(&self, id: &str) -> Result<napi::Network, ApiError> {
        let mut client = self.napi();
        let request = napi::GetNetworkRequest {
            uuid: id.to_string(),
        };
        lookup(
            "napi",
            id,
            || ApiError::not_found(format!("network {id} does not exist")),
            client.get_network(request),
            |n| networks::usable_by(n, self.owner()),
        )
        .await
    }

    /// A network a request names for the caller to use: one it may not use is an
    /// invalid argument (`refused`), not a 404.
    pub async fn network_to_use(
        &self,
        id: &str,
        refused: impl FnOnce() -> String,
    ) -> Result<napi::Network, ApiError> {
        self.network(id).await.map_err(|e| {
            if e.status == StatusCode::NOT_FOUND {
                ApiError::invalid_argument(refused())
            } else {
                e
            }
        })
    }

    /// An image visible to the caller, or 404.
    pub async fn image(&self, id: &str) -> Result<imgapi::Image, ApiError> {
        let mut client = self.app.backends.imgapi.clone();
        let request = imgapi::ImageRequest {
            uuid: id.to_string(),
            account: Some(self.owner().to_string()),
        };
        lookup(
            "imgapi",
            id,
            || ApiError::not_found(format!("Image {id} does not exist")),
            client.get_image(request),
            |i| images::visible_to(i, self.owner()),
        )
        .await
    }

    /// A package by uuid or name, visible to the caller. By name, the highest active
    /// version wins.
    pub async fn package(&self, id: &str) -> Result<papi::Package, ApiError> {
        let not_found = || ApiError::not_found(format!("Package {id} does not exist"));
        let mut client = self.app.backends.papi.clone();
        if is_uuid(id) {
            let request = papi::GetPackageRequest {
                uuid: id.to_string(),
                owner_uuids: vec![self.owner().to_string()],
            };
            return found(client.get_package(request).await, "papi", not_found);
        }
        let request = papi::ListPackagesRequest {
            name: id.replace('*', ""),
            visible_to: self.owner().to_string(),
            active: Some(true),
            ..Default::default()
        };
        let mut packages = client.list_packages(request).await.answer("papi")?.packages;
        packages.sort_by_key(|p| version_key(&p.version));
        packages.pop().ok_or_else(not_found)
    }
}

/// Semver-ish ordering of package versions ("1.10.0" after "1.9.0").
fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}
