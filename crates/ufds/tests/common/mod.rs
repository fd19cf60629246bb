//! A real PostgreSQL, a real Moray on it and UFDS on that, all in-process on loopback
//! ports, for one test; and helpers to check Triton-style errors.

#![allow(dead_code)] // each test binary uses part of it

use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use triton_proto::ufds::v1::ufds_client::UfdsClient;
use triton_testkit::MorayFixture;

pub struct Stack {
    /// Where the service listens.
    pub addr: std::net::SocketAddr,
    pub client: UfdsClient<Channel>,
    pub moray_url: String,
    shutdown: CancellationToken,
    _moray: MorayFixture,
}

impl Stack {
    pub async fn start() -> Stack {
        let moray = MorayFixture::start().await;
        let shutdown = CancellationToken::new();
        let moray_url = moray.url().to_string();
        let ufds = ufds::start(
            ufds::Config {
                listen: "127.0.0.1:0".into(),
                moray_url: moray_url.clone(),
                ..Default::default()
            },
            shutdown.clone(),
        )
        .await
        .expect("UFDS starts");
        let client = UfdsClient::connect(format!("http://{}", ufds.addr))
            .await
            .expect("client connects");
        Stack {
            addr: ufds.addr,
            client,
            moray_url,
            shutdown,
            _moray: moray,
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Asserts that `result` failed with Triton error `name` and a message containing every
/// one of `fragments`; returns the message.
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    name: &str,
    fragments: &[&str],
) -> String {
    let status = match result {
        Ok(r) => panic!("expected {name}, got {:?}", r.into_inner()),
        Err(s) => s,
    };
    assert_eq!(
        triton_common::status::error_name(&status),
        Some(name),
        "status: {status:?}"
    );
    let message = triton_common::status::error_message(&status).to_string();
    for f in fragments {
        assert!(message.contains(f), "{message:?} should contain {f:?}");
    }
    message
}

/// The health service's answer for `service` on `addr`.
pub async fn health(addr: std::net::SocketAddr, service: &str) -> i32 {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("health client connects");
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .expect("health check answers")
        .into_inner()
        .status
}
