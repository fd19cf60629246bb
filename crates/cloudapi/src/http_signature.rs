//! HTTP Signature authentication (draft-cavage), as Triton's CloudAPI accepts it.
//!
//! Two grammars of the `Authorization: Signature ...` header are accepted
//! (sdc-cloudapi `lib/authorization.js` tries both):
//!
//! ```text
//! modern (http-signature >= 0.10, what node-triton and smartdc-auth send):
//!   Signature keyId="/<login>/keys/<md5-fp>",algorithm="rsa-sha256",headers="date",signature="<base64>"
//! legacy (0.9): no signature= parameter; the signature follows a space
//!   Signature keyId="/<login>/keys/<name>",algorithm="rsa-sha256" <base64>
//! ```
//!
//! The signing string joins the signed headers with `\n`: `name: value` in the modern
//! grammar, the bare value in the legacy one; `request-line` is `METHOD url HTTP/x.y`,
//! `(request-target)` is `(request-target): method url` (modern only). `date` (or
//! `x-date` when present) must be signed and within the allowed clock skew.
//!
//! [`verify`] checks a signature with a public key in SSH wire format (what UFDS keeps
//! as the key's blob): RSA PKCS#1 v1.5 with SHA-1/256/384/512, ECDSA P-256/P-384/P-521
//! (ASN.1 DER signatures as sshpk writes them, or raw r||s), and Ed25519.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use http::HeaderMap;

/// Signing algorithms accepted (lower-case, as in the header).
pub const ALGORITHMS: &[&str] = &[
    "rsa-sha1",
    "rsa-sha256",
    "rsa-sha384",
    "rsa-sha512",
    "ecdsa-sha256",
    "ecdsa-sha384",
    "ecdsa-sha512",
    "ed25519-sha512",
];

/// The grammar a header was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grammar {
    Modern,
    Legacy,
}

/// A parsed, not yet verified, signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSignature {
    pub grammar: Grammar,
    pub key_id: String,
    /// Lower-cased, as sent.
    pub algorithm: String,
    /// Signed header names, lower-cased, in order.
    pub headers: Vec<String>,
    pub signature: Vec<u8>,
    pub signing_string: String,
}

/// Why a request's signature header was refused before any key was looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No `Authorization` (or `Signature`) header, or another scheme.
    #[error("no signature")]
    Missing,
    /// The header does not follow either grammar.
    #[error("{0}")]
    Invalid(String),
    /// A header named in `headers` is absent, or `date` is not signed.
    #[error("{0}")]
    MissingHeader(String),
    /// The date is too far from ours.
    #[error("clock skew of {skew}s was greater than {allowed}s")]
    Expired { skew: u64, allowed: u64 },
    /// Not one of [`ALGORITHMS`].
    #[error("{0} is not a supported signing algorithm")]
    UnsupportedAlgorithm(String),
}

/// What of the request goes into the signing string.
pub struct RequestView<'a> {
    pub method: &'a str,
    /// The request target exactly as sent: path and query.
    pub url: &'a str,
    /// `1.1`, `1.0`, `2`.
    pub http_version: &'a str,
    pub headers: &'a HeaderMap,
}

/// An `Authorization` (or `Signature`) header value, parsed but not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    pub grammar: Grammar,
    /// The parameters in the order sent, duplicates kept (the first one counts). In the
    /// modern grammar `signature` is among them.
    pub params: Vec<(String, String)>,
    /// The signature, still base64.
    pub signature: String,
}

impl SignatureHeader {
    /// The first parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The header in its own grammar, with the `Signature` scheme: `name="value"` pairs
/// joined by commas, and in the legacy grammar the signature after a space. It parses
/// back (with [`parse_authorization`]) to the same [`SignatureHeader`].
impl std::fmt::Display for SignatureHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signature ")?;
        for (i, (name, value)) in self.params.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{name}=\"{value}\"")?;
        }
        match self.grammar {
            Grammar::Modern => Ok(()),
            Grammar::Legacy => write!(f, " {}", self.signature),
        }
    }
}

