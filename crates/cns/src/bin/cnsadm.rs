//! cnsadm: the operator's view and editor of CNS (Triton's `cnsadm`, reference 1.12),
//! on CNS's gRPC admin API (proto/cns.proto) instead of SAPI.
//!
//! ```text
//! cnsadm status                       zones with their serials, then the peers and drift
//! cnsadm vm <uuid>                    the names CNS publishes for a VM
//! cnsadm peers [-d] [ADDR]            the secondaries seen; one in detail; -d forgets it
//! cnsadm config [MODIFIER...]         show, or change, the config as a whole
//! cnsadm zones [-a|-d] [ZONE] [MODIFIER...]   the DNS suffixes served (forward zones)
//! ```
//!
//! A modifier is `field=value`, `field+=v1,v2` (add to a list) or `field-=v1,v2` (remove
//! from a list); booleans are true/false, yes/no or on/off. cnsadm checks the modifiers'
//! syntax and the fields' types; CNS checks the values (a bad one is refused and nothing
//! is written). `--url` (or `CNS_URL`) is CNS's gRPC address, CoaL's by default.
//!
//! Exit status: 0 on success; 1 when a modifier is bad, CNS refuses or cannot be reached
//! (printed as `cnsadm: error: ...`, as Triton's); 2 when the command line does not parse.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tonic::transport::Channel;
use triton_common::channel::ChannelBuilder;
use triton_proto::cns::v1 as cns;
use triton_proto::cns::v1::cns_client::CnsClient;

/// CNS's admin address in CoaL (deploy/services.toml, service `cns`, port `grpc`).
const COAL_URL: &str = "http://10.99.99.7:2040";
/// Names cnsadm accepts for the settings of the reverse zones (Triton's two).
const REVERSE: [&str; 2] = ["reverse", "ip-reverse-lookup"];
/// How long cnsadm waits for CNS to answer a call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Parser)]
#[command(
    name = "cnsadm",
    about = "administer the Triton CNS (Container Naming Service)"
)]
struct Cli {
    /// CNS's gRPC admin API (http://host:port or host:port).
    #[arg(long, env = "CNS_URL", default_value = COAL_URL, global = true)]
    url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The zones served with their latest serials, then each peer's serials and how
    /// far behind it is.
    Status,
    /// The names CNS publishes for a VM and when it last computed them.
    Vm { uuid: String },
    /// The secondaries seen; with ADDR that peer in detail; with -d forget its state.
    Peers {
        /// Forget everything about the peer (its serials and counters).
        #[arg(short = 'd', long = "delete", requires = "address")]
        delete: bool,
        address: Option<String>,
    },
    /// Show the config, or change it with modifiers (my_name, hostmaster,
    /// allow_transfer, use_alias, use_login).
    Config {
        #[arg(value_name = "MODIFIER")]
        modifiers: Vec<String>,
    },
    /// Show the zones (DNS suffixes), one in detail, or change one with modifiers
    /// (zone, networks, peers, hidden_primary); `reverse` names the reverse zones.
    Zones {
        /// Add ZONE as a new forward zone.
        #[arg(
            short = 'a',
            long = "add",
            requires = "zone",
            conflicts_with = "delete"
        )]
        add: bool,
        /// Delete ZONE (no modifiers).
        #[arg(short = 'd', long = "delete", requires = "zone")]
        delete: bool,
        zone: Option<String>,
        #[arg(value_name = "MODIFIER")]
        modifiers: Vec<String>,
    },
}

/// Why a command failed: printed after `cnsadm: error: `.
#[derive(Debug, PartialEq, Eq)]
struct Failure(String);

