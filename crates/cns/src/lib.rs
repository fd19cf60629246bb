//! CNS: authoritative DNS for every instance and service (docs/cns.md).

pub mod dns;
pub mod peers;
pub mod zone;
