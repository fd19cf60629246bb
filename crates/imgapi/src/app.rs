//! IMGAPI's operations: manifests in Moray, files on disk, and the state machine
//! (unactivated -> active <-> disabled).

use futures::{Stream, StreamExt};
use moray_client::EtagCondition;
use moray_client::filter::Filter;
use moray_client::typed::{Change, RetryPolicy};
use tokio::sync::Mutex;
use triton_proto::imgapi::v1 as proto;

use crate::error::{Error, FieldError, Result};
use crate::files::{Files, Uploaded};
use crate::manifest::{self, COMPRESSIONS, ImageFile, Manifest, Origin, STATES, TYPES};
use crate::store::{self, Store, Stored};

/// List page bound (IMGAPI: `limit` at most 1000).
pub const MAX_LIMIT: u32 = 1000;

/// The IMGAPI application.
#[derive(Debug)]
pub struct Imgapi {
    store: Store,
    files: Files,
    max_file_bytes: u64,
    /// Serializes "write the manifest, then move the file" (and delete's reverse), so a
    /// file on disk always belongs to the manifest last written.
    finalize: Mutex<()>,
}

fn not_found(uuid: &str) -> Error {
    Error::NotFound {
        kind: "image",
        id: uuid.to_string(),
    }
}

impl Imgapi {
    pub fn new(store: Store, files: Files, max_file_bytes: u64) -> Self {
        Imgapi {
            store,
            files,
            max_file_bytes,
            finalize: Mutex::new(()),
        }
    }

    pub fn files(&self) -> &Files {
        &self.files
    }

    pub async fn ping(&self) -> Result<()> {
        self.store.ping().await?;
        self.files.check_writable().await
    }

    async fn stored(&self, uuid: &str) -> Result<Stored> {
        let u = manifest::uuid("uuid", uuid).map_err(|e| Error::Validation(vec![e]))?;
        self.store.get(&u).await?.ok_or_else(|| not_found(&u))
    }

    pub async fn get_image(&self, uuid: &str) -> Result<Manifest> {
        Ok(self.stored(uuid).await?.value)
    }

    /// The image, if `account` may see it (else `ResourceNotFound`, as IMGAPI answers).
    pub async fn get_image_for(&self, uuid: &str, account: &str) -> Result<Manifest> {
        let account = manifest::uuid("account", account).map_err(|e| Error::Validation(vec![e]))?;
        let m = self.get_image(uuid).await?;
        if m.visible_to(&account) {
            Ok(m)
        } else {
            Err(not_found(&m.uuid))
        }
    }

    async fn check_origin(&self, m: &Manifest) -> Result<()> {
        if let Some(origin) = &m.origin
            && self.store.get(origin).await?.is_none()
        {
            return Err(Error::OriginDoesNotExist(origin.clone()));
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(name = %image.name, version = %image.version))]
    pub async fn create_image(&self, image: proto::Image) -> Result<Manifest> {
        let m = manifest::validate(&image, Origin::Create, self.max_file_bytes)
            .map_err(Error::Validation)?;
        self.check_origin(&m).await?;
        match self.store.put(&m, EtagCondition::MustNotExist).await {
            Ok(_) => Ok(m),
            Err(e) if store::is_conflict(&e) => Err(Error::UuidExists(m.uuid)),
            Err(e) => Err(Error::moray("putObject imgapi_images")(e)),
        }
    }

    /// Receives a file of at most the configured size from `chunks`.
    async fn receive<S>(&self, mut chunks: S) -> Result<Uploaded>
    where
        S: Stream<Item = Result<Vec<u8>>> + Unpin,
    {
        let mut upload = self.files.begin(self.max_file_bytes).await?;
        while let Some(chunk) = chunks.next().await {
            upload.write(&chunk?).await?;
        }
        upload.finish().await
    }

