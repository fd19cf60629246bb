//! CloudAPI's configuration: a TOML file, every key overridable by `CLOUDAPI_<KEY>`
//! (see [`triton_common::config`]).

use serde::{Deserialize, Serialize};
use triton_common::problems::Problems;

/// Default plain-HTTP listen address (Triton's CloudAPI serves HTTPS on 443 behind its
/// own haproxy; plain HTTP on 8080 is for local use and tests, and only ever on a
/// loopback address: see [`Config::check`]).
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
    /// one; empty: no plain HTTP. Only a loopback address (127.0.0.0/8, ::1, localhost):
    /// tenants reach CloudAPI over TLS only.
    pub listen: String,
    /// HTTPS listen address (`CLOUDAPI_TLS_LISTEN`); port 0 picks a free one; empty: no
    /// HTTPS. Served with `tls_cert` and `tls_key` when they are set, else with a
    /// self-signed certificate CloudAPI makes in `data_dir` (when that is set).
    pub tls_listen: String,
    /// PEM certificate chain file for HTTPS (`CLOUDAPI_TLS_CERT`).
    pub tls_cert: String,
    /// PEM private key file for HTTPS (`CLOUDAPI_TLS_KEY`).
    pub tls_key: String,
    /// CloudAPI's own state (`CLOUDAPI_DATA_DIR`): with no `tls_cert`, its self-signed
    /// certificate, `tls/cert.pem` and `tls/key.pem` (0600), made at the first start and
    /// kept across restarts. Empty: none (no HTTPS without `tls_cert`).
    pub data_dir: String,
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
    /// CNS's gRPC admin API (`CLOUDAPI_CNS_URL`), asked for the machines' `dns_names`
    /// when the account has `triton_cns_enabled`. Empty (the default): no CNS, and
    /// machines carry no `dns_names`.
    pub cns_url: String,
    /// VolAPI's gRPC API (`CLOUDAPI_VOLAPI_URL`), behind `/:login/volumes`,
    /// `/:login/volumesizes` and CreateMachine's `volumes`. Empty (the default): this
    /// datacenter has no volumes, and those answer `VolumesNotEnabled` (501).
    pub volapi_url: String,
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
            data_dir: String::new(),
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
            cns_url: String::new(),
            volapi_url: String::new(),
            clock_skew_secs: DEFAULT_CLOCK_SKEW_SECS,
        }
    }
}

impl Config {
    /// Whether a certificate is configured (`tls_cert` and `tls_key`).
    pub fn tls_enabled(&self) -> bool {
        !self.tls_cert.is_empty() && !self.tls_key.is_empty()
    }

    /// Whether HTTPS is served: a `tls_listen` and a certificate, configured or
    /// self-signed in `data_dir`.
    pub fn serves_tls(&self) -> bool {
        !self.tls_listen.is_empty() && (self.tls_enabled() || !self.data_dir.is_empty())
    }

    /// Every problem at once, each naming its key and the rule.
    pub fn check(&self) -> Result<(), String> {
        let mut problems = Problems::new();
        problems.when(
            !self.listen.is_empty() && !is_loopback(&self.listen),
            format_args!(
                "listen: plain HTTP is served only on a loopback address (127.0.0.0/8, ::1, \
                 localhost) or not at all (empty), not on {:?}; tenants reach CloudAPI over \
                 TLS (tls_listen)",
                self.listen
            ),
        );
        problems.when(
            self.tls_cert.is_empty() != self.tls_key.is_empty(),
            "tls_cert, tls_key: give both (a certificate and its key) or neither",
        );
        problems.when(
            self.listen.is_empty() && !self.serves_tls(),
            "tls_listen: with no plain listen, HTTPS needs tls_listen and a certificate \
             (tls_cert and tls_key, or data_dir for a self-signed one)",
        );
        problems.into_result()
    }
}

/// `host:port` whose host is a loopback address or `localhost`.
fn is_loopback(addr: &str) -> bool {
    if let Ok(a) = addr.parse::<std::net::SocketAddr>() {
        return a.ip().is_loopback();
    }
    matches!(addr.rsplit_once(':'), Some(("localhost", port)) if port.parse::<u16>().is_ok())
}

/// `http://host:port` from the forms accepted in the config.
pub fn grpc_url(url: &str) -> String {
    triton_common::channel::ChannelBuilder::new(url).url()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_defaults() {
        let env = [
            ("CLOUDAPI_LISTEN", "0.0.0.0:80"),
            ("CLOUDAPI_VMAPI_URL", "tcp://10.0.0.5:2025"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let c: Config = triton_common::config::load_from("cloudapi", None, &env).unwrap();
        assert_eq!(c.listen, "0.0.0.0:80");
        assert_eq!(grpc_url(&c.vmapi_url), "http://10.0.0.5:2025");
        assert_eq!(c.ufds_url, DEFAULT_UFDS_URL);
        assert!(!c.tls_enabled());
        let e = c.check().unwrap_err();
        assert!(e.starts_with("listen: "), "{e}");
        assert!(e.contains("loopback"), "{e}");
    }

    #[test]
    fn plain_http_only_on_loopback() {
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.2:0",
            "[::1]:8080",
            "localhost:8080",
            "",
        ] {
            let c = Config {
                listen: ok.into(),
                data_dir: "/var/lib/triton/cloudapi".into(),
                ..Default::default()
            };
            assert!(c.check().is_ok(), "{ok}: {:?}", c.check());
        }
        for bad in [
            "0.0.0.0:8080",
            "10.99.99.40:8080",
            "[::]:8080",
            "cloudapi:8080",
        ] {
            let c = Config {
                listen: bad.into(),
                ..Default::default()
            };
            let e = c.check().unwrap_err();
            assert!(
                e.starts_with("listen: ") && e.contains("loopback"),
                "{bad}: {e}"
            );
        }
        // Neither plain HTTP nor HTTPS: nothing to serve.
        let c = Config {
            listen: String::new(),
            ..Default::default()
        };
        assert!(c.check().unwrap_err().contains("tls_listen"));
        let c = Config {
            tls_cert: "/c.pem".into(),
            ..Default::default()
        };
        assert!(c.check().unwrap_err().contains("tls_key"));
    }

    #[test]
    fn grpc_urls() {
        assert_eq!(grpc_url("127.0.0.1:1"), "http://127.0.0.1:1");
        assert_eq!(grpc_url("http://a:1"), "http://a:1");
    }
}
