//! cn-agent: the agent on every compute node.
//!
//! * [`backend::ZoneBackend`] turns tasks into instances; [`linux`] makes real
//!   containers, [`sim`] simulates them for scale tests.
//! * [`tasks::TaskQueue`] runs CNAPI's tasks (`machine_create`, ...) one at a time per
//!   instance, each with an id, progress and a final result.
//! * [`sysinfo`] reads the machine; [`heartbeat`] reports it and its instances to CNAPI.
//! * [`service`] is the gRPC task API (`triton.cnagent.v1.CnAgent`); [`agent::start`]
//!   runs it all in-process (tests) or from the `cn-agent` binary.

pub mod agent;
pub mod backend;
pub mod config;
pub mod convert;
pub mod error;
pub mod heartbeat;
pub mod linux;
pub mod service;
pub mod sim;
pub mod sysinfo;
pub mod tasks;

pub use backend::{
    ImageSource, Instance, InstanceSpec, InstanceState, InstanceUpdate, InstanceUsage, IoUsage,
    NicSpec, NicUsage, Rollback, SNAPSHOT_NAME_MAX, Snapshot, TcpUsage, ZoneBackend,
    validate_snapshot_name,
};
pub use error::{Error, Result};