    #[tracing::instrument(skip_all, fields(uuid = header.manifest.as_ref().map(|m| m.uuid.as_str()).unwrap_or("")))]
    pub async fn import_image<S>(
        &self,
        header: proto::ImportImageHeader,
        chunks: S,
    ) -> Result<Manifest>
    where
        S: Stream<Item = Result<Vec<u8>>> + Unpin,
    {
        let image = header
            .manifest
            .ok_or_else(|| Error::Validation(vec![FieldError::missing("manifest")]))?;
        let mut m = manifest::validate(&image, Origin::Import, self.max_file_bytes)
            .map_err(Error::Validation)?;
        if self.store.get(&m.uuid).await?.is_some() {
            return Err(Error::UuidExists(m.uuid));
        }
        self.check_origin(&m).await?;
        let uploaded = self.receive(chunks).await?;
        let expected = m.files.first().cloned().unwrap_or_default();
        check_file(&uploaded, Some(&expected.sha1), Some(expected.size))?;
        if header.activate {
            m.activated = true;
            if m.published_at.is_none() {
                m.published_at = Some(triton_common::time::now_rfc3339());
            }
        }
        m.refresh();
        let _guard = self.finalize.lock().await;
        match self.store.put(&m, EtagCondition::MustNotExist).await {
            Ok(_) => {}
            Err(e) if store::is_conflict(&e) => return Err(Error::UuidExists(m.uuid)),
            Err(e) => return Err(Error::moray("putObject imgapi_images")(e)),
        }
        if let Err(e) = uploaded.temp.persist(&self.files, &m.uuid).await {
            // Leave no manifest that points at a file we do not have.
            if let Err(d) = self.store.delete(&m.uuid, EtagCondition::Any).await {
                tracing::error!(uuid = %m.uuid, error = %d, "imported manifest left without its file");
            }
            return Err(e);
        }
        tracing::info!(uuid = %m.uuid, name = %m.name, version = %m.version, state = %m.state, "image imported");
        Ok(m)
    }

    #[tracing::instrument(skip_all, fields(uuid = %header.uuid))]
    pub async fn add_image_file<S>(
        &self,
        header: proto::AddImageFileHeader,
        chunks: S,
    ) -> Result<Manifest>
    where
        S: Stream<Item = Result<Vec<u8>>> + Unpin,
    {
        let mut errors = Vec::new();
        let uuid = manifest::uuid("uuid", &header.uuid)
            .map_err(|e| errors.push(e))
            .unwrap_or_default();
        let compression = manifest::one_of("compression", &header.compression, COMPRESSIONS)
            .map_err(|e| errors.push(e))
            .unwrap_or_default();
        let sha1 = match &header.sha1 {
            Some(s) => manifest::sha1("sha1", s).map_err(|e| errors.push(e)).ok(),
            None => None,
        };
        if let Some(size) = header.size
            && (size == 0 || size > self.max_file_bytes)
        {
            errors.push(FieldError::invalid(
                "size",
                format!("must be between 1 and {} bytes", self.max_file_bytes),
            ));
        }
        if !errors.is_empty() {
            return Err(Error::Validation(errors));
        }
        let before = self.stored(&uuid).await?.value;
        if before.activated {
            return Err(Error::FilesImmutable(uuid));
        }
        let uploaded = self.receive(chunks).await?;
        check_file(&uploaded, sha1.as_deref(), header.size)?;
        let file = ImageFile {
            sha1: uploaded.sha1.clone(),
            size: uploaded.size,
            compression,
            dataset_guid: header.dataset_guid.clone(),
        };
        let _guard = self.finalize.lock().await;
        let m = self
            .modify(&uuid, "file added", |m| {
                if m.activated {
                    return Err(Error::FilesImmutable(m.uuid.clone()));
                }
                m.files = vec![file.clone()];
                Ok(())
            })
            .await?;
        uploaded.temp.persist(&self.files, &uuid).await?;
        tracing::info!(%uuid, sha1 = %file.sha1, size = file.size, "image file added");
        Ok(m)
    }

