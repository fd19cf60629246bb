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

struct MemoryInner {
    servers: Table<Uuid>,
    reservations: Table<Uuid>,
    boot_params: Table<String>,
}

/// One kind of record in memory: JSON values by key, each with its etag.
struct Table<K> {
    /// What the records are, for errors.
    what: &'static str,
    rows: BTreeMap<K, (serde_json::Value, String)>,
}

impl<K: Ord> Table<K> {
    fn new(what: &'static str) -> Self {
        Table {
            what,
            rows: BTreeMap::new(),
        }
    }

    fn get<Q, T>(&self, key: &Q) -> Result<Option<Versioned<T>>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Ord + ?Sized,
        T: for<'de> Deserialize<'de>,
    {
        self.rows
            .get(key)
            .map(|(v, etag)| versioned(self.what, v.clone(), etag.clone()))
            .transpose()
    }

    /// The records whose value `matches`, decoding only those (as Moray would by an
    /// indexed field).
    fn find<T: for<'de> Deserialize<'de>>(
        &self,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<Vec<Versioned<T>>> {
        self.rows
            .values()
            .filter(|(v, _)| matches(v))
            .map(|(v, etag)| versioned(self.what, v.clone(), etag.clone()))
            .collect()
    }

    /// Fails with [`Error::EtagConflict`] unless `cond` holds for the record at `key`.
    fn check<Q: Ord + ?Sized>(&self, key: &Q, cond: &Cond) -> Result<()>
    where
        K: std::borrow::Borrow<Q>,
    {
        match (cond, self.rows.get(key)) {
            (Cond::Any, _) | (Cond::MustNotExist, None) => Ok(()),
            (Cond::Is(want), Some((_, have))) if want == have => Ok(()),
            _ => Err(Error::EtagConflict),
        }
    }

    /// Writes `value` at `key` under a new etag, which it answers; [`Table::check`] first.
    fn put(&mut self, key: K, value: serde_json::Value, cond: &Cond) -> Result<String> {
        self.check(&key, cond)?;
        Ok(self.insert(key, value))
    }

    fn insert(&mut self, key: K, value: serde_json::Value) -> String {
        let etag = Uuid::new_v4().simple().to_string();
        self.rows.insert(key, (value, etag.clone()));
        etag
    }
}

impl Default for MemoryInner {
    fn default() -> Self {
        MemoryInner {
            servers: Table::new("server"),
            reservations: Table::new("reservations"),
            boot_params: Table::new("boot params"),
        }
    }
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemoryStore {
    async fn get_server(&self, uuid: Uuid) -> Result<Option<Versioned<ServerRecord>>> {
        self.lock().servers.get(&uuid)
    }

    async fn list_servers(&self) -> Result<Vec<Versioned<ServerRecord>>> {
        self.lock().servers.find(|_| true)
    }

    async fn put_server(&self, server: &ServerRecord, cond: Cond) -> Result<String> {
        let value = to_json("server", server)?;
        self.lock().servers.put(server.uuid, value, &cond)
    }

    async fn delete_server(&self, uuid: Uuid) -> Result<bool> {
        Ok(self.lock().servers.rows.remove(&uuid).is_some())
    }

    async fn list_reservations(&self) -> Result<Vec<Versioned<ReservationDoc>>> {
        self.lock().reservations.find(|_| true)
    }

    async fn put_reservations(&self, doc: &ReservationDoc, cond: Cond) -> Result<String> {
        let value = reservations_json(doc)?;
        self.lock().reservations.put(doc.server_uuid, value, &cond)
    }

    async fn delete_reservations(&self, server: Uuid) -> Result<()> {
        self.lock().reservations.rows.remove(&server);
        Ok(())
    }

    async fn get_reservations(&self, server: Uuid) -> Result<Option<Versioned<ReservationDoc>>> {
        self.lock().reservations.get(&server)
    }

    async fn put_reservations_batch(&self, docs: &[(ReservationDoc, Cond)]) -> Result<Vec<String>> {
        let values = docs
            .iter()
            .map(|(d, _)| reservations_json(d))
            .collect::<Result<Vec<_>>>()?;
        let mut inner = self.lock();
        for (doc, cond) in docs {
            inner.reservations.check(&doc.server_uuid, cond)?;
        }
        Ok(docs
            .iter()
            .zip(values)
            .map(|((doc, _), value)| inner.reservations.insert(doc.server_uuid, value))
            .collect())
    }

    async fn find_reservations_of(&self, vm_uuid: &str) -> Result<Vec<Versioned<ReservationDoc>>> {
        self.lock().reservations.find(|v| {
            v.get("vm_uuids")
                .and_then(|u| u.as_array())
                .is_some_and(|u| u.iter().any(|u| u.as_str() == Some(vm_uuid)))
        })
    }

    async fn get_boot_params(&self, key: &str) -> Result<Option<Versioned<BootParamsRecord>>> {
        self.lock().boot_params.get(key)
    }

    async fn put_boot_params(
        &self,
        key: &str,
        record: &BootParamsRecord,
        cond: Cond,
    ) -> Result<String> {
        let value = to_json("boot params", record)?;
        self.lock().boot_params.put(key.to_string(), value, &cond)
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
