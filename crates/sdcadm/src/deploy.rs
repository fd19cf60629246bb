//! `deploy/services.toml`: the one description of a deployment, and its rendering for each
//! place a service runs (CoaL on this machine, a docker-compose container, a zone).
//!
//! The file's own header documents every key and placeholder; this module parses it,
//! checks it ([`Deployment::check`] reports every problem at once), and renders a service's
//! config and arguments for a [`Context`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::{Table, Value};

use crate::error::Error;

/// Where the description lives, relative to the repository's top folder.
pub const SERVICES_TOML: &str = "deploy/services.toml";
/// The nic tag of the admin network (`[coal] bridges`).
pub const ADMIN_NIC_TAG: &str = "admin";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    #[serde(default)]
    pub vars: Table,
    pub coal: CoalSeed,
    #[serde(default)]
    pub compose: ComposeNetwork,
    #[serde(rename = "service")]
    pub services: Vec<Service>,
}

/// The compose file's one network: every container at a fixed address of `subnet`, the
/// `n`th service of the description at the subnet's address `10 + n`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeNetwork {
    pub name: String,
    /// CIDR, a /24 or larger.
    pub subnet: String,
}

impl Default for ComposeNetwork {
    fn default() -> Self {
        ComposeNetwork {
            name: "triton".into(),
            subnet: "10.97.0.0/24".into(),
        }
    }
}

/// `a.b.c.d/n` as (address, prefix length).
pub fn parse_cidr(cidr: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = cidr.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((ip, len))
}

/// The network of `cidr` (`10.99.99.7/24` -> `10.99.99.0/24`).
pub fn network_of(cidr: &str) -> Option<String> {
    let (ip, len) = parse_cidr(cidr)?;
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    Some(format!("{}/{len}", Ipv4Addr::from(u32::from(ip) & mask)))
}

