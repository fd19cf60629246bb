//! The built `cnsadm` against CNS in a test datacenter: what an operator sees and
//! changes, and the errors for bad input (named field and rule, exit status 1).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dc_common;

use std::time::Duration;

use dc_testkit::naming::CNS_ZONE;
use dc_testkit::{Dc, Options, Seed, Service, eventually};
use triton_proto::cns::v1 as cns_pb;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the built cnsadm with `CNS_URL` pointing at the datacenter's CNS.
async fn cnsadm(dc: &Dc, args: &[&str]) -> Out {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cnsadm"))
        .args(args)
        .env("CNS_URL", format!("http://{}", dc.addr(Service::Cns)))
        .output()
        .await
        .expect("cnsadm runs");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn ok(dc: &Dc, args: &[&str]) -> String {
    let out = cnsadm(dc, args).await;
    assert_eq!(out.code, 0, "cnsadm {args:?}: {}{}", out.stdout, out.stderr);
    out.stdout
}

async fn fails(dc: &Dc, args: &[&str]) -> String {
    let out = cnsadm(dc, args).await;
    assert_eq!(out.code, 1, "cnsadm {args:?}: {}{}", out.stdout, out.stderr);
    out.stderr
}

async fn config(dc: &Dc) -> cns_pb::Config {
    dc.cns()
        .get_config(cns_pb::GetConfigRequest {})
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_config_zones_peers_and_vm() {
    let dc = Dc::start(Options {
        cns: true,
        seed: Some(Seed::default()),
        nic_tags: vec!["admin".into(), "external".into()],
        ..Options::vmapi()
    })
    .await;

    // status: the zone with its serial, once CNS has built it.
    eventually(
        "cnsadm status lists the zone",
        Duration::from_secs(30),
        || async {
            ok(&dc, &["status"]).await.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() == 2 && f[0] == CNS_ZONE && f[1].parse::<u32>().is_ok()
            })
        },
    )
    .await;

    // config: shown, then changed with each modifier form.
    let shown = ok(&dc, &["config"]).await;
    assert!(shown.contains("use_alias: true"), "{shown}");
    assert!(
        shown.contains(&format!("my_name: ns.{CNS_ZONE}")),
        "{shown}"
    );
    let changed = ok(
        &dc,
        &[
            "config",
            "use_login=yes",
            "allow_transfer+=10.1.0.0/16,192.0.2.7",
            "hostmaster=dns@example.org",
        ],
    )
    .await;
    assert!(changed.contains("use_login: true"), "{changed}");
    let c = config(&dc).await;
    assert!(c.use_login);
    assert_eq!(c.hostmaster, "dns@example.org");
    assert!(
        c.allow_transfer.contains(&"10.1.0.0/16".to_string()),
        "{c:?}"
    );
    ok(
        &dc,
        &["config", "allow_transfer-=10.1.0.0/16", "use_login=off"],
    )
    .await;
    let c = config(&dc).await;
    assert!(!c.use_login);
    assert!(
        !c.allow_transfer.contains(&"10.1.0.0/16".to_string()),
        "{c:?}"
    );

    // Bad input: cnsadm's own checks, then CNS's (the field and the rule named,
    // nothing written).
    for (args, want) in [
        (&["config", "use_alias=maybe"][..], "use_alias: a boolean"),
        (
            &["config", "use_alias+=true"][..],
            "use_alias: a boolean takes only",
        ),
        (&["config", "ttl=5"][..], "ttl: no such field"),
        (&["config", "use_alias"][..], "expected field=value"),
        (&["config", "hostmaster=nobody"][..], "hostmaster"),
        (
            &["zones", "nope.example.org", "peers=a"][..],
            "no such zone",
        ),
        (&["zones", "-a", "Bad_Zone!", "networks=*"][..], "zone"),
    ] {
        let err = fails(&dc, args).await;
        assert!(
            err.starts_with("cnsadm: error: ") && err.contains(want),
            "{args:?}: {err}"
        );
    }
    assert_eq!(config(&dc).await.hostmaster, "dns@example.org");

    // zones: add one, rename it, see it served, delete it.
    let table = ok(&dc, &["zones"]).await;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(CNS_ZONE) && l.contains(" * ")),
        "{table}"
    );
    ok(
        &dc,
        &["zones", "-a", "Extra.Example.org", "peers=ns1.example.org"],
    )
    .await;
    let one = ok(&dc, &["zones", "extra.example.org"]).await;
    assert!(one.contains("networks: *"), "{one}");
    assert!(one.contains("peers: ns1.example.org"), "{one}");
    ok(
        &dc,
        &["zones", "extra.example.org", "zone=other.example.org"],
    )
    .await;
    let zones = config(&dc).await.forward_zones;
    assert!(zones.contains_key("other.example.org"), "{zones:?}");
    assert!(!zones.contains_key("extra.example.org"), "{zones:?}");
    eventually(
        "cnsadm status lists the new zone",
        Duration::from_secs(30),
        || async { ok(&dc, &["status"]).await.contains("other.example.org") },
    )
    .await;
    ok(&dc, &["zones", "-d", "other.example.org"]).await;
    assert!(
        !config(&dc)
            .await
            .forward_zones
            .contains_key("other.example.org")
    );
    let rev = ok(&dc, &["zones", "reverse", "peers=ns2.example.org"]).await;
    assert!(rev.contains("peers: ns2.example.org"), "{rev}");

    // peers: the secondaries CNS knows (here the allow_transfer address it notifies).
    let peers = ok(&dc, &["peers"]).await;
    let mut lines = peers.lines();
    assert_eq!(
        lines
            .next()
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["PEER", "VERSION", "ZONES"]),
        "{peers}"
    );
    if peers.contains("192.0.2.7") {
        let one = ok(&dc, &["peers", "192.0.2.7"]).await;
        assert!(one.starts_with("address: 192.0.2.7\n"), "{one}");
        assert!(one.contains("counters:"), "{one}");
    }
    assert!(
        fails(&dc, &["peers", "192.0.2.99"])
            .await
            .contains("no peer")
    );

    // vm: the names of an instance of an account with CNS on.
    let network = dc_common::external_network(&dc, "10.151.0").await;
    dc_common::set_cns_enabled(&dc, true).await;
    let uuid = dc_common::create(&dc, &network, "web-1", None).await;
    let want = format!("web-1.inst.{}.{CNS_ZONE}", dc.seed().owner);
    eventually(
        "cnsadm vm lists the instance's names",
        Duration::from_secs(30),
        || async {
            let out = cnsadm(&dc, &["vm", &uuid]).await;
            out.code == 0 && out.stdout.lines().any(|l| l.trim() == want)
        },
    )
    .await;
    let shown = ok(&dc, &["vm", &uuid]).await;
    assert!(shown.contains(&format!("{uuid}.inst.")), "{shown}");
    assert!(shown.contains("last visited: 20"), "{shown}");
    let unknown = "00000000-0000-4000-8000-000000000001";
    assert!(
        fails(&dc, &["vm", unknown])
            .await
            .contains("not known to CNS")
    );
    assert!(
        fails(&dc, &["vm", "web-1"])
            .await
            .contains("uuid: \"web-1\" is not a uuid")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cns_is_an_error_naming_the_url() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cnsadm"))
        .args(["--url", "http://127.0.0.1:9", "status"])
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("cnsadm: error: cannot reach CNS at http://127.0.0.1:9"),
        "{err}"
    );
    // A command line that does not parse: exit 2, nothing asked.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cnsadm"))
        .args(["zones", "-a"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
