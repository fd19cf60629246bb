//! VMAPI's two Moray buckets. `vmapi_vms`: one VM per key, indexed for the ListVms
//! filters. `vmapi_jobs`: one job per key, indexed for ListJobs and for finding
//! unfinished jobs at start-up. Every write that replaces something read is conditional
//! on the etag read, so two writers never silently overwrite each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use moray_client::filter::Filter;
use moray_client::typed::{Bucket, Change, UpdateError, is_etag_conflict};
use moray_client::{
    BucketConfig, EtagCondition, FindOptions, IndexDef, MorayClient, Sort, SortOrder,
};

use crate::error::{Error, Result};
use crate::jobs::record::JobRecord;
use crate::model::VmRecord;

pub const VMS_BUCKET: &str = "vmapi_vms";
pub const JOBS_BUCKET: &str = "vmapi_jobs";
/// A record and the etag it was read with.
pub use moray_client::typed::Versioned;

#[derive(Clone)]
pub struct Store {
    vms: Bucket<VmRecord>,
    jobs: Bucket<JobRecord>,
    /// Jobs this process just created, as written, for the runner's claim: it is
    /// conditional on this etag, so it need not read the job back first (a job changed
    /// meanwhile fails the claim as a read would have).
    created_jobs: Arc<Mutex<HashMap<String, Versioned<JobRecord>>>>,
}

/// Most created jobs remembered for their claim (beyond, the claim reads the job).
const CREATED_JOBS_KEPT: usize = 10_000;

fn vms_bucket() -> BucketConfig {
    let s = || IndexDef::new("string");
    let n = || IndexDef::new("number");
    BucketConfig::versioned(1)
        .with_index("uuid", IndexDef::unique("string"))
        .with_index("owner_uuid", s())
        .with_index("alias", s())
        .with_index("brand", s())
        .with_index("state", s())
        .with_index("server_uuid", s())
        .with_index("image_uuid", s())
        .with_index("billing_id", s())
        .with_index("ram", n())
        .with_index("quota", n())
        .with_index("cpu_cap", n())
        .with_index("create_timestamp", n())
        .with_index("last_modified", n())
        .with_index("tag_pairs", IndexDef::new("[string]"))
        .with_index("tag_keys", IndexDef::new("[string]"))
}

fn jobs_bucket() -> BucketConfig {
    BucketConfig::versioned(1)
        .with_index("uuid", IndexDef::unique("string"))
        .with_index("vm_uuid", IndexDef::new("string"))
        .with_index("owner_uuid", IndexDef::new("string"))
        .with_index("name", IndexDef::new("string"))
        .with_index("execution", IndexDef::new("string"))
        .with_index("runner", IndexDef::new("string"))
        .with_index("created_at", IndexDef::new("number"))
        .with_index("lease_until", IndexDef::new("number"))
}

impl Store {
    pub fn new(moray: MorayClient) -> Store {
        Store {
            vms: Bucket::new(moray.clone(), VMS_BUCKET, vms_bucket())
                .with_encoder(VmRecord::encode),
            jobs: Bucket::new(moray, JOBS_BUCKET, jobs_bucket()),
            created_jobs: Arc::default(),
        }
    }

    fn remember_created(&self, job: &JobRecord, etag: &str) {
        let mut created = self.created_jobs.lock().unwrap_or_else(|e| e.into_inner());
        if created.len() >= CREATED_JOBS_KEPT {
            created.clear();
        }
        created.insert(
            job.uuid.clone(),
            Versioned {
                value: job.clone(),
                etag: etag.to_string(),
            },
        );
    }

