//! What every Triton service shares: config loading ([`config`]), structured logs and
//! traces ([`telemetry`]), gRPC server start-up with health and reflection ([`grpc`]),
//! graceful shutdown ([`shutdown`]), the `main` every service binary shares and the
//! error-chain printer ([`service`]), the mapping of errors to gRPC statuses
//! ([`status`]), the REST APIs' error body ([`rest`]), RFC 3339 timestamps ([`time`])
//! and the allocator every binary uses ([`global_allocator!`]).

#![deny(missing_docs)]

pub mod channel;
pub mod config;
pub mod config_text;
pub mod copy_fields;
pub mod field_error;
mod field_error_constructors;
pub mod filter;
pub mod follow;
pub mod grpc;
mod grpc_handlers;
pub mod listen;
pub mod pairs;
pub mod periodic;
pub mod postgres;
pub mod problems;
pub mod rest;
pub mod rng;
pub mod running;
pub mod service;
pub mod service_config;
pub mod set_given;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod text_serde;
pub mod time;
pub mod tls;
pub mod tool;

#[doc(hidden)]
pub use mimalloc;

/// Makes mimalloc the process's allocator; each service binary and benchmark invokes it
/// once at its crate root. Under load glibc's malloc and free took about a fifth of the
/// services' CPU (arena locks, consolidation); with mimalloc the sim provisioning rate
/// rose by about a quarter (docs/benchmarks.md). Library crates and tests keep the
/// system allocator, so the fuzz targets can use their sanitizers.
#[macro_export]
macro_rules! global_allocator {
    () => {
        #[global_allocator]
        static GLOBAL_ALLOCATOR: $crate::mimalloc::MiMalloc = $crate::mimalloc::MiMalloc;
    };
}
