//! Where CNAPI keeps its records: Moray (buckets `cnapi_servers` and
//! `cnapi_reservations`) in production, memory for unit tests. Every write can be
//! conditional on the etag read, which is what keeps concurrent CNAPIs (and concurrent
//! requests in one) from clobbering each other or over-committing a server.
//!
//! Boot parameters (bucket `cnapi_boot_params`) are one record per key: `default` for
//! the datacenter's defaults, a server's UUID for its overrides ([`crate::boot`]).
//!
//! A reservation document also carries `vm_uuids`, the instances it holds, as an
//! indexed field, so the document holding one instance is found without reading them
//! all (`ReleaseReservation` without a server).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use moray_client::filter::Filter;
use moray_client::typed::{Bucket, is_etag_conflict};
use moray_client::{BucketConfig, FindOptions, IndexDef, MorayClient};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::boot::BootParamsRecord;
use crate::error::{Error, Result};
use crate::model::{ServerRecord, ServerVm};

pub const SERVERS_BUCKET: &str = "cnapi_servers";
pub const RESERVATIONS_BUCKET: &str = "cnapi_reservations";
pub const BOOT_PARAMS_BUCKET: &str = "cnapi_boot_params";
/// Version of our bucket schemas; raise it when an index is added.
const BUCKET_VERSION: u32 = 1;
/// Version of `cnapi_reservations`: 2 added the `vm_uuids` index.
const RESERVATIONS_BUCKET_VERSION: u32 = 2;
/// Most servers one list reads (Moray's find limit).
const LIST_LIMIT: u64 = 100_000;

/// The condition of a write: Moray's etag condition.
pub use moray_client::EtagCondition as Cond;
/// A record with the etag it was read at (moray-client's, also for [`MemoryStore`]).
pub use moray_client::typed::Versioned;

/// Instances allocated to a server but not yet seen in its heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ReservationDoc {
    pub server_uuid: Uuid,
    pub reservations: Vec<Reservation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub vm: ServerVm,
    /// Unix milliseconds after which the reservation no longer counts.
    pub expires_at_ms: u64,
}

pub trait Store: Send + Sync + 'static {
    /// The servers' Moray bucket, for WatchServers; None when they are not in Moray.
    fn servers_bucket(&self) -> Option<&Bucket<ServerRecord>> {
        None
    }
    fn get_server(
        &self,
        uuid: Uuid,
    ) -> impl Future<Output = Result<Option<Versioned<ServerRecord>>>> + Send;
    fn list_servers(&self) -> impl Future<Output = Result<Vec<Versioned<ServerRecord>>>> + Send;
    /// Writes the record if `cond` holds ([`Error::EtagConflict`] otherwise).
    fn put_server(
        &self,
        server: &ServerRecord,
        cond: Cond,
    ) -> impl Future<Output = Result<String>> + Send;
    /// Whether there was a record.
    fn delete_server(&self, uuid: Uuid) -> impl Future<Output = Result<bool>> + Send;
    fn list_reservations(
        &self,
    ) -> impl Future<Output = Result<Vec<Versioned<ReservationDoc>>>> + Send;
    fn put_reservations(
        &self,
        doc: &ReservationDoc,
        cond: Cond,
    ) -> impl Future<Output = Result<String>> + Send;
    fn delete_reservations(&self, server: Uuid) -> impl Future<Output = Result<()>> + Send;
    fn get_reservations(
        &self,
        server: Uuid,
    ) -> impl Future<Output = Result<Option<Versioned<ReservationDoc>>>> + Send;
    /// Writes every document if every condition holds and none otherwise
    /// ([`Error::EtagConflict`]), in one transaction; the new etags in order.
    fn put_reservations_batch(
        &self,
        docs: &[(ReservationDoc, Cond)],
    ) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// The documents that hold a reservation of `vm_uuid`.
    fn find_reservations_of(
        &self,
        vm_uuid: &str,
    ) -> impl Future<Output = Result<Vec<Versioned<ReservationDoc>>>> + Send;
    /// Boot parameters `key` (`default` or a server UUID).
    fn get_boot_params(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Versioned<BootParamsRecord>>>> + Send;
    /// Writes boot parameters `key` if `cond` holds ([`Error::EtagConflict`] otherwise).
    fn put_boot_params(
        &self,
        key: &str,
        record: &BootParamsRecord,
        cond: Cond,
    ) -> impl Future<Output = Result<String>> + Send;
}