/// Parses an `Authorization` header value: the `Signature` scheme (any case), then the
/// parameters in the modern grammar, or failing that in the legacy one.
/// [`ParseError::Missing`] for another scheme. Checks nothing about the request: see
/// [`parse_request`].
pub fn parse_authorization(value: &str) -> Result<SignatureHeader, ParseError> {
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("signature") {
        return Err(ParseError::Missing);
    }
    parse_params(rest)
}

/// Parses the signature of a request and builds its signing string; checks the date.
pub fn parse_request(
    req: &RequestView<'_>,
    clock_skew: Duration,
    now: SystemTime,
) -> Result<ParsedSignature, ParseError> {
    let header = parse_header(req.headers)?;
    let grammar = header.grammar;

    let key_id = header
        .param("keyId")
        .map(str::to_string)
        .ok_or_else(|| ParseError::Invalid("keyId was not specified".into()))?;
    let algorithm = header
        .param("algorithm")
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| ParseError::Invalid("algorithm was not specified".into()))?;
    if header.signature.is_empty() {
        return Err(ParseError::Invalid("signature was empty".into()));
    }
    let date_header = if req.headers.contains_key("x-date") {
        "x-date"
    } else {
        "date"
    };
    let headers: Vec<String> = match header.param("headers") {
        Some(v) if !v.trim().is_empty() => v
            .split(' ')
            .filter(|h| !h.is_empty())
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        _ => vec![date_header.to_string()],
    };

    let mut parts = Vec::with_capacity(headers.len());
    for h in &headers {
        let part = match h.as_str() {
            "request-line" => format!("{} {} HTTP/{}", req.method, req.url, req.http_version),
            "(request-target)" if grammar == Grammar::Modern => format!(
                "(request-target): {} {}",
                req.method.to_ascii_lowercase(),
                req.url
            ),
            name => {
                let values: Vec<&str> = req
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                if values.is_empty() {
                    return Err(ParseError::MissingHeader(format!(
                        "{name} was not in the request"
                    )));
                }
                let value = values.join(", ");
                match grammar {
                    Grammar::Modern => format!("{name}: {value}"),
                    Grammar::Legacy => value,
                }
            }
        };
        parts.push(part);
    }
    let signing_string = parts.join("\n");

    if !headers.iter().any(|h| h == date_header) {
        return Err(ParseError::MissingHeader(format!(
            "{date_header} was not a signed header"
        )));
    }
    let date = req
        .headers
        .get(date_header)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ParseError::MissingHeader(format!("{date_header} was not in the request"))
        })?;
    let date = httpdate::parse_http_date(date)
        .map_err(|_| ParseError::Invalid(format!("{date_header} is not a valid HTTP date")))?;
    let skew = match now.duration_since(date) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if skew > clock_skew {
        return Err(ParseError::Expired {
            skew: skew.as_secs(),
            allowed: clock_skew.as_secs(),
        });
    }

    if !ALGORITHMS.contains(&algorithm.as_str()) {
        return Err(ParseError::UnsupportedAlgorithm(
            algorithm.to_ascii_uppercase(),
        ));
    }
    let signature = base64::engine::general_purpose::STANDARD
        .decode(header.signature.trim())
        .map_err(|_| ParseError::Invalid("signature is not valid base64".into()))?;

    Ok(ParsedSignature {
        grammar,
        key_id,
        algorithm,
        headers,
        signature,
        signing_string,
    })
}

type Params = Vec<(String, String)>;

/// The request's `Authorization` header, or its `Signature` header (the parameters
/// alone, a leading `Signature ` tolerated).
fn parse_header(headers: &HeaderMap) -> Result<SignatureHeader, ParseError> {
    fn ascii(v: &http::HeaderValue) -> Result<&str, ParseError> {
        v.to_str()
            .map_err(|_| ParseError::Invalid("header is not ASCII".into()))
    }
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        parse_authorization(ascii(v)?)
    } else if let Some(v) = headers.get("signature") {
        let value = ascii(v)?;
        let rest = value
            .strip_prefix("Signature ")
            .or_else(|| value.strip_prefix("signature "))
            .unwrap_or(value);
        parse_params(rest)
    } else {
        Err(ParseError::Missing)
    }
}

