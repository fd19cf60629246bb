//! delete_snapshot: a snapshot of the VM deleted on its server. One that could not
//! be deleted is left in the state it had before.

use super::saga::{Saga, step};
use super::steps::{CHECK, RECORD_SNAPSHOT};

pub(super) static SAGA: Saga = Saga::new(&[
    CHECK,
    step!("machine_delete_snapshot", Task, snapshot_task),
    RECORD_SNAPSHOT,
])
.with_on_failure(|s, c| Box::pin(s.snapshot_failed(c)));
