//! gRPC clients of the services behind CloudAPI. Channels connect lazily, so CloudAPI
//! starts (and answers `/--ping`) while a backend is still coming up; a call to a
//! backend that is down fails with 503 ServiceUnavailable.

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use triton_common::channel::ChannelBuilder;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;
use triton_proto::imgapi::v1::imgapi_client::ImgapiClient;
use triton_proto::napi::v1::napi_client::NapiClient;
use triton_proto::papi::v1::papi_client::PapiClient;
use triton_proto::ufds::v1::ufds_client::UfdsClient;
use triton_proto::vmapi::v1::vmapi_client::VmapiClient;

use crate::config::Config;
use crate::error::StartError;

/// Carries the caller's trace context to the backend.
pub type Interceptor = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;
pub type Chan = InterceptedService<Channel, Interceptor>;

#[derive(Debug, Clone)]
pub struct Backends {
    pub ufds: UfdsClient<Chan>,
    pub papi: PapiClient<Chan>,
    pub imgapi: ImgapiClient<Chan>,
    pub napi: NapiClient<Chan>,
    pub vmapi: VmapiClient<Chan>,
    pub cnapi: CnapiClient<Chan>,
}

/// A backend's channel with the common defaults: every call CloudAPI makes is a short
/// read or write (state changes are jobs that answer at once).
fn channel(service: &'static str, url: &str) -> Result<Chan, StartError> {
    let channel = ChannelBuilder::new(url)
        .lazy()
        .map_err(|source| StartError::BadUrl { service, source })?;
    let interceptor: Interceptor = triton_common::telemetry::trace_interceptor;
    Ok(InterceptedService::new(channel, interceptor))
}

impl Backends {
    pub fn connect(config: &Config) -> Result<Backends, StartError> {
        Ok(Backends {
            ufds: UfdsClient::new(channel("ufds", &config.ufds_url)?),
            papi: PapiClient::new(channel("papi", &config.papi_url)?),
            imgapi: ImgapiClient::new(channel("imgapi", &config.imgapi_url)?),
            napi: NapiClient::new(channel("napi", &config.napi_url)?),
            vmapi: VmapiClient::new(channel("vmapi", &config.vmapi_url)?),
            cnapi: CnapiClient::new(channel("cnapi", &config.cnapi_url)?),
        })
    }
}
