//! WatchVms: the VMs' change feed, Moray's snapshot then follow
//! ([`MorayClient::follow`]) over the `vmapi_vms` bucket, each record mapped to the public
//! `Vm` that GetVm and ListVms return. The position is Moray's change feed sequence.

use moray_client::filter::Filter;
use moray_client::{FeedObject, FeedRecords, MorayClient, MorayError, WatchStream};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use triton_proto::vmapi::v1 as pb;

use crate::error::Error;
use crate::model::VmRecord;
use crate::store::VMS_BUCKET;
use crate::validate::Checker;

/// VMs per snapshot message: a page stays far below gRPC's 4 MiB message limit even
/// with large metadata.
pub const PAGE_VMS: usize = 100;

pub type WatchVmsStream = WatchStream<pb::WatchVmsEvent>;

/// Serves WatchVms calls until shutdown.
pub struct Watch {
    moray: MorayClient,
    shutdown: CancellationToken,
}

/// WatchVms's records, for one watcher (`owner`: only that owner's VMs).
struct VmRecords {
    owner: Option<String>,
}

impl FeedRecords for VmRecords {
    type Event = pb::WatchVmsEvent;
    const PAGE: usize = PAGE_VMS;

    async fn record(&self, object: FeedObject) -> Result<Option<pb::Vm>, Status> {
        let uuid = object.key;
        let vm: VmRecord = serde_json::from_value(object.value)
            .map_err(|e| Error::Internal(format!("stored VM {uuid} does not parse: {e}")))?;
        Ok(self
            .owner
            .as_deref()
            .is_none_or(|o| vm.owner_uuid == o)
            .then(|| vm.to_pb()))
    }

    fn error(&self, e: MorayError) -> Status {
        Error::moray("follow the VMs' change feed")(e).into()
    }
}

impl Watch {
    pub fn new(moray: MorayClient, shutdown: CancellationToken) -> Watch {
        Watch { moray, shutdown }
    }

    /// Starts following; a failure before the first event is the call's error.
    pub async fn watch_vms(&self, req: pb::WatchVmsRequest) -> Result<WatchVmsStream, Status> {
        let mut c = Checker::default();
        let owner = c.opt_uuid("owner_uuid", &req.owner_uuid);
        c.finish()?;
        let filter = owner
            .as_ref()
            .map(|o| Filter::eq("owner_uuid", o).to_string());
        let feed = self
            .moray
            .follow(VMS_BUCKET, filter.as_deref(), req.position);
        moray_client::serve_follow(
            feed,
            VmRecords { owner },
            self.shutdown.clone().cancelled_owned(),
        )
        .await
    }
}
