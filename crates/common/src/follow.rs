//! "Snapshot then follow" one owner's change feed (docs/architecture.md, "Change
//! feeds"): from position 0 the snapshot's pages are gathered and handed over whole at
//! the snapshot's marker; then each change is handed over in order. After a dropped or
//! failed stream the follower resumes at the last position it applied; a resync answer
//! sends it back to 0. Between passes it waits, from [`MIN_BACKOFF`] doubling up to
//! [`MAX_BACKOFF`] (back to the least after each snapshot).
//!
//! A [`Watch`] (one per feed, below) opens the feed on its owner's client, an [`Apply`]
//! says what to do with what it gives; [`follow`] runs them until shutdown.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use triton_proto::feed::{ChangeMessage as _, Event, WatchEvent};

/// The first wait after a failed or ended stream.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between passes.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A feed: its request, the owner's client that opens it, and its events.
pub trait Watch: Send + 'static {
    /// The owner's gRPC client.
    type Client: Send;
    /// The feed's event message (`WatchVmsEvent`, ...).
    type Event: WatchEvent<Record: Send + Sync, Change: Send> + Send + 'static;

    /// The whole feed (no filter) from `position` (0: the snapshot first).
    fn open(
        client: &mut Self::Client,
        position: u64,
    ) -> impl Future<Output = Result<tonic::Streaming<Self::Event>, tonic::Status>> + Send;
}

/// The records of feed `W`.
pub type Record<W> = <<W as Watch>::Event as WatchEvent>::Record;

macro_rules! watch {
    ($($pkg:ident: $request:ident, $client:ident::$client_type:ident::$method:ident, $event:ident;)*) => {$(
        impl Watch for triton_proto::$pkg::v1::$request {
            type Client = triton_proto::$pkg::v1::$client::$client_type<Channel>;
            type Event = triton_proto::$pkg::v1::$event;

            async fn open(
                client: &mut Self::Client,
                position: u64,
            ) -> Result<tonic::Streaming<Self::Event>, tonic::Status> {
                let mut request = Self::default();
                request.position = position;
                Ok(client.$method(request).await?.into_inner())
            }
        }
    )*};
}

watch! {
    vmapi: WatchVmsRequest, vmapi_client::VmapiClient::watch_vms, WatchVmsEvent;
    cnapi: WatchServersRequest, cnapi_client::CnapiClient::watch_servers, WatchServersEvent;
    napi: WatchNicsRequest, napi_client::NapiClient::watch_nics, WatchNicsEvent;
    napi: WatchNetworksRequest, napi_client::NapiClient::watch_networks, WatchNetworksEvent;
    ufds: WatchAccountsRequest, ufds_client::UfdsClient::watch_accounts, WatchAccountsEvent;
    ufds: WatchKeysRequest, ufds_client::UfdsClient::watch_keys, WatchKeysEvent;
}

/// What a follower does with its feed's records.
pub trait Apply<R>: Send {
    /// Why a snapshot or change could not be applied.
    type Error: std::fmt::Display + Send;

    /// The whole state, at the snapshot's marker. A failure ends the pass; the next one
    /// starts from the snapshot again.
    fn reset(&mut self, records: Vec<R>) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// A record changed (`Some`) or was deleted (`None`). A failure ends the pass; the
    /// next one resumes at this change.
    fn change(
        &mut self,
        key: &str,
        record: Option<&R>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Follows feed `W` through `client` into `apply` until `shutdown`; `name` is the feed
/// in the logs.
pub async fn follow<W: Watch, A: Apply<Record<W>>>(
    name: &'static str,
    mut client: W::Client,
    mut apply: A,
    shutdown: CancellationToken,
) {
    let mut position = 0u64;
    let mut backoff = MIN_BACKOFF;
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = W::open(&mut client, position) => s,
        };
        match stream {
            Ok(mut stream) => {
                let mut snapshot = (position == 0).then(Vec::new);
                loop {
                    let item = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        m = stream.message() => m,
                    };
                    let event = match item {
                        Ok(Some(e)) => e,
                        Ok(None) => {
                            tracing::info!(feed = name, position, "feed ended; resuming");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(feed = name, error = %e, "feed failed; resuming");
                            break;
                        }
                    };
                    match event.into_event() {
                        Some(Event::Page(records, _)) => {
                            if let Some(s) = snapshot.as_mut() {
                                s.extend(records);
                            }
                        }
                        Some(Event::SnapshotDone(p)) => {
                            if let Some(s) = snapshot.take() {
                                let records = s.len();
                                if let Err(error) = apply.reset(s).await {
                                    tracing::warn!(
                                        feed = name,
                                        %error,
                                        "applying the snapshot failed; starting again"
                                    );
                                    position = 0;
                                    break;
                                }
                                tracing::info!(
                                    feed = name,
                                    records,
                                    position = p,
                                    "snapshot applied"
                                );
                            }
                            position = p;
                            backoff = MIN_BACKOFF;
                        }
                        Some(Event::Change(c)) => {
                            if snapshot.is_some() {
                                continue;
                            }
                            if let Err(error) = apply.change(c.key(), c.record()).await {
                                tracing::warn!(
                                    feed = name,
                                    key = c.key(),
                                    %error,
                                    "applying a change failed; resuming"
                                );
                                break;
                            }
                            position = c.position();
                        }
                        Some(Event::Resync(_, message)) => {
                            tracing::warn!(feed = name, %message, "feed asks for a resync");
                            position = 0;
                            break;
                        }
                        None => {}
                    }
                }
            }
            Err(e) => {
                tracing::warn!(feed = name, error = %e, "cannot open the feed");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
