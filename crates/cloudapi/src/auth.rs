//! Who is calling: the HTTP signature checked against the account's key in UFDS
//! (sdc-cloudapi `lib/auth.js`), then the account named in the path checked against
//! the caller (`my` is the caller).

use std::time::{Duration, SystemTime};

use axum::extract::Request;
use triton_proto::ufds::v1 as ufds;

use crate::AppState;
use crate::error::ApiError;
use crate::http_signature::{self, KeyId, ParseError, PublicKey, RequestView};

/// The authenticated caller, in the request's extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account: ufds::Account,
    /// The keyId the request was signed with.
    pub key_id: String,
}

const MUST_AUTHENTICATE: &str = "You must make authenticated requests to use CloudAPI";
const INVALID_SIGNATURE: &str = "The signature we calculated does not match the one you sent";

/// What of a request authentication reads (a copy: the body is not `Sync`).
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: http::Method,
    pub uri: http::Uri,
    pub version: http::Version,
    pub headers: http::HeaderMap,
}

impl RequestHead {
    pub fn of(req: &Request) -> RequestHead {
        RequestHead {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        }
    }
}

/// Checks the request's signature and the path's account; the caller on success.
pub async fn authenticate(app: &AppState, req: &RequestHead) -> Result<Caller, ApiError> {
    let url = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let http_version = match req.version {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2.0",
        _ => "1.1",
    };
    let view = RequestView {
        method: req.method.as_str(),
        url,
        http_version,
        headers: &req.headers,
    };
    let parsed = http_signature::parse_request(
        &view,
        Duration::from_secs(app.config.clock_skew_secs),
        SystemTime::now(),
    )
    .map_err(|e| match e {
        ParseError::Missing => ApiError::invalid_credentials(MUST_AUTHENTICATE),
        ParseError::UnsupportedAlgorithm(_) => ApiError::invalid_credentials(e.to_string()),
        other => ApiError::invalid_header(format!("Authorization header invalid: {other}")),
    })?;

    let key_id = KeyId::parse(&parsed.key_id).ok_or_else(|| {
        ApiError::invalid_credentials(format!(
            "Invalid KeyId {} in authorization header",
            parsed.key_id
        ))
    })?;
    if let Some(user) = &key_id.subuser {
        // Sub-users (RBAC) are not kept in UFDS yet.
        return Err(ApiError::invalid_credentials(format!(
            "Invalid account {user}"
        )));
    }

    let mut ufds_client = app.backends.ufds.clone();
    let request = ufds::GetAccountRequest {
        account: key_id.login.clone(),
    };
    let answer = ufds_client.get_account(request).await;
    let account = credential(answer, "account", &key_id.login)?;
    // A login never contains '-', so a uuid in the keyId would find the account by
    // uuid: Triton's keyId names the login.
    if account.login != key_id.login {
        return Err(ApiError::invalid_credentials(format!(
            "Invalid account {}",
            key_id.login
        )));
    }
    let request = ufds::GetKeyRequest {
        account: account.uuid.clone(),
        key: key_id.key.clone(),
    };
    let key = credential(ufds_client.get_key(request).await, "key", &key_id.key)?;
    let public = PublicKey::from_ssh_blob(&key.blob).map_err(|e| {
        tracing::warn!(error = %e, key = %key.fingerprint, "stored key does not parse");
        ApiError::invalid_credentials(INVALID_SIGNATURE)
    })?;
    http_signature::verify(
        &public,
        &parsed.algorithm,
        parsed.signing_string.as_bytes(),
        &parsed.signature,
    )
    .map_err(|e| {
        tracing::info!(error = %e, key_id = %parsed.key_id, "signature refused");
        match e {
            // A key stored before the rule: say why it no longer signs.
            http_signature::VerifyError::WeakKey { .. } => {
                ApiError::invalid_credentials(format!("{e}; add a stronger key"))
            }
            _ => ApiError::invalid_credentials(INVALID_SIGNATURE),
        }
    })?;

    check_path_account(app, req.uri.path(), &account).await?;
    Ok(Caller {
        account,
        key_id: parsed.key_id,
    })
}

/// Whether UFDS answered that what was asked for does not exist (or cannot, by its
/// form).
fn is_unknown(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::NotFound
        || s.code() == tonic::Code::InvalidArgument
        || triton_common::status::error_name(s) == Some("ResourceNotFound")
}

/// What a request authenticates with, as UFDS answered: one it does not have is
/// `Invalid <what> <name>`; UFDS failing is an internal error.
fn credential<T>(
    answer: Result<tonic::Response<T>, tonic::Status>,
    what: &str,
    name: &str,
) -> Result<T, ApiError> {
    match answer {
        Ok(r) => Ok(r.into_inner()),
        Err(s) if is_unknown(&s) => Err(ApiError::invalid_credentials(format!(
            "Invalid {what} {name}"
        ))),
        Err(s) => {
            tracing::error!(error = %s, what, "UFDS failed during authentication");
            Err(ApiError::internal(format!(
                "Unexpected error fetching {what}"
            )))
        }
    }
}

/// The first path segment names the account acted on: `my` or the caller's login.
/// Another existing account is forbidden (Triton: NotAuthorized), an unknown one not
/// found.
async fn check_path_account(
    app: &AppState,
    path: &str,
    caller: &ufds::Account,
) -> Result<(), ApiError> {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let login = percent_decode(first);
    if login.is_empty() || login == "my" || login == caller.login {
        return Ok(());
    }
    let mut ufds_client = app.backends.ufds.clone();
    match ufds_client
        .get_account(ufds::GetAccountRequest {
            account: login.clone(),
        })
        .await
    {
        Ok(_) => Err(ApiError::not_authorized(format!(
            "You do not have permission to access {login}"
        ))),
        Err(s) if is_unknown(&s) => Err(ApiError::not_found(format!("{login} does not exist"))),
        Err(s) => Err(ApiError::backend("ufds", s)),
    }
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}
