//! dhcpd with real clients in network namespaces on test bridges: busybox `udhcpc` and
//! ISC `dhclient` get their admin NIC's address from NAPI with the router, resolvers,
//! domain and boot file; the same MAC gets the same address again; UEFI and iPXE clients
//! get their boot files; `tftp` fetches the iPXE binary and the platform's kernel byte for
//! byte; iPXE's script comes over HTTP from CNAPI's boot parameters. A client on another
//! network gets nothing, a MAC NAPI has on another network is refused, and a client behind
//! ISC `dhcrelay` gets an address from the relay's network.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Bed, IPXE_DIR, PLATFORM, kernel_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use triton_proto::cnapi::v1 as cnapi_pb;
use triton_proto::napi::v1 as napi_pb;

/// An HTTP/1.0 GET: status and body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: booter\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let at = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..at]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, buf[at + 4..].to_vec())
}

/// NAPI's NIC for `mac`.
async fn nic_of(bed: &Bed, mac: &str) -> napi_pb::Nic {
    bed.dc
        .napi()
        .get_nic(napi_pb::GetNicRequest { mac: mac.into() })
        .await
        .unwrap()
        .into_inner()
}

/// CNAPI's default boot parameters: the test platform, `console=ttyS0`, `flags`.
async fn set_default_params(bed: &Bed, flags: &[&str]) {
    bed.dc
        .cnapi()
        .set_boot_params(cnapi_pb::SetBootParamsRequest {
            server_uuid: "default".into(),
            platform: PLATFORM.into(),
            kernel_args: [("console".to_string(), "ttyS0".to_string())].into(),
            kernel_flags: flags.iter().map(|f| f.to_string()).collect(),
            replace: true,
        })
        .await
        .unwrap();
}