    /// The job for a runner to claim: as this process created it when it did (no
    /// read), else as stored.
    pub async fn job_to_claim(&self, uuid: &str) -> Result<Option<Versioned<JobRecord>>> {
        let created = self
            .created_jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uuid);
        match created {
            Some(v) => Ok(Some(v)),
            None => self.get_job(uuid).await,
        }
    }

    pub async fn ensure_buckets(&self) -> Result<()> {
        self.vms
            .ensure()
            .await
            .map_err(Error::moray("put bucket vmapi_vms"))?;
        self.jobs
            .ensure()
            .await
            .map_err(Error::moray("put bucket vmapi_jobs"))?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<()> {
        self.vms
            .client()
            .ping(true)
            .await
            .map_err(Error::moray("ping"))
    }

    // ---- VMs

    pub async fn get_vm(&self, uuid: &str) -> Result<Option<Versioned<VmRecord>>> {
        self.vms
            .get(uuid)
            .await
            .map_err(Error::moray(format!("get VM {uuid}")))
    }

    pub async fn put_vm(&self, vm: &VmRecord, cond: EtagCondition) -> Result<String> {
        self.vms
            .put(&vm.uuid, vm, cond)
            .await
            .map_err(Error::moray(format!("VM {}", vm.uuid)))
    }

    /// Reads the VM, applies `change` and writes it back conditionally, again on a
    /// lost race. `change` returns false to leave the record as it is. The VM's
    /// `last_modified` is set on every write.
    pub async fn update_vm(
        &self,
        uuid: &str,
        mut change: impl FnMut(&mut VmRecord) -> Result<bool>,
    ) -> Result<VmRecord> {
        let updated = self
            .vms
            .update(uuid, |vm| {
                if !change(vm)? {
                    return Ok(Change::Keep);
                }
                vm.last_modified = triton_common::time::now_millis().max(vm.last_modified + 1);
                Ok(Change::Write)
            })
            .await;
        match updated {
            Ok(v) => Ok(v.value),
            Err(UpdateError::Moray(e)) if e.name() == "ObjectNotFoundError" => {
                Err(Error::NotFound(format!("VM {uuid} does not exist")))
            }
            Err(e) => Err(e.map_moray(Error::moray(format!("VM {uuid}")))),
        }
    }

    pub async fn find_vms(&self, filter: &str, options: &FindOptions) -> Result<Vec<VmRecord>> {
        self.vms
            .find_values(&Filter::Verbatim(filter.to_string()), options)
            .await
            .map_err(|e| {
                if e.name() == "InvalidQueryError" || e.name() == "NotIndexedError" {
                    Error::invalid("query", e.message())
                } else {
                    Error::moray("find VMs")(e)
                }
            })
    }

    /// Writes a new VM and its first job in one transaction.
    pub async fn create_vm_with_job(&self, vm: &VmRecord, job: &JobRecord) -> Result<String> {
        let what = || format!("create VM {}", vm.uuid);
        let ops = [
            self.vms
                .put_op(&vm.uuid, vm, EtagCondition::MustNotExist)
                .map_err(Error::moray(what()))?,
            self.jobs
                .put_op(&job.uuid, job, EtagCondition::MustNotExist)
                .map_err(Error::moray(what()))?,
        ];
        match self.vms.client().batch(&ops).await {
            Ok(results) => {
                let etag = results.get(1).map(|r| r.etag.clone()).unwrap_or_default();
                self.remember_created(job, &etag);
                Ok(etag)
            }
            Err(e) if is_etag_conflict(&e) || e.name() == "UniqueAttributeError" => Err(
                Error::Duplicate(format!("uuid: VM {} already exists", vm.uuid)),
            ),
            Err(e) => Err(Error::moray(what())(e)),
        }
    }

    // ---- jobs

    pub async fn get_job(&self, uuid: &str) -> Result<Option<Versioned<JobRecord>>> {
        self.jobs
            .get(uuid)
            .await
            .map_err(Error::moray(format!("get job {uuid}")))
    }

    pub async fn put_job(&self, job: &JobRecord, cond: EtagCondition) -> Result<String> {
        let created = cond == EtagCondition::MustNotExist;
        let etag = self
            .jobs
            .put(&job.uuid, job, cond)
            .await
            .map_err(Error::moray(format!("job {}", job.uuid)))?;
        if created {
            self.remember_created(job, &etag);
        }
        Ok(etag)
    }

    pub async fn find_jobs(&self, filter: &str, options: &FindOptions) -> Result<Vec<JobRecord>> {
        self.jobs
            .find_values(&Filter::Verbatim(filter.to_string()), options)
            .await
            .map_err(Error::moray("find jobs"))
    }

    /// Every queued or running job, oldest first.
    pub async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>> {
        let options = FindOptions {
            no_limit: true,
            no_count: true,
            sort: vec![Sort {
                attribute: "created_at".into(),
                order: SortOrder::Asc,
            }],
            ..Default::default()
        };
        self.find_jobs("(|(execution=queued)(execution=running))", &options)
            .await
    }
}
