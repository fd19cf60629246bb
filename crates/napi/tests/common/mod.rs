//! A real PostgreSQL, a real Moray and NAPI, all in-process on loopback ports.

#![allow(dead_code)] // each test binary uses part of it

use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use triton_proto::napi::v1 as proto;
use triton_proto::napi::v1::napi_client::NapiClient;
use triton_testkit::MorayFixture;

pub const OWNER: &str = "930896af-bf8c-48d4-885c-6573a94b1853";
pub const ADMIN: &str = "00000000-0000-0000-0000-00000000ad01";

pub struct TestNapi {
    pub client: NapiClient<Channel>,
    pub app: napi::Napi,
    pub moray_url: String,
    shutdown: CancellationToken,
    _moray: MorayFixture,
}

impl TestNapi {
    pub async fn start() -> TestNapi {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut napi::Config)) -> TestNapi {
        let moray = MorayFixture::start().await;
        let shutdown = CancellationToken::new();
        let moray_url = moray.url().to_string();
        let mut config = napi::Config {
            listen: "127.0.0.1:0".into(),
            moray_url: moray_url.clone(),
            admin_uuid: ADMIN.into(),
            ..Default::default()
        };
        configure(&mut config);
        let running = napi::start(config, shutdown.clone())
            .await
            .expect("NAPI starts");
        let client = NapiClient::connect(format!("http://{}", running.addr))
            .await
            .expect("client connects");
        TestNapi {
            client,
            app: running.app,
            moray_url,
            shutdown,
            _moray: moray,
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
}

impl Drop for TestNapi {
    fn drop(&mut self) {
        self.shutdown.cancel();
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

/// Asserts `result` failed with Triton error `name` and a message mentioning every one
/// of `words` (field names, usually).
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    name: &str,
    words: &[&str],
) -> tonic::Status {
    let status = result.expect_err("the call should fail");
    assert_eq!(
        triton_common::status::error_name(&status),
        Some(name),
        "unexpected error: {status:?}"
    );
    for w in words {
        assert!(
            status.message().contains(w),
            "{:?} does not mention {w:?}",
            status.message()
        );
    }
    status
}
