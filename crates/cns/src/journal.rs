//! Which IXFR steps a zone keeps (the journal's garbage collection).
//!
//! A zone's steps form one chain, oldest first, the last ending at the zone's serial.
//! [`Policy::drop_count`] says how many of the oldest to drop:
//!
//! - the newest [`Policy::keep`] steps are always kept (for secondaries CNS does not
//!   know, and right after a restart, when it knows none);
//! - older ones are kept while a known secondary still needs them (its serial for the
//!   zone is the `from` of one of them), and only on a full pass
//!   ([`Pass::Full`]: the periodic one, not a commit's);
//! - never more than [`Policy::max`] steps, and none older than [`Policy::max_age_ms`]
//!   (unless among the newest `keep`), whatever a secondary needs: a secondary further
//!   behind gets the whole zone (RFC 1995 allows it).

/// The limits (config `journal_keep`, `journal_keep_days`, `journal_max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Steps always kept.
    pub keep: usize,
    /// Steps never exceeded.
    pub max: usize,
    /// Older steps (by commit time, ms) are dropped unless among the newest `keep`.
    pub max_age_ms: i64,
}

/// One retained step: its `from` serial and when it was committed (ms since the epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kept {
    pub from: u32,
    pub at_ms: i64,
}

/// What a pass may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// At a commit: only the hard limits (`max`, `max_age_ms`); a step beyond `keep`
    /// stays, as a secondary may need it.
    Commit,
    /// The periodic pass: beyond `keep`, only what a known secondary needs.
    Full,
}

impl Policy {
    /// How many of `steps` (oldest first) to drop, given the serials the known
    /// secondaries have for the zone, at `now_ms`.
    pub fn drop_count(&self, steps: &[Kept], peers: &[u32], now_ms: i64, pass: Pass) -> usize {
        let keep = self.keep.max(1);
        let max = self.max.max(keep);
        let n = steps.len();
        // The hard limits: at most `max`, none too old outside the newest `keep`.
        let mut drop = n.saturating_sub(max);
        let protected = n.saturating_sub(keep);
        while drop < protected && now_ms.saturating_sub(steps[drop].at_ms) > self.max_age_ms {
            drop += 1;
        }
        if pass == Pass::Commit {
            return drop;
        }
        // Beyond the newest `keep`: from the oldest step a known secondary starts at.
        let needed = peers
            .iter()
            .filter_map(|p| steps.iter().position(|s| s.from == *p))
            .min()
            .unwrap_or(protected);
        drop.max(needed.min(protected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn steps(n: u32, at: impl Fn(u32) -> i64) -> Vec<Kept> {
        (0..n)
            .map(|i| Kept {
                from: 100 + i,
                at_ms: at(i),
            })
            .collect()
    }

    fn policy() -> Policy {
        Policy {
            keep: 3,
            max: 8,
            max_age_ms: 7 * DAY,
        }
    }

    #[test]
    fn beyond_the_newest_keep_only_what_a_known_peer_needs() {
        let now = 100 * DAY;
        let s = steps(6, |_| now);
        let p = policy();
        // No peer known: the newest 3.
        assert_eq!(p.drop_count(&s, &[], now, Pass::Full), 3);
        // A peer at 101 needs the steps from 101 on: one dropped.
        assert_eq!(p.drop_count(&s, &[104, 101], now, Pass::Full), 1);
        // A current peer (106) or one at a serial not in the chain needs nothing more.
        assert_eq!(p.drop_count(&s, &[106, 7], now, Pass::Full), 3);
        // A peer inside the newest 3 changes nothing.
        assert_eq!(p.drop_count(&s, &[104], now, Pass::Full), 3);
        // A commit's pass keeps them all (a secondary may need them).
        assert_eq!(p.drop_count(&s, &[], now, Pass::Commit), 0);
        // Fewer steps than keep: nothing to drop.
        assert_eq!(p.drop_count(&s[..2], &[], now, Pass::Full), 0);
    }

    #[test]
    fn the_hard_limits_win_over_what_a_peer_needs() {
        let now = 100 * DAY;
        let p = policy();
        // 10 steps, max 8: two go even though a peer is at the oldest.
        let s = steps(10, |_| now);
        assert_eq!(p.drop_count(&s, &[100], now, Pass::Commit), 2);
        assert_eq!(p.drop_count(&s, &[100], now, Pass::Full), 2);
        // Steps i < 4 are 8 days old: dropped, the peer at 100 notwithstanding.
        let s = steps(6, |i| if i < 4 { now - 8 * DAY } else { now });
        assert_eq!(p.drop_count(&s, &[100], now, Pass::Commit), 3);
        assert_eq!(p.drop_count(&s, &[100], now, Pass::Full), 3);
        // ... but the newest 3 stay however old.
        let s = steps(5, |_| now - 30 * DAY);
        assert_eq!(p.drop_count(&s, &[], now, Pass::Commit), 2);
    }
}