/// A reservation document as stored: the document plus its indexed `vm_uuids`.
fn reservations_json(doc: &ReservationDoc) -> Result<serde_json::Value> {
    encode_reservations(doc).map_err(|source| Error::Json {
        what: "reservations".to_string(),
        source,
    })
}

fn encode_reservations(doc: &ReservationDoc) -> serde_json::Result<serde_json::Value> {
    let mut value = serde_json::to_value(doc)?;
    if let serde_json::Value::Object(m) = &mut value {
        let vms: Vec<serde_json::Value> = doc
            .reservations
            .iter()
            .map(|r| serde_json::Value::String(r.vm.uuid.clone()))
            .collect();
        m.insert("vm_uuids".into(), serde_json::Value::Array(vms));
    }
    Ok(value)
}

fn to_json<T: Serialize>(what: &str, value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|source| Error::Json {
        what: what.to_string(),
        source,
    })
}

fn from_json<T: for<'de> Deserialize<'de>>(what: &str, value: serde_json::Value) -> Result<T> {
    serde_json::from_value(value).map_err(|source| Error::Json {
        what: what.to_string(),
        source,
    })
}

/// A stored value of `what` and its etag, decoded.
fn versioned<T: for<'de> Deserialize<'de>>(
    what: &str,
    value: serde_json::Value,
    etag: String,
) -> Result<Versioned<T>> {
    Ok(Versioned {
        value: from_json(what, value)?,
        etag,
    })
}

// ---------------------------------------------------------------- memory

/// Records in memory, with etags: for unit tests and a CNAPI without Moray.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<MemoryInner>>,
}

#[derive(Default)]
struct MemoryInner {
    servers: BTreeMap<Uuid, (serde_json::Value, String)>,
    reservations: BTreeMap<Uuid, (serde_json::Value, String)>,
    boot_params: BTreeMap<String, (serde_json::Value, String)>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn check(current: Option<&String>, cond: &Cond) -> Result<()> {
    match (cond, current) {
        (Cond::Any, _) | (Cond::MustNotExist, None) => Ok(()),
        (Cond::Is(want), Some(have)) if want == have => Ok(()),
        _ => Err(Error::EtagConflict),
    }
}

impl Store for MemoryStore {
    async fn get_server(&self, uuid: Uuid) -> Result<Option<Versioned<ServerRecord>>> {
        let found = self.lock().servers.get(&uuid).cloned();
        found
            .map(|(v, etag)| versioned("server", v, etag))
            .transpose()
    }

    async fn list_servers(&self) -> Result<Vec<Versioned<ServerRecord>>> {
        let all: Vec<_> = self.lock().servers.values().cloned().collect();
        all.into_iter()
            .map(|(v, etag)| versioned("server", v, etag))
            .collect()
    }

    async fn put_server(&self, server: &ServerRecord, cond: Cond) -> Result<String> {
        let value = to_json("server", server)?;
        let mut inner = self.lock();
        check(inner.servers.get(&server.uuid).map(|(_, e)| e), &cond)?;
        let etag = Uuid::new_v4().simple().to_string();
        inner.servers.insert(server.uuid, (value, etag.clone()));
        Ok(etag)
    }

    async fn delete_server(&self, uuid: Uuid) -> Result<bool> {
        Ok(self.lock().servers.remove(&uuid).is_some())
    }

    async fn list_reservations(&self) -> Result<Vec<Versioned<ReservationDoc>>> {
        let all: Vec<_> = self.lock().reservations.values().cloned().collect();
        all.into_iter()
            .map(|(v, etag)| versioned("reservations", v, etag))
            .collect()
    }

    async fn put_reservations(&self, doc: &ReservationDoc, cond: Cond) -> Result<String> {
        let value = reservations_json(doc)?;
        let mut inner = self.lock();
        check(
            inner.reservations.get(&doc.server_uuid).map(|(_, e)| e),
            &cond,
        )?;
        let etag = Uuid::new_v4().simple().to_string();
        inner
            .reservations
            .insert(doc.server_uuid, (value, etag.clone()));
        Ok(etag)
    }

    async fn delete_reservations(&self, server: Uuid) -> Result<()> {
        self.lock().reservations.remove(&server);
        Ok(())
    }

    async fn get_reservations(&self, server: Uuid) -> Result<Option<Versioned<ReservationDoc>>> {
        let found = self.lock().reservations.get(&server).cloned();
        found
            .map(|(v, etag)| versioned("reservations", v, etag))
            .transpose()
    }

