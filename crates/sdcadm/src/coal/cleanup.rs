//! What `coal down` removes besides the services: anything carrying CoaL's names. The
//! prefixes come from the headnode cn-agent's CoaL config in `deploy/services.toml`
//! (`linux.cgroup_parent`, `linux.netns_prefix`, `linux.link_prefix`) and those of the
//! other linux nodes made from it (`cns`), and the bridges from `[coal] bridges`, so
//! what is swept is exactly what CoaL told the cn-agents to make, with their nftables
//! tables (`<netns_prefix>guard`, `<netns_prefix>host`), and the nodes' own network
//! namespaces and veths (`coalcn<i>`, `coalcn<i>-<tag>`).

use std::path::{Path, PathBuf};

use super::cns::Names;
use super::process;

#[derive(Debug, Clone)]
pub struct Prefixes {
    pub coal_dir: PathBuf,
    pub cgroup_root: PathBuf,
    /// The names of each linux node's agent.
    pub agents: Vec<Names>,
    /// The start of the linux nodes' own namespaces and of their veths' host ends.
    pub node_netns: String,
    pub bridges: Vec<String>,
}

impl Prefixes {
    fn netns_prefixes(&self) -> impl Iterator<Item = &str> {
        self.agents
            .iter()
            .map(|a| a.netns_prefix.as_str())
            .chain([self.node_netns.as_str()])
    }

    fn link_prefixes(&self) -> impl Iterator<Item = &str> {
        self.agents
            .iter()
            .map(|a| a.link_prefix.as_str())
            .chain([self.node_netns.as_str()])
    }
}

#[derive(Debug, Default, Clone)]
pub struct Leftovers {
    /// (pid, command line)
    pub processes: Vec<(u32, String)>,
    pub mounts: Vec<PathBuf>,
    pub cgroups: Vec<PathBuf>,
    pub netns: Vec<String>,
    pub links: Vec<String>,
    pub bridges: Vec<String>,
    /// nftables tables, "<family> <name>".
    pub tables: Vec<String>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
            && self.mounts.is_empty()
            && self.cgroups.is_empty()
            && self.netns.is_empty()
            && self.links.is_empty()
            && self.bridges.is_empty()
            && self.tables.is_empty()
    }

    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (pid, cmd) in &self.processes {
            out.push(format!("process {pid} ({cmd})"));
        }
        for m in &self.mounts {
            out.push(format!("mount {}", m.display()));
        }
        for c in &self.cgroups {
            out.push(format!("cgroup {}", c.display()));
        }
        for n in &self.netns {
            out.push(format!("network namespace {n}"));
        }
        for l in &self.links {
            out.push(format!("veth {l}"));
        }
        for b in &self.bridges {
            out.push(format!("bridge {b}"));
        }
        for t in &self.tables {
            out.push(format!("nftables table {t}"));
        }
        out
    }
}

/// The cgroup directories CoaL's instances live in, deepest first.
fn cgroup_dirs(p: &Prefixes) -> Vec<PathBuf> {
    let mut tops = Vec::new();
    for parent in p.agents.iter().map(|a| &a.cgroup_parent) {
        tops.push(p.cgroup_root.join(parent));
        if let Ok(rd) = std::fs::read_dir(&p.cgroup_root) {
            for e in rd.filter_map(|e| e.ok()) {
                let d = e.path().join(parent);
                if e.path().is_dir() && !e.path().join("cgroup.controllers").exists() {
                    tops.push(d);
                }
            }
        }
    }
    let mut out = Vec::new();
    for top in tops {
        if top.is_dir() {
            walk_dirs(&top, &mut out);
        }
    }
    out.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    out.dedup();
    out
}

