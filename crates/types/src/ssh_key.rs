//! OpenSSH public keys: parsing the one-line text form (`<type> <base64 blob> [comment]`),
//! validating the wire blob inside it (RFC 4253 §6.6, RFC 5656 §3.1, RFC 8709 §4), and the
//! three derived forms Triton keeps beside the text:
//!
//! - the MD5 fingerprint in colon-separated lower-case hex (`a1:b2:...`), Triton's key id
//!   (CloudAPI's `keyId="/<login>/keys/<md5>"`), as `ssh-keygen -l -E md5` prints it
//!   without its `MD5:` prefix;
//! - the SHA256 fingerprint, `SHA256:` + unpadded base64, as `ssh-keygen -l` prints it;
//! - the key as a PEM `PUBLIC KEY` (X.509 SubjectPublicKeyInfo, what `ssh-keygen -e -m
//!   PKCS8` prints and UFDS stores as `pkcs`), which any crypto library reads to verify
//!   an HTTP signature.
//!
//! Supported: `ssh-rsa` (1024 to 16384 bits), `ecdsa-sha2-nistp256/384/521` and
//! `ssh-ed25519`. The blob is checked for shape (lengths, type strings that agree, no
//! trailing bytes); an ECDSA point is not checked to lie on its curve.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use md5::Md5;
use sha2::{Digest, Sha256};

/// Smallest RSA modulus accepted: OpenSSH refuses smaller keys (`RequiredRSASize`).
pub const MIN_RSA_BITS: usize = 1024;
/// Largest RSA modulus accepted (OpenSSH's `SSH_RSA_MAXIMUM_MODULUS_SIZE`).
pub const MAX_RSA_BITS: usize = 16384;
/// Longest key text accepted: a 16384-bit RSA key is about 2.8 KB of text; the rest is
/// room for a long comment.
pub const MAX_KEY_TEXT: usize = 16 * 1024;

/// The key algorithms UFDS accepts, by their OpenSSH names.
pub const SUPPORTED_TYPES: &[&str] = &[
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-ed25519",
];

/// A parsed, validated OpenSSH public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// `ssh-rsa`, `ecdsa-sha2-nistp256`, ...
    pub key_type: String,
    /// The wire-format blob (what the base64 field decodes to).
    pub blob: Vec<u8>,
    /// The comment after the blob, whitespace runs collapsed; may be empty.
    pub comment: String,
    /// Size in bits: the RSA modulus, the ECDSA curve (256, 384, 521), 256 for Ed25519.
    pub bits: u32,
    kind: KeyKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyKind {
    Rsa { e: Vec<u8>, n: Vec<u8> },
    Ecdsa { curve: Curve, point: Vec<u8> },
    Ed25519 { key: Vec<u8> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    fn from_type(key_type: &str) -> Option<Curve> {
        match key_type {
            "ecdsa-sha2-nistp256" => Some(Curve::P256),
            "ecdsa-sha2-nistp384" => Some(Curve::P384),
            "ecdsa-sha2-nistp521" => Some(Curve::P521),
            _ => None,
        }
    }

    fn ssh_name(self) -> &'static str {
        match self {
            Curve::P256 => "nistp256",
            Curve::P384 => "nistp384",
            Curve::P521 => "nistp521",
        }
    }

    fn bits(self) -> u32 {
        match self {
            Curve::P256 => 256,
            Curve::P384 => 384,
            Curve::P521 => 521,
        }
    }

    /// Bytes of one coordinate.
    fn field_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// DER of the curve's OID (prime256v1, secp384r1, secp521r1).
    fn oid_der(self) -> &'static [u8] {
        match self {
            Curve::P256 => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            Curve::P384 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
            Curve::P521 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
        }
    }
}

/// A key's material ([`PublicKey::parts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyParts<'a> {
    /// RSA: the public exponent and the modulus, big-endian, without leading zeros.
    Rsa {
        /// The public exponent.
        e: &'a [u8],
        /// The modulus.
        n: &'a [u8],
    },
    /// ECDSA on `curve` (`nistp256`, `nistp384` or `nistp521`): the uncompressed SEC1
    /// point (0x04 || x || y).
    Ecdsa {
        /// The curve's SSH name.
        curve: &'static str,
        /// The point.
        point: &'a [u8],
    },
    /// Ed25519: the 32-byte public key.
    Ed25519(&'a [u8]),
}

