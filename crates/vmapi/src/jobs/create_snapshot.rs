//! create_snapshot: a snapshot of the VM taken on its server. One that could not be
//! taken is left `failed` (it can be deleted, or its name used again).

use super::saga::{Saga, step};
use super::steps::{CHECK, RECORD_SNAPSHOT};

pub(super) static SAGA: Saga = Saga::new(&[
    CHECK,
    step!("machine_create_snapshot", Task, snapshot_task),
    RECORD_SNAPSHOT,
])
.with_on_failure(|s, c| Box::pin(s.snapshot_failed(c)));
