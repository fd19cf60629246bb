//! The kinds of job. Each lives in its own file beside this one (`provision.rs`,
//! `start.rs`, ...) as a [`Saga`]: its steps in order, each with its timeout, its
//! action and its undo. The steps several kinds share are in [`super::steps`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::record::StepRecord;
use super::saga::Saga;
use super::{
    add_nics, create_snapshot, delete_snapshot, destroy, mark_destroyed, provision, reboot,
    remove_nics, rollback_snapshot, start, stop, update,
};
use crate::config::Timeouts;

/// Declares [`JobKind`] from one row a kind: the variant, the string stored in the job
/// record's `name`, and the module beside this one that holds the kind's saga.
macro_rules! job_kinds {
    ($($(#[$doc:meta])* $kind:ident = $name:literal in $module:ident,)+) => {
        /// A kind of job, stored in the job record's `name` as the string of
        /// [`JobKind::as_str`]. A stored name that is none of these does not parse.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum JobKind {
            $($(#[$doc])* #[serde(rename = $name)] $kind,)+
        }

        impl JobKind {
            pub const ALL: [JobKind; [$($name),+].len()] = [$(JobKind::$kind),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(JobKind::$kind => $name,)+
                }
            }

            /// The kind's saga: its steps in order, each with its timeout, action and
            /// undo, and what a failure leaves on the VM.
            pub fn saga(self) -> &'static Saga {
                match self {
                    $(JobKind::$kind => &$module::SAGA,)+
                }
            }
        }
    };
}

job_kinds! {
    Provision = "provision" in provision,
    Start = "start" in start,
    Stop = "stop" in stop,
    Reboot = "reboot" in reboot,
    Update = "update" in update,
    Destroy = "destroy" in destroy,
    AddNics = "add_nics" in add_nics,
    RemoveNics = "remove_nics" in remove_nics,
    CreateSnapshot = "create_snapshot" in create_snapshot,
    RollbackSnapshot = "rollback_snapshot" in rollback_snapshot,
    DeleteSnapshot = "delete_snapshot" in delete_snapshot,
    /// Made by the reconciler for a VM its server no longer reports.
    MarkDestroyed = "mark_destroyed" in mark_destroyed,
}

impl JobKind {
    /// The steps of a job of this kind, with their undo flags and timeouts, as stored
    /// at creation.
    pub fn chain(self, t: &Timeouts) -> Vec<StepRecord> {
        self.saga().chain(t)
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<JobKind, String> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown job kind {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The chains as stored in Moray, a kind a line: each step's name, `+` where it
    /// has an undo, and its timeout (`d`efault, `t`ask, `i`mage or `c`reate). A job
    /// written before a change resumes only while these stay as they are.
    const STORED_CHAINS: &str = "
        provision: validate:d volumes+:d allocate+:d provision_nics+:d ensure_image:i machine_create+:c record:d
        start: check:d machine_boot:t record:d
        stop: check:d machine_shutdown:t record:d
        reboot: check:d machine_reboot:t record:d
        update: check:d machine_update:t record:d
        destroy: check:d machine_destroy:t release_nics:d release_allocation:d record:d
        add_nics: check:d provision_nics+:d machine_update+:t record:d
        remove_nics: check:d machine_update:t release_nics:d record:d
        create_snapshot: check:d machine_create_snapshot:t record:d
        rollback_snapshot: check:d machine_rollback_snapshot:t record:d
        delete_snapshot: check:d machine_delete_snapshot:t record:d
        mark_destroyed: confirm_gone:t release_nics:d release_allocation:d record:d
    ";

    #[test]
    fn every_kind_stores_the_chain_it_always_stored() {
        let t = Timeouts {
            default_s: 1,
            task_s: 2,
            image_s: 3,
            create_s: 4,
        };
        let class = |s: u64| ["?", "d", "t", "i", "c"][s as usize];
        let stored: Vec<String> = JobKind::ALL
            .iter()
            .map(|kind| {
                let steps: Vec<String> = kind
                    .chain(&t)
                    .iter()
                    .map(|s| {
                        let undo = if s.undo { "+" } else { "" };
                        format!("{}{undo}:{}", s.name, class(s.timeout_s))
                    })
                    .collect();
                format!("{kind}: {}", steps.join(" "))
            })
            .collect();
        let expected: Vec<&str> = STORED_CHAINS
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(stored, expected);
    }

    #[test]
    fn every_step_of_a_kind_has_its_own_name() {
        for kind in JobKind::ALL {
            let steps = kind.saga().steps;
            for (i, step) in steps.iter().enumerate() {
                assert!(
                    steps[..i].iter().all(|s| s.name != step.name),
                    "{kind} has two steps named {}",
                    step.name
                );
                assert!(
                    std::ptr::eq(kind.saga().step(step.name).unwrap(), step),
                    "{kind}: step {} is not found by its name",
                    step.name
                );
            }
            assert!(kind.saga().step("no_such_step").is_none());
        }
    }

    #[test]
    fn every_kind_round_trips_through_its_stored_string_and_has_steps() {
        let t = Timeouts::default();
        for kind in JobKind::ALL {
            let stored = serde_json::to_value(kind).unwrap();
            assert_eq!(stored, Value::String(kind.as_str().to_string()));
            assert_eq!(serde_json::from_value::<JobKind>(stored).unwrap(), kind);
            assert_eq!(kind.as_str().parse::<JobKind>().unwrap(), kind);
            assert!(!kind.chain(&t).is_empty(), "{kind} has no steps");
        }
    }

    #[test]
    fn an_unknown_stored_name_is_an_error() {
        let e = serde_json::from_value::<JobKind>(Value::String("resize".into())).unwrap_err();
        assert!(e.to_string().contains("resize"), "{e}");
        assert_eq!(
            "resize".parse::<JobKind>().unwrap_err(),
            "unknown job kind \"resize\""
        );
    }
}
