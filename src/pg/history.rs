//! Timeline history files (`00000002.history`): the ancestry of a timeline and its switch points,
//! and the one home of PostgreSQL's rule for which timeline a WAL segment is read from.
//!
//! Port of the parser in `readTimeLineHistory` (src/backend/access/transam/timeline.c): one line per
//! ancestor, `parentTLI <tab> switchpoint <tab> reason`; blank lines and `#` comments are skipped;
//! timeline ids must increase. [`ExpectedTimelines`] is the list recovery follows (`expectedTLEs`),
//! with `tliOfPointInHistory` and `XLogFileReadAnyTLI` as methods: the planner (`recovery/`) and the
//! prefetcher (`archive/prefetch.rs`) both ask it, so they cannot drift apart.

use super::FormatError;
use super::lsn::Lsn;
use super::names::{TimeLineId, WalSegSize, XLogSegNo};

/// One ancestor of a timeline: `tli` ended at `switchpoint`, where its child began.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TimelineHistoryEntry {
    /// The ancestor timeline (`timeline` in JSON).
    #[serde(rename = "timeline")]
    pub tli: TimeLineId,
    /// The LSN at which the next timeline branched off.
    pub switchpoint: Lsn,
    /// The reason PostgreSQL wrote (free text, may be empty).
    pub reason: String,
}

/// The parsed content of the history file of timeline `tli`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TimelineHistory {
    /// The timeline whose history this is (`timeline` in JSON).
    #[serde(rename = "timeline")]
    pub tli: TimeLineId,
    /// Its ancestors, oldest first.
    pub ancestors: Vec<TimelineHistoryEntry>,
}

impl TimelineHistory {
    /// Parses the history file of timeline `tli`.
    #[doc(alias = "readTimeLineHistory")]
    pub fn parse(tli: TimeLineId, content: &[u8]) -> Result<Self, FormatError> {
        let text = std::str::from_utf8(content)
            .map_err(|_| FormatError::invalid("timeline history", "not valid UTF-8 text"))?;
        let mut ancestors: Vec<TimelineHistoryEntry> = Vec::new();
        for (no, raw) in text.lines().enumerate() {
            let line = raw.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |d: &str| {
                FormatError::invalid("timeline history", format!("line {}: {d}: {raw:?}", no + 1))
            };
            let mut fields = line.splitn(3, '\t');
            let t = fields.next().unwrap_or_default();
            let t: u32 = t.parse().map_err(|_| bad("expected a timeline id"))?;
            let t = TimeLineId::new(t).map_err(|_| bad("timeline 0"))?;
            let lsn: Lsn = fields
                .next()
                .ok_or_else(|| bad("expected a switch point"))?
                .trim()
                .parse()
                .map_err(|_| bad("expected a switch point X/X"))?;
            let reason = fields.next().unwrap_or_default().trim_end().to_owned();
            if let Some(prev) = ancestors.last() {
                if t <= prev.tli {
                    return Err(bad("timeline ids must be in increasing sequence"));
                }
                if lsn < prev.switchpoint {
                    return Err(bad("switch points must not go backwards"));
                }
            }
            if t >= tli {
                return Err(bad("an ancestor must be older than the timeline itself"));
            }
            ancestors.push(TimelineHistoryEntry { tli: t, switchpoint: lsn, reason });
        }
        Ok(TimelineHistory { tli, ancestors })
    }
}

/// One timeline on the path recovery follows, with the WAL it contributes: from `begin` (where it
/// branched off its parent; `None` for the oldest) up to `end` (where its child branched off it;
/// `None` for the newest). PostgreSQL's `TimeLineHistoryEntry` (src/include/access/timeline.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineSpan {
    /// The timeline.
    pub tli: TimeLineId,
    /// Its first LSN on the path, `None` for the oldest timeline (`InvalidXLogRecPtr`).
    pub begin: Option<Lsn>,
    /// Its switch point, `None` for the newest timeline.
    pub end: Option<Lsn>,
}

