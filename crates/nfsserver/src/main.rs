//! `nfsserver [--listen ADDR] [--root DIR]`: the NFS server of a volume's storage
//! instance. Serves NFSv3 and MOUNT v3 on one TCP port until SIGTERM or SIGINT (then exits
//! 0); logs to stderr (`RUST_LOG` filters).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "nfsserver",
    about = "NFSv3 server of a volume: exports DIR as /exports/data"
)]
struct Args {
    /// Address to serve NFS and MOUNT on (one port for both).
    #[arg(long, default_value = "0.0.0.0:2049")]
    listen: SocketAddr,
    /// The directory exported as /exports/data (made if missing).
    #[arg(long, default_value = "/exports/data")]
    root: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nfsserver: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&args.root)
        .map_err(|e| format!("cannot make the export root {}: {e}", args.root.display()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stopping");
        stop.cancel();
    });
    nfsserver::serve(listener, args.root, shutdown).await?;
    Ok(())
}
