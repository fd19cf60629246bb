//! `volmount --source IP:/PATH --mountpoint DIR [--read-only] [--netns FILE]
//! [--uid-base N --id-count N]`: mounts the NFS export at DIR and serves it until DIR is
//! unmounted or the process gets SIGTERM/SIGINT (then it unmounts DIR itself).
//! Errors before the mount is up exit 1 with the error on stderr; a bad command line
//! exits 2.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use volmount::fs::{IdMap, Options, Volume};
use volmount::nfs::Client;
use volmount::{NFS_PORT, Source};

#[derive(Parser)]
#[command(
    name = "volmount",
    about = "Mount a Triton NFS volume through FUSE",
    version
)]
struct Args {
    /// The volume's `nfsvolume`: `<ip>:<export path>`.
    #[arg(long)]
    source: String,
    /// The directory to mount on.
    #[arg(long)]
    mountpoint: PathBuf,
    /// Mount read-only: every write fails with EROFS.
    #[arg(long)]
    read_only: bool,
    /// A network namespace file (`/var/run/netns/NAME`) to join before any socket is
    /// opened, so the traffic goes over that namespace's interfaces only.
    #[arg(long)]
    netns: Option<PathBuf>,
    /// The server's port for MOUNT and NFS.
    #[arg(long, default_value_t = NFS_PORT)]
    port: u16,
    /// Server uid/gid 0 shows as this host id (the instance's range base).
    #[arg(long, default_value_t = 0)]
    uid_base: u32,
    /// How many ids the range holds (ids past it show as 65534).
    #[arg(long, default_value_t = u32::MAX)]
    id_count: u32,
    /// TCP connections to the server (requests in flight at once).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// How long a request waits for an unreachable server before it fails (EIO).
    #[arg(long, default_value_t = 60)]
    retry_seconds: u64,
}

/// Whether the FUSE mount is up (a signal before it ends the process at once).
static MOUNTED: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("volmount: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let source = Source::parse(&args.source).map_err(|e| format!("--source {e}"))?;
    if args.id_count == 0 {
        return Err("--id-count must be at least 1".into());
    }
    // SIGTERM and SIGINT are taken by a thread of their own; blocked here, before any
    // other thread is started, so every thread inherits the mask.
    let signals = block_signals();
    let mountpoint = CString::new(args.mountpoint.as_os_str().as_bytes())
        .map_err(|_| "--mountpoint holds a NUL byte".to_string())?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut signal: libc::c_int = 0;
            // SAFETY: sigwait(2) on a signal set built by block_signals.
            unsafe { libc::sigwait(&signals, &mut signal) };
            if !MOUNTED.load(Ordering::SeqCst) {
                // Still connecting: nothing to unmount.
                std::process::exit(1);
            }
            tracing::info!(signal, "unmounting");
            // SAFETY: umount2(2) on a NUL-terminated path; the session's loop ends when
            // the kernel drops the connection.
            unsafe { libc::umount2(mountpoint.as_ptr(), libc::MNT_DETACH) };
        })
        .map_err(|e| format!("signal thread: {e}"))?;
    if let Some(netns) = &args.netns {
        let file =
            std::fs::File::open(netns).map_err(|e| format!("--netns {}: {e}", netns.display()))?;
        // SAFETY: setns(2) on an open descriptor, for this thread; every thread started
        // later (FUSE workers) inherits its namespace. The signal thread opens no socket.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            return Err(format!(
                "--netns {}: setns: {}",
                netns.display(),
                std::io::Error::last_os_error()
            ));
        }
    }
    let mut client = Client::new(source.addr(args.port), args.connections);
    client.transport_mut().retry_for = std::time::Duration::from_secs(args.retry_seconds);
    let opts = Options {
        read_only: args.read_only,
        ids: IdMap {
            base: args.uid_base,
            count: args.id_count,
        },
    };
    let volume = Volume::connect(client, &source.path, opts)
        .map_err(|e| format!("mount of {source}: {e}"))?;
    tracing::info!(%source, rtmax = volume.rtmax(), wtmax = volume.wtmax(), "export mounted");

    let mut mount_options = vec![
        fuser::MountOption::FSName(source.to_string()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    mount_options.push(if args.read_only {
        fuser::MountOption::RO
    } else {
        fuser::MountOption::RW
    });
    let mut config = fuser::Config::default();
    config.mount_options = mount_options;
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(args.connections.max(2));
    config.clone_fd = true;
    let session = fuser::Session::new(volume, &args.mountpoint, &config)
        .map_err(|e| format!("FUSE mount on {}: {e}", args.mountpoint.display()))?;
    tracing::info!(mountpoint = %args.mountpoint.display(), "mounted");

    MOUNTED.store(true, Ordering::SeqCst);
    session.run().map_err(|e| format!("FUSE session: {e}"))?;
    tracing::info!("unmounted");
    Ok(())
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a zeroed local set, then pthread_sigmask on it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}