impl From<tonic::Status> for Failure {
    /// CNS's refusals carry Triton's error name and the field in their message; anything
    /// else is said to be a failed call, with its gRPC code.
    fn from(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::InvalidArgument | tonic::Code::NotFound => {
                Failure(s.message().to_string())
            }
            code => Failure(format!(
                "the call to CNS failed ({code:?}): {}",
                s.message()
            )),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match triton_common::tool::block_on(run(cli)) {
        Ok(Ok(out)) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Ok(Err(failure)) => fail(failure),
        Err(e) => fail(Failure(format!("cannot start the runtime: {e}"))),
    }
}

fn fail(failure: Failure) -> ExitCode {
    eprintln!("cnsadm: error: {}", failure.0);
    ExitCode::FAILURE
}

/// Runs one command; what it prints on success.
async fn run(cli: Cli) -> Result<String, Failure> {
    // Check the command's own arguments before reaching for CNS.
    let edit = match &cli.command {
        Command::Config { modifiers } => Some(Edit::Config(parse_modifiers(modifiers)?)),
        Command::Zones {
            add,
            delete,
            zone: Some(zone),
            modifiers,
        } if *add || *delete || !modifiers.is_empty() => {
            if *delete && !modifiers.is_empty() {
                return Err(Failure(
                    "zones -d: no modifiers may be given with -d".to_string(),
                ));
            }
            Some(Edit::Zone {
                zone: zone.clone(),
                add: *add,
                delete: *delete,
                mods: parse_modifiers(modifiers)?,
            })
        }
        _ => None,
    };
    if let Some(edit) = &edit {
        edit.check()?;
    }
    let channel = ChannelBuilder::new(&cli.url)
        .request_timeout(Some(CALL_TIMEOUT))
        .connect()
        .await
        .map_err(|e| Failure(format!("cannot reach CNS at {}: {e}", cli.url)))?;
    let mut client = CnsClient::new(channel);
    match (cli.command, edit) {
        (Command::Status, _) => status(&mut client).await,
        (Command::Vm { uuid }, _) => vm(&mut client, &uuid).await,
        (Command::Peers { delete, address }, _) => peers(&mut client, delete, address).await,
        (_, Some(edit)) => {
            let current = client
                .get_config(cns::GetConfigRequest {})
                .await?
                .into_inner();
            let changed = edit.apply(current)?;
            let updated = client
                .update_config(cns::UpdateConfigRequest {
                    config: Some(changed),
                })
                .await?
                .into_inner();
            Ok(match edit {
                Edit::Config(_) => show_config(&updated),
                Edit::Zone { delete: true, .. } => show_zones(&updated),
                Edit::Zone { zone, mods, .. } => {
                    let name = renamed(&zone, &mods);
                    show_zone(&updated, &name)?
                }
            })
        }
        (Command::Config { .. }, None) => {
            let c = client
                .get_config(cns::GetConfigRequest {})
                .await?
                .into_inner();
            Ok(show_config(&c))
        }
        (Command::Zones { zone, .. }, None) => {
            let c = client
                .get_config(cns::GetConfigRequest {})
                .await?
                .into_inner();
            match zone {
                None => Ok(show_zones(&c)),
                Some(z) => show_zone(&c, &z),
            }
        }
    }
}

// ------------------------------------------------------------------ modifiers

/// How a modifier changes its field.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// `field=value`
    Set,
    /// `field+=v1,v2`
    Add,
    /// `field-=v1,v2`
    Remove,
}

/// One `field=value`, `field+=...` or `field-=...` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Modifier {
    field: String,
    op: Op,
    value: String,
}

fn parse_modifier(arg: &str) -> Result<Modifier, Failure> {
    let Some(eq) = arg.find('=') else {
        return Err(Failure(format!(
            "modifier {arg:?}: expected field=value, field+=v1,v2 or field-=v1,v2"
        )));
    };
    let (field, op) = match arg[..eq].strip_suffix('+') {
        Some(f) => (f, Op::Add),
        None => match arg[..eq].strip_suffix('-') {
            Some(f) => (f, Op::Remove),
            None => (&arg[..eq], Op::Set),
        },
    };
    let field_ok = !field.is_empty()
        && field
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !field_ok {
        return Err(Failure(format!(
            "modifier {arg:?}: the field name must be lower-case letters, digits and _ \
             (field=value, field+=v1,v2 or field-=v1,v2)"
        )));
    }
    Ok(Modifier {
        field: field.to_string(),
        op,
        value: arg[eq + 1..].to_string(),
    })
}

fn parse_modifiers(args: &[String]) -> Result<Vec<Modifier>, Failure> {
    args.iter().map(|a| parse_modifier(a)).collect()
}

/// true/false, yes/no, on/off.
fn parse_bool(field: &str, value: &str) -> Result<bool, Failure> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Ok(true),
        "false" | "no" | "off" => Ok(false),
        _ => Err(Failure(format!(
            "{field}: a boolean is true/false, yes/no or on/off, not {value:?}"
        ))),
    }
}

/// A comma-separated list, empty items dropped.
fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}

