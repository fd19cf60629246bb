//! IMGAPI's configuration: a TOML file, every key overridable by `IMGAPI_<KEY>`
//! (see [`triton_common::config`]).

use serde::{Deserialize, Serialize};
pub use triton_common::service_config::DEFAULT_MORAY_URL;
use triton_common::service_config::ServiceConfig;

/// Default gRPC listen address (one port per service on a CoaL host, next to Moray's
/// 2020 and NAPI's 2023).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2024";
/// Default plain-HTTP listen address, for compute nodes fetching image files with curl.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8081";
/// Where image files live (`<data_dir>/images/<uuid>/file`) and uploads are staged
/// (`<data_dir>/tmp`); the same file system, so finishing an upload is a rename.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/triton/imgapi";
/// IMGAPI's limit on an image file: 20 GiB (`MAX_IMAGE_SIZE`).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 20 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `listen`, `[grpc]`, `moray_url` (holding the `imgapi_images` bucket):
    /// `IMGAPI_LISTEN`, `IMGAPI_GRPC__ALLOW_FROM`, ...
    /// `grpc.request_timeout_ms` is 0 (none) by default here, as an upload lasts as long
    /// as its file takes to arrive.
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// HTTP listen address for `GET /images/:uuid/file` (`IMGAPI_HTTP_LISTEN`).
    pub http_listen: String,
    /// Image files and upload staging (`IMGAPI_DATA_DIR`); created at start-up.
    pub data_dir: String,
    /// Largest image file accepted, bytes (`IMGAPI_MAX_FILE_BYTES`).
    pub max_file_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        let mut service = ServiceConfig::new(DEFAULT_LISTEN);
        // An upload (ImportImage, AddImageFile) is one request as long as the file takes
        // to arrive: no per-request limit by default here.
        service.grpc.request_timeout_ms = 0;
        Config {
            service,
            http_listen: DEFAULT_HTTP_LISTEN.to_string(),
            data_dir: DEFAULT_DATA_DIR.to_string(),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_defaults() {
        let env = [
            ("IMGAPI_DATA_DIR", "/tmp/x"),
            ("IMGAPI_MAX_FILE_BYTES", "10"),
        ];
        let c: Config = triton_common::config::load_env("imgapi", &env).unwrap();
        assert_eq!(c.data_dir, "/tmp/x");
        assert_eq!(c.max_file_bytes, 10);
        assert_eq!(c.http_listen, DEFAULT_HTTP_LISTEN);
        assert_eq!(
            c.service.grpc.request_timeout_ms, 0,
            "no limit on an upload"
        );
    }
}
