//! What a client certificate claims, read without trusting it (triton-cmon
//! `lib/common.js` authenticationHandler, sshpk's X.509 reading), and the check of its
//! signature against an SSH key. No I/O: the fuzz target runs [`inspect`] on any bytes.
//!
//! Two kinds of certificate are accepted, as Triton's CMon accepts them:
//! - the older self-signed one: subject CN = the login, the certificate's own key one
//!   of the account's SSH keys, signed by it; its dates are not checked;
//! - one with the `joyentCmon` extended key usage (what `triton profile cmon-certgen`
//!   makes): refused once expired; when its issuer is not its subject, the issuer CN is
//!   the MD5 fingerprint of the account key that signed it (sshpk writes
//!   `MD5:<base64>`), and the certificate's own key is free (a fresh key for CMon only).

use base64::Engine as _;
use md5::{Digest as _, Md5};
use x509_parser::prelude::{FromDer as _, X509Certificate};
use x509_parser::public_key::PublicKey as SpkiKey;

/// The `joyentCmon` purpose: OID 1.3.6.1.4.1.38678.1.4.2.
pub const JOYENT_CMON_EKU: &str = "1.3.6.1.4.1.38678.1.4.2";
/// Ed25519 keys and signatures (RFC 8410).
const ED25519_OID: &str = "1.3.101.112";

/// Why a certificate is refused. The text is the caller's own business (it names only
/// what is in the certificate they sent), so it goes into the 401 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("a client certificate is required")]
    Missing,
    #[error("the client certificate is not DER X.509: {0}")]
    Malformed(String),
    #[error("the client certificate has no subject CN (the account login)")]
    NoSubject,
    #[error("the client certificate (joyentCmon) has expired")]
    Expired,
    #[error(
        "the client certificate's issuer CN must be the MD5 fingerprint of the account key that signed it"
    )]
    BadIssuer,
    #[error("the client certificate's key type is not supported: {0}")]
    UnsupportedKey(String),
    #[error("the client certificate's signature algorithm {0} is not supported")]
    UnsupportedAlgorithm(String),
    #[error("ed25519 keys cannot sign CMon certificates; use an ECDSA or RSA key")]
    Ed25519,
    #[error("the client certificate is not signed by a key of the account it names")]
    NotSigned,
    #[error("the client certificate does not name a key of an account")]
    UnknownKey,
}

/// The signature's hash, from the certificate's signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigAlg {
    EcdsaSha256,
    EcdsaSha384,
    EcdsaSha512,
    RsaSha1,
    RsaSha256,
    RsaSha384,
    RsaSha512,
}

impl SigAlg {
    fn from_oid(oid: &str) -> Result<SigAlg, Refusal> {
        Ok(match oid {
            "1.2.840.10045.4.3.2" => SigAlg::EcdsaSha256,
            "1.2.840.10045.4.3.3" => SigAlg::EcdsaSha384,
            "1.2.840.10045.4.3.4" => SigAlg::EcdsaSha512,
            "1.2.840.113549.1.1.5" => SigAlg::RsaSha1,
            "1.2.840.113549.1.1.11" => SigAlg::RsaSha256,
            "1.2.840.113549.1.1.12" => SigAlg::RsaSha384,
            "1.2.840.113549.1.1.13" => SigAlg::RsaSha512,
            ED25519_OID => return Err(Refusal::Ed25519),
            other => return Err(Refusal::UnsupportedAlgorithm(other.to_string())),
        })
    }
}

/// What a certificate claims: whose it is, which key signed it, and what to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The subject CN: the account's login.
    pub login: String,
    /// MD5 fingerprint, colon-separated lower-case hex, of the key that must have
    /// signed the certificate (UFDS's key `fingerprint`).
    pub fingerprint: String,
    /// Carries the `joyentCmon` purpose.
    pub joyent_cmon: bool,
    /// Unix seconds after which a `joyentCmon` certificate is refused; `None` for the
    /// older kind, whose dates are ignored.
    pub not_after: Option<i64>,
    /// The signed part (the DER TBSCertificate), its algorithm and signature.
    pub tbs: Vec<u8>,
    pub alg: SigAlg,
    pub signature: Vec<u8>,
}