/// The value of `m`, a `field=value` of a single `kind` (`boolean`, `string`): `+=` and
/// `-=` are refused.
fn set_only<'a>(m: &'a Modifier, kind: &str) -> Result<&'a str, Failure> {
    if m.op != Op::Set {
        return Err(Failure(format!(
            "{}: a {kind} takes only {}=value (+= and -= are for lists)",
            m.field, m.field
        )));
    }
    Ok(&m.value)
}

fn apply_bool(target: &mut bool, m: &Modifier) -> Result<(), Failure> {
    *target = parse_bool(&m.field, set_only(m, "boolean")?)?;
    Ok(())
}

fn apply_string(target: &mut String, m: &Modifier) -> Result<(), Failure> {
    *target = set_only(m, "string")?.to_string();
    Ok(())
}

/// `=` replaces the list, `+=` adds what is not there yet (a set union), `-=` removes.
fn apply_list(target: &mut Vec<String>, m: &Modifier) {
    let values = split_list(&m.value);
    match m.op {
        Op::Set => *target = values,
        Op::Add => {
            for v in values {
                if !target.contains(&v) {
                    target.push(v);
                }
            }
        }
        Op::Remove => target.retain(|v| !values.contains(v)),
    }
}

fn unknown(field: &str, known: &str) -> Failure {
    Failure(format!("{field}: no such field (the fields are {known})"))
}

/// A change to CNS's config, checked before CNS is asked.
#[derive(Debug)]
enum Edit {
    Config(Vec<Modifier>),
    Zone {
        zone: String,
        add: bool,
        delete: bool,
        mods: Vec<Modifier>,
    },
}

const CONFIG_FIELDS: &str = "my_name, hostmaster, allow_transfer, use_alias, use_login";
const ZONE_FIELDS: &str = "zone, networks, peers, hidden_primary";
const REVERSE_FIELDS: &str = "peers, hidden_primary";

impl Edit {
    /// The modifiers' fields and types, checked on an empty config (before CNS is
    /// asked; whether the zone exists is checked on CNS's config).
    fn check(&self) -> Result<(), Failure> {
        let mut probe = cns::Config::default();
        if let Edit::Zone {
            zone, add: false, ..
        } = self
        {
            probe
                .forward_zones
                .insert(zone.to_ascii_lowercase(), Default::default());
        }
        self.apply(probe).map(|_| ())
    }

    /// The config with this change made.
    fn apply(&self, mut c: cns::Config) -> Result<cns::Config, Failure> {
        match self {
            Edit::Config(mods) => {
                for m in mods {
                    match m.field.as_str() {
                        "my_name" => apply_string(&mut c.my_name, m)?,
                        "hostmaster" => apply_string(&mut c.hostmaster, m)?,
                        "allow_transfer" => apply_list(&mut c.allow_transfer, m),
                        "use_alias" => apply_bool(&mut c.use_alias, m)?,
                        "use_login" => apply_bool(&mut c.use_login, m)?,
                        other => return Err(unknown(other, CONFIG_FIELDS)),
                    }
                }
                Ok(c)
            }
            Edit::Zone {
                zone,
                add,
                delete,
                mods,
            } => {
                if REVERSE.contains(&zone.as_str()) {
                    if *add || *delete {
                        return Err(Failure(format!(
                            "{zone}: the reverse zones are made as addresses need them; \
                             they can be changed, not added or deleted"
                        )));
                    }
                    let rev = c.reverse_zones.get_or_insert_with(Default::default);
                    for m in mods {
                        match m.field.as_str() {
                            "peers" | "slaves" => apply_list(&mut rev.peers, m),
                            "hidden_primary" | "hidden_master" => {
                                apply_bool(&mut rev.hidden_primary, m)?
                            }
                            other => return Err(unknown(other, REVERSE_FIELDS)),
                        }
                    }
                    return Ok(c);
                }
                let key = zone.to_ascii_lowercase();
                let exists = c.forward_zones.contains_key(&key);
                if *add && exists {
                    return Err(Failure(format!("zone {zone}: already exists")));
                }
                if !*add && !exists {
                    return Err(Failure(format!(
                        "zone {zone}: no such zone (did you mean to use -a?)"
                    )));
                }
                if *delete {
                    c.forward_zones.remove(&key);
                    return Ok(c);
                }
                let mut z = c.forward_zones.remove(&key).unwrap_or_default();
                let mut name = key;
                for m in mods {
                    match m.field.as_str() {
                        "zone" => apply_string(&mut name, m)?,
                        "networks" => apply_list(&mut z.networks, m),
                        "peers" | "slaves" => apply_list(&mut z.peers, m),
                        "hidden_primary" | "hidden_master" => apply_bool(&mut z.hidden_primary, m)?,
                        other => return Err(unknown(other, ZONE_FIELDS)),
                    }
                }
                // Triton's default for a new zone: every network.
                if *add && z.networks.is_empty() {
                    z.networks.push("*".to_string());
                }
                let name = name.to_ascii_lowercase();
                if name != zone.to_ascii_lowercase() && c.forward_zones.contains_key(&name) {
                    return Err(Failure(format!("zone: {name} already exists")));
                }
                c.forward_zones.insert(name, z);
                Ok(c)
            }
        }
    }
}

