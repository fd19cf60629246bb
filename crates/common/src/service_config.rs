//! The keys every gRPC service that keeps its records in Moray starts its config with:
//! `listen`, `[grpc]` and `moray_url`. A service flattens
//! [`ServiceConfig`] into its own config, so the keys stay at the top of its TOML file
//! and its environment overrides stay `<SERVICE>_LISTEN`, `<SERVICE>_MORAY_URL`, ...:
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use triton_common::service_config::ServiceConfig;
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! #[serde(default)]
//! struct Config {
//!     #[serde(flatten)]
//!     service: ServiceConfig,
//!     verbose: bool,
//! }
//!
//! impl Default for Config {
//!     fn default() -> Self {
//!         Config {
//!             service: ServiceConfig::new("127.0.0.1:2022"),
//!             verbose: false,
//!         }
//!     }
//! }
//!
//! let env = [("PAPI_LISTEN".to_string(), "0.0.0.0:9".to_string())];
//! let c: Config = triton_common::config::load_from("papi", None, &env).unwrap();
//! assert_eq!(c.service.listen, "0.0.0.0:9");
//! assert_eq!(c.service.moray_url, "tcp://127.0.0.1:2020");
//! ```
//!
//! A config with a flattened table cannot use serde's `deny_unknown_fields`; the loader
//! ([`crate::config::load`]) refuses unknown keys itself, naming each.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::grpc::{ServeError, ServerConfig};
use crate::running::Running;

/// Default Moray address, in Triton's `MORAY_URL` form.
pub const DEFAULT_MORAY_URL: &str = "tcp://127.0.0.1:2020";

/// Where a Moray-backed gRPC service listens, who may connect, and its Moray.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// gRPC listen address, host:port (`<SERVICE>_LISTEN`); port 0 picks a free one.
    pub listen: String,
    /// Who may connect, whether reflection is served, and the server's limits (`[grpc]`;
    /// `<SERVICE>_GRPC__ALLOW_FROM` takes comma-separated CIDRs).
    pub grpc: ServerConfig,
    /// Moray to keep the service's records in (`<SERVICE>_MORAY_URL`).
    pub moray_url: String,
}

impl ServiceConfig {
    /// Listening on `listen` (the service's own default port), with the default `[grpc]`
    /// table and Moray.
    pub fn new(listen: &str) -> Self {
        ServiceConfig {
            listen: listen.to_string(),
            grpc: ServerConfig::default(),
            moray_url: DEFAULT_MORAY_URL.to_string(),
        }
    }

    /// Binds `listen` and serves `routes` there under the `[grpc]` limits
    /// ([`crate::grpc::start`]): the address and the server's task.
    pub async fn start<E: Send + 'static>(
        &self,
        routes: Routes,
        services: &'static [&'static str],
        shutdown: CancellationToken,
        map_err: fn(ServeError) -> E,
    ) -> Result<(SocketAddr, JoinHandle<Result<(), E>>), E> {
        crate::grpc::start(
            &self.listen,
            routes,
            services,
            &self.grpc,
            shutdown,
            map_err,
        )
        .await
    }

    /// [`ServiceConfig::start`] where a service's `start` ends: the started service, and
    /// the log line `<name> started` with its address and Moray.
    pub async fn run<E: Send + 'static>(
        &self,
        name: &str,
        routes: Routes,
        services: &'static [&'static str],
        shutdown: CancellationToken,
        map_err: fn(ServeError) -> E,
    ) -> Result<Running<E>, E> {
        let (addr, task) = self.start(routes, services, shutdown, map_err).await?;
        tracing::info!(%addr, moray = %self.moray_url, "{name} started");
        Ok(Running { addr, task })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_from, problems_loading};
    use crate::config_text::load_text;

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(default)]
    struct Conf {
        #[serde(flatten)]
        service: ServiceConfig,
        extra: u32,
    }

    impl Default for Conf {
        fn default() -> Self {
            Conf {
                service: ServiceConfig::new("127.0.0.1:2022"),
                extra: 1,
            }
        }
    }

    #[test]
    fn flattened_keys_load_from_file_and_environment() {
        let c: Conf = load_text(
            "svc",
            "listen = \"0.0.0.0:1\"\nextra = 5\n[grpc]\nreflection = false\n",
            &[
                ("SVC_MORAY_URL", "tcp://10.0.0.5:2020"),
                ("SVC_GRPC__ALLOW_FROM", "10.99.99.0/24"),
            ],
        )
        .unwrap();
        assert_eq!(c.service.listen, "0.0.0.0:1");
        assert_eq!(c.extra, 5);
        assert!(!c.service.grpc.reflection);
        assert_eq!(c.service.moray_url, "tcp://10.0.0.5:2020");
        assert_eq!(c.service.grpc.allow_from.len(), 1);

        let c: Conf = load_from("svc", None, &[]).unwrap();
        assert_eq!(c.service, ServiceConfig::new("127.0.0.1:2022"));
    }

    #[test]
    fn unknown_and_bad_keys_are_named() {
        let problems = problems_loading::<Conf>("svc", "lisen = \"x\"\nmoray_url = 5\n", &[]);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"lisen"), "{problems:?}");
        assert!(keys.contains(&"moray_url"), "{problems:?}");
    }
}
