//! The gRPC face of UFDS: thin handlers that call [`Ufds`] and convert to the wire types.

use triton_proto::ufds::v1 as proto;
use triton_proto::ufds::v1::ufds_server::{Ufds as UfdsRpc, UfdsServer};

use crate::account::Account;
use crate::error::Error;
use crate::key::StoredKey;
use crate::service::Ufds;
use crate::watch::{Watch, WatchAccountsStream, WatchKeysStream};

/// The tonic service for `ufds`.
pub fn service(ufds: Ufds, watch: Watch) -> UfdsServer<Handler> {
    UfdsServer::new(Handler { ufds, watch })
}

#[derive(Debug, Clone)]
pub struct Handler {
    ufds: Ufds,
    watch: Watch,
}

triton_common::grpc_handlers! {
    impl UfdsRpc for Handler;
    handlers {
        create_account(proto::CreateAccountRequest) -> proto::Account [login = login]
            |h, r| {
                let account = h.ufds.create_account(r).await?;
                tracing::info!(uuid = %account.uuid, "account created");
                account.into()
            };
        get_account(proto::GetAccountRequest) -> proto::Account [account = account]
            |h, r| h.ufds.get_account(&r.account).await?.into();
        list_accounts(proto::ListAccountsRequest) -> proto::ListAccountsResponse []
            |h, r| accounts_response(h.ufds.list_accounts(&r).await?);
        update_account(proto::UpdateAccountRequest) -> proto::Account [account = account]
            |h, r| h.ufds.update_account(r).await?.into();
        delete_account(proto::DeleteAccountRequest) -> proto::DeleteAccountResponse
            [account = account]
            |h, r| {
                let keys_deleted = h.ufds.delete_account(&r.account).await?;
                tracing::info!(keys_deleted, "account deleted");
                proto::DeleteAccountResponse { keys_deleted }
            };

        create_key(proto::CreateKeyRequest) -> proto::Key [account = account]
            |h, r| {
                let key = h.ufds.create_key(r).await?;
                tracing::info!(fingerprint = %key.fingerprint, name = %key.name, "key added");
                key_to_proto(key)?
            };
        get_key(proto::GetKeyRequest) -> proto::Key [account = account, key = key]
            |h, r| key_to_proto(h.ufds.get_key(&r.account, &r.key).await?)?;
        list_keys(proto::ListKeysRequest) -> proto::ListKeysResponse [account = account]
            |h, r| keys_response(h.ufds.list_keys(&r.account).await?)?;
        delete_key(proto::DeleteKeyRequest) -> proto::DeleteKeyResponse
            [account = account, key = key]
            |h, r| {
                h.ufds.delete_key(&r.account, &r.key).await?;
                tracing::info!("key deleted");
                proto::DeleteKeyResponse {}
            };
        find_keys(proto::FindKeysRequest) -> proto::ListKeysResponse [fingerprint = fingerprint]
            |h, r| keys_response(h.ufds.find_keys(&r.fingerprint).await?)?;

        add_group_member(proto::GroupMemberRequest) -> proto::Account
            [group = group, account = account]
            |h, r| membership(h.ufds.add_group_member(&r).await?, "member of the group");
        remove_group_member(proto::GroupMemberRequest) -> proto::Account
            [group = group, account = account]
            |h, r| membership(h.ufds.remove_group_member(&r).await?, "not a member of the group");
        list_group_members(proto::ListGroupMembersRequest) -> proto::ListAccountsResponse
            [group = group]
            |h, r| accounts_response(h.ufds.list_group_members(&r).await?);

        watch_accounts(proto::WatchAccountsRequest) -> WatchAccountsStream []
            |h, r| h.watch.watch_accounts(r).await?;
        watch_keys(proto::WatchKeysRequest) -> WatchKeysStream []
            |h, r| h.watch.watch_keys(r).await?;
    }

    type WatchAccountsStream = WatchAccountsStream;
    type WatchKeysStream = WatchKeysStream;
}

/// The account whose groups changed, logged with what it now is (`note`).
fn membership(account: Account, note: &str) -> proto::Account {
    tracing::info!(uuid = %account.uuid, "{note}");
    account.into()
}

fn accounts_response((accounts, total): (Vec<Account>, u64)) -> proto::ListAccountsResponse {
    proto::ListAccountsResponse {
        accounts: accounts.into_iter().map(Into::into).collect(),
        total,
    }
}

fn keys_response(keys: Vec<StoredKey>) -> Result<proto::ListKeysResponse, Error> {
    let keys = keys
        .into_iter()
        .map(key_to_proto)
        .collect::<Result<_, _>>()?;
    Ok(proto::ListKeysResponse { keys })
}

impl From<Account> for proto::Account {
    fn from(a: Account) -> Self {
        proto::Account {
            uuid: a.uuid,
            login: a.login,
            email: a.email,
            cn: a.cn,
            givenname: a.givenname,
            sn: a.sn,
            company: a.company,
            address: a.address,
            city: a.city,
            state: a.state,
            postalcode: a.postalcode,
            country: a.country,
            phone: a.phone,
            approved_for_provisioning: a.approved_for_provisioning,
            triton_cns_enabled: a.triton_cns_enabled,
            default_network: a.default_network,
            groups: a.groups,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

pub(crate) fn key_to_proto(k: StoredKey) -> Result<proto::Key, Error> {
    let blob = k.blob()?;
    Ok(proto::Key {
        account_uuid: k.account_uuid,
        name: k.name,
        fingerprint: k.fingerprint,
        sha256_fingerprint: k.sha256_fingerprint,
        r#type: k.key_type,
        bits: k.bits,
        openssh: k.openssh,
        blob,
        pkcs: k.pkcs,
        comment: k.comment,
        created_at: k.created_at,
    })
}
