//! The VM-state reconciler: every pass re-reads the world (each server's instances as
//! its cn-agent's heartbeats report them, through CNAPI) and brings VM records in line.
//! An instance that died shows `stopped`, one started behind VMAPI's back `running`.
//!
//! A heartbeat only overrides a VM when it is newer than the VM's last change (so a
//! heartbeat sent just before a job's stop cannot undo the job's `stopped`), and VMs
//! with an unfinished job are left to the job.
//!
//! A VM that its server no longer reports (destroyed behind VMAPI's back, as
//! Triton's vm-agent reports such VMs `destroyed`) gets a `mark_destroyed` job, which
//! asks the server itself before it frees the VM's NICs and marks it destroyed. Only
//! VMs in a settled state (`running`, `stopped`) with no unfinished job, missing from
//! two heartbeats in a row that are both newer than the VM's last change, qualify: a
//! provision or any other job in flight is never raced.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use moray_client::filter::Filter;
use moray_client::{EtagCondition, FindOptions};
use serde_json::json;
use triton_proto::cnapi::v1 as cnapi;
use uuid::Uuid;

use crate::clients::{Clients, request};
use crate::config::Timeouts;
use crate::error::{Error, Result};
use crate::jobs::record::JobRecord;
use crate::jobs::{Engine, JobKind};
use crate::model::{VmRecord, state};
use crate::store::Store;
use triton_common::time::now_millis;

/// A VM whose `mark_destroyed` job found it still on its server is not looked at again
/// for this long (ms), so a node whose heartbeats leave out a live instance does not
/// get a job every pass.
const RETRY_MARK_AFTER_MS: i64 = 10 * 60 * 1000;

/// States a heartbeat may set; others (provisioning) are the jobs' business.
const HEARTBEAT_STATES: &[&str] = &[state::RUNNING, state::STOPPED, state::FAILED];
const PAGE: u32 = 1000;

struct Seen {
    state: String,
    /// Epoch ms of the server's last heartbeat as CNAPI recorded it.
    at: i64,
}

/// What the reconciler remembers between passes.
pub struct Reconciler {
    pub store: Store,
    pub clients: Clients,
    pub engine: Arc<Engine>,
    pub timeouts: Timeouts,
    /// VMs missing from their server's heartbeats: the heartbeat time (ms) of the
    /// first miss.
    missing: HashMap<String, i64>,
    /// VMs given a `mark_destroyed` job, and when (ms).
    marked: HashMap<String, i64>,
}

impl Reconciler {
    pub fn new(store: Store, clients: Clients, engine: Arc<Engine>, timeouts: Timeouts) -> Self {
        Reconciler {
            store,
            clients,
            engine,
            timeouts,
            missing: HashMap::new(),
            marked: HashMap::new(),
        }
    }

    /// One pass; returns how many VMs changed state (jobs made included).
    pub async fn pass(&mut self) -> Result<usize> {
        let (changed, gone) = reconcile_states(&self.store, &self.clients).await?;
        let now = now_millis();
        self.marked.retain(|_, at| *at + RETRY_MARK_AFTER_MS > now);
        let mut still_missing = HashMap::new();
        let mut made = 0;
        for (uuid, at) in gone {
            match self.missing.get(&uuid) {
                Some(first) if at > *first => {
                    if self.marked.contains_key(&uuid) {
                        continue;
                    }
                    match self.mark_destroyed(&uuid).await {
                        Ok(()) => {
                            self.marked.insert(uuid, now);
                            made += 1;
                        }
                        Err(e) => {
                            tracing::warn!(vm_uuid = %uuid, error = %e.full_message(), "cannot queue mark_destroyed");
                            still_missing.insert(uuid, *first);
                        }
                    }
                }
                Some(first) => {
                    still_missing.insert(uuid, *first);
                }
                None => {
                    still_missing.insert(uuid, at);
                }
            }
        }
        self.missing = still_missing;
        Ok(changed + made)
    }

