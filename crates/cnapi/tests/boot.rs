//! Boot parameters and server setup against a real Moray: the defaults and a server's
//! overrides (merged and replaced, as Triton's POST and PUT `/boot/:uuid`), looked up by
//! an admin MAC as the booter does, kept across a restart of CNAPI; a network-booted
//! node registering unsetup even with `auto_setup`, refused by the allocator until
//! ServerSetup; bad requests refused naming the field.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use triton_common::pairs::owned as args;

use cnapi::app::Running;
use cnapi::service::Settings;
use dc_testkit::assert_refused;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use triton_proto::cnapi::v1 as pb;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;
use triton_testkit::MorayFixture;
use uuid::Uuid;

mod common;

use common::{alloc, register_sysinfo, server, start_on_moray};

const OLD: &str = "20261201T0900Z";
const NEW: &str = "20261206T0900Z";

/// A booter data dir's `os/` with two platforms.
fn platforms_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for p in [OLD, NEW] {
        std::fs::create_dir(dir.path().join(p)).unwrap();
        for f in ["vmlinuz", "initrd"] {
            std::fs::write(dir.path().join(p).join(f), b"x").unwrap();
        }
    }
    dir
}

/// A CNAPI on `moray` that sets up the servers that register and boots them from the
/// platforms in `dir`, until the token is cancelled, and a client of it.
async fn boot_cnapi(
    moray: &MorayFixture,
    dir: &Path,
) -> (CancellationToken, Running, CnapiClient<Channel>) {
    let settings = Settings {
        auto_setup: true,
        platforms_dir: Some(dir.to_path_buf()),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let (cnapi, c) = start_on_moray(moray.url(), settings, &shutdown).await;
    (shutdown, cnapi, c)
}

/// The sysinfo of a node with admin NIC `mac`; `network` adds the boot parameters the
/// platform image's cn-agent reports.
fn sysinfo(uuid: Uuid, mac: &str, network: bool) -> serde_json::Value {
    let mut s = json!({
        "UUID": uuid.to_string(),
        "Hostname": mac.replace(':', "-"),
        "MiB of Memory": "16384",
        "CPU Online Count": 8,
        "Network Interfaces": {"eth0": {"MAC Address": mac, "NIC Names": ["admin"]}},
    });
    if network {
        s["Boot Parameters"] = json!({
            "triton.cnapi_url": "http://10.99.99.7:2030",
            "triton.admin_mac": mac,
        });
    }
    s
}

async fn get(c: &mut CnapiClient<Channel>, mac: &str) -> pb::BootParams {
    c.get_boot_params(pb::GetBootParamsRequest { mac: mac.into() })
        .await
        .unwrap()
        .into_inner()
}

async fn set(
    c: &mut CnapiClient<Channel>,
    key: &str,
    platform: &str,
    kernel_args: &[(&str, &str)],
    replace: bool,
) -> pb::BootParams {
    c.set_boot_params(pb::SetBootParamsRequest {
        server_uuid: key.into(),
        platform: platform.into(),
        kernel_args: args(kernel_args),
        kernel_flags: vec![],
        replace,
    })
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_params_by_mac_defaults_overrides_and_setup() {
    let moray = MorayFixture::start().await;
    let dir = platforms_dir();
    let (shutdown, _cnapi, mut c) = boot_cnapi(&moray, dir.path()).await;

    // Nothing set: an unknown MAC gets the newest platform and no server.
    let p = get(&mut c, "52:54:00:00:00:01").await;
    assert_eq!((p.platform.as_str(), p.server_uuid.as_str()), (NEW, ""));
    assert!(p.kernel_args.is_empty());

    // The defaults, merged twice.
    set(&mut c, "default", OLD, &[("console", "ttyS0")], false).await;
    let d = set(
        &mut c,
        "default",
        "",
        &[("triton.datacenter", "coal")],
        false,
    )
    .await;
    assert_eq!(d.platform, OLD);
    assert_eq!(d.kernel_args.len(), 2);
    let p = get(&mut c, "52-54-00-00-00-01").await;
    assert_eq!(p.platform, OLD);
    assert_eq!(p.kernel_args["console"], "ttyS0");

    // A network-booted node registers unsetup although auto_setup is on; a node that
    // did not boot from the network is set up at once.
    let pxe = Uuid::new_v4();
    register_sysinfo(&mut c, &sysinfo(pxe, "52:54:00:AA:00:01", true)).await;
    let local = Uuid::new_v4();
    register_sysinfo(&mut c, &sysinfo(local, "52:54:00:aa:00:02", false)).await;
    assert!(!server(&mut c, pxe).await.setup);
    assert!(server(&mut c, local).await.setup);
    let mut only_pxe = alloc(1024, "admin");
    only_pxe.servers = vec![pxe.to_string()];
    assert_refused(
        "allocate on the unsetup node",
        c.allocate(only_pxe.clone()).await,
        "NoAllocatableServersError",
        &[&format!("{pxe}: server is not set up")],
    );

    // Its MAC (any case and separator) finds it: the defaults plus its identity.
    let p = get(&mut c, "52-54-00-aa-00-01").await;
    assert_eq!(p.server_uuid, pxe.to_string());
    assert_eq!(p.platform, OLD);
    assert_eq!(p.kernel_args["triton.server_uuid"], pxe.to_string());
    assert_eq!(p.kernel_args["console"], "ttyS0");
    assert_eq!(p.hostname, "52-54-00-AA-00-01", "as the node reported it");

    // Its overrides: merged over the defaults, a key deleted by an empty value, then
    // replaced with a platform of its own.
    let key = pxe.to_string();
    set(
        &mut c,
        &key,
        "",
        &[("console", "ttyS1"), ("debug", "1")],
        false,
    )
    .await;
    let p = get(&mut c, "52:54:00:aa:00:01").await;
    assert_eq!(p.kernel_args["console"], "ttyS1");
    assert_eq!(p.kernel_args["debug"], "1");
    assert_eq!(p.kernel_args["triton.datacenter"], "coal");
    set(&mut c, &key, "", &[("debug", "")], false).await;
    assert!(
        !get(&mut c, "52:54:00:aa:00:01")
            .await
            .kernel_args
            .contains_key("debug")
    );
    let replaced = set(&mut c, &key, NEW, &[("quiet", "1")], true).await;
    assert_eq!(replaced.kernel_args.len(), 1);
    let p = get(&mut c, "52:54:00:aa:00:01").await;
    assert_eq!(p.platform, NEW);
    assert_eq!(p.kernel_args["console"], "ttyS0", "back to the default's");
    assert_eq!(p.kernel_args["quiet"], "1");
    // The other node still boots the defaults.
    assert_eq!(get(&mut c, "52:54:00:aa:00:02").await.platform, OLD);

    // ServerSetup with a hostname: usable, and the hostname is in what it boots next.
    let s = c
        .server_setup(pb::ServerSetupRequest {
            uuid: key.clone(),
            hostname: "cn7".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(s.setup);
    let p = get(&mut c, "52:54:00:aa:00:01").await;
    assert_eq!(
        (p.hostname.as_str(), p.kernel_args["hostname"].as_str()),
        ("cn7", "cn7")
    );
    // Allocation now considers it (the heartbeat-less node has no disk, so the reason
    // is another one than setup).
    let refused = c.allocate(only_pxe).await;
    if let Err(e) = &refused {
        assert!(!e.message().contains("not set up"), "{}", e.message());
    }

    // A restart of CNAPI: the parameters are in Moray.
    shutdown.cancel();
    let (shutdown, _cnapi, mut c) = boot_cnapi(&moray, dir.path()).await;
    let p = get(&mut c, "52:54:00:aa:00:01").await;
    assert_eq!(p.platform, NEW);
    assert_eq!(p.kernel_args["quiet"], "1");
    assert_eq!(get(&mut c, "52:54:00:00:00:09").await.platform, OLD);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_boot_params_are_refused_naming_the_field() {
    let moray = MorayFixture::start().await;
    let dir = platforms_dir();
    let (shutdown, _cnapi, mut c) = boot_cnapi(&moray, dir.path()).await;

    for mac in [
        "",
        "52:54:00:00:00",
        "52:54:00:00:00:0g",
        "52:54:00:00:00:01:02",
    ] {
        assert_refused(
            &format!("mac {mac:?}"),
            c.get_boot_params(pb::GetBootParamsRequest { mac: mac.into() })
                .await,
            "ValidationFailedError",
            &["mac", "is not a MAC address"],
        );
    }
    let request =
        |key: &str, platform: &str, a: &[(&str, &str)], flags: &[&str]| pb::SetBootParamsRequest {
            server_uuid: key.into(),
            platform: platform.into(),
            kernel_args: args(a),
            kernel_flags: flags.iter().map(|f| f.to_string()).collect(),
            replace: false,
        };
    let cases: Vec<(&str, pb::SetBootParamsRequest, &str, Vec<&str>)> = vec![
        (
            "unknown platform",
            request("default", "19990101T0000Z", &[], &[]),
            "ValidationFailedError",
            vec!["platform", "not a known platform"],
        ),
        (
            "platform as a path",
            request("default", "../etc", &[], &[]),
            "ValidationFailedError",
            vec!["platform", "not a platform name"],
        ),
        (
            "upper-case name",
            request("default", "", &[("Console", "x")], &[]),
            "ValidationFailedError",
            vec!["kernel_args", "[a-z0-9_.-]+"],
        ),
        (
            "space in a value",
            request("default", "", &[("console", "tty S0")], &[]),
            "ValidationFailedError",
            vec!["kernel_args.console", "spaces"],
        ),
        (
            "space in a flag",
            request("default", "", &[], &["-k -d"]),
            "ValidationFailedError",
            vec!["kernel_flags"],
        ),
        (
            "neither a uuid nor default",
            request("defaults", "", &[], &[]),
            "ValidationFailedError",
            vec!["server_uuid", "\"default\""],
        ),
        (
            "no such server",
            request(&Uuid::nil().to_string(), "", &[], &[]),
            "ResourceNotFoundError",
            vec![],
        ),
    ];
    for (what, req, name, fragments) in cases {
        assert_refused(what, c.set_boot_params(req).await, name, &fragments);
    }
    // Nothing of those was stored.
    let p = get(&mut c, "52:54:00:00:00:01").await;
    assert!(p.kernel_args.is_empty());
    assert_eq!(p.platform, NEW);
    shutdown.cancel();
}
