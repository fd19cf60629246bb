//! The head of a plain-HTTP request on CMon's HTTPS port (`plain::answer`), on arbitrary
//! bytes.
//!
//! It must return (never panic); an answer is one whole HTTP/1.1 response, 403 or 404,
//! whose Content-Length is its body's.
#![no_main]

use cmon::plain::answer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(a) = answer(data) {
        let text = std::str::from_utf8(&a).expect("an answer is UTF-8");
        assert!(
            text.starts_with("HTTP/1.1 403 ") || text.starts_with("HTTP/1.1 404 "),
            "{text}"
        );
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .expect("a length");
        assert_eq!(length.parse::<usize>().unwrap(), body.len());
    }
});
