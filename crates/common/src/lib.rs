//! What every Triton service shares: config loading ([`config`]), structured logs and
//! traces ([`telemetry`]), gRPC server start-up with health and reflection ([`grpc`]),
//! graceful shutdown ([`shutdown`]) and the mapping of errors to gRPC statuses
//! ([`status`]).

pub mod config;
pub mod grpc;
pub mod shutdown;
pub mod status;
pub mod telemetry;
