//! deploy/services.toml is consistent with itself and with the workspace; the committed
//! docker-compose file says what the description says; a zone image's manifest describes
//! its tarball.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sdcadm::deploy::{
    Context, ContextKind, Deployment, SERVICES_TOML, config_env, env_ambiguous_strings,
};
use sha1::Digest;

mod common;
use common::unpack;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn deployment() -> Deployment {
    Deployment::load(&root().join(SERVICES_TOML))
        .unwrap_or_else(|e| panic!("{}", sdcadm::error::chain(&e)))
}

/// The binaries a crate builds: its `[[bin]]` names and the ones Cargo discovers.
fn crate_binaries(krate: &str) -> BTreeSet<String> {
    let dir = [
        root().join("crates").join(krate),
        root().join("crates/clients").join(krate),
    ]
    .into_iter()
    .find(|d| d.join("Cargo.toml").is_file())
    .unwrap_or_else(|| panic!("no crate {krate} in the workspace"));
    let manifest: toml::Table = std::fs::read_to_string(dir.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let mut bins: BTreeSet<String> = manifest
        .get("bin")
        .and_then(|b| b.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|b| b.get("name")?.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    // Cargo's auto-discovered binaries: src/main.rs and src/bin/*.rs (beside any listed
    // ones, unless `autobins = false`).
    let autobins = manifest
        .get("package")
        .and_then(|p| p.get("autobins"))
        .and_then(|a| a.as_bool())
        .unwrap_or(true);
    if autobins && dir.join("src/main.rs").is_file() {
        bins.insert(manifest["package"]["name"].as_str().unwrap().to_string());
    }
    if let Ok(rd) = std::fs::read_dir(dir.join("src/bin")) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "rs") {
                bins.insert(p.file_stem().unwrap().to_string_lossy().into_owned());
            } else if p.join("main.rs").is_file() {
                bins.insert(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    bins
}

#[test]
fn description_parses_and_is_consistent() {
    let d = deployment();
    // check() ran in load(); the facts a reader relies on, spelled out:
    let mut ports = BTreeMap::new();
    for s in &d.services {
        for (name, p) in &s.ports {
            for q in *p..p + s.port_span {
                assert!(
                    ports.insert(q, format!("{}.{name}", s.name)).is_none(),
                    "port {q} used twice"
                );
            }
        }
        for dep in &s.depends_on {
            assert!(
                d.service(dep).is_some(),
                "{} depends on unknown {dep}",
                s.name
            );
        }
    }
    let all: Vec<String> = d.services.iter().map(|s| s.name.clone()).collect();
    let order = d.start_order(&all).unwrap();
    for s in &d.services {
        let at = order.iter().position(|n| n == &s.name).unwrap();
        for dep in &s.depends_on {
            assert!(
                order.iter().position(|n| n == dep).unwrap() < at,
                "{} starts before {dep}",
                s.name
            );
        }
    }
    // The issue's datacenter: every one of these is described.
    for name in [
        "etcd",
        "manatee-1",
        "manatee-2",
        "manatee-3",
        "moray",
        "ufds",
        "papi",
        "imgapi",
        "napi",
        "cnapi",
        "vmapi",
        "cloudapi",
        "cn-agent",
        "cn-agent-sim",
    ] {
        assert!(
            d.service(name).is_some(),
            "{name} is missing from services.toml"
        );
    }
}

#[test]
fn every_named_binary_is_built_by_its_crate() {
    let d = deployment();
    for s in &d.services {
        if let Some(k) = &s.krate {
            assert!(
                crate_binaries(k).contains(&s.binary),
                "crate {k} builds no binary {}",
                s.binary
            );
        }
    }
    for t in &d.coal.tools {
        let (k, b) = t.split_once(':').unwrap();
        assert!(
            crate_binaries(k).contains(b),
            "crate {k} builds no binary {b}"
        );
    }
}

#[test]
fn config_survives_the_environment() {
    // Compose passes config as <BINARY>_<KEY> variables, which the services read as TOML
    // when they parse as TOML: a string like "1" would arrive as a number.
    let d = deployment();
    for kind in [ContextKind::Coal, ContextKind::Compose, ContextKind::Zone] {
        let ctx = Context::new(kind, &d);
        for s in &d.services {
            let r = d.render(s, &ctx).unwrap();
            let bad = env_ambiguous_strings(&r.config);
            assert!(
                bad.is_empty(),
                "{} ({}): {bad:?} would change type through the environment",
                s.name,
                kind.name()
            );
        }
    }
}

#[test]
fn placeholders_render_per_context() {
    let d = deployment();
    let moray = d.service("moray").unwrap();
    let coal = d
        .render(moray, &Context::new(ContextKind::Coal, &d))
        .unwrap();
    // Moray and the APIs answer on the admin bridge's address in CoaL (where this host and
    // service zones reach them, and no tenant network); etcd only on 127.0.0.1.
    assert_eq!(coal.config["listen"].as_str(), Some("10.99.99.7:2020"));
    let etcd = d
        .render(
            d.service("etcd").unwrap(),
            &Context::new(ContextKind::Coal, &d),
        )
        .unwrap();
    assert!(
        etcd.args
            .contains(&"--listen-client-urls=http://127.0.0.1:2379".to_string()),
        "{:?}",
        etcd.args
    );
    assert_eq!(
        coal.config["manatee_etcd"].as_str(),
        Some("http://127.0.0.1:2379")
    );
    assert_eq!(coal.config["manatee_shard"].as_str(), Some("coal"));
    let compose = d
        .render(moray, &Context::new(ContextKind::Compose, &d))
        .unwrap();
    let moray_at = Context::new(ContextKind::Compose, &d).compose_addresses["moray"].clone();
    assert_eq!(
        compose.config["listen"].as_str(),
        Some(format!("{moray_at}:2020").as_str())
    );
    assert_eq!(
        compose.config["manatee_etcd"].as_str(),
        Some("http://etcd:2379")
    );
    // A string that is one placeholder takes the value's type.
    let sitter = d
        .render(
            d.service("manatee-1").unwrap(),
            &Context::new(ContextKind::Coal, &d),
        )
        .unwrap();
    assert_eq!(sitter.config["pg_port"].as_integer(), Some(6432));
    assert_eq!(sitter.config["one_node_write_mode"].as_bool(), Some(false));
    // Context overrides merge into nested tables.
    let sim = d
        .render(
            d.service("cn-agent-sim").unwrap(),
            &Context::new(ContextKind::Compose, &d),
        )
        .unwrap();
    assert_eq!(sim.config["sim"]["nodes"].as_integer(), Some(2));
    let env = config_env("cn-agent", &sim.config);
    assert_eq!(env["CN_AGENT_SIM__NODES"], "2");
    assert_eq!(
        env["CN_AGENT_NIC_TAGS"],
        r#"["admin=coal-admin", "external=coal-external"]"#
    );
}

#[test]
fn bad_descriptions_are_refused_with_every_problem() {
    let text = std::fs::read_to_string(root().join(SERVICES_TOML)).unwrap();
    let broken = text
        .replace("ports = { grpc = 2022 }", "ports = { grpc = 2020 }")
        .replace(
            "depends_on = [\"cnapi\"]\nhealth",
            "depends_on = [\"nosuch\"]\nhealth",
        )
        .replace(
            "{{addr:moray.grpc}}\"\nadmin_uuid",
            "{{addr:moray.nope}}\"\nadmin_uuid",
        );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.toml");
    std::fs::write(&path, broken).unwrap();
    let err = Deployment::load(&path).unwrap_err().to_string();
    assert!(err.contains("port grpc (2020) is also moray.grpc"), "{err}");
    assert!(err.contains("depends on unknown service nosuch"), "{err}");
    assert!(err.contains("moray.nope"), "{err}");
}

#[test]
fn committed_compose_file_matches_the_description() {
    let d = deployment();
    let path = root().join(sdcadm::compose::COMPOSE_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let fresh = sdcadm::compose::render(&d, env!("CARGO_PKG_VERSION")).unwrap();
    assert!(
        text == fresh,
        "{} is stale: run `cargo run -p sdcadm -- compose`",
        path.display()
    );

    // And, read back as a compose file, it says what services.toml says.
    let doc = sdcadm::compose::parse(&text).unwrap();
    let services = doc["services"].as_object().unwrap();
    assert_eq!(
        doc["networks"]["triton"]["ipam"]["config"][0]["subnet"].as_str(),
        Some("10.97.0.0/24")
    );
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    let described: BTreeSet<&str> = d.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, described);
    let ctx = Context::new(ContextKind::Compose, &d);
    for s in &d.services {
        let c = &services[&s.name];
        let ports: Vec<String> = c["ports"]
            .as_array()
            .map(|a| a.iter().map(|p| p.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        // Only CloudAPI's and CMon's TLS ports are on the host; everything else on the
        // compose network.
        let want: Vec<String> = match s.name.as_str() {
            "cloudapi" => vec!["8443:8443".to_string()],
            "cmon" => vec!["9163:9163".to_string()],
            _ => vec![],
        };
        assert_eq!(ports, want, "{} ports", s.name);
        assert_eq!(
            c["networks"]["triton"]["ipv4_address"].as_str(),
            Some(ctx.compose_addresses[&s.name].as_str()),
            "{} address",
            s.name
        );
        let deps: Vec<&str> = c["depends_on"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            deps,
            s.depends_on.iter().map(String::as_str).collect::<Vec<_>>(),
            "{} depends_on",
            s.name
        );
        if s.krate.is_some() {
            let env: BTreeMap<String, String> =
                serde_json::from_value(c["environment"].clone()).unwrap();
            let want = config_env(&s.binary, &d.render(s, &ctx).unwrap().config);
            assert_eq!(env, want, "{} environment", s.name);
            assert_eq!(c["build"]["args"]["SERVICE"], s.name.as_str());
            assert!(
                root()
                    .join(c["build"]["dockerfile"].as_str().unwrap())
                    .is_file(),
                "images/Dockerfile is missing"
            );
        } else {
            assert_eq!(
                c["image"].as_str(),
                s.compose.image.as_deref(),
                "{} image",
                s.name
            );
        }
    }
}

#[test]
fn service_image_manifest_describes_its_tarball() {
    let d = deployment();
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("papi");
    std::fs::write(&bin, b"#!/bin/sh\necho not really papi\n").unwrap();
    let out = dir.path().join("out");
    let papi = d.service("papi").unwrap();
    let built = sdcadm::images::build_service_image(&d, papi, &bin, &out, "9.9.9").unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&built.manifest_path).unwrap()).unwrap();
    let file = std::fs::read(&built.tarball).unwrap();
    assert_eq!(m["files"][0]["size"].as_u64(), Some(file.len() as u64));
    let sha1: String = sha1::Sha1::digest(&file)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(m["files"][0]["sha1"].as_str(), Some(sha1.as_str()));
    assert_eq!(m["files"][0]["compression"], "gzip");
    assert_eq!(m["name"], "papi");
    assert_eq!(m["version"], "9.9.9");
    assert_eq!(m["v"], 2);
    assert_eq!(m["os"], "linux");
    assert_eq!(m["type"], "lx-dataset");
    assert_eq!(m["tags"]["smartdc_service"], true);
    assert_eq!(
        m["uuid"].as_str(),
        Some(
            sdcadm::images::image_uuid("papi", "9.9.9")
                .to_string()
                .as_str()
        )
    );
    assert_ne!(
        sdcadm::images::image_uuid("papi", "9.9.9"),
        sdcadm::images::image_uuid("papi", "9.9.10")
    );

    // The tarball holds what a zone needs, and GNU tar reads it.
    let x = dir.path().join("root");
    unpack(&built.tarball, &x);
    assert_eq!(
        std::fs::read(x.join("opt/triton/papi/bin/papi")).unwrap(),
        std::fs::read(&bin).unwrap()
    );
    let config: toml::Table = std::fs::read_to_string(x.join("opt/triton/papi/etc/papi.toml"))
        .unwrap()
        .parse()
        .unwrap();
    // The image's own config answers on loopback only: `sdcadm create` gives a zone its
    // address.
    assert_eq!(config["listen"].as_str(), Some("127.0.0.1:2022"));
    assert_eq!(config["moray_url"].as_str(), Some("tcp://moray:2020"));
    let template = std::fs::read_to_string(x.join("opt/triton/papi/etc/papi.toml.in")).unwrap();
    assert!(template.contains("{{addr:moray.grpc}}"), "{template}");
    let unit = std::fs::read_to_string(x.join("etc/systemd/system/triton-papi.service")).unwrap();
    assert!(unit.contains("ExecStart=/opt/triton/papi/start"), "{unit}");
    let start = std::fs::read_to_string(x.join("opt/triton/papi/start")).unwrap();
    assert!(
        start.contains("config=/opt/triton/papi/etc/papi.toml")
            && start.contains("exec /opt/triton/papi/bin/papi --config \"$config\""),
        "{start}"
    );
    // It is a zone's root: /sbin/init is the start script, with a shell to run it.
    assert_eq!(
        std::fs::read_link(x.join("sbin/init")).unwrap(),
        Path::new("/opt/triton/papi/start")
    );
    assert!(x.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(x.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );

    // Reproducible: a rebuild of the same binary is byte for byte the same image.
    let again = sdcadm::images::build_service_image(&d, papi, &bin, &out, "9.9.9").unwrap();
    assert_eq!(again.manifest, built.manifest);
}

#[test]
fn base_image_runs_an_http_init() {
    let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    else {
        eprintln!("busybox-static is not installed; skipping");
        return;
    };
    let file = sdcadm::images::base_image(&busybox).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("base.tar.gz");
    std::fs::write(&t, &file).unwrap();
    let x = dir.path().join("root");
    unpack(&t, &x);
    let init = std::fs::read_to_string(x.join("sbin/init")).unwrap();
    assert!(init.contains("httpd -p 80"), "{init}");
    assert_eq!(
        std::fs::read_link(x.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    // The init is valid shell.
    let st = std::process::Command::new(&busybox)
        .args(["sh", "-n"])
        .arg(x.join("sbin/init"))
        .status()
        .unwrap();
    assert!(st.success());
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")))
        .unwrap_or(false)
}

/// Runs `argv` chrooted into `root`, with the environment a zone's pid 1 gets.
fn in_root(root: &Path, argv: &[&str]) -> std::process::Output {
    std::process::Command::new("chroot")
        .arg(root)
        .args(argv)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap()
}

#[test]
fn a_service_image_is_a_root_its_binary_runs_in() {
    if !is_root() {
        eprintln!("not root, so no chroot; skipping");
        return;
    }
    let d = deployment();
    let papi = d.service("papi").unwrap();
    let dir = tempfile::tempdir().unwrap();

    // A real dynamically linked Rust binary (this crate's own) stands in for papi: in the
    // image's root, with nothing from the host, it finds every library it needs.
    let real = Path::new(env!("CARGO_BIN_EXE_sdcadm"));
    let built =
        sdcadm::images::build_service_image(&d, papi, real, &dir.path().join("out"), "1.0.0")
            .unwrap();
    let x = dir.path().join("real");
    unpack(&built.tarball, &x);
    let out = in_root(&x, &["/opt/triton/papi/bin/papi", "--version"]);
    assert!(
        out.status.success(),
        "the binary does not run in its image: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sdcadm "));

    // The zone's init starts the service with the image's config, or with the one the
    // datacenter gave the instance in its metadata (cn-agent writes it into the zone).
    let echo = dir.path().join("echo-args");
    std::fs::write(&echo, "#!/bin/sh\necho \"args: $*\"\n").unwrap();
    let built =
        sdcadm::images::build_service_image(&d, papi, &echo, &dir.path().join("out2"), "1.0.0")
            .unwrap();
    let x = dir.path().join("script");
    unpack(&built.tarball, &x);
    let out = in_root(&x, &["/sbin/init"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "args: --config /opt/triton/papi/etc/papi.toml",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        x.join("var/lib/triton/papi").is_dir(),
        "start makes the data dir"
    );
    let md = x.join(sdcadm::images::ZONE_INTERNAL_METADATA.trim_start_matches('/'));
    std::fs::create_dir_all(&md).unwrap();
    std::fs::write(
        md.join(sdcadm::images::CONFIG_METADATA_KEY),
        "listen = \"10.99.99.40:2022\"\n",
    )
    .unwrap();
    let out = in_root(&x, &["/sbin/init"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "args: --config /etc/triton/metadata/internal/triton:config"
    );
}

#[test]
fn a_zone_config_points_at_the_datacenter() {
    let dc = sdcadm::instances::Datacenter::new(deployment(), None, None).unwrap();
    assert_eq!(dc.admin_ip.to_string(), "10.99.99.7");
    let cloudapi = dc.deployment.service("cloudapi").unwrap();
    let text =
        sdcadm::instances::zone_config(&dc, cloudapi, "10.99.99.40".parse().unwrap()).unwrap();
    let config: toml::Table = text.parse().unwrap();
    // Every API at the headnode's admin address, where CoaL's services answer.
    for key in [
        "ufds_url",
        "papi_url",
        "imgapi_url",
        "napi_url",
        "vmapi_url",
        "cnapi_url",
    ] {
        let url = config[key].as_str().unwrap();
        assert!(url.starts_with("http://10.99.99.7:"), "{key} = {url}");
    }
    assert_eq!(config["ufds_url"].as_str(), Some("http://10.99.99.7:1390"));
    // The service itself: known at its zone's own address, over TLS only (plain HTTP on
    // loopback), with the certificate it makes itself in its data dir.
    assert_eq!(config["listen"].as_str(), Some("127.0.0.1:8080"));
    assert_eq!(config["tls_listen"].as_str(), Some("0.0.0.0:8443"));
    assert_eq!(
        config["external_url"].as_str(),
        Some("https://10.99.99.40:8443")
    );
    assert_eq!(config["tls_cert"].as_str(), Some(""));
    assert_eq!(
        config["data_dir"].as_str(),
        Some("/var/lib/triton/cloudapi")
    );
    // And the services it needs listen where the zone reaches them.
    let coal = Context::new(ContextKind::Coal, &dc.deployment);
    for svc in ["ufds", "papi", "imgapi", "napi", "vmapi", "cnapi"] {
        let r = dc
            .deployment
            .render(dc.deployment.service(svc).unwrap(), &coal)
            .unwrap();
        let listen = r.config["listen"].as_str().unwrap();
        assert!(
            listen.starts_with("10.99.99.7:"),
            "{svc} listens on {listen}"
        );
    }
    // A zone of an internal API listens on its own address only, and takes calls from the
    // admin network.
    let napi = dc.deployment.service("napi").unwrap();
    let text = sdcadm::instances::zone_config(&dc, napi, "10.99.99.41".parse().unwrap()).unwrap();
    let config: toml::Table = text.parse().unwrap();
    assert_eq!(config["listen"].as_str(), Some("10.99.99.41:2023"));
    assert_eq!(
        config["grpc"]["allow_from"].as_array().unwrap()[0].as_str(),
        Some("10.99.99.0/24")
    );
}

/// Every listen address of a rendered config or argument list: values of keys ending in
/// `listen` and `--listen-*=` URLs.
fn listen_addresses(r: &sdcadm::deploy::Rendered) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in &r.config {
        if k.ends_with("listen")
            && let Some(v) = v.as_str()
        {
            out.push((k.clone(), v.to_string()));
        }
    }
    for a in &r.args {
        if let Some((k, v)) = a.split_once('=')
            && k.starts_with("--listen-")
        {
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

#[test]
fn nothing_internal_listens_on_every_address() {
    let d = deployment();
    let mut zone = Context::new(ContextKind::Zone, &d);
    for s in &d.services {
        zone.hosts.insert(s.name.clone(), "10.99.99.50".into());
    }
    let contexts = [
        Context::new(ContextKind::Coal, &d),
        Context::new(ContextKind::Compose, &d),
        Context::new(ContextKind::Zone, &d),
        zone,
    ];
    let mut seen = 0;
    for ctx in &contexts {
        for s in &d.services {
            let r = d.render(s, ctx).unwrap();
            for (key, addr) in listen_addresses(&r) {
                seen += 1;
                let public = (s.name == "cloudapi" && key == "tls_listen")
                    || (s.name == "cmon" && key == "listen");
                if addr.contains("0.0.0.0") {
                    assert!(
                        public && ctx.kind != ContextKind::Coal,
                        "{} {key} = {addr} in {}",
                        s.name,
                        ctx.kind.name()
                    );
                }
                if ctx.kind == ContextKind::Coal && !public {
                    assert!(
                        addr.contains("127.0.0.1:") || addr.contains("10.99.99.7:"),
                        "{} {key} = {addr} in CoaL",
                        s.name
                    );
                }
            }
            // Every gRPC server takes calls from the admin network and loopback only.
            if s.health.kind == sdcadm::deploy::HealthKind::Grpc
                || s.health.kind == sdcadm::deploy::HealthKind::Moray
            {
                let allow: Vec<&str> = r.config["grpc"]["allow_from"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{} has no grpc.allow_from", s.name))
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect();
                assert_eq!(
                    allow,
                    [ctx.admin_cidr.as_str(), "127.0.0.0/8"],
                    "{}",
                    s.name
                );
                assert!(!allow.contains(&"0.0.0.0/0"), "{}", s.name);
            }
        }
    }
    assert!(seen > 40, "only {seen} listen addresses found");
    // In a zone, each service listens at its own address; in compose, at its container's.
    let compose = &contexts[1];
    let vmapi = d.render(d.service("vmapi").unwrap(), compose).unwrap();
    assert_eq!(
        vmapi.config["listen"].as_str().unwrap(),
        format!("{}:2025", compose.compose_addresses["vmapi"])
    );
    assert_eq!(compose.admin_cidr, "10.97.0.0/24");
    let vmapi = d.render(d.service("vmapi").unwrap(), &contexts[3]).unwrap();
    assert_eq!(vmapi.config["listen"].as_str(), Some("10.99.99.50:2025"));
    // An image's own config, before the datacenter gives it an address: loopback.
    let vmapi = d.render(d.service("vmapi").unwrap(), &contexts[2]).unwrap();
    assert_eq!(vmapi.config["listen"].as_str(), Some("127.0.0.1:2025"));
}

#[test]
fn coal_reaches_the_internal_apis_at_the_admin_address() {
    let d = deployment();
    let coal = Context::new(ContextKind::Coal, &d);
    for svc in ["moray", "ufds", "papi", "napi", "imgapi", "cnapi", "vmapi"] {
        assert_eq!(coal.host_of(svc), "10.99.99.7", "{svc}");
    }
    for svc in ["etcd", "manatee-1", "cloudapi", "cn-agent"] {
        assert_eq!(coal.host_of(svc), "127.0.0.1", "{svc}");
    }
    // What the APIs are given to reach each other: the address each listens on.
    let vmapi = d.render(d.service("vmapi").unwrap(), &coal).unwrap();
    assert_eq!(
        vmapi.config["moray_url"].as_str(),
        Some("tcp://10.99.99.7:2020")
    );
    let agent = d.render(d.service("cn-agent").unwrap(), &coal).unwrap();
    assert_eq!(agent.config["listen"].as_str(), Some("127.0.0.1:5309"));
    assert_eq!(
        agent.config["cnapi_url"].as_str(),
        Some("http://10.99.99.7:2030")
    );
    // sdcadm without --api-host finds them there too.
    let dc = sdcadm::instances::Datacenter::new(d.clone(), None, None).unwrap();
    assert_eq!(dc.addr("napi", "grpc").unwrap(), "10.99.99.7:2023");
    let dc = sdcadm::instances::Datacenter::new(d, Some("10.1.2.3".into()), None).unwrap();
    assert_eq!(dc.addr("napi", "grpc").unwrap(), "10.1.2.3:2023");
}