/// The zone's name after its modifiers (`zone=` renames it).
fn renamed(zone: &str, mods: &[Modifier]) -> String {
    mods.iter()
        .rev()
        .find(|m| m.field == "zone" && m.op == Op::Set)
        .map(|m| m.value.to_ascii_lowercase())
        .unwrap_or_else(|| zone.to_ascii_lowercase())
}

// ------------------------------------------------------------------ commands

async fn status(client: &mut CnsClient<Channel>) -> Result<String, Failure> {
    let zones = client
        .list_zones(cns::ListZonesRequest {})
        .await?
        .into_inner();
    let peers = client
        .list_peers(cns::ListPeersRequest {})
        .await?
        .into_inner();
    Ok(show_status(&zones.zones, &peers.peers))
}

fn show_status(zones: &[cns::ZoneInfo], peers: &[cns::Peer]) -> String {
    let serials: BTreeMap<&str, u32> = zones.iter().map(|z| (z.name.as_str(), z.serial)).collect();
    let mut rows = vec![vec!["ZONE".to_string(), "LATEST SERIAL".to_string()]];
    for z in zones {
        rows.push(vec![z.name.clone(), z.serial.to_string()]);
    }
    let mut out = table(&rows);
    out.push('\n');
    let mut rows = vec![vec![
        "PEER".to_string(),
        "ZONE".to_string(),
        "LATEST SERIAL".to_string(),
        "DRIFT".to_string(),
    ]];
    for p in peers {
        let mut first = true;
        for (zone, serial) in sorted(&p.serials) {
            let drift = match serials.get(zone.as_str()) {
                Some(latest) if latest == serial => String::new(),
                Some(latest) => format!("{} serials", i64::from(*latest) - i64::from(*serial)),
                None => "???".to_string(),
            };
            rows.push(vec![
                if first {
                    p.address.clone()
                } else {
                    String::new()
                },
                zone.clone(),
                serial.to_string(),
                drift,
            ]);
            first = false;
        }
    }
    out.push_str(&table(&rows));
    out
}

async fn vm(client: &mut CnsClient<Channel>, uuid: &str) -> Result<String, Failure> {
    if uuid::Uuid::parse_str(uuid).is_err() {
        return Err(Failure(format!("uuid: {uuid:?} is not a uuid")));
    }
    let answer = client
        .get_vm_names(cns::GetVmNamesRequest {
            uuids: vec![uuid.to_string()],
        })
        .await?
        .into_inner();
    let names = answer.vms.into_iter().find(|v| v.uuid == uuid);
    match names {
        Some(v) if v.last_visit_ms > 0 || !v.names.is_empty() => Ok(show_vm(&v)),
        _ => Err(Failure(format!(
            "ResourceNotFound: VM {uuid} is not known to CNS"
        ))),
    }
}

fn show_vm(v: &cns::VmNames) -> String {
    let mut out = format!("VM {}\n", v.uuid);
    out.push_str(&format!("last visited: {}\n", time_of(v.last_visit_ms)));
    if v.names.is_empty() {
        out.push_str("names: (none)\n");
    } else {
        out.push_str("names:\n");
        for n in &v.names {
            out.push_str(&format!("  {n}\n"));
        }
    }
    out
}

