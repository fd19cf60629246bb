//! Every account's default fabric: with `fabrics.enabled`, NAPI follows UFDS's
//! WatchAccounts feed (the snapshot, then every change) and gives each account without a
//! `default_network` its default fabric ([`Napi::default_fabric`]), then sets that
//! network as the account's `default_network` through UFDS's UpdateAccount.
//!
//! The follower runs in passes, a periodic task named `default_fabrics` (its state is the
//! health service's `task:default_fabrics`): a pass resumes the feed at the last position
//! it applied (0, the snapshot, after a start or a resync answer), and ends once the feed
//! has been quiet for [`QUIET`]. An account that failed is tried again at the next pass,
//! which then fails too until it succeeds, so the health shows it.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use triton_common::periodic::{Periodic, Tasks};
use triton_common::status::found;
use triton_proto::feed::{ChangeMessage, Event, WatchEvent};
use triton_proto::ufds::v1 as ufds;
use triton_proto::ufds::v1::ufds_client::UfdsClient;

use crate::Napi;
use crate::config::FabricsConfig;

/// The task's name in logs and health (`task:default_fabrics`).
pub const TASK: &str = "default_fabrics";
/// A pass ends after the feed has been this long without an event.
pub const QUIET: Duration = Duration::from_secs(1);

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("UFDS WatchAccounts: {0}")]
    Watch(tonic::Status),
    #[error("account {account}: {message}")]
    Account { account: String, message: String },
}

/// The follower's state between passes.
pub struct Follower {
    napi: Napi,
    watch: UfdsClient<Channel>,
    ufds: UfdsClient<Channel>,
    resolvers: Vec<String>,
    shutdown: CancellationToken,
    /// The last position applied (0: start with the snapshot).
    position: u64,
    /// Accounts whose default fabric failed, to try again.
    pending: BTreeSet<String>,
}

impl Follower {
    /// A follower of the UFDS at `config.ufds_url` (connected lazily: a UFDS not up yet
    /// is a failed pass, not a failed start).
    pub fn new(
        napi: Napi,
        config: &FabricsConfig,
        shutdown: CancellationToken,
    ) -> Result<Follower, String> {
        if config.ufds_url.is_empty() {
            return Err("fabrics.ufds_url: required when fabrics.enabled is true".into());
        }
        let builder = triton_common::channel::ChannelBuilder::new(&config.ufds_url);
        let channel = |b: &triton_common::channel::ChannelBuilder| {
            b.lazy().map_err(|e| format!("fabrics.ufds_url: {e}"))
        };
        Ok(Follower {
            napi,
            // The feed's stream lasts a pass; the other calls keep the default timeout.
            watch: UfdsClient::new(channel(&builder.clone().request_timeout(None))?),
            ufds: UfdsClient::new(channel(&builder)?),
            resolvers: config.resolvers.clone(),
            shutdown,
            position: 0,
            pending: BTreeSet::new(),
        })
    }

    /// Runs passes every `every` until shutdown, recorded in `tasks`.
    pub fn spawn(self, every: Duration, tasks: &Tasks) -> tokio::task::JoinHandle<()> {
        let shutdown = self.shutdown.clone();
        Periodic::new(TASK, every)
            .at_start()
            .spawn(tasks, shutdown, self, |f| Box::pin(f.pass()))
    }

    /// One pass: the accounts that failed before, then the feed from the last position
    /// until it is quiet.
    pub async fn pass(&mut self) -> Result<(), FollowError> {
        let mut failed = None;
        for uuid in std::mem::take(&mut self.pending) {
            let get = ufds::GetAccountRequest {
                account: uuid.clone(),
            };
            match found(self.ufds.get_account(get).await) {
                Ok(Some(account)) => self.apply(&account, &mut failed).await,
                // The account is gone: nothing to make for it.
                Ok(None) => {}
                Err(s) => {
                    self.pending.insert(uuid.clone());
                    failed.get_or_insert(FollowError::Account {
                        account: uuid,
                        message: s.message().to_string(),
                    });
                }
            }
        }
        let mut stream = self
            .watch
            .watch_accounts(ufds::WatchAccountsRequest {
                position: self.position,
                uuid: None,
            })
            .await
            .map_err(FollowError::Watch)?
            .into_inner();
        let mut caught_up = false;
        loop {
            // Until the snapshot (or a resume's marker) there is no waiting limit; after
            // it, a quiet feed ends the pass.
            let next = async {
                if caught_up {
                    tokio::time::timeout(QUIET, stream.message()).await.ok()
                } else {
                    Some(stream.message().await)
                }
            };
            let message = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                m = next => match m {
                    Some(m) => m,
                    None => break,
                },
            };
            let Some(event) = message.map_err(FollowError::Watch)? else {
                break;
            };
            match event.into_event() {
                Some(Event::Page(accounts, _)) => {
                    for a in &accounts {
                        self.apply(a, &mut failed).await;
                    }
                }
                Some(Event::SnapshotDone(position)) => {
                    self.position = position;
                    caught_up = true;
                }
                Some(Event::Change(change)) => {
                    match change.record() {
                        Some(a) => self.apply(a, &mut failed).await,
                        None => {
                            self.pending.remove(change.key());
                        }
                    }
                    self.position = change.position();
                }
                Some(Event::Resync(position, message)) => {
                    tracing::info!(position, %message, "UFDS accounts feed: following again from its snapshot");
                    self.position = 0;
                    break;
                }
                None => {}
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Gives `account` its default fabric if it has no default network; a failure is
    /// kept in `failed` (the first one) and the account tried again next pass.
    async fn apply(&mut self, account: &ufds::Account, failed: &mut Option<FollowError>) {
        if !account.default_network.is_empty() {
            self.pending.remove(&account.uuid);
            return;
        }
        match self.default_network(account).await {
            Ok(()) => {
                self.pending.remove(&account.uuid);
            }
            Err(message) => {
                tracing::warn!(account = %account.uuid, %message, "default fabric not made");
                self.pending.insert(account.uuid.clone());
                failed.get_or_insert(FollowError::Account {
                    account: account.uuid.clone(),
                    message,
                });
            }
        }
    }

    async fn default_network(&mut self, account: &ufds::Account) -> Result<(), String> {
        let network = self
            .napi
            .default_fabric(&account.uuid, &self.resolvers)
            .await
            .map_err(|e| triton_common::service::chain(&e))?;
        // Set only if still unset: the tenant may have chosen one meanwhile.
        let get = ufds::GetAccountRequest {
            account: account.uuid.clone(),
        };
        let Some(current) = found(self.ufds.get_account(get).await)
            .map_err(|s| format!("UFDS GetAccount: {}", s.message()))?
        else {
            return Ok(()); // the account is gone
        };
        if !current.default_network.is_empty() {
            return Ok(());
        }
        self.ufds
            .update_account(ufds::UpdateAccountRequest {
                account: account.uuid.clone(),
                default_network: Some(network.uuid.clone()),
                ..Default::default()
            })
            .await
            .map_err(|s| format!("UFDS UpdateAccount: {}", s.message()))?;
        tracing::info!(account = %account.uuid, network = %network.uuid, "default fabric network set");
        Ok(())
    }
}
