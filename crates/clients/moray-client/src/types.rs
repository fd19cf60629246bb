//! The client's types: buckets, objects and options as node-moray callers know them,
//! with `serde_json::Value` for object values. Serialized, [`Object`] is node-moray's
//! envelope (`bucket, key, value, _id, _etag, _mtime, _txn_snap, _count`), and
//! [`BucketConfig`] is the `{index, options}` that `putBucket` takes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use triton_proto::moray::v1 as proto;

use crate::error::{MorayError, Result};

/// One secondary index: its Moray type (`string`, `number`, `[string]`, ...) and whether
/// values must be unique in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDef {
    #[serde(rename = "type")]
    /// The index type: `string`, `number`, `boolean`, `ip`, `subnet`, or one of them in brackets for arrays.
    pub kind: String,
    #[serde(default)]
    /// Values must be unique in the bucket.
    pub unique: bool,
}

impl IndexDef {
    /// A non-unique index of `kind`.
    pub fn new(kind: impl Into<String>) -> Self {
        IndexDef {
            kind: kind.into(),
            unique: false,
        }
    }

    /// A unique index of `kind`.
    pub fn unique(kind: impl Into<String>) -> Self {
        IndexDef {
            kind: kind.into(),
            unique: true,
        }
    }
}

/// Bucket options: `version` 0 means unversioned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketOptions {
    #[serde(default)]
    /// The config's version: a write of a lower one is refused.
    pub version: u32,
    #[serde(
        default,
        rename = "guaranteeOrder",
        skip_serializing_if = "std::ops::Not::not"
    )]
    /// Moray's `guaranteeOrder`: sort by `_id` when no sort is asked for.
    pub guarantee_order: bool,
}

/// What createBucket, updateBucket and putBucket take.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketConfig {
    #[serde(default)]
    /// The secondary indexes, by field name.
    pub index: BTreeMap<String, IndexDef>,
    #[serde(default)]
    /// Its options.
    pub options: BucketOptions,
}

impl BucketConfig {
    /// A config at `version` (0: unversioned) with no indexes yet.
    pub fn versioned(version: u32) -> Self {
        BucketConfig {
            options: BucketOptions {
                version,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Adds an index.
    pub fn with_index(mut self, field: impl Into<String>, def: IndexDef) -> Self {
        self.index.insert(field.into(), def);
        self
    }

    pub(crate) fn to_proto(&self) -> proto::BucketConfig {
        proto::BucketConfig {
            index: self
                .index
                .iter()
                .map(|(k, v)| (k.clone(), index_to_proto(v)))
                .collect(),
            options: Some(proto::BucketOptions {
                version: self.options.version,
                guarantee_order: self.options.guarantee_order,
            }),
        }
    }
}

fn index_to_proto(def: &IndexDef) -> proto::IndexDefinition {
    proto::IndexDefinition {
        r#type: def.kind.clone(),
        unique: def.unique,
    }
}

/// A bucket as getBucket and listBuckets return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// The bucket's name.
    pub name: String,
    /// Its secondary indexes, by field name.
    pub index: BTreeMap<String, IndexDef>,
    /// Its options.
    pub options: BucketOptions,
    /// RFC 3339 time of the last change to the config.
    pub mtime: String,
    /// Fields still being reindexed, by bucket version (see `reindex_objects`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub reindex_active: BTreeMap<u32, Vec<String>>,
}

impl From<proto::Bucket> for Bucket {
    fn from(b: proto::Bucket) -> Self {
        let options = b.options.unwrap_or_default();
        Bucket {
            name: b.name,
            index: b
                .index
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        IndexDef {
                            kind: v.r#type,
                            unique: v.unique,
                        },
                    )
                })
                .collect(),
            options: BucketOptions {
                version: options.version,
                guarantee_order: options.guarantee_order,
            },
            mtime: b.mtime,
            reindex_active: b
                .reindex_active
                .into_iter()
                .map(|(v, f)| (v, f.fields))
                .collect(),
        }
    }
}

/// An object with Moray's envelope. Serializes as node-moray prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Object {
    /// The bucket it is in.
    pub bucket: String,
    /// Its key.
    pub key: String,
    /// The object itself.
    pub value: Value,
    #[serde(rename = "_id")]
    /// Moray's row id, increasing with each insert.
    pub id: i64,
    #[serde(rename = "_etag")]
    /// Its etag: changes with every write.
    pub etag: String,
    /// Epoch milliseconds of the last write.
    #[serde(rename = "_mtime")]
    pub mtime: i64,
    #[serde(rename = "_txn_snap")]
    /// The transaction snapshot of the last write, when Moray has it.
    pub txn_snap: Option<i64>,
    /// findObjects only: rows matching the filter, ignoring limit and offset.
    #[serde(rename = "_count")]
    pub count: Option<u64>,
}

impl TryFrom<proto::MorayObject> for Object {
    type Error = MorayError;

