//! sdcadm: Triton's operator CLI. Everything it does starts from `deploy/services.toml`,
//! the one description of a deployment ([`deploy`]):
//!
//! * [`coal`]: CoaL, a whole datacenter as processes on this machine;
//! * [`images`]: a zone image (tarball + IMGAPI manifest) per service;
//! * [`instances`]: a service's image imported into IMGAPI and provisioned through VMAPI
//!   as a zone, where the service joins the datacenter;
//! * [`compose`]: writes `deploy/docker-compose.yml`;
//! * [`servers`]: the compute nodes (list, setup) and their boot parameters.

pub mod accounts;
pub mod coal;
pub mod compose;
pub mod deploy;
pub mod error;
pub mod images;
pub mod instances;
pub mod servers;
pub mod tar;

pub use error::Error;
