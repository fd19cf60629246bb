//! UFDS's operations on accounts and keys, all state in Moray.
//!
//! Buckets: `ufds_accounts` (key: account uuid; unique `login`) and `ufds_keys` (key:
//! `<account_uuid>/<md5 fingerprint>`; unique `account_name`). Every write that spans
//! both buckets is one Moray batch conditioned on the account's etag, so a key is never
//! added to an account being deleted, and an account is never deleted half-way.

use moray_client::filter::Filter;
use moray_client::typed::{
    Bucket, Change, RetryPolicy, Versioned, is_etag_conflict, is_unique_violation,
};
use moray_client::{
    BatchOp, BucketConfig, EtagCondition, FindOptions, IndexDef, MorayClient, Sort, SortOrder,
};
use triton_common::time::now_rfc3339;
use triton_proto::ufds::v1 as proto;

use crate::account::{self, Account};
use crate::error::{Error, FieldError, Result, StoreError};
use crate::key::{self, StoredKey};
use crate::ssh_key::{Fingerprint, PublicKey, normalize_fingerprint};

pub const ACCOUNTS_BUCKET: &str = "ufds_accounts";
pub const KEYS_BUCKET: &str = "ufds_keys";
/// Version of the accounts bucket's config; raise it when an index is added. 2 added
/// `groups`.
pub const ACCOUNTS_BUCKET_VERSION: u32 = 2;
/// Version of the keys bucket's config.
pub const KEYS_BUCKET_VERSION: u32 = 1;
/// Objects one `reindexObjects` call rewrites after an index is added.
const REINDEX_BATCH: u32 = 500;
/// Most accounts one ListAccounts returns (Triton's internal-API page limit).
pub const MAX_LIMIT: u32 = 1000;
/// Most keys one account may hold; ListKeys returns them all.
pub const MAX_KEYS_PER_ACCOUNT: u64 = 1000;