    fn try_from(o: proto::MorayObject) -> Result<Self> {
        let value = parse_json(&o.value, || {
            format!("value of object {:?} in bucket {:?}", o.key, o.bucket)
        })?;
        Ok(Object {
            bucket: o.bucket,
            key: o.key,
            value,
            id: o.id,
            etag: o.etag,
            mtime: o.mtime,
            txn_snap: o.txn_snap,
            count: o.count,
        })
    }
}

pub(crate) fn parse_json(text: &str, what: impl FnOnce() -> String) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| MorayError::invalid_response(what(), e))
}

/// The condition of a conditional put or delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EtagCondition {
    /// No check (node-moray: no `etag` option).
    #[default]
    Any,
    /// The object must not exist yet (node-moray: `etag: null`).
    MustNotExist,
    /// The stored object's etag must be this one.
    Is(String),
}

impl EtagCondition {
    pub(crate) fn to_proto(&self) -> Option<proto::EtagCondition> {
        match self {
            EtagCondition::Any => None,
            EtagCondition::MustNotExist => Some(proto::EtagCondition { etag: None }),
            EtagCondition::Is(etag) => Some(proto::EtagCondition {
                etag: Some(etag.clone()),
            }),
        }
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortOrder {
    #[default]
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

/// One ORDER BY term: an indexed field or `_id`, `_key`, `_mtime`, `_etag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sort {
    /// The field sorted by.
    pub attribute: String,
    /// Which way.
    pub order: SortOrder,
}

/// Options of findObjects, updateObjects and deleteMany. The default is Moray's:
/// at most 1000 rows, with `_count`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FindOptions {
    /// Row cap; `None` means Moray's 1000 unless `no_limit`.
    pub limit: Option<u64>,
    /// Rows skipped first.
    pub offset: u64,
    /// ORDER BY terms, in order.
    pub sort: Vec<Sort>,
    /// With no `limit`, return every row ("dangerous", says Moray).
    pub no_limit: bool,
    /// Skip the `_count` query.
    pub no_count: bool,
    /// Fail with `NotIndexedError` when the filter uses an unindexed or reindexing field.
    pub require_indexes: bool,
}

impl FindOptions {
    /// At most `limit` rows.
    pub fn limit(limit: u64) -> Self {
        FindOptions {
            limit: Some(limit),
            ..Default::default()
        }
    }

    /// One page of a listing API: `limit` rows (0: `max`) from `offset`, in `order` of
    /// `attribute`, with `_count` (how many match in all).
    pub fn listing(attribute: &str, order: SortOrder, limit: u32, max: u32, offset: u32) -> Self {
        FindOptions {
            limit: Some(u64::from(if limit == 0 { max } else { limit })),
            offset: u64::from(offset),
            sort: vec![Sort {
                attribute: attribute.to_string(),
                order,
            }],
            ..Default::default()
        }
    }

    /// At most `limit` rows in ascending `attribute` order, without `_count`: one page
    /// of a listing that continues from the last row's `attribute`.
    pub fn page(attribute: &str, limit: u64) -> Self {
        FindOptions {
            limit: Some(limit),
            no_count: true,
            sort: vec![Sort {
                attribute: attribute.to_string(),
                order: SortOrder::Asc,
            }],
            ..Default::default()
        }
    }

    pub(crate) fn to_proto(&self) -> proto::FindOptions {
        proto::FindOptions {
            limit: self.limit,
            offset: self.offset,
            sort: self
                .sort
                .iter()
                .map(|s| proto::Sort {
                    attribute: s.attribute.clone(),
                    order: match s.order {
                        SortOrder::Asc => "ASC",
                        SortOrder::Desc => "DESC",
                    }
                    .to_string(),
                })
                .collect(),
            no_limit: self.no_limit,
            no_count: self.no_count,
            require_indexes: self.require_indexes,
        }
    }
}

/// What updateObjects did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateResult {
    /// How many rows changed.
    pub count: u64,
    /// The etag every updated row now has.
    pub etag: String,
}

/// What one reindexObjects call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReindexResult {
    /// Rows reindexed by this call.
    pub processed: u64,
    /// Rows still to reindex (`None` when not counted).
    pub remaining: Option<u64>,
}

/// One operation of a batch; all run in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchOp {
    /// putObject.
    Put {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The object.
        value: Value,
        /// The etag condition.
        etag: EtagCondition,
    },
    /// delObject.
    Delete {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The etag condition.
        etag: EtagCondition,
    },
    /// updateObjects: set `fields` on the rows `filter` matches.
    Update {
        /// The bucket.
        bucket: String,
        /// The indexed fields to set.
        fields: Value,
        /// Which rows.
        filter: String,
        /// Limit, offset and sort.
        options: FindOptions,
    },
    /// deleteMany: delete the rows `filter` matches.
    DeleteMany {
        /// The bucket.
        bucket: String,
        /// Which rows.
        filter: String,
        /// Limit, offset and sort.
        options: FindOptions,
    },
}