    async fn put_reservations_batch(&self, docs: &[(ReservationDoc, Cond)]) -> Result<Vec<String>> {
        let values = docs
            .iter()
            .map(|(d, _)| reservations_json(d))
            .collect::<Result<Vec<_>>>()?;
        let mut inner = self.lock();
        for (doc, cond) in docs {
            check(
                inner.reservations.get(&doc.server_uuid).map(|(_, e)| e),
                cond,
            )?;
        }
        let mut etags = Vec::with_capacity(docs.len());
        for ((doc, _), value) in docs.iter().zip(values) {
            let etag = Uuid::new_v4().simple().to_string();
            inner
                .reservations
                .insert(doc.server_uuid, (value, etag.clone()));
            etags.push(etag);
        }
        Ok(etags)
    }

    async fn find_reservations_of(&self, vm_uuid: &str) -> Result<Vec<Versioned<ReservationDoc>>> {
        // As Moray would: by the indexed field, decoding only the matches.
        let matches: Vec<_> = self
            .lock()
            .reservations
            .values()
            .filter(|(v, _)| {
                v.get("vm_uuids")
                    .and_then(|u| u.as_array())
                    .is_some_and(|u| u.iter().any(|u| u.as_str() == Some(vm_uuid)))
            })
            .cloned()
            .collect();
        matches
            .into_iter()
            .map(|(v, etag)| versioned("reservations", v, etag))
            .collect()
    }

    async fn get_boot_params(&self, key: &str) -> Result<Option<Versioned<BootParamsRecord>>> {
        let found = self.lock().boot_params.get(key).cloned();
        found
            .map(|(v, etag)| versioned("boot params", v, etag))
            .transpose()
    }

    async fn put_boot_params(
        &self,
        key: &str,
        record: &BootParamsRecord,
        cond: Cond,
    ) -> Result<String> {
        let value = to_json("boot params", record)?;
        let mut inner = self.lock();
        check(inner.boot_params.get(key).map(|(_, e)| e), &cond)?;
        let etag = Uuid::new_v4().simple().to_string();
        inner
            .boot_params
            .insert(key.to_string(), (value, etag.clone()));
        Ok(etag)
    }
}

// ---------------------------------------------------------------- moray

/// Records in Moray.
#[derive(Clone)]
pub struct MorayStore {
    servers: Bucket<ServerRecord>,
    reservations: Bucket<ReservationDoc>,
    boot_params: Bucket<BootParamsRecord>,
}

fn moray_error(e: moray_client::MorayError) -> Error {
    if is_etag_conflict(&e) {
        Error::EtagConflict
    } else {
        Error::Store(e.to_string())
    }
}

fn servers_bucket(moray: MorayClient) -> Bucket<ServerRecord> {
    let config = BucketConfig::versioned(BUCKET_VERSION)
        .with_index("uuid", IndexDef::unique("string"))
        .with_index("hostname", IndexDef::new("string"))
        .with_index("datacenter", IndexDef::new("string"))
        .with_index("status", IndexDef::new("string"))
        .with_index("setup", IndexDef::new("boolean"))
        .with_index("headnode", IndexDef::new("boolean"))
        .with_index("reserved", IndexDef::new("boolean"))
        .with_index("reservoir", IndexDef::new("boolean"));
    Bucket::new(moray, SERVERS_BUCKET, config)
}

fn boot_params_bucket(moray: MorayClient) -> Bucket<BootParamsRecord> {
    let config =
        BucketConfig::versioned(BUCKET_VERSION).with_index("platform", IndexDef::new("string"));
    Bucket::new(moray, BOOT_PARAMS_BUCKET, config)
}

fn reservations_bucket(moray: MorayClient) -> Bucket<ReservationDoc> {
    let config = BucketConfig::versioned(RESERVATIONS_BUCKET_VERSION)
        .with_index("server_uuid", IndexDef::unique("string"))
        .with_index("vm_uuids", IndexDef::new("[string]"));
    Bucket::new(moray, RESERVATIONS_BUCKET, config).with_encoder(encode_reservations)
}

impl MorayStore {
    /// Connects and creates (or upgrades) the buckets.
    pub async fn connect(url: &str) -> Result<MorayStore> {
        let moray = MorayClient::connect(url).await.map_err(moray_error)?;
        let store = MorayStore {
            servers: servers_bucket(moray.clone()),
            reservations: reservations_bucket(moray.clone()),
            boot_params: boot_params_bucket(moray),
        };
        store.servers.ensure().await.map_err(moray_error)?;
        store.boot_params.ensure().await.map_err(moray_error)?;
        store.reservations.ensure().await.map_err(moray_error)?;
        store.index_old_reservations().await?;
        Ok(store)
    }