/// The timelines recovery follows to reach a target timeline, as `readTimeLineHistory` returns
/// them (`expectedTLEs` in src/backend/access/transam/xlogrecovery.c): the target first, then its
/// ancestors, newest to oldest, each with the WAL range it contributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedTimelines {
    newest_first: Vec<TimelineSpan>,
}

impl ExpectedTimelines {
    /// The path to `target`, from its history file; `None` for a timeline without one (timeline 1,
    /// or a history that is not archived): then the path is the target alone, as PostgreSQL assumes
    /// when `readTimeLineHistory` finds no file.
    #[doc(alias = "readTimeLineHistory")]
    pub fn new(target: TimeLineId, history: Option<&TimelineHistory>) -> Self {
        let mut oldest_first = Vec::new();
        let mut begin = None;
        for a in history.map(|h| h.ancestors.as_slice()).unwrap_or_default() {
            oldest_first.push(TimelineSpan { tli: a.tli, begin, end: Some(a.switchpoint) });
            begin = Some(a.switchpoint);
        }
        oldest_first.push(TimelineSpan { tli: target, begin, end: None });
        oldest_first.reverse();
        ExpectedTimelines { newest_first: oldest_first }
    }

    /// The target timeline.
    pub fn target(&self) -> TimeLineId {
        self.newest_first.first().map_or(TimeLineId::FIRST, |s| s.tli)
    }

    /// The timelines of the path, oldest first.
    pub fn oldest_first(&self) -> impl DoubleEndedIterator<Item = &TimelineSpan> {
        self.newest_first.iter().rev()
    }

    /// Whether `tli` is on the path.
    pub fn contains(&self, tli: TimeLineId) -> bool {
        self.newest_first.iter().any(|s| s.tli == tli)
    }

    /// The timeline of the path that holds `lsn`: the one whose range contains it (the target,
    /// past every switch point).
    ///
    /// Port of `tliOfPointInHistory` in src/backend/access/transam/timeline.c.
    #[doc(alias = "tliOfPointInHistory")]
    pub fn timeline_of(&self, lsn: Lsn) -> TimeLineId {
        self.oldest_first()
            .find(|s| s.begin.is_none_or(|b| b <= lsn) && s.end.is_none_or(|e| lsn < e))
            .map_or(self.target(), |s| s.tli)
    }

