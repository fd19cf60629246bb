//! `coal up --linux-cns N` as deploy/services.toml makes it: the services CoaL runs, the
//! configs it writes (read back by cn-agent's own config loader), what coal.json keeps,
//! and the underlay CoaL seeds in a real NAPI.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use dc_testkit::services::cn_agent;
use dc_testkit::{Dc, Options, Service};
use sdcadm::coal::{self, Coal};
use sdcadm::deploy::Bridge;
use triton_proto::napi::v1 as napi;

fn open(dir: &std::path::Path, linux_cns: Option<u32>) -> Coal {
    let root = sdcadm::deploy::repo_root().unwrap();
    Coal::open(
        &root,
        &coal::Options {
            coal_dir: Some(dir.to_path_buf()),
            linux_cns,
            ..Default::default()
        },
    )
    .unwrap()
}

/// The config CoaL writes for `service`, as cn-agent reads it.
fn agent_config(coal: &Coal, service: &str) -> cn_agent::config::Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{service}.toml"));
    let text = toml::to_string(&coal.config_of(service).unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    triton_common::config::load_from("cn-agent", Some(&path), &[])
        .unwrap_or_else(|e| panic!("cn-agent refuses the config of {service}: {e}"))
}

#[test]
fn three_linux_nodes_run_as_three_agents_with_their_own_addresses_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let coal = open(dir.path(), Some(3));
    let active: Vec<String> = coal
        .active()
        .unwrap()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let agents: Vec<&str> = active
        .iter()
        .map(String::as_str)
        .filter(|n| n.starts_with("cn-agent") && *n != "cn-agent-sim")
        .collect();
    assert_eq!(agents, ["cn-agent", "cn-agent-2", "cn-agent-3"]);
    let cnapi = active.iter().position(|n| n == "cnapi").unwrap();
    for a in &agents {
        assert!(
            active.iter().position(|n| n == a).unwrap() > cnapi,
            "{a} before cnapi"
        );
    }

    let configs: Vec<cn_agent::config::Config> =
        agents.iter().map(|a| agent_config(&coal, a)).collect();
    // Node 1 is the headnode's agent, as with one node.
    assert_eq!(configs[0].listen, "127.0.0.1:5309");
    assert_eq!(configs[0].linux.netns_prefix, "coal-");
    assert_eq!(configs[1].listen, "10.99.99.22:5309");
    assert_eq!(configs[1].advertise_url, "http://10.99.99.22:5309");
    assert_eq!(configs[2].cnapi_url, "http://10.99.99.7:2030");
    for (i, a) in configs.iter().enumerate() {
        for b in &configs[i + 1..] {
            assert_ne!(a.state_dir, b.state_dir);
            assert_ne!(a.linux.cgroup_parent, b.linux.cgroup_parent);
            assert_ne!(a.linux.netns_prefix, b.linux.netns_prefix);
            assert_ne!(a.linux.link_prefix, b.linux.link_prefix);
            assert_eq!(a.nic_tags, b.nic_tags);
        }
    }
    // Each node's overlay: its own underlay address, Portolan's SVP port on the admin
    // address.
    let overlays: Vec<(String, String)> = configs
        .iter()
        .map(|c| {
            let o = c.overlay.as_ref().expect("an overlay section");
            (o.underlay_ip.to_string(), o.portolan.clone())
        })
        .collect();
    assert_eq!(
        overlays,
        [
            ("10.99.100.7".to_string(), "10.99.99.7:1296".to_string()),
            ("10.99.100.22".to_string(), "10.99.99.7:1296".to_string()),
            ("10.99.100.23".to_string(), "10.99.99.7:1296".to_string()),
        ]
    );
    // CoaL checks each node's health where CNAPI reaches it.
    let addr = |name: &str| {
        let s = coal.deployment.service(name).unwrap();
        coal.address(s)
    };
    assert_eq!(addr("cn-agent"), "127.0.0.1:5309");
    assert_eq!(addr("cn-agent-3"), "10.99.99.23:5309");
    assert_eq!(
        coal.linux_cn("cn-agent-2").unwrap().netns.as_deref(),
        Some("coalcn2")
    );
}

#[test]
fn one_linux_node_is_the_default_and_coal_json_keeps_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let one = open(dir.path(), None);
    assert_eq!(one.state.linux_cns, 1);
    assert_eq!(one.cns.len(), 1);
    assert!(one.deployment.service("cn-agent-2").is_none());
    // A coal.json of before the option: one node.
    std::fs::write(
        dir.path().join("coal.json"),
        r#"{"sim_cns":2,"one_node":true}"#,
    )
    .unwrap();
    let old = open(dir.path(), None);
    assert_eq!((old.state.linux_cns, old.state.sim_cns), (1, 2));
    // What an `up --linux-cns 2` saved is what the next commands use.
    std::fs::write(
        dir.path().join("coal.json"),
        serde_json::to_string(&open(dir.path(), Some(2)).state).unwrap(),
    )
    .unwrap();
    let later = open(dir.path(), None);
    assert_eq!(later.state.linux_cns, 2);
    assert!(later.deployment.service("cn-agent-2").is_some());
    // A bad count is refused, naming the option.
    let e = Coal::open(
        &sdcadm::deploy::repo_root().unwrap(),
        &coal::Options {
            coal_dir: Some(dir.path().to_path_buf()),
            linux_cns: Some(0),
            ..Default::default()
        },
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("--linux-cns"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_fewer_linux_nodes_than_run_is_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let coal_dir = dir.path().join("coal");
    std::fs::create_dir_all(coal_dir.join("run")).unwrap();
    // Node 3 of an earlier `up --linux-cns 3` still runs (this test's process stands in).
    let me = coal::process::Pid::of(std::process::id()).unwrap();
    coal::process::write_pid(&coal_dir.join("run/cn-agent-3.pid"), me).unwrap();
    std::fs::write(
        coal_dir.join("coal.json"),
        r#"{"linux_cns":3,"sim_cns":0,"one_node":false}"#,
    )
    .unwrap();
    let coal = open(&coal_dir, Some(2));
    let e = coal.up().await.unwrap_err().to_string();
    assert!(
        e.contains("cn-agent-3 still runs") && e.contains("scripts/coal down"),
        "{e}"
    );
    // coal.json still says 3, so `down` stops node 3 too.
    assert_eq!(open(&coal_dir, None).state.linux_cns, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_underlay_is_seeded_in_napi_once() {
    let dc = Dc::start(Options::only(Service::Napi)).await;
    let bridge = Bridge {
        name: "coal-underlay".into(),
        nic_tag: "sdc_underlay".into(),
        address: "10.99.100.7/24".into(),
    };
    let addr = dc.addr(dc_testkit::Service::Napi).to_string();
    let ch = coal::seed::channel(&addr).await.unwrap();
    let made = coal::seed::underlay(ch.clone(), &bridge, dc_testkit::ADMIN_UUID)
        .await
        .unwrap();
    assert_eq!(
        made,
        [
            "nic tag sdc_underlay",
            "network sdc_underlay 10.99.100.0/24"
        ]
    );
    let again = coal::seed::underlay(ch, &bridge, dc_testkit::ADMIN_UUID)
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    let nets = dc
        .napi()
        .list_networks(napi::ListNetworksRequest {
            name: Some("sdc_underlay".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .networks;
    assert_eq!(nets.len(), 1);
    assert_eq!(nets[0].nic_tag, "sdc_underlay");
    assert_eq!(nets[0].owner_uuids, [dc_testkit::ADMIN_UUID]);
}