/// The parameters after the scheme, in the modern grammar or else the legacy one; the
/// modern grammar's error when neither fits.
fn parse_params(rest: &str) -> Result<SignatureHeader, ParseError> {
    match parse_modern(rest) {
        Ok(params) => {
            let signature = params
                .iter()
                .find(|(k, _)| k == "signature")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            Ok(SignatureHeader {
                grammar: Grammar::Modern,
                params,
                signature,
            })
        }
        Err(modern_err) => match parse_legacy(rest) {
            Some((params, signature)) => Ok(SignatureHeader {
                grammar: Grammar::Legacy,
                params,
                signature,
            }),
            None => Err(ParseError::Invalid(modern_err)),
        },
    }
}

/// `name="value"` pairs separated by commas; names only letters; no escapes.
fn parse_modern(s: &str) -> Result<Params, String> {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut params = Vec::new();
    loop {
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        if i == start {
            return Err(format!("bad param name at offset {i}"));
        }
        let name = &s[start..i];
        if bytes.get(i) != Some(&b'=') || bytes.get(i + 1) != Some(&b'"') {
            return Err(format!("param {name} has no quoted value"));
        }
        i += 2;
        let vstart = i;
        while i < bytes.len() && bytes[i] != b'"' {
            i += 1;
        }
        if i >= bytes.len() {
            return Err(format!("param {name} is not terminated"));
        }
        params.push((name.to_string(), s[vstart..i].to_string()));
        i += 1;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        match bytes.get(i) {
            None => break,
            Some(b',') => i += 1,
            Some(_) => return Err(format!("unexpected text after param {name}")),
        }
    }
    if !params.iter().any(|(k, _)| k == "signature") {
        return Err("signature was not specified".into());
    }
    Ok(params)
}

/// The 0.9 state machine: names up to a quote (`=` and `,` skipped), quoted values, and
/// after the first space outside a value, the signature, which must be base64 (spaces
/// around it aside). Anything else there is not a legacy header: without that check,
/// `x= signature="..."` would read as a legacy header whose signature is a modern
/// parameter (found by the fuzz target, `crates/cloudapi/fuzz`).
fn parse_legacy(s: &str) -> Option<(Params, String)> {
    let mut params = Vec::new();
    let mut name = String::new();
    let mut value = String::new();
    let mut in_value = false;
    let mut signature = None;
    for (i, c) in s.char_indices() {
        if in_value {
            if c == '"' {
                params.push((std::mem::take(&mut name), std::mem::take(&mut value)));
                in_value = false;
            } else {
                value.push(c);
            }
        } else if c == '"' {
            in_value = true;
        } else if c == ' ' {
            signature = Some(s[i + 1..].to_string());
            break;
        } else if c != '=' && c != ',' {
            name.push(c);
        }
    }
    let signature = signature?.trim().to_string();
    let base64 = !signature.is_empty()
        && signature
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    base64.then_some((params, signature))
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the key is not a valid SSH public key: {0}")]
    BadKey(String),
    #[error("algorithm {algorithm} does not fit a {key_type} key")]
    WrongAlgorithm { algorithm: String, key_type: String },
    #[error("the signature does not match")]
    Mismatch,
    #[error("RSA keys must be at least {MIN_RSA_BITS} bits; this one has {bits}")]
    WeakKey { bits: usize },
}

/// The smallest RSA modulus accepted, for new keys and for signatures by stored ones.
pub const MIN_RSA_BITS: usize = 2048;

/// A public key, from its SSH wire-format blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// `curve` is `nistp256`, `nistp384` or `nistp521`; `point` is SEC1 uncompressed.
    Ecdsa {
        curve: String,
        point: Vec<u8>,
    },
    Ed25519([u8; 32]),
}

