//! The followers that fill the [`Inventory`]: VMAPI's `WatchVms` and CNAPI's
//! `WatchServers`, "snapshot then follow" ([`triton_common::follow`]): from position 0
//! the snapshot's pages are gathered and replace what was known at the marker; after a
//! dropped stream the follower resumes at the last position it applied; a resync answer
//! sends it back to 0. CMon keeps nothing on disk: a restart starts with the snapshot.

use std::convert::Infallible;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use triton_common::follow::{Apply, follow};
use triton_proto::cnapi::v1 as cnapi;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;
use triton_proto::vmapi::v1 as vmapi;
use triton_proto::vmapi::v1::vmapi_client::VmapiClient;

use crate::inventory::Inventory;

/// One table of the inventory, as its `reset_*` and `put_*` methods keep it.
struct Table<R: 'static> {
    inventory: Arc<Inventory>,
    reset: fn(&Inventory, &[R]),
    put: fn(&Inventory, &str, Option<&R>),
}

impl<R: Send + Sync + 'static> Apply<R> for Table<R> {
    type Error = Infallible;

    async fn reset(&mut self, records: Vec<R>) -> Result<(), Infallible> {
        (self.reset)(&self.inventory, &records);
        Ok(())
    }

    async fn change(&mut self, key: &str, record: Option<&R>) -> Result<(), Infallible> {
        (self.put)(&self.inventory, key, record);
        Ok(())
    }
}

/// Follows VMAPI's VMs and CNAPI's servers into `inventory`, each in a task of its own,
/// until `shutdown`.
pub fn spawn(
    vmapi: VmapiClient<Channel>,
    cnapi: CnapiClient<Channel>,
    inventory: Arc<Inventory>,
    shutdown: &CancellationToken,
) -> [JoinHandle<()>; 2] {
    let vms = Table {
        inventory: inventory.clone(),
        reset: Inventory::reset_vms,
        put: Inventory::put_vm,
    };
    let servers = Table {
        inventory,
        reset: Inventory::reset_nodes,
        put: Inventory::put_node,
    };
    [
        tokio::spawn(follow::<vmapi::WatchVmsRequest, _>(
            "vmapi WatchVms",
            vmapi,
            vms,
            shutdown.clone(),
        )),
        tokio::spawn(follow::<cnapi::WatchServersRequest, _>(
            "cnapi WatchServers",
            cnapi,
            servers,
            shutdown.clone(),
        )),
    ]
}
