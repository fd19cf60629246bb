//! `zlogin UUID [CMD...]`: runs CMD (or an interactive `/bin/sh`) inside a running
//! instance of this node, with exactly the instance's namespaces, uid map,
//! capabilities, seccomp filter and cgroups, and exits with its status. See
//! `cn_agent::linux::zlogin`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cn_agent::config::Config;
use cn_agent::linux::LinuxConfig;
use cn_agent::linux::zlogin;

#[derive(Parser)]
#[command(
    name = "zlogin",
    about = "Run a command inside a running instance (an interactive shell without one)",
    version
)]
struct Args {
    /// cn-agent's TOML config file (its state_dir and linux section are used); every key
    /// can also be set with `CN_AGENT_<KEY>`, as for cn-agent.
    #[arg(long, short, env = "CN_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// cn-agent's state directory (default: the config's, /var/lib/cn-agent).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The instance.
    uuid: String,
    /// The command and its arguments; /bin/sh when none.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(e) => {
            eprintln!("zlogin: {}", e.chain());
            // As a shell does when it cannot run a command.
            ExitCode::from(126)
        }
    }
}

fn run(args: Args) -> cn_agent::Result<i32> {
    let config: Config = triton_common::config::load("cn-agent", args.config.as_deref())
        .map_err(|e| cn_agent::Error::invalid("config", e.to_string()))?;
    let uuid = cn_agent::convert::parse_uuid("UUID", &args.uuid)?;
    zlogin::check_argv(&args.cmd)?;
    let linux = LinuxConfig {
        state_dir: args.state_dir.unwrap_or(config.state_dir),
        cgroup_root: config.linux.cgroup_root,
        cgroup_parent: config.linux.cgroup_parent,
        ..LinuxConfig::default()
    };
    let target = zlogin::find(&linux, uuid)?;
    zlogin::enter(&target, &args.cmd)
}
