//! VMAPI's side of VolAPI volumes (docs/vmapi.md, "Volumes"): a create names volumes of
//! its owner; the request refuses one that does not exist, and the provision job's
//! `volumes` step finds each `ready`, reserves it for the VM (undone when the job
//! fails) and writes `internal_metadata["sdc:volumes"]`, which the compute node's agent
//! mounts from.

use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;
use triton_proto::volapi::v1 as vol;
use triton_proto::volapi::v1::vol_api_client::VolApiClient;

use crate::clients::request;
use crate::error::{Error, Result};
use crate::params::VolumeParam;

/// The `internal_metadata` key cn-agent mounts volumes from (Triton's).
pub const VOLUMES_KEY: &str = "sdc:volumes";
/// The state in which a volume can be mounted.
pub const READY: &str = "ready";

/// The owner's live (creating or ready) volume named `name`, the ready one first.
pub async fn find_live(
    volapi: &VolApiClient<Channel>,
    owner: &str,
    name: &str,
    rid: &str,
) -> Result<Option<vol::Volume>> {
    let listed = volapi
        .clone()
        .list_volumes(request(
            vol::ListVolumesRequest {
                owner_uuid: owner.to_string(),
                name: name.to_string(),
                ..Default::default()
            },
            rid,
        ))
        .await
        .map_err(Error::upstream("volapi"))?
        .into_inner()
        .volumes;
    let mut live: Vec<vol::Volume> = listed
        .into_iter()
        .filter(|v| v.name == name && matches!(v.state.as_str(), "creating" | READY))
        .collect();
    live.sort_by_key(|v| v.state != READY);
    Ok(live.into_iter().next())
}

/// `VolumeNotFound` naming each missing volume.
pub fn not_found(names: &[&str]) -> Error {
    let list = names.join(", ");
    Error::Upstream {
        service: "volapi",
        name: "VolumeNotFound".into(),
        message: if names.len() == 1 {
            format!("volume {list} not found")
        } else {
            format!("volumes {list} not found")
        },
        code: Code::NotFound,
    }
}

/// `VolumeNotReady`: the volume exists but cannot be mounted yet (or any more).
pub fn not_ready(name: &str, state: &str) -> Error {
    Error::Upstream {
        service: "volapi",
        name: "VolumeNotReady".into(),
        message: format!("volume {name} is {state}, not ready"),
        code: Code::FailedPrecondition,
    }
}

/// Triton's `sdc:volumes` value: the mounts in the order asked, each with the
/// `filesystem_path` of its volume as `nfsvolume`.
pub fn sdc_volumes(mounts: &[VolumeParam], path_of: impl Fn(&str) -> String) -> String {
    let list: Vec<Value> = mounts
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "type": m.kind,
                "mode": m.mode,
                "mountpoint": m.mountpoint,
                "nfsvolume": path_of(&m.name),
            })
        })
        .collect();
    Value::Array(list).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdc_volumes_is_tritons_format() {
        let m = |name: &str, mode: &str, mp: &str| VolumeParam {
            name: name.into(),
            kind: "tritonnfs".into(),
            mode: mode.into(),
            mountpoint: mp.into(),
        };
        let s = sdc_volumes(&[m("v1", "rw", "/data"), m("v2", "ro", "/ro")], |n| {
            format!("10.0.0.{}:/exports/data", &n[1..])
        });
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(
            v,
            json!([
                {"name": "v1", "type": "tritonnfs", "mode": "rw", "mountpoint": "/data", "nfsvolume": "10.0.0.1:/exports/data"},
                {"name": "v2", "type": "tritonnfs", "mode": "ro", "mountpoint": "/ro", "nfsvolume": "10.0.0.2:/exports/data"},
            ])
        );
        assert!(
            not_found(&["a", "b"])
                .to_string()
                .contains("volumes a, b not found")
        );
        assert_eq!(not_found(&["a"]).name(), "VolumeNotFound");
    }
}
