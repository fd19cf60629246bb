//! CoaL's linux compute nodes (`coal up --linux-cns N`). Node 1 is the headnode's
//! cn-agent of deploy/services.toml, in the host's network namespace, as with one node.
//! Node `i` (2..=N) is a copy of it, `cn-agent-<i>`, in a network namespace of its own,
//! `coalcn<i>`:
//!
//! * one veth per `[coal] bridges` entry joins the namespace to the host's bridge: for
//!   the admin and tenant bridges a bridge of the same name inside (`coal-admin`,
//!   `coal-external`) with the veth as its uplink, so the node's `nic_tags` are the
//!   headnode's and its instances are on the same L2 networks as the headnode's; for
//!   the underlay (`nic_tag = "sdc_underlay"`) the veth end `underlay0` itself;
//! * its admin address (on its `coal-admin`) is host 20 + i of the admin network
//!   (10.99.99.22 for node 2), its underlay address host 20 + i of the underlay
//!   network (10.99.100.22); node 1's are the host's own (10.99.99.7, 10.99.100.7);
//! * its own state dir (`data/cn-agent-<i>`, hence its own server UUID), cgroup parent
//!   (`<parent><i>`), netns prefix (`coal<i>-`) and link prefix (`zc<i>`, seen only
//!   inside its namespace), so no two agents touch each other's instances;
//! * its agent listens on its admin address, where CNAPI (on the host) reaches it;
//! * with an external bridge in `[coal] bridges`, its fabrics' NAT address
//!   (`[overlay] nat_ip`) is host 255 - i of the external network (10.88.88.253 for node
//!   2), outside NAPI's provision range there, and its NAT gateway the host's address on
//!   that bridge (10.88.88.2).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::setup;
use crate::deploy::{Bridge, parse_cidr};
use crate::error::Error;

/// The nic tag of the underlay network (Triton's).
pub const UNDERLAY_TAG: &str = "sdc_underlay";
/// The nic tag of the admin network.
pub const ADMIN_TAG: &str = "admin";
/// The network namespaces of nodes 2..N are `coalcn<i>`, and the host ends of their
/// veths `coalcn<i>-<tag>`.
pub const NETNS_STEM: &str = "coalcn";
/// At most this many linux nodes (their addresses stay below NAPI's provision range of
/// CoaL's admin network, which starts at host 38).
pub const MAX_LINUX_CNS: u32 = 16;
/// Node i's admin and underlay addresses are host `HOST_BASE + i` of their networks.
const HOST_BASE: u32 = 20;
/// The name of the underlay veth inside a node's namespace.
pub const UNDERLAY_LINK: &str = "underlay0";
/// The nic tag of the external network, where the nodes' fabric NATs are.
pub const EXTERNAL_TAG: &str = "external";
/// Node i's NAT address is host `NAT_TOP - i` of the external network.
const NAT_TOP: u32 = 255;

/// The names node 1 (the headnode's agent) uses, from its `linux` config section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub cgroup_parent: String,
    pub netns_prefix: String,
    pub link_prefix: String,
}

/// One linux compute node of CoaL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxCn {
    /// 1..=N.
    pub index: u32,
    /// Its service (pid file, log, config, data dir): `cn-agent`, `cn-agent-2`, ...
    pub service: String,
    /// Its network namespace; none for node 1 (the host's).
    pub netns: Option<String>,
    /// Its address on the admin network, and that network's prefix length.
    pub admin_ip: Ipv4Addr,
    pub admin_len: u8,
    /// Its underlay address (none without an underlay bridge in `[coal] bridges`).
    pub underlay_ip: Option<Ipv4Addr>,
    pub underlay_len: u8,
    /// Its fabrics' NAT address on the external network, that network's prefix length,
    /// and its gateway (the host's address there); none without an external bridge.
    pub nat: Option<(Ipv4Addr, u8, Ipv4Addr)>,
    pub names: Names,
}

impl LinuxCn {
    /// `/run/netns/<name>`.
    pub fn netns_path(&self) -> Option<PathBuf> {
        self.netns.as_ref().map(|n| Path::new("/run/netns").join(n))
    }