    /// Stores a `mark_destroyed` job for the VM and queues it.
    async fn mark_destroyed(&self, vm_uuid: &str) -> Result<()> {
        let Some(vm) = self.store.get_vm(vm_uuid).await? else {
            return Ok(());
        };
        let vm = vm.value;
        tracing::info!(vm_uuid, server_uuid = %vm.server_uuid, "VM missing from its server's heartbeats; checking whether it is gone");
        let params = json!({ "server_uuid": vm.server_uuid, "req_id": Uuid::new_v4().to_string() });
        let job = JobRecord::queued(JobKind::MarkDestroyed, &vm, params, &self.timeouts);
        self.store
            .put_job(&job, EtagCondition::MustNotExist)
            .await?;
        self.engine.enqueue(&job.vm_uuid, &job.uuid);
        Ok(())
    }
}

/// Sets VM states from the heartbeats. Returns how many VMs changed, and the VMs in a
/// settled state that their (running) server's latest heartbeat, newer than the VM's
/// last change, did not list, with that heartbeat's time.
async fn reconcile_states(store: &Store, clients: &Clients) -> Result<(usize, Vec<(String, i64)>)> {
    let mut seen: HashMap<String, (String, Seen)> = HashMap::new();
    // Running servers and the time (ms) of their last heartbeat.
    let mut servers: HashMap<String, i64> = HashMap::new();
    let mut offset = 0;
    loop {
        let page = clients
            .cnapi
            .clone()
            .list_servers(request(
                cnapi::ListServersRequest {
                    limit: PAGE,
                    offset,
                    ..Default::default()
                },
                "",
            ))
            .await
            .map_err(Error::upstream("cnapi"))?
            .into_inner()
            .servers;
        let n = page.len() as u32;
        for s in page {
            if s.status != "running" {
                continue;
            }
            let at = triton_common::time::parse_rfc3339_millis(&s.last_heartbeat).unwrap_or(0);
            servers.insert(s.uuid.clone(), at);
            for (uuid, vm) in s.vms {
                seen.insert(
                    uuid,
                    (
                        s.uuid.clone(),
                        Seen {
                            state: vm.state,
                            at,
                        },
                    ),
                );
            }
        }
        if n < PAGE {
            break;
        }
        offset += n;
    }
    let busy: HashSet<String> = store
        .unfinished_jobs()
        .await?
        .into_iter()
        .map(|j| j.vm_uuid)
        .collect();

    let mut changed = 0;
    let mut gone = Vec::new();
    let mut marker = String::new();
    loop {
        let mut parts = vec![
            Filter::present("server_uuid"),
            Filter::negate(Filter::or([
                Filter::eq("state", state::DESTROYED),
                Filter::eq("state", state::PROVISIONING),
            ])),
        ];
        if !marker.is_empty() {
            parts.push(Filter::gt("uuid", &marker));
        }
        let filter = Filter::and(parts).to_string();
        let options = FindOptions::page("uuid", u64::from(PAGE));
        let vms = store.find_vms(&filter, &options).await?;
        let n = vms.len();
        for vm in &vms {
            if busy.contains(&vm.uuid) || vm.server_uuid.is_empty() {
                continue;
            }
            let Some((server, hb)) = seen.get(&vm.uuid) else {
                if let Some(at) = servers.get(&vm.server_uuid)
                    && *at > vm.last_modified
                    && matches!(vm.state.as_str(), state::RUNNING | state::STOPPED)
                {
                    gone.push((vm.uuid.clone(), *at));
                }
                continue;
            };
            if *server != vm.server_uuid || !needs_change(vm, hb) {
                continue;
            }
            let result = store
                .update_vm(&vm.uuid, |current| {
                    if !needs_change(current, hb) {
                        return Ok(false);
                    }
                    tracing::info!(
                        vm_uuid = %current.uuid,
                        from = %current.state,
                        to = %hb.state,
                        "VM state from heartbeat"
                    );
                    current.state = hb.state.clone();
                    Ok(true)
                })
                .await;
            match result {
                Ok(_) => changed += 1,
                Err(e) => {
                    tracing::warn!(vm_uuid = %vm.uuid, error = %e.full_message(), "cannot update VM state")
                }
            }
        }
        if n < PAGE as usize {
            break;
        }
        marker = vms.last().map(|v| v.uuid.clone()).unwrap_or_default();
    }
    Ok((changed, gone))
}

fn needs_change(vm: &VmRecord, hb: &Seen) -> bool {
    hb.state != vm.state
        && HEARTBEAT_STATES.contains(&hb.state.as_str())
        && hb.at > vm.last_modified
        && !vm.is_destroyed()
        && vm.state != state::PROVISIONING
}
