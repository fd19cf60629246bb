//! UFDS's `WatchAccounts`: each account's login and its `triton_cns_enabled` and
//! `approved_for_provisioning` flags.

use triton_proto::ufds::v1 as pb;

use crate::names::Owner;

pub struct Accounts;

feed!(Accounts: pb::WatchAccountsRequest => Owner, FEEDS[1], inputs.owners, keep: |a| Owner {
    uuid: a.uuid.to_ascii_lowercase(),
    login: a.login.clone(),
    triton_cns_enabled: a.triton_cns_enabled,
    approved_for_provisioning: a.approved_for_provisioning,
});
