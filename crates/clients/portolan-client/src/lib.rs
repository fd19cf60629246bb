//! portolan-client: what Portolan shares with the services around it.
//!
//! - [`buckets`]: the three Moray buckets behind fabrics. NAPI writes them, in the same
//!   batch as the NIC (or underlay NIC) they follow; Portolan only reads them (and
//!   deletes drained log entries). Shapes as Triton's `sdc-portolan-moray` has them.
//! - [`svp`]: the SVP wire protocol's frames (header, ops, statuses, bodies), encoded
//!   and decoded without panics under a 1 MiB frame limit.
//! - [`client`]: the compute node's SVP client (tokio): PING, VL2, VL3, LOG, LOG_RM.

#![deny(missing_docs)]

pub mod buckets;
pub mod client;
pub mod svp;
