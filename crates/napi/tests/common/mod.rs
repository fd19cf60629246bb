//! NAPI alone on the test kit's Moray, and what its tests make again and again (the IP
//! records of a network are `napi.dc.ips_of`).

#![allow(dead_code)] // each test binary uses part of it

use dc_testkit::{Dc, Options};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Response, Status};
use triton_proto::napi::v1 as proto;
use triton_proto::napi::v1::napi_client::NapiClient;

pub use dc_testkit::assert_error;

pub const OWNER: &str = "930896af-bf8c-48d4-885c-6573a94b1853";
pub const ADMIN: &str = "00000000-0000-0000-0000-00000000ad01";

pub struct TestNapi {
    pub client: NapiClient<Channel>,
    pub app: napi::Napi,
    pub dc: Dc,
}

impl TestNapi {
    pub async fn start() -> TestNapi {
        Self::start_with(|_| {}).await
    }

    /// NAPI with one network ([`TestNapi::network`]) to work on.
    pub async fn with_network(name: &str, prefix: &str, tag: &str) -> (TestNapi, proto::Network) {
        let napi = Self::start().await;
        let net = napi.network(name, prefix, tag).await;
        (napi, net)
    }

    pub async fn start_with(
        configure: impl Fn(&mut napi::Config) + Send + Sync + 'static,
    ) -> TestNapi {
        Self::start_on(configure, |_| {}).await
    }

    /// NAPI on a Moray whose config `moray` changes first.
    pub async fn start_with_moray(
        moray: impl Fn(&mut dc_testkit::services::moray::Config) + Send + Sync + 'static,
    ) -> TestNapi {
        Self::start_on(|_| {}, moray).await
    }

    async fn start_on(
        configure: impl Fn(&mut napi::Config) + Send + Sync + 'static,
        moray: impl Fn(&mut dc_testkit::services::moray::Config) + Send + Sync + 'static,
    ) -> TestNapi {
        let dc = Dc::start(Options {
            napi: true,
            configure_moray: Box::new(moray),
            configure_napi: Box::new(move |c| {
                c.admin_uuid = ADMIN.into();
                configure(c);
            }),
            ..Default::default()
        })
        .await;
        TestNapi {
            client: dc.napi(),
            app: dc.napi_app.clone().expect("NAPI runs"),
            dc,
        }
    }

    pub fn client(&self) -> NapiClient<Channel> {
        self.client.clone()
    }

    pub async fn nic_tag(&self, name: &str) -> proto::NicTag {
        self.client()
            .create_nic_tag(proto::CreateNicTagRequest {
                name: name.into(),
                mtu: None,
            })
            .await
            .expect("create nic tag")
            .into_inner()
    }

    /// A network on `subnet` (a /24 given as "a.b.c"), provision range .1-.254 and
    /// gateway .1, on nic tag `tag` (created when missing).
    pub async fn network(&self, name: &str, prefix: &str, tag: &str) -> proto::Network {
        let _ = self
            .client()
            .create_nic_tag(proto::CreateNicTagRequest {
                name: tag.into(),
                mtu: None,
            })
            .await;
        self.client()
            .create_network(proto::CreateNetworkRequest {
                name: name.into(),
                subnet: format!("{prefix}.0/24"),
                provision_start_ip: format!("{prefix}.1"),
                provision_end_ip: format!("{prefix}.254"),
                gateway: Some(format!("{prefix}.1")),
                nic_tag: tag.into(),
                resolvers: vec!["8.8.8.8".into()],
                ..Default::default()
            })
            .await
            .expect("create network")
            .into_inner()
    }

    /// A NIC for a new VM on `network` (a network or pool uuid).
    pub async fn new_nic(&self, network: &str) -> proto::Nic {
        self.client()
            .create_nic(nic_on(network, &new_uuid()))
            .await
            .expect("create nic")
            .into_inner()
    }

    /// `n` CreateNic calls at once, each for a new VM on `network`: their tasks.
    pub fn spawn_nics(
        &self,
        network: &str,
        n: usize,
    ) -> Vec<JoinHandle<Result<Response<proto::Nic>, Status>>> {
        (0..n)
            .map(|_| {
                let mut client = self.client();
                let req = nic_on(network, &new_uuid());
                tokio::spawn(async move { client.create_nic(req).await })
            })
            .collect()
    }

    /// The NICs ListNics gives for `network`.
    pub async fn nics_on(&self, network: &str) -> Vec<proto::Nic> {
        self.client()
            .list_nics(proto::ListNicsRequest {
                network_uuid: Some(network.into()),
                ..Default::default()
            })
            .await
            .expect("ListNics")
            .into_inner()
            .nics
    }

    /// GetIp's answer for `ip` on `network`.
    pub async fn ip(&self, network: &str, ip: &str) -> proto::Ip {
        self.client()
            .get_ip(proto::GetIpRequest {
                network_uuid: network.into(),
                ip: ip.into(),
            })
            .await
            .expect("GetIp")
            .into_inner()
    }
}

/// A NIC for VM `vm` (a uuid) on `network`.
pub fn nic_on(network: &str, vm: &str) -> proto::CreateNicRequest {
    proto::CreateNicRequest {
        owner_uuid: OWNER.into(),
        belongs_to_uuid: vm.into(),
        belongs_to_type: "zone".into(),
        network_uuid: Some(network.into()),
        ..Default::default()
    }
}

pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}
