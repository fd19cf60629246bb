//! VolAPI's records in Moray: `volapi_volumes` (one row per volume) and
//! `volapi_volumes_reservations`, with the reference's indexes.

use std::collections::BTreeMap;

use moray_client::filter::Filter;
use moray_client::typed::{Bucket, Change, UpdateError, Versioned};
use moray_client::{BucketConfig, FindOptions, IndexDef, MorayClient};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const VOLUMES_BUCKET: &str = "volapi_volumes";
pub const RESERVATIONS_BUCKET: &str = "volapi_volumes_reservations";

/// At most this many rows are read by one listing.
pub const MAX_ROWS: u64 = 10_000;

/// The volume states (`deleted` rows are removed, as Triton's).
pub mod state {
    pub const CREATING: &str = "creating";
    pub const READY: &str = "ready";
    pub const FAILED: &str = "failed";
    pub const DELETING: &str = "deleting";
    pub const ALL: &[&str] = &[CREATING, READY, FAILED, DELETING];
}

/// A volume as stored. `labels` is kept as a JSON string, as Triton keeps it (so that it
/// can be an indexed string column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub uuid: String,
    pub owner_uuid: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// MiB
    pub size: u64,
    pub state: String,
    pub networks: Vec<String>,
    #[serde(default)]
    pub filesystem_path: String,
    /// The storage VM (chosen before it is made, so the updater knows it at once).
    pub vm_uuid: String,
    /// VMs that mount the volume: references, and VMs holding a reservation.
    #[serde(default)]
    pub refs: Vec<String>,
    /// JSON object of strings.
    #[serde(default)]
    pub labels: String,
    /// ms since the epoch
    pub create_timestamp: i64,
    /// Why the volume is `failed`.
    #[serde(default)]
    pub error: String,
}

impl VolumeRecord {
    pub fn labels_map(&self) -> BTreeMap<String, String> {
        serde_json::from_str(&self.labels).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationRecord {
    pub uuid: String,
    pub volume_name: String,
    pub job_uuid: String,
    pub owner_uuid: String,
    pub vm_uuid: String,
    /// ms since the epoch
    pub create_timestamp: i64,
}

#[derive(Clone, Debug)]
pub struct Store {
    pub volumes: Bucket<VolumeRecord>,
    pub reservations: Bucket<ReservationRecord>,
}

/// A bucket of version 1 indexed by its unique `uuid` and by each of `indexes` (field,
/// Moray index type).
fn indexed(indexes: &[(&str, &str)]) -> BucketConfig {
    indexes.iter().fold(
        BucketConfig::versioned(1).with_index("uuid", IndexDef::unique("string")),
        |config, (field, kind)| config.with_index(*field, IndexDef::new(*kind)),
    )
}

impl Store {
    pub fn new(moray: MorayClient) -> Store {
        Store {
            volumes: Bucket::new(
                moray.clone(),
                VOLUMES_BUCKET,
                indexed(&[
                    ("owner_uuid", "string"),
                    ("name", "string"),
                    ("vm_uuid", "string"),
                    ("create_timestamp", "number"),
                    ("labels", "string"),
                    ("type", "string"),
                    ("size", "number"),
                    ("state", "string"),
                    ("refs", "[string]"),
                ]),
            ),
            reservations: Bucket::new(
                moray,
                RESERVATIONS_BUCKET,
                indexed(&[
                    ("vm_uuid", "string"),
                    ("job_uuid", "string"),
                    ("owner_uuid", "string"),
                    ("volume_name", "string"),
                    ("create_timestamp", "number"),
                ]),
            ),
        }
    }

    pub async fn ensure(&self) -> Result<()> {
        self.volumes
            .ensure()
            .await
            .map_err(Error::moray(format!("putBucket {VOLUMES_BUCKET}")))?;
        self.reservations
            .ensure()
            .await
            .map_err(Error::moray(format!("putBucket {RESERVATIONS_BUCKET}")))
    }

    pub async fn volume(&self, uuid: &str) -> Result<Option<Versioned<VolumeRecord>>> {
        self.volumes
            .get(uuid)
            .await
            .map_err(Error::moray(format!("getObject {VOLUMES_BUCKET}")))
    }

    pub async fn find_volumes(&self, filter: &Filter) -> Result<Vec<VolumeRecord>> {
        find_oldest_first(&self.volumes, filter, |v| {
            (v.create_timestamp, v.uuid.clone())
        })
        .await
    }

    /// The owner's volume named `name` that is creating or ready (at most one is).
    pub async fn live_by_name(&self, owner: &str, name: &str) -> Result<Option<VolumeRecord>> {
        let filter = Filter::and([
            Filter::eq("owner_uuid", owner),
            Filter::eq("name", name),
            Filter::or([
                Filter::eq("state", state::CREATING),
                Filter::eq("state", state::READY),
            ]),
        ]);
        Ok(self.find_volumes(&filter).await?.into_iter().next())
    }

    pub async fn insert_volume(&self, v: &VolumeRecord) -> Result<()> {
        insert_new(&self.volumes, &v.uuid, v).await
    }

    /// Read-modify-write of one volume under the one retry policy; `None` when it is
    /// gone. `change` may empty the slot: the row is then deleted.
    pub async fn change_volume(
        &self,
        uuid: &str,
        mut change: impl FnMut(&mut Option<VolumeRecord>) -> Result<Change>,
    ) -> Result<Option<VolumeRecord>> {
        self.volumes
            .upsert(&moray_client::typed::RetryPolicy::DEFAULT, uuid, |slot| {
                if slot.is_none() {
                    return Ok(Change::Keep);
                }
                change(slot)
            })
            .await
            .map(|v| v.map(|v| v.value))
            .map_err(|e: UpdateError<Error>| {
                e.map_moray(Error::moray(format!("update {VOLUMES_BUCKET} {uuid}")))
            })
    }

    pub async fn find_reservations(&self, filter: &Filter) -> Result<Vec<ReservationRecord>> {
        find_oldest_first(&self.reservations, filter, |r| {
            (r.create_timestamp, r.uuid.clone())
        })
        .await
    }

    pub async fn put_reservation(&self, r: &ReservationRecord) -> Result<()> {
        insert_new(&self.reservations, &r.uuid, r).await
    }

    /// Deletes a reservation; false when there was none.
    pub async fn remove_reservation(&self, uuid: &str) -> Result<bool> {
        self.reservations
            .remove(uuid)
            .await
            .map_err(Error::moray(format!("delObject {RESERVATIONS_BUCKET}")))
    }
}

/// Writes `record` under `key`, a conflict when there is one there already.
async fn insert_new<T: Serialize + serde::de::DeserializeOwned>(
    bucket: &Bucket<T>,
    key: &str,
    record: &T,
) -> Result<()> {
    bucket
        .insert(key, record)
        .await
        .map_err(Error::moray(format!("putObject {}", bucket.name())))?;
    Ok(())
}

/// The records `filter` matches (at most [`MAX_ROWS`]), oldest first.
async fn find_oldest_first<T: Serialize + serde::de::DeserializeOwned>(
    bucket: &Bucket<T>,
    filter: &Filter,
    key: impl Fn(&T) -> (i64, String),
) -> Result<Vec<T>> {
    let mut found = bucket
        .find_values(filter, &FindOptions::limit(MAX_ROWS))
        .await
        .map_err(Error::moray(format!("findObjects {}", bucket.name())))?;
    found.sort_by_key(|r| key(r));
    Ok(found)
}
