//! CloudAPI's configuration: a TOML file, every key overridable by `CLOUDAPI_<KEY>`
//! (see [`triton_common::config`]).

use serde::{Deserialize, Serialize};

/// Default plain-HTTP listen address (Triton's CloudAPI serves HTTPS on 443 behind its
/// own haproxy; plain HTTP on 8080 is for local use and tests).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default datacenter name, as CoaL's.
pub const DEFAULT_DATACENTER: &str = "coal";
/// Default backend addresses: each service's default gRPC port on this machine.
pub const DEFAULT_UFDS_URL: &str = "http://127.0.0.1:1390";
pub const DEFAULT_PAPI_URL: &str = "http://127.0.0.1:2022";
pub const DEFAULT_NAPI_URL: &str = "http://127.0.0.1:2023";
pub const DEFAULT_IMGAPI_URL: &str = "http://127.0.0.1:2024";
pub const DEFAULT_VMAPI_URL: &str = "http://127.0.0.1:2025";
pub const DEFAULT_CNAPI_URL: &str = "http://127.0.0.1:2030";
/// Triton's allowed clock skew for signed requests, in seconds.
pub const DEFAULT_CLOCK_SKEW_SECS: u64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Plain HTTP listen address, host:port (`CLOUDAPI_LISTEN`); port 0 picks a free
    /// one; empty: no plain HTTP.
    pub listen: String,
    /// HTTPS listen address (`CLOUDAPI_TLS_LISTEN`); used when `tls_cert` and `tls_key`
    /// are set. Port 0 picks a free one.
    pub tls_listen: String,
    /// PEM certificate chain file for HTTPS (`CLOUDAPI_TLS_CERT`).
    pub tls_cert: String,
    /// PEM private key file for HTTPS (`CLOUDAPI_TLS_KEY`).
    pub tls_key: String,
    /// This datacenter's name (`Triton-Datacenter-Name`, ListDatacenters).
    pub datacenter: String,
    /// The URL tenants use to reach this CloudAPI, for ListDatacenters and
    /// ListServices; empty: made from the listen address.
    pub external_url: String,
    /// Other datacenters of the region: name to CloudAPI URL.
    pub datacenters: std::collections::BTreeMap<String, String>,
    /// Extra services for ListServices: name to URL (docker, cmon, ...).
    pub services: std::collections::BTreeMap<String, String>,
    /// gRPC addresses of the services behind CloudAPI (`http://host:port`; `tcp://`
    /// and a bare `host:port` are accepted too).
    pub ufds_url: String,
    pub papi_url: String,
    pub imgapi_url: String,
    pub napi_url: String,
    pub vmapi_url: String,
    pub cnapi_url: String,
    /// Allowed skew between the client's `Date` and ours (seconds).
    pub clock_skew_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.to_string(),
            tls_listen: "127.0.0.1:8443".to_string(),
            tls_cert: String::new(),
            tls_key: String::new(),
            datacenter: DEFAULT_DATACENTER.to_string(),
            external_url: String::new(),
            datacenters: Default::default(),
            services: Default::default(),
            ufds_url: DEFAULT_UFDS_URL.to_string(),
            papi_url: DEFAULT_PAPI_URL.to_string(),
            imgapi_url: DEFAULT_IMGAPI_URL.to_string(),
            napi_url: DEFAULT_NAPI_URL.to_string(),
            vmapi_url: DEFAULT_VMAPI_URL.to_string(),
            cnapi_url: DEFAULT_CNAPI_URL.to_string(),
            clock_skew_secs: DEFAULT_CLOCK_SKEW_SECS,
        }
    }
}

impl Config {
    /// Whether HTTPS is configured.
    pub fn tls_enabled(&self) -> bool {
        !self.tls_cert.is_empty() && !self.tls_key.is_empty()
    }
}

/// `http://host:port` from the forms accepted in the config.
pub fn grpc_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("tcp://") {
        format!("http://{rest}")
    } else if url.starts_with("http://") || url.starts_with("https://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_defaults() {
        let env = vec![
            ("CLOUDAPI_LISTEN".to_string(), "0.0.0.0:80".to_string()),
            (
                "CLOUDAPI_VMAPI_URL".to_string(),
                "tcp://10.0.0.5:2025".to_string(),
            ),
        ];
        let c: Config = triton_common::config::load_from("cloudapi", None, &env).unwrap();
        assert_eq!(c.listen, "0.0.0.0:80");
        assert_eq!(grpc_url(&c.vmapi_url), "http://10.0.0.5:2025");
        assert_eq!(c.ufds_url, DEFAULT_UFDS_URL);
        assert!(!c.tls_enabled());
    }

    #[test]
    fn grpc_urls() {
        assert_eq!(grpc_url("127.0.0.1:1"), "http://127.0.0.1:1");
        assert_eq!(grpc_url("http://a:1"), "http://a:1");
    }
}