impl PublicKey {
    pub fn from_ssh_blob(blob: &[u8]) -> Result<PublicKey, VerifyError> {
        let mut r = SshReader(blob);
        let key_type = r.string()?;
        let key = match key_type {
            b"ssh-rsa" => {
                let e = strip_zeros(r.string()?).to_vec();
                let n = strip_zeros(r.string()?).to_vec();
                PublicKey::Rsa { n, e }
            }
            b"ecdsa-sha2-nistp256" | b"ecdsa-sha2-nistp384" | b"ecdsa-sha2-nistp521" => {
                let curve = String::from_utf8_lossy(r.string()?).into_owned();
                let point = r.string()?.to_vec();
                PublicKey::Ecdsa { curve, point }
            }
            b"ssh-ed25519" => {
                let k: [u8; 32] = r
                    .string()?
                    .try_into()
                    .map_err(|_| VerifyError::BadKey("ed25519 key is not 32 bytes".into()))?;
                PublicKey::Ed25519(k)
            }
            other => {
                return Err(VerifyError::BadKey(format!(
                    "unsupported key type {}",
                    String::from_utf8_lossy(other)
                )));
            }
        };
        Ok(key)
    }

    /// The modulus size of an RSA key; None for other key types.
    pub fn rsa_bits(&self) -> Option<usize> {
        match self {
            PublicKey::Rsa { n, .. } => Some(match n.first() {
                Some(top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
                None => 0,
            }),
            _ => None,
        }
    }

    /// Refuses RSA keys under [`MIN_RSA_BITS`].
    pub fn check_strength(&self) -> Result<(), VerifyError> {
        match self.rsa_bits() {
            Some(bits) if bits < MIN_RSA_BITS => Err(VerifyError::WeakKey { bits }),
            _ => Ok(()),
        }
    }

    /// Parses an OpenSSH public key line (`ssh-rsa AAAA... comment`).
    pub fn from_openssh(text: &str) -> Result<PublicKey, VerifyError> {
        let mut fields = text.split_whitespace();
        let _kind = fields.next();
        let blob = fields
            .next()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .ok_or_else(|| VerifyError::BadKey("not an OpenSSH public key line".into()))?;
        PublicKey::from_ssh_blob(&blob)
    }

    fn type_name(&self) -> String {
        match self {
            PublicKey::Rsa { .. } => "rsa".into(),
            PublicKey::Ecdsa { curve, .. } => format!("ecdsa {curve}"),
            PublicKey::Ed25519(_) => "ed25519".into(),
        }
    }
}

struct SshReader<'a>(&'a [u8]);

