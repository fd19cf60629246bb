//! gRPC clients of the services behind CloudAPI. Channels connect lazily, so CloudAPI
//! starts (and answers `/--ping`) while a backend is still coming up; a call to a
//! backend that is down fails with 503 ServiceUnavailable.

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use triton_common::channel::ChannelBuilder;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;
use triton_proto::cns::v1::cns_client::CnsClient;
use triton_proto::imgapi::v1::imgapi_client::ImgapiClient;
use triton_proto::napi::v1::napi_client::NapiClient;
use triton_proto::papi::v1::papi_client::PapiClient;
use triton_proto::ufds::v1::ufds_client::UfdsClient;
use triton_proto::vmapi::v1::vmapi_client::VmapiClient;
use triton_proto::volapi::v1::vol_api_client::VolApiClient;

use crate::config::Config;
use crate::error::StartError;

/// Carries the caller's trace context to the backend.
pub type Interceptor = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;
pub type Chan = InterceptedService<Channel, Interceptor>;

/// A backend's channel with the common defaults: every call CloudAPI makes is a short
/// read or write (state changes are jobs that answer at once).
fn channel(service: &'static str, url: &str) -> Result<Chan, StartError> {
    let channel = ChannelBuilder::new(url)
        .lazy()
        .map_err(|source| StartError::BadUrl { service, source })?;
    let interceptor: Interceptor = triton_common::telemetry::trace_interceptor;
    Ok(InterceptedService::new(channel, interceptor))
}

/// The clients, one field per service: its client type and the config key of its URL.
macro_rules! backends {
    ($($service:ident: $client:ident from $url:ident;)*) => {
        /// A client of each service behind CloudAPI.
        #[derive(Debug, Clone)]
        pub struct Backends {
            $(pub $service: $client<Chan>,)*
            /// CNS, when `cns_url` is configured (the machines' `dns_names`).
            pub cns: Option<CnsClient<Chan>>,
            /// VolAPI, when `volapi_url` is configured (volumes).
            pub volapi: Option<VolApiClient<Chan>>,
        }

        impl Backends {
            /// Every client, on a lazy channel to its configured URL.
            pub fn connect(config: &Config) -> Result<Backends, StartError> {
                Ok(Backends {
                    $($service: $client::new(channel(stringify!($service), &config.$url)?),)*
                    cns: if config.cns_url.is_empty() {
                        None
                    } else {
                        Some(CnsClient::new(channel("cns", &config.cns_url)?))
                    },
                    volapi: if config.volapi_url.is_empty() {
                        None
                    } else {
                        Some(VolApiClient::new(channel("volapi", &config.volapi_url)?))
                    },
                })
            }
        }
    };
}

backends! {
    ufds: UfdsClient from ufds_url;
    papi: PapiClient from papi_url;
    imgapi: ImgapiClient from imgapi_url;
    napi: NapiClient from napi_url;
    vmapi: VmapiClient from vmapi_url;
    cnapi: CnapiClient from cnapi_url;
}
