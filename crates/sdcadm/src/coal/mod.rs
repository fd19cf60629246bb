//! CoaL: a whole datacenter on this machine, from `deploy/services.toml`.
//!
//! `$COAL_DIR` (default `/var/tmp/triton-coal`) holds everything:
//!
//! ```text
//! bin/            release binaries (copied by scripts/coal, so a rebuild never changes what runs)
//! etc/<svc>.toml  each service's config, rendered from services.toml
//! data/<svc>/     each service's state
//! logs/<svc>.log  each service's output
//! run/<svc>.pid   "<pid> <start time>"; run/<svc>.skipped says why an optional one is not running
//! ssh/            the admin's key pair and the ssh-agent socket holding it
//! images/         the base image tarball
//! coal.json       the options of the last `up` (--linux-cns, --sim-cns, --one-node)
//! ```

pub mod cleanup;
pub mod cns;
pub mod health;
pub mod process;
pub mod pxe;
pub mod seed;
pub mod setup;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use toml::Value;

use crate::deploy::{Context, ContextKind, Deployment, Rendered, Service};
use crate::error::Error;
use process::Pid;

pub const DEFAULT_COAL_DIR: &str = "/var/tmp/triton-coal";
/// How long a service has to become healthy after it was started.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a running but unhealthy service gets before `up` restarts it.
/// Moray's database password, beside the services' data dirs: `$COAL_DIR/data/<this>`,
/// which services.toml names as `{{data_dir}}/../moray.password`.
const MORAY_PASSWORD_FILE: &str = "moray.password";
const UNHEALTHY_GRACE: Duration = Duration::from_secs(10);
/// How long `up` waits for every compute node to register and heartbeat.
const CN_TIMEOUT: Duration = Duration::from_secs(60);

/// Progress lines on stderr: `[coal  12s] napi: healthy at 127.0.0.1:2023`. The clock
/// starts at `$COAL_T0` (unix seconds, set by scripts/coal) so it counts the build too.
pub struct Progress {
    tool: &'static str,
    t0: Instant,
    offset: u64,
}

impl Progress {
    pub fn new() -> Progress {
        Progress::named("coal")
    }

    /// Progress lines of another tool (`[images  3s] ...`).
    pub fn named(tool: &'static str) -> Progress {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let offset = std::env::var("COAL_T0")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(|t0| now.saturating_sub(t0))
            .unwrap_or(0);
        Progress {
            tool,
            t0: Instant::now(),
            offset,
        }
    }

    pub fn secs(&self) -> u64 {
        self.offset + self.t0.elapsed().as_secs()
    }

