//! The VM-state reconciler: every pass re-reads the world (each server's instances as
//! its cn-agent's heartbeats report them, through CNAPI) and brings VM records in line.
//! An instance that died shows `stopped`, one started behind VMAPI's back `running`.
//!
//! A heartbeat only overrides a VM when it is newer than the VM's last change (so a
//! heartbeat sent just before a job's stop cannot undo the job's `stopped`), and VMs
//! with an unfinished job are left to the job.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use moray_client::{FindOptions, Sort, SortOrder};
use tokio_util::sync::CancellationToken;
use triton_proto::cnapi::v1 as cnapi;

use crate::clients::{Clients, request};
use crate::error::{Error, Result};
use crate::model::{VmRecord, state};
use crate::store::Store;

/// States a heartbeat may set; others (provisioning) are the jobs' business.
const HEARTBEAT_STATES: &[&str] = &[state::RUNNING, state::STOPPED, state::FAILED];
const PAGE: u32 = 1000;

struct Seen {
    state: String,
    /// Epoch ms of the server's last heartbeat as CNAPI recorded it.
    at: i64,
}

/// One pass; returns how many VMs changed.
pub async fn reconcile_once(store: &Store, clients: &Clients) -> Result<usize> {
    let mut seen: HashMap<String, (String, Seen)> = HashMap::new();
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
    let mut marker = String::new();
    loop {
        let mut filter =
            String::from("(&(server_uuid=*)(!(|(state=destroyed)(state=provisioning))))");
        if !marker.is_empty() {
            filter = format!("(&{filter}(uuid>={marker})(!(uuid={marker})))");
        }
        let options = FindOptions {
            limit: Some(u64::from(PAGE)),
            no_count: true,
            sort: vec![Sort {
                attribute: "uuid".into(),
                order: SortOrder::Asc,
            }],
            ..Default::default()
        };
        let vms = store.find_vms(&filter, &options).await?;
        let n = vms.len();
        for vm in &vms {
            if busy.contains(&vm.uuid) || vm.server_uuid.is_empty() {
                continue;
            }
            let Some((server, hb)) = seen.get(&vm.uuid) else {
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
    Ok(changed)
}

fn needs_change(vm: &VmRecord, hb: &Seen) -> bool {
    hb.state != vm.state
        && HEARTBEAT_STATES.contains(&hb.state.as_str())
        && hb.at > vm.last_modified
        && !vm.is_destroyed()
        && vm.state != state::PROVISIONING
}

pub async fn run(store: Store, clients: Clients, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = reconcile_once(&store, &clients).await {
            tracing::warn!(error = %e.full_message(), "VM state reconciliation failed; retrying next period");
        }
    }
}
