//! The `Host` header picks what a request is about (triton-cmon `enforceHostHandler`):
//! its first label, lower-cased, is `cmon` (the API itself) or the uuid of an instance or
//! a compute node (its metrics); anything else is 404.

use uuid::Uuid;

/// What the `Host` header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `cmon.<suffix>`: discovery.
    Cmon,
    /// `<uuid>.<suffix>`: an instance's or a compute node's metrics.
    Uuid(Uuid),
}

/// The target of a `Host` header value; `None` for a missing or unknown one.
pub fn parse(host: Option<&[u8]>) -> Option<Target> {
    let host = std::str::from_utf8(host?).ok()?;
    let first = host.split(['.', ':']).next()?.to_ascii_lowercase();
    if first == "cmon" {
        return Some(Target::Cmon);
    }
    // Triton's pattern: lower-case hyphenated hex, 36 characters.
    if first.len() != 36 {
        return None;
    }
    let hyphens = [8, 13, 18, 23];
    let well_formed = first.char_indices().all(|(i, c)| {
        if hyphens.contains(&i) {
            c == '-'
        } else {
            c.is_ascii_hexdigit()
        }
    });
    if !well_formed {
        return None;
    }
    Uuid::parse_str(&first).ok().map(Target::Uuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_label_decides() {
        let u = "b5b2d3e4-0d5c-4c8c-9a55-5e2d8d1f0a11";
        assert_eq!(parse(Some(b"cmon.coal.triton.zone")), Some(Target::Cmon));
        assert_eq!(
            parse(Some(b"CMON.coal.triton.zone:9163")),
            Some(Target::Cmon)
        );
        assert_eq!(parse(Some(b"cmon:9163")), Some(Target::Cmon));
        assert_eq!(
            parse(Some(format!("{}.cmon.coal", u.to_uppercase()).as_bytes())),
            Some(Target::Uuid(Uuid::parse_str(u).unwrap()))
        );
        assert_eq!(parse(Some(b"www.coal.triton.zone")), None);
        assert_eq!(parse(Some(b"b5b2d3e40d5c4c8c9a555e2d8d1f0a11.cmon")), None);
        assert_eq!(parse(Some(b"127.0.0.1:9163")), None);
        assert_eq!(parse(Some(b"")), None);
        assert_eq!(parse(Some(&[0xff, 0xfe])), None);
        assert_eq!(parse(None), None);
    }
}
