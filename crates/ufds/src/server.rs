//! The gRPC face of UFDS: thin handlers that call [`Ufds`] and convert to the wire types.

use tonic::{Request, Response, Status};
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

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl UfdsRpc for Handler {
    #[tracing::instrument(skip_all, fields(login = %request.get_ref().login))]
    async fn create_account(
        &self,
        request: Request<proto::CreateAccountRequest>,
    ) -> Reply<proto::Account> {
        let account = self.ufds.create_account(request.into_inner()).await?;
        tracing::info!(uuid = %account.uuid, "account created");
        Ok(Response::new(account.into()))
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account))]
    async fn get_account(
        &self,
        request: Request<proto::GetAccountRequest>,
    ) -> Reply<proto::Account> {
        let account = self.ufds.get_account(&request.get_ref().account).await?;
        Ok(Response::new(account.into()))
    }

    #[tracing::instrument(skip_all)]
    async fn list_accounts(
        &self,
        request: Request<proto::ListAccountsRequest>,
    ) -> Reply<proto::ListAccountsResponse> {
        accounts_response(self.ufds.list_accounts(request.get_ref()).await?)
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account))]
    async fn update_account(
        &self,
        request: Request<proto::UpdateAccountRequest>,
    ) -> Reply<proto::Account> {
        let account = self.ufds.update_account(request.into_inner()).await?;
        Ok(Response::new(account.into()))
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account))]
    async fn delete_account(
        &self,
        request: Request<proto::DeleteAccountRequest>,
    ) -> Reply<proto::DeleteAccountResponse> {
        let keys_deleted = self.ufds.delete_account(&request.get_ref().account).await?;
        tracing::info!(keys_deleted, "account deleted");
        Ok(Response::new(proto::DeleteAccountResponse { keys_deleted }))
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account))]
    async fn create_key(&self, request: Request<proto::CreateKeyRequest>) -> Reply<proto::Key> {
        let key = self.ufds.create_key(request.into_inner()).await?;
        tracing::info!(fingerprint = %key.fingerprint, name = %key.name, "key added");
        Ok(Response::new(key_to_proto(key)?))
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account, key = %request.get_ref().key))]
    async fn get_key(&self, request: Request<proto::GetKeyRequest>) -> Reply<proto::Key> {
        let r = request.get_ref();
        let key = self.ufds.get_key(&r.account, &r.key).await?;
        Ok(Response::new(key_to_proto(key)?))
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account))]
    async fn list_keys(
        &self,
        request: Request<proto::ListKeysRequest>,
    ) -> Reply<proto::ListKeysResponse> {
        let keys = self.ufds.list_keys(&request.get_ref().account).await?;
        keys_response(keys)
    }

    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account, key = %request.get_ref().key))]
    async fn delete_key(
        &self,
        request: Request<proto::DeleteKeyRequest>,
    ) -> Reply<proto::DeleteKeyResponse> {
        let r = request.get_ref();
        self.ufds.delete_key(&r.account, &r.key).await?;
        tracing::info!("key deleted");
        Ok(Response::new(proto::DeleteKeyResponse {}))
    }

    #[tracing::instrument(skip_all, fields(fingerprint = %request.get_ref().fingerprint))]
    async fn find_keys(
        &self,
        request: Request<proto::FindKeysRequest>,
    ) -> Reply<proto::ListKeysResponse> {
        let keys = self.ufds.find_keys(&request.get_ref().fingerprint).await?;
        keys_response(keys)
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group, account = %request.get_ref().account))]
    async fn add_group_member(
        &self,
        request: Request<proto::GroupMemberRequest>,
    ) -> Reply<proto::Account> {
        let account = self.ufds.add_group_member(request.get_ref()).await?;
        tracing::info!(uuid = %account.uuid, "member of the group");
        Ok(Response::new(account.into()))
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group, account = %request.get_ref().account))]
    async fn remove_group_member(
        &self,
        request: Request<proto::GroupMemberRequest>,
    ) -> Reply<proto::Account> {
        let account = self.ufds.remove_group_member(request.get_ref()).await?;
        tracing::info!(uuid = %account.uuid, "not a member of the group");
        Ok(Response::new(account.into()))
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group))]
    async fn list_group_members(
        &self,
        request: Request<proto::ListGroupMembersRequest>,
    ) -> Reply<proto::ListAccountsResponse> {
        accounts_response(self.ufds.list_group_members(request.get_ref()).await?)
    }

    type WatchAccountsStream = WatchAccountsStream;

    async fn watch_accounts(
        &self,
        request: Request<proto::WatchAccountsRequest>,
    ) -> Reply<Self::WatchAccountsStream> {
        Ok(Response::new(
            self.watch.watch_accounts(request.into_inner()).await?,
        ))
    }

    type WatchKeysStream = WatchKeysStream;

    async fn watch_keys(
        &self,
        request: Request<proto::WatchKeysRequest>,
    ) -> Reply<Self::WatchKeysStream> {
        Ok(Response::new(
            self.watch.watch_keys(request.into_inner()).await?,
        ))
    }
}

fn accounts_response((accounts, total): (Vec<Account>, u64)) -> Reply<proto::ListAccountsResponse> {
    Ok(Response::new(proto::ListAccountsResponse {
        accounts: accounts.into_iter().map(Into::into).collect(),
        total,
    }))
}

fn keys_response(keys: Vec<StoredKey>) -> Reply<proto::ListKeysResponse> {
    let keys = keys
        .into_iter()
        .map(key_to_proto)
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(Response::new(proto::ListKeysResponse { keys }))
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
