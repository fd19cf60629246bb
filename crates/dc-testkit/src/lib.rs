//! One datacenter test kit: any subset of Triton's services in-process on loopback ports,
//! on a real PostgreSQL and Moray (`triton_testkit::MorayFixture`), with simulated or
//! linux compute nodes, seeded data, and CloudAPI in front with tenants who run the real
//! `triton` CLI or sign requests by hand.
//!
//! - [`Dc`] and [`Options`]: which services, how many nodes, what is seeded.
//! - [`linux`]: the host side of a linux compute node (bridges, cgroups, an image).
//! - [`node`]: a compute node's agent started by hand (a simulated node's facts).
//! - [`bench`]: the benches' runtime, parts and knobs.
//! - [`cloudapi`]: tenants, the `triton` CLI, raw signed HTTP requests.
//! - [`monitor`]: CMon on HTTPS and a client presenting a client certificate.
//! - [`naming`]: CNS, its admin API and its DNS address.
//! - [`volumes`]: VolAPI, its packages and image.
//! - [`fabric`]: two compute nodes' overlays in network namespaces, instances on fabrics.
//! - [`eventually`], [`error_of`], [`assert_error`], [`health`], [`run`]: what tests
//!   check with.
//!
//! This is the only crate that depends on service crates, and services take it only as
//! a dev-dependency (`tests/deps.rs` checks both).

// A test kit fails the test it serves by panicking, with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![deny(missing_docs)]

pub mod bench;
pub mod cloudapi;
mod dc;
pub mod fabric;
pub mod feed;
pub mod linux;
pub mod monitor;
pub mod naming;
pub mod node;
pub mod volumes;
pub mod watched;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

pub use dc::{ADMIN_UUID, Dc, Options, Seed, Seeded, Service, package_fields};
/// For `Options::configure_moray`: a Moray that keeps no change log.
pub use triton_testkit::keep_no_change_log;

/// The service crates the kit starts, for tests that reach inside one (a sim node's
/// backend, a service's config); a test names them through here, never as its own
/// dependency.
pub mod services {
    pub use {
        cloudapi, cmon, cn_agent, cnapi, cns, imgapi, moray, napi, papi, portolan, ufds, vmapi,
        volapi,
    };
}

/// Polls `check` every 50 ms until it holds, and fails the test naming `what` once
/// `timeout` has passed without it.
#[track_caller]
pub fn eventually<F, Fut>(what: &str, timeout: Duration, check: F) -> impl Future<Output = ()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let held = wait_for(what, timeout, check, |held| *held);
    async move {
        held.await;
    }
}

/// Reads `read` every 50 ms until `done` holds for what it gave, and returns that; fails
/// the test naming `what`, with the last value read, once `timeout` has passed without it.
#[track_caller]
pub fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut read: F,
    done: impl Fn(&T) -> bool,
) -> impl Future<Output = T>
where
    T: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let caller = std::panic::Location::caller();
    async move {
        let deadline = Instant::now() + timeout;
        loop {
            let value = read().await;
            if done(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{caller}: timed out after {timeout:?} waiting for: {what} (last read: {value:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The Triton error name of a failed call, and its message.
#[track_caller]
pub fn error_of<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
) -> (String, String) {
    let s = r.expect_err("the call must fail");
    (
        triton_common::status::error_name(&s)
            .unwrap_or("")
            .to_string(),
        s.message().to_string(),
    )
}

/// Asserts that `result` failed with Triton error `name` and a message containing every
/// one of `fragments` (field names, usually); returns the status.
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    name: &str,
    fragments: &[&str],
) -> tonic::Status {
    assert_refused("the call", result, name, fragments)
}

/// [`assert_error`] for case `what` of a table: a failure names the case.
#[track_caller]
pub fn assert_refused<T: std::fmt::Debug>(
    what: &str,
    result: Result<tonic::Response<T>, tonic::Status>,
    name: &str,
    fragments: &[&str],
) -> tonic::Status {
    let status = match result {
        Ok(r) => panic!("{what}: expected {name}, got {:?}", r.into_inner()),
        Err(s) => s,
    };
    assert_eq!(
        triton_common::status::error_name(&status),
        Some(name),
        "{what}: status: {status:?}"
    );
    let message = triton_common::status::error_message(&status);
    for f in fragments {
        assert!(
            message.contains(f),
            "{what}: {message:?} should contain {f:?}"
        );
    }
    status
}

/// The health service's answer for `service` on `addr`.
pub async fn health(addr: SocketAddr, service: &str) -> i32 {
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

/// Runs `program` with `args`, which must succeed; its standard output.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A path as UTF-8, for command lines.
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The SHA-1 of `data` in lower-case hex, as IMGAPI's manifests carry it.
pub fn sha1_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
