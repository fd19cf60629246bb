//! rollback_snapshot: the VM rolled back to one of its snapshots on its server.

use super::saga::{Saga, step};
use super::steps::{CHECK, RECORD_SNAPSHOT};

pub(super) static SAGA: Saga = Saga::new(&[
    CHECK,
    step!("machine_rollback_snapshot", Task, snapshot_task),
    RECORD_SNAPSHOT,
]);
