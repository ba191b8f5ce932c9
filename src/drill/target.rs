//! The drill's target: `--target-random` draws a uniformly random instant from the recoverable
//! window (from the end of the earliest usable backup to the last archived transaction), with a
//! seeded generator so that `--seed N` draws the same instant again. Pure: the window comes from
//! the catalogue and the index the caller loaded.

use std::collections::BTreeMap;

use crate::index::SegmentSummary;
use crate::pg::{TimeLineId, XLogSegNo};
use crate::repo::BackupManifest;

/// The recoverable window in Unix microseconds: `[start, end)`. A time target in it has a
/// backup that ends at or before it and an archived transaction end after it, which is what the
/// planner requires of a time target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The stop time of the earliest backup (of `--backup`, if given).
    pub start_us: i64,
    /// The last archived transaction end (exclusive: recovery stops at the first transaction
    /// end after the target, which must be archived).
    pub end_us: i64,
}

/// The window, or `None` when it is empty (no backup, or no transaction archived after one).
pub fn window(
    backups: &[&BackupManifest],
    summaries: &BTreeMap<(TimeLineId, XLogSegNo), SegmentSummary>,
) -> Option<Window> {
    let start_us = backups.iter().map(|b| b.stop_time_us).min()?;
    let end_us = summaries.values().filter_map(|s| s.last_xact_time_us).max()?;
    (end_us > start_us).then_some(Window { start_us, end_us })
}

/// SplitMix64 (Steele, Lea and Flood, 2014): a small, well-mixed generator; the same seed gives
/// the same sequence on every platform.
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `[0, n)` (`n > 0`), without modulo bias (rejection sampling).
    pub fn below(&mut self, n: u64) -> u64 {
        let n = n.max(1);
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }
}

/// A uniformly random instant of `w` drawn with `seed`.
pub fn draw(w: Window, seed: u64) -> i64 {
    let span = w.end_us.saturating_sub(w.start_us).max(1) as u64;
    w.start_us.saturating_add(SplitMix64::new(seed).below(span) as i64)
}

/// A fresh seed from the operating system's generator.
pub fn fresh_seed() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return t ^ u64::from(std::process::id());
    }
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_draws_the_same_instant_inside_the_window() {
        let w = Window { start_us: 1_000_000, end_us: 5_000_000 };
        for seed in 0..500 {
            let t = draw(w, seed);
            assert!((w.start_us..w.end_us).contains(&t), "{t}");
            assert_eq!(t, draw(w, seed));
        }
        assert_ne!(draw(w, 1), draw(w, 2));
        // A one-microsecond window has one instant.
        assert_eq!(draw(Window { start_us: 7, end_us: 8 }, 42), 7);
    }

    #[test]
    fn draws_spread_over_the_window() {
        let w = Window { start_us: 0, end_us: 10 };
        let mut seen = [0u32; 10];
        for seed in 0..10_000 {
            seen[draw(w, seed) as usize] += 1;
        }
        assert!(seen.iter().all(|n| (800..1200).contains(n)), "{seen:?}");
    }
}
