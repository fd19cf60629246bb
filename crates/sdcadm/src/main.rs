//! `sdcadm`: the operator CLI (see `sdcadm --help`, docs/coal.md and docs/deploy.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sdcadm::coal::{Coal, Options};
use sdcadm::deploy::{Deployment, SERVICES_TOML, repo_root};
use sdcadm::error::{Error, chain};
use sdcadm::instances::{CreateOptions, Datacenter, Imported};

#[derive(Parser)]
#[command(
    name = "sdcadm",
    version,
    about = "Triton-rs operator CLI: CoaL, zone images, service zones, docker-compose"
)]
struct Cli {
    /// The repository's top folder (default: $TRITON_ROOT, or found from the current directory).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// CoaL: a whole datacenter on this machine.
    Coal {
        /// CoaL's state directory (default: $COAL_DIR or /var/tmp/triton-coal).
        #[arg(long, global = true)]
        coal_dir: Option<PathBuf>,
        #[command(subcommand)]
        command: CoalCommand,
    },
    /// Write deploy/docker-compose.yml from deploy/services.toml.
    Compose {
        /// Do not write: exit 1 if the committed file differs from what would be written.
        #[arg(long)]
        check: bool,
    },
    /// Zone images.
    Images {
        #[command(subcommand)]
        command: ImagesCommand,
    },
    /// Check deploy/services.toml and list its services in start order.
    Services,
    /// Provision a zone of a service from its image in IMGAPI, through VMAPI, on a linux
    /// compute node; wait until the service in it is healthy.
    Create {
        #[command(flatten)]
        options: CreateOptions,
        #[command(flatten)]
        dc: DcArgs,
    },
    /// List service zones (instances tagged smartdc_role), of one service or all.
    Instances {
        service: Option<String>,
        #[command(flatten)]
        dc: DcArgs,
    },
    /// Delete a service zone (by uuid or alias) through VMAPI.
    Delete {
        instance: String,
        #[command(flatten)]
        dc: DcArgs,
    },
    /// Check one service's health (its `health` in deploy/services.toml) at an address;
    /// exit 0 only if healthy.
    Health {
        service: String,
        /// Where the service runs (default: where CoaL runs it).
        #[arg(long)]
        host: Option<String>,
        /// Default: the health port services.toml gives the service.
        #[arg(long)]
        port: Option<u16>,
    },
    /// Compute nodes: list them, set one up, their boot parameters.
    Server {
        #[command(subcommand)]
        command: ServerCommand,
    },
    /// The compute nodes CNAPI knows, with the URL it reaches each one's agent at.
    Servers {
        /// Also call each agent at that URL (from where sdcadm runs) and check that the
        /// node answering is that server; exit 1 if one does not.
        #[arg(long)]
        agents: bool,
        #[command(flatten)]
        dc: DcArgs,
    },
    /// Tenant accounts in UFDS: create one with an SSH key, delete one, make one an
    /// operator.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Seed a running deployment as `coal up` seeds CoaL: the admin account with a public
    /// key, the sample packages and the base image; check NAPI's networks. Only what is
    /// missing is written. After `docker compose up`: `sdcadm seed --key ~/.ssh/id_ed25519.pub`.
    Seed {
        /// The admin account's SSH public key (a `.pub` file).
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        dc: DcArgs,
    },
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Make account LOGIN, approved for provisioning, with the SSH public key in --key;
    /// prints its uuid.
    Create {
        login: String,
        /// The account's SSH public key (a `.pub` file).
        #[arg(long)]
        key: PathBuf,
        /// Default: LOGIN@<datacenter>.example.com.
        #[arg(long)]
        email: Option<String>,
        #[command(flatten)]
        dc: DcArgs,
    },
    /// Delete account LOGIN (or uuid) and its keys.
    Delete {
        login: String,
        #[command(flatten)]
        dc: DcArgs,
    },
    /// Make account LOGIN (or uuid) an operator: a member of UFDS's `operators` group
    /// (CMon shows it compute nodes); with --remove, no longer one. Prints its groups.
    Operator {
        login: String,
        #[arg(long)]
        remove: bool,
        #[command(flatten)]
        dc: DcArgs,
    },
    /// List the operators (members of UFDS's `operators` group): login and uuid.
    Operators {
        #[command(flatten)]
        dc: DcArgs,
    },
}

