//! VMAPI's two Moray buckets. `vmapi_vms`: one VM per key, indexed for the ListVms
//! filters. `vmapi_jobs`: one job per key, indexed for ListJobs and for finding
//! unfinished jobs at start-up. Every write that replaces something read is conditional
//! on the etag read, so two writers never silently overwrite each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use moray_client::{
    BatchOp, BucketConfig, EtagCondition, FindOptions, IndexDef, MorayClient, Sort, SortOrder,
};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::jobs::record::JobRecord;
use crate::model::VmRecord;

pub const VMS_BUCKET: &str = "vmapi_vms";
pub const JOBS_BUCKET: &str = "vmapi_jobs";
/// Conditional read-modify-write attempts before giving up on a busy record.
const WRITE_ATTEMPTS: usize = 20;

/// A record and the etag it was read with.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub value: T,
    pub etag: String,
}

#[derive(Clone)]
pub struct Store {
    moray: MorayClient,
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

fn decode<T: DeserializeOwned>(what: &str, value: serde_json::Value) -> Result<T> {
    serde_json::from_value(value)
        .map_err(|e| Error::Internal(format!("stored {what} does not parse: {e}")))
}

impl Store {
    pub fn new(moray: MorayClient) -> Store {
        Store {
            moray,
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
        self.moray
            .ensure_bucket(VMS_BUCKET, &vms_bucket())
            .await
            .map_err(Error::moray("put bucket vmapi_vms"))?;
        self.moray
            .ensure_bucket(JOBS_BUCKET, &jobs_bucket())
            .await
            .map_err(Error::moray("put bucket vmapi_jobs"))?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<()> {
        self.moray.ping(true).await.map_err(Error::moray("ping"))
    }

    // ---- VMs

    pub async fn get_vm(&self, uuid: &str) -> Result<Option<Versioned<VmRecord>>> {
        let found = self
            .moray
            .get_object(VMS_BUCKET, uuid)
            .await
            .map_err(Error::moray(format!("get VM {uuid}")))?;
        found
            .map(|o| {
                Ok(Versioned {
                    value: decode("VM", o.value)?,
                    etag: o.etag,
                })
            })
            .transpose()
    }

    pub async fn put_vm(&self, vm: &VmRecord, cond: EtagCondition) -> Result<String> {
        self.moray
            .put_object(VMS_BUCKET, &vm.uuid, &vm.to_value(), cond)
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
        for _ in 0..WRITE_ATTEMPTS {
            let Some(Versioned { mut value, etag }) = self.get_vm(uuid).await? else {
                return Err(Error::NotFound(format!("VM {uuid} does not exist")));
            };
            if !change(&mut value)? {
                return Ok(value);
            }
            value.last_modified = triton_common::time::now_millis().max(value.last_modified + 1);
            match self.put_vm(&value, EtagCondition::Is(etag)).await {
                Ok(_) => return Ok(value),
                Err(Error::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict(format!("VM {uuid}")))
    }

    pub async fn find_vms(&self, filter: &str, options: &FindOptions) -> Result<Vec<VmRecord>> {
        self.moray
            .find_objects(VMS_BUCKET, filter, options)
            .await
            .map_err(|e| {
                if e.name() == "InvalidQueryError" || e.name() == "NotIndexedError" {
                    Error::invalid("query", e.message())
                } else {
                    Error::moray("find VMs")(e)
                }
            })?
            .into_iter()
            .map(|o| decode("VM", o.value))
            .collect()
    }

    /// Writes a new VM and its first job in one transaction.
    pub async fn create_vm_with_job(&self, vm: &VmRecord, job: &JobRecord) -> Result<String> {
        let ops = [
            BatchOp::Put {
                bucket: VMS_BUCKET.into(),
                key: vm.uuid.clone(),
                value: vm.to_value(),
                etag: EtagCondition::MustNotExist,
            },
            BatchOp::Put {
                bucket: JOBS_BUCKET.into(),
                key: job.uuid.clone(),
                value: job_value(job),
                etag: EtagCondition::MustNotExist,
            },
        ];
        match self.moray.batch(&ops).await {
            Ok(results) => {
                let etag = results.get(1).map(|r| r.etag.clone()).unwrap_or_default();
                self.remember_created(job, &etag);
                Ok(etag)
            }
            Err(e) if e.name() == "EtagConflictError" || e.name() == "UniqueAttributeError" => Err(
                Error::Duplicate(format!("uuid: VM {} already exists", vm.uuid)),
            ),
            Err(e) => Err(Error::moray(format!("create VM {}", vm.uuid))(e)),
        }
    }

    // ---- jobs

    pub async fn get_job(&self, uuid: &str) -> Result<Option<Versioned<JobRecord>>> {
        let found = self
            .moray
            .get_object(JOBS_BUCKET, uuid)
            .await
            .map_err(Error::moray(format!("get job {uuid}")))?;
        found
            .map(|o| {
                Ok(Versioned {
                    value: decode("job", o.value)?,
                    etag: o.etag,
                })
            })
            .transpose()
    }

    pub async fn put_job(&self, job: &JobRecord, cond: EtagCondition) -> Result<String> {
        let created = cond == EtagCondition::MustNotExist;
        let etag = self
            .moray
            .put_object(JOBS_BUCKET, &job.uuid, &job_value(job), cond)
            .await
            .map_err(Error::moray(format!("job {}", job.uuid)))?;
        if created {
            self.remember_created(job, &etag);
        }
        Ok(etag)
    }

    pub async fn find_jobs(&self, filter: &str, options: &FindOptions) -> Result<Vec<JobRecord>> {
        self.moray
            .find_objects(JOBS_BUCKET, filter, options)
            .await
            .map_err(Error::moray("find jobs"))?
            .into_iter()
            .map(|o| decode("job", o.value))
            .collect()
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

// A derived Serialize with string keys into a Value: it always serializes.
#[allow(clippy::expect_used)]
fn job_value(job: &JobRecord) -> serde_json::Value {
    serde_json::to_value(job).expect("a job record always serializes")
}
