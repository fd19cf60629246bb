//! UFDS's `WatchAccounts`: each account's login and its `triton_cns_enabled` and
//! `approved_for_provisioning` flags.

use std::collections::BTreeMap;

use triton_proto::ufds::v1 as pb;

use super::Feed;
use crate::build::Inputs;
use crate::names::Owner;

pub struct Accounts;

impl Feed for Accounts {
    type Watch = pb::WatchAccountsRequest;
    type Value = Owner;
    const INDEX: usize = 1;

    fn convert(a: &pb::Account) -> (String, Option<Owner>) {
        let owner = Owner {
            uuid: a.uuid.to_ascii_lowercase(),
            login: a.login.clone(),
            triton_cns_enabled: a.triton_cns_enabled,
            approved_for_provisioning: a.approved_for_provisioning,
        };
        (owner.uuid.clone(), Some(owner))
    }

    fn table(inputs: &mut Inputs) -> &mut BTreeMap<String, Owner> {
        &mut inputs.owners
    }
}
