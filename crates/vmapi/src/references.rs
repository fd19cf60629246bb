//! The things a request names (its owner, image and package here; its networks and
//! server in `service.rs`) looked up in the services that own them. Each problem found
//! is a line naming the request's field; a service that did not answer is marked, so
//! the request is refused as retryable rather than as bad input ([`unusable`]). A
//! request is checked when it is accepted, and a provision again when its job runs.

use serde_json::{Map, Value};
use tonic::transport::Channel;
use tonic::{Response, Status};
use triton_proto::napi::v1::napi_client::NapiClient;
use triton_proto::napi::v1::{ListNetworksRequest, Network};

use triton_common::status::found;

use crate::clients::{Clients, request};
use crate::error::Error;
use crate::params::{ImageParam, PackageParam};
use triton_types::value::struct_to_json;

/// Marks a reference check that failed because the service did not answer.
/// The `internal_metadata` key of a service's own VM (e.g. `nfsvolumestorage`).
pub const SYSTEM_ROLE_KEY: &str = "sdc:system_role";

const UPSTREAM: &str = "\u{0}upstream: ";

/// A failed call to `service` as a problem line: marked as the service's failure unless
/// its code says the request was at fault (not found, invalid, precondition).
pub(crate) fn upstream(service: &'static str, s: Status) -> String {
    let e = Error::upstream(service)(s);
    let callers_fault = matches!(
        e.code(),
        tonic::Code::NotFound | tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
    );
    if !callers_fault {
        format!("{UPSTREAM}{e}")
    } else {
        e.to_string()
    }
}

/// Reference problems found while resolving a request, each naming its field.
pub(crate) fn not_usable(field: &str, what: impl std::fmt::Display) -> String {
    format!("{field}: {what}")
}

/// NAPI's networks that `filter` (a ListNetworks request) matches.
pub(crate) async fn networks_where(
    napi: &NapiClient<Channel>,
    filter: ListNetworksRequest,
    rid: &str,
) -> Result<Vec<Network>, Status> {
    let listed = napi.clone().list_networks(request(filter, rid)).await?;
    Ok(listed.into_inner().networks)
}

/// The error for the reference problems found resolving a request. A service that could
/// not answer is not the caller's fault: that is said as retryable
/// (`ServiceUnavailable`) rather than as bad input.
pub(crate) fn unusable(problems: Vec<String>) -> Error {
    match problems.iter().find(|p| p.starts_with(UPSTREAM)) {
        Some(p) => Error::Upstream {
            service: "vmapi",
            name: "ServiceUnavailable".into(),
            message: p.trim_start_matches(UPSTREAM).to_string(),
            code: tonic::Code::Unavailable,
        },
        None => Error::Validation(problems),
    }
}

/// A request refused for one problem with `field`.
pub(crate) fn refused<T>(field: &str, what: impl std::fmt::Display) -> Result<T, Vec<String>> {
    Err(vec![not_usable(field, what)])
}

/// The answer of a look-up made to check a request: a thing that does not exist is a
/// problem with `field`, any other failure is `service`'s.
pub(crate) async fn looked_up<T>(
    call: impl Future<Output = Result<Response<T>, Status>>,
    service: &'static str,
    field: &str,
    missing: impl FnOnce() -> String,
) -> Result<T, Vec<String>> {
    match found(call.await) {
        Ok(Some(answer)) => Ok(answer),
        Ok(None) => refused(field, missing()),
        Err(s) => Err(vec![upstream(service, s)]),
    }
}

impl Clients {
    /// The owner exists and may provision (when UFDS is configured).
    pub async fn check_owner(&self, owner: &str, rid: &str) -> Result<(), Vec<String>> {
        let Some(mut ufds) = self.ufds.clone() else {
            return Ok(());
        };
        let get = triton_proto::ufds::v1::GetAccountRequest {
            account: owner.to_string(),
        };
        let account = looked_up(
            ufds.get_account(request(get, rid)),
            "ufds",
            "owner_uuid",
            || format!("account {owner} does not exist"),
        )
        .await?;
        if !account.approved_for_provisioning {
            let login = account.login;
            return refused(
                "owner_uuid",
                format!("account {login} ({owner}) is not approved for provisioning"),
            );
        }
        Ok(())
    }

    /// The image, active and available to `owner`, as a job takes it (when IMGAPI is
    /// configured; else only its uuid). A `system` VM (one with
    /// `internal_metadata["sdc:system_role"]`, which only the internal services set, e.g.
    /// VolAPI's storage VMs on the operator's private `nfsserver` image) may use any
    /// active image, as Triton's VMAPI does not check an image's owner at all.
    pub async fn resolve_image(
        &self,
        image_uuid: &str,
        owner: &str,
        system: bool,
        rid: &str,
    ) -> Result<ImageParam, Vec<String>> {
        let Some(mut imgapi) = self.imgapi.clone() else {
            return Ok(ImageParam {
                uuid: image_uuid.to_string(),
                ..Default::default()
            });
        };
        let get = triton_proto::imgapi::v1::ImageRequest {
            uuid: image_uuid.to_string(),
            account: None,
        };
        let image = looked_up(
            imgapi.get_image(request(get, rid)),
            "imgapi",
            "image_uuid",
            || format!("image {image_uuid} does not exist"),
        )
        .await?;
        if image.state != "active" {
            let state = &image.state;
            return refused(
                "image_uuid",
                format!("image {image_uuid} is {state}, not active"),
            );
        }
        if !(system || image.public || image.owner == owner || image.acl.iter().any(|a| a == owner))
        {
            return refused(
                "image_uuid",
                format!("image {image_uuid} is not available to owner {owner}"),
            );
        }
        let traits: Map<String, Value> = image
            .traits
            .iter()
            .map(|(k, v)| {
                let value = match v.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    other => Value::String(other.to_string()),
                };
                (k.clone(), value)
            })
            .collect();
        Ok(ImageParam {
            uuid: image.uuid,
            traits_json: if traits.is_empty() {
                String::new()
            } else {
                Value::Object(traits).to_string()
            },
            image_size: image.image_size.unwrap_or(0),
        })
    }

    /// The package's allocation figures and the sizes it gives the VM.
    pub async fn resolve_package(
        &self,
        billing_id: Option<&str>,
        owner: &str,
        rid: &str,
    ) -> Result<Option<(PackageParam, triton_proto::papi::v1::Package)>, Vec<String>> {
        let Some(billing_id) = billing_id else {
            return Ok(None);
        };
        let Some(mut papi) = self.papi.clone() else {
            return refused("billing_id", "packages are not available (no papi_url)");
        };
        let get = triton_proto::papi::v1::GetPackageRequest {
            uuid: billing_id.to_string(),
            owner_uuids: vec![owner.to_string()],
        };
        let package = looked_up(
            papi.get_package(request(get, rid)),
            "papi",
            "billing_id",
            || format!("package {billing_id} does not exist"),
        )
        .await?;
        if !package.active {
            let name = &package.name;
            return refused(
                "billing_id",
                format!("package {billing_id} ({name}) is not active"),
            );
        }
        let param = PackageParam {
            uuid: package.uuid.clone(),
            max_physical_memory: package.max_physical_memory,
            quota: package.quota,
            cpu_cap: package.cpu_cap.unwrap_or(0),
            traits_json: package
                .traits
                .as_ref()
                .filter(|t| !t.fields.is_empty())
                .map(|t| Value::Object(struct_to_json(t)).to_string())
                .unwrap_or_default(),
            alloc_server_spread: package.alloc_server_spread.clone(),
        };
        Ok(Some((param, package)))
    }
}
