//! dhcpd's TFTP request parser (`tftp::parse_request`) on arbitrary bytes: a read
//! request or a refusal with a TFTP error code, never a panic; an accepted request has a
//! filename and a block size within RFC 2348's range.
#![no_main]

use booter::tftp::{MAX_BLKSIZE, MIN_BLKSIZE, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = parse_request(data) {
        assert!(!req.filename.is_empty());
        if let Some(b) = req.blksize {
            assert!((MIN_BLKSIZE..=MAX_BLKSIZE).contains(&b));
        }
    }
});