/// Where the datacenter's APIs are.
#[derive(clap::Args)]
struct DcArgs {
    /// Where sdcadm reaches the APIs (on the ports of deploy/services.toml); default:
    /// where CoaL runs each (the internal APIs at the admin bridge's address).
    #[arg(long)]
    api_host: Option<String>,
    /// Where a zone on the admin network reaches them: the headnode's admin address
    /// (default: the admin bridge's address in deploy/services.toml).
    #[arg(long)]
    admin_ip: Option<std::net::Ipv4Addr>,
    /// A service reached at another host than --api-host (repeatable), e.g. one compose
    /// container's address: --host ufds=10.97.0.15.
    #[arg(long = "host", value_name = "SERVICE=HOST")]
    hosts: Vec<String>,
    /// Reach each service at its container's address on the compose network (only
    /// CloudAPI's TLS port is published on the host; the host reaches the network).
    #[arg(long)]
    compose: bool,
}

impl DcArgs {
    fn open(self, root: &std::path::Path) -> Result<Datacenter, Error> {
        let deployment = Deployment::load(&root.join(SERVICES_TOML))?;
        let mut dc = Datacenter::new(deployment, self.api_host, self.admin_ip)?;
        if self.compose {
            let ctx =
                sdcadm::deploy::Context::new(sdcadm::deploy::ContextKind::Compose, &dc.deployment);
            dc.hosts.extend(ctx.compose_addresses);
        }
        for h in &self.hosts {
            let (service, host) = h
                .split_once('=')
                .filter(|(s, h)| !s.is_empty() && !h.is_empty())
                .ok_or_else(|| Error::Usage(format!("--host {h}: not SERVICE=HOST")))?;
            if dc.deployment.service(service).is_none() {
                return Err(Error::Usage(format!(
                    "--host {h}: no service {service} in deploy/services.toml"
                )));
            }
            dc.hosts.insert(service.into(), host.into());
        }
        Ok(dc)
    }
}

#[derive(Subcommand)]
enum CoalCommand {
    /// Start every service (idempotent: healthy ones are left alone, dead ones restarted),
    /// seed the admin account, packages, base image and networks, and say how to use it.
    Up {
        /// Linux compute nodes (real instances): the headnode's cn-agent and N - 1 more,
        /// each in its own network namespace on the admin, external and underlay
        /// bridges (default 1; kept for later `up`s).
        #[arg(long)]
        linux_cns: Option<u32>,
        /// Simulated compute nodes beside the real ones (kept for later `up`s).
        #[arg(long)]
        sim_cns: Option<u32>,
        /// One Manatee peer in one-node-write mode instead of three.
        #[arg(long)]
        one_node: bool,
        /// Compute nodes that PXE-boot the platform image from the booter: QEMU guests
        /// on the admin and external bridges (default 0; kept for later `up`s).
        #[arg(long)]
        pxe_cns: Option<u32>,
    },
    /// Every service, its address, pid and health, and the Manatee roles; exit 0 only if
    /// all are healthy.
    Status,
    /// Shell exports for the CoaL: eval "$(sdcadm coal env)".
    Env,
    /// Follow one service's log.
    Logs { service: String },
    /// Stop everything and remove every instance, mount, cgroup, veth, bridge, namespace
    /// and file CoaL made.
    Down,
    /// "<crate> <binary>" per line: what scripts/coal builds and installs.
    Binaries,
}

#[derive(Subcommand)]
enum ServerCommand {
    /// Every compute node: uuid, hostname, admin IP, setup, status (as `sdc-server list`).
    List {
        #[command(flatten)]
        dc: DcArgs,
    },
    /// Set up a node (CNAPI ServerSetup): it becomes usable for instances.
    Setup {
        uuid: String,
        /// Its hostname from now on (only before it is set up).
        #[arg(long)]
        hostname: Option<String>,
        #[command(flatten)]
        dc: DcArgs,
    },
    /// Reserve a node (no new instances on it) or, with --reserved false, free it.
    Reserve {
        uuid: String,
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        reserved: bool,
        #[command(flatten)]
        dc: DcArgs,
    },
    /// What the node with this admin MAC boots (CNAPI GetBootParams).
    BootParams {
        mac: String,
        #[command(flatten)]
        dc: DcArgs,
    },
    /// Change the boot parameters of a server (uuid) or of `default` (CNAPI
    /// SetBootParams): merged, or replaced with --replace.
    SetBootParams {
        /// A server uuid or `default`.
        server: String,
        #[arg(long, default_value = "")]
        platform: String,
        /// A kernel argument NAME=VALUE (repeatable); NAME= deletes it in a merge.
        #[arg(long = "arg", value_name = "NAME=VALUE")]
        args: Vec<String>,
        /// A bare kernel flag (repeatable).
        #[arg(long = "flag")]
        flags: Vec<String>,
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        dc: DcArgs,
    },
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// Build every service's zone image from the release binaries, and the `nfsserver`
    /// image of volumes' storage instances (`nfsserver` names only that one).
    Build {
        /// Where the images go.
        #[arg(long, default_value = "images/out")]
        out: PathBuf,
        /// Where the release binaries are (default: $CARGO_TARGET_DIR/release or target/release).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Only these services.
        services: Vec<String>,
    },
    /// Import an image (its manifest and file) into IMGAPI, keeping its uuid, and
    /// activate it.
    Import {
        manifest: PathBuf,
        file: PathBuf,
        #[command(flatten)]
        dc: DcArgs,
    },
}

