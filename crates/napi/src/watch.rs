//! WatchNics and WatchNetworks: the NICs' and the networks' change feeds, Moray's
//! snapshot then follow ([`MorayClient::follow`]) over `napi_nics` and `napi_networks`,
//! each record mapped to the public `Nic` or `Network` that Get and List return. The
//! position is Moray's change feed sequence of the bucket.

use moray_client::filter::Filter;
use moray_client::{FeedObject, FeedRecords, MorayClient, MorayError, WatchStream};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use triton_proto::napi::v1 as proto;

use crate::app::Napi;
use crate::error::{Error, StoreError};
use crate::model::{Network, Nic};
use crate::store::{NETWORKS, NICS};
use crate::validate::{self, Checks};

pub type WatchNicsStream = WatchStream<proto::WatchNicsEvent>;
pub type WatchNetworksStream = WatchStream<proto::WatchNetworksEvent>;

/// Serves WatchNics and WatchNetworks calls until shutdown.
#[derive(Debug, Clone)]
pub struct Watch {
    moray: MorayClient,
    app: Napi,
    shutdown: CancellationToken,
}

fn decode<T: DeserializeOwned>(what: &str, object: FeedObject) -> Result<T, Status> {
    serde_json::from_value(object.value).map_err(|e| {
        Error::from(StoreError::corrupt(
            format!("{what} {}", object.key),
            e.to_string(),
        ))
        .into()
    })
}

/// WatchNics's records for one watcher: only NICs with these `(field, value)`s.
struct NicRecords {
    app: Napi,
    only: Vec<(&'static str, String)>,
}

impl FeedRecords for NicRecords {
    type Event = proto::WatchNicsEvent;

    async fn record(&self, object: FeedObject) -> Result<Option<proto::Nic>, Status> {
        let nic: Nic = decode("NIC", object)?;
        let wanted = self.only.iter().all(|(field, v)| match *field {
            "belongs_to_uuid" => nic.belongs_to_uuid == *v,
            _ => nic.owner_uuid == *v,
        });
        if !wanted {
            return Ok(None);
        }
        let (nic, network) = self.app.with_network(nic).await?;
        Ok(Some(nic.into_proto(network.as_ref())))
    }

    fn error(&self, e: MorayError) -> Status {
        Error::moray("follow the NICs' change feed")(e).into()
    }
}

/// WatchNetworks's records for one watcher (`owner`: only the networks listing it).
struct NetworkRecords {
    owner: Option<String>,
}

impl FeedRecords for NetworkRecords {
    type Event = proto::WatchNetworksEvent;

    async fn record(&self, object: FeedObject) -> Result<Option<proto::Network>, Status> {
        let network: Network = decode("network", object)?;
        Ok(self
            .owner
            .as_ref()
            .is_none_or(|o| network.owner_uuids.contains(o))
            .then(|| network.into()))
    }

    fn error(&self, e: MorayError) -> Status {
        Error::moray("follow the networks' change feed")(e).into()
    }
}

impl Watch {
    pub fn new(moray: MorayClient, app: Napi, shutdown: CancellationToken) -> Watch {
        Watch {
            moray,
            app,
            shutdown,
        }
    }

    /// Starts following the NICs; a failure before the first event is the call's error.
    pub async fn watch_nics(
        &self,
        req: proto::WatchNicsRequest,
    ) -> Result<WatchNicsStream, Status> {
        let mut c = Checks::new();
        let mut only = Vec::new();
        for (field, value) in [
            ("belongs_to_uuid", &req.belongs_to_uuid),
            ("owner_uuid", &req.owner_uuid),
        ] {
            if let Some(v) = value
                && let Some(v) = c.take(validate::uuid(field, v))
            {
                only.push((field, v));
            }
        }
        c.finish()?;
        let terms: Vec<Filter> = only.iter().map(|(f, v)| Filter::eq(f, v)).collect();
        let filter = Filter::and_else(terms, Filter::present("mac")).to_string();
        let feed = self.moray.follow(NICS, Some(&filter), req.position);
        let records = NicRecords {
            app: self.app.clone(),
            only,
        };
        moray_client::serve_follow(feed, records, self.shutdown.clone().cancelled_owned()).await
    }

    /// Starts following the networks; a failure before the first event is the call's
    /// error.
    pub async fn watch_networks(
        &self,
        req: proto::WatchNetworksRequest,
    ) -> Result<WatchNetworksStream, Status> {
        let mut c = Checks::new();
        let owner = req
            .owner_uuid
            .as_deref()
            .and_then(|o| c.take(validate::uuid("owner_uuid", o)));
        c.finish()?;
        let terms: Vec<Filter> = owner.iter().map(|o| Filter::eq("owner_uuids", o)).collect();
        let filter = Filter::and_else(terms, Filter::present("uuid")).to_string();
        let feed = self.moray.follow(NETWORKS, Some(&filter), req.position);
        moray_client::serve_follow(
            feed,
            NetworkRecords { owner },
            self.shutdown.clone().cancelled_owned(),
        )
        .await
    }
}
