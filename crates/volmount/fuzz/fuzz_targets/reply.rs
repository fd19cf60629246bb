//! Arbitrary bytes as what an NFS server sends volmount: the first byte picks the
//! result type, the rest is a TCP stream of RPC records, each read with
//! `rpc::read_record`, checked with `rpc::parse_reply` (the xid being the record's first
//! four bytes) and its results decoded with `rpc::decode_result`. It must return
//! (no panic, no allocation past the record limit); a record read is at most
//! `MAX_RECORD` bytes and lies within the input; the results' range lies within the
//! record. Run with `-malloc_limit_mb=4200`: nfs3_types zero-fills an opaque of the
//! length announced (up to 4 GiB, calloc: address space, no memory touched) before it
//! finds the bytes missing; any larger allocation is still a failure.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use nfs3_types::nfs3::{
    CREATE3res, FSINFO3res, GETATTR3res, LOOKUP3res, READ3res, READDIRPLUS3res, WRITE3res,
};
use volmount::rpc::{MAX_RECORD, decode_result, parse_reply, read_record};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, stream)) = data.split_first() else {
        return;
    };
    let mut cursor = Cursor::new(stream);
    while let Ok(record) = read_record(&mut cursor) {
        assert!(record.len() <= MAX_RECORD && record.len() <= stream.len());
        let xid = record
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
        let Ok(range) = parse_reply(&record, xid) else {
            continue;
        };
        assert!(range.end <= record.len() && range.start <= range.end);
        let body = &record[range];
        match kind % 8 {
            0 => drop(decode_result::<GETATTR3res>(body)),
            1 => drop(decode_result::<LOOKUP3res>(body)),
            2 => drop(decode_result::<READ3res<'static>>(body)),
            3 => drop(decode_result::<WRITE3res>(body)),
            4 => drop(decode_result::<READDIRPLUS3res<'static>>(body)),
            5 => drop(decode_result::<CREATE3res>(body)),
            6 => drop(decode_result::<FSINFO3res>(body)),
            _ => drop(decode_result::<volmount::nfs::MountReply>(body)),
        }
    }
});
