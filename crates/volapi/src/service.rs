//! VolAPI's logic: volumes, sizes, references and reservations (proto/volapi.proto is
//! the contract; docs/volapi.md the choices).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use moray_client::filter::Filter;
use moray_client::typed::Change;
use tonic::transport::Channel;
use triton_proto::imgapi::v1 as img;
use triton_proto::imgapi::v1::imgapi_client::ImgapiClient;
use triton_proto::napi::v1 as napi;
use triton_proto::napi::v1::napi_client::NapiClient;
use triton_proto::papi::v1 as papi;
use triton_proto::papi::v1::papi_client::PapiClient;
use triton_proto::ufds::v1 as ufds;
use triton_proto::ufds::v1::ufds_client::UfdsClient;
use triton_proto::vmapi::v1 as vm;
use triton_proto::vmapi::v1::vmapi_client::VmapiClient;
use triton_proto::volapi::v1 as pb;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::store::{ReservationRecord, Store, VolumeRecord, state};

/// The only volume type.
pub const TRITONNFS: &str = "tritonnfs";
/// PAPI packages whose names start with this give the sizes.
pub const SIZE_PACKAGE_PREFIX: &str = "sdc_volume_nfs";
/// The storage VM's role (`internal_metadata["sdc:system_role"]`).
pub const STORAGE_ROLE: &str = "nfsvolumestorage";
/// Where the storage VM exports the volume's data.
pub const EXPORT_PATH: &str = "/exports/data";
/// The storage VM's alias prefix.
pub const ALIAS_PREFIX: &str = "nfs-shared-volume-";
/// At most this long a volume name.
pub const MAX_NAME_LEN: usize = 256;

/// The other services VolAPI calls.
#[derive(Clone, Debug)]
pub struct Clients {
    pub vmapi: VmapiClient<Channel>,
    pub papi: PapiClient<Channel>,
    pub napi: NapiClient<Channel>,
    pub imgapi: ImgapiClient<Channel>,
    pub ufds: Option<UfdsClient<Channel>>,
}

/// An upstream service's answer: `None` when it does not know the object (NotFound);
/// any other failure is an upstream error of `service`.
pub(crate) fn found<T>(
    service: &'static str,
    answer: std::result::Result<tonic::Response<T>, tonic::Status>,
) -> Result<Option<T>> {
    triton_common::status::found(answer).map_err(Error::upstream(service))
}