/// Reads `der` as Triton's CMon does, at `now` (Unix seconds).
pub fn inspect(der: &[u8], now: i64) -> Result<Claim, Refusal> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| Refusal::Malformed(e.to_string()))?;
    let login = common_name(cert.subject()).ok_or(Refusal::NoSubject)?;
    let joyent_cmon = match cert.extended_key_usage() {
        Ok(Some(eku)) => eku
            .value
            .other
            .iter()
            .any(|oid| oid.to_id_string() == JOYENT_CMON_EKU),
        Ok(None) => false,
        Err(e) => return Err(Refusal::Malformed(e.to_string())),
    };
    let self_signed = cert.subject().as_raw() == cert.issuer().as_raw();
    let mut not_after = None;
    let fingerprint = if joyent_cmon {
        let end = cert.validity().not_after.timestamp();
        if now > end {
            return Err(Refusal::Expired);
        }
        not_after = Some(end);
        if self_signed {
            md5_fingerprint(&ssh_blob_of_spki(&cert)?)
        } else {
            let issuer = common_name(cert.issuer()).ok_or(Refusal::BadIssuer)?;
            parse_md5_fingerprint(&issuer).ok_or(Refusal::BadIssuer)?
        }
    } else {
        md5_fingerprint(&ssh_blob_of_spki(&cert)?)
    };
    let alg = SigAlg::from_oid(&cert.signature_algorithm.algorithm.to_id_string())?;
    Ok(Claim {
        login,
        fingerprint,
        joyent_cmon,
        not_after,
        tbs: cert.tbs_certificate.as_ref().to_vec(),
        alg,
        signature: cert.signature_value.data.to_vec(),
    })
}

fn common_name(name: &x509_parser::x509::X509Name<'_>) -> Option<String> {
    let cn = name.iter_common_name().next()?.as_str().ok()?;
    (!cn.is_empty()).then(|| cn.to_string())
}

/// The SSH wire blob of the certificate's own public key (what an MD5 key fingerprint
/// hashes).
fn ssh_blob_of_spki(cert: &X509Certificate<'_>) -> Result<Vec<u8>, Refusal> {
    let spki = cert.public_key();
    if spki.algorithm.algorithm.to_id_string() == ED25519_OID {
        return Err(Refusal::Ed25519);
    }
    let parsed = spki
        .parsed()
        .map_err(|e| Refusal::UnsupportedKey(e.to_string()))?;
    let mut blob = Vec::new();
    match parsed {
        SpkiKey::RSA(rsa) => {
            put_string(&mut blob, b"ssh-rsa");
            put_mpint(&mut blob, rsa.exponent);
            put_mpint(&mut blob, rsa.modulus);
        }
        SpkiKey::EC(point) => {
            let curve = curve_of_point(point.data())?;
            put_string(&mut blob, format!("ecdsa-sha2-{curve}").as_bytes());
            put_string(&mut blob, curve.as_bytes());
            put_string(&mut blob, point.data());
        }
        _ => {
            return Err(Refusal::UnsupportedKey(
                spki.algorithm.algorithm.to_id_string(),
            ));
        }
    }
    Ok(blob)
}

/// The curve of an uncompressed SEC1 point, by its length.
fn curve_of_point(point: &[u8]) -> Result<&'static str, Refusal> {
    match (point.first(), point.len()) {
        (Some(4), 65) => Ok("nistp256"),
        (Some(4), 97) => Ok("nistp384"),
        (Some(4), 133) => Ok("nistp521"),
        _ => Err(Refusal::UnsupportedKey(
            "an EC key other than an uncompressed P-256, P-384 or P-521 point".into(),
        )),
    }
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_mpint(out: &mut Vec<u8>, bytes: &[u8]) {
    let trimmed = strip_zeros(bytes);
    if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
        out.extend_from_slice(&(trimmed.len() as u32 + 1).to_be_bytes());
        out.push(0);
        out.extend_from_slice(trimmed);
    } else {
        put_string(out, trimmed);
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// MD5 of an SSH key blob, colon-separated lower-case hex (UFDS's `fingerprint`).
pub fn md5_fingerprint(blob: &[u8]) -> String {
    colon_hex(&Md5::digest(blob))
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An MD5 fingerprint as sshpk parses one: `MD5:<base64>` (padded or not), `MD5:` or
/// bare colon-separated hex, or 32 hex digits; as colon-separated lower-case hex.
pub fn parse_md5_fingerprint(text: &str) -> Option<String> {
    let body = text
        .strip_prefix("MD5:")
        .or_else(|| text.strip_prefix("md5:"))
        .unwrap_or(text);
    let hex: String = body.chars().filter(|c| *c != ':').collect();
    if hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) && body.len() >= 32 {
        let bytes: Option<Vec<u8>> = (0..16)
            .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        return bytes.map(|b| colon_hex(&b));
    }
    if body.len() == text.len() {
        // No `MD5:` prefix: base64 alone is another hash's form.
        return None;
    }
    let unpadded = body.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(unpadded)
        .ok()?;
    (bytes.len() == 16).then(|| colon_hex(&bytes))
}

/// An SSH public key as UFDS stores it (its wire blob), ready to check a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshKey {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ecdsa { curve: String, point: Vec<u8> },
}

