//! Who is calling: the client certificate ([`crate::cert`]) against the account and key
//! it names in UFDS, with a short cache so a scrape costs no UFDS call and no signature
//! check. An entry lives `auth_cache_secs` (10 s by default): a key deleted from the
//! account stops working within that, and so does a removal from the `operators` group
//! (read from the same account record).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use triton_proto::ufds::v1 as ufds;
use triton_proto::ufds::v1::ufds_client::UfdsClient;
use uuid::Uuid;

use crate::cert::{self, Refusal, SshKey};
use crate::error::ApiError;

/// Certificates remembered at once; past it the cache starts again empty.
const MAX_ENTRIES: usize = 16_384;
/// The UFDS group whose members are operators (Triton's `cn=operators, ou=groups,
/// o=smartdc`, which mahi turns into `isOperator`).
pub const OPERATORS_GROUP: &str = "operators";

/// The authenticated account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uuid: Uuid,
    pub login: String,
    /// A member of UFDS's `operators` group: sees compute nodes.
    pub operator: bool,
}

struct Entry {
    at: Instant,
    /// A `joyentCmon` certificate's end, checked on every request.
    not_after: Option<i64>,
    result: Result<Caller, Refusal>,
}

/// Checks certificates against UFDS, remembering each answer for a while.
pub struct Authenticator {
    ufds: UfdsClient<Channel>,
    ttl: Duration,
    cache: Mutex<HashMap<Vec<u8>, Entry>>,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn is_unknown(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::NotFound
        || s.code() == tonic::Code::InvalidArgument
        || triton_common::status::error_name(s) == Some("ResourceNotFound")
}

/// UFDS's answer; `None` when it knows no such account or key. Its other failures are
/// logged and answered as an internal error.
fn known<T>(answer: Result<tonic::Response<T>, tonic::Status>) -> Result<Option<T>, ApiError> {
    match answer {
        Ok(r) => Ok(Some(r.into_inner())),
        Err(s) if is_unknown(&s) => Ok(None),
        Err(s) => {
            tracing::error!(error = %s, "UFDS failed during authentication");
            Err(ApiError::internal())
        }
    }
}

impl Authenticator {
    pub fn new(ufds: UfdsClient<Channel>, ttl: Duration) -> Self {
        Authenticator {
            ufds,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The account `der` (the peer's end-entity certificate) authenticates, or 401.
    pub async fn authenticate(&self, der: Option<&[u8]>) -> Result<Caller, ApiError> {
        let der = der.ok_or_else(|| ApiError::unauthorized(Refusal::Missing.to_string()))?;
        let now = unix_now();
        if let Ok(cache) = self.cache.lock()
            && let Some(entry) = cache.get(der)
            && entry.at.elapsed() < self.ttl
        {
            if entry.not_after.is_some_and(|end| now > end) {
                return Err(ApiError::unauthorized(Refusal::Expired.to_string()));
            }
            return entry
                .result
                .clone()
                .map_err(|r| ApiError::unauthorized(r.to_string()));
        }
        let claim = match cert::inspect(der, now) {
            Ok(c) => c,
            Err(r) => {
                tracing::info!(reason = %r, "client certificate refused");
                return Err(ApiError::unauthorized(r.to_string()));
            }
        };
        let result = self.check(&claim).await?;
        if let Err(r) = &result {
            tracing::info!(reason = %r, login = %claim.login, "client certificate refused");
        }
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
            cache.insert(
                der.to_vec(),
                Entry {
                    at: Instant::now(),
                    not_after: claim.not_after,
                    result: result.clone(),
                },
            );
        }
        result.map_err(|r| ApiError::unauthorized(r.to_string()))
    }

    /// UFDS's answer for `claim`: the caller, a refusal (remembered), or a failure of
    /// UFDS itself (500, not remembered).
    async fn check(&self, claim: &cert::Claim) -> Result<Result<Caller, Refusal>, ApiError> {
        let mut client = self.ufds.clone();
        let request = ufds::GetAccountRequest {
            account: claim.login.clone(),
        };
        let Some(account) = known(client.get_account(request).await)? else {
            return Ok(Err(Refusal::UnknownKey));
        };
        // GetAccount also finds by uuid: the certificate must name the login.
        if account.login != claim.login {
            return Ok(Err(Refusal::UnknownKey));
        }
        let Ok(uuid) = Uuid::parse_str(&account.uuid) else {
            return Ok(Err(Refusal::UnknownKey));
        };
        let request = ufds::GetKeyRequest {
            account: account.uuid.clone(),
            key: claim.fingerprint.clone(),
        };
        let Some(key) = known(client.get_key(request).await)? else {
            return Ok(Err(Refusal::UnknownKey));
        };
        // GetKey also finds by name: the fingerprint must be the key's.
        if key.fingerprint != claim.fingerprint {
            return Ok(Err(Refusal::UnknownKey));
        }
        let verified = SshKey::from_blob(&key.blob).and_then(|k| k.verify(claim));
        Ok(verified.map(|()| Caller {
            uuid,
            operator: account.groups.iter().any(|g| g == OPERATORS_GROUP),
            login: account.login,
        }))
    }
}
