//! SSH keys of an account (UFDS `sdckey`): the stored form and key-name rules.

use serde::{Deserialize, Serialize};

use crate::error::{Error, FieldError, StoreError, invalid_value};
use crate::ssh_key::PublicKey;

/// Longest key name accepted.
pub const MAX_KEY_NAME_LEN: usize = 256;

/// A key as stored in `ufds_keys`, under the Moray key `<account_uuid>/<fingerprint>`
/// (so one account holds a key once). `account_name` (`<account_uuid>/<name>`) carries
/// a unique index: key names are unique within an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    pub account_uuid: String,
    pub name: String,
    pub fingerprint: String,
    pub sha256_fingerprint: String,
    #[serde(rename = "type")]
    pub key_type: String,
    pub bits: u32,
    pub openssh: String,
    pub pkcs: String,
    #[serde(default)]
    pub comment: String,
    pub created_at: String,
    pub account_name: String,
}

impl StoredKey {
    /// The record for `key` in `account_uuid`, named `name` (the MD5 fingerprint when
    /// empty, as node-ufds does).
    pub fn new(account_uuid: &str, name: &str, key: &PublicKey, now: &str) -> StoredKey {
        let fingerprint = key.md5_fingerprint();
        let name = if name.is_empty() {
            fingerprint.clone()
        } else {
            name.to_string()
        };
        StoredKey {
            account_uuid: account_uuid.to_string(),
            account_name: account_name(account_uuid, &name),
            name,
            sha256_fingerprint: key.sha256_fingerprint(),
            key_type: key.key_type.clone(),
            bits: key.bits,
            openssh: key.to_openssh(),
            pkcs: key.to_pkcs8_pem(),
            comment: key.comment.clone(),
            created_at: now.to_string(),
            fingerprint,
        }
    }

    /// The Moray key of this record.
    pub fn moray_key(&self) -> String {
        moray_key(&self.account_uuid, &self.fingerprint)
    }

    /// The wire blob, re-read from the stored OpenSSH text.
    pub fn blob(&self) -> Result<Vec<u8>, Error> {
        PublicKey::parse_openssh(&self.openssh)
            .map(|k| k.blob)
            .map_err(|e| {
                StoreError::corrupt(format!("key {}", self.moray_key()), e.to_string()).into()
            })
    }
}

pub fn moray_key(account_uuid: &str, fingerprint: &str) -> String {
    format!("{account_uuid}/{fingerprint}")
}

pub fn account_name(account_uuid: &str, name: &str) -> String {
    format!("{account_uuid}/{name}")
}

/// Key names appear in CloudAPI paths (`/:login/keys/:name`): 1 to 256 characters, no
/// `/`, no control characters. Empty is allowed here (it means "use the fingerprint").
pub fn check_key_name(name: &str) -> Option<FieldError> {
    let reason = if name.chars().count() > MAX_KEY_NAME_LEN {
        Some(format!(
            "must be at most {MAX_KEY_NAME_LEN} characters long"
        ))
    } else if name.contains('/') {
        Some("must not contain '/'".into())
    } else if name.chars().any(char::is_control) {
        Some("must not contain control characters".into())
    } else if name != name.trim() {
        Some("must not start or end with whitespace".into())
    } else {
        None
    };
    invalid_value("name", name, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names() {
        for ok in ["", "laptop", "bob@host (work)", &"k".repeat(256)] {
            assert_eq!(check_key_name(ok), None, "{ok}");
        }
        for bad in ["a/b", "tab\there", " lead", &"k".repeat(257) as &str] {
            let e = check_key_name(bad).expect(bad);
            assert_eq!(e.field, "name");
        }
    }
}