/// Why a key was refused. The message is meant for the person who pasted the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(
    /// What is wrong, in words.
    pub String,
);

fn err(msg: impl Into<String>) -> KeyError {
    KeyError(msg.into())
}

impl PublicKey {
    /// Parses OpenSSH public key text: `<type> <base64> [comment]`. Leading and trailing
    /// whitespace and runs of blanks are tolerated (Triton's CAPI-194); authorized_keys
    /// options before the type, private keys and unknown types are refused.
    pub fn parse_openssh(text: &str) -> Result<PublicKey, KeyError> {
        if text.len() > MAX_KEY_TEXT {
            return Err(err(format!(
                "key text is {} bytes; at most {MAX_KEY_TEXT} are accepted",
                text.len()
            )));
        }
        let text = text.trim();
        if text.is_empty() {
            return Err(err("key is empty"));
        }
        if text.starts_with("-----BEGIN") {
            return Err(err(
                "key is in PEM form; give the OpenSSH public key (the one line of the .pub file)",
            ));
        }
        if text.contains('\n') || text.contains('\r') {
            return Err(err("key must be a single line"));
        }
        let mut fields = text.split_whitespace();
        let key_type = fields.next().unwrap_or_default();
        if !SUPPORTED_TYPES.contains(&key_type) {
            return Err(err(format!(
                "key type {key_type:?} is not supported (supported: {})",
                SUPPORTED_TYPES.join(", ")
            )));
        }
        let Some(b64) = fields.next() else {
            return Err(err(
                "key has no base64 data after its type (expected \"<type> <base64> [comment]\")",
            ));
        };
        let blob = STANDARD
            .decode(b64)
            .map_err(|e| err(format!("key data is not valid base64: {e}")))?;
        let comment = fields.collect::<Vec<_>>().join(" ");
        let mut key = PublicKey::from_blob(&blob)?;
        if key.key_type != key_type {
            return Err(err(format!(
                "key type {key_type:?} does not match the type inside the key data ({:?})",
                key.key_type
            )));
        }
        key.comment = comment;
        Ok(key)
    }