    /// Reads, changes with `change` (which may refuse), and writes back the manifest,
    /// retrying on concurrent writes.
    async fn modify(
        &self,
        uuid: &str,
        what: &str,
        change: impl Fn(&mut Manifest) -> Result<()>,
    ) -> Result<Manifest> {
        let u = manifest::uuid("uuid", uuid).map_err(|e| Error::Validation(vec![e]))?;
        let updated = self
            .store
            .images()
            .update(&u, |m| {
                change(m)?;
                m.refresh();
                Ok(Change::Write)
            })
            .await;
        let m = updated
            .map_err(|e| {
                e.resolve(
                    || not_found(&u),
                    || Error::Contention {
                        what: format!("{what} image {u}"),
                        attempts: RetryPolicy::DEFAULT.attempts,
                    },
                    Error::moray("putObject imgapi_images"),
                )
            })?
            .value;
        tracing::info!(uuid = %m.uuid, state = %m.state, "image {what}");
        Ok(m)
    }

    #[tracing::instrument(skip(self))]
    pub async fn activate_image(&self, uuid: &str) -> Result<Manifest> {
        self.modify(uuid, "activated", |m| {
            if m.activated {
                return Err(Error::AlreadyActivated(m.uuid.clone()));
            }
            if m.files.is_empty() {
                return Err(Error::NoActivationNoFile(m.uuid.clone()));
            }
            if matches!(m.state.as_str(), "creating" | "failed") {
                return Err(Error::NotActivated {
                    uuid: m.uuid.clone(),
                    state: m.state.clone(),
                    action: "activated after its creation finished",
                });
            }
            m.activated = true;
            if m.published_at.is_none() {
                m.published_at = Some(triton_common::time::now_rfc3339());
            }
            Ok(())
        })
        .await
    }

    pub async fn disable_image(&self, uuid: &str) -> Result<Manifest> {
        self.set_disabled(uuid, true).await
    }

    pub async fn enable_image(&self, uuid: &str) -> Result<Manifest> {
        self.set_disabled(uuid, false).await
    }

    async fn set_disabled(&self, uuid: &str, disabled: bool) -> Result<Manifest> {
        let (what, action) = if disabled {
            ("disabled", "disabled")
        } else {
            ("enabled", "enabled")
        };
        self.modify(uuid, what, |m| {
            if !m.activated {
                return Err(Error::NotActivated {
                    uuid: m.uuid.clone(),
                    state: m.computed_state().to_string(),
                    action,
                });
            }
            m.disabled = disabled;
            Ok(())
        })
        .await
    }

