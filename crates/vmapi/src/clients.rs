//! The generated clients of the APIs VMAPI talks to, on lazy channels: VMAPI starts
//! (and resumes its jobs) whether or not the others are up yet; a call made while one
//! is away fails as retryable and the job step tries again within its deadline.

use std::time::Duration;

use tonic::transport::Channel;
use triton_common::channel::ChannelBuilder;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;
use triton_proto::imgapi::v1::imgapi_client::ImgapiClient;
use triton_proto::napi::v1::napi_client::NapiClient;
use triton_proto::papi::v1::papi_client::PapiClient;
use triton_proto::ufds::v1::ufds_client::UfdsClient;
use triton_proto::volapi::v1::vol_api_client::VolApiClient;

use crate::config::Config;
use crate::error::{Error, Result};

/// Bound of any one call that does not wait on purpose (WaitTask sets its own).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Clients {
    pub cnapi: CnapiClient<Channel>,
    pub napi: Option<NapiClient<Channel>>,
    pub imgapi: Option<ImgapiClient<Channel>>,
    pub papi: Option<PapiClient<Channel>>,
    pub ufds: Option<UfdsClient<Channel>>,
    /// VolAPI, for creates with volumes.
    pub volapi: Option<VolApiClient<Channel>>,
    /// `<base>` of `<base>/images/<uuid>/file`; empty: images must already be on the
    /// servers.
    pub imgapi_file_url: String,
}

/// A lazy channel whose calls set their own bound ([`CALL_TIMEOUT`], or longer for
/// WaitTask), so the channel has none.
fn channel(key: &str, url: &str) -> Result<Channel> {
    ChannelBuilder::new(url)
        .request_timeout(None)
        .lazy()
        .map_err(|e| Error::Config(format!("{key}: {}", triton_common::service::chain(&e))))
}

fn optional(key: &str, url: &str) -> Result<Option<Channel>> {
    if url.is_empty() {
        Ok(None)
    } else {
        channel(key, url).map(Some)
    }
}

impl Clients {
    pub fn from_config(config: &Config) -> Result<Clients> {
        Ok(Clients {
            cnapi: CnapiClient::new(channel("cnapi_url", &config.cnapi_url)?),
            napi: optional("napi_url", &config.napi_url)?.map(NapiClient::new),
            imgapi: optional("imgapi_url", &config.imgapi_url)?.map(ImgapiClient::new),
            papi: optional("papi_url", &config.papi_url)?.map(PapiClient::new),
            ufds: optional("ufds_url", &config.ufds_url)?.map(UfdsClient::new),
            volapi: optional("volapi_url", &config.volapi_url)?.map(VolApiClient::new),
            imgapi_file_url: config.imgapi_file_url.trim_end_matches('/').to_string(),
        })
    }
}

/// A request with VMAPI's call deadline and the caller's request id.
pub fn request<T>(message: T, req_id: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(CALL_TIMEOUT);
    if let Ok(v) = req_id.parse() {
        r.metadata_mut().insert("x-request-id", v);
    }
    triton_common::telemetry::inject(r.metadata_mut());
    r
}
