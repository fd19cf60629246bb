//! Fabrics across two compute nodes: cn-agent's overlay data plane
//! (`cn_agent::linux::overlay`) in each node's network namespace, Portolan on Moray
//! answering its lookups from the rows NAPI would write (`portolan_client::buckets`).
//!
//! Two nodes are two network namespaces, each with an underlay address on a bridge of a
//! third ("the switch"). Instances are namespaces with a veth into their vnet's bridge
//! on their node. Reachability is a TCP connection to a server inside the other instance
//! that answers with its name (a thread of the test in the namespace: `setns(2)`).

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use cn_agent::ZoneBackend;
use cn_agent::linux::overlay::{Nat, VXLAN_TABLE, bridge_name, nat_hub, nat_netns, vxlan_name};
use dc_testkit::fabric::{
    Instance, Lab, TwoNodes, drained, fetch_from, has_forwarding, log_entry, mac_text, nic_row,
    overlay, received, send_udp, serve, serve_peer, udp_listener, underlay_row, vxlan_udp,
};
use dc_testkit::{Dc, Options, Service, eventually, run};
use moray_client::MorayClient;
use portolan_client::buckets::{Buckets, LogRecord, ip_text, mac_number};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A safety net for waits that end on an event; never what a check depends on.
const WAIT: Duration = Duration::from_secs(20);
const VNET_A: u32 = 4100;
const VNET_B: u32 = 4200;
const VNET_C: u32 = 4300;