    /// Documents written before the `vm_uuids` index are written again with it (each
    /// conditional on its etag: a document someone rewrote meanwhile has it already).
    async fn index_old_reservations(&self) -> Result<()> {
        let objects = self
            .reservations
            .client()
            .find_objects(
                RESERVATIONS_BUCKET,
                &Filter::present("server_uuid").to_string(),
                &FindOptions::limit(LIST_LIMIT),
            )
            .await
            .map_err(moray_error)?;
        for o in objects {
            if o.value.get("vm_uuids").is_some() {
                continue;
            }
            let doc = self
                .reservations
                .decode(&o.key, o.value)
                .map_err(moray_error)?;
            match self.put_reservations(&doc, Cond::Is(o.etag)).await {
                Ok(_) | Err(Error::EtagConflict) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn find_reservations(&self, filter: &Filter) -> Result<Vec<Versioned<ReservationDoc>>> {
        self.reservations
            .find(filter, &FindOptions::limit(LIST_LIMIT))
            .await
            .map_err(moray_error)
    }
}

impl Store for MorayStore {
    fn servers_bucket(&self) -> Option<&Bucket<ServerRecord>> {
        Some(&self.servers)
    }

    async fn get_server(&self, uuid: Uuid) -> Result<Option<Versioned<ServerRecord>>> {
        self.servers
            .get(&uuid.to_string())
            .await
            .map_err(moray_error)
    }

    async fn list_servers(&self) -> Result<Vec<Versioned<ServerRecord>>> {
        self.servers
            .find(&Filter::present("uuid"), &FindOptions::limit(LIST_LIMIT))
            .await
            .map_err(moray_error)
    }

    async fn put_server(&self, server: &ServerRecord, cond: Cond) -> Result<String> {
        self.servers
            .put(&server.uuid.to_string(), server, cond)
            .await
            .map_err(moray_error)
    }

    async fn delete_server(&self, uuid: Uuid) -> Result<bool> {
        self.servers
            .remove(&uuid.to_string())
            .await
            .map_err(moray_error)
    }

    async fn list_reservations(&self) -> Result<Vec<Versioned<ReservationDoc>>> {
        self.find_reservations(&Filter::present("server_uuid"))
            .await
    }

    async fn put_reservations(&self, doc: &ReservationDoc, cond: Cond) -> Result<String> {
        self.reservations
            .put(&doc.server_uuid.to_string(), doc, cond)
            .await
            .map_err(moray_error)
    }

    async fn delete_reservations(&self, server: Uuid) -> Result<()> {
        self.reservations
            .remove(&server.to_string())
            .await
            .map(|_| ())
            .map_err(moray_error)
    }

    async fn get_reservations(&self, server: Uuid) -> Result<Option<Versioned<ReservationDoc>>> {
        self.reservations
            .get(&server.to_string())
            .await
            .map_err(moray_error)
    }

    async fn put_reservations_batch(&self, docs: &[(ReservationDoc, Cond)]) -> Result<Vec<String>> {
        let ops = docs
            .iter()
            .map(|(doc, cond)| {
                self.reservations
                    .put_op(&doc.server_uuid.to_string(), doc, cond.clone())
            })
            .collect::<moray_client::Result<Vec<_>>>()
            .map_err(moray_error)?;
        let results = self
            .reservations
            .client()
            .batch(&ops)
            .await
            .map_err(moray_error)?;
        Ok(results.into_iter().map(|r| r.etag).collect())
    }

    async fn find_reservations_of(&self, vm_uuid: &str) -> Result<Vec<Versioned<ReservationDoc>>> {
        self.find_reservations(&Filter::eq("vm_uuids", vm_uuid))
            .await
    }

    async fn get_boot_params(&self, key: &str) -> Result<Option<Versioned<BootParamsRecord>>> {
        self.boot_params.get(key).await.map_err(moray_error)
    }

    async fn put_boot_params(
        &self,
        key: &str,
        record: &BootParamsRecord,
        cond: Cond,
    ) -> Result<String> {
        self.boot_params
            .put(key, record, cond)
            .await
            .map_err(moray_error)
    }
}
