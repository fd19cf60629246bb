//! Tenant accounts in UFDS, as an operator makes them (Triton: `sdc-useradm`):
//! `sdcadm account create LOGIN --key FILE` makes an account approved for provisioning
//! with that SSH public key (key name `LOGIN`); `sdcadm account delete LOGIN` removes it
//! with its keys; `sdcadm account operator LOGIN [--remove]` makes it an operator (a
//! member of UFDS's `operators` group: CMon shows it compute nodes) or takes that away,
//! and `sdcadm account operators` lists them. Used by the e2e suites that need a second
//! tenant.

use triton_proto::ufds::v1 as ufds;

use crate::coal::seed::channel;
use crate::error::Error;
use crate::instances::Datacenter;

fn ufds_err(what: &str, s: tonic::Status) -> Error {
    Error::Seed {
        what: what.into(),
        message: format!("{:?}: {}", s.code(), s.message()),
    }
}

/// Makes account `login` (email `<login>@<datacenter>.example.com` unless given) with
/// `public_key`; its uuid.
pub async fn create(
    dc: &Datacenter,
    login: &str,
    email: Option<&str>,
    public_key: &str,
) -> Result<String, Error> {
    let mut c = ufds::ufds_client::UfdsClient::new(channel(&dc.addr("ufds", "grpc")?).await?);
    let email = email.map(str::to_string).unwrap_or_else(|| {
        let datacenter = dc
            .deployment
            .vars
            .get("datacenter")
            .and_then(toml::Value::as_str)
            .unwrap_or("coal");
        format!("{login}@{datacenter}.example.com")
    });
    let account = c
        .create_account(ufds::CreateAccountRequest {
            login: login.into(),
            email,
            cn: login.into(),
            approved_for_provisioning: true,
            ..Default::default()
        })
        .await
        .map_err(|s| ufds_err("ufds account", s))?
        .into_inner();
    c.create_key(ufds::CreateKeyRequest {
        account: login.into(),
        name: login.into(),
        key: public_key.trim().into(),
    })
    .await
    .map_err(|s| ufds_err("ufds key", s))?;
    Ok(account.uuid)
}

/// The UFDS group of the operators (Triton's `cn=operators, ou=groups, o=smartdc`).
pub const OPERATORS_GROUP: &str = "operators";

/// Makes account `login` (or uuid) a member of `operators` (or, with `remove`, not);
/// the account's groups after.
pub async fn operator(dc: &Datacenter, login: &str, remove: bool) -> Result<Vec<String>, Error> {
    let mut c = ufds::ufds_client::UfdsClient::new(channel(&dc.addr("ufds", "grpc")?).await?);
    let request = ufds::GroupMemberRequest {
        group: OPERATORS_GROUP.into(),
        account: login.into(),
    };
    let answer = if remove {
        c.remove_group_member(request).await
    } else {
        c.add_group_member(request).await
    };
    let account = answer
        .map_err(|s| ufds_err("ufds operators group", s))?
        .into_inner();
    Ok(account.groups)
}

/// The operators: `(login, uuid)` of each member of `operators`, by login.
pub async fn operators(dc: &Datacenter) -> Result<Vec<(String, String)>, Error> {
    let mut c = ufds::ufds_client::UfdsClient::new(channel(&dc.addr("ufds", "grpc")?).await?);
    let listed = c
        .list_group_members(ufds::ListGroupMembersRequest {
            group: OPERATORS_GROUP.into(),
            ..Default::default()
        })
        .await
        .map_err(|s| ufds_err("ufds operators group", s))?
        .into_inner();
    Ok(listed
        .accounts
        .into_iter()
        .map(|a| (a.login, a.uuid))
        .collect())
}

/// Deletes account `login` (or uuid) and its keys.
pub async fn delete(dc: &Datacenter, login: &str) -> Result<(), Error> {
    let mut c = ufds::ufds_client::UfdsClient::new(channel(&dc.addr("ufds", "grpc")?).await?);
    c.delete_account(ufds::DeleteAccountRequest {
        account: login.into(),
    })
    .await
    .map_err(|s| ufds_err("ufds account", s))?;
    Ok(())
}
