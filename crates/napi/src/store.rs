//! NAPI's Moray buckets and typed access to them.

use moray_client::filter::Filter;
use moray_client::{
    BatchOp, BucketConfig, EtagCondition, FindOptions, IndexDef, MorayClient, MorayError, Sort,
    SortOrder,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result, StoreError};

pub const NIC_TAGS: &str = "napi_nic_tags";
pub const NETWORKS: &str = "napi_networks";
pub const NETWORK_POOLS: &str = "napi_network_pools";
pub const IPS: &str = "napi_ips";
pub const NICS: &str = "napi_nics";
pub const FABRICS: &str = "napi_fabrics";
pub const FABRIC_VLANS: &str = "napi_fabric_vlans";

/// Version of every NAPI bucket's schema; raise it with the indexes.
const BUCKET_VERSION: u32 = 1;

fn buckets() -> Vec<(&'static str, BucketConfig)> {
    let v = || BucketConfig::versioned(BUCKET_VERSION);
    vec![
        (
            NIC_TAGS,
            v().with_index("name", IndexDef::unique("string"))
                .with_index("uuid", IndexDef::unique("uuid")),
        ),
        (
            NETWORKS,
            v().with_index("uuid", IndexDef::unique("uuid"))
                .with_index("name", IndexDef::new("string"))
                .with_index("name_key", IndexDef::unique("string"))
                .with_index("nic_tag", IndexDef::new("string"))
                .with_index("vlan_id", IndexDef::new("number"))
                .with_index("fabric", IndexDef::new("boolean"))
                .with_index("fabric_owner", IndexDef::new("uuid"))
                .with_index("owner_uuids", IndexDef::new("[string]"))
                .with_index("subnet", IndexDef::new("subnet")),
        ),
        (
            NETWORK_POOLS,
            v().with_index("uuid", IndexDef::unique("uuid"))
                .with_index("name", IndexDef::unique("string"))
                .with_index("networks", IndexDef::new("[string]"))
                .with_index("nic_tag", IndexDef::new("string"))
                .with_index("owner_uuids", IndexDef::new("[string]")),
        ),
        (
            IPS,
            v().with_index("network_uuid", IndexDef::new("uuid"))
                .with_index("ip", IndexDef::new("ip"))
                .with_index("ip_num", IndexDef::new("number"))
                .with_index("belongs_to_uuid", IndexDef::new("uuid"))
                .with_index("reserved", IndexDef::new("boolean")),
        ),
        (
            NICS,
            v().with_index("mac", IndexDef::unique("mac"))
                .with_index("owner_uuid", IndexDef::new("uuid"))
                .with_index("belongs_to_uuid", IndexDef::new("uuid"))
                .with_index("belongs_to_type", IndexDef::new("string"))
                .with_index("network_uuid", IndexDef::new("uuid"))
                .with_index("ip", IndexDef::new("ip"))
                .with_index("cn_uuid", IndexDef::new("uuid"))
                .with_index("nic_tag", IndexDef::new("string"))
                .with_index("state", IndexDef::new("string"))
                .with_index("primary", IndexDef::new("boolean")),
        ),
        (
            FABRICS,
            v().with_index("owner_uuid", IndexDef::unique("uuid"))
                .with_index("vnet_id", IndexDef::unique("number")),
        ),
        (
            FABRIC_VLANS,
            v().with_index("owner_uuid", IndexDef::new("uuid"))
                .with_index("vlan_id", IndexDef::new("number"))
                .with_index("vnet_id", IndexDef::new("number")),
        ),
    ]
}

/// Typed Moray access. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    moray: MorayClient,
}

/// A record and the etag it was read at (moray-client's [`Versioned`]).
pub use moray_client::typed::Versioned as Stored;

impl Store {
    pub fn new(moray: MorayClient) -> Self {
        Store { moray }
    }

