//! sdcadm: Triton's operator CLI. Everything it does starts from `deploy/services.toml`,
//! the one description of a deployment ([`deploy`]):
//!
//! * [`coal`]: CoaL, a whole datacenter as processes on this machine;
//! * [`images`]: a zone image (tarball + IMGAPI manifest) per service;
//! * [`compose`]: writes `deploy/docker-compose.yml`.

pub mod coal;
pub mod compose;
pub mod deploy;
pub mod error;
pub mod images;
pub mod tar;

pub use error::Error;