/// Portolan on Moray, and a lab with one node (its overlay not made): the datacenter,
/// Portolan's SVP address, the lab, and the node's namespace and underlay address.
async fn one_node() -> (Dc, SocketAddr, Lab, String, Ipv4Addr) {
    let dc = Dc::start(Options::only(Service::Portolan)).await;
    let svp = dc.addr(Service::Portolan);
    let mut lab = Lab::new();
    let (ns, underlay) = lab.node(1);
    (dc, svp, lab, ns, underlay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_of_one_fabric_reach_each_other_across_nodes_and_no_one_else() {
    let mut t = TwoNodes::start().await;
    let buckets = t.buckets.clone();
    let (n1, cn1) = (t.nodes[0].ns.clone(), t.nodes[0].cn);
    let (n2, cn2) = (t.nodes[1].ns.clone(), t.nodes[1].cn);
    let o1 = t.nodes[0].overlay.clone();
    let o2 = t.nodes[1].overlay.clone();
    let lab = &mut t.lab;

    // Account A on vnet A, one instance per node; account B on vnet B, on node 2, in
    // the same subnet.
    let nodes = [(&n1, &o1, cn1), (&n2, &o2, cn2)];
    let made = [
        ("a1", 0, 11, [0x02, 0xfa, 0, 0, 0, 0x11], VNET_A),
        ("a2", 1, 12, [0x02, 0xfa, 0, 0, 0, 0x12], VNET_A),
        ("b", 1, 13, [0x02, 0xfb, 0, 0, 0, 0x13], VNET_B),
    ];
    let [a1, a2, b] = made.map(|(name, node, last, mac, vnet)| {
        let (ns, overlay, _) = nodes[node];
        let ip = Ipv4Addr::new(10, 40, 0, last);
        lab.instance(name, ns, overlay, Instance::new(ip, mac, vnet))
    });
    for (i, (_, node, ..)) in [&a1, &a2, &b].into_iter().zip(made) {
        nic_row(&buckets, i, nodes[node].2, false).await;
    }
    serve(&a1.ns, a1.ip, "a1");
    serve(&a2.ns, a2.ip, "a2");

    // Each side learns the other on demand (ARP misses answered from Portolan).
    let first = std::time::Instant::now();
    eventually("a1 fetches from a2 across the nodes", WAIT, || async {
        fetch_from(&a1.ns, a2.ip, Duration::from_secs(3))
            .await
            .as_deref()
            == Ok("a2")
    })
    .await;
    eprintln!(
        "first connection across the nodes after {:?}",
        first.elapsed()
    );
    let back = fetch_from(&a2.ns, a1.ip, Duration::from_secs(5)).await;
    assert_eq!(back.as_deref(), Ok("a1"), "a2 fetches from a1");
    assert!(
        has_forwarding(&n1, VNET_A, a2.mac),
        "node 1 learned where a2 is"
    );
    // A forwarding entry that went (aged out) is learned again from the next frame to
    // the MAC (an L2 miss, VL2), a1 still knowing a2's MAC.
    run(
        "bridge",
        &[
            "-n",
            &n1,
            "fdb",
            "del",
            &mac_text(a2.mac),
            "dev",
            &vxlan_name(VNET_A),
            "self",
        ],
    );
    assert!(!has_forwarding(&n1, VNET_A, a2.mac));
    let got = fetch_from(&a1.ns, a2.ip, Duration::from_secs(5)).await;
    assert_eq!(got.as_deref(), Ok("a2"), "a1 reaches a2 after an L2 miss");
    assert!(
        has_forwarding(&n1, VNET_A, a2.mac),
        "node 1 learned a2's MAC again"
    );

    // B, on another vnet in the same subnet, reaches neither: not by ARP, and not with
    // A2's MAC written into its neighbour table by hand.
    for ip in [a1.ip, a2.ip] {
        let got = fetch_from(&b.ns, ip, Duration::from_secs(3)).await;
        assert!(got.is_err(), "b reached {ip}: {got:?}");
    }
    run(
        "ip",
        &[
            "-n",
            &b.ns,
            "neigh",
            "replace",
            &a2.ip.to_string(),
            "lladdr",
            &mac_text(a2.mac),
            "dev",
            "eth0",
        ],
    );
    let got = fetch_from(&b.ns, a2.ip, Duration::from_secs(3)).await;
    assert!(got.is_err(), "b reached a2 with its MAC: {got:?}");
    assert!(
        !has_forwarding(&n2, VNET_B, a2.mac),
        "node 2 installed a2's MAC on vnet B"
    );

    // Node 1's agent stops: what it learned stays in the kernel, and a new one goes on.
    t.nodes[0].stop.cancel();
    drop(o1);
    let got = fetch_from(&a1.ns, a2.ip, Duration::from_secs(3)).await;
    assert_eq!(
        got.as_deref(),
        Ok("a2"),
        "reachable with node 1's agent stopped"
    );
    t.nodes[0].restart();
    assert_eq!(
        t.nodes[0].overlay.vnets(),
        vec![VNET_A],
        "the restarted overlay finds its devices"
    );
    let lab = &mut t.lab;

    // A2 goes: NAPI marks its row deleted and logs a VL2 entry for node 1. Node 1's
    // agent drains its log on its own (removing a2's forwarding entry, LOG_RM), and a2's
    // address stops answering there (its namespace, still serving, left in place to
    // show it is the overlay that cuts it off).
    let deleted = std::time::Instant::now();
    nic_row(&buckets, &a2, cn2, true).await;
    let event = log_entry(
        &buckets,
        cn1,
        VNET_A,
        LogRecord::Vl2 {
            mac: mac_number(a2.mac),
            vnet_id: VNET_A,
        },
    )
    .await;
    eventually("a2's address stops answering a1", WAIT, || async {
        fetch_from(&a1.ns, a2.ip, Duration::from_millis(200))
            .await
            .is_err()
    })
    .await;
    eprintln!(
        "a2's address stopped answering on node 1 {:?} after its row was deleted",
        deleted.elapsed()
    );
    drained(&buckets, &event, "node 1 removed its log entry", WAIT).await;
    assert!(
        !has_forwarding(&n1, VNET_A, a2.mac),
        "a2's forwarding entry is gone from node 1"
    );
    let got = fetch_from(&a1.ns, a2.ip, Duration::from_secs(3)).await;
    assert!(got.is_err(), "a2's address answers again: {got:?}");

    // A new instance takes a2's address on node 2 with another MAC: NAPI writes its row
    // and a VL3 entry for node 1, which looks the address up again (and tells a1 the
    // new MAC): a1 reaches the new instance, nothing stale in the way.
    let a3 = lab.instance(
        "a3",
        &n2,
        &o2,
        Instance::new(a2.ip, [0x02, 0xfa, 0, 0, 0, 0x33], VNET_A),
    );
    nic_row(&buckets, &a3, cn2, false).await;
    serve(&a3.ns, a3.ip, "a3");
    let event = log_entry(
        &buckets,
        cn1,
        VNET_A,
        LogRecord::Vl3 {
            ip: ip_text(a3.ip.into()),
            mac: mac_number(a3.mac),
            vlan: 2,
            vnet_id: VNET_A,
        },
    )
    .await;
    drained(&buckets, &event, "node 1 drained the VL3 entry", WAIT).await;
    let got = fetch_from(&a1.ns, a3.ip, Duration::from_secs(3)).await;
    assert_eq!(
        got.as_deref(),
        Ok("a3"),
        "a1 reaches the address's new instance"
    );

    for n in &t.nodes {
        n.stop.cancel();
    }
    // The last NIC of a vnet gone, its devices go.
    run("ip", &["-n", &n2, "link", "del", "hb"]);
    o2.prune().expect("prune");
    assert_eq!(o2.vnets(), vec![VNET_A]);
    assert!(
        !run("ip", &["-n", &n2, "-o", "link", "show"]).contains(&bridge_name(VNET_B)),
        "vnet B's bridge is gone from node 2"
    );
}

/// The node's SVP connection: Portolan named by host name (resolved, and again every
/// 30 s), a failure answered at once while the backoff runs rather than by connecting
/// again, and a working name used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_svp_connection_backs_off_and_takes_a_name() {
    let (dc, svp, _lab, n1, ul1) = one_node().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down = overlay(&n1, ul1, format!("localhost:{closed}"));
    let e = down.drain_once().await.expect_err("nothing listens");
    assert!(
        e.to_string().contains(&format!("localhost:{closed}")) || e.chain().contains("connect"),
        "{}",
        e.chain()
    );
    let e = down.drain_once().await.expect_err("still backing off");
    assert!(e.to_string().contains("next try in"), "{}", e.chain());
    drop(down);

    // Portolan answers the log of a node it knows.
    let buckets = Buckets::new(
        MorayClient::connect(&dc.moray_url())
            .await
            .expect("connect to Moray"),
    );
    underlay_row(&buckets, Uuid::new_v4(), ul1).await;
    let up = overlay(&n1, ul1, format!("localhost:{}", svp.port()));
    assert!(
        !up.drain_once().await.expect("Portolan reached by name"),
        "an empty log"
    );
}

/// A fabric network with `internet_nat`: its instances reach the external network
/// through the gateway address, answered on the node by its vnet's NAT namespace, and are
/// seen outside as the node's one NAT address (the hub's); a second account's NAT'd fabric
/// with the same subnet and gateway goes out the same way; a third without NAT does not
/// get through either; the external network cannot reach into a fabric; each vnet's NAT
/// goes with its last instance and the hub with the last NAT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internet_nat_fabric_reaches_the_external_gateway() {
    let (_dc, svp, mut lab, n1, ul1) = one_node().await;
    // The node's external bridge, with the external network's gateway on it (a
    // namespace of its own, serving).
    let outside = lab.netns("x");
    run("ip", &["-n", &n1, "link", "add", "extbr", "type", "bridge"]);
    run("ip", &["-n", &n1, "link", "set", "extbr", "up"]);
    run(
        "ip",
        &[
            "-n", &n1, "link", "add", "xgw", "type", "veth", "peer", "name", "eth0", "netns",
            &outside,
        ],
    );
    run(
        "ip",
        &["-n", &n1, "link", "set", "xgw", "master", "extbr", "up"],
    );
    let ext_gw = Ipv4Addr::new(203, 0, 113, 1);
    let nat_ip = Ipv4Addr::new(203, 0, 113, 10);
    run(
        "ip",
        &[
            "-n",
            &outside,
            "addr",
            "add",
            "203.0.113.1/24",
            "dev",
            "eth0",
        ],
    );
    run("ip", &["-n", &outside, "link", "set", "eth0", "up"]);
    serve_peer(&outside, ext_gw);

    let stop = CancellationToken::new();
    let o1 = overlay(&n1, ul1, svp);
    o1.start(stop.clone()).expect("the overlay starts");
    let gateway = Ipv4Addr::new(10, 40, 0, 1);
    let mut instance = |name: &str, last: u8, vnet: u32| {
        let i = lab.instance(
            name,
            &n1,
            &o1,
            Instance::new(
                Ipv4Addr::new(10, 40, 0, last),
                [0x02, 0xfa, 0, 0, 0, last],
                vnet,
            ),
        );
        run(
            "ip",
            &[
                "-n",
                &i.ns,
                "route",
                "add",
                "default",
                "via",
                &gateway.to_string(),
            ],
        );
        i
    };
    let a = instance("a", 11, VNET_A);
    let b = instance("b", 12, VNET_B);
    let c = instance("c", 13, VNET_C);
    let nat = Nat {
        gateway,
        prefix: 24,
        external_bridge: "extbr".into(),
        external_ip: nat_ip,
        external_prefix: 24,
        external_gateway: ext_gw,
    };
    let bad = Nat {
        external_bridge: "no such bridge!".into(),
        ..nat.clone()
    };
    let e = o1.ensure_nat(VNET_B, &bad).unwrap_err();
    assert!(e.to_string().contains("nat.external_bridge"), "{e}");
    let ns = o1.ensure_nat(VNET_A, &nat).expect("vnet A's NAT");
    lab.adopt(ns);
    lab.adopt(nat_hub(ul1));
    assert!(
        o1.ensure_nat(VNET_A, &nat).is_ok(),
        "a second ensure is a no-op"
    );
    let ns = o1.ensure_nat(VNET_C, &nat).expect("vnet C's NAT");
    lab.adopt(ns);

    let pings = |from: &Instance, to: Ipv4Addr, seq: u16, secs: u64| {
        let from = from.ns.clone();
        tokio::task::spawn_blocking(move || {
            dc_testkit::fabric::ping(&from, to, seq, Duration::from_secs(secs)).is_some()
        })
    };
    let fetches = |from: &Instance, to: Ipv4Addr, secs: u64| {
        let from = from.ns.clone();
        async move { fetch_from(&from, to, Duration::from_secs(secs)).await }
    };
    assert!(
        pings(&a, gateway, 1, 3).await.unwrap(),
        "a's gateway answers a ping"
    );
    assert!(
        pings(&a, ext_gw, 2, 3).await.unwrap(),
        "a reaches the external gateway by ping"
    );
    assert_eq!(
        fetches(&a, ext_gw, 3).await,
        Ok(nat_ip.to_string()),
        "a fetches from outside, seen as the node's NAT address"
    );
    assert_eq!(
        fetches(&c, ext_gw, 3).await,
        Ok(nat_ip.to_string()),
        "c, another NAT'd fabric with the same subnet, too"
    );

    // B, another account's fabric with the same subnet and gateway address but no NAT,
    // on the same node: no way out.
    assert!(
        !pings(&b, ext_gw, 3, 2).await.unwrap(),
        "b reached outside through another vnet's NAT"
    );
    let got = fetches(&b, ext_gw, 2).await;
    assert!(got.is_err(), "b fetched from outside: {got:?}");

    // The outside, routing the fabric's subnet at the NAT's address, does not get in.
    run(
        "ip",
        &[
            "-n",
            &outside,
            "route",
            "add",
            "10.40.0.0/24",
            "via",
            &nat_ip.to_string(),
        ],
    );
    let from = outside.clone();
    let got = tokio::task::spawn_blocking(move || {
        dc_testkit::fabric::ping(
            &from,
            Ipv4Addr::new(10, 40, 0, 11),
            4,
            Duration::from_secs(2),
        )
    })
    .await
    .unwrap();
    assert!(got.is_none(), "the outside reached a: {got:?}");

    // A vnet's NAT goes with its last instance; the hub stays for C's, then goes too.
    stop.cancel();
    let exists = |ns: String| std::path::Path::new("/run/netns").join(ns).exists();
    run("ip", &["-n", &n1, "link", "del", "ha"]);
    o1.prune().expect("prune");
    assert!(
        !o1.vnets().contains(&VNET_A),
        "vnet A's devices are gone with its NAT"
    );
    assert!(!exists(nat_netns(ul1, VNET_A)), "A's NAT namespace is gone");
    assert!(exists(nat_hub(ul1)), "the hub stays for C's NAT");
    assert_eq!(
        fetches(&c, ext_gw, 3).await,
        Ok(nat_ip.to_string()),
        "c still goes out"
    );
    run("ip", &["-n", &n1, "link", "del", "hc"]);
    o1.prune().expect("prune");
    assert!(!exists(nat_netns(ul1, VNET_C)), "C's NAT namespace is gone");
    assert!(!exists(nat_hub(ul1)), "the hub is gone with the last NAT");
}