fn in_range(ip: &str, net: &napi_pb::Network) -> bool {
    let prefix = net.subnet.trim_end_matches("0/24");
    ip.strip_prefix(prefix)
        .and_then(|h| h.parse::<u8>().ok())
        .is_some_and(|h| (100..=200).contains(&h))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_clients_boot() {
    let bed = Bed::start("a").await;
    let server = bed.server_ip().to_string();
    let resolvers = format!("{} 10.0.0.53", bed.admin_net.resolvers.first().unwrap());

    // busybox udhcpc: a PXE ROM's first contact makes the admin NIC in NAPI.
    let mac = "02:b0:00:00:00:01";
    let c1 = bed.client("c1", 0, mac);
    let got = c1.udhcpc(&[]).expect("udhcpc gets a lease");
    assert!(in_range(&got.ip, &bed.admin_net), "{got:?}");
    assert_eq!(got.router, bed.admin_net.gateway);
    assert_eq!(got.dns, resolvers);
    assert_eq!(got.boot_file, "undionly.kpxe");
    assert_eq!(got.server, server);
    assert_eq!(got.domain, "test.example");
    let nic = nic_of(&bed, mac).await;
    assert_eq!(nic.ip, got.ip);
    assert_eq!(nic.network_uuid, bed.admin_net.uuid);
    assert_eq!(nic.belongs_to_type, "server");
    assert_eq!(nic.owner_uuid, dc_testkit::ADMIN_UUID);

    // The same MAC again: the same address (NAPI's NIC, no second one).
    let again = c1.udhcpc(&[]).expect("a second lease");
    assert_eq!(again.ip, got.ip);
    let nics = bed
        .dc
        .napi()
        .list_nics(napi_pb::ListNicsRequest {
            network_uuid: Some(bed.admin_net.uuid.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .nics;
    assert_eq!(nics.iter().filter(|n| n.mac == mac).count(), 1);

    // UEFI x86-64 (option 93 = 7) gets snponly.efi; iPXE (option 77) its script's URL.
    let uefi = c1.udhcpc(&["-x", "0x5d:0007"]).expect("UEFI lease");
    assert_eq!(uefi.boot_file, "snponly.efi");
    let ipxe = c1.udhcpc(&["-x", "0x4d:69505845"]).expect("iPXE lease");
    assert_eq!(
        ipxe.boot_file,
        format!(
            "http://{server}:{}/boot/{}.ipxe",
            bed.booter.http_addr.port(),
            mac.replace(':', "")
        )
    );

    // ISC dhclient on another MAC.
    let c2 = bed.client("c2", 0, "02:b0:00:00:00:02");
    let d = c2.dhclient().expect("dhclient gets a lease");
    assert!(in_range(&d.ip, &bed.admin_net), "{d:?}");
    assert_ne!(d.ip, got.ip);
    assert_eq!(d.router, bed.admin_net.gateway);
    assert_eq!(d.dns, resolvers);
    assert_eq!(d.boot_file, "undionly.kpxe");
    assert_eq!(d.server, server);

    // TFTP from the client, which now has its address: the iPXE binary as Debian ships it
    // (tftp-hpa, 512-byte blocks) and the platform's kernel (busybox, blksize 1428).
    let want = std::fs::read(format!("{IPXE_DIR}/undionly.kpxe")).unwrap();
    let fetched = c1.tftp_get(bed.server_ip(), "undionly.kpxe").unwrap();
    assert!(
        fetched == want,
        "undionly.kpxe differs: {} bytes of {}",
        fetched.len(),
        want.len()
    );
    let kernel = c1
        .busybox_tftp_get(bed.server_ip(), &format!("os/{PLATFORM}/vmlinuz"), 1428)
        .unwrap();
    assert!(kernel == kernel_bytes(), "vmlinuz differs");
    let refused = c1
        .tftp_get(bed.server_ip(), "../../../etc/passwd")
        .unwrap_err();
    assert!(refused.contains("outside"), "{refused}");
    let missing = c1.tftp_get(bed.server_ip(), "os/nope/vmlinuz").unwrap_err();
    assert!(missing.contains("no such file"), "{missing}");

    // iPXE's script from CNAPI's boot parameters, over HTTP and TFTP.
    set_default_params(&bed, &["quiet"]).await;
    let (status, body) = http_get(bed.booter.http_addr, &format!("/boot/{mac}.ipxe")).await;
    let script = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{script}");
    let base = format!("http://{server}:{}", bed.booter.http_addr.port());
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    for want in [
        format!("kernel {base}/os/{PLATFORM}/vmlinuz "),
        "console=ttyS0".to_string(),
        format!("triton.admin_ip={} ", got.ip),
        format!("triton.admin_mac={mac} "),
        format!("triton.cnapi_url={} ", bed.config.cnapi_url),
        " quiet\n".to_string(),
        format!("initrd --name initrd {base}/os/{PLATFORM}/initrd\n"),
        "\nboot\n".to_string(),
    ] {
        assert!(script.contains(&want), "{want:?} not in {script}");
    }
    let over_tftp = c1
        .tftp_get(
            bed.server_ip(),
            &format!("boot/{}.ipxe", mac.replace(':', "")),
        )
        .unwrap();
    assert_eq!(String::from_utf8(over_tftp).unwrap(), script);
    let (status, body) = http_get(bed.booter.http_addr, &format!("/os/{PLATFORM}/vmlinuz")).await;
    assert_eq!(status, 200);
    assert!(body == kernel_bytes());
    let (status, _) = http_get(bed.booter.http_addr, "/boot/02:b0:00:00:00:99.ipxe").await;
    assert_eq!(status, 502, "a MAC with no admin NIC has no script");
    let (status, _) = http_get(bed.booter.http_addr, "/ping").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_admin_network_is_served() {
    let bed = Bed::start("b").await;

    // A client on another network's bridge: dhcpd never sees it.
    let outsider = bed.client("o1", 1, "02:b1:00:00:00:01");
    assert_eq!(outsider.udhcpc(&[]), None);
    let none = bed
        .dc
        .napi()
        .get_nic(napi_pb::GetNicRequest {
            mac: "02:b1:00:00:00:01".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(none.code(), tonic::Code::NotFound);

    // A MAC NAPI has on another network is refused, and its NIC left as it was.
    let taken = "02:b1:00:00:00:02";
    let nic = bed
        .dc
        .napi()
        .create_nic(napi_pb::CreateNicRequest {
            mac: Some(taken.into()),
            owner_uuid: dc_testkit::ADMIN_UUID.into(),
            belongs_to_uuid: uuid::Uuid::new_v4().to_string(),
            belongs_to_type: "zone".into(),
            network_uuid: Some(bed.other_net.uuid.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let c = bed.client("t1", 0, taken);
    assert_eq!(c.udhcpc(&[]), None);
    let after = nic_of(&bed, taken).await;
    assert_eq!((after.ip, after.network_uuid), (nic.ip, nic.network_uuid));

    // Behind ISC dhcrelay (rack bridge below, admin bridge above, option 82 added): an
    // address from the relay's network, its gateway the relay.
    let relay = bed.client("r1", 0, "02:b1:00:00:00:0a");
    let admin = &bed.host.bridges[0];
    let rack = &bed.host.bridges[2];
    relay.run(&[
        "ip",
        "addr",
        "add",
        &format!("10.{}.{}.2/24", admin.net, admin.subnet),
        "dev",
        "eth0",
    ]);
    let down = format!("{}r1d", bed.host.config.link_prefix);
    let down_peer = format!("{down}p");
    for args in [
        vec![
            "link",
            "add",
            down.as_str(),
            "type",
            "veth",
            "peer",
            "name",
            down_peer.as_str(),
        ],
        vec![
            "link",
            "set",
            down.as_str(),
            "master",
            rack.name.as_str(),
            "up",
        ],
        vec![
            "link",
            "set",
            down_peer.as_str(),
            "netns",
            relay.ns.as_str(),
        ],
    ] {
        let out = std::process::Command::new("ip")
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    }
    relay.run(&["ip", "link", "set", &down_peer, "name", "eth1"]);
    relay.run(&[
        "ip",
        "addr",
        "add",
        &format!("10.{}.{}.2/24", rack.net, rack.subnet),
        "dev",
        "eth1",
    ]);
    relay.run(&["ip", "link", "set", "eth1", "up"]);
    let mut dhcrelay = relay
        .cmd(&[
            "dhcrelay",
            "-4",
            "-d",
            "-a",
            "-pf",
            relay.dir.join("dhcrelay.pid").to_str().unwrap(),
            "-id",
            "eth1",
            "-iu",
            "eth0",
            &bed.server_ip().to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let behind = bed.client("k1", 2, "02:b1:00:00:00:0b");
    let got = behind.udhcpc(&["-t", "5"]);
    let _ = dhcrelay.kill();
    let _ = dhcrelay.wait();
    let got = got.expect("a lease through the relay");
    assert!(in_range(&got.ip, &bed.rack_net), "{got:?}");
    assert_eq!(got.router, bed.rack_net.gateway);
    let nic = nic_of(&bed, "02:b1:00:00:00:0b").await;
    assert_eq!(nic.network_uuid, bed.rack_net.uuid);
}

/// Triton's booter cache: a MAC dhcpd has answered keeps booting from the cache file while
/// NAPI and CNAPI cannot be reached. dhcpd is stopped and started again (the same data
/// dir) with NAPI and CNAPI at an address nothing listens on, as when their zones are
/// down: the known MAC gets its address, router and boot file, and its iPXE script with
/// the boot parameters CNAPI gave before; a new MAC gets nothing. The cache file itself
/// is not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn known_macs_boot_while_napi_is_down() {
    let mut bed = Bed::start("c").await;
    set_default_params(&bed, &[]).await;
    let mac = "02:b0:00:00:0c:01";
    let c1 = bed.client("c1", 0, mac);
    let got = c1.udhcpc(&[]).expect("udhcpc gets a lease");
    let (status, before) = http_get(bed.booter.http_addr, &format!("/boot/{mac}.ipxe")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&before));

    // dhcpd writes its cache within a second of a change; it is written last on shutdown.
    bed.stop.cancel();
    (&mut bed.booter.task).await.unwrap().unwrap();
    let cache = bed.data_dir.path().join("cache/booter.json");
    let text = std::fs::read_to_string(&cache).expect("the cache file");
    assert!(text.contains(mac) && text.contains(&got.ip), "{text}");

    let down = booter::Config {
        napi_url: "http://127.0.0.1:9".into(),
        cnapi_url: "http://127.0.0.1:9".into(),
        ..bed.config.clone()
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let booter = booter::start(down.clone(), stop.clone())
        .await
        .expect("dhcpd starts without NAPI");

    let again = c1.udhcpc(&[]).expect("a known MAC boots with NAPI down");
    assert_eq!(again.ip, got.ip);
    assert_eq!(again.router, bed.admin_net.gateway);
    assert_eq!(again.boot_file, "undionly.kpxe");
    let (status, body) = http_get(booter.http_addr, &format!("/boot/{mac}.ipxe")).await;
    let script = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{script}");
    for want in [
        format!("/os/{PLATFORM}/vmlinuz "),
        "console=ttyS0".to_string(),
        format!("triton.admin_ip={} ", got.ip),
        format!("triton.cnapi_url={}\n", down.cnapi_url),
    ] {
        assert!(script.contains(&want), "{want:?} not in {script}");
    }

    let c2 = bed.client("c2", 0, "02:b0:00:00:0c:02");
    assert!(
        c2.udhcpc(&[]).is_none(),
        "a MAC NAPI never gave has no address while NAPI is down"
    );
    let (status, _) = http_get(booter.http_addr, "/cache/booter.json").await;
    assert_eq!(status, 403);
}