// Multi-threaded: gRPC connections must be closed by their background tasks while
// CoaL blocks waiting for a process to stop, or the server waits for them.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sdcadm: error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Error> {
    let root = match cli.root {
        Some(r) => r,
        None => repo_root()?,
    };
    match cli.command {
        Command::Coal { coal_dir, command } => {
            let mut opts = Options {
                coal_dir,
                ..Default::default()
            };
            if let CoalCommand::Up {
                linux_cns,
                sim_cns,
                one_node,
                pxe_cns,
            } = &command
            {
                opts.linux_cns = *linux_cns;
                opts.sim_cns = *sim_cns;
                opts.one_node = one_node.then_some(true);
                opts.pxe_cns = *pxe_cns;
            }
            let coal = Coal::open(&root, &opts)?;
            match command {
                CoalCommand::Up { .. } => {
                    require_root("coal up")?;
                    coal.up().await?;
                }
                CoalCommand::Status => {
                    let rows = coal.status().await?;
                    println!("{:<13} {:<16} {:<8} HEALTH", "SERVICE", "ADDRESS", "PID");
                    for r in &rows {
                        let pid = r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
                        println!(
                            "{:<13} {:<16} {:<8} {}",
                            r.service, r.address, pid, r.health
                        );
                    }
                    if let Some(show) = coal.manatee_show() {
                        println!("\nManatee (manatee-adm show):\n{}", show.trim_end());
                    }
                    if !rows.iter().all(|r| r.ok) {
                        return Ok(ExitCode::FAILURE);
                    }
                }
                CoalCommand::Env => print!("{}", coal.env()?),
                CoalCommand::Logs { service } => {
                    let log = coal.log_file(&service)?;
                    use std::os::unix::process::CommandExt;
                    let e = std::process::Command::new("tail")
                        .arg("-n")
                        .arg("50")
                        .arg("-F")
                        .arg(&log)
                        .exec();
                    return Err(Error::Command {
                        command: "tail".into(),
                        detail: e.to_string(),
                    });
                }
                CoalCommand::Down => {
                    require_root("coal down")?;
                    coal.down().await?;
                }
                CoalCommand::Binaries => {
                    for (k, b) in coal.binaries() {
                        println!("{k} {b}");
                    }
                }
            }
        }
        Command::Compose { check } => {
            let deployment = Deployment::load(&root.join(SERVICES_TOML))?;
            let text = sdcadm::compose::render(&deployment, env!("CARGO_PKG_VERSION"))?;
            let path = root.join(sdcadm::compose::COMPOSE_FILE);
            if check {
                let have = std::fs::read_to_string(&path).unwrap_or_default();
                if have != text {
                    eprintln!(
                        "sdcadm: {} differs from deploy/services.toml; run `sdcadm compose`",
                        path.display()
                    );
                    return Ok(ExitCode::FAILURE);
                }
                eprintln!("{} matches deploy/services.toml", path.display());
            } else {
                sdcadm::images::write_atomically(&path, text.as_bytes())?;
                eprintln!("wrote {}", path.display());
            }
        }
        Command::Images {
            command:
                ImagesCommand::Build {
                    out,
                    bin_dir,
                    services,
                },
        } => {
            let deployment = Deployment::load(&root.join(SERVICES_TOML))?;
            let out = if out.is_absolute() {
                out
            } else {
                root.join(out)
            };
            let bin_dir = bin_dir.unwrap_or_else(|| {
                std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| root.join("target"))
                    .join("release")
            });
            let progress = sdcadm::coal::Progress::named("images");
            let mut missing = Vec::new();
            for s in deployment.services.iter().filter(|s| s.krate.is_some()) {
                if !services.is_empty() && !services.contains(&s.name) {
                    continue;
                }
                let bin = bin_dir.join(&s.binary);
                if !bin.is_file() {
                    progress.step(format!(
                        "{}: skipped, {} is not built",
                        s.name,
                        bin.display()
                    ));
                    missing.push(s.name.clone());
                    continue;
                }
                let built = sdcadm::images::build_service_image(
                    &deployment,
                    s,
                    &bin,
                    &out,
                    env!("CARGO_PKG_VERSION"),
                )?;
                progress.step(format!(
                    "{}: {} ({} bytes, uuid {})",
                    built.name,
                    built.tarball.display(),
                    built.manifest["files"][0]["size"],
                    built.manifest["uuid"].as_str().unwrap_or("")
                ));
            }
            // The volumes' NFS server image: not a service of the datacenter, an image
            // VolAPI provisions storage instances from.
            let nfs = sdcadm::images::NFSSERVER_IMAGE;
            if services.is_empty() || services.iter().any(|s| s == nfs) {
                let bin = bin_dir.join("nfsserver");
                if bin.is_file() {
                    let built = sdcadm::images::build_nfsserver_image(
                        &bin,
                        &out,
                        &deployment.admin_uuid(),
                    )?;
                    progress.step(format!(
                        "{nfs}: {} ({} bytes, uuid {})",
                        built.tarball.display(),
                        built.manifest["files"][0]["size"],
                        built.manifest["uuid"].as_str().unwrap_or("")
                    ));
                } else {
                    progress.step(format!("{nfs}: skipped, {} is not built", bin.display()));
                    missing.push(nfs.to_string());
                }
            }
            if !missing.is_empty() {
                eprintln!("sdcadm: not built, so no image: {}", missing.join(", "));
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Images {
            command: ImagesCommand::Import { manifest, file, dc },
        } => {
            let dc = dc.open(&root)?;
            let (m, done) = sdcadm::instances::import_files(&dc, &manifest, &file).await?;
            let what = format!(
                "{} {} ({})",
                m["name"].as_str().unwrap_or(""),
                m["version"].as_str().unwrap_or(""),
                m["uuid"].as_str().unwrap_or("")
            );
            match done {
                Imported::New => println!("imported and activated image {what}"),
                Imported::Activated => println!("activated image {what} (it was there)"),
                Imported::AlreadyThere => println!("image {what} is already in IMGAPI"),
            }
        }
        Command::Create { options, dc } => {
            let dc = dc.open(&root)?;
            let progress = sdcadm::coal::Progress::named("create");
            let made = sdcadm::instances::create(&dc, &options, &progress).await?;
            println!("{} {} {} {}", made.alias, made.uuid, made.ip, made.state);
        }
        Command::Instances { service, dc } => {
            let dc = dc.open(&root)?;
            let rows = sdcadm::instances::list(&dc, service.as_deref()).await?;
            println!(
                "{:<10} {:<14} {:<36} {:<15} {:<12} SERVER",
                "SERVICE", "ALIAS", "UUID", "IP", "STATE"
            );
            for r in rows {
                println!(
                    "{:<10} {:<14} {:<36} {:<15} {:<12} {}",
                    r.service, r.alias, r.uuid, r.ip, r.state, r.server_uuid
                );
            }
        }
        Command::Delete { instance, dc } => {
            let dc = dc.open(&root)?;
            let gone = sdcadm::instances::delete(&dc, &instance).await?;
            println!("deleted {} ({})", gone.alias, gone.uuid);
        }
        Command::Health {
            service,
            host,
            port,
        } => {
            let deployment = Deployment::load(&root.join(SERVICES_TOML))?;
            let s = deployment.service(&service).ok_or_else(|| {
                Error::Usage(format!("no service {service} in deploy/services.toml"))
            })?;
            let port = match port {
                Some(p) => p,
                None => *s.ports.get(&s.health.port).ok_or_else(|| {
                    Error::Check(format!("{service}: health port {} unknown", s.health.port))
                })?,
            };
            let host = host.unwrap_or_else(|| {
                sdcadm::deploy::Context::new(sdcadm::deploy::ContextKind::Coal, &deployment)
                    .host_of(&service)
            });
            let addr = format!("{host}:{port}");
            let pg_bindir = sdcadm::coal::setup::pg_bindir();
            match sdcadm::coal::health::check(
                s.health.kind,
                &addr,
                s.health.path.as_deref(),
                &pg_bindir,
            )
            .await
            {
                Ok(()) => println!("{service}: healthy at {addr}"),
                Err(why) => {
                    println!("{service}: not healthy at {addr}: {why}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Server { command } => return server_command(&root, command).await,
        Command::Servers { agents, dc } => {
            let dc = dc.open(&root)?;
            let ch = sdcadm::coal::seed::channel(&dc.addr("cnapi", "grpc")?).await?;
            println!(
                "{:<12} {:<36} {:<8} {:<6} {:<28}{}",
                "HOSTNAME",
                "UUID",
                "STATUS",
                "SETUP",
                "AGENT_URL",
                if agents { " AGENT" } else { "" }
            );
            let mut all_ok = true;
            for s in sdcadm::coal::seed::server_records(ch).await? {
                let agent = if agents {
                    let seen = match sdcadm::coal::seed::agent_server_uuid(&s.agent_url).await {
                        Ok(u) if u == s.uuid => "ok".to_string(),
                        Ok(u) => format!("answered by another node ({u})"),
                        Err(e) => format!("unreachable: {}", chain(&e)),
                    };
                    all_ok &= seen == "ok";
                    format!(" {seen}")
                } else {
                    String::new()
                };
                println!(
                    "{:<12} {:<36} {:<8} {:<6} {:<28}{agent}",
                    s.hostname, s.uuid, s.status, s.setup, s.agent_url
                );
            }
            if !all_ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Account {
            command:
                AccountCommand::Create {
                    login,
                    key,
                    email,
                    dc,
                },
        } => {
            let dc = dc.open(&root)?;
            let public = std::fs::read_to_string(&key)
                .map_err(|e| Error::io("read the public key", &key, e))?;
            let uuid =
                sdcadm::accounts::create(&dc, &login, email.as_deref(), public.trim()).await?;
            println!("{uuid}");
        }
        Command::Account {
            command: AccountCommand::Delete { login, dc },
        } => {
            let dc = dc.open(&root)?;
            sdcadm::accounts::delete(&dc, &login).await?;
        }
        Command::Account {
            command: AccountCommand::Operator { login, remove, dc },
        } => {
            let dc = dc.open(&root)?;
            let groups = sdcadm::accounts::operator(&dc, &login, remove).await?;
            println!("{login}: groups [{}]", groups.join(", "));
        }
        Command::Account {
            command: AccountCommand::Operators { dc },
        } => {
            let dc = dc.open(&root)?;
            for (login, uuid) in sdcadm::accounts::operators(&dc).await? {
                println!("{login:<32} {uuid}");
            }
        }
        Command::Seed { key, dc } => {
            let dc = dc.open(&root)?;
            let public = std::fs::read_to_string(&key)
                .map_err(|e| Error::io("read the public key", &key, e))?;
            let progress = sdcadm::coal::Progress::named("seed");
            sdcadm::coal::seed::datacenter(&dc, public.trim(), &progress).await?;
        }
        Command::Services => {
            let deployment = Deployment::load(&root.join(SERVICES_TOML))?;
            let names: Vec<String> = deployment.services.iter().map(|s| s.name.clone()).collect();
            for n in deployment.start_order(&names)? {
                if let Some(s) = deployment.service(&n) {
                    let ports: Vec<String> =
                        s.ports.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!("{:<13} {:<22} {}", s.name, ports.join(","), s.description);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn server_command(root: &std::path::Path, command: ServerCommand) -> Result<ExitCode, Error> {
    use sdcadm::servers;
    let cnapi = |dc: DcArgs| async move {
        let dc = dc.open(root)?;
        sdcadm::coal::seed::channel(&dc.addr("cnapi", "grpc")?).await
    };
    match command {
        ServerCommand::List { dc } => {
            print!(
                "{}",
                servers::table(&servers::list(cnapi(dc).await?).await?)
            );
        }
        ServerCommand::Setup { uuid, hostname, dc } => {
            let s = servers::setup(cnapi(dc).await?, &uuid, hostname.as_deref()).await?;
            println!(
                "{} ({}): setup {}, status {}",
                s.uuid, s.hostname, s.setup, s.status
            );
        }
        ServerCommand::Reserve { uuid, reserved, dc } => {
            let s = servers::set_reserved(cnapi(dc).await?, &uuid, reserved).await?;
            println!("{} ({}): reserved {}", s.uuid, s.hostname, s.reserved);
        }
        ServerCommand::BootParams { mac, dc } => {
            print!(
                "{}",
                servers::show_boot_params(&servers::get_boot_params(cnapi(dc).await?, &mac).await?)
            );
        }
        ServerCommand::SetBootParams {
            server,
            platform,
            args,
            flags,
            replace,
            dc,
        } => {
            let request = triton_proto::cnapi::v1::SetBootParamsRequest {
                server_uuid: server,
                platform,
                kernel_args: servers::parse_args(&args)?,
                kernel_flags: flags,
                replace,
            };
            print!(
                "{}",
                servers::show_boot_params(
                    &servers::set_boot_params(cnapi(dc).await?, request).await?
                )
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn require_root(what: &str) -> Result<(), Error> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::Usage(format!(
            "{what} runs as root (it starts services, bridges and instances)"
        )));
    }
    Ok(())
}