    pub async fn list_images(&self, req: proto::ListImagesRequest) -> Result<Vec<Manifest>> {
        let mut errors = Vec::new();
        let mut terms = Vec::new();
        if let Some(owner) = &req.owner {
            match manifest::uuid("owner", owner) {
                Ok(o) => terms.push(Filter::eq("owner", o)),
                Err(e) => errors.push(e),
            }
        }
        for (field, value) in [("name", &req.name), ("version", &req.version)] {
            if let Some(v) = value {
                match v.strip_prefix('~') {
                    Some(sub) => terms.push(Filter::contains(field, sub)),
                    None => terms.push(Filter::eq(field, v)),
                }
            }
        }
        if let Some(os) = &req.os {
            match manifest::one_of("os", os, manifest::OSES) {
                Ok(os) => terms.push(Filter::eq("os", os)),
                Err(e) => errors.push(e),
            }
        }
        if let Some(t) = &req.r#type {
            let (negate, name) = match t.strip_prefix('!') {
                Some(n) => (true, n),
                None => (false, t.as_str()),
            };
            match manifest::one_of("type", name, TYPES) {
                Ok(n) if negate => terms.push(Filter::negate(Filter::eq("type", n))),
                Ok(n) => terms.push(Filter::eq("type", n)),
                Err(e) => errors.push(e),
            }
        }
        if let Some(p) = req.public {
            terms.push(Filter::eq("public", p));
        }
        match req.state.as_deref() {
            None => terms.push(Filter::eq("state", "active")),
            Some("all") => {}
            Some(s) => match manifest::one_of("state", s, STATES) {
                Ok(s) => terms.push(Filter::eq("state", s)),
                Err(_) => errors.push(FieldError::invalid(
                    "state",
                    format!("{s:?} must be one of all, {}", STATES.join(", ")),
                )),
            },
        }
        let mut tags: Vec<_> = req.tags.iter().collect();
        tags.sort();
        for (k, v) in tags {
            terms.push(Filter::eq("tags_search", format!("{k}={v}")));
        }
        if let Some(account) = &req.account {
            match manifest::uuid("account", account) {
                Ok(a) => terms.push(Filter::or([
                    Filter::eq("owner", &a),
                    Filter::and([
                        Filter::eq("activated", true),
                        Filter::or([Filter::eq("public", true), Filter::eq("acl", &a)]),
                    ]),
                ])),
                Err(e) => errors.push(e),
            }
        }
        if let Some(marker) = &req.marker {
            match manifest::uuid("marker", marker) {
                Ok(m) => terms.push(Filter::gt("uuid", m)),
                Err(e) => errors.push(e),
            }
        }
        let limit = match req.limit {
            None => MAX_LIMIT,
            Some(l) if (1..=MAX_LIMIT).contains(&l) => l,
            Some(_) => {
                errors.push(FieldError::invalid(
                    "limit",
                    format!("must be between 1 and {MAX_LIMIT}"),
                ));
                MAX_LIMIT
            }
        };
        if !errors.is_empty() {
            return Err(Error::Validation(errors));
        }
        let filter = Filter::and_else(terms, Filter::present("uuid"));
        self.store.find(&filter, limit).await
    }

    /// The manifest and an open handle on its file.
    pub async fn open_file(&self, uuid: &str) -> Result<(Manifest, tokio::fs::File)> {
        let m = self.get_image(uuid).await?;
        if m.files.is_empty() {
            return Err(Error::NotFound {
                kind: "file of image",
                id: m.uuid,
            });
        }
        let path = self.files.path(&m.uuid);
        match tokio::fs::File::open(&path).await {
            Ok(f) => Ok((m, f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound {
                kind: "file of image",
                id: m.uuid,
            }),
            Err(e) => Err(Error::io(format!("cannot open {}", path.display()))(e)),
        }
    }

    /// Deletes the manifest, then the file. Refused while another image names this
    /// one as its origin.
    #[tracing::instrument(skip(self))]
    pub async fn delete_image(&self, uuid: &str) -> Result<()> {
        let stored = self.stored(uuid).await?;
        let uuid = stored.value.uuid.clone();
        let dependents = self.store.find(&Filter::eq("origin", &uuid), 1).await?;
        if let Some(d) = dependents.first() {
            return Err(Error::HasDependents {
                uuid,
                dependent: d.uuid.clone(),
            });
        }
        let _guard = self.finalize.lock().await;
        match self
            .store
            .delete(&uuid, EtagCondition::Is(stored.etag))
            .await
        {
            Ok(()) => {}
            Err(e) if e.name() == "ObjectNotFoundError" => return Err(not_found(&uuid)),
            Err(e) if store::is_conflict(&e) => {
                return Err(Error::Contention {
                    what: format!("delete image {uuid}"),
                    attempts: 1,
                });
            }
            Err(e) => return Err(Error::moray("deleteObject imgapi_images")(e)),
        }
        self.files.remove(&uuid).await?;
        tracing::info!(%uuid, "image deleted");
        Ok(())
    }
}

/// Checks an upload against what the client said it is.
fn check_file(uploaded: &Uploaded, sha1: Option<&str>, size: Option<u64>) -> Result<()> {
    if let Some(expected) = size
        && expected != uploaded.size
    {
        return Err(Error::SizeMismatch {
            expected,
            actual: uploaded.size,
        });
    }
    if let Some(expected) = sha1
        && expected != uploaded.sha1
    {
        return Err(Error::Checksum {
            expected: expected.to_string(),
            actual: uploaded.sha1.clone(),
        });
    }
    if uploaded.size == 0 {
        return Err(Error::invalid("size", "the file is empty"));
    }
    Ok(())
}
