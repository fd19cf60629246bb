//! CNAPI: the compute nodes of a datacenter.
//!
//! * [`boot`]: boot parameters (Triton's `/boot/:uuid`), what network-booted nodes boot;
//! * [`model`]: the server record (Moray bucket `cnapi_servers`);
//! * [`capacity`]: provisionable memory as Triton computes it, and the ops-portal figures;
//! * [`allocation`]: the DAPI chain, a pure function with its own tests;
//! * [`status`]: registration, heartbeats and the 11-second staleness rule;
//! * [`fleet`]: the servers and reservations in memory, and the batched reservation writer;
//! * [`store`]: Moray (or memory) behind one trait, every write etag-conditional;
//! * [`service`]: the gRPC API (`triton.cnapi.v1.Cnapi`); [`app::start`] runs it;
//! * [`underlay`]: each node's underlay address registered in NAPI as its underlay NIC.

pub mod allocation;
pub mod app;
pub mod boot;
pub mod capacity;
pub mod config;
pub mod error;
pub mod fleet;
pub mod model;
pub mod service;
pub mod status;
pub mod store;
pub mod underlay;
pub mod watch;

pub use error::{Error, Result};