impl BatchOp {
    pub(crate) fn to_proto(&self) -> proto::BatchOperation {
        use proto::batch_operation::Operation;
        let operation = match self {
            BatchOp::Put {
                bucket,
                key,
                value,
                etag,
            } => Operation::Put(proto::BatchPut {
                bucket: bucket.clone(),
                key: key.clone(),
                value: value.to_string(),
                etag: etag.to_proto(),
            }),
            BatchOp::Delete { bucket, key, etag } => Operation::Delete(proto::BatchDelete {
                bucket: bucket.clone(),
                key: key.clone(),
                etag: etag.to_proto(),
            }),
            BatchOp::Update {
                bucket,
                fields,
                filter,
                options,
            } => Operation::Update(proto::BatchUpdate {
                bucket: bucket.clone(),
                fields: fields.to_string(),
                filter: filter.clone(),
                find: Some(options.to_proto()),
            }),
            BatchOp::DeleteMany {
                bucket,
                filter,
                options,
            } => Operation::DeleteMany(proto::BatchDeleteMany {
                bucket: bucket.clone(),
                filter: filter.clone(),
                find: Some(options.to_proto()),
            }),
        };
        proto::BatchOperation {
            operation: Some(operation),
        }
    }
}

/// The result of one batch operation, in request order: the new etag of a put, the
/// count (and etag) of an update or deleteMany. Fields that do not apply are empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchResult {
    /// The bucket.
    pub bucket: String,
    /// The key (put and delete).
    pub key: String,
    /// The filter (update and deleteMany).
    pub filter: String,
    /// The new etag (put, update).
    pub etag: String,
    /// Rows changed (update, deleteMany).
    pub count: u64,
}

impl From<proto::BatchResult> for BatchResult {
    fn from(r: proto::BatchResult) -> Self {
        BatchResult {
            bucket: r.bucket,
            key: r.key,
            filter: r.filter,
            etag: r.etag,
            count: r.count,
        }
    }
}

/// Moray's protocol version (2) and the server's build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Version {
    /// The protocol version.
    pub version: u32,
    /// The server's name and build.
    pub server: String,
}

/// Kind of a change in a bucket's feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeOp {
    /// An object was written.
    Put,
    /// An object was deleted.
    Delete,
}

/// One entry of a bucket's change feed. Resume a feed after `seq`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeEvent {
    /// Its position in the feed.
    pub seq: u64,
    /// Put or delete.
    pub op: ChangeOp,
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// The object after a put; `None` after a delete.
    pub value: Option<Value>,
    /// The etag after a put.
    pub etag: String,
    /// Epoch milliseconds of the change.
    pub mtime: i64,
}

impl TryFrom<proto::ChangeEvent> for ChangeEvent {
    type Error = MorayError;

    fn try_from(e: proto::ChangeEvent) -> Result<Self> {
        let op = match proto::change_event::Op::try_from(e.op) {
            Ok(proto::change_event::Op::Put) => ChangeOp::Put,
            Ok(proto::change_event::Op::Delete) => ChangeOp::Delete,
            _ => {
                return Err(MorayError::InvalidResponse {
                    what: format!("change {} has unknown op {}", e.seq, e.op),
                    source: None,
                });
            }
        };
        let value = match op {
            ChangeOp::Put => Some(parse_json(&e.value, || {
                format!("value of change {} (key {:?})", e.seq, e.key)
            })?),
            ChangeOp::Delete => None,
        };
        Ok(ChangeEvent {
            seq: e.seq,
            op,
            bucket: e.bucket,
            key: e.key,
            value,
            etag: e.etag,
            mtime: e.mtime,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn object_serializes_as_node_moray_envelope() {
        let o = Object {
            bucket: "accounts".into(),
            key: "lisa".into(),
            value: json!({"uid": 800}),
            id: 1,
            etag: "77472568".into(),
            mtime: 1485539314987,
            txn_snap: None,
            count: None,
        };
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"bucket":"accounts","key":"lisa","value":{"uid":800},"_id":1,"_etag":"77472568","_mtime":1485539314987,"_txn_snap":null,"_count":null}"#
        );
    }

    #[test]
    fn bucket_config_reads_node_moray_json() {
        let cfg: BucketConfig = serde_json::from_value(json!({
            "index": {"login": {"type": "string", "unique": true}, "age": {"type": "number"}},
            "options": {"version": 2}
        }))
        .unwrap();
        assert_eq!(
            cfg,
            BucketConfig::versioned(2)
                .with_index("login", IndexDef::unique("string"))
                .with_index("age", IndexDef::new("number"))
        );
    }

    #[test]
    fn etag_conditions_map_to_the_wire() {
        assert_eq!(EtagCondition::Any.to_proto(), None);
        assert_eq!(
            EtagCondition::MustNotExist.to_proto(),
            Some(proto::EtagCondition { etag: None })
        );
        assert_eq!(
            EtagCondition::Is("ABC".into()).to_proto(),
            Some(proto::EtagCondition {
                etag: Some("ABC".into())
            })
        );
    }

    #[test]
    fn bad_object_json_is_an_invalid_response() {
        let err = Object::try_from(proto::MorayObject {
            bucket: "b".into(),
            key: "k".into(),
            value: "{not json".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.name(), "InvalidResponseError");
    }
}