    /// Parses and validates a wire-format public key blob.
    pub fn from_blob(blob: &[u8]) -> Result<PublicKey, KeyError> {
        let mut r = Reader::new(blob);
        let key_type = r.string("key type")?;
        let key_type = std::str::from_utf8(key_type)
            .map_err(|_| err("key data: the key type is not text"))?
            .to_string();
        let (kind, bits) = match key_type.as_str() {
            "ssh-rsa" => {
                let e = r.mpint("RSA exponent")?;
                let n = r.mpint("RSA modulus")?;
                let bits = bit_length(&n);
                if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                    return Err(err(format!(
                        "RSA key is {bits} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} are accepted"
                    )));
                }
                if e.last().is_none_or(|b| b & 1 == 0) {
                    return Err(err("RSA exponent must be odd"));
                }
                let bits = u32::try_from(bits).map_err(|_| err("RSA key is too large"))?;
                (KeyKind::Rsa { e, n }, bits)
            }
            t if Curve::from_type(t).is_some() => {
                let curve = Curve::from_type(t).ok_or_else(|| err("unknown curve"))?;
                let name = r.string("curve name")?;
                if name != curve.ssh_name().as_bytes() {
                    return Err(err(format!(
                        "key data: curve {:?} does not match key type {t}",
                        String::from_utf8_lossy(name)
                    )));
                }
                let point = r.string("ECDSA point")?;
                let want = 1 + 2 * curve.field_len();
                if point.len() != want || point[0] != 0x04 {
                    return Err(err(format!(
                        "key data: ECDSA point must be an uncompressed {}-byte point (0x04 || x || y), found {} bytes",
                        want,
                        point.len()
                    )));
                }
                (
                    KeyKind::Ecdsa {
                        curve,
                        point: point.to_vec(),
                    },
                    curve.bits(),
                )
            }
            "ssh-ed25519" => {
                let key = r.string("Ed25519 key")?;
                if key.len() != 32 {
                    return Err(err(format!(
                        "key data: an Ed25519 key is 32 bytes, found {}",
                        key.len()
                    )));
                }
                (KeyKind::Ed25519 { key: key.to_vec() }, 256)
            }
            other => {
                return Err(err(format!(
                    "key type {other:?} is not supported (supported: {})",
                    SUPPORTED_TYPES.join(", ")
                )));
            }
        };
        if !r.is_empty() {
            return Err(err(format!(
                "key data has {} unexpected trailing bytes",
                r.remaining()
            )));
        }
        Ok(PublicKey {
            key_type,
            blob: blob.to_vec(),
            comment: String::new(),
            bits,
            kind,
        })
    }

    /// The key material, to verify a signature with.
    pub fn parts(&self) -> KeyParts<'_> {
        match &self.kind {
            KeyKind::Rsa { e, n } => KeyParts::Rsa { e, n },
            KeyKind::Ecdsa { curve, point } => KeyParts::Ecdsa {
                curve: curve.ssh_name(),
                point,
            },
            KeyKind::Ed25519 { key } => KeyParts::Ed25519(key),
        }
    }

    /// MD5 fingerprint, colon-separated lower-case hex (Triton's form, no `MD5:` prefix).
    pub fn md5_fingerprint(&self) -> String {
        let digest = Md5::digest(&self.blob);
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// SHA256 fingerprint: `SHA256:` + unpadded base64, as `ssh-keygen -l` prints it.
    pub fn sha256_fingerprint(&self) -> String {
        format!(
            "SHA256:{}",
            STANDARD_NO_PAD.encode(Sha256::digest(&self.blob))
        )
    }

    /// The canonical one-line text: `<type> <base64>[ <comment>]`.
    pub fn to_openssh(&self) -> String {
        let mut text = format!("{} {}", self.key_type, STANDARD.encode(&self.blob));
        if !self.comment.is_empty() {
            text.push(' ');
            text.push_str(&self.comment);
        }
        text
    }

    /// DER SubjectPublicKeyInfo (RFC 5280 §4.1.2.7 with RFC 3279, RFC 5480, RFC 8410).
    pub fn spki_der(&self) -> Vec<u8> {
        let (algorithm, key_bits) = match &self.kind {
            KeyKind::Rsa { e, n } => {
                // rsaEncryption, NULL parameters; key: RSAPublicKey ::= SEQUENCE { n, e }.
                let mut alg = vec![
                    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
                ];
                alg.extend_from_slice(&[0x05, 0x00]);
                let mut ints = der_integer(n);
                ints.extend(der_integer(e));
                (alg, der(0x30, &ints))
            }
            KeyKind::Ecdsa { curve, point } => {
                // id-ecPublicKey with the named curve; key: the point.
                let mut alg = vec![0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
                alg.extend_from_slice(curve.oid_der());
                (alg, point.clone())
            }
            KeyKind::Ed25519 { key } => (vec![0x06, 0x03, 0x2b, 0x65, 0x70], key.clone()),
        };
        let mut bit_string = vec![0u8]; // no unused bits
        bit_string.extend(key_bits);
        let mut body = der(0x30, &algorithm);
        body.extend(der(0x03, &bit_string));
        der(0x30, &body)
    }

    /// PEM `PUBLIC KEY` (what UFDS stores as `pkcs`; `ssh-keygen -e -m PKCS8`).
    pub fn to_pkcs8_pem(&self) -> String {
        let b64 = STANDARD.encode(self.spki_der());
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            // base64 output is ASCII, so every chunk is valid UTF-8.
            pem.push_str(&String::from_utf8_lossy(chunk));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }
}

/// Normalizes a fingerprint given by a caller: MD5 with or without `MD5:`, any case,
/// becomes Triton's lower-case colon form; `SHA256:...` is kept as is. `None` when the
/// text is neither.
pub fn normalize_fingerprint(text: &str) -> Option<Fingerprint> {
    if let Some(rest) = text.strip_prefix("SHA256:") {
        let valid = !rest.is_empty()
            && rest.len() <= 44
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
        return valid.then(|| Fingerprint::Sha256(text.to_string()));
    }
    let hex = text
        .strip_prefix("MD5:")
        .or_else(|| text.strip_prefix("md5:"))
        .unwrap_or(text);
    let parts: Vec<&str> = hex.split(':').collect();
    let valid = parts.len() == 16
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    valid.then(|| Fingerprint::Md5(hex.to_ascii_lowercase()))
}

/// A fingerprint a caller gave, in its normal form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fingerprint {
    /// Colon-separated lower-case hex, no prefix.
    Md5(String),
    /// `SHA256:` and unpadded base64.
    Sha256(String),
}

