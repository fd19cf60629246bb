//! cn-agent's reader of the kernel's neighbour notices (`linux::netlink::parse_misses`)
//! on arbitrary bytes: the datagrams the overlay's miss thread reads. The addresses in a
//! miss come from tenants' packets; the framing is the kernel's, taken on trust nowhere.
//!
//! Checked: it returns; every miss it gives names a device (index above 0) and is an
//! IPv4 address or a unicast MAC that is not all zeroes.

#![no_main]

use cn_agent::linux::netlink::{MissKind, parse_misses};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for miss in parse_misses(data) {
        assert!(miss.ifindex > 0);
        if let MissKind::L2(mac) = miss.kind {
            assert_eq!(mac[0] & 1, 0, "a multicast MAC was passed on");
            assert_ne!(mac, [0; 6]);
        }
    }
});