    /// The host end of the veth joining this node to `bridge` (`coalcn2-adm`).
    pub fn host_link(&self, bridge: &Bridge) -> Option<String> {
        let ns = self.netns.as_ref()?;
        let short = match bridge.nic_tag.as_str() {
            ADMIN_TAG => "adm".to_string(),
            UNDERLAY_TAG => "ul".to_string(),
            tag => tag.chars().take(3).collect(),
        };
        Some(format!("{ns}-{short}"))
    }

    /// The end of that veth inside the namespace: `underlay0` for the underlay, else
    /// `up-<tag>` (the uplink of the bridge of the same name inside).
    pub fn inner_link(bridge: &Bridge) -> String {
        if bridge.nic_tag == UNDERLAY_TAG {
            return UNDERLAY_LINK.to_string();
        }
        let short: String = bridge.nic_tag.chars().take(8).collect();
        format!("up-{short}")
    }
}

/// The `n` linux nodes, node 1 being the headnode's `service` with `names`.
pub fn plan(
    n: u32,
    service: &str,
    names: &Names,
    bridges: &[Bridge],
) -> Result<Vec<LinuxCn>, Error> {
    if n == 0 || n > MAX_LINUX_CNS {
        return Err(Error::Usage(format!(
            "--linux-cns: {n} is not between 1 and {MAX_LINUX_CNS}"
        )));
    }
    let host = |tag: &str| -> Result<Option<(Ipv4Addr, u8)>, Error> {
        let Some(b) = bridges.iter().find(|b| b.nic_tag == tag) else {
            return Ok(None);
        };
        parse_cidr(&b.address).map(Some).ok_or_else(|| {
            Error::Usage(format!(
                "[coal] bridges: {}: address {:?} is not a.b.c.d/n",
                b.name, b.address
            ))
        })
    };
    let (admin_host, admin_len) = host(ADMIN_TAG)?.ok_or_else(|| {
        Error::Usage("--linux-cns: [coal] bridges has no bridge with nic_tag \"admin\"".into())
    })?;
    let underlay = host(UNDERLAY_TAG)?;
    let external = host(EXTERNAL_TAG)?;
    let nat = |i: u32| -> Option<(Ipv4Addr, u8, Ipv4Addr)> {
        let (gateway, len) = external?;
        let size = 1u64 << (32 - u32::from(len));
        let host_no = NAT_TOP.checked_sub(i)?;
        // Only on a network large enough to hold it above the gateway.
        (u64::from(NAT_TOP) < size && host_no > 1).then_some(())?;
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        let ip = Ipv4Addr::from((u32::from(gateway) & mask) + host_no);
        (ip != gateway).then_some((ip, len, gateway))
    };
    // cn-agent takes link prefixes of 1 to 4 characters; node i's is node 1's and i.
    let longest = format!("{}{n}", names.link_prefix);
    if n > 1 && longest.chars().count() > 4 {
        return Err(Error::Usage(format!(
            "--linux-cns {n}: node {n}'s link prefix would be {longest:?}, longer than cn-agent's 4 characters; shorten the cn-agent's linux.link_prefix in services.toml"
        )));
    }
    let nth = |(ip, len): (Ipv4Addr, u8), i: u32| -> Result<Ipv4Addr, Error> {
        let size = 1u64 << (32 - u32::from(len));
        let host_no = HOST_BASE + i;
        if u64::from(host_no) >= size - 1 {
            return Err(Error::Usage(format!(
                "--linux-cns: node {i} would be host {host_no} of {ip}/{len}, which has {} addresses",
                size.saturating_sub(2)
            )));
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        Ok(Ipv4Addr::from((u32::from(ip) & mask) + host_no))
    };
    let mut out = Vec::new();
    for i in 1..=n {
        let cn = if i == 1 {
            LinuxCn {
                index: 1,
                service: service.to_string(),
                netns: None,
                admin_ip: admin_host,
                admin_len,
                underlay_ip: underlay.map(|u| u.0),
                underlay_len: underlay.map(|u| u.1).unwrap_or(0),
                nat: nat(i),
                names: names.clone(),
            }
        } else {
            LinuxCn {
                index: i,
                service: format!("{service}-{i}"),
                netns: Some(format!("{NETNS_STEM}{i}")),
                admin_ip: nth((admin_host, admin_len), i)?,
                admin_len,
                underlay_ip: underlay.map(|u| nth(u, i)).transpose()?,
                underlay_len: underlay.map(|u| u.1).unwrap_or(0),
                nat: nat(i),
                names: Names {
                    cgroup_parent: format!("{}{i}", names.cgroup_parent),
                    netns_prefix: format!("{}{i}-", names.netns_prefix.trim_end_matches('-')),
                    link_prefix: format!("{}{i}", names.link_prefix),
                },
            }
        };
        out.push(cn);
    }
    Ok(out)
}

/// Node `cn`'s config, from the headnode agent's rendered one: its own listen and
/// advertised address (its admin address, same port), its `linux` names, and the
/// `overlay` section (its underlay address and Portolan's) when `portolan` is given.
pub fn configure(config: &mut Table, cn: &LinuxCn, portolan: Option<&str>) {
    if cn.netns.is_some() {
        let port = config
            .get("listen")
            .and_then(Value::as_str)
            .and_then(|l| l.rsplit_once(':'))
            .map(|(_, p)| p.to_string())
            .unwrap_or_else(|| "5309".into());
        config.insert(
            "listen".into(),
            Value::String(format!("{}:{port}", cn.admin_ip)),
        );
        config.insert(
            "advertise_url".into(),
            Value::String(format!("http://{}:{port}", cn.admin_ip)),
        );
        let linux = config
            .entry("linux")
            .or_insert_with(|| Value::Table(Table::new()));
        if let Value::Table(t) = linux {
            t.insert(
                "cgroup_parent".into(),
                Value::String(cn.names.cgroup_parent.clone()),
            );
            t.insert(
                "netns_prefix".into(),
                Value::String(cn.names.netns_prefix.clone()),
            );
            t.insert(
                "link_prefix".into(),
                Value::String(cn.names.link_prefix.clone()),
            );
        }
    }
    if let (Some(portolan), Some(ip)) = (portolan, cn.underlay_ip) {
        let mut overlay = Table::new();
        overlay.insert("underlay_ip".into(), Value::String(ip.to_string()));
        overlay.insert("portolan".into(), Value::String(portolan.to_string()));
        if let Some((ip, len, gateway)) = cn.nat {
            overlay.insert("nat_ip".into(), Value::String(format!("{ip}/{len}")));
            overlay.insert("nat_gateway".into(), Value::String(gateway.to_string()));
            overlay.insert("nat_nic_tag".into(), Value::String(EXTERNAL_TAG.into()));
        }
        config.insert("overlay".into(), Value::Table(overlay));
    }
}

/// Makes node `cn`'s namespace, its veths, bridges and addresses, whatever of them is
/// missing. Returns what it made. Node 1 has nothing to make.
pub fn set_up(cn: &LinuxCn, bridges: &[Bridge]) -> Result<Vec<String>, Error> {
    let (Some(ns), Some(path)) = (cn.netns.as_deref(), cn.netns_path()) else {
        return Ok(Vec::new());
    };
    let mut made = Vec::new();
    if !path.exists() {
        setup::run("ip", &["netns", "add", ns])?;
        made.push(format!("network namespace {ns}"));
    }
    let inside = |args: &[&str]| {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        setup::run("ip", &all)
    };
    let exists_inside = |name: &str| inside(&["link", "show", "dev", name]).is_ok();
    inside(&["link", "set", "dev", "lo", "up"])?;
    for b in bridges {
        let Some(host_end) = cn.host_link(b) else {
            continue;
        };
        let inner = LinuxCn::inner_link(b);
        if !setup::link_exists(&host_end) {
            // A half-made pair (the inner end left from an earlier try) goes first.
            if exists_inside(&inner) {
                inside(&["link", "delete", "dev", &inner])?;
            }
            setup::run(
                "ip",
                &[
                    "link", "add", "name", &host_end, "type", "veth", "peer", "name", &inner,
                    "netns", ns,
                ],
            )?;
            made.push(format!("veth {host_end} ({} to {ns})", b.name));
        }
        setup::run("ip", &["link", "set", "dev", &host_end, "master", &b.name])?;
        setup::run("ip", &["link", "set", "dev", &host_end, "up"])?;
        let (device, address) = if b.nic_tag == UNDERLAY_TAG {
            let ip = cn.underlay_ip.map(|ip| format!("{ip}/{}", cn.underlay_len));
            (inner.clone(), ip)
        } else {
            if !exists_inside(&b.name) {
                inside(&["link", "add", "name", &b.name, "type", "bridge"])?;
                made.push(format!("bridge {} in {ns}", b.name));
            }
            inside(&["link", "set", "dev", &inner, "master", &b.name])?;
            inside(&["link", "set", "dev", &inner, "up"])?;
            let ip = (b.nic_tag == ADMIN_TAG).then(|| format!("{}/{}", cn.admin_ip, cn.admin_len));
            (b.name.clone(), ip)
        };
        if let Some(address) = address {
            let have = inside(&["-o", "addr", "show", "dev", &device])?;
            if !have.contains(&format!(" {address} ")) {
                inside(&["addr", "add", &address, "dev", &device])?;
            }
        }
        inside(&["link", "set", "dev", &device, "up"])?;
    }
    Ok(made)
}

/// `bin/coal-zlogin UUID [CMD...]`: `zlogin` with the config of whichever node holds
/// the instance (`data/<node>/zones/<uuid>`).
pub fn zlogin_wrapper(coal_dir: &Path, cns: &[LinuxCn]) -> String {
    let dir = super::shell_quote(&coal_dir.display().to_string());
    let services: Vec<String> = cns.iter().map(|c| c.service.clone()).collect();
    format!(
        r#"#!/bin/sh
# coal-zlogin UUID [CMD...]: zlogin into an instance on any of CoaL's linux compute
# nodes ({nodes}). Written by `sdcadm coal up`.
set -eu
[ $# -ge 1 ] || {{ echo "usage: coal-zlogin UUID [CMD...]" >&2; exit 2; }}
dir={dir}
for node in {list}; do
    if [ -e "$dir/data/$node/zones/$1/zone.json" ]; then
        exec "$dir/bin/zlogin" --config "$dir/etc/$node.toml" "$@"
    fi
done
echo "coal-zlogin: no instance $1 on {nodes}" >&2
exit 126
"#,
        nodes = services.join(", "),
        list = services.join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridges() -> Vec<Bridge> {
        let b = |name: &str, tag: &str, address: &str| Bridge {
            name: name.into(),
            nic_tag: tag.into(),
            address: address.into(),
        };
        vec![
            b("coal-admin", "admin", "10.99.99.7/24"),
            b("coal-external", "external", "10.88.88.2/24"),
            b("coal-underlay", "sdc_underlay", "10.99.100.7/24"),
        ]
    }

    fn names() -> Names {
        Names {
            cgroup_parent: "triton-coal".into(),
            netns_prefix: "coal-".into(),
            link_prefix: "zc".into(),
        }
    }

    fn distinct<T: PartialEq + std::fmt::Debug>(what: &str, v: &[T]) {
        for (i, a) in v.iter().enumerate() {
            for b in &v[i + 1..] {
                assert_ne!(a, b, "two nodes share a {what}");
            }
        }
    }

    #[test]
    fn one_node_is_the_headnode_as_before() {
        let cns = plan(1, "cn-agent", &names(), &bridges()).unwrap();
        assert_eq!(cns.len(), 1);
        let c = &cns[0];
        assert_eq!(c.service, "cn-agent");
        assert_eq!(c.netns, None);
        assert_eq!(c.admin_ip.to_string(), "10.99.99.7");
        assert_eq!(
            c.underlay_ip.map(|i| i.to_string()).as_deref(),
            Some("10.99.100.7")
        );
        assert_eq!(c.names, names());
        // Its config is the headnode's, the overlay section aside.
        let mut config = Table::new();
        config.insert("listen".into(), Value::String("127.0.0.1:5309".into()));
        let before = config.clone();
        configure(&mut config, c, None);
        assert_eq!(config, before);
    }

    #[test]
    fn every_node_has_its_own_names_and_addresses() {
        let cns = plan(4, "cn-agent", &names(), &bridges()).unwrap();
        let services: Vec<&str> = cns.iter().map(|c| c.service.as_str()).collect();
        assert_eq!(
            services,
            ["cn-agent", "cn-agent-2", "cn-agent-3", "cn-agent-4"]
        );
        assert_eq!(cns[1].netns.as_deref(), Some("coalcn2"));
        assert_eq!(cns[1].admin_ip.to_string(), "10.99.99.22");
        assert_eq!(
            cns[3].underlay_ip.map(|i| i.to_string()).as_deref(),
            Some("10.99.100.24")
        );
        assert_eq!(cns[2].names.netns_prefix, "coal3-");
        distinct("service", &services);
        distinct(
            "namespace",
            &cns.iter().map(|c| c.netns.clone()).collect::<Vec<_>>(),
        );
        distinct(
            "admin address",
            &cns.iter().map(|c| c.admin_ip).collect::<Vec<_>>(),
        );
        distinct(
            "underlay address",
            &cns.iter().map(|c| c.underlay_ip).collect::<Vec<_>>(),
        );
        distinct(
            "cgroup parent",
            &cns.iter()
                .map(|c| c.names.cgroup_parent.clone())
                .collect::<Vec<_>>(),
        );
        distinct(
            "link prefix",
            &cns.iter()
                .map(|c| c.names.link_prefix.clone())
                .collect::<Vec<_>>(),
        );
        // Namespace names are global: no agent's prefix may match another's names, nor
        // the nodes' own namespaces.
        let mut prefixes: Vec<String> = cns.iter().map(|c| c.names.netns_prefix.clone()).collect();
        prefixes.push(NETNS_STEM.into());
        for a in &prefixes {
            for b in &prefixes {
                assert!(
                    a == b || !b.starts_with(a.as_str()),
                    "{a} is a prefix of {b}"
                );
            }
        }
        // Host ends of the veths: distinct, within IFNAMSIZ, never an agent's prefix.
        let mut links = Vec::new();
        for c in &cns[1..] {
            for b in &bridges() {
                let l = c.host_link(b).unwrap();
                assert!(l.len() <= 15, "{l} is longer than 15");
                assert!(!l.starts_with("zc"), "{l}");
                links.push(l);
            }
        }
        distinct("veth", &links);
        assert_eq!(cns[1].host_link(&bridges()[0]).unwrap(), "coalcn2-adm");
        assert_eq!(cns[0].host_link(&bridges()[0]), None);
    }

    #[test]
    fn a_node_config_listens_on_its_admin_address_with_its_names() {
        let cns = plan(2, "cn-agent", &names(), &bridges()).unwrap();
        let mut config: Table = toml::from_str(
            "listen = \"127.0.0.1:5309\"\nadvertise_url = \"http://127.0.0.1:5309\"\nnic_tags = [\"admin=coal-admin\"]\n[linux]\ncgroup_parent = \"triton-coal\"\nnetns_prefix = \"coal-\"\nlink_prefix = \"zc\"\ncreate_bridges = true\n",
        )
        .unwrap();
        configure(&mut config, &cns[1], Some("10.99.99.7:1296"));
        assert_eq!(config["listen"].as_str(), Some("10.99.99.22:5309"));
        assert_eq!(
            config["advertise_url"].as_str(),
            Some("http://10.99.99.22:5309")
        );
        assert_eq!(config["nic_tags"][0].as_str(), Some("admin=coal-admin"));
        let linux = config["linux"].as_table().unwrap();
        assert_eq!(linux["cgroup_parent"].as_str(), Some("triton-coal2"));
        assert_eq!(linux["netns_prefix"].as_str(), Some("coal2-"));
        assert_eq!(linux["link_prefix"].as_str(), Some("zc2"));
        assert_eq!(linux["create_bridges"].as_bool(), Some(true));
        let overlay = config["overlay"].as_table().unwrap();
        assert_eq!(overlay["underlay_ip"].as_str(), Some("10.99.100.22"));
        assert_eq!(overlay["portolan"].as_str(), Some("10.99.99.7:1296"));
        assert_eq!(overlay["nat_ip"].as_str(), Some("10.88.88.253/24"));
        assert_eq!(overlay["nat_gateway"].as_str(), Some("10.88.88.2"));
        assert_eq!(overlay["nat_nic_tag"].as_str(), Some("external"));
        // Node 1's is the top of the external network; none without an external bridge.
        assert_eq!(
            cns[0].nat,
            Some((
                "10.88.88.254".parse().unwrap(),
                24,
                "10.88.88.2".parse().unwrap()
            ))
        );
        let no_external: Vec<Bridge> = bridges()
            .into_iter()
            .filter(|b| b.nic_tag != "external")
            .collect();
        assert_eq!(
            plan(2, "cn-agent", &names(), &no_external).unwrap()[1].nat,
            None
        );
    }

    #[test]
    fn bad_counts_and_small_networks_are_refused() {
        for n in [0, MAX_LINUX_CNS + 1] {
            let e = plan(n, "cn-agent", &names(), &bridges()).unwrap_err();
            assert!(e.to_string().contains("--linux-cns"), "{e}");
        }
        let mut small = bridges();
        small[0].address = "10.99.99.1/28".into();
        let e = plan(2, "cn-agent", &names(), &small).unwrap_err();
        assert!(e.to_string().contains("host 22 of 10.99.99.1/28"), "{e}");
        let e = plan(2, "cn-agent", &names(), &bridges()[1..]).unwrap_err();
        assert!(e.to_string().contains("nic_tag \"admin\""), "{e}");
        // CoaL's "zc" leaves room for node 16; a longer prefix does not.
        assert_eq!(
            plan(16, "cn-agent", &names(), &bridges()).unwrap()[15]
                .names
                .link_prefix,
            "zc16"
        );
        let long = Names {
            link_prefix: "zcd".into(),
            ..names()
        };
        let e = plan(10, "cn-agent", &long, &bridges()).unwrap_err();
        assert!(
            e.to_string()
                .contains("\"zcd10\", longer than cn-agent's 4"),
            "{e}"
        );
        assert!(plan(9, "cn-agent", &long, &bridges()).is_ok());
    }

    #[test]
    fn the_zlogin_wrapper_finds_the_node_holding_the_instance() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cns = plan(3, "cn-agent", &names(), &bridges()).unwrap();
        let uuid = "0b7a4d3e-8f4a-4c43-9d55-6c1f1d1f9a01";
        let zone = dir.path().join("data/cn-agent-2/zones").join(uuid);
        std::fs::create_dir_all(&zone).unwrap();
        std::fs::write(zone.join("zone.json"), "{}").unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        // A zlogin that says how it was called.
        let zlogin = dir.path().join("bin/zlogin");
        std::fs::write(&zlogin, "#!/bin/sh\necho \"$@\"\n").unwrap();
        let wrapper = dir.path().join("bin/coal-zlogin");
        std::fs::write(&wrapper, zlogin_wrapper(dir.path(), &cns)).unwrap();
        for p in [&zlogin, &wrapper] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let out = std::process::Command::new(&wrapper)
            .args([uuid, "ps", "-ef"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!(
                "--config {}/etc/cn-agent-2.toml {uuid} ps -ef",
                dir.path().display()
            )
        );
        let other = "5c0e4a26-31a4-4d6f-9d7d-2b9bb8d8e5a2";
        let out = std::process::Command::new(&wrapper)
            .arg(other)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(126));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "no instance {other} on cn-agent, cn-agent-2, cn-agent-3"
            )),
            "{err}"
        );
    }
}