impl<'a> SshReader<'a> {
    fn string(&mut self) -> Result<&'a [u8], VerifyError> {
        let short = || VerifyError::BadKey("truncated key blob".into());
        let len_bytes: [u8; 4] = self
            .0
            .get(..4)
            .ok_or_else(short)?
            .try_into()
            .map_err(|_| short())?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let data = self.0.get(4..4 + len).ok_or_else(short)?;
        self.0 = &self.0[4 + len..];
        Ok(data)
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

/// Verifies `signature` over `message` with `key` by `algorithm` (one of
/// [`ALGORITHMS`]).
pub fn verify(
    key: &PublicKey,
    algorithm: &str,
    message: &[u8],
    signature: &[u8],
) -> Result<(), VerifyError> {
    use ring::signature as rs;
    let wrong = || VerifyError::WrongAlgorithm {
        algorithm: algorithm.to_string(),
        key_type: key.type_name(),
    };
    let (family, hash) = algorithm.split_once('-').ok_or_else(wrong)?;
    match key {
        PublicKey::Rsa { n, e } => {
            if family != "rsa" {
                return Err(wrong());
            }
            key.check_strength()?;
            let params: &rs::RsaParameters = match hash {
                "sha1" => &rs::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
                "sha256" => &rs::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
                "sha384" => &rs::RSA_PKCS1_2048_8192_SHA384,
                "sha512" => &rs::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY,
                _ => return Err(wrong()),
            };
            rs::RsaPublicKeyComponents { n, e }
                .verify(params, message, signature)
                .map_err(|_| VerifyError::Mismatch)
        }
        PublicKey::Ecdsa { curve, point } => {
            if family != "ecdsa" {
                return Err(wrong());
            }
            // sshpk writes ASN.1 DER; raw r||s (as some signers send) is accepted too
            // where ring has it.
            let (asn1, fixed): (
                &rs::EcdsaVerificationAlgorithm,
                Option<&rs::EcdsaVerificationAlgorithm>,
            ) = match (curve.as_str(), hash) {
                ("nistp256", "sha256") => (
                    &rs::ECDSA_P256_SHA256_ASN1,
                    Some(&rs::ECDSA_P256_SHA256_FIXED),
                ),
                ("nistp256", "sha384") => (&rs::ECDSA_P256_SHA384_ASN1, None),
                ("nistp384", "sha384") => (
                    &rs::ECDSA_P384_SHA384_ASN1,
                    Some(&rs::ECDSA_P384_SHA384_FIXED),
                ),
                ("nistp384", "sha256") => (&rs::ECDSA_P384_SHA256_ASN1, None),
                ("nistp521", "sha512") => return verify_p521(point, message, signature),
                _ => return Err(wrong()),
            };
            let ok = rs::UnparsedPublicKey::new(asn1, point)
                .verify(message, signature)
                .is_ok()
                || fixed.is_some_and(|alg| {
                    rs::UnparsedPublicKey::new(alg, point)
                        .verify(message, signature)
                        .is_ok()
                });
            if ok {
                Ok(())
            } else {
                Err(VerifyError::Mismatch)
            }
        }
        PublicKey::Ed25519(k) => {
            if family != "ed25519" || hash != "sha512" {
                return Err(wrong());
            }
            rs::UnparsedPublicKey::new(&rs::ED25519, k)
                .verify(message, signature)
                .map_err(|_| VerifyError::Mismatch)
        }
    }
}

/// P-521 is not in ring: RustCrypto's p521.
fn verify_p521(point: &[u8], message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
    use p521::ecdsa::signature::Verifier as _;
    let key = p521::ecdsa::VerifyingKey::from_sec1_bytes(point)
        .map_err(|_| VerifyError::BadKey("bad P-521 point".into()))?;
    let fixed = match der_ecdsa_to_fixed(signature, 66) {
        Some(f) => f,
        None if signature.len() == 132 => signature.to_vec(),
        None => return Err(VerifyError::Mismatch),
    };
    let sig = p521::ecdsa::Signature::from_slice(&fixed).map_err(|_| VerifyError::Mismatch)?;
    key.verify(message, &sig).map_err(|_| VerifyError::Mismatch)
}

/// `SEQUENCE { INTEGER r, INTEGER s }` to `r || s`, each left-padded to `width` bytes.
fn der_ecdsa_to_fixed(der: &[u8], width: usize) -> Option<Vec<u8>> {
    fn length(b: &[u8]) -> Option<(usize, &[u8])> {
        let first = *b.first()?;
        if first < 0x80 {
            return Some((first as usize, &b[1..]));
        }
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 2 || b.len() < 1 + n {
            return None;
        }
        let len = b[1..1 + n]
            .iter()
            .fold(0usize, |acc, &x| (acc << 8) | x as usize);
        Some((len, &b[1 + n..]))
    }
    fn integer(b: &[u8]) -> Option<(&[u8], &[u8])> {
        if *b.first()? != 0x02 {
            return None;
        }
        let (len, rest) = length(&b[1..])?;
        let value = rest.get(..len)?;
        Some((value, &rest[len..]))
    }
    if *der.first()? != 0x30 {
        return None;
    }
    let (len, body) = length(&der[1..])?;
    if body.len() != len {
        return None;
    }
    let (r, rest) = integer(body)?;
    let (s, rest) = integer(rest)?;
    if !rest.is_empty() {
        return None;
    }
    let mut out = vec![0u8; 2 * width];
    for (i, v) in [r, s].iter().enumerate() {
        let v = strip_zeros(v);
        if v.len() > width {
            return None;
        }
        let end = (i + 1) * width;
        out[end - v.len()..end].copy_from_slice(v);
    }
    Some(out)
}

/// A parsed keyId: `/<login>/keys/<key>` (main account) or
/// `/<account>/users/<login>/keys/<key>` (sub-user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyId {
    pub login: String,
    pub subuser: Option<String>,
    /// Name or MD5 fingerprint.
    pub key: String,
}

