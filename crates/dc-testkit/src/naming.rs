//! CNS in a test datacenter ([`crate::Options::cns`]): started in-process following the
//! datacenter's VMAPI, UFDS, NAPI and CNAPI, serving the forward zone [`CNS_ZONE`] (every
//! network, CMon's names as `<uuid>.cmon.`[`CNS_ZONE`] at 127.0.0.1) on a loopback
//! port; [`Dc::cns`] is its admin API and [`Dc::cns_dns_addr`] its DNS address.

use std::net::SocketAddr;

use tonic::transport::Channel;
use triton_proto::cns::v1::cns_client::CnsClient;

use crate::{Dc, Options, Service};

/// The forward zone the test CNS serves (so CMon's suffix, `cmon.<zone>`, is
/// CMon's `CMON_SUFFIX` in the test kit).
pub const CNS_ZONE: &str = "test.triton.zone";

impl Dc {
    pub(crate) async fn start_cns(&mut self, options: &Options) {
        let mut config = self.cns_config();
        (options.configure_cns)(&mut config);
        let running = cns::start(config, self.shutdown.clone())
            .await
            .expect("CNS starts");
        self.addrs.push((Service::Cns, running.addr));
        self.addrs.push((Service::CnsDns, running.dns_addr));
    }

    /// The config the datacenter's CNS starts with (loopback ports picked at start, the
    /// zone [`CNS_ZONE`], changes committed every 100 ms): a test that starts and stops
    /// its own CNS (with `cns: false`) begins from it.
    pub fn cns_config(&self) -> cns::Config {
        let url = |s| format!("http://{}", self.addr(s));
        let mut config = cns::Config {
            dns_listen: "127.0.0.1:0".into(),
            vmapi_url: url(Service::Vmapi),
            ufds_url: url(Service::Ufds),
            napi_url: url(Service::Napi),
            cnapi_url: url(Service::Cnapi),
            cmon_address: "127.0.0.1".into(),
            commit_window_ms: 100,
            ..Default::default()
        };
        config.service.listen = "127.0.0.1:0".into();
        config.service.moray_url = self.moray_url();
        config.initial.my_name = format!("ns.{CNS_ZONE}");
        config.initial.hostmaster = format!("hostmaster@{CNS_ZONE}");
        config.initial.forward_zones =
            [(CNS_ZONE.to_string(), cns::config::ForwardZone::default())]
                .into_iter()
                .collect();
        config
    }

    /// CNS's admin API.
    #[track_caller]
    pub fn cns(&self) -> CnsClient<Channel> {
        CnsClient::new(crate::dc::grpc(self.addr(Service::Cns)))
    }

    /// CNS's DNS address (UDP and TCP).
    #[track_caller]
    pub fn cns_dns_addr(&self) -> SocketAddr {
        self.addr(Service::CnsDns)
    }
}