impl SshKey {
    /// Reads an SSH wire blob; ed25519 and unknown types are refused with their reason.
    pub fn from_blob(blob: &[u8]) -> Result<SshKey, Refusal> {
        let bad = || Refusal::UnsupportedKey("a malformed SSH key".into());
        let mut r = blob;
        let kind = take_string(&mut r).ok_or_else(bad)?;
        match kind {
            b"ssh-rsa" => {
                let e = strip_zeros(take_string(&mut r).ok_or_else(bad)?).to_vec();
                let n = strip_zeros(take_string(&mut r).ok_or_else(bad)?).to_vec();
                Ok(SshKey::Rsa { n, e })
            }
            b"ecdsa-sha2-nistp256" | b"ecdsa-sha2-nistp384" | b"ecdsa-sha2-nistp521" => {
                let curve = String::from_utf8_lossy(take_string(&mut r).ok_or_else(bad)?);
                let point = take_string(&mut r).ok_or_else(bad)?.to_vec();
                Ok(SshKey::Ecdsa {
                    curve: curve.into_owned(),
                    point,
                })
            }
            b"ssh-ed25519" => Err(Refusal::Ed25519),
            other => Err(Refusal::UnsupportedKey(
                String::from_utf8_lossy(other).into_owned(),
            )),
        }
    }

    /// Whether `claim`'s certificate is signed by this key.
    pub fn verify(&self, claim: &Claim) -> Result<(), Refusal> {
        use ring::signature as rs;
        let msg = &claim.tbs;
        let sig = &claim.signature;
        let ok = match self {
            SshKey::Ecdsa { curve, point } => {
                let alg: &dyn rs::VerificationAlgorithm = match (curve.as_str(), claim.alg) {
                    ("nistp256", SigAlg::EcdsaSha256) => &rs::ECDSA_P256_SHA256_ASN1,
                    ("nistp256", SigAlg::EcdsaSha384) => &rs::ECDSA_P256_SHA384_ASN1,
                    ("nistp384", SigAlg::EcdsaSha256) => &rs::ECDSA_P384_SHA256_ASN1,
                    ("nistp384", SigAlg::EcdsaSha384) => &rs::ECDSA_P384_SHA384_ASN1,
                    ("nistp521", SigAlg::EcdsaSha512) => return verify_p521(point, msg, sig),
                    _ => return Err(Refusal::NotSigned),
                };
                rs::UnparsedPublicKey::new(alg, point)
                    .verify(msg, sig)
                    .is_ok()
            }
            SshKey::Rsa { n, e } => {
                let params: &rs::RsaParameters = match claim.alg {
                    SigAlg::RsaSha1 => &rs::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                    SigAlg::RsaSha256 => &rs::RSA_PKCS1_2048_8192_SHA256,
                    SigAlg::RsaSha384 => &rs::RSA_PKCS1_2048_8192_SHA384,
                    SigAlg::RsaSha512 => &rs::RSA_PKCS1_2048_8192_SHA512,
                    _ => return Err(Refusal::NotSigned),
                };
                rs::RsaPublicKeyComponents { n, e }
                    .verify(params, msg, sig)
                    .is_ok()
            }
        };
        if ok { Ok(()) } else { Err(Refusal::NotSigned) }
    }
}

fn verify_p521(point: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), Refusal> {
    use p521::ecdsa::signature::Verifier as _;
    let key = p521::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|_| Refusal::NotSigned)?;
    let sig = p521::ecdsa::Signature::from_der(sig).map_err(|_| Refusal::NotSigned)?;
    key.verify(msg, &sig).map_err(|_| Refusal::NotSigned)
}

fn take_string<'a>(r: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(r.get(..4)?.try_into().ok()?) as usize;
    let s = r.get(4..4usize.checked_add(len)?)?;
    *r = &r[4 + len..];
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_in_sshpk_forms() {
        let hex = "d2:9c:2b:6c:0e:bb:2c:8b:2d:4c:6c:7b:3b:1e:8d:40";
        assert_eq!(parse_md5_fingerprint(hex).as_deref(), Some(hex));
        assert_eq!(
            parse_md5_fingerprint(&format!("MD5:{hex}")).as_deref(),
            Some(hex)
        );
        assert_eq!(
            parse_md5_fingerprint(&hex.replace(':', "")).as_deref(),
            Some(hex)
        );
        let bytes: Vec<u8> = hex
            .split(':')
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        assert_eq!(
            parse_md5_fingerprint(&format!("MD5:{}", b64.trim_end_matches('='))).as_deref(),
            Some(hex)
        );
        assert_eq!(
            parse_md5_fingerprint(&format!("MD5:{b64}")).as_deref(),
            Some(hex)
        );
        assert_eq!(parse_md5_fingerprint("SHA256:abcd"), None);
        assert_eq!(parse_md5_fingerprint(&b64), None);
        assert_eq!(parse_md5_fingerprint("alice"), None);
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        assert!(matches!(inspect(b"", 0), Err(Refusal::Malformed(_))));
        assert!(matches!(
            inspect(&[0x30, 0x82, 0xff, 0xff], 0),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn ed25519_keys_are_refused_by_name() {
        let mut blob = Vec::new();
        put_string(&mut blob, b"ssh-ed25519");
        put_string(&mut blob, &[7; 32]);
        assert_eq!(SshKey::from_blob(&blob), Err(Refusal::Ed25519));
    }
}