/// The VXLAN port: a VXLAN packet for an instance sent to its node's other address (on
/// another network, as an admin address) does not reach the instance, while the same
/// packet to the node's underlay address from the underlay network does; with the
/// node's `triton_vxlan` table removed by hand, the other address lets it in too (what
/// the table stops). Its set goes with the node's last vnet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vxlan_port_takes_only_the_underlay() {
    let mut t = TwoNodes::start().await;
    let n1 = t.nodes[0].ns.clone();
    let n2 = t.nodes[1].ns.clone();
    let o1 = t.nodes[0].overlay.clone();
    let a = t.lab.instance(
        "a",
        &n1,
        &o1,
        Instance::new(
            Ipv4Addr::new(10, 40, 0, 11),
            [0x02, 0xfa, 0, 0, 0, 0x41],
            VNET_A,
        ),
    );
    let table = run(
        "ip",
        &[
            "netns",
            "exec",
            &n1,
            "nft",
            "list",
            "table",
            "inet",
            VXLAN_TABLE,
        ],
    );
    assert!(
        table.contains(&format!("{} . 198.18.0.0/24", t.nodes[0].underlay)),
        "{table}"
    );

    // Node 1's other network, from a namespace of its own.
    let other = t.lab.netns("adm");
    run(
        "ip",
        &[
            "-n", &other, "link", "add", "eth0", "type", "veth", "peer", "name", "adm0", "netns",
            &n1,
        ],
    );
    run(
        "ip",
        &["-n", &n1, "addr", "add", "198.51.100.1/24", "dev", "adm0"],
    );
    run("ip", &["-n", &n1, "link", "set", "adm0", "up"]);
    run(
        "ip",
        &[
            "-n",
            &other,
            "addr",
            "add",
            "198.51.100.2/24",
            "dev",
            "eth0",
        ],
    );
    run("ip", &["-n", &other, "link", "set", "eth0", "up"]);

    let listener = udp_listener(
        &a.ns,
        std::net::SocketAddr::from((a.ip, 7777)),
        Duration::from_secs(2),
    );
    let packet = |text: &[u8]| {
        vxlan_udp(
            VNET_A,
            &a,
            [0x02, 0xee, 0, 0, 0, 1],
            Ipv4Addr::new(10, 40, 0, 99),
            7777,
            text,
        )
    };
    let admin_addr = std::net::SocketAddr::from(([198, 51, 100, 1], 4789));
    let underlay_addr = std::net::SocketAddr::from((t.nodes[0].underlay, 4789));

    send_udp(&other, admin_addr, packet(b"by the admin address"));
    assert_eq!(
        received(&listener),
        None,
        "a VXLAN packet got in by another address"
    );
    send_udp(&n2, underlay_addr, packet(b"by the underlay"));
    assert_eq!(
        received(&listener).as_deref(),
        Some(&b"by the underlay"[..]),
        "the underlay path works"
    );
    // Without the table, the other address lets it in: the table is what stops it.
    run(
        "ip",
        &[
            "netns",
            "exec",
            &n1,
            "nft",
            "delete",
            "table",
            "inet",
            VXLAN_TABLE,
        ],
    );
    send_udp(&other, admin_addr, packet(b"unguarded"));
    assert_eq!(
        received(&listener).as_deref(),
        Some(&b"unguarded"[..]),
        "with no table the admin address takes VXLAN"
    );

    // A restarted agent's overlay that finds vnet devices makes the table again, and it
    // goes with the node's last vnet.
    let n1_overlay = overlay(&n1, t.nodes[0].underlay, t.svp);
    let table = run("ip", &["netns", "exec", &n1, "nft", "list", "tables"]);
    assert!(
        table.contains(VXLAN_TABLE),
        "a restarted overlay that finds devices guards the port: {table}"
    );
    run("ip", &["-n", &n1, "link", "del", "ha"]);
    n1_overlay.prune().expect("prune");
    assert!(n1_overlay.vnets().is_empty());
    let table = run("ip", &["netns", "exec", &n1, "nft", "list", "tables"]);
    assert!(
        !table.contains(VXLAN_TABLE),
        "the table goes with the node's last vnet: {table}"
    );
}