    /// Creates or updates every NAPI bucket, and the `portolan_*` buckets NAPI writes
    /// for Portolan (`portolan_client::buckets`).
    pub async fn ensure_buckets(&self) -> Result<()> {
        for (name, config) in buckets()
            .into_iter()
            .chain(portolan_client::buckets::bucket_configs())
        {
            self.moray
                .ensure_bucket(name, &config)
                .await
                .map_err(Error::moray(format!("putBucket {name}")))?;
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<()> {
        self.moray.ping(false).await.map_err(Error::moray("ping"))
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Stored<T>>> {
        let object = self
            .moray
            .get_object(bucket, key)
            .await
            .map_err(Error::moray(format!("getObject {bucket}/{key}")))?;
        object
            .map(|o| {
                Ok(Stored {
                    value: decode(bucket, key, o.value)?,
                    etag: o.etag,
                })
            })
            .transpose()
    }

    pub async fn find<T: DeserializeOwned>(
        &self,
        bucket: &str,
        filter: &str,
        options: &FindOptions,
    ) -> Result<Vec<Stored<T>>> {
        let objects = self
            .moray
            .find_objects(bucket, filter, options)
            .await
            .map_err(Error::moray(format!("findObjects {bucket} {filter}")))?;
        objects
            .into_iter()
            .map(|o| {
                Ok(Stored {
                    value: decode(bucket, &o.key, o.value)?,
                    etag: o.etag,
                })
            })
            .collect()
    }

    /// One object matching `filter`, if any (to show what still uses a thing).
    pub async fn any<T: DeserializeOwned>(
        &self,
        bucket: &str,
        filter: &Filter,
    ) -> Result<Option<T>> {
        let found = self
            .find::<T>(bucket, &filter.to_string(), &FindOptions::limit(1))
            .await?;
        Ok(found.into_iter().next().map(|s| s.value))
    }

    /// Refuses with `InUse` when a record of `bucket` has `field` = `value`: `holder`
    /// says which record holds it.
    pub async fn refuse_in_use<T: DeserializeOwned>(
        &self,
        bucket: &str,
        field: &str,
        value: &str,
        holder: impl FnOnce(T) -> String,
    ) -> Result<()> {
        match self.any::<T>(bucket, &Filter::eq(field, value)).await? {
            Some(record) => Err(Error::InUse(holder(record))),
            None => Ok(()),
        }
    }

    /// Every object matching `filter` (no row cap), sorted by `sort` ascending.
    pub async fn find_all<T: DeserializeOwned>(
        &self,
        bucket: &str,
        filter: &str,
        sort: &str,
    ) -> Result<Vec<Stored<T>>> {
        let options = FindOptions {
            no_limit: true,
            no_count: true,
            sort: vec![Sort {
                attribute: sort.to_string(),
                order: SortOrder::Asc,
            }],
            ..Default::default()
        };
        self.find(bucket, filter, &options).await
    }

    /// Writes `value`; the raw Moray error is returned so callers can tell conflicts
    /// apart.
    pub async fn put<T: Serialize>(
        &self,
        bucket: &str,
        key: &str,
        value: &T,
        etag: EtagCondition,
    ) -> Result<Result<String, MorayError>> {
        let value = encode(value)?;
        Ok(self.moray.put_object(bucket, key, &value, etag).await)
    }

    /// Writes `value` over the version read at `etag`: `false` when someone changed it
    /// since (read it again and retry), any other failure an error.
    pub async fn replace<T: Serialize>(
        &self,
        bucket: &str,
        key: &str,
        value: &T,
        etag: String,
    ) -> Result<bool> {
        match self
            .put(bucket, key, value, EtagCondition::Is(etag))
            .await?
        {
            Ok(_) => Ok(true),
            Err(e) if conflict(&e).is_some() => Ok(false),
            Err(e) => Err(Error::moray(format!("putObject {bucket}"))(e)),
        }
    }

    pub async fn delete(
        &self,
        bucket: &str,
        key: &str,
        etag: EtagCondition,
    ) -> Result<(), MorayError> {
        self.moray.delete_object(bucket, key, etag).await
    }

    pub async fn batch(&self, ops: &[BatchOp]) -> Result<(), MorayError> {
        self.moray.batch(ops).await.map(|_| ())
    }
}

/// A put of `value` for a batch.
pub fn put_op<T: Serialize>(
    bucket: &str,
    key: &str,
    value: &T,
    etag: EtagCondition,
) -> Result<BatchOp> {
    Ok(BatchOp::Put {
        bucket: bucket.to_string(),
        key: key.to_string(),
        value: encode(value)?,
        etag,
    })
}

pub fn delete_op(bucket: &str, key: &str, etag: EtagCondition) -> BatchOp {
    BatchOp::Delete {
        bucket: bucket.to_string(),
        key: key.to_string(),
        etag,
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Value> {
    serde_json::to_value(value)
        .map_err(|e| StoreError::corrupt("record to write", e.to_string()).into())
}

fn decode<T: DeserializeOwned>(bucket: &str, key: &str, value: Value) -> Result<T> {
    serde_json::from_value(value)
        .map_err(|e| StoreError::corrupt(format!("{bucket}/{key}"), e.to_string()).into())
}

/// What a failed conditional write ran into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// An etag condition failed on `bucket/key`.
    Etag { bucket: String, key: String },
    /// A unique index already holds the value.
    Unique { attribute: String },
}

/// Classifies a Moray error from a conditional write; `None` for other failures.
pub fn conflict(e: &MorayError) -> Option<Conflict> {
    match e.name() {
        "EtagConflictError" | "ObjectExistsError" => {
            // Moray's message: "<bucket>/<key>: etag conflict: ...".
            let message = e.message();
            let target = message.split(": ").next().unwrap_or_default();
            let (bucket, key) = target.split_once('/').unwrap_or((target, ""));
            Some(Conflict::Etag {
                bucket: bucket.to_string(),
                key: key.to_string(),
            })
        }
        "UniqueAttributeError" => {
            // "<attribute> already has a value <value> (unique index)".
            let message = e.message();
            let attribute = message.split(' ').next().unwrap_or_default();
            Some(Conflict::Unique {
                attribute: attribute.to_string(),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(name: &str, message: &str) -> MorayError {
        MorayError::Server {
            name: name.into(),
            message: message.into(),
            code: tonic::Code::Aborted,
        }
    }

    #[test]
    fn conflicts_are_told_apart() {
        let e = server_error(
            "EtagConflictError",
            "napi_ips/1b2c/10.0.0.5: etag conflict: expected null, found ABC",
        );
        assert_eq!(
            conflict(&e),
            Some(Conflict::Etag {
                bucket: "napi_ips".into(),
                key: "1b2c/10.0.0.5".into()
            })
        );
        let e = server_error(
            "UniqueAttributeError",
            "vnet_id already has a value 5 (unique index)",
        );
        assert_eq!(
            conflict(&e),
            Some(Conflict::Unique {
                attribute: "vnet_id".into()
            })
        );
        assert_eq!(conflict(&server_error("BucketNotFoundError", "x")), None);
    }
}