/// What CoaL seeds and makes besides the services.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoalSeed {
    pub admin_login: String,
    pub admin_email: String,
    #[serde(default)]
    pub bridges: Vec<Bridge>,
    #[serde(default)]
    pub tools: Vec<String>,
    pub image: SeedImage,
    #[serde(rename = "package", default)]
    pub packages: Vec<SeedPackage>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Bridge {
    pub name: String,
    pub nic_tag: String,
    /// The host's address on the bridge, CIDR.
    pub address: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedImage {
    pub name: String,
    pub version: String,
    pub description: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedPackage {
    pub name: String,
    pub max_physical_memory: u64,
    pub max_swap: u64,
    pub quota: u64,
    pub cpu_cap: u32,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    Grpc,
    /// Moray's deep Ping: healthy once its PostgreSQL answers too.
    Moray,
    Http,
    /// GET `path` over TLS, 200; the certificate is not checked (CloudAPI's own is
    /// self-signed in zones and compose).
    Https,
    Etcd,
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    pub kind: HealthKind,
    pub port: String,
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextOverride {
    #[serde(default)]
    pub config: Option<Table>,
    #[serde(default)]
    pub args: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeFacts {
    /// The image of a system program (services with a crate use their own).
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub privileged: bool,
    /// Ports (by name) published on the host; the others stay on the compose network.
    #[serde(default)]
    pub publish: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageFacts {
    #[serde(default)]
    pub description: Option<String>,
    /// Debian packages the service needs beside its binary (compose installs them).
    #[serde(default)]
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    #[serde(rename = "crate", default)]
    pub krate: Option<String>,
    pub binary: String,
    pub description: String,
    pub ports: BTreeMap<String, u16>,
    #[serde(default = "one")]
    pub port_span: u16,
    #[serde(default)]
    pub depends_on: Vec<String>,
    pub health: Health,
    #[serde(default)]
    pub optional: bool,
    #[serde(default)]
    pub config: Option<Table>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub run_as: Option<String>,
    #[serde(default)]
    pub stop_signal: Option<String>,
    #[serde(default)]
    pub when: Option<String>,
    #[serde(default)]
    pub unless: Option<String>,
    #[serde(default)]
    pub coal_setup: Vec<String>,
    #[serde(default)]
    pub context: BTreeMap<String, ContextOverride>,
    #[serde(default)]
    pub compose: ComposeFacts,
    #[serde(default)]
    pub image: ImageFacts,
}

fn one() -> u16 {
    1
}

/// Where a service runs; decides what the placeholders become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextKind {
    Coal,
    Compose,
    Zone,
}

impl ContextKind {
    pub fn name(self) -> &'static str {
        match self {
            ContextKind::Coal => "coal",
            ContextKind::Compose => "compose",
            ContextKind::Zone => "zone",
        }
    }
}

/// The values placeholders take in one place.
#[derive(Debug, Clone)]
pub struct Context {
    pub kind: ContextKind,
    /// CoaL's state directory (CoaL only).
    pub coal_dir: PathBuf,
    /// The vars, with any overrides (`--sim-cns`, `--one-node`, `pg_bindir`) applied.
    pub vars: Table,
    /// Where other services are, by name, when not where the context puts them: a zone
    /// made by `sdcadm create` reaches each API at the headnode's admin address, and
    /// listens at its own (the entry of the service itself).
    pub hosts: BTreeMap<String, String>,
    /// The host's address on the admin bridge (CoaL), from `[coal] bridges`.
    pub admin_ip: String,
    /// The admin network, CIDR: CoaL's admin bridge's network, the compose subnet.
    pub admin_cidr: String,
    /// Each container's address (compose).
    pub compose_addresses: BTreeMap<String, String>,
    /// Services that listen at `{{bind_admin}}`: in CoaL they are at `admin_ip`.
    pub admin_services: BTreeSet<String>,
}

impl Context {
    pub fn new(kind: ContextKind, deployment: &Deployment) -> Context {
        let mut vars = deployment.vars.clone();
        vars.entry("pg_bindir")
            .or_insert_with(|| Value::String("/usr/lib/postgresql/15/bin".into()));
        let admin_bridge = deployment
            .coal
            .bridges
            .iter()
            .find(|b| b.nic_tag == ADMIN_NIC_TAG)
            .map(|b| b.address.clone())
            .unwrap_or_else(|| "127.0.0.1/8".into());
        let admin_ip = admin_bridge
            .split('/')
            .next()
            .unwrap_or("127.0.0.1")
            .to_string();
        let compose_cidr =
            network_of(&deployment.compose.subnet).unwrap_or_else(|| "127.0.0.0/8".into());
        let admin_cidr = match kind {
            ContextKind::Coal | ContextKind::Zone => {
                network_of(&admin_bridge).unwrap_or_else(|| "127.0.0.0/8".into())
            }
            ContextKind::Compose => compose_cidr,
        };
        let mut compose_addresses = BTreeMap::new();
        if let Some((net, _)) = parse_cidr(&deployment.compose.subnet) {
            for (i, s) in deployment.services.iter().enumerate() {
                let host = u32::try_from(i).unwrap_or(u32::MAX).saturating_add(10);
                compose_addresses.insert(
                    s.name.clone(),
                    Ipv4Addr::from(u32::from(net).saturating_add(host)).to_string(),
                );
            }
        }
        let admin_services = deployment
            .services
            .iter()
            .filter(|s| {
                let config = s.config.as_ref().map(|c| c.to_string()).unwrap_or_default();
                config.contains("{{bind_admin}}")
                    || s.args.iter().any(|a| a.contains("{{bind_admin}}"))
            })
            .map(|s| s.name.clone())
            .collect();
        Context {
            kind,
            coal_dir: PathBuf::from("/var/tmp/triton-coal"),
            vars,
            hosts: BTreeMap::new(),
            admin_ip,
            admin_cidr,
            compose_addresses,
            admin_services,
        }
    }

    /// Where `service` listens: `{{bind}}`. CoaL: loopback. Compose: the container's
    /// address. Zone: the zone's address when known (`sdcadm create`), else loopback
    /// (an image's own config answers nobody until the datacenter configures it).
    fn bind(&self, service: &str) -> String {
        match self.kind {
            ContextKind::Coal => "127.0.0.1".into(),
            ContextKind::Compose => self
                .compose_addresses
                .get(service)
                .cloned()
                .unwrap_or_else(|| "127.0.0.1".into()),
            ContextKind::Zone => self
                .hosts
                .get(service)
                .cloned()
                .unwrap_or_else(|| "127.0.0.1".into()),
        }
    }

    /// `{{bind_admin}}`: as `{{bind}}`, but CoaL's admin bridge address in CoaL (where
    /// zones on the admin network reach the service, and this host too).
    fn bind_admin(&self, service: &str) -> String {
        match self.kind {
            ContextKind::Coal => self.admin_ip.clone(),
            ContextKind::Compose | ContextKind::Zone => self.bind(service),
        }
    }

    /// `{{bind_public}}`: every address in a container or zone (CloudAPI's public port),
    /// loopback in CoaL.
    fn bind_public(&self) -> &'static str {
        match self.kind {
            ContextKind::Coal => "127.0.0.1",
            ContextKind::Compose | ContextKind::Zone => "0.0.0.0",
        }
    }

    /// Where `service` is reached from the others (and from this machine in CoaL).
    pub fn host_of(&self, service: &str) -> String {
        if let Some(host) = self.hosts.get(service) {
            return host.clone();
        }
        match self.kind {
            ContextKind::Coal if self.admin_services.contains(service) => self.admin_ip.clone(),
            ContextKind::Coal => "127.0.0.1".to_string(),
            ContextKind::Compose | ContextKind::Zone => service.to_string(),
        }
    }

    /// The state directory of `service`.
    pub fn data_dir(&self, service: &str) -> PathBuf {
        match self.kind {
            ContextKind::Coal => self.coal_dir.join("data").join(service),
            ContextKind::Compose | ContextKind::Zone => Path::new("/var/lib/triton").join(service),
        }
    }

    /// Whether a var is set: true, a non-zero number, a non-empty string.
    pub fn var_is_set(&self, name: &str) -> bool {
        match self.vars.get(name) {
            Some(Value::Boolean(b)) => *b,
            Some(Value::Integer(i)) => *i != 0,
            Some(Value::String(s)) => !s.is_empty(),
            Some(_) => true,
            None => false,
        }
    }
}

/// A service as it runs in one context.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub program: String,
    pub args: Vec<String>,
    /// The config file's contents (empty for system programs).
    pub config: Table,
}

impl Deployment {
    /// The admin account's UUID (`vars.admin_uuid`; empty when not set): the owner of
    /// service zones and their images.
    pub fn admin_uuid(&self) -> String {
        self.vars
            .get("admin_uuid")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    }

    /// Reads and checks the description.
    pub fn load(path: &Path) -> Result<Deployment, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: "read the deployment description".into(),
            path: path.to_path_buf(),
            source,
        })?;
        let deployment: Deployment = toml::from_str(&text).map_err(|e| Error::Description {
            path: path.to_path_buf(),
            problems: vec![e.message().to_string()],
        })?;
        deployment.check().map_err(|problems| Error::Description {
            path: path.to_path_buf(),
            problems,
        })?;
        Ok(deployment)
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Every problem at once: duplicate names, ports that collide, unknown dependencies or
    /// cycles, health checks on unknown ports, placeholders that name nothing.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let mut names = BTreeSet::new();
        for s in &self.services {
            if !names.insert(s.name.as_str()) {
                problems.push(format!("service {}: defined twice", s.name));
            }
        }
        match parse_cidr(&self.compose.subnet) {
            Some((_, len)) if len <= 24 => {}
            _ => problems.push(format!(
                "compose.subnet {:?}: must be a CIDR of a /24 or larger (a.b.c.d/n, n <= 24)",
                self.compose.subnet
            )),
        }
        if self.services.len() > 240 {
            problems
                .push("compose: more than 240 services do not fit the subnet's addresses".into());
        }
        let mut taken: BTreeMap<u16, String> = BTreeMap::new();
        for s in &self.services {
            for p in &s.compose.publish {
                if !s.ports.contains_key(p) {
                    problems.push(format!(
                        "service {}: compose.publish names {p:?}, not one of its ports",
                        s.name
                    ));
                }
            }
            for (pname, port) in &s.ports {
                for p in *port..port.saturating_add(s.port_span) {
                    if let Some(other) = taken.insert(p, format!("{}.{pname}", s.name)) {
                        problems.push(format!(
                            "service {}: port {pname} ({p}) is also {other}",
                            s.name
                        ));
                    }
                }
            }
            if !s.ports.contains_key(&s.health.port) {
                problems.push(format!(
                    "service {}: health.port {:?} is not one of its ports",
                    s.name, s.health.port
                ));
            }
            if matches!(s.health.kind, HealthKind::Http | HealthKind::Https)
                && s.health.path.is_none()
            {
                problems.push(format!(
                    "service {}: an http health check needs a path",
                    s.name
                ));
            }
            for d in &s.depends_on {
                if self.service(d).is_none() {
                    problems.push(format!(
                        "service {}: depends on unknown service {d}",
                        s.name
                    ));
                }
            }
            for key in s.context.keys() {
                if !["coal", "compose", "zone"].contains(&key.as_str()) {
                    problems.push(format!(
                        "service {}: context.{key} is not coal, compose or zone",
                        s.name
                    ));
                }
            }
            for var in s.when.iter().chain(s.unless.iter()) {
                if !self.vars.contains_key(var) {
                    problems.push(format!(
                        "service {}: when/unless names unknown var {var}",
                        s.name
                    ));
                }
            }
            for step in &s.coal_setup {
                if !["postgres", "createdb", "bridges", "moray-password", "tls"]
                    .contains(&step.as_str())
                {
                    problems.push(format!(
                        "service {}: unknown coal_setup step {step}",
                        s.name
                    ));
                }
            }
            if s.krate.is_some() && s.config.is_none() {
                problems.push(format!(
                    "service {}: a crate's service needs a config",
                    s.name
                ));
            }
            if s.krate.is_none() && s.compose.image.is_none() {
                problems.push(format!(
                    "service {}: a system program needs compose.image",
                    s.name
                ));
            }
            for kind in [ContextKind::Coal, ContextKind::Compose, ContextKind::Zone] {
                let ctx = Context::new(kind, self);
                if let Err(e) = self.render(s, &ctx) {
                    problems.push(e.to_string());
                }
            }
        }
        if let Err(e) = self.start_order(
            &self
                .services
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>(),
        ) {
            problems.push(e.to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// `names` in an order where every service comes after what it depends on (among
    /// `names`; dependencies outside it are ignored), stable otherwise.
    pub fn start_order(&self, names: &[String]) -> Result<Vec<String>, Error> {
        let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let mut done: Vec<String> = Vec::new();
        let mut left: Vec<&Service> = self
            .services
            .iter()
            .filter(|s| wanted.contains(s.name.as_str()))
            .collect();
        while !left.is_empty() {
            let before = left.len();
            let mut i = 0;
            while i < left.len() {
                let ready = left[i]
                    .depends_on
                    .iter()
                    .all(|d| !wanted.contains(d.as_str()) || done.contains(d));
                if ready {
                    done.push(left.remove(i).name.clone());
                } else {
                    i += 1;
                }
            }
            if left.len() == before {
                return Err(Error::Cycle(left.iter().map(|s| s.name.clone()).collect()));
            }
        }
        Ok(done)
    }

    /// The service's program, args and config file in `ctx`.
    pub fn render(&self, service: &Service, ctx: &Context) -> Result<Rendered, Error> {
        let over = service.context.get(ctx.kind.name());
        let r = Renderer {
            deployment: self,
            service,
            ctx,
        };
        let args_src = over
            .and_then(|o| o.args.clone())
            .unwrap_or_else(|| service.args.clone());
        let mut args = Vec::new();
        for a in &args_src {
            args.push(r.string(a)?);
        }
        let mut config = service.config.clone().unwrap_or_default();
        if let Some(extra) = over.and_then(|o| o.config.as_ref()) {
            merge(&mut config, extra);
        }
        let config = match r.value(&Value::Table(config))? {
            Value::Table(t) => t,
            _ => Table::new(),
        };
        Ok(Rendered {
            program: r.string(&service.binary)?,
            args,
            config,
        })
    }
}

/// Lays `over` onto `base`, table by table.
fn merge(base: &mut Table, over: &Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

struct Renderer<'a> {
    deployment: &'a Deployment,
    service: &'a Service,
    ctx: &'a Context,
}

impl Renderer<'_> {
    fn value(&self, v: &Value) -> Result<Value, Error> {
        Ok(match v {
            Value::String(s) => {
                // A string that is one placeholder takes the placeholder's type.
                if let Some(inner) = s.strip_prefix("{{").and_then(|x| x.strip_suffix("}}"))
                    && !inner.contains("{{")
                {
                    return self.lookup(inner.trim());
                }
                Value::String(self.string(s)?)
            }
            Value::Array(a) => {
                Value::Array(a.iter().map(|x| self.value(x)).collect::<Result<_, _>>()?)
            }
            Value::Table(t) => {
                // Keys take placeholders too (CNS's zone names are a var).
                let mut out = Table::new();
                for (k, x) in t {
                    out.insert(self.string(k)?, self.value(x)?);
                }
                Value::Table(out)
            }
            other => other.clone(),
        })
    }

    fn string(&self, s: &str) -> Result<String, Error> {
        let mut out = String::new();
        let mut rest = s;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| self.bad(s, "an unclosed {{"))?;
            let v = self.lookup(after[..end].trim())?;
            match v {
                Value::String(x) => out.push_str(&x),
                other => out.push_str(&other.to_string()),
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lookup(&self, name: &str) -> Result<Value, Error> {
        let ctx = self.ctx;
        let me = self.service.name.as_str();
        match name {
            "bind" => return Ok(Value::String(ctx.bind(me))),
            "bind_admin" => return Ok(Value::String(ctx.bind_admin(me))),
            "bind_public" => return Ok(Value::String(ctx.bind_public().into())),
            "admin_cidr" => return Ok(Value::String(ctx.admin_cidr.clone())),
            _ => {}
        }
        if name == "data_dir" {
            return Ok(Value::String(
                ctx.data_dir(&self.service.name).display().to_string(),
            ));
        }
        if let Some(port) = name.strip_prefix("port:") {
            return self
                .service
                .ports
                .get(port)
                .map(|p| Value::Integer(i64::from(*p)))
                .ok_or_else(|| self.bad(name, "this service has no such port"));
        }
        if let Some(svc) = name.strip_prefix("host:") {
            if self.deployment.service(svc).is_none() {
                return Err(self.bad(name, "no such service"));
            }
            return Ok(Value::String(ctx.host_of(svc)));
        }
        if let Some(target) = name.strip_prefix("addr:") {
            let (svc, port) = target
                .split_once('.')
                .ok_or_else(|| self.bad(name, "must be addr:SERVICE.PORT"))?;
            let other = self
                .deployment
                .service(svc)
                .ok_or_else(|| self.bad(name, "no such service"))?;
            let p = other
                .ports
                .get(port)
                .ok_or_else(|| self.bad(name, "that service has no such port"))?;
            return Ok(Value::String(format!("{}:{p}", ctx.host_of(svc))));
        }
        ctx.vars
            .get(name)
            .cloned()
            .ok_or_else(|| self.bad(name, "unknown placeholder"))
    }

    fn bad(&self, what: &str, why: &str) -> Error {
        Error::Placeholder {
            service: self.service.name.clone(),
            placeholder: what.to_string(),
            why: why.to_string(),
        }
    }
}

/// The environment-variable prefix of a binary's config: `cn-agent` -> `CN_AGENT_`.
pub fn env_prefix(binary: &str) -> String {
    let base = binary.rsplit('/').next().unwrap_or(binary);
    format!("{}_", base.to_ascii_uppercase().replace('-', "_"))
}

/// The config as environment variables, as `triton_common::config` reads them: one per
/// leaf key, nested keys joined with `__`, values as TOML (strings bare).
pub fn config_env(binary: &str, config: &Table) -> BTreeMap<String, String> {
    fn walk(prefix: &str, t: &Table, out: &mut BTreeMap<String, String>) {
        for (k, v) in t {
            let name = format!("{prefix}{}", k.to_ascii_uppercase());
            match v {
                Value::Table(inner) => walk(&format!("{name}__"), inner, out),
                Value::String(s) => {
                    out.insert(name, s.clone());
                }
                other => {
                    out.insert(name, other.to_string());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&env_prefix(binary), config, &mut out);
    out
}

/// Strings that the environment would read as another type (`"5"`, `"true"`): a config
/// holding one cannot be passed through the environment unchanged.
pub fn env_ambiguous_strings(config: &Table) -> Vec<String> {
    fn walk(path: &str, t: &Table, out: &mut Vec<String>) {
        for (k, v) in t {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            match v {
                Value::Table(inner) => walk(&p, inner, out),
                Value::String(s) => {
                    if let Ok(mut t) = format!("v = {s}").parse::<Table>()
                        && !matches!(t.remove("v"), Some(Value::String(_)) | None)
                    {
                        out.push(p);
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk("", config, &mut out);
    out
}

/// The repository's top folder: `$TRITON_ROOT`, or the nearest ancestor of the current
/// directory holding `deploy/services.toml`.
pub fn repo_root() -> Result<PathBuf, Error> {
    if let Some(root) = std::env::var_os("TRITON_ROOT") {
        return Ok(PathBuf::from(root));
    }
    let cwd = std::env::current_dir().map_err(|source| Error::Io {
        what: "find the current directory".into(),
        path: PathBuf::from("."),
        source,
    })?;
    cwd.ancestors()
        .find(|d| d.join(SERVICES_TOML).is_file())
        .map(Path::to_path_buf)
        .ok_or(Error::NoRepo(cwd))
}