/// `internet_nat` on its way to the compute node: an instance created through CloudAPI
/// with no network named gets the account's default fabric network (NAPI's, which has a
/// gateway and `internet_nat`), and the NIC spec its node's agent holds says
/// `internet_nat` on that NIC (with its vnet and gateway) and not on the external one; an
/// instance on a fabric network made with a gateway but `--no-nat` gets it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internet_nat_reaches_the_compute_nodes_nic_spec() {
    let dc = Dc::start(Options::cloudapi_fabrics()).await;
    let carol = dc.tenant("carol", "ed25519").await;
    dc.catalog(1024, b"simulated".to_vec()).await;
    eventually("carol's default fabric network", WAIT, || async {
        carol
            .triton(&["network", "get-default", "-j"])
            .await
            .stdout
            .contains("My-Fabric-Network")
    })
    .await;
    let spec = async |id: &str| {
        let uuid = Uuid::parse_str(id).unwrap();
        dc.sims[0]
            .get(uuid)
            .await
            .expect("the node's instance")
            .spec
    };

    let id = carol.create_instance("web0").await;
    let nics = spec(&id).await.nics;
    assert_eq!(nics.len(), 2, "{nics:?}");
    let fabric = nics.iter().find(|n| n.nic_tag.starts_with("sdc_overlay"));
    let fabric = fabric.expect("a fabric NIC");
    assert!(fabric.internet_nat, "{fabric:?}");
    assert!(
        fabric.vnet_id != 0 && fabric.gateway.is_some(),
        "{fabric:?}"
    );
    let external = nics.iter().find(|n| n.nic_tag == "external").unwrap();
    assert!(!external.internet_nat, "{external:?}");

    carol
        .ok(&["vlan", "create", "-n", "quiet", "-j", "310"])
        .await;
    carol
        .ok(&[
            "network",
            "create",
            "-j",
            "--name",
            "no-nat",
            "--subnet",
            "192.168.40.0/24",
            "--start-ip",
            "192.168.40.10",
            "--end-ip",
            "192.168.40.250",
            "--gateway",
            "192.168.40.1",
            "--no-nat",
            "310",
        ])
        .await;
    let id = carol
        .create_instance_with("quiet0", &["--network", "no-nat"], "g1-small")
        .await;
    let nics = spec(&id).await.nics;
    assert_eq!(nics.len(), 1, "{nics:?}");
    assert!(nics[0].nic_tag.starts_with("sdc_overlay"), "{nics:?}");
    assert!(!nics[0].internet_nat, "{nics:?}");
}
