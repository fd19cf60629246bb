//! update: the VM's record changed, and the instance on its server where the change
//! touches it.

use super::saga::{Saga, step};
use super::steps::{CHECK, RECORD};

pub(super) static SAGA: Saga =
    Saga::new(&[CHECK, step!("machine_update", Task, machine_update), RECORD]);
