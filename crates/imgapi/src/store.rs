//! The `imgapi_images` bucket.

use moray_client::filter::Filter;
use moray_client::typed::Bucket;
pub use moray_client::typed::Versioned;
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

/// A manifest with the etag it was read at.
pub type Stored = Versioned<Manifest>;

#[derive(Debug, Clone)]
pub struct Store {
    images: Bucket<Manifest>,
}

impl Store {
    pub fn new(moray: MorayClient) -> Self {
        Store {
            images: Bucket::new(moray, IMAGES, bucket()),
        }
    }

    /// The typed bucket, for read-modify-writes.
    pub fn images(&self) -> &Bucket<Manifest> {
        &self.images
    }

    pub async fn ensure_bucket(&self) -> Result<()> {
        self.images
            .ensure()
            .await
            .map_err(Error::moray(format!("putBucket {IMAGES}")))
    }

    pub async fn ping(&self) -> Result<()> {
        self.images
            .client()
            .ping(false)
            .await
            .map_err(Error::moray("ping"))
    }

    pub async fn get(&self, uuid: &str) -> Result<Option<Stored>> {
        self.images
            .get(uuid)
            .await
            .map_err(Error::moray(format!("getObject {IMAGES}/{uuid}")))
    }

    pub async fn find(&self, filter: &Filter, limit: u32) -> Result<Vec<Manifest>> {
        let options = FindOptions {
            limit: Some(u64::from(limit)),
            no_count: true,
            sort: vec![Sort {
                attribute: "uuid".into(),
                order: SortOrder::Asc,
            }],
            ..Default::default()
        };
        self.images
            .find_values(filter, &options)
            .await
            .map_err(Error::moray(format!("findObjects {IMAGES} {filter}")))
    }

    /// Writes `manifest` if `etag` holds; the raw Moray error tells conflicts apart.
    pub async fn put(
        &self,
        manifest: &Manifest,
        etag: EtagCondition,
    ) -> Result<String, MorayError> {
        self.images.put(&manifest.uuid, manifest, etag).await
    }

    pub async fn delete(&self, uuid: &str, etag: EtagCondition) -> Result<(), MorayError> {
        self.images.delete(uuid, etag).await
    }
}

/// True for a failed etag condition or unique index.
pub fn is_conflict(e: &MorayError) -> bool {
    matches!(
        e.name(),
        "EtagConflictError" | "UniqueAttributeError" | "ObjectExistsError"
    )
}
