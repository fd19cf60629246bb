//! Test data that shows where it went wrong: bytes that are alike nowhere over short runs,
//! the same for a seed on every run and machine.

use triton_common::rng::Rng;

/// `len` bytes of seed `seed`'s xorshift64* sequence ([`Rng`]): a block lost, repeated or
/// moved changes what a comparison or a checksum of them sees.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::pattern;

    #[test]
    fn a_seed_gives_the_same_bytes_of_any_length_and_another_seed_others() {
        let long = pattern(1000, 7);
        assert_eq!(long.len(), 1000);
        assert_eq!(pattern(13, 7), long[..13]);
        assert_eq!(pattern(0, 7), Vec::<u8>::new());
        assert_ne!(pattern(64, 8), long[..64]);
        // No 8-byte run comes back within the first KiB.
        let runs: std::collections::HashSet<&[u8]> = long.windows(8).collect();
        assert_eq!(runs.len(), long.len() - 7);
    }
}
