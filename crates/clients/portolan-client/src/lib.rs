//! portolan-client: what Portolan shares with the services around it.
//!
//! - [`buckets`]: the three Moray buckets behind fabrics. NAPI writes them, in the same
//!   batch as the NIC (or underlay NIC) they follow; Portolan only reads them (and
//!   deletes drained log entries). Shapes as Triton's `sdc-portolan-moray` has them.
//!
//! The SVP codec and the compute node's client come next to these.

#![deny(missing_docs)]

pub mod buckets;
