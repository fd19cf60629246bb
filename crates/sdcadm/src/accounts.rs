//! Tenant accounts in UFDS, as an operator makes them (Triton: `sdc-useradm`):
//! `sdcadm account create LOGIN --key FILE` makes an account approved for provisioning
//! with that SSH public key (key name `LOGIN`); `sdcadm account delete LOGIN` removes it
//! with its keys. Used by the e2e suites that need a second tenant.

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