    pub fn step(&self, msg: impl AsRef<str>) {
        eprintln!("[{} {:3}s] {}", self.tool, self.secs(), msg.as_ref());
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// Options of `coal up` that persist for later commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Linux compute nodes (cn-agents with real instances): 1, the headnode's, unless
    /// `--linux-cns` said more (a coal.json from before the option means 1).
    #[serde(default = "one_linux_cn")]
    pub linux_cns: u32,
    pub sim_cns: u32,
    pub one_node: bool,
    /// Network-booted QEMU compute nodes (`--pxe-cns`, [`pxe`]); 0 before the option.
    #[serde(default)]
    pub pxe_cns: u32,
}

fn one_linux_cn() -> u32 {
    1
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub coal_dir: Option<PathBuf>,
    pub linux_cns: Option<u32>,
    pub sim_cns: Option<u32>,
    pub one_node: Option<bool>,
    pub pxe_cns: Option<u32>,
}

pub struct Coal {
    pub deployment: Deployment,
    pub ctx: Context,
    pub dir: PathBuf,
    pub state: State,
    /// The linux compute nodes: the headnode's cn-agent, then `cn-agent-2`... in their
    /// own network namespaces (`cns`), which `open` adds to `deployment.services`.
    pub cns: Vec<cns::LinuxCn>,
    pub pg_bindir: PathBuf,
    pub progress: Progress,
}

/// One line of `coal status`.
#[derive(Debug, Clone)]
pub struct Row {
    pub service: String,
    pub address: String,
    pub pid: Option<u32>,
    pub health: String,
    pub ok: bool,
}

impl Coal {
    pub fn open(root: &Path, opts: &Options) -> Result<Coal, Error> {
        let deployment = Deployment::load(&root.join(crate::deploy::SERVICES_TOML))?;
        let dir = opts
            .coal_dir
            .clone()
            .or_else(|| std::env::var_os("COAL_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_COAL_DIR));
        let saved: Option<State> = std::fs::read_to_string(dir.join("coal.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let default_sim = deployment
            .vars
            .get("sim_cns")
            .and_then(Value::as_integer)
            .unwrap_or(0);
        let default_one = deployment
            .vars
            .get("one_node")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let default_linux = deployment
            .vars
            .get("linux_cns")
            .and_then(Value::as_integer)
            .unwrap_or(1);
        let state = State {
            linux_cns: opts
                .linux_cns
                .or(saved.as_ref().map(|s| s.linux_cns))
                .unwrap_or(u32::try_from(default_linux).unwrap_or(1)),
            sim_cns: opts
                .sim_cns
                .or(saved.as_ref().map(|s| s.sim_cns))
                .unwrap_or(u32::try_from(default_sim).unwrap_or(0)),
            one_node: opts
                .one_node
                .or(saved.as_ref().map(|s| s.one_node))
                .unwrap_or(default_one),
            pxe_cns: opts
                .pxe_cns
                .or(saved.as_ref().map(|s| s.pxe_cns))
                .unwrap_or(0),
        };
        let pg_bindir = setup::pg_bindir();
        let mut deployment = deployment;
        let mut ctx = Context::new(ContextKind::Coal, &deployment);
        ctx.coal_dir = dir.clone();
        let cns = linux_cns(&mut deployment, &mut ctx, state.linux_cns)?;
        ctx.vars
            .insert("sim_cns".into(), Value::Integer(i64::from(state.sim_cns)));
        ctx.vars
            .insert("one_node".into(), Value::Boolean(state.one_node));
        ctx.vars.insert(
            "linux_cns".into(),
            Value::Integer(i64::from(state.linux_cns)),
        );
        ctx.vars.insert(
            "pg_bindir".into(),
            Value::String(pg_bindir.display().to_string()),
        );
        Ok(Coal {
            deployment,
            ctx,
            dir,
            state,
            cns,
            pg_bindir,
            progress: Progress::new(),
        })
    }

    fn sub(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    fn log_path(&self, svc: &str) -> PathBuf {
        self.sub("logs").join(format!("{svc}.log"))
    }
    fn pid_path(&self, svc: &str) -> PathBuf {
        self.sub("run").join(format!("{svc}.pid"))
    }
    fn skipped_path(&self, svc: &str) -> PathBuf {
        self.sub("run").join(format!("{svc}.skipped"))
    }

    /// The services this CoaL runs (their `when`/`unless` hold), in start order.
    pub fn active(&self) -> Result<Vec<&Service>, Error> {
        let names: Vec<String> = self
            .deployment
            .services
            .iter()
            .filter(|s| s.when.as_ref().is_none_or(|v| self.ctx.var_is_set(v)))
            .filter(|s| s.unless.as_ref().is_none_or(|v| !self.ctx.var_is_set(v)))
            .map(|s| s.name.clone())
            .collect();
        let order = self.deployment.start_order(&names)?;
        Ok(order
            .iter()
            .filter_map(|n| self.deployment.service(n))
            .collect())
    }

    /// `<crate> <binary>` for every program scripts/coal builds and installs.
    pub fn binaries(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for s in &self.deployment.services {
            if let Some(k) = &s.krate {
                out.push((k.clone(), s.binary.clone()));
            }
        }
        for t in &self.deployment.coal.tools {
            if let Some((k, b)) = t.split_once(':') {
                out.push((k.to_string(), b.to_string()));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// A service's config as CoaL runs it; a linux compute node's with its own
    /// addresses and names, and its overlay section (`cns::configure`).
    fn render(&self, s: &Service) -> Result<Rendered, Error> {
        let mut r = self.deployment.render(s, &self.ctx)?;
        if let Some(cn) = self.linux_cn(&s.name) {
            cns::configure(&mut r.config, cn, self.portolan().as_deref());
        }
        Ok(r)
    }

    /// The config file CoaL writes for `service` (`etc/<service>.toml`).
    pub fn config_of(&self, service: &str) -> Result<toml::Table, Error> {
        let s = self
            .deployment
            .service(service)
            .ok_or_else(|| Error::Usage(format!("no service {service:?}")))?;
        Ok(self.render(s)?.config)
    }

    /// The linux compute node a service is.
    pub fn linux_cn(&self, service: &str) -> Option<&cns::LinuxCn> {
        self.cns.iter().find(|c| c.service == service)
    }

    /// Portolan's SVP address (host:port), when services.toml has Portolan: the linux
    /// nodes' `overlay.portolan`.
    fn portolan(&self) -> Option<String> {
        let s = self.deployment.service("portolan")?;
        let port = s
            .ports
            .get("svp")
            .or_else(|| s.ports.values().next())
            .copied()?;
        Some(format!("{}:{port}", self.ctx.host_of("portolan")))
    }

    fn program(&self, s: &Service, r: &Rendered) -> Option<PathBuf> {
        if s.krate.is_some() {
            let p = self.sub("bin").join(&r.program);
            p.is_file().then_some(p)
        } else {
            process::which(&r.program)
        }
    }

    /// host:port of the service's health port: the admin bridge's address for the
    /// services that listen there (`{{bind_admin}}`), else 127.0.0.1.
    pub fn address(&self, s: &Service) -> String {
        let port = s.ports.get(&s.health.port).copied().unwrap_or(0);
        format!("{}:{port}", self.ctx.host_of(&s.name))
    }

    fn addr_of(&self, svc: &str, port: &str) -> Option<String> {
        let s = self.deployment.service(svc)?;
        Some(format!("{}:{}", self.ctx.host_of(svc), s.ports.get(port)?))
    }

    async fn healthy(&self, s: &Service) -> Result<(), String> {
        health::check(
            s.health.kind,
            &self.address(s),
            s.health.path.as_deref(),
            &self.pg_bindir,
        )
        .await
    }

    fn running(&self, s: &Service) -> Option<Pid> {
        process::read_pid(&self.pid_path(&s.name)).filter(Pid::alive)
    }

    fn cn_agent_prefixes(&self) -> cleanup::Prefixes {
        let mut p = cleanup::Prefixes {
            coal_dir: self.dir.clone(),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            agents: self.cns.iter().map(|c| c.names.clone()).collect(),
            node_netns: cns::NETNS_STEM.into(),
            bridges: self
                .deployment
                .coal
                .bridges
                .iter()
                .map(|b| b.name.clone())
                .collect(),
        };
        let linux = self
            .deployment
            .services
            .iter()
            .filter(|s| s.binary == "cn-agent")
            .filter_map(|s| self.render(s).ok())
            .find(|r| r.config.get("backend").and_then(Value::as_str) == Some("linux"))
            .and_then(|r| r.config.get("linux").and_then(Value::as_table).cloned())
            .unwrap_or_default();
        if let Some(v) = linux.get("cgroup_root").and_then(Value::as_str) {
            p.cgroup_root = PathBuf::from(v);
        }
        p
    }

    // --- up ---------------------------------------------------------------------------------

    pub async fn up(&self) -> Result<(), Error> {
        let p = &self.progress;
        private_dir(&self.dir)?;
        // Before coal.json says fewer nodes than run.
        self.no_other_linux_cns()?;
        for d in ["bin", "etc", "logs", "run", "data", "ssh", "images"] {
            let path = self.sub(d);
            std::fs::create_dir_all(&path).map_err(|e| Error::io("create", &path, e))?;
        }
        set_mode(&self.sub("etc"), 0o700)?;
        set_mode(&self.sub("data"), 0o755)?;
        set_mode(&self.sub("ssh"), 0o700)?;
        let state = serde_json::to_string(&self.state).map_err(|e| Error::Check(e.to_string()))?;
        crate::images::write_atomically(&self.dir.join("coal.json"), state.as_bytes())?;
        p.step(format!(
            "bringing up CoaL in {} ({} linux and {} simulated compute node(s), Manatee {})",
            self.dir.display(),
            self.cns.len(),
            self.state.sim_cns,
            if self.state.one_node {
                "one-node"
            } else {
                "three peers"
            }
        ));

        let (key, made) = setup::ssh_key(&self.sub("ssh"))?;
        let public = std::fs::read_to_string(key.with_extension("pub"))
            .map_err(|e| Error::io("read", key.with_extension("pub"), e))?;
        let fingerprint = setup::md5_fingerprint(&public)?;
        if made {
            p.step(format!(
                "ssh: made the admin key {} ({fingerprint})",
                key.display()
            ));
        }
        self.ssh_agent(&key, &fingerprint)?;
        // smartdc-auth (node-triton) scans $HOME/.ssh before asking the agent, and a
        // missing directory is an error there ("ENOENT ... scandir"), not "no keys".
        if let Some(home) = std::env::var_os("HOME").map(PathBuf::from) {
            let dot_ssh = home.join(".ssh");
            if home.is_dir() && !dot_ssh.exists() {
                std::fs::create_dir(&dot_ssh).map_err(|e| Error::io("create", &dot_ssh, e))?;
                set_mode(&dot_ssh, 0o700)?;
                p.step(format!(
                    "ssh: made an empty {} (the triton CLI fails without one)",
                    dot_ssh.display()
                ));
            }
        }

        // Moray and the APIs listen on the admin bridge's address: it is there before the
        // first of them starts (cn-agent's `bridges` step finds it made).
        let active = self.active()?;
        if active
            .iter()
            .any(|s| self.ctx.admin_services.contains(&s.name))
        {
            for b in setup::bridges(&self.deployment.coal.bridges)? {
                p.step(format!(
                    "made bridge {b} (the admin bridge's address is where the APIs listen)"
                ));
            }
        }
        if !self.cns.is_empty() {
            let wrapper = self.sub("bin").join("coal-zlogin");
            crate::images::write_atomically(
                &wrapper,
                cns::zlogin_wrapper(&self.dir, &self.cns).as_bytes(),
            )?;
            set_mode(&wrapper, 0o755)?;
        }
        let mut skipped: Vec<(String, String)> = Vec::new();
        for s in active {
            if let Err(e) = self.up_one(s).await {
                if s.optional {
                    let why = crate::error::chain(&e);
                    p.step(format!(
                        "WARNING {}: skipped (optional, still being written): {why}",
                        s.name
                    ));
                    let _ = std::fs::write(self.skipped_path(&s.name), &why);
                    skipped.push((s.name.clone(), why));
                    continue;
                }
                return Err(e);
            }
        }

        self.seed(&public, &fingerprint).await?;
        self.wait_for_cns().await?;
        self.pxe_up().await?;
        self.print_usage(&skipped);
        Ok(())
    }

    async fn up_one(&self, s: &Service) -> Result<(), Error> {
        let p = &self.progress;
        let addr = self.address(s);
        let _ = std::fs::remove_file(self.skipped_path(&s.name));
        let r = self.render(s)?;
        let Some(program) = self.program(s, &r) else {
            let hint = match &s.krate {
                Some(k) => format!(
                    "{} is not built (crate {k}; scripts/coal up builds it)",
                    self.sub("bin").join(&r.program).display()
                ),
                None => format!(
                    "{} is not installed (scripts/coal up installs the system packages)",
                    r.program
                ),
            };
            return Err(Error::Service {
                service: s.name.clone(),
                message: hint,
                log: None,
            });
        };
        if let Some(pid) = self.running(s) {
            let deadline = Instant::now() + UNHEALTHY_GRACE;
            loop {
                match self.healthy(s).await {
                    Ok(()) => {
                        p.step(format!(
                            "{}: already running (pid {}) and healthy at {addr}",
                            s.name, pid.pid
                        ));
                        return Ok(());
                    }
                    Err(why) if Instant::now() >= deadline => {
                        p.step(format!(
                            "{}: running (pid {}) but unhealthy ({why}); restarting",
                            s.name, pid.pid
                        ));
                        process::stop(pid, process::signal_number(s.stop_signal.as_deref()));
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        } else if self.pid_path(&s.name).exists() {
            p.step(format!(
                "{}: was not running any more (crashed?); starting it again",
                s.name
            ));
        }
        // Something else on the port (a CoaL whose pid files were lost) is not ours to use.
        if self.healthy(s).await.is_ok() {
            return Err(Error::Service {
                service: s.name.clone(),
                message: format!(
                    "{addr} already answers, but not from a process CoaL started; stop it (or run scripts/coal down) first"
                ),
                log: None,
            });
        }
        self.pre_start(s, &r)?;
        let mut args = r.args.clone();
        if !r.config.is_empty() {
            let path = self.sub("etc").join(format!("{}.toml", s.name));
            let text = format!(
                "# {}: made by `sdcadm coal up` from deploy/services.toml; rewritten at every up.\n{}",
                s.name,
                toml::to_string(&r.config).map_err(|e| Error::Check(e.to_string()))?
            );
            std::fs::write(&path, text).map_err(|e| Error::io("write the config", &path, e))?;
            args.insert(0, path.display().to_string());
            args.insert(0, "--config".into());
        }
        let data = self.ctx.data_dir(&s.name);
        std::fs::create_dir_all(&data).map_err(|e| Error::io("create", &data, e))?;
        if let Some(user) = &s.run_as {
            setup::run("chown", &[&format!("{user}:"), &data.display().to_string()])?;
        }
        let log = self.log_path(&s.name);
        p.step(format!("{}: starting on {addr}", s.name));
        let netns = self
            .linux_cn(&s.name)
            .and_then(cns::LinuxCn::netns_path)
            .map(|path| process::Netns {
                path,
                park: self.sub("run").join(format!("{}.cgroup", s.name)),
            });
        let (pid, mut child) = process::spawn(&process::Spawn {
            program: &program,
            args: &args,
            env: &[(
                "RUST_LOG".into(),
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )],
            log: &log,
            run_as: s.run_as.as_deref(),
            cwd: &data,
            netns: netns.as_ref(),
        })?;
        process::write_pid(&self.pid_path(&s.name), pid)?;
        let started = Instant::now();
        let mut last_note = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::Service {
                    service: s.name.clone(),
                    message: format!(
                        "exited during start-up ({status}); last lines of its log:\n{}",
                        indent(&process::tail(&log, 15))
                    ),
                    log: Some(log),
                });
            }
            match self.healthy(s).await {
                Ok(()) => break,
                Err(why) => {
                    if started.elapsed() > START_TIMEOUT {
                        process::stop(pid, process::signal_number(s.stop_signal.as_deref()));
                        return Err(Error::Service {
                            service: s.name.clone(),
                            message: format!(
                                "not healthy after {}s ({why}); last lines of its log:\n{}",
                                START_TIMEOUT.as_secs(),
                                indent(&process::tail(&log, 15))
                            ),
                            log: Some(log),
                        });
                    }
                    if last_note.elapsed() > Duration::from_secs(10) {
                        p.step(format!(
                            "{}: still waiting ({}s: {why})",
                            s.name,
                            started.elapsed().as_secs()
                        ));
                        last_note = Instant::now();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.post_start(s)?;
        p.step(format!(
            "{}: healthy at {addr} ({:.1}s)",
            s.name,
            started.elapsed().as_secs_f32()
        ));
        Ok(())
    }

    fn pre_start(&self, s: &Service, _r: &Rendered) -> Result<(), Error> {
        let p = &self.progress;
        for step in &s.coal_setup {
            match step.as_str() {
                "postgres" => {
                    let port = s.ports.values().next().copied().unwrap_or(5432);
                    let user = s.run_as.as_deref().unwrap_or("postgres");
                    if setup::postgres_initdb(
                        &self.pg_bindir,
                        &self.ctx.data_dir(&s.name),
                        port,
                        user,
                    )? {
                        p.step(format!(
                            "{}: initdb in {}",
                            s.name,
                            self.ctx.data_dir(&s.name).join("data").display()
                        ));
                    }
                }
                "bridges" => {
                    for b in setup::bridges(&self.deployment.coal.bridges)? {
                        p.step(format!("{}: made bridge {b}", s.name));
                    }
                }
                "moray-password" => {
                    let path = self.ctx.data_dir(MORAY_PASSWORD_FILE);
                    if setup::password_file(&path)? {
                        p.step(format!(
                            "{}: made the password file of Moray's database role, {}",
                            s.name,
                            path.display()
                        ));
                    }
                }
                "tls" => {
                    let dir = self.ctx.data_dir(&s.name).join("tls");
                    if setup::tls(&dir)? {
                        p.step(format!(
                            "{}: made a self-signed certificate in {}",
                            s.name,
                            dir.display()
                        ));
                    }
                }
                _ => {}
            }
        }
        if let Some(cn) = self.linux_cn(&s.name) {
            for made in cns::set_up(cn, &self.deployment.coal.bridges)? {
                p.step(format!("{}: made {made}", s.name));
            }
        }
        Ok(())
    }

    /// `up` with fewer linux nodes than run now would leave the others running unseen:
    /// refused, naming them.
    fn no_other_linux_cns(&self) -> Result<(), Error> {
        let Some(first) = self.cns.first() else {
            return Ok(());
        };
        let Ok(rd) = std::fs::read_dir(self.sub("run")) else {
            return Ok(());
        };
        let mut others: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.strip_suffix(".pid")?.to_string();
                let i: u32 = name
                    .strip_prefix(&format!("{}-", first.service))?
                    .parse()
                    .ok()?;
                (i > self.state.linux_cns && process::read_pid(&e.path())?.alive()).then_some(name)
            })
            .collect();
        others.sort();
        if others.is_empty() {
            return Ok(());
        }
        Err(Error::Usage(format!(
            "{} still run{} from an earlier `up` with more linux compute nodes; run `scripts/coal down` first to have {}",
            others.join(", "),
            if others.len() == 1 { "s" } else { "" },
            self.state.linux_cns
        )))
    }

    fn post_start(&self, s: &Service) -> Result<(), Error> {
        if s.coal_setup.iter().any(|x| x == "createdb") {
            let port = s.ports.values().next().copied().unwrap_or(5432);
            let user = s.run_as.as_deref().unwrap_or("postgres");
            if setup::createdb(&self.pg_bindir, port, user, "moray")? {
                self.progress
                    .step(format!("{}: created database moray", s.name));
            }
        }
        Ok(())
    }

    /// An ssh-agent holding the admin key at `ssh/agent.sock`: `coal env` points
    /// SSH_AUTH_SOCK at it, which is where node-triton (smartdc-auth) finds the key.
    fn ssh_agent(&self, key: &Path, fingerprint: &str) -> Result<(), Error> {
        let sock = self.sub("ssh").join("agent.sock");
        let pid_path = self.pid_path("ssh-agent");
        let running = process::read_pid(&pid_path).filter(Pid::alive);
        if running.is_none() {
            let _ = std::fs::remove_file(&sock);
            let program = process::which("ssh-agent").ok_or_else(|| Error::Service {
                service: "ssh-agent".into(),
                message: "ssh-agent is not installed (openssh-client)".into(),
                log: None,
            })?;
            let (pid, _child) = process::spawn(&process::Spawn {
                program: &program,
                args: &["-D".into(), "-a".into(), sock.display().to_string()],
                env: &[],
                log: &self.log_path("ssh-agent"),
                run_as: None,
                cwd: &self.dir,
                netns: None,
            })?;
            process::write_pid(&pid_path, pid)?;
            let deadline = Instant::now() + Duration::from_secs(5);
            while !sock.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let listed = std::process::Command::new("ssh-add")
            .arg("-l")
            .arg("-E")
            .arg("md5")
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if !listed.contains(fingerprint) {
            crate::error::output(
                std::process::Command::new("ssh-add")
                    .arg(key)
                    .env("SSH_AUTH_SOCK", &sock),
                &format!("ssh-add {}", key.display()),
            )?;
            self.progress.step(format!(
                "ssh: admin key loaded into the agent at {}",
                sock.display()
            ));
        }
        Ok(())
    }

    fn is_up(&self, name: &str) -> bool {
        self.deployment
            .service(name)
            .is_some_and(|s| self.running(s).is_some())
    }

    async fn seed(&self, public: &str, fingerprint: &str) -> Result<(), Error> {
        let p = &self.progress;
        let coal = &self.deployment.coal;
        let admin_uuid = self
            .ctx
            .vars
            .get("admin_uuid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let need = |svc: &str, port: &str| -> Result<String, Error> {
            self.addr_of(svc, port).ok_or_else(|| Error::Seed {
                what: svc.into(),
                message: "not in deploy/services.toml".into(),
            })
        };
        if self.is_up("ufds") {
            let ufds = need("ufds", "grpc")?;
            seed::admin_account(p, "ufds", &ufds, &admin_uuid, coal, public, fingerprint).await?;
        }
        if self.is_up("papi") {
            let ch = seed::channel(&need("papi", "grpc")?).await?;
            let did = seed::packages(ch, &coal.packages).await?;
            for d in &did {
                p.step(format!("papi: seeded {d}"));
            }
            if did.is_empty() {
                p.step(format!(
                    "papi: {} sample packages already there",
                    coal.packages.len()
                ));
            }
        }
        if self.is_up("imgapi") {
            let (file, m) = seed::base_image(&coal.image, &admin_uuid)?;
            let (tarball, manifest_path) = crate::images::artifact_paths(
                &self.sub("images"),
                &coal.image.name,
                &coal.image.version,
            );
            crate::images::write_atomically(&tarball, &file)?;
            let text = serde_json::to_string_pretty(&m).map_err(|e| Error::Check(e.to_string()))?;
            crate::images::write_atomically(&manifest_path, text.as_bytes())?;
            let ch = seed::channel(&need("imgapi", "grpc")?).await?;
            seed::image_step(p, "imgapi", ch, &coal.image, &m, file).await?;
            // The volumes' NFS server image (VolAPI provisions storage instances from it,
            // by name), from the nfsserver binary CoaL built (`[coal] tools`). Without the
            // binary the rest of CoaL still comes up; only volumes cannot be made.
            let nfsserver = self.sub("bin").join("nfsserver");
            if nfsserver.is_file() {
                let built = crate::images::build_nfsserver_image(
                    &nfsserver,
                    &self.sub("images"),
                    &admin_uuid,
                )?;
                let file = std::fs::read(&built.tarball)
                    .map_err(|e| Error::io("read the nfsserver image", &built.tarball, e))?;
                let ch = seed::channel(&need("imgapi", "grpc")?).await?;
                let img = crate::deploy::SeedImage {
                    name: crate::images::NFSSERVER_IMAGE.to_string(),
                    version: crate::images::NFSSERVER_IMAGE_VERSION.to_string(),
                    description: String::new(),
                };
                match seed::image(ch, &img, &built.manifest, file).await? {
                    Some(d) => p.step(format!("imgapi: seeded {d}")),
                    None => p.step(format!(
                        "imgapi: image {} {} already there",
                        img.name, img.version
                    )),
                }
            } else {
                p.step(format!(
                    "imgapi: WARNING: no nfsserver image, {} is not built (volumes cannot be created)",
                    nfsserver.display()
                ));
            }
        }
        if self.is_up("napi") {
            let ch = seed::channel(&need("napi", "grpc")?).await?;
            seed::networks_step(p, "napi", ch, |have| {
                format!(
                    "NAPI has {have} of the admin and external networks; its seed.enabled should make them (log: {})",
                    self.log_path("napi").display()
                )
            })
            .await?;
            if let Some(b) = coal.bridges.iter().find(|b| b.nic_tag == cns::UNDERLAY_TAG) {
                let ch = seed::channel(&need("napi", "grpc")?).await?;
                for d in seed::underlay(ch, b, &admin_uuid).await? {
                    p.step(format!("napi: seeded {d}"));
                }
            }
        }
        Ok(())
    }

    async fn wait_for_cns(&self) -> Result<(), Error> {
        let Some(cnapi) = self.addr_of("cnapi", "grpc") else {
            return Ok(());
        };
        let mut expected = 0usize;
        for s in self.active()? {
            if s.binary == "cn-agent" && self.running(s).is_some() {
                let r = self.render(s)?;
                expected += if r.config.get("backend").and_then(Value::as_str) == Some("sim") {
                    self.state.sim_cns as usize
                } else {
                    1
                };
            }
        }
        if expected == 0 {
            return Ok(());
        }
        let started = Instant::now();
        let mut last = String::new();
        loop {
            let ch = seed::channel(&cnapi).await?;
            let servers = seed::servers(ch).await?;
            let running = servers
                .iter()
                .filter(|(_, st, setup)| st == "running" && *setup)
                .count();
            let note = format!("cnapi: {running} of {expected} compute node(s) running and set up");
            if note != last {
                self.progress.step(&note);
                last = note;
            }
            if running >= expected {
                return Ok(());
            }
            if started.elapsed() > CN_TIMEOUT {
                return Err(Error::Service {
                    service: "cn-agent".into(),
                    message: format!(
                        "only {running} of {expected} compute nodes registered within {}s",
                        CN_TIMEOUT.as_secs()
                    ),
                    log: Some(self.log_path("cn-agent")),
                });
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// CNS's DNS address (`CNS_ADDR`, host:port), its admin API (`CNS_URL`, for
    /// cnsadm) and its first forward zone (`CNS_SUFFIX`), from its rendered config.
    fn cns_env(&self) -> Result<Option<(String, String, String)>, Error> {
        let Some(s) = self.deployment.service("cns") else {
            return Ok(None);
        };
        let r = self.render(s)?;
        let get = |k: &str| {
            r.config
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let suffix = r
            .config
            .get("forward_zones")
            .and_then(Value::as_table)
            .and_then(|t| t.keys().next().cloned())
            .unwrap_or_default();
        Ok(Some((
            get("dns_listen"),
            format!("http://{}", get("listen")),
            suffix,
        )))
    }

    fn print_usage(&self, skipped: &[(String, String)]) {
        let secs = self.progress.secs();
        let mut text = format!(
            "\nCoaL is up after {secs}s (state in {}).\n\n",
            self.dir.display()
        );
        text.push_str("    eval \"$(scripts/coal env)\"     # TRITON_*, SDC_*, MORAY_URL, SSH_AUTH_SOCK, PATH\n");
        let cloudapi_up = self.is_up("cloudapi");
        if cloudapi_up {
            text.push_str(&format!(
                "    triton info\n    triton instance create -w --name web0 {} {}\n    curl http://$(triton instance ip web0)/    # busybox httpd in the instance\n",
                self.deployment.coal.image.name,
                self.deployment.coal.packages.first().map(|p| p.name.as_str()).unwrap_or("g1-small")
            ));
        }
        if !self.cns.is_empty() {
            text.push_str(&format!(
                "    coal-zlogin <instance uuid> ps    # inside an instance, on whichever of the {} linux node(s) holds it\n",
                self.cns.len()
            ));
        }
        if self.is_up("cns")
            && let Ok(Some((addr, _, suffix))) = self.cns_env()
        {
            let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "53"));
            text.push_str(&format!(
                "    triton instance get -j web0 | grep -o '\"dns_names\":[^]]*]'    # its names under {suffix}\n    dig @{host} -p {port} +short <one of those names>    # CNS answers\n    cnsadm status\n"
            ));
        }
        text.push_str("    moray-cli ping\n    manatee-adm show\n\n");
        text.push_str("scripts/coal status          every service, its address and health\nscripts/coal logs SERVICE    follow one service's log\nscripts/coal down            stop everything and remove what CoaL made\n");
        for (name, why) in skipped {
            text.push_str(&format!(
                "\nNot running: {name} (optional, skipped): {}\n",
                why.lines().next().unwrap_or("")
            ));
        }
        if !cloudapi_up {
            text.push_str(
                "\nCloudAPI is not running, so the triton CLI has nothing to talk to yet.\n",
            );
        }
        println!("{text}");
    }

    // --- status -----------------------------------------------------------------------------

    pub async fn status(&self) -> Result<Vec<Row>, Error> {
        let mut rows = Vec::new();
        for s in self.active()? {
            let pid = self.running(s);
            let address = self.address(s);
            let (health, ok) = match pid {
                None => match std::fs::read_to_string(self.skipped_path(&s.name)) {
                    Ok(why) => (
                        format!("skipped: {}", why.lines().next().unwrap_or("")),
                        true,
                    ),
                    Err(_) => ("down".to_string(), false),
                },
                Some(_) => match self.healthy(s).await {
                    Ok(()) => ("healthy".to_string(), true),
                    Err(why) => (format!("unhealthy: {why}"), false),
                },
            };
            rows.push(Row {
                service: s.name.clone(),
                address,
                pid: pid.map(|p| p.pid),
                health,
                ok,
            });
        }
        Ok(rows)
    }

    /// `manatee-adm show` of the shard, when both are there.
    pub fn manatee_show(&self) -> Option<String> {
        let adm = self.sub("bin").join("manatee-adm");
        let etcd = self.addr_of("etcd", "client")?;
        if !adm.is_file() {
            return None;
        }
        let shard = self
            .ctx
            .vars
            .get("shard")
            .and_then(Value::as_str)
            .unwrap_or("1");
        let out = std::process::Command::new(adm)
            .args([
                "--etcd",
                &format!("http://{etcd}"),
                "--shard",
                shard,
                "show",
            ])
            .output()
            .ok()?;
        Some(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    // --- env --------------------------------------------------------------------------------

    pub fn env(&self) -> Result<String, Error> {
        let mut out = String::new();
        let mut put = |k: &str, v: &str| out.push_str(&format!("export {k}={}\n", shell_quote(v)));
        put("COAL_DIR", &self.dir.display().to_string());
        out.push_str(&format!(
            "export PATH={}:\"$PATH\"\n",
            shell_quote(&self.sub("bin").display().to_string())
        ));
        let mut put = |k: &str, v: &str| out.push_str(&format!("export {k}={}\n", shell_quote(v)));
        if let Some(m) = self.addr_of("moray", "grpc") {
            put("MORAY_URL", &format!("tcp://{m}"));
        }
        if let Some(e) = self.addr_of("etcd", "client") {
            put("MANATEE_ADM_ETCD", &format!("http://{e}"));
        }
        if let Some(shard) = self.ctx.vars.get("shard").and_then(Value::as_str) {
            put("MANATEE_ADM_SHARD", shard);
        }
        if let Some(s) = self.deployment.service("cloudapi") {
            let r = self.render(s)?;
            let tls = !r
                .config
                .get("tls_cert")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty();
            let url = match (tls, s.ports.get("https"), s.ports.get("http")) {
                (true, Some(p), _) => format!("https://127.0.0.1:{p}"),
                (_, _, Some(p)) => format!("http://127.0.0.1:{p}"),
                _ => String::new(),
            };
            let login = self.deployment.coal.admin_login.clone();
            let key = self.sub("ssh").join("id_ecdsa.pub");
            let fp = std::fs::read_to_string(&key)
                .ok()
                .and_then(|t| setup::md5_fingerprint(&t).ok())
                .unwrap_or_default();
            for (a, b) in [
                ("TRITON_URL", "SDC_URL"),
                ("TRITON_ACCOUNT", "SDC_ACCOUNT"),
                ("TRITON_KEY_ID", "SDC_KEY_ID"),
            ] {
                let v = match a {
                    "TRITON_URL" => url.clone(),
                    "TRITON_ACCOUNT" => login.clone(),
                    _ => fp.clone(),
                };
                put(a, &v);
                put(b, &v);
            }
            if tls {
                put("TRITON_TLS_INSECURE", "1");
                put("SDC_TLS_INSECURE", "1");
                put("SDC_TESTING", "1");
            }
            put(
                "SSH_AUTH_SOCK",
                &self.sub("ssh").join("agent.sock").display().to_string(),
            );
            out.push_str("unset TRITON_PROFILE\n");
        }
        if let Some((addr, url, suffix)) = self.cns_env()? {
            out.push_str(&format!(
                "export CNS_ADDR={}\nexport CNS_URL={}\nexport CNS_SUFFIX={}\n",
                shell_quote(&addr),
                shell_quote(&url),
                shell_quote(&suffix)
            ));
        }
        if let Some(s) = self.deployment.service("cmon") {
            let r = self.render(s)?;
            let get = |k: &str| r.config.get(k).and_then(Value::as_str).unwrap_or_default();
            out.push_str(&format!(
                "export CMON_URL={}\nexport CMON_SUFFIX={}\n",
                shell_quote(&format!("https://{}", get("listen"))),
                shell_quote(get("dns_suffix"))
            ));
        }
        // VolAPI's gRPC URL (grpcurl, tests).
        if let Some(s) = self.deployment.service("volapi") {
            let r = self.render(s)?;
            let listen = r
                .config
                .get("listen")
                .and_then(Value::as_str)
                .unwrap_or_default();
            out.push_str(&format!(
                "export VOLAPI_URL={}\n",
                shell_quote(&format!("http://{listen}"))
            ));
        }
        Ok(out)
    }

    // --- logs -------------------------------------------------------------------------------

    pub fn log_file(&self, svc: &str) -> Result<PathBuf, Error> {
        let known: Vec<&str> = self
            .deployment
            .services
            .iter()
            .map(|s| s.name.as_str())
            .chain(["ssh-agent"])
            .collect();
        if !known.contains(&svc) {
            return Err(Error::Usage(format!(
                "no service {svc:?}; one of: {}",
                known.join(", ")
            )));
        }
        let log = self.log_path(svc);
        if !log.is_file() {
            return Err(Error::Usage(format!(
                "no log for {svc} in {} (has it been started?)",
                self.sub("logs").display()
            )));
        }
        Ok(log)
    }

    // --- down -------------------------------------------------------------------------------

    pub async fn down(&self) -> Result<(), Error> {
        let p = &self.progress;
        // 0. Network-booted guests (their instances go with them).
        self.pxe_down();
        // 1. Instances, through the agents while they still run.
        for s in self
            .deployment
            .services
            .iter()
            .filter(|s| s.binary == "cn-agent")
        {
            if self.running(s).is_none() {
                continue;
            }
            if let Err(e) = self.destroy_instances(s).await {
                p.step(format!(
                    "{}: could not remove instances through the agent ({}); sweeping instead",
                    s.name,
                    crate::error::chain(&e)
                ));
            }
        }
        // 2. Services, in reverse start order (every service, whatever the options were).
        let all: Vec<String> = self
            .deployment
            .services
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let mut order = self.deployment.start_order(&all)?;
        order.reverse();
        order.push("ssh-agent".into());
        for name in order {
            let path = self.pid_path(&name);
            let Some(pid) = process::read_pid(&path) else {
                continue;
            };
            if pid.alive() {
                let sig = process::signal_number(
                    self.deployment
                        .service(&name)
                        .and_then(|s| s.stop_signal.as_deref()),
                );
                p.step(format!("{name}: stopping (pid {})", pid.pid));
                if process::stop(pid, sig) {
                    p.step(format!(
                        "{name}: did not stop within {}s; killed",
                        process::STOP_TIMEOUT.as_secs()
                    ));
                }
            }
            let _ = std::fs::remove_file(path);
        }
        // 3. Anything else with CoaL's names.
        let prefixes = self.cn_agent_prefixes();
        let left = cleanup::find(&prefixes);
        for d in left.describe() {
            p.step(format!("removing {d}"));
        }
        let failed = cleanup::remove(&left);
        for f in &failed {
            p.step(format!("WARNING: {f}"));
        }
        if self.dir.exists() {
            p.step(format!("removing {}", self.dir.display()));
            std::fs::remove_dir_all(&self.dir).map_err(|e| Error::io("remove", &self.dir, e))?;
        }
        // 4. Check.
        let after = cleanup::find(&prefixes);
        if !after.is_empty() {
            return Err(Error::Check(format!(
                "CoaL left these behind:\n  {}",
                after.describe().join("\n  ")
            )));
        }
        p.step("CoaL is down: no process, mount, cgroup, network namespace, veth or bridge of CoaL's is left");
        Ok(())
    }

    async fn destroy_instances(&self, s: &Service) -> Result<(), Error> {
        use triton_proto::cnagent::v1 as agent;
        let addr = self.address(s);
        let ch = seed::channel(&addr).await?;
        let mut c = agent::cn_agent_client::CnAgentClient::new(ch);
        let list = c
            .list_instances(agent::ListInstancesRequest {})
            .await
            .map_err(|st| Error::Seed {
                what: "cn-agent instances".into(),
                message: st.message().into(),
            })?
            .into_inner()
            .instances;
        for inst in list {
            let Some(spec) = inst.spec else { continue };
            let failed = |st: tonic::Status| Error::Seed {
                what: format!("destroy {}", spec.uuid),
                message: st.message().into(),
            };
            let task = c
                .create_task(agent::CreateTaskRequest {
                    req_id: format!("coal-down-{}", spec.uuid),
                    task: Some(agent::create_task_request::Task::MachineDestroy(
                        agent::MachineDestroy {
                            uuid: spec.uuid.clone(),
                        },
                    )),
                })
                .await
                .map_err(&failed)?
                .into_inner();
            let mut status = task.status.clone();
            let deadline = Instant::now() + Duration::from_secs(90);
            while status == "active" || status == "queued" {
                if Instant::now() > deadline {
                    break;
                }
                let t = c
                    .wait_task(agent::WaitTaskRequest {
                        id: task.id.clone(),
                        timeout_ms: 20_000,
                    })
                    .await
                    .map_err(&failed)?
                    .into_inner();
                status = t.status;
            }
            self.progress.step(format!(
                "{}: removed instance {} ({}) [{status}]",
                s.name, spec.uuid, spec.alias
            ));
        }
        Ok(())
    }
}

/// CoaL's `n` linux compute nodes: the headnode's cn-agent of services.toml (its
/// `backend = "linux"` entry) as node 1, and a copy of that service per further node,
/// `cn-agent-<i>`, added to `deployment` right after it and reached at its own admin
/// address (`ctx.hosts`). None when services.toml has no linux cn-agent.
fn linux_cns(
    deployment: &mut Deployment,
    ctx: &mut Context,
    n: u32,
) -> Result<Vec<cns::LinuxCn>, Error> {
    let is_linux = |s: &Service| {
        s.binary == "cn-agent"
            && s.config
                .as_ref()
                .and_then(|c| c.get("backend"))
                .and_then(Value::as_str)
                == Some("linux")
    };
    let Some(at) = deployment.services.iter().position(is_linux) else {
        return Ok(Vec::new());
    };
    let base = deployment.services[at].clone();
    let linux = base
        .config
        .as_ref()
        .and_then(|c| c.get("linux"))
        .and_then(Value::as_table);
    let name = |key: &str, default: &str| {
        linux
            .and_then(|t| t.get(key))
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string()
    };
    // cn-agent's own defaults where services.toml says nothing.
    let names = cns::Names {
        cgroup_parent: name("cgroup_parent", "triton"),
        netns_prefix: name("netns_prefix", "triton-"),
        link_prefix: name("link_prefix", "z"),
    };
    let planned = cns::plan(n, &base.name, &names, &deployment.coal.bridges)?;
    for (k, cn) in planned.iter().enumerate().skip(1) {
        let mut s = base.clone();
        s.name = cn.service.clone();
        s.description = format!(
            "linux compute node {} (network namespace {})",
            cn.index,
            cn.netns.as_deref().unwrap_or_default()
        );
        deployment.services.insert(at + k, s);
        ctx.hosts
            .insert(cn.service.clone(), cn.admin_ip.to_string());
    }
    Ok(planned)
}

/// Makes `$COAL_DIR` ours alone: created 0700, refused when it is a symlink or another
/// user's (/var/tmp is everyone's: someone could have made it first). PostgreSQL runs as
/// `postgres` from a data directory inside, so that group may pass through (0710) and
/// no more; nobody else can read or list it.
pub fn private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let refuse = |why: String| {
        Err(Error::Usage(format!(
            "COAL_DIR {}: {why}; remove it or set COAL_DIR to a directory of your own",
            dir.display()
        )))
    };
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => {
            // SAFETY: geteuid(2) has no preconditions.
            let me = unsafe { libc::geteuid() };
            if meta.file_type().is_symlink() {
                return refuse("is a symbolic link".into());
            }
            if !meta.is_dir() {
                return refuse("is not a directory".into());
            }
            if meta.uid() != me {
                return refuse(format!("is owned by uid {}, not by uid {me}", meta.uid()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io("create", dir, e))?;
        }
        Err(e) => return Err(Error::io("look at", dir, e)),
    }
    match group_id("postgres") {
        Some(gid) => {
            std::os::unix::fs::chown(dir, None, Some(gid))
                .map_err(|e| Error::io("chgrp postgres", dir, e))?;
            set_mode(dir, 0o710)
        }
        None => set_mode(dir, 0o700),
    }
}

/// The gid of a group in /etc/group.
fn group_id(name: &str) -> Option<u32> {
    std::fs::read_to_string("/etc/group")
        .ok()?
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .and_then(|f| f.get(2)?.parse().ok())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("chmod", path, e))
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `'...'` unless the value is plainly safe.
pub fn shell_quote(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/:._-@,+=".contains(c))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}
