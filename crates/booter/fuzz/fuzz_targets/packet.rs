//! dhcpd's packet handler on arbitrary bytes: `dhcp::packet::parse` either drops the
//! packet with a reason or gives a request, and every reply built to a request (OFFER,
//! ACK, INFORM's ACK, NAK, with option 82 echoed) encodes and decodes with the request's
//! xid (`dhcp::packet::fuzz_one`). Truncated packets, options running past the end,
//! giant or repeated option 82s and unknown message types must all end in a drop, never
//! a panic. The seeds are a DISCOVER, a relayed REQUEST with option 82, and an iPXE
//! DISCOVER with options 77 and 93.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    booter::dhcp::packet::fuzz_one(data);
});