/// The bucket configs UFDS needs.
pub fn buckets() -> [(&'static str, BucketConfig); 2] {
    [
        (
            ACCOUNTS_BUCKET,
            BucketConfig::versioned(ACCOUNTS_BUCKET_VERSION)
                .with_index("uuid", IndexDef::unique("string"))
                .with_index("login", IndexDef::unique("string"))
                .with_index("email", IndexDef::new("string"))
                .with_index("approved_for_provisioning", IndexDef::new("boolean"))
                .with_index("created_at", IndexDef::new("string"))
                .with_index("groups", IndexDef::new("[string]")),
        ),
        (
            KEYS_BUCKET,
            BucketConfig::versioned(KEYS_BUCKET_VERSION)
                .with_index("account_uuid", IndexDef::new("string"))
                .with_index("name", IndexDef::new("string"))
                .with_index("fingerprint", IndexDef::new("string"))
                .with_index("sha256_fingerprint", IndexDef::new("string"))
                .with_index("account_name", IndexDef::unique("string")),
        ),
    ]
}

#[derive(Debug, Clone)]
pub struct Ufds {
    accounts: Bucket<Account>,
    keys: Bucket<StoredKey>,
}

impl Ufds {
    pub fn new(moray: MorayClient) -> Self {
        let [(accounts, accounts_config), (keys, keys_config)] = buckets();
        Ufds {
            accounts: Bucket::new(moray.clone(), accounts, accounts_config),
            keys: Bucket::new(moray, keys, keys_config),
        }
    }

    fn moray(&self) -> &MorayClient {
        self.accounts.client()
    }

    /// Creates or upgrades the buckets, then indexes accounts written before an index
    /// was added (version 1 had no `groups`), so every filter works once UFDS serves.
    pub async fn ensure_buckets(&self) -> Result<()> {
        tokio::try_join!(self.accounts.ensure(), self.keys.ensure())
            .map_err(Error::moray("putBucket"))?;
        loop {
            let r = self
                .moray()
                .reindex_objects(ACCOUNTS_BUCKET, REINDEX_BATCH)
                .await
                .map_err(Error::moray("reindexObjects"))?;
            if r.processed == 0 {
                return Ok(());
            }
            tracing::info!(
                processed = r.processed,
                remaining = r.remaining,
                "reindexed accounts"
            );
        }
    }

    // ------------------------------------------------------------ accounts

    pub async fn create_account(&self, req: proto::CreateAccountRequest) -> Result<Account> {
        let now = now_rfc3339();
        let account = Account {
            uuid: if req.uuid.is_empty() {
                uuid::Uuid::new_v4().to_string()
            } else {
                req.uuid
            },
            login: req.login,
            email: req.email,
            cn: req.cn,
            givenname: req.givenname,
            sn: req.sn,
            company: req.company,
            address: req.address,
            city: req.city,
            state: req.state,
            postalcode: req.postalcode,
            country: req.country,
            phone: req.phone,
            approved_for_provisioning: req.approved_for_provisioning,
            triton_cns_enabled: req.triton_cns_enabled,
            default_network: String::new(),
            groups: Vec::new(),
            created_at: now.clone(),
            updated_at: now,
        };
        let errors = account.validate();
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        match self.accounts.insert(&account.uuid, &account).await {
            Ok(_) => Ok(account),
            Err(e) if is_etag_conflict(&e) => Err(Error::conflict("uuid", &account.uuid, "")),
            Err(e) if is_unique_violation(&e, "login") => {
                Err(Error::conflict("login", &account.login, ""))
            }
            Err(e) => Err(Error::moray("putObject")(e)),
        }
    }

    pub async fn get_account(&self, reference: &str) -> Result<Account> {
        self.resolve(reference).await.map(|a| a.value)
    }

    pub async fn list_accounts(
        &self,
        req: &proto::ListAccountsRequest,
    ) -> Result<(Vec<Account>, u64)> {
        let errors = [("login", &req.login), ("email", &req.email)]
            .into_iter()
            .filter_map(|(field, value)| account::check_text(field, value))
            .collect();
        let mut terms = Vec::new();
        if !req.login.is_empty() {
            terms.push(Filter::glob("login", &req.login));
        }
        if !req.email.is_empty() {
            terms.push(Filter::glob("email", &req.email));
        }
        if let Some(approved) = req.approved_for_provisioning {
            terms.push(Filter::eq("approved_for_provisioning", approved));
        }
        let filter = Filter::and_else(terms, Filter::present("login"));
        self.listing(errors, &filter, req.limit, req.offset).await
    }

    /// The accounts `filter` matches, ordered by login, a page of `limit` (at most
    /// [`MAX_LIMIT`]) from `offset`, and how many match; refused with `errors` (the
    /// request's other field errors) and a `limit` past the maximum.
    async fn listing(
        &self,
        mut errors: Vec<FieldError>,
        filter: &Filter,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<Account>, u64)> {
        if limit > MAX_LIMIT {
            errors.push(FieldError::invalid(
                "limit",
                format!("must be at most {MAX_LIMIT}"),
            ));
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let options = FindOptions::listing("login", SortOrder::Asc, limit, MAX_LIMIT, offset);
        self.accounts
            .find_counted(filter, &options)
            .await
            .map_err(Error::moray("findObjects"))
    }

    pub async fn update_account(&self, req: proto::UpdateAccountRequest) -> Result<Account> {
        self.change_account(&req.account, |account| {
            triton_common::set_given!(req => account [
                cn,
                givenname,
                sn,
                company,
                address,
                city,
                state,
                postalcode,
                country,
                phone,
                email,
                default_network,
                approved_for_provisioning,
                triton_cns_enabled,
            ]);
            account.updated_at = now_rfc3339();
            let errors = account.validate();
            if !errors.is_empty() {
                return Err(Error::Invalid(errors));
            }
            Ok(Change::Write)
        })
        .await
    }

    // ------------------------------------------------------------ groups

    /// Makes the account a member of `group` (no write when it is one already).
    pub async fn add_group_member(&self, req: &proto::GroupMemberRequest) -> Result<Account> {
        self.change_membership(req, true).await
    }

    /// Takes the account out of `group` (no write when it is not a member).
    pub async fn remove_group_member(&self, req: &proto::GroupMemberRequest) -> Result<Account> {
        self.change_membership(req, false).await
    }

    async fn change_membership(
        &self,
        req: &proto::GroupMemberRequest,
        member: bool,
    ) -> Result<Account> {
        let mut errors = Vec::new();
        if let Some(e) = account::check_group("group", &req.group) {
            errors.push(e);
        }
        if req.account.is_empty() {
            errors.push(FieldError::missing("account"));
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let group = req.group.as_str();
        self.change_account(&req.account, |account| {
            let position = account.groups.binary_search_by(|g| g.as_str().cmp(group));
            match (member, position) {
                (true, Ok(_)) | (false, Err(_)) => return Ok(Change::Keep),
                (true, Err(at)) => {
                    if account.groups.len() >= account::MAX_GROUPS_PER_ACCOUNT {
                        return Err(Error::invalid(
                            "group",
                            format!(
                                "{group:?} cannot be added: account {} is already a member \
                                     of {} groups, the most allowed",
                                account.login,
                                account::MAX_GROUPS_PER_ACCOUNT
                            ),
                        ));
                    }
                    account.groups.insert(at, group.to_string());
                }
                (false, Ok(at)) => {
                    account.groups.remove(at);
                }
            }
            account.updated_at = now_rfc3339();
            Ok(Change::Write)
        })
        .await
    }

    /// Read-modify-write of the account `account` (uuid or login) names: `change` edits
    /// it in place and says whether to write. A missing account, a write that lost every
    /// race and Moray's failures come back as UFDS's errors.
    async fn change_account(
        &self,
        account: &str,
        change: impl FnMut(&mut Account) -> Result<Change>,
    ) -> Result<Account> {
        let uuid = self.resolve(account).await?.value.uuid;
        let updated = self.accounts.update(&uuid, change).await;
        updated.map(|v| v.value).map_err(|e| {
            e.resolve(
                || Error::AccountNotFound(account.to_string()),
                || busy(account),
                Error::moray("putObject"),
            )
        })
    }

    /// The members of `group` ordered by login, and how many there are.
    pub async fn list_group_members(
        &self,
        req: &proto::ListGroupMembersRequest,
    ) -> Result<(Vec<Account>, u64)> {
        let errors = account::check_group("group", &req.group)
            .into_iter()
            .collect();
        let filter = Filter::eq("groups", &req.group);
        self.listing(errors, &filter, req.limit, req.offset).await
    }

    /// Deletes the account and its keys in one batch; returns how many keys went.
    pub async fn delete_account(&self, reference: &str) -> Result<u64> {
        let mut tries = RetryPolicy::DEFAULT.start();
        loop {
            let Versioned {
                value: account,
                etag,
            } = self.resolve(reference).await?;
            let ops = [
                BatchOp::Delete {
                    bucket: ACCOUNTS_BUCKET.to_string(),
                    key: account.uuid.clone(),
                    etag: EtagCondition::Is(etag),
                },
                BatchOp::DeleteMany {
                    bucket: KEYS_BUCKET.to_string(),
                    filter: Filter::eq("account_uuid", &account.uuid).to_string(),
                    options: FindOptions {
                        no_limit: true,
                        ..Default::default()
                    },
                },
            ];
            match self.moray().batch(&ops).await {
                Ok(results) => return Ok(results.get(1).map(|r| r.count).unwrap_or(0)),
                Err(e) if is_etag_conflict(&e) && tries.again().await => continue,
                Err(e) if is_etag_conflict(&e) => return Err(busy(reference)),
                Err(e) if e.name() == "ObjectNotFoundError" => {
                    return Err(Error::AccountNotFound(reference.to_string()));
                }
                Err(e) => return Err(Error::moray("batch")(e)),
            }
        }
    }

    /// The account named by uuid or login, with its etag.
    async fn resolve(&self, reference: &str) -> Result<Versioned<Account>> {
        if reference.is_empty() {
            return Err(Error::missing("account"));
        }
        if account::is_uuid(reference) {
            return self
                .accounts
                .get(reference)
                .await
                .map_err(Error::moray("getObject"))?
                .ok_or_else(|| Error::AccountNotFound(reference.to_string()));
        }
        if reference.contains('-') {
            // Not a login (logins have no '-'), and not a well-formed uuid either.
            return Err(Error::invalid(
                "account",
                format!("{reference:?} is neither a UUID nor a login"),
            ));
        }
        if let Some(e) = account::check_text("account", reference) {
            return Err(Error::Invalid(vec![e]));
        }
        self.accounts
            .find(&Filter::eq("login", reference), &FindOptions::limit(1))
            .await
            .map_err(Error::moray("findObjects"))?
            .into_iter()
            .next()
            .ok_or_else(|| Error::AccountNotFound(reference.to_string()))
    }

    // ------------------------------------------------------------ keys

    pub async fn create_key(&self, req: proto::CreateKeyRequest) -> Result<StoredKey> {
        let mut errors = Vec::new();
        if req.account.is_empty() {
            errors.push(FieldError::missing("account"));
        }
        if let Some(e) = key::check_key_name(&req.name) {
            errors.push(e);
        }
        let parsed = if req.key.trim().is_empty() {
            errors.push(FieldError::missing("key"));
            None
        } else {
            match PublicKey::parse_openssh(&req.key) {
                Ok(k) => Some(k),
                Err(e) => {
                    errors.push(FieldError::invalid("key", format!("is invalid: {e}")));
                    None
                }
            }
        };
        let Some(parsed) = parsed.filter(|_| errors.is_empty()) else {
            return Err(Error::Invalid(errors));
        };

        let mut tries = RetryPolicy::DEFAULT.start();
        loop {
            let Versioned {
                value: account,
                etag,
            } = self.resolve(&req.account).await?;
            let record = StoredKey::new(&account.uuid, &req.name, &parsed, &now_rfc3339());
            let existing = self.account_keys(&account.uuid).await?;
            if existing.len() as u64 >= MAX_KEYS_PER_ACCOUNT {
                return Err(Error::invalid(
                    "key",
                    format!("account already holds {MAX_KEYS_PER_ACCOUNT} keys, the most allowed"),
                ));
            }
            if existing.iter().any(|k| k.fingerprint == record.fingerprint) {
                return Err(fingerprint_conflict(&record));
            }
            if existing.iter().any(|k| k.name == record.name) {
                return Err(name_conflict(&record));
            }
            // Re-writing the account unchanged, conditioned on its etag, fences off a
            // concurrent DeleteAccount.
            let ops = [
                self.accounts
                    .put_op(&account.uuid, &account, EtagCondition::Is(etag))
                    .map_err(Error::moray("batch"))?,
                self.keys
                    .put_op(&record.moray_key(), &record, EtagCondition::MustNotExist)
                    .map_err(Error::moray("batch"))?,
            ];
            match self.moray().batch(&ops).await {
                Ok(_) => return Ok(record),
                Err(e) if is_unique_violation(&e, "account_name") => {
                    return Err(name_conflict(&record));
                }
                Err(e) if is_etag_conflict(&e) => {
                    // Either the account changed (try again) or the key appeared.
                    let stored = self
                        .moray()
                        .get_object(KEYS_BUCKET, &record.moray_key())
                        .await
                        .map_err(Error::moray("getObject"))?;
                    if stored.is_some() {
                        return Err(fingerprint_conflict(&record));
                    }
                    if !tries.again().await {
                        return Err(busy(&req.account));
                    }
                }
                Err(e) => return Err(Error::moray("batch")(e)),
            }
        }
    }

    pub async fn get_key(&self, account: &str, key: &str) -> Result<StoredKey> {
        let account = self.resolve(account).await?.value;
        self.find_account_key(&account.uuid, key).await
    }

    pub async fn list_keys(&self, account: &str) -> Result<Vec<StoredKey>> {
        let account = self.resolve(account).await?.value;
        self.account_keys(&account.uuid).await
    }

    pub async fn delete_key(&self, account: &str, key: &str) -> Result<()> {
        let account = self.resolve(account).await?.value;
        let record = self.find_account_key(&account.uuid, key).await?;
        match self
            .keys
            .delete(&record.moray_key(), EtagCondition::Any)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.name() == "ObjectNotFoundError" => Err(Error::KeyNotFound {
                account: account.login,
                key: key.to_string(),
            }),
            Err(e) => Err(Error::moray("delObject")(e)),
        }
    }

    /// Keys with `fingerprint` (MD5 or SHA256) in any account.
    pub async fn find_keys(&self, fingerprint: &str) -> Result<Vec<StoredKey>> {
        if fingerprint.is_empty() {
            return Err(Error::missing("fingerprint"));
        }
        let filter = match normalize_fingerprint(fingerprint) {
            Some(Fingerprint::Md5(fp)) => Filter::eq("fingerprint", &fp),
            Some(Fingerprint::Sha256(fp)) => Filter::eq("sha256_fingerprint", &fp),
            None => {
                return Err(Error::invalid(
                    "fingerprint",
                    format!(
                        "{fingerprint:?} is neither an MD5 (aa:bb:...) nor a SHA256:... fingerprint"
                    ),
                ));
            }
        };
        self.find_keys_by(&filter).await
    }

    async fn account_keys(&self, account_uuid: &str) -> Result<Vec<StoredKey>> {
        self.find_keys_by(&Filter::eq("account_uuid", account_uuid))
            .await
    }

    async fn find_keys_by(&self, filter: &Filter) -> Result<Vec<StoredKey>> {
        let options = FindOptions {
            limit: Some(MAX_KEYS_PER_ACCOUNT),
            sort: vec![Sort {
                attribute: "name".to_string(),
                order: SortOrder::Asc,
            }],
            no_count: true,
            ..Default::default()
        };
        self.keys
            .find_values(filter, &options)
            .await
            .map_err(Error::moray("findObjects"))
    }

    /// The key of an account named by fingerprint (MD5 or SHA256) or by name. A
    /// fingerprint match wins over a name match, as a name may look like a fingerprint.
    async fn find_account_key(&self, account_uuid: &str, reference: &str) -> Result<StoredKey> {
        if reference.is_empty() {
            return Err(Error::missing("key"));
        }
        if let Some(e) = account::check_text("key", reference) {
            return Err(Error::Invalid(vec![e]));
        }
        let keys = self.account_keys(account_uuid).await?;
        let by_fingerprint = match normalize_fingerprint(reference) {
            Some(Fingerprint::Md5(fp)) => keys.iter().find(|k| k.fingerprint == fp),
            Some(Fingerprint::Sha256(fp)) => keys.iter().find(|k| k.sha256_fingerprint == fp),
            None => None,
        };
        by_fingerprint
            .or_else(|| keys.iter().find(|k| k.name == reference))
            .cloned()
            .ok_or_else(|| Error::KeyNotFound {
                account: account_uuid.to_string(),
                key: reference.to_string(),
            })
    }
}

fn fingerprint_conflict(record: &StoredKey) -> Error {
    Error::conflict(
        "fingerprint",
        &record.fingerprint,
        " (the account already has this key)",
    )
}

fn name_conflict(record: &StoredKey) -> Error {
    Error::conflict(
        "name",
        &record.name,
        " (the account already has a key of this name)",
    )
}

fn busy(account: &str) -> Error {
    Error::Store(StoreError::Busy(format!(
        "account {account} changed {} times during the request; try again",
        RetryPolicy::DEFAULT.attempts
    )))
}