fn walk_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(|e| e.ok()) {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk_dirs(&e.path(), out);
            }
        }
    }
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Everything of CoaL's still on the host.
pub fn find(p: &Prefixes) -> Leftovers {
    let mut l = Leftovers::default();
    let me = std::process::id();
    let coal_dir = p.coal_dir.display().to_string();
    // Processes: in CoaL's cgroups, or running a program from (or naming) $COAL_DIR.
    let mut pids = std::collections::BTreeSet::new();
    for d in cgroup_dirs(p) {
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|x| x.trim().parse::<u32>().ok()));
        }
    }
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.filter_map(|e| e.ok()) {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let exe = std::fs::read_link(e.path().join("exe")).unwrap_or_default();
            if exe.starts_with(&p.coal_dir) || cmdline(pid).contains(&coal_dir) {
                pids.insert(pid);
            }
        }
    }
    pids.remove(&me);
    for pid in pids {
        if process::Pid::of(pid).is_some_and(|x| x.alive()) {
            l.processes.push((pid, cmdline(pid)));
        }
    }
    // Mounts under $COAL_DIR, deepest first.
    if let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in text.lines() {
            if let Some(mp) = line.split(' ').nth(4) {
                let mp = PathBuf::from(mp.replace("\\040", " "));
                if mp.starts_with(&p.coal_dir) {
                    l.mounts.push(mp);
                }
            }
        }
    }
    l.mounts
        .sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    l.cgroups = cgroup_dirs(p);
    if let Ok(rd) = std::fs::read_dir("/run/netns") {
        for e in rd.filter_map(|e| e.ok()) {
            if let Some(n) = e.file_name().to_str()
                && p.netns_prefixes().any(|x| n.starts_with(x))
            {
                l.netns.push(n.to_string());
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir("/sys/class/net") {
        for e in rd.filter_map(|e| e.ok()) {
            if let Some(n) = e.file_name().to_str() {
                if p.bridges.iter().any(|b| b == n) {
                    l.bridges.push(n.to_string());
                } else if p.link_prefixes().any(|x| n.starts_with(x)) {
                    l.links.push(n.to_string());
                }
            }
        }
    }
    l.netns.sort();
    l.links.sort();
    l.bridges.sort();
    l.tables = p
        .agents
        .iter()
        .flat_map(|a| nft_tables(&a.netns_prefix))
        .collect();
    l
}

/// cn-agent's tables of this prefix that exist (its linux/firewall.rs names them so:
/// the prefix with anything but letters, digits, `-`, `_` and `.` made `_`).
fn nft_tables(netns_prefix: &str) -> Vec<String> {
    let prefix: String = netns_prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let wanted = [
        format!("bridge {prefix}guard"),
        format!("inet {prefix}host"),
    ];
    let listed = super::setup::run("nft", &["list", "tables"]).unwrap_or_default();
    listed
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table "))
        .filter(|t| wanted.iter().any(|w| w == t))
        .map(str::to_string)
        .collect()
}

/// Removes what [`find`] found; returns what could not be removed, with why.
pub fn remove(l: &Leftovers) -> Vec<String> {
    let mut failed = Vec::new();
    for (pid, _) in &l.processes {
        process::kill_pid(*pid);
    }
    if !l.processes.is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    for m in &l.mounts {
        let s = m.display().to_string();
        if let Err(e) = super::setup::run("umount", &["-l", &s]) {
            failed.push(e.to_string());
        }
    }
    for c in &l.cgroups {
        // A cgroup can be removed once its processes are gone (they were just killed).
        let mut ok = false;
        for _ in 0..20 {
            if std::fs::remove_dir(c).is_ok() || !c.exists() {
                ok = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if !ok {
            failed.push(format!("cannot remove cgroup {}", c.display()));
        }
    }
    for n in &l.netns {
        if let Err(e) = super::setup::run("ip", &["netns", "delete", n]) {
            failed.push(e.to_string());
        }
    }
    for n in l.links.iter().chain(l.bridges.iter()) {
        if super::setup::link_exists(n)
            && let Err(e) = super::setup::run("ip", &["link", "delete", n])
            && super::setup::link_exists(n)
        {
            failed.push(e.to_string());
        }
    }
    for t in &l.tables {
        let mut args = vec!["delete", "table"];
        args.extend(t.split(' '));
        if let Err(e) = super::setup::run("nft", &args) {
            failed.push(e.to_string());
        }
    }
    failed
}
