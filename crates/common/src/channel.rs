//! The one way a Triton process builds a gRPC client channel: from a URL (`http://host:port`,
//! Triton's `tcp://host:port`, or a bare `host:port`), with a connect timeout, HTTP/2
//! keep-alive, `TCP_NODELAY` and a default per-request timeout, lazily (the first call
//! connects) or at once.
//!
//! ```ignore
//! let cnapi = CnapiClient::new(ChannelBuilder::new(&config.cnapi_url).lazy()?);
//! // A channel whose calls wait on purpose (WaitTask) sets its own bound per call:
//! let agent = ChannelBuilder::new(url).request_timeout(None).lazy()?;
//! ```

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// How long one TCP connect may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take unless the channel or the call says otherwise: the calls
/// between services are short reads and writes (state changes are jobs that answer at
/// once); a call that waits on purpose sets its own bound.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// HTTP/2 PING on an idle connection this often, so a server that vanished without a
/// FIN is noticed before the next call waits on it.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// A PING unanswered this long closes the connection (the next call reconnects).
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a channel could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The URL is not one a channel can be made to.
    #[error("{url:?} is not a gRPC URL (http://host:port, tcp://host:port or host:port)")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The first connection failed.
    #[error("cannot connect to {url}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
}

/// A client channel's settings; [`ChannelBuilder::lazy`] or [`ChannelBuilder::connect`]
/// makes the channel.
#[derive(Debug, Clone)]
pub struct ChannelBuilder {
    url: String,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
    keepalive_interval: Option<Duration>,
    keepalive_timeout: Duration,
    keepalive_while_idle: bool,
}

impl ChannelBuilder {
    /// The defaults for `url`; `tcp://` is read as `http://`, and a URL without a scheme
    /// gets `http://`.
    pub fn new(url: &str) -> ChannelBuilder {
        ChannelBuilder {
            url: url.trim().to_string(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Some(DEFAULT_REQUEST_TIMEOUT),
            keepalive_interval: Some(DEFAULT_KEEPALIVE_INTERVAL),
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            keepalive_while_idle: false,
        }
    }

    /// How long one connection attempt may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> ChannelBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// Every call's bound; `None` for a channel whose calls set their own (a call's
    /// `Request::set_timeout` also applies under a channel bound, the shorter winning).
    pub fn request_timeout(mut self, timeout: Option<Duration>) -> ChannelBuilder {
        self.request_timeout = timeout;
        self
    }

    /// HTTP/2 keep-alive: a PING every `interval` (`None`: off), the connection closed
    /// when one is unanswered for `timeout`.
    pub fn keepalive(mut self, interval: Option<Duration>, timeout: Duration) -> ChannelBuilder {
        self.keepalive_interval = interval;
        self.keepalive_timeout = timeout;
        self
    }

    /// PING also while no call is open (for a connection that must notice a dead peer
    /// between calls, as a watch of etcd does).
    pub fn keepalive_while_idle(mut self, on: bool) -> ChannelBuilder {
        self.keepalive_while_idle = on;
        self
    }

    /// The URL the channel connects to, after the scheme is settled.
    pub fn url(&self) -> String {
        if let Some(rest) = self.url.strip_prefix("tcp://") {
            format!("http://{rest}")
        } else if self.url.contains("://") {
            self.url.clone()
        } else {
            format!("http://{}", self.url)
        }
    }

    /// The tonic endpoint with these settings (for a balanced channel over several).
    pub fn endpoint(&self) -> Result<Endpoint, ChannelError> {
        let url = self.url();
        let mut endpoint = Endpoint::from_shared(url)
            .map_err(|source| ChannelError::BadUrl {
                url: self.url.clone(),
                source,
            })?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        if let Some(interval) = self.keepalive_interval {
            endpoint = endpoint
                .http2_keep_alive_interval(interval)
                .keep_alive_timeout(self.keepalive_timeout)
                .keep_alive_while_idle(self.keepalive_while_idle);
        }
        if let Some(timeout) = self.request_timeout {
            endpoint = endpoint.timeout(timeout);
        }
        Ok(endpoint)
    }

    /// A channel that connects at its first call (and again after a failure); only a
    /// malformed URL fails here.
    pub fn lazy(&self) -> Result<Channel, ChannelError> {
        Ok(self.endpoint()?.connect_lazy())
    }

    /// A channel connected now (one attempt, within the connect timeout).
    pub async fn connect(&self) -> Result<Channel, ChannelError> {
        self.endpoint()?
            .connect()
            .await
            .map_err(|source| ChannelError::Connect {
                url: self.url(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_settled() {
        assert_eq!(
            ChannelBuilder::new("10.0.0.1:2020").url(),
            "http://10.0.0.1:2020"
        );
        assert_eq!(
            ChannelBuilder::new("tcp://moray:2020").url(),
            "http://moray:2020"
        );
        assert_eq!(ChannelBuilder::new("http://a:1").url(), "http://a:1");
        assert_eq!(ChannelBuilder::new("https://a:1").url(), "https://a:1");
    }

    #[tokio::test]
    async fn a_malformed_url_is_named() {
        let err = ChannelBuilder::new("http://bad host:1").lazy().unwrap_err();
        let shown = crate::service::chain(&err);
        assert!(
            shown.starts_with("\"http://bad host:1\" is not a gRPC URL"),
            "{shown}"
        );
    }
}
