//! Why dhcpd fails to start or stops. dhcpd serves no gRPC, so there is no status table:
//! a request it cannot answer is dropped (DHCP), answered with a TFTP error packet, or an
//! HTTP status, each with a log line naming the reason (`dhcp::leases::LeaseError`).

use triton_common::channel::ChannelError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listening socket could not be made.
    #[error("cannot listen for {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The admin interface could not be found or used.
    #[error("admin interface: {0}")]
    Interface(String),
    /// A client channel's URL is malformed.
    #[error("client of {service}")]
    Channel {
        service: &'static str,
        #[source]
        source: ChannelError,
    },
    /// A bad address in the config (checked before start; here for tests that skip it).
    #[error("config: {0}")]
    Config(String),
    /// A server task failed while running.
    #[error("{what} stopped")]
    Serve {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn bind(
        what: &'static str,
        addr: impl ToString,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let addr = addr.to_string();
        move |source| Error::Bind { what, addr, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
