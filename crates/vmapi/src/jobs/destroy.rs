//! destroy: the instance destroyed on its server, the VM's NICs and allocation
//! released.

use super::saga::{Saga, step};
use super::steps::{CHECK, RECORD, RELEASE_ALLOCATION, RELEASE_NICS};

pub(super) static SAGA: Saga = Saga::new(&[
    CHECK,
    step!("machine_destroy", Task, machine_destroy),
    RELEASE_NICS,
    RELEASE_ALLOCATION,
    RECORD,
]);