/// A reader of the SSH wire encoding (RFC 4251 §5).
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn string(&mut self, what: &str) -> Result<&'a [u8], KeyError> {
        if self.remaining() < 4 {
            return Err(err(format!("key data is truncated before the {what}")));
        }
        let len_bytes: [u8; 4] = self.data[self.pos..self.pos + 4]
            .try_into()
            .map_err(|_| err("key data is truncated"))?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        self.pos += 4;
        if len > self.remaining() {
            return Err(err(format!(
                "key data is truncated: the {what} claims {len} bytes, {} remain",
                self.remaining()
            )));
        }
        let s = &self.data[self.pos..self.pos + len];
        self.pos += len;
        Ok(s)
    }

    /// A positive mpint, returned without leading zero bytes.
    fn mpint(&mut self, what: &str) -> Result<Vec<u8>, KeyError> {
        let raw = self.string(what)?;
        if raw.first().is_some_and(|b| b & 0x80 != 0) {
            return Err(err(format!("key data: the {what} is negative")));
        }
        let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
        if start == raw.len() {
            return Err(err(format!("key data: the {what} is zero")));
        }
        Ok(raw[start..].to_vec())
    }
}

/// Bits in a big-endian unsigned integer without leading zero bytes.
fn bit_length(n: &[u8]) -> usize {
    match n.first() {
        None => 0,
        Some(&first) => (n.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
    }
}

/// One DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER of a positive big-endian magnitude without leading zeros.
fn der_integer(magnitude: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(magnitude.len() + 1);
    if magnitude.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(magnitude);
    der(0x02, &content)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with `ssh-keygen -t ed25519 -C test@example -N ''`; fingerprints from
    // `ssh-keygen -l -E md5` and `ssh-keygen -l`.
    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtpa0TYV3j5nF/oVHCVuEFz6MbfquixUK+iXgaO+xzI test@example";
    const ED25519_MD5: &str = "65:ef:6d:86:77:0b:18:d0:4b:4c:74:f7:8e:6e:d2:dc";
    const ED25519_SHA256: &str = "SHA256:r+JHr81HoMwDANrsIQoP/hFUgvLJEUDkYaYRmZyqW8w";

    fn wire_string(s: &[u8]) -> Vec<u8> {
        let mut v = (s.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(s);
        v
    }

    /// The text form of a `key_type` key whose blob is `strings`, each as an SSH wire
    /// string, then the raw bytes `tail`.
    fn key_text(key_type: &str, strings: &[&[u8]], tail: &[u8]) -> String {
        let mut blob: Vec<u8> = strings.iter().flat_map(|s| wire_string(s)).collect();
        blob.extend_from_slice(tail);
        format!("{key_type} {}", STANDARD.encode(&blob))
    }

    #[test]
    fn ed25519_parses_with_comment_and_fingerprints() {
        let key = PublicKey::parse_openssh(ED25519).unwrap();
        assert_eq!(key.key_type, "ssh-ed25519");
        assert_eq!(key.bits, 256);
        assert_eq!(key.comment, "test@example");
        assert_eq!(key.to_openssh(), ED25519);
        assert_eq!(key.md5_fingerprint(), ED25519_MD5);
        assert_eq!(key.sha256_fingerprint(), ED25519_SHA256);
    }

    #[test]
    fn parts_give_the_key_material() {
        let key = PublicKey::parse_openssh(ED25519).unwrap();
        let KeyParts::Ed25519(k) = key.parts() else {
            panic!("an Ed25519 key, got {:?}", key.parts());
        };
        assert_eq!(k, &key.blob[key.blob.len() - 32..]);
    }

    #[test]
    fn extra_whitespace_is_tolerated() {
        let messy = format!(
            "  {}  ",
            ED25519.replace(' ', "   ").replace("test@example", "a  b")
        );
        let key = PublicKey::parse_openssh(&messy).unwrap();
        assert_eq!(key.comment, "a b");
    }

    #[test]
    fn refusals_say_why() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("ssh-dss AAAA", "not supported"),
            ("ssh-ed25519", "no base64"),
            ("ssh-ed25519 !!!notbase64", "not valid base64"),
            ("-----BEGIN PUBLIC KEY-----", "PEM"),
            (
                "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIGtpa0TYV3j5nF/oVHCVuEFz6MbfquixUK+iXgaO+xzI",
                "does not match",
            ),
        ];
        for (text, want) in cases {
            let e = PublicKey::parse_openssh(text).unwrap_err();
            assert!(e.0.contains(want), "{text:?}: {e} should mention {want:?}");
        }
    }

    #[test]
    fn malformed_blobs_are_refused_saying_why() {
        let n_512_bits = [&[0u8][..], &[0xff; 64]].concat();
        let point = [&[4u8][..], &[1; 64]].concat();
        let ed25519 = b"ssh-ed25519".as_slice();
        let cases: &[(&str, String, &str)] = &[
            (
                "an ed25519 key of 31 bytes",
                key_text("ssh-ed25519", &[ed25519, &[7; 31]], &[]),
                "32 bytes",
            ),
            (
                "a byte after the key",
                key_text("ssh-ed25519", &[ed25519, &[7; 32]], &[0]),
                "trailing",
            ),
            (
                "a string shorter than its length",
                key_text("ssh-ed25519", &[ed25519], &[0, 0, 1, 0, 1, 2]),
                "truncated",
            ),
            (
                "a 512-bit RSA key",
                key_text("ssh-rsa", &[b"ssh-rsa", &[1, 0, 1], &n_512_bits], &[]),
                "512 bits",
            ),
            (
                "an ECDSA curve other than its type's",
                key_text(
                    "ecdsa-sha2-nistp256",
                    &[b"ecdsa-sha2-nistp256", b"nistp384", &point],
                    &[],
                ),
                "nistp384",
            ),
        ];
        for (what, text, want) in cases {
            let e = PublicKey::parse_openssh(text).unwrap_err();
            assert!(e.0.contains(want), "{what}: {e} should mention {want:?}");
        }
    }

    #[test]
    fn ed25519_spki_has_the_rfc8410_prefix() {
        let key = PublicKey::parse_openssh(ED25519).unwrap();
        let der = key.spki_der();
        assert_eq!(
            &der[..12],
            &[
                0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00
            ]
        );
        assert_eq!(der.len(), 44);
        assert!(
            key.to_pkcs8_pem()
                .starts_with("-----BEGIN PUBLIC KEY-----\n")
        );
    }

    #[test]
    fn der_lengths_use_long_form_past_127() {
        assert_eq!(der(0x04, &[0; 5])[..2], [0x04, 5]);
        assert_eq!(der(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(der(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(der_integer(&[0x80]), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(der_integer(&[0x7f]), vec![0x02, 0x01, 0x7f]);
    }

    #[test]
    fn fingerprints_are_normalized() {
        let md5 = "AB:cd:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd";
        assert_eq!(
            normalize_fingerprint(md5),
            Some(Fingerprint::Md5(md5.to_ascii_lowercase()))
        );
        assert_eq!(
            normalize_fingerprint(&format!("MD5:{md5}")),
            Some(Fingerprint::Md5(md5.to_ascii_lowercase()))
        );
        assert_eq!(
            normalize_fingerprint("SHA256:abc+/9"),
            Some(Fingerprint::Sha256("SHA256:abc+/9".into()))
        );
        assert_eq!(normalize_fingerprint("my laptop"), None);
        assert_eq!(normalize_fingerprint("SHA256:"), None);
        assert_eq!(normalize_fingerprint("ab:cd"), None);
    }
}