/// ms since the epoch as RFC 3339 (UTC, seconds).
fn time_of(ms: i64) -> String {
    if ms <= 0 {
        return "never".to_string();
    }
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

async fn peers(
    client: &mut CnsClient<Channel>,
    delete: bool,
    address: Option<String>,
) -> Result<String, Failure> {
    if delete {
        let address = address.unwrap_or_default();
        client
            .delete_peer(cns::DeletePeerRequest {
                address: address.clone(),
            })
            .await?;
        return Ok(format!("deleted peer {address}\n"));
    }
    let list = client
        .list_peers(cns::ListPeersRequest {})
        .await?
        .into_inner();
    match address {
        None => Ok(show_peers(&list.peers)),
        Some(a) => match list.peers.iter().find(|p| p.address == a) {
            Some(p) => Ok(show_peer(p)),
            None => Err(Failure(format!("ResourceNotFound: no peer {a}"))),
        },
    }
}

fn show_peers(peers: &[cns::Peer]) -> String {
    let mut rows = vec![vec![
        "PEER".to_string(),
        "VERSION".to_string(),
        "ZONES".to_string(),
    ]];
    for p in peers {
        rows.push(vec![
            p.address.clone(),
            p.version.clone(),
            sorted(&p.serials)
                .iter()
                .map(|(z, _)| z.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ]);
    }
    table(&rows)
}

fn show_peer(p: &cns::Peer) -> String {
    let mut out = format!(
        "address: {}\nversion: {}\nusing_notify: {}\nusing_ixfr: {}\nserials:\n",
        p.address, p.version, p.using_notify, p.using_ixfr
    );
    for (zone, serial) in sorted(&p.serials) {
        out.push_str(&format!("  {zone}: {serial}\n"));
    }
    out.push_str("counters:\n");
    for (name, n) in sorted(&p.counters) {
        out.push_str(&format!("  {name}: {n}\n"));
    }
    out
}

fn show_config(c: &cns::Config) -> String {
    format!(
        "my_name: {}\nhostmaster: {}\nuse_login: {}\nuse_alias: {}\nallow_transfer: {}\n",
        c.my_name,
        c.hostmaster,
        c.use_login,
        c.use_alias,
        c.allow_transfer.join(",")
    )
}

fn show_zones(c: &cns::Config) -> String {
    let mut rows = vec![vec![
        "ZONE".to_string(),
        "NETWORKS".to_string(),
        "PEERS".to_string(),
        "HIDDEN PRIMARY".to_string(),
    ]];
    for (name, z) in sorted(&c.forward_zones) {
        let networks = match z.networks.as_slice() {
            [one] if one == "*" => "*".to_string(),
            [] => String::new(),
            many => format!("({} UUIDs)", many.len()),
        };
        rows.push(vec![
            name.clone(),
            networks,
            z.peers.join(","),
            z.hidden_primary.to_string(),
        ]);
    }
    let rev = c.reverse_zones.clone().unwrap_or_default();
    rows.push(vec![
        "(ip-reverse-lookup)".to_string(),
        String::new(),
        rev.peers.join(","),
        rev.hidden_primary.to_string(),
    ]);
    table(&rows)
}

fn show_zone(c: &cns::Config, zone: &str) -> Result<String, Failure> {
    if REVERSE.contains(&zone) {
        let rev = c.reverse_zones.clone().unwrap_or_default();
        return Ok(format!(
            "zone: (ip-reverse-lookup)\npeers: {}\nhidden_primary: {}\n",
            rev.peers.join(","),
            rev.hidden_primary
        ));
    }
    let key = zone.to_ascii_lowercase();
    let Some(z) = c.forward_zones.get(&key) else {
        return Err(Failure(format!(
            "zone {zone}: no such zone (did you mean to use -a?)"
        )));
    };
    Ok(format!(
        "zone: {key}\nnetworks: {}\npeers: {}\nhidden_primary: {}\n",
        z.networks.join(","),
        z.peers.join(","),
        z.hidden_primary
    ))
}

/// A map's entries in key order (the protos' maps are hash maps).
fn sorted<V>(map: &HashMap<String, V>) -> Vec<(&String, &V)> {
    let mut entries: Vec<(&String, &V)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

/// Columns padded to their widest cell, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mods(args: &[&str]) -> Vec<Modifier> {
        parse_modifiers(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn config() -> cns::Config {
        let mut c = cns::Config {
            my_name: "cns.coal.example.com".into(),
            hostmaster: "hostmaster@example.com".into(),
            allow_transfer: vec!["10.0.0.1".into()],
            use_alias: true,
            ..Default::default()
        };
        c.forward_zones.insert(
            "coal.cns.example.com".into(),
            cns::ForwardZone {
                networks: vec!["*".into()],
                ..Default::default()
            },
        );
        c
    }

    #[test]
    fn modifier_syntax() {
        let m = mods(&["a=b", "list+=x,y", "list-=z", "empty=", "v=a=b"]);
        assert_eq!(
            m.iter()
                .map(|m| (m.field.as_str(), m.op.clone(), m.value.as_str()))
                .collect::<Vec<_>>(),
            vec![
                ("a", Op::Set, "b"),
                ("list", Op::Add, "x,y"),
                ("list", Op::Remove, "z"),
                ("empty", Op::Set, ""),
                ("v", Op::Set, "a=b"),
            ]
        );
        for bad in ["novalue", "=x", "+=x", "My_Name=x", "a b=c", "a*=b"] {
            let e = parse_modifier(bad).unwrap_err().0;
            assert!(e.starts_with(&format!("modifier {bad:?}")), "{bad}: {e}");
        }
    }

    #[test]
    fn booleans_as_triton_spells_them() {
        for (v, want) in [
            ("true", true),
            ("yes", true),
            ("on", true),
            ("ON", true),
            ("false", false),
            ("no", false),
            ("off", false),
        ] {
            assert_eq!(parse_bool("use_login", v), Ok(want), "{v}");
        }
        let e = parse_bool("use_login", "maybe").unwrap_err().0;
        assert_eq!(
            e,
            "use_login: a boolean is true/false, yes/no or on/off, not \"maybe\""
        );
    }

    #[test]
    fn config_modifiers() {
        let c = Edit::Config(mods(&[
            "my_name=ns.example.org",
            "use_login=yes",
            "use_alias=off",
            "allow_transfer+=10.0.0.2,10.0.0.1,192.168.0.0/24",
        ]))
        .apply(config())
        .unwrap();
        assert_eq!(c.my_name, "ns.example.org");
        assert!(c.use_login);
        assert!(!c.use_alias);
        assert_eq!(
            c.allow_transfer,
            vec!["10.0.0.1", "10.0.0.2", "192.168.0.0/24"]
        );
        let c = Edit::Config(mods(&["allow_transfer-=10.0.0.1,10.0.0.9"]))
            .apply(c)
            .unwrap();
        assert_eq!(c.allow_transfer, vec!["10.0.0.2", "192.168.0.0/24"]);
        let c = Edit::Config(mods(&["allow_transfer="])).apply(c).unwrap();
        assert!(c.allow_transfer.is_empty());
    }

    #[test]
    fn config_modifier_errors_name_the_field() {
        for (args, want) in [
            (
                "use_alias+=true",
                "use_alias: a boolean takes only use_alias=value (+= and -= are for lists)",
            ),
            (
                "my_name-=x",
                "my_name: a string takes only my_name=value (+= and -= are for lists)",
            ),
            (
                "use_login=2",
                "use_login: a boolean is true/false, yes/no or on/off, not \"2\"",
            ),
            (
                "dns_domain=x",
                "dns_domain: no such field (the fields are my_name, hostmaster, \
                 allow_transfer, use_alias, use_login)",
            ),
        ] {
            let e = Edit::Config(mods(&[args])).apply(config()).unwrap_err().0;
            assert_eq!(e, want, "{args}");
        }
    }

    fn zone(zone: &str, add: bool, delete: bool, args: &[&str]) -> Result<cns::Config, Failure> {
        Edit::Zone {
            zone: zone.into(),
            add,
            delete,
            mods: mods(args),
        }
        .apply(config())
    }

    #[test]
    fn zones_added_changed_renamed_deleted() {
        let c = zone(
            "Public.Example.COM",
            true,
            false,
            &["peers=ns0.example.com"],
        )
        .unwrap();
        let z = &c.forward_zones["public.example.com"];
        assert_eq!(z.networks, vec!["*"], "a new zone lists every network");
        assert_eq!(z.peers, vec!["ns0.example.com"]);

        let c = zone(
            "coal.cns.example.com",
            false,
            false,
            &[
                "networks=aaaaaaaa-0000-0000-0000-000000000001",
                "peers+=ns1.example.com",
                "hidden_primary=yes",
            ],
        )
        .unwrap();
        let z = &c.forward_zones["coal.cns.example.com"];
        assert_eq!(z.networks, vec!["aaaaaaaa-0000-0000-0000-000000000001"]);
        assert_eq!(z.peers, vec!["ns1.example.com"]);
        assert!(z.hidden_primary);

        let c = zone(
            "coal.cns.example.com",
            false,
            false,
            &["zone=dc.example.org"],
        )
        .unwrap();
        assert_eq!(
            c.forward_zones.keys().collect::<Vec<_>>(),
            vec!["dc.example.org"]
        );
        assert_eq!(c.forward_zones["dc.example.org"].networks, vec!["*"]);

        let c = zone("coal.cns.example.com", false, true, &[]).unwrap();
        assert!(c.forward_zones.is_empty());

        let c = zone("reverse", false, false, &["peers=ns0.example.com"]).unwrap();
        assert_eq!(c.reverse_zones.unwrap().peers, vec!["ns0.example.com"]);
    }

    #[test]
    fn zone_errors_name_the_zone_or_field() {
        for (name, add, delete, args, want) in [
            (
                "nope.example.com",
                false,
                false,
                &["peers=x"][..],
                "zone nope.example.com: no such zone (did you mean to use -a?)",
            ),
            (
                "coal.cns.example.com",
                true,
                false,
                &[][..],
                "zone coal.cns.example.com: already exists",
            ),
            (
                "coal.cns.example.com",
                false,
                false,
                &["slaves+=a", "ttl=5"][..],
                "ttl: no such field (the fields are zone, networks, peers, hidden_primary)",
            ),
            (
                "coal.cns.example.com",
                false,
                false,
                &["hidden_primary-=x"][..],
                "hidden_primary: a boolean takes only hidden_primary=value (+= and -= are \
                 for lists)",
            ),
            (
                "reverse",
                false,
                false,
                &["networks=*"][..],
                "networks: no such field (the fields are peers, hidden_primary)",
            ),
            (
                "reverse",
                true,
                false,
                &[][..],
                "reverse: the reverse zones are made as addresses need them; they can be \
                 changed, not added or deleted",
            ),
        ] {
            let e = zone(name, add, delete, args).unwrap_err().0;
            assert_eq!(e, want, "{name} {args:?}");
        }
    }

    #[test]
    fn command_line() {
        let cli =
            Cli::try_parse_from(["cnsadm", "--url", "h:1", "zones", "-a", "z", "peers=a"]).unwrap();
        assert_eq!(cli.url, "h:1");
        match cli.command {
            Command::Zones {
                add,
                delete,
                zone,
                modifiers,
            } => {
                assert!(add && !delete);
                assert_eq!(zone.as_deref(), Some("z"));
                assert_eq!(modifiers, vec!["peers=a"]);
            }
            other => panic!("{other:?}"),
        }
        // -a and -d need a zone, and not both; peers -d needs an address.
        for bad in [
            &["cnsadm", "zones", "-a"][..],
            &["cnsadm", "zones", "-a", "-d", "z"][..],
            &["cnsadm", "peers", "-d"][..],
            &["cnsadm", "vm"][..],
            &["cnsadm", "frobnicate"][..],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
        let cli = Cli::try_parse_from(["cnsadm", "peers", "-d", "10.0.0.5"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Peers { delete: true, address: Some(a) } if a == "10.0.0.5"
        ));
    }

    #[test]
    fn status_shows_drift() {
        let zones = vec![cns::ZoneInfo {
            name: "coal.cns.example.com".into(),
            serial: 40,
        }];
        let mut serials = std::collections::HashMap::new();
        serials.insert("coal.cns.example.com".to_string(), 37);
        serials.insert("gone.example.com".to_string(), 3);
        let peers = vec![cns::Peer {
            address: "10.0.0.2".into(),
            serials,
            ..Default::default()
        }];
        let out = show_status(&zones, &peers);
        assert!(out.contains("coal.cns.example.com  40"), "{out}");
        assert!(out.contains("3 serials"), "{out}");
        assert!(out.contains("???"), "{out}");
    }

    #[test]
    fn times() {
        assert_eq!(time_of(0), "never");
        assert_eq!(time_of(1_700_000_000_123), "2023-11-14T22:13:20Z");
    }
}
