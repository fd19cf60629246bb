//! provision: a new VM placed on a server, given its NICs and image, and created
//! there. A failure, once unwound, leaves the VM `failed` with the reason.

use serde_json::Value;

use super::JobCtx;
use super::kind::JobKind;
use super::record::StepRecord;
use super::steps::Steps;
use crate::config::Timeouts;
use crate::error::Result;

/// The steps in order: (name, has an undo, timeout).
pub(super) fn chain(t: &Timeouts) -> Vec<StepRecord> {
    let d = t.default_s;
    vec![
        StepRecord::new("validate", false, d),
        // undo: the allocation released
        StepRecord::new("allocate", true, d),
        // undo: the VM's NICs deleted
        StepRecord::new("provision_nics", true, d),
        StepRecord::new("ensure_image", false, t.image_s),
        // undo: the instance destroyed on the server
        StepRecord::new("machine_create", true, t.create_s),
        StepRecord::new("record", false, d),
    ]
}

pub(super) async fn run(s: &Steps, ctx: &JobCtx, step: &str) -> Result<Value> {
    match step {
        "validate" => s.validate(ctx).await,
        "allocate" => s.allocate(ctx).await,
        "provision_nics" => s.provision_nics(ctx).await,
        "ensure_image" => s.ensure_image(ctx).await,
        "machine_create" => s.machine_create(ctx).await,
        "record" => s.record_provisioned(ctx).await,
        _ => Err(JobKind::Provision.no_step(step)),
    }
}

pub(super) async fn undo(s: &Steps, ctx: &JobCtx, step: &str) -> Result<()> {
    match step {
        "allocate" => s.undo_allocate(ctx).await,
        "provision_nics" => s.undo_provision_nics(ctx).await,
        "machine_create" => s.undo_machine_create(ctx).await,
        _ => Ok(()),
    }
}

pub(super) async fn on_failure(s: &Steps, ctx: &JobCtx) -> Result<()> {
    s.provision_failed(ctx).await
}
