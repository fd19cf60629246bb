//! The `Host` header as CMon routes on it (`host::parse`), on arbitrary bytes.
//!
//! It must return (never panic); a uuid target is the header's first label, lower-cased.
#![no_main]

use cmon::host::{Target, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse(Some(data)) {
        Some(Target::Uuid(u)) => {
            let text = std::str::from_utf8(data).expect("a uuid host is UTF-8");
            let first = text.split(['.', ':']).next().unwrap_or_default();
            assert_eq!(first.to_ascii_lowercase(), u.to_string());
        }
        Some(Target::Cmon) => {
            let text = std::str::from_utf8(data).expect("a cmon host is UTF-8");
            assert!(text.to_ascii_lowercase().starts_with("cmon"));
        }
        None => {}
    }
});