impl KeyId {
    pub fn parse(key_id: &str) -> Option<KeyId> {
        let parts: Vec<&str> = key_id.split('/').collect();
        match parts.as_slice() {
            ["", login, "keys", key] if !login.is_empty() && !key.is_empty() => Some(KeyId {
                login: login.to_string(),
                subuser: None,
                key: key.to_string(),
            }),
            ["", account, "users", user, "keys", key]
                if !account.is_empty() && !user.is_empty() && !key.is_empty() =>
            {
                Some(KeyId {
                    login: account.to_string(),
                    subuser: Some(user.to_string()),
                    key: key.to_string(),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{self as rs, KeyPair};

    fn ssh_string(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn view<'a>(h: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            method: "GET",
            url: "/my/machines?limit=1",
            http_version: "1.1",
            headers: h,
        }
    }

    const SKEW: Duration = Duration::from_secs(300);

    fn now_date() -> (SystemTime, String) {
        let now = SystemTime::now();
        (now, httpdate::fmt_http_date(now))
    }

    /// A request dated now with `header: value`, parsed; and its date.
    fn parse_dated(header: &str, value: &str) -> (ParsedSignature, String) {
        let (now, date) = now_date();
        let h = headers(&[("date", &date), (header, value)]);
        (parse_request(&view(&h), SKEW, now).unwrap(), date)
    }

    #[test]
    fn modern_header_with_default_headers() {
        let (p, date) = parse_dated(
            "authorization",
            r#"Signature keyId="/bob/keys/aa:bb",algorithm="RSA-SHA256",signature="AAAA""#,
        );
        assert_eq!(p.grammar, Grammar::Modern);
        assert_eq!(p.key_id, "/bob/keys/aa:bb");
        assert_eq!(p.algorithm, "rsa-sha256");
        assert_eq!(p.signing_string, format!("date: {date}"));
        assert_eq!(p.signature, vec![0, 0, 0]);
    }

    #[test]
    fn modern_header_with_request_target_and_request_line() {
        let (now, date) = now_date();
        let h = headers(&[
            ("x-date", &date),
            ("host", "cloudapi.example"),
            (
                "authorization",
                r#"Signature keyId="/bob/keys/k",algorithm="ed25519-sha512",headers="(request-target) x-date host request-line",signature="AAAA""#,
            ),
        ]);
        let p = parse_request(&view(&h), SKEW, now).unwrap();
        assert_eq!(
            p.signing_string,
            format!(
                "(request-target): get /my/machines?limit=1\nx-date: {date}\nhost: cloudapi.example\nGET /my/machines?limit=1 HTTP/1.1"
            )
        );
    }

    #[test]
    fn legacy_header_signs_bare_values() {
        let (p, date) = parse_dated(
            "authorization",
            r#"Signature keyId="/bob/keys/mykey",algorithm="rsa-sha256" AAAA"#,
        );
        assert_eq!(p.grammar, Grammar::Legacy);
        assert_eq!(p.key_id, "/bob/keys/mykey");
        assert_eq!(p.signing_string, date);
    }

    #[test]
    fn printed_headers_parse_back() {
        for input in [
            r#"Signature keyId="/bob/keys/aa:bb",algorithm="rsa-sha256",headers="date host",signature="AAAA""#,
            r#"signature  keyId="/bob/keys/k" , algorithm="x",keyId="second",signature="""#,
            r#"Signature keyId="/bob/keys/mykey",algorithm="rsa-sha256"   AAAA== "#,
            r#"SIGNATURE k1=="v",,"w" AAAA"#,
        ] {
            let header = parse_authorization(input).unwrap();
            let printed = header.to_string();
            assert_eq!(
                parse_authorization(&printed),
                Ok(header),
                "{input} -> {printed}"
            );
        }
        let legacy = parse_authorization(r#"Signature keyId="/b/keys/k" AAAA== "#).unwrap();
        assert_eq!(legacy.grammar, Grammar::Legacy);
        assert_eq!(legacy.signature, "AAAA==");
        assert_eq!(legacy.to_string(), r#"Signature keyId="/b/keys/k" AAAA=="#);
    }

    #[test]
    fn legacy_signature_must_be_base64() {
        // Found by the fuzz target: a dangling name, then `signature=""` after the space,
        // was taken for a legacy header with that text as its signature; printed, it
        // read back as a modern header.
        assert!(matches!(
            parse_authorization(r#"Signature signatkeyIdureAAAA== signature="""#),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(
            parse_authorization(r#"Signature keyId="/b/keys/k",algorithm="rsa-sha256" not base64"#),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(
            parse_authorization(r#"Signature keyId="/b/keys/k",algorithm="rsa-sha256"   "#),
            Err(ParseError::Invalid(_))
        ));
        assert_eq!(
            parse_authorization("Basic Ym9iOnB3"),
            Err(ParseError::Missing)
        );
    }

    #[test]
    fn signature_header_without_scheme() {
        let (p, _) = parse_dated(
            "signature",
            r#"keyId="/bob/keys/k",algorithm="rsa-sha256",signature="AAAA""#,
        );
        assert_eq!(p.key_id, "/bob/keys/k");
    }

    #[test]
    fn refusals() {
        let (now, date) = now_date();
        let stale = httpdate::fmt_http_date(now - Duration::from_secs(301));
        let future = httpdate::fmt_http_date(now + Duration::from_secs(400));
        let signed = |algorithm: &str, headers: &str| {
            format!(
                r#"Signature keyId="/b/keys/k",algorithm="{algorithm}",{headers}signature="AAAA""#
            )
        };
        let rsa = signed("rsa-sha256", "");
        let host_only = signed("rsa-sha256", r#"headers="host","#);
        let hmac = signed("hmac-sha256", "");
        // What is refused, the request's headers, and whether the error is the right one.
        type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, fn(&ParseError) -> bool);
        let cases: [Case; 8] = [
            ("no authorization", vec![("date", &date)], |e| {
                *e == ParseError::Missing
            }),
            (
                "basic auth",
                vec![("date", &date), ("authorization", "Basic Ym9iOnB3")],
                |e| *e == ParseError::Missing,
            ),
            (
                "a stale date",
                vec![("date", &stale), ("authorization", &rsa)],
                |e| matches!(e, ParseError::Expired { allowed: 300, .. }),
            ),
            (
                "a date in the future",
                vec![("date", &future), ("authorization", &rsa)],
                |e| matches!(e, ParseError::Expired { .. }),
            ),
            (
                "date not signed",
                vec![
                    ("date", &date),
                    ("host", "x"),
                    ("authorization", &host_only),
                ],
                |e| *e == ParseError::MissingHeader("date was not a signed header".into()),
            ),
            ("no date", vec![("authorization", &rsa)], |e| {
                *e == ParseError::MissingHeader("date was not in the request".into())
            }),
            (
                "an unsupported algorithm",
                vec![("date", &date), ("authorization", &hmac)],
                |e| *e == ParseError::UnsupportedAlgorithm("HMAC-SHA256".into()),
            ),
            (
                "garbage",
                vec![("date", &date), ("authorization", "Signature garbage")],
                |e| matches!(e, ParseError::Invalid(_)),
            ),
        ];
        for (case, pairs, expected) in cases {
            let got = parse_request(&view(&headers(&pairs)), SKEW, now);
            assert!(got.as_ref().is_err_and(expected), "{case}: {got:?}");
        }
    }

    #[test]
    fn key_ids() {
        assert_eq!(
            KeyId::parse("/bob/keys/aa:bb").unwrap(),
            KeyId {
                login: "bob".into(),
                subuser: None,
                key: "aa:bb".into()
            }
        );
        assert_eq!(
            KeyId::parse("/acme/users/ann/keys/k")
                .unwrap()
                .subuser
                .as_deref(),
            Some("ann")
        );
        assert!(KeyId::parse("bob/keys/k").is_none());
        assert!(KeyId::parse("/bob/key/k").is_none());
        assert!(KeyId::parse("/bob/keys/").is_none());
    }

    #[test]
    fn ed25519_round_trip_and_tampering() {
        let rng = SystemRandom::new();
        let pkcs8 = rs::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = rs::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let mut blob = Vec::new();
        ssh_string(&mut blob, b"ssh-ed25519");
        ssh_string(&mut blob, pair.public_key().as_ref());
        let key = PublicKey::from_ssh_blob(&blob).unwrap();
        let sig = pair.sign(b"date: x");
        assert_eq!(
            verify(&key, "ed25519-sha512", b"date: x", sig.as_ref()),
            Ok(())
        );
        assert_eq!(
            verify(&key, "ed25519-sha512", b"date: y", sig.as_ref()),
            Err(VerifyError::Mismatch)
        );
        assert!(matches!(
            verify(&key, "rsa-sha256", b"date: x", sig.as_ref()),
            Err(VerifyError::WrongAlgorithm { .. })
        ));
    }

    #[test]
    fn ecdsa_p256_and_p384_asn1_and_fixed() {
        let rng = SystemRandom::new();
        for (signing, fixed_signing, curve, alg) in [
            (
                &rs::ECDSA_P256_SHA256_ASN1_SIGNING,
                &rs::ECDSA_P256_SHA256_FIXED_SIGNING,
                "nistp256",
                "ecdsa-sha256",
            ),
            (
                &rs::ECDSA_P384_SHA384_ASN1_SIGNING,
                &rs::ECDSA_P384_SHA384_FIXED_SIGNING,
                "nistp384",
                "ecdsa-sha384",
            ),
        ] {
            let pkcs8 = rs::EcdsaKeyPair::generate_pkcs8(signing, &rng).unwrap();
            let pair = rs::EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).unwrap();
            let fixed_pair =
                rs::EcdsaKeyPair::from_pkcs8(fixed_signing, pkcs8.as_ref(), &rng).unwrap();
            let mut blob = Vec::new();
            ssh_string(&mut blob, format!("ecdsa-sha2-{curve}").as_bytes());
            ssh_string(&mut blob, curve.as_bytes());
            ssh_string(&mut blob, pair.public_key().as_ref());
            let key = PublicKey::from_ssh_blob(&blob).unwrap();
            let sig = pair.sign(&rng, b"hello").unwrap();
            assert_eq!(
                verify(&key, alg, b"hello", sig.as_ref()),
                Ok(()),
                "{curve} asn1"
            );
            let sig = fixed_pair.sign(&rng, b"hello").unwrap();
            assert_eq!(
                verify(&key, alg, b"hello", sig.as_ref()),
                Ok(()),
                "{curve} fixed"
            );
            assert_eq!(
                verify(&key, alg, b"hellO", sig.as_ref()),
                Err(VerifyError::Mismatch)
            );
        }
    }

    #[test]
    fn der_to_fixed() {
        // r = 1, s = 0x0100 (with a sign byte on s)
        let der = [0x30, 0x08, 0x02, 0x01, 0x01, 0x02, 0x03, 0x00, 0x01, 0x00];
        let fixed = der_ecdsa_to_fixed(&der, 4).unwrap();
        assert_eq!(fixed, vec![0, 0, 0, 1, 0, 0, 1, 0]);
        assert!(der_ecdsa_to_fixed(&der[..9], 4).is_none());
    }

    #[test]
    fn rejects_bad_blobs() {
        assert!(PublicKey::from_ssh_blob(b"\x00\x00\x00").is_err());
        let mut blob = Vec::new();
        ssh_string(&mut blob, b"ssh-dss");
        assert!(PublicKey::from_ssh_blob(&blob).is_err());
    }

    /// `ssh-keygen -t rsa -b 1024` public key.
    const RSA_1024: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDWLDeAFt1OsFHZBkGjGD1Bq+ZKbukYSmMlD5ApAX5Xnchx8PV8emF6vNNheO4VxlCqF4k0MD1/vV2ti3D5oWgERzrP0+pKGkOENoFJvj65ri0pVnVfvQkFVIVmHqHlU1DOPwcg2bZP6NnfKoNLDHy91M+l28r2WAXjlEWGQoSmDw== weak";

    #[test]
    fn weak_rsa_keys_never_verify() {
        let key = PublicKey::from_openssh(RSA_1024).unwrap();
        assert_eq!(key.rsa_bits(), Some(1024));
        let err = key.check_strength().unwrap_err();
        assert_eq!(err, VerifyError::WeakKey { bits: 1024 });
        assert!(err.to_string().contains("at least 2048 bits"), "{err}");
        // Refused before the signature is even looked at.
        assert_eq!(
            verify(&key, "rsa-sha256", b"date: x", &[0u8; 128]),
            Err(VerifyError::WeakKey { bits: 1024 })
        );
    }
}
