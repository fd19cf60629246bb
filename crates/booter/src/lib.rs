//! Booter: compute nodes boot from the network. `dhcpd` answers DHCP on the admin network
//! with the static address of each MAC's admin NIC in NAPI (`dhcp`), and serves the boot
//! files over TFTP (`tftp`) and HTTP (`http`): the iPXE binaries, each node's iPXE script
//! from CNAPI's boot parameters (`ipxe`), and the platform images in the data dir
//! (`files`). See `docs/booter.md`.

pub mod config;
pub mod dhcp;
pub mod error;
pub mod files;
pub mod http;
pub mod ipxe;
pub mod tftp;
pub mod udp;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use triton_common::channel::ChannelBuilder;

pub use config::Config;
pub use error::{Error, Result};

/// A started dhcpd.
#[derive(Debug)]
pub struct Running {
    /// The DHCP socket's address (0.0.0.0:port on the admin interface).
    pub dhcp_addr: SocketAddr,
    pub tftp_addr: Option<SocketAddr>,
    pub http_addr: SocketAddr,
    /// Ends after the shutdown token is cancelled, or when a server fails.
    pub task: JoinHandle<Result<()>>,
}

/// Binds DHCP on the admin interface, TFTP and HTTP, and serves until `shutdown`.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    config.check().map_err(Error::Config)?;
    let server_ip: Ipv4Addr = config
        .server_ip
        .parse()
        .map_err(|_| Error::Config(format!("server_ip {:?}", config.server_ip)))?;
    let channel = |service: &'static str, url: &str| {
        ChannelBuilder::new(url)
            .request_timeout(Some(Duration::from_secs(10)))
            .lazy()
            .map_err(|source| Error::Channel { service, source })
    };
    let napi = channel("NAPI", &config.napi_url)?;
    let cnapi = channel("CNAPI", &config.cnapi_url)?;
    let leases = Arc::new(dhcp::leases::Leases::new(
        napi,
        cnapi,
        &config.admin_network,
        &config.admin_uuid,
        Some(Path::new(&config.data_dir).join(files::CACHE_FILE)),
    ));

    let (http_listener, http_addr) = triton_common::listen::bind(&config.http_listen)
        .await
        .map_err(Error::bind("HTTP", &config.http_listen))?;
    let http_base = if config.http_url.is_empty() {
        format!("http://{server_ip}:{}", http_addr.port())
    } else {
        config.http_url.trim_end_matches('/').to_string()
    };
    let boot_over = config.boot_over();
    let scripts = Arc::new(ipxe::Scripts {
        leases: leases.clone(),
        base: match boot_over {
            config::BootOver::Http => http_base.clone(),
            config::BootOver::Tftp => format!("tftp://{server_ip}"),
        },
        cnapi_url: config.cnapi_url.clone(),
    });
    let files = files::Files::new(Path::new(&config.data_dir), Path::new(&config.ipxe_dir));

    let interface = if config.interface.is_empty() {
        dhcp::interface_of(server_ip)?
    } else {
        config.interface.clone()
    };
    let socket = dhcp::bind_on_interface(&interface, config.dhcp_port)?;
    let dhcp_addr = socket
        .local_addr()
        .map_err(Error::bind("DHCP", config.dhcp_port))?;
    let dhcp = dhcp::Dhcp {
        socket: Arc::new(socket),
        leases: leases.clone(),
        facts: Arc::new(dhcp::packet::Facts {
            server_ip,
            lease_secs: config.lease_time_secs,
            resolvers: config
                .resolvers
                .iter()
                .filter_map(|r| r.parse().ok())
                .collect(),
            domain: Some(config.dns_domain.clone()).filter(|d| !d.is_empty()),
            http_base: (boot_over == config::BootOver::Http).then_some(http_base),
        }),
        max_in_flight: config.max_in_flight,
    };
    let tftp = if config.tftp_listen.is_empty() {
        None
    } else {
        Some(tftp::Tftp::bind(&config.tftp_listen, files.clone(), scripts.clone()).await?)
    };
    let tftp_addr = match &tftp {
        Some(t) => Some(
            t.socket
                .local_addr()
                .map_err(Error::bind("TFTP", &config.tftp_listen))?,
        ),
        None => None,
    };
    let router = http::router(Arc::new(http::Http { files, scripts }));

    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let http = {
                let shutdown = shutdown.clone();
                async move {
                    axum::serve(http_listener, router)
                        .with_graceful_shutdown(shutdown.cancelled_owned())
                        .await
                        .map_err(|source| Error::Serve {
                            what: "HTTP",
                            source,
                        })
                }
            };
            let tftp = {
                let shutdown = shutdown.clone();
                async move {
                    match tftp {
                        Some(t) => t.serve(shutdown).await,
                        None => Ok(()),
                    }
                }
            };
            let follower = tokio::spawn(leases.run(shutdown.clone()));
            let result = tokio::try_join!(dhcp.serve(shutdown.clone()), tftp, http);
            // One failed: stop the others too.
            shutdown.cancel();
            // The cache file's last write.
            let _ = follower.await;
            result.map(|_| ())
        }
    });
    tracing::info!(%interface, %dhcp_addr, ?tftp_addr, %http_addr, "dhcpd started");
    Ok(Running {
        dhcp_addr,
        tftp_addr,
        http_addr,
        task,
    })
}