#[derive(Clone)]
pub struct VolApi {
    pub store: Store,
    pub clients: Clients,
    image_name: String,
    /// One lock per owner: creates, renames and deletes of one owner's volumes run one
    /// at a time, so two racing creates of one name cannot both win (Triton takes a
    /// CNAPI waitlist ticket; one VolAPI process serves a datacenter here).
    owner_locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl std::fmt::Debug for VolApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolApi").finish_non_exhaustive()
    }
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`, at most 256 characters.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b.len() <= MAX_NAME_LEN
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn check_uuid(errors: &mut Vec<String>, field: &str, value: &str, required: bool) {
    if value.is_empty() {
        if required {
            errors.push(format!("{field}: is required"));
        }
    } else if !triton_types::is_uuid(value) {
        errors.push(format!("{field}: must be a UUID (got {value:?})"));
    }
}

fn check_name(errors: &mut Vec<String>, name: &str) {
    if !valid_name(name) {
        errors.push(format!(
            "name: must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]+$ and be at most {MAX_NAME_LEN} characters (got {name:?})"
        ));
    }
}

fn check_type(errors: &mut Vec<String>, kind: &str) {
    if !kind.is_empty() && kind != TRITONNFS {
        errors.push(format!("type: must be {TRITONNFS} (got {kind:?})"));
    }
}

fn done(errors: Vec<String>) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Validation(errors))
    }
}

/// Triton's affinity strings (`instance==web0`, `role!=~db`, `container==...`) as VMAPI
/// rules; `~` makes a rule soft.
pub fn parse_affinity(rule: &str) -> Result<vm::AffinityRule> {
    for op in ["==~", "!=~", "==", "!="] {
        if let Some((key, value)) = rule.split_once(op) {
            let key = key.trim();
            let value = value.trim();
            if key.is_empty() || value.is_empty() {
                break;
            }
            let key = if key == "container" { "instance" } else { key };
            return Ok(vm::AffinityRule {
                key: key.into(),
                operator: op[..2].into(),
                value: value.into(),
                is_soft: op.ends_with('~'),
            });
        }
    }
    Err(Error::invalid(
        "affinity",
        format!("{rule:?} is not KEY==VALUE, KEY!=VALUE, KEY==~VALUE or KEY!=~VALUE"),
    ))
}

/// A `name` filter: exact, or `*` at the start and/or end.
fn name_filter(pattern: &str) -> Result<Filter> {
    let inner = pattern.trim_start_matches('*').trim_end_matches('*');
    if inner.contains('*') {
        return Err(Error::invalid(
            "name",
            "`*` may only be at the start or the end",
        ));
    }
    Ok(if pattern.contains('*') {
        Filter::glob("name", pattern)
    } else {
        Filter::eq("name", pattern)
    })
}

pub fn to_proto(v: &VolumeRecord) -> pb::Volume {
    pb::Volume {
        uuid: v.uuid.clone(),
        owner_uuid: v.owner_uuid.clone(),
        name: v.name.clone(),
        r#type: v.kind.clone(),
        size: v.size,
        state: v.state.clone(),
        networks: v.networks.clone(),
        filesystem_path: v.filesystem_path.clone(),
        vm_uuid: v.vm_uuid.clone(),
        refs: v.refs.clone(),
        labels: v.labels_map().into_iter().collect(),
        create_timestamp: triton_common::time::rfc3339_millis(v.create_timestamp),
        error: v.error.clone(),
    }
}

pub fn reservation_to_proto(r: &ReservationRecord) -> pb::VolumeReservation {
    pb::VolumeReservation {
        uuid: r.uuid.clone(),
        volume_name: r.volume_name.clone(),
        job_uuid: r.job_uuid.clone(),
        owner_uuid: r.owner_uuid.clone(),
        vm_uuid: r.vm_uuid.clone(),
        create_timestamp: triton_common::time::rfc3339_millis(r.create_timestamp),
    }
}

/// Whether a VMAPI VM counts as active (neither failed nor destroyed).
pub fn vm_active(v: &vm::Vm) -> bool {
    v.destroyed.is_empty() && !matches!(v.state.as_str(), "failed" | "destroyed")
}

impl VolApi {
    pub fn new(store: Store, clients: Clients, image_name: String) -> VolApi {
        VolApi {
            store,
            clients,
            image_name,
            owner_locks: Arc::default(),
        }
    }

    /// The owner's lock (see `owner_locks`).
    pub async fn lock_owner(&self, owner: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.owner_locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(owner.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Active `sdc_volume_nfs*` packages: (size in MiB, package uuid), ascending by size
    /// (the first package of each size).
    pub async fn sizes(&self) -> Result<Vec<(u64, String)>> {
        let list = self
            .clients
            .papi
            .clone()
            .list_packages(papi::ListPackagesRequest {
                name: format!("{SIZE_PACKAGE_PREFIX}*"),
                active: Some(true),
                ..Default::default()
            })
            .await
            .map_err(Error::upstream("papi"))?
            .into_inner();
        let mut sizes: Vec<(u64, String)> = list
            .packages
            .into_iter()
            .filter(|p| p.active && p.name.starts_with(SIZE_PACKAGE_PREFIX) && p.quota > 0)
            .map(|p| (p.quota, p.uuid))
            .collect();
        sizes.sort();
        sizes.dedup_by_key(|s| s.0);
        Ok(sizes)
    }

    /// The networks of a create: as given (checked in NAPI), or the owner's default.
    async fn networks(&self, owner: &str, asked: &[String]) -> Result<Vec<String>> {
        let mut asked: Vec<String> = asked.iter().map(|n| n.to_ascii_lowercase()).collect();
        if asked.is_empty() {
            let Some(ufds) = &self.clients.ufds else {
                return Err(Error::invalid(
                    "networks",
                    "is required (this VolAPI has no ufds_url to find the owner's default network)",
                ));
            };
            let get = ufds::GetAccountRequest {
                account: owner.to_string(),
            };
            let Some(account) = found("ufds", ufds.clone().get_account(get).await)? else {
                return Err(Error::invalid("owner_uuid", format!("no account {owner}")));
            };
            if account.default_network.is_empty() {
                return Err(Error::invalid(
                    "networks",
                    "is required: the owner has no default network",
                ));
            }
            asked.push(account.default_network);
        }
        let mut seen = BTreeSet::new();
        asked.retain(|n| seen.insert(n.clone()));
        let (mut missing, mut non_owned, mut non_fabric) = (vec![], vec![], vec![]);
        for id in &asked {
            if !triton_types::is_uuid(id) {
                missing.push(id.clone());
                continue;
            }
            let r = self
                .clients
                .napi
                .clone()
                .get_network(napi::GetNetworkRequest { uuid: id.clone() })
                .await;
            match found("napi", r)? {
                Some(n) => {
                    if !n.fabric {
                        non_fabric.push(id.clone());
                    }
                    if !n.owner_uuids.iter().any(|o| o.eq_ignore_ascii_case(owner)) {
                        non_owned.push(id.clone());
                    }
                }
                None => missing.push(id.clone()),
            }
        }
        if missing.is_empty() && non_owned.is_empty() && non_fabric.is_empty() {
            return Ok(asked);
        }
        Err(Error::InvalidNetworks(format!(
            "invalid networks: missing: [{}], nonOwned: [{}], nonFabric: [{}]",
            missing.join(", "),
            non_owned.join(", "),
            non_fabric.join(", ")
        )))
    }

    /// The newest active image named `nfsserver`.
    async fn image(&self) -> Result<String> {
        let list = self
            .clients
            .imgapi
            .clone()
            .list_images(img::ListImagesRequest {
                name: Some(self.image_name.clone()),
                state: Some("active".into()),
                ..Default::default()
            })
            .await
            .map_err(Error::upstream("imgapi"))?
            .into_inner();
        list.images
            .into_iter()
            .filter(|i| i.name == self.image_name && i.state == "active")
            .max_by(|a, b| (&a.published_at, &a.version).cmp(&(&b.published_at, &b.version)))
            .map(|i| i.uuid)
            .ok_or_else(|| Error::NfsServerImageNotFound(self.image_name.clone()))
    }

    pub async fn create(&self, r: pb::CreateVolumeRequest) -> Result<VolumeRecord> {
        let mut errors = Vec::new();
        check_uuid(&mut errors, "owner_uuid", &r.owner_uuid, true);
        check_uuid(&mut errors, "uuid", &r.uuid, false);
        if !r.name.is_empty() {
            check_name(&mut errors, &r.name);
        }
        check_type(&mut errors, &r.r#type);
        for k in r.labels.keys() {
            if k.is_empty() {
                errors.push("labels: a label's key must not be empty".into());
            }
        }
        let affinity: Vec<vm::AffinityRule> = r
            .affinity
            .iter()
            .filter_map(|a| match parse_affinity(a) {
                Ok(rule) => Some(rule),
                Err(e) => {
                    errors.push(e.to_string());
                    None
                }
            })
            .collect();
        done(errors)?;
        let owner = r.owner_uuid.to_ascii_lowercase();
        let uuid = if r.uuid.is_empty() {
            Uuid::new_v4().to_string()
        } else {
            r.uuid.to_ascii_lowercase()
        };
        let name = if r.name.is_empty() {
            // As Triton: the volume's uuid and a random one, without dashes.
            format!("{}{}", uuid, Uuid::new_v4()).replace('-', "")
        } else {
            r.name.clone()
        };

        let sizes = self.sizes().await?;
        let (size, package) = match r.size {
            None => sizes.first().cloned().ok_or(Error::SizeNotAvailable {
                size: 0,
                sizes: "none".into(),
            })?,
            Some(want) => sizes
                .iter()
                .find(|(s, _)| *s == want)
                .cloned()
                .ok_or_else(|| Error::SizeNotAvailable {
                    size: want,
                    sizes: if sizes.is_empty() {
                        "none".into()
                    } else {
                        sizes
                            .iter()
                            .map(|(s, _)| s.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                })?,
        };
        let networks = self.networks(&owner, &r.networks).await?;
        let image_uuid = self.image().await?;

        let guard = self.lock_owner(&owner).await;
        if let Some(v) = self.store.live_by_name(&owner, &name).await? {
            return Err(Error::AlreadyExists(format!(
                "volume with name {name} already exists ({}, {})",
                v.uuid, v.state
            )));
        }
        if self.store.volume(&uuid).await?.is_some() {
            return Err(Error::AlreadyExists(format!(
                "volume {uuid} already exists"
            )));
        }
        // VMs already holding a reservation for the name start as references.
        let reserved = self
            .store
            .find_reservations(&Filter::and([
                Filter::eq("owner_uuid", &owner),
                Filter::eq("volume_name", &name),
            ]))
            .await?;
        let mut refs: Vec<String> = reserved.into_iter().map(|r| r.vm_uuid).collect();
        refs.sort();
        refs.dedup();
        let labels: std::collections::BTreeMap<&String, &String> = r.labels.iter().collect();
        let mut record = VolumeRecord {
            uuid: uuid.clone(),
            owner_uuid: owner.clone(),
            name,
            kind: TRITONNFS.into(),
            size,
            state: state::CREATING.into(),
            networks: networks.clone(),
            filesystem_path: String::new(),
            vm_uuid: Uuid::new_v4().to_string(),
            refs,
            labels: serde_json::to_string(&labels).unwrap_or_else(|_| "{}".into()),
            create_timestamp: triton_common::time::now_millis(),
            error: String::new(),
        };
        self.store.insert_volume(&record).await?;
        drop(guard);
        tracing::info!(volume = %uuid, vm = %record.vm_uuid, "volume creating");

        let request = vm::CreateVmRequest {
            uuid: record.vm_uuid.clone(),
            owner_uuid: owner.clone(),
            alias: format!("{ALIAS_PREFIX}{uuid}"),
            image_uuid,
            billing_id: package,
            networks: networks
                .iter()
                .map(|n| vm::NetworkSpec {
                    ipv4_uuid: n.clone(),
                    ..Default::default()
                })
                .collect(),
            tags: r
                .labels
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        prost_types::Value {
                            kind: Some(prost_types::value::Kind::StringValue(v.clone())),
                        },
                    )
                })
                .collect(),
            customer_metadata: [("export-volumes".to_string(), "[\"data\"]".to_string())].into(),
            internal_metadata: [("sdc:system_role".to_string(), STORAGE_ROLE.to_string())].into(),
            affinity,
            ..Default::default()
        };
        if let Err(s) = self.clients.vmapi.clone().create_vm(request).await {
            let why = format!("storage VM not created: {}", s.message());
            tracing::warn!(volume = %uuid, error = %why, "volume failed");
            let reason = why.clone();
            if let Some(v) = self
                .store
                .change_volume(&uuid, |slot| {
                    if let Some(v) = slot.as_mut() {
                        v.state = state::FAILED.into();
                        v.error = reason.clone();
                    }
                    Ok(Change::Write)
                })
                .await?
            {
                record = v;
            }
        }
        Ok(record)
    }

    /// A volume, of `owner` when given.
    pub async fn get(&self, uuid: &str, owner: &str) -> Result<VolumeRecord> {
        let mut errors = Vec::new();
        check_uuid(&mut errors, "uuid", uuid, true);
        check_uuid(&mut errors, "owner_uuid", owner, false);
        done(errors)?;
        match self.store.volume(&uuid.to_ascii_lowercase()).await? {
            Some(v) if owner.is_empty() || v.value.owner_uuid.eq_ignore_ascii_case(owner) => {
                Ok(v.value)
            }
            _ => Err(Error::VolumeNotFound(uuid.to_string())),
        }
    }

    pub async fn list(&self, r: &pb::ListVolumesRequest) -> Result<Vec<VolumeRecord>> {
        let mut errors = Vec::new();
        check_uuid(&mut errors, "owner_uuid", &r.owner_uuid, false);
        check_uuid(&mut errors, "vm_uuid", &r.vm_uuid, false);
        check_uuid(&mut errors, "ref", &r.r#ref, false);
        check_type(&mut errors, &r.r#type);
        if !r.state.is_empty() && !state::ALL.contains(&r.state.as_str()) {
            errors.push(format!(
                "state: must be one of {} (got {:?})",
                state::ALL.join(", "),
                r.state
            ));
        }
        done(errors)?;
        let mut parts = vec![Filter::present("uuid")];
        if !r.owner_uuid.is_empty() {
            parts.push(Filter::eq("owner_uuid", r.owner_uuid.to_ascii_lowercase()));
        }
        if !r.name.is_empty() {
            parts.push(name_filter(&r.name)?);
        }
        if !r.r#type.is_empty() {
            parts.push(Filter::eq("type", &r.r#type));
        }
        if let Some(size) = r.size {
            parts.push(Filter::eq("size", size));
        }
        if !r.state.is_empty() {
            parts.push(Filter::eq("state", &r.state));
        }
        if !r.vm_uuid.is_empty() {
            parts.push(Filter::eq("vm_uuid", r.vm_uuid.to_ascii_lowercase()));
        }
        if !r.r#ref.is_empty() {
            parts.push(Filter::eq("refs", r.r#ref.to_ascii_lowercase()));
        }
        self.store.find_volumes(&Filter::and(parts)).await
    }

    /// Rename: the only mutable field; refused while the volume has references.
    pub async fn update(&self, r: &pb::UpdateVolumeRequest) -> Result<VolumeRecord> {
        let mut errors = Vec::new();
        check_name(&mut errors, &r.name);
        done(errors)?;
        let current = self.get(&r.uuid, &r.owner_uuid).await?;
        let _guard = self.lock_owner(&current.owner_uuid).await;
        if current.name == r.name {
            return Ok(current);
        }
        if let Some(other) = self
            .store
            .live_by_name(&current.owner_uuid, &r.name)
            .await?
        {
            return Err(Error::AlreadyExists(format!(
                "volume with name {} already exists ({})",
                r.name, other.uuid
            )));
        }
        let name = r.name.clone();
        let updated = self
            .store
            .change_volume(&current.uuid, |slot| {
                let Some(v) = slot.as_mut() else {
                    return Ok(Change::Keep);
                };
                if !v.refs.is_empty() {
                    return Err(Error::InUse(format!(
                        "volume {} cannot be renamed while VMs refer to it: {}",
                        v.uuid,
                        v.refs.join(", ")
                    )));
                }
                v.name = name.clone();
                Ok(Change::Write)
            })
            .await?;
        updated.ok_or_else(|| Error::VolumeNotFound(r.uuid.clone()))
    }

    /// The VMs among `uuids` that are active in VMAPI (in batches of 10, as Triton).
    pub async fn active_vms(&self, uuids: &[String]) -> Result<Vec<String>> {
        let mut active = Vec::new();
        for batch in uuids.chunks(10) {
            let list = self
                .clients
                .vmapi
                .clone()
                .list_vms(vm::ListVmsRequest {
                    uuids: batch.to_vec(),
                    state: "active".into(),
                    ..Default::default()
                })
                .await
                .map_err(Error::upstream("vmapi"))?
                .into_inner();
            active.extend(list.vms.into_iter().map(|v| v.uuid));
        }
        active.sort();
        Ok(active)
    }

    pub async fn delete(&self, r: &pb::DeleteVolumeRequest) -> Result<()> {
        let current = self.get(&r.uuid, &r.owner_uuid).await?;
        let _guard = self.lock_owner(&current.owner_uuid).await;
        let current = self.get(&current.uuid, "").await?;
        if !r.force {
            let mut users = self.active_vms(&current.refs).await?;
            let reserved = self
                .store
                .find_reservations(&Filter::and([
                    Filter::eq("owner_uuid", &current.owner_uuid),
                    Filter::eq("volume_name", &current.name),
                ]))
                .await?;
            users.extend(reserved.into_iter().map(|r| r.vm_uuid));
            users.sort();
            users.dedup();
            if !users.is_empty() {
                return Err(Error::InUse(format!(
                    "volume {} is in use by VMs: {}",
                    current.uuid,
                    users.join(", ")
                )));
            }
        }
        let storage_vm = self
            .clients
            .vmapi
            .clone()
            .get_vm(vm::GetVmRequest {
                uuid: current.vm_uuid.clone(),
                owner_uuid: String::new(),
            })
            .await;
        if !found("vmapi", storage_vm)?.is_some_and(|v| vm_active(&v)) {
            // No storage VM (never made, or destroyed): the volume goes at once.
            let uuid = current.uuid.clone();
            self.store
                .volumes
                .remove(&uuid)
                .await
                .map_err(Error::moray("delObject volapi_volumes"))?;
            tracing::info!(volume = %uuid, "volume deleted (no storage VM)");
            return Ok(());
        }
        self.store
            .change_volume(&current.uuid, |slot| {
                if let Some(v) = slot.as_mut() {
                    v.state = state::DELETING.into();
                }
                Ok(Change::Write)
            })
            .await?;
        // Gone meanwhile (false): the updater sees it destroyed.
        self.delete_storage_vm(&current.vm_uuid).await?;
        tracing::info!(volume = %current.uuid, vm = %current.vm_uuid, "volume deleting");
        Ok(())
    }

    /// Adds `vm` to the volume's refs and drops its reservations for the volume.
    pub async fn add_reference(&self, uuid: &str, owner: &str, vm_uuid: &str) -> Result<()> {
        let (v, vm_uuid) = self.referenced(uuid, owner, vm_uuid).await?;
        self.set_ref(&v.uuid, &vm_uuid, true).await?;
        self.drop_reservations(&v.owner_uuid, &v.name, &vm_uuid)
            .await
    }

    /// `vm_uuid` in (`present`) or out of the volume's refs.
    pub async fn set_ref(&self, volume: &str, vm_uuid: &str, present: bool) -> Result<()> {
        self.store
            .change_volume(volume, |slot| match slot.as_mut() {
                Some(v) if v.refs.iter().any(|r| r == vm_uuid) != present => {
                    if present {
                        v.refs.push(vm_uuid.to_string());
                        v.refs.sort();
                    } else {
                        v.refs.retain(|r| r != vm_uuid);
                    }
                    Ok(Change::Write)
                }
                _ => Ok(Change::Keep),
            })
            .await?;
        Ok(())
    }

    pub async fn remove_reference(&self, uuid: &str, owner: &str, vm_uuid: &str) -> Result<()> {
        let (v, vm_uuid) = self.referenced(uuid, owner, vm_uuid).await?;
        self.set_ref(&v.uuid, &vm_uuid, false).await
    }

    /// What a reference change acts on: the owner's volume `uuid` and `vm_uuid`
    /// (checked, lower-case).
    async fn referenced(
        &self,
        uuid: &str,
        owner: &str,
        vm_uuid: &str,
    ) -> Result<(VolumeRecord, String)> {
        let mut errors = Vec::new();
        check_uuid(&mut errors, "vm_uuid", vm_uuid, true);
        done(errors)?;
        let v = self.get(uuid, owner).await?;
        Ok((v, vm_uuid.to_ascii_lowercase()))
    }

    /// Reservations of `vm` for the owner's volume `name` go (it is a reference now).
    pub async fn drop_reservations(&self, owner: &str, name: &str, vm_uuid: &str) -> Result<()> {
        let found = self
            .store
            .find_reservations(&Filter::and([
                Filter::eq("owner_uuid", owner),
                Filter::eq("volume_name", name),
                Filter::eq("vm_uuid", vm_uuid),
            ]))
            .await?;
        for r in found {
            self.store.remove_reservation(&r.uuid).await?;
        }
        Ok(())
    }

    pub async fn add_reservation(
        &self,
        r: &pb::AddVolumeReservationRequest,
    ) -> Result<ReservationRecord> {
        let mut errors = Vec::new();
        check_uuid(&mut errors, "owner_uuid", &r.owner_uuid, true);
        check_uuid(&mut errors, "vm_uuid", &r.vm_uuid, true);
        check_uuid(&mut errors, "job_uuid", &r.job_uuid, true);
        check_name(&mut errors, &r.volume_name);
        done(errors)?;
        let owner = r.owner_uuid.to_ascii_lowercase();
        let vm_uuid = r.vm_uuid.to_ascii_lowercase();
        let _guard = self.lock_owner(&owner).await;
        let volume = self
            .store
            .live_by_name(&owner, &r.volume_name)
            .await?
            .ok_or_else(|| Error::VolumeNotFound(r.volume_name.clone()))?;
        let record = ReservationRecord {
            uuid: Uuid::new_v4().to_string(),
            volume_name: r.volume_name.clone(),
            job_uuid: r.job_uuid.to_ascii_lowercase(),
            owner_uuid: owner,
            vm_uuid: vm_uuid.clone(),
            create_timestamp: triton_common::time::now_millis(),
        };
        self.store.put_reservation(&record).await?;
        // As Triton: the reserving VM counts among the refs from now on.
        self.set_ref(&volume.uuid, &vm_uuid, true).await?;
        Ok(record)
    }

    /// Deletes a reservation; its VM leaves the volume's refs unless it is active.
    pub async fn remove_reservation(&self, uuid: &str, owner: &str) -> Result<()> {
        let mut errors = Vec::new();
        check_uuid(&mut errors, "uuid", uuid, true);
        check_uuid(&mut errors, "owner_uuid", owner, false);
        done(errors)?;
        let found = self
            .store
            .reservations
            .get(&uuid.to_ascii_lowercase())
            .await
            .map_err(Error::moray("getObject volapi_volumes_reservations"))?;
        let r = match found {
            Some(r) if owner.is_empty() || r.value.owner_uuid.eq_ignore_ascii_case(owner) => {
                r.value
            }
            _ => return Err(Error::ReservationNotFound(uuid.to_string())),
        };
        self.end_reservation(&r).await
    }

    /// A reservation goes; its VM leaves the volume's refs unless VMAPI has it active.
    pub async fn end_reservation(&self, r: &ReservationRecord) -> Result<()> {
        self.store.remove_reservation(&r.uuid).await?;
        let active = !self
            .active_vms(std::slice::from_ref(&r.vm_uuid))
            .await?
            .is_empty();
        if !active
            && let Some(v) = self
                .store
                .live_by_name(&r.owner_uuid, &r.volume_name)
                .await?
        {
            self.set_ref(&v.uuid, &r.vm_uuid, false).await?;
        }
        Ok(())
    }

    pub async fn list_reservations(
        &self,
        r: &pb::ListVolumeReservationsRequest,
    ) -> Result<Vec<ReservationRecord>> {
        let mut errors = Vec::new();
        check_uuid(&mut errors, "owner_uuid", &r.owner_uuid, false);
        check_uuid(&mut errors, "job_uuid", &r.job_uuid, false);
        done(errors)?;
        let mut parts = vec![Filter::present("uuid")];
        if !r.owner_uuid.is_empty() {
            parts.push(Filter::eq("owner_uuid", r.owner_uuid.to_ascii_lowercase()));
        }
        if !r.job_uuid.is_empty() {
            parts.push(Filter::eq("job_uuid", r.job_uuid.to_ascii_lowercase()));
        }
        if !r.volume_name.is_empty() {
            parts.push(Filter::eq("volume_name", &r.volume_name));
        }
        self.store.find_reservations(&Filter::and(parts)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("v1"));
        assert!(valid_name("my-volume_1.a"));
        assert!(!valid_name("v"));
        assert!(!valid_name("-v1"));
        assert!(!valid_name("bad name"));
        assert!(!valid_name(&"a".repeat(257)));
        assert!(valid_name(&"a".repeat(256)));
    }

    #[test]
    fn affinity_strings() {
        let r = parse_affinity("instance!=~web0").unwrap();
        assert_eq!(
            (
                r.key.as_str(),
                r.operator.as_str(),
                r.value.as_str(),
                r.is_soft
            ),
            ("instance", "!=", "web0", true)
        );
        let r = parse_affinity("container==db").unwrap();
        assert_eq!(
            (r.key.as_str(), r.operator.as_str(), r.is_soft),
            ("instance", "==", false)
        );
        assert!(parse_affinity("nonsense").is_err());
        assert!(parse_affinity("==x").is_err());
    }
}
