//! The SVP decoders (`svp::decode_request`, `svp::decode_response`) on arbitrary bytes.
//!
//! The first byte picks the form, the rest is the stream received:
//!
//! * bit 0 clear: every frame's CRC is made right first (walking the headers by their
//!   sizes), and bit 1 clear: every version is set to 1, since a mutated frame rarely
//!   keeps either and the decoder stops at the first that is wrong;
//! * bit 2 picks the decoder: requests (clear) or responses (set).
//!
//! Each decoder must return (never panic), and what it returns must hold together:
//! a whole frame's length is within the input, a byte fewer is `Incomplete`, the message
//! encodes to a frame that decodes to the same message with the same id; an error's
//! frame length is within the input, and only a frame over the limit has none.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_client::svp::{
    Decoded, FrameError, HEADER_LEN, MAX_BODY_LEN, decode_request, decode_response, frame_crc,
};

fn fix(data: &mut [u8], crc: bool, version: bool) {
    let mut at = 0;
    while data.len() - at >= HEADER_LEN {
        let size =
            u32::from_be_bytes([data[at + 4], data[at + 5], data[at + 6], data[at + 7]]) as usize;
        if size > MAX_BODY_LEN {
            return;
        }
        let end = (at + HEADER_LEN + size).min(data.len());
        if version {
            data[at..at + 2].copy_from_slice(&1u16.to_be_bytes());
        }
        if crc {
            let c = frame_crc(&data[at..end]);
            data[at + 12..at + 16].copy_from_slice(&c.to_be_bytes());
        }
        at = end;
    }
}

fn check<T: PartialEq + std::fmt::Debug>(
    data: &[u8],
    decode: fn(&[u8]) -> Result<Decoded<T>, FrameError>,
    encode: fn(&T, u32) -> Vec<u8>,
) {
    let mut rest = data;
    // Every frame of the stream, as a reader would take them.
    while !rest.is_empty() {
        match decode(rest) {
            Ok(Decoded::Incomplete) => return,
            Ok(Decoded::Frame { id, message, len }) => {
                assert!(len >= HEADER_LEN && len <= rest.len());
                assert_eq!(decode(&rest[..len - 1]), Ok(Decoded::Incomplete));
                let again = encode(&message, id);
                match decode(&again) {
                    Ok(Decoded::Frame {
                        id: id2,
                        message: m2,
                        len: len2,
                    }) => {
                        assert_eq!((id2, &m2, len2), (id, &message, again.len()));
                    }
                    other => panic!("{message:?} encoded does not decode: {other:?}"),
                }
                rest = &rest[len..];
            }
            Err(e) => {
                let _ = e.to_string();
                match e.frame_len() {
                    Some(len) => {
                        assert!(len >= HEADER_LEN && len <= rest.len(), "{e:?}");
                        rest = &rest[len..];
                    }
                    None => {
                        assert!(matches!(e, FrameError::TooLarge { .. }));
                        return;
                    }
                }
            }
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let mut data = data.to_vec();
    fix(&mut data, mode & 1 == 0, mode & 2 == 0);
    if mode & 4 == 0 {
        check(&data, decode_request, |m, id| m.encode(id));
    } else {
        check(&data, decode_response, |m, id| m.encode(id));
    }
});