    /// The timelines PostgreSQL tries, in order, when recovery needs segment `segno`: the path's
    /// timelines newest first, stopping at the first older than `cur_file_tli` (the timeline of
    /// the segment read before, `None` at the start of recovery: the timeline never goes back), and
    /// skipping those that began after the segment (a timeline's WAL starts in the segment that
    /// holds its switch point: PostgreSQL copies the parent's WAL up to the switch point into the
    /// new timeline's file when it promotes). See [`ExpectedTimelines::read_any_tli`].
    pub fn segment_candidates(
        &self,
        segno: XLogSegNo,
        seg_size: WalSegSize,
        cur_file_tli: Option<TimeLineId>,
    ) -> impl Iterator<Item = TimeLineId> + '_ {
        self.newest_first
            .iter()
            .take_while(move |s| cur_file_tli.is_none_or(|cur| s.tli >= cur))
            .filter(move |s| s.begin.is_none_or(|b| b.segment(seg_size) <= segno))
            .map(|s| s.tli)
    }

    /// The timeline PostgreSQL reads segment `segno` from: the first of
    /// [`segment_candidates`](ExpectedTimelines::segment_candidates) whose file the archive holds
    /// (`exists`). `None`: no candidate is archived, and recovery cannot read the segment.
    ///
    /// Port of `XLogFileReadAnyTLI` in src/backend/access/transam/xlogrecovery.c (its loop over
    /// `expectedTLEs`, with `exists` in place of `XLogFileRead` from the archive).
    #[doc(alias = "XLogFileReadAnyTLI")]
    pub fn read_any_tli(
        &self,
        segno: XLogSegNo,
        seg_size: WalSegSize,
        cur_file_tli: Option<TimeLineId>,
        mut exists: impl FnMut(TimeLineId) -> bool,
    ) -> Option<TimeLineId> {
        self.segment_candidates(segno, seg_size, cur_file_tli).find(|t| exists(*t))
    }

    /// The timeline PostgreSQL asks the archive for first for segment `segno`: the file that holds
    /// the path's WAL. An older candidate is read only when that file is missing, and whatever it
    /// holds past its switch point is not the path's WAL. The planner requires this file and the
    /// prefetcher fetches it ahead.
    pub fn segment_timeline(
        &self,
        segno: XLogSegNo,
        seg_size: WalSegSize,
        cur_file_tli: Option<TimeLineId>,
    ) -> Option<TimeLineId> {
        self.read_any_tli(segno, seg_size, cur_file_tli, |_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_format() {
        let text = b"1\t0/3000160\tno recovery target specified\n\n# comment\n2\t0/5000000\tat restore point \"x\"\n";
        let h = TimelineHistory::parse(TimeLineId::new(3).unwrap(), text).unwrap();
        assert_eq!(h.ancestors.len(), 2);
        assert_eq!(h.ancestors[0].tli.get(), 1);
        assert_eq!(h.ancestors[0].switchpoint, "0/3000160".parse().unwrap());
        assert_eq!(h.ancestors[1].reason, "at restore point \"x\"");
    }

    #[test]
    fn rejects_garbage() {
        let t3 = TimeLineId::new(3).unwrap();
        for bad in [
            &b"x\t0/0\tr\n"[..],
            b"1\n",
            b"1\tnope\tr\n",
            b"2\t0/10\t\n1\t0/20\t\n",
            b"3\t0/10\t\n",
            b"\xff\xfe",
        ] {
            assert!(TimelineHistory::parse(t3, bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}

#[cfg(test)]
mod expected_timelines {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const M: u64 = 16 << 20;
    const SEG: WalSegSize = WalSegSize::DEFAULT;

    fn tl(t: u32) -> TimeLineId {
        TimeLineId::new(t).unwrap()
    }

    /// Timeline 3: 1 until 0/5800100 (segment 5), 2 until 0/8000000 (segment 8), then 3.
    fn three() -> ExpectedTimelines {
        let h = TimelineHistory::parse(tl(3), b"1\t0/5800100\tx\n2\t0/8000000\ty\n").unwrap();
        ExpectedTimelines::new(tl(3), Some(&h))
    }

    #[test]
    fn path_and_points() {
        let p = three();
        assert_eq!(p.target(), tl(3));
        let ids: Vec<u32> = p.oldest_first().map(|s| s.tli.get()).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert!(p.contains(tl(2)) && !p.contains(tl(4)));
        assert_eq!(p.timeline_of(Lsn(0)), tl(1));
        assert_eq!(p.timeline_of(Lsn(0x580_00FF)), tl(1));
        assert_eq!(p.timeline_of(Lsn(0x580_0100)), tl(2));
        assert_eq!(p.timeline_of(Lsn(0x7FF_FFFF)), tl(2));
        assert_eq!(p.timeline_of(Lsn(0x800_0000)), tl(3));
        assert_eq!(p.timeline_of(Lsn(u64::MAX)), tl(3));
        let alone = ExpectedTimelines::new(tl(1), None);
        assert_eq!(alone.timeline_of(Lsn(12345)), tl(1));
        assert_eq!(alone.segment_timeline(XLogSegNo(7), SEG, None), Some(tl(1)));
    }

    #[test]
    fn segments_switch_in_the_segment_of_the_switch_point() {
        let p = three();
        let first = |n: u64, cur: Option<u32>| {
            p.segment_timeline(XLogSegNo(n), SEG, cur.map(tl)).map(|t| t.get())
        };
        assert_eq!(first(4, None), Some(1));
        assert_eq!(first(5, None), Some(2), "the switch point's segment comes from the child");
        assert_eq!(first(7, None), Some(2));
        assert_eq!(first(8, None), Some(3));
        // Never back to an older timeline than the last file read.
        assert_eq!(first(4, Some(2)), None);
        assert_eq!(first(9, Some(3)), Some(3));
        // The candidates in the order PostgreSQL tries them, and the fallback when the newest
        // file is missing.
        let c: Vec<u32> = p.segment_candidates(XLogSegNo(8), SEG, None).map(|t| t.get()).collect();
        assert_eq!(c, [3, 2, 1]);
        let got = p.read_any_tli(XLogSegNo(8), SEG, None, |t| t != tl(3));
        assert_eq!(got, Some(tl(2)));
        assert_eq!(p.read_any_tli(XLogSegNo(8), SEG, Some(tl(3)), |t| t != tl(3)), None);
    }

    /// A random tree of timelines: for each timeline after the first, its parent (an older one)
    /// and where it branched off it (at or after the parent's own start).
    fn tree() -> impl Strategy<Value = Vec<(u32, u64)>> {
        proptest::collection::vec((any::<proptest::sample::Index>(), 0u64..4 * M), 0..7).prop_map(
            |picks| {
                let mut out: Vec<(u32, u64)> = Vec::new(); // index i: timeline i + 2
                let begin = |out: &Vec<(u32, u64)>, t: u32| -> u64 {
                    if t == 1 { 0 } else { out[(t - 2) as usize].1 }
                };
                for (i, (pick, off)) in picks.into_iter().enumerate() {
                    let parent = pick.index(i + 1) as u32 + 1;
                    let at = begin(&out, parent) + off;
                    out.push((parent, at));
                }
                out
            },
        )
    }

    proptest! {
        /// `read_any_tli` against a model written from the tree directly: of the timelines from
        /// the target up to the root, those not older than the last file's, that began before
        /// the segment ends, and whose file is archived, the newest.
        #[test]
        fn read_any_tli_matches_a_model_on_random_trees(
            tree in tree(),
            target_pick in any::<proptest::sample::Index>(),
            cur_pick in proptest::option::of(any::<proptest::sample::Index>()),
            segno in 0u64..24,
            archived in proptest::collection::vec(any::<u32>(), 8),
        ) {
            let n = tree.len() as u32 + 1;
            let parent = |t: u32| (t > 1).then(|| tree[(t - 2) as usize].0);
            let began = |t: u32| (t > 1).then(|| tree[(t - 2) as usize].1);
            // The history files PostgreSQL would have written, parsed as they are read.
            let mut files: BTreeMap<u32, TimelineHistory> = BTreeMap::new();
            for t in 2..=n {
                let mut chain = Vec::new();
                let mut c = t;
                while let Some(p) = parent(c) {
                    chain.push((p, began(c).unwrap()));
                    c = p;
                }
                let text: String = chain
                    .iter()
                    .rev()
                    .map(|(p, at)| format!("{p}\t{}\treason\n", Lsn(*at)))
                    .collect();
                files.insert(t, TimelineHistory::parse(tl(t), text.as_bytes()).unwrap());
            }
            let target = target_pick.index(n as usize) as u32 + 1;
            let cur = cur_pick.map(|c| c.index(n as usize) as u32 + 1);
            let exists = |t: u32| archived[(t - 1) as usize] & (1 << (segno % 32)) != 0;

            let path = ExpectedTimelines::new(tl(target), files.get(&target));
            let got = path.read_any_tli(XLogSegNo(segno), SEG, cur.map(tl), |t| exists(t.get()));

            let mut up = vec![target];
            while let Some(p) = parent(*up.last().unwrap()) {
                up.push(p);
            }
            let seg_end = (segno + 1) * M;
            let want = up
                .iter()
                .copied()
                .filter(|t| cur.is_none_or(|c| *t >= c))
                .filter(|t| began(*t).is_none_or(|b| b < seg_end))
                .filter(|t| exists(*t))
                .max();
            prop_assert_eq!(got.map(TimeLineId::get), want);

            // The LSN rule agrees with the tree too: a point belongs to the newest timeline of
            // the chain that began at or before it.
            let lsn = Lsn(segno * M + M / 2);
            let owner = up.iter().copied().filter(|t| began(*t).is_none_or(|b| b <= lsn.0)).max();
            prop_assert_eq!(Some(path.timeline_of(lsn).get()), owner);
        }
    }
}
