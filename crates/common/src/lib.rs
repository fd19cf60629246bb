//! What every Triton service shares: config loading ([`config`]), structured logs and
//! traces ([`telemetry`]), gRPC server start-up with health and reflection ([`grpc`]),
//! graceful shutdown ([`shutdown`]), the mapping of errors to gRPC statuses
//! ([`status`]) and RFC 3339 timestamps ([`time`]).

pub mod config;
pub mod field_error;
pub mod grpc;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod time;
