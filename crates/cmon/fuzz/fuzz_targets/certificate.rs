//! A client certificate as CMon reads it (`cert::inspect`) on arbitrary bytes, and the
//! same bytes as an SSH key blob (`cert::SshKey::from_blob`, what UFDS stores).
//!
//! Each must return (never panic). A certificate that is read names a non-empty login
//! and a fingerprint of 16 colon-separated hex bytes; only a `joyentCmon` one carries an
//! end date, and it is not in the past. Checking the claim's signature against a key
//! read from the same bytes returns too.
#![no_main]

use cmon::cert::{SshKey, inspect};
use libfuzzer_sys::fuzz_target;

/// 2026-01-01: a fixed "now", so a run is repeatable.
const NOW: i64 = 1_767_225_600;

fuzz_target!(|data: &[u8]| {
    let key = SshKey::from_blob(data);
    if let Ok(claim) = inspect(data, NOW) {
        assert!(!claim.login.is_empty());
        assert_eq!(claim.fingerprint.len(), 47, "{}", claim.fingerprint);
        assert!(
            claim
                .fingerprint
                .split(':')
                .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()))
        );
        match claim.not_after {
            Some(end) => assert!(claim.joyent_cmon && end >= NOW),
            None => assert!(!claim.joyent_cmon),
        }
        if let Ok(key) = key {
            let _ = key.verify(&claim);
        }
    }
});
