//! The `imgapi_images` bucket.

use moray_client::{
    BucketConfig, EtagCondition, FindOptions, IndexDef, MorayClient, MorayError, Sort, SortOrder,
};

use crate::error::{Error, Result};
use crate::manifest::Manifest;

pub const IMAGES: &str = "imgapi_images";
const BUCKET_VERSION: u32 = 1;

fn bucket() -> BucketConfig {
    BucketConfig::versioned(BUCKET_VERSION)
        .with_index("uuid", IndexDef::unique("string"))
        .with_index("owner", IndexDef::new("uuid"))
        .with_index("name", IndexDef::new("string"))
        .with_index("version", IndexDef::new("string"))
        .with_index("state", IndexDef::new("string"))
        .with_index("type", IndexDef::new("string"))
        .with_index("os", IndexDef::new("string"))
        .with_index("public", IndexDef::new("boolean"))
        .with_index("disabled", IndexDef::new("boolean"))
        .with_index("activated", IndexDef::new("boolean"))
        .with_index("origin", IndexDef::new("uuid"))
        .with_index("published_at", IndexDef::new("date"))
        .with_index("tags_search", IndexDef::new("[string]"))
        .with_index("acl", IndexDef::new("[string]"))
}

#[derive(Debug, Clone)]
pub struct Store {
    moray: MorayClient,
}

#[derive(Debug, Clone)]
pub struct Stored {
    pub manifest: Manifest,
    pub etag: String,
}

impl Store {
    pub fn new(moray: MorayClient) -> Self {
        Store { moray }
    }

    pub async fn ensure_bucket(&self) -> Result<()> {
        self.moray
            .ensure_bucket(IMAGES, &bucket())
            .await
            .map_err(Error::moray(format!("putBucket {IMAGES}")))
    }

    pub async fn ping(&self) -> Result<()> {
        self.moray.ping(false).await.map_err(Error::moray("ping"))
    }

    pub async fn get(&self, uuid: &str) -> Result<Option<Stored>> {
        let object = self
            .moray
            .get_object(IMAGES, uuid)
            .await
            .map_err(Error::moray(format!("getObject {IMAGES}/{uuid}")))?;
        object
            .map(|o| {
                Ok(Stored {
                    manifest: decode(&o.key, o.value)?,
                    etag: o.etag,
                })
            })
            .transpose()
    }

    pub async fn find(&self, filter: &str, limit: u32) -> Result<Vec<Manifest>> {
        let options = FindOptions {
            limit: Some(u64::from(limit)),
            no_count: true,
            sort: vec![Sort {
                attribute: "uuid".into(),
                order: SortOrder::Asc,
            }],
            ..Default::default()
        };
        let objects = self
            .moray
            .find_objects(IMAGES, filter, &options)
            .await
            .map_err(Error::moray(format!("findObjects {IMAGES} {filter}")))?;
        objects
            .into_iter()
            .map(|o| decode(&o.key, o.value))
            .collect()
    }

    /// Writes `manifest` if `etag` holds; the raw Moray error tells conflicts apart.
    pub async fn put(
        &self,
        manifest: &Manifest,
        etag: EtagCondition,
    ) -> Result<Result<String, MorayError>> {
        let value = serde_json::to_value(manifest).map_err(|e| Error::Corrupt {
            what: format!("manifest {}", manifest.uuid),
            reason: e.to_string(),
        })?;
        Ok(self
            .moray
            .put_object(IMAGES, &manifest.uuid, &value, etag)
            .await)
    }

    pub async fn delete(&self, uuid: &str, etag: EtagCondition) -> Result<(), MorayError> {
        self.moray.delete_object(IMAGES, uuid, etag).await
    }
}

fn decode(key: &str, value: serde_json::Value) -> Result<Manifest> {
    serde_json::from_value(value).map_err(|e| Error::Corrupt {
        what: format!("{IMAGES}/{key}"),
        reason: e.to_string(),
    })
}

/// True for a failed etag condition or unique index.
pub fn is_conflict(e: &MorayError) -> bool {
    matches!(
        e.name(),
        "EtagConflictError" | "UniqueAttributeError" | "ObjectExistsError"
    )
}
