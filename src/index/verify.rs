//! Reading the archive as a whole: the timeline tree from `.history` files, contiguous ranges and
//! gaps per timeline from the index, and the full verification of every stored segment (decode,
//! record CRCs, record chains across segment boundaries, gaps, history consistency, index
//! agreement). Also rebuilding the index from the stored segments.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{SegmentFacts, SegmentIndexer, SegmentSummary};
use crate::error::{Kind, Result, WalrsError};
use crate::pg::{
    Carry, LongPageHeader, Lsn, ScanEnd, TimeLineId, TimelineHistory, WalFileKind, WalFileName,
    WalScanner, WalSegSize, XLogSegNo,
};
use crate::repo::{RepoConfig, Repository, WalFile};
use crate::storage::Storage;

/// Every WAL object in the repository, by kind.
#[derive(Default, Debug)]
pub struct Inventory {
    /// Segments by timeline, segment number.
    pub segments: BTreeMap<TimeLineId, BTreeMap<XLogSegNo, WalFileName>>,
    /// `.partial` segments.
    pub partials: Vec<WalFileName>,
    /// Timeline history files.
    pub histories: BTreeMap<TimeLineId, WalFileName>,
    /// Backup history files.
    pub backups: Vec<WalFileName>,
}

/// Lists `wal/` (a full listing: only `wal verify` and `wal index --rebuild` need it).
pub fn inventory(repo: &Repository, seg_size: WalSegSize) -> Result<Inventory> {
    let mut inv = Inventory::default();
    for name in repo.list::<WalFile>(&())? {
        let name = name?;
        match name.kind() {
            WalFileKind::Segment => {
                if let Some(n) = name.segno(seg_size) {
                    inv.segments.entry(name.timeline()).or_default().insert(n, name);
                }
            }
            WalFileKind::Partial => inv.partials.push(name),
            WalFileKind::History => {
                inv.histories.insert(name.timeline(), name);
            }
            WalFileKind::BackupHistory => inv.backups.push(name),
        }
    }
    Ok(inv)
}

/// A timeline and where it came from.
#[derive(Serialize, Clone, Debug)]
pub struct TimelineInfo {
    /// The timeline.
    pub timeline: TimeLineId,
    /// The timeline it branched from, and where.
    pub parent: Option<TimeLineId>,
    /// The LSN at which it branched off its parent.
    pub switchpoint: Option<Lsn>,
    /// The reason PostgreSQL recorded.
    pub reason: Option<String>,
    /// Its full ancestry from its history file.
    pub history: Option<TimelineHistory>,
}

/// Reads and parses every `.history` file.
pub fn timelines(repo: &Repository) -> Result<BTreeMap<TimeLineId, TimelineInfo>> {
    let mut out = BTreeMap::new();
    let tlis: Vec<TimeLineId> = repo.list::<TimelineHistory>(&())?.filter_map(|t| t.ok()).collect();
    for tli in tlis {
        let name = WalFileName::history(tli);
        let hist = match read_history(repo, &name) {
            Ok(h) => h,
            Err(e) if e.kind == Kind::Corrupt => {
                tracing::warn!("{name} is unreadable ({e}); `walrs wal verify` reports it");
                continue;
            }
            Err(e) => return Err(e),
        };
        let parent = hist.ancestors.last();
        out.insert(
            name.timeline(),
            TimelineInfo {
                timeline: name.timeline(),
                parent: parent.map(|p| p.tli),
                switchpoint: parent.map(|p| p.switchpoint),
                reason: parent.map(|p| p.reason.clone()),
                history: Some(hist),
            },
        );
    }
    Ok(out)
}

fn read_history(repo: &Repository, name: &WalFileName) -> Result<TimelineHistory> {
    repo.load::<TimelineHistory>(&name.timeline())?.ok_or_else(|| {
        WalrsError::new(Kind::NotFound, format!("{name} is not in repository {}", repo.describe()))
    })
}

/// A contiguous run of segments on one timeline.
#[derive(Serialize, Clone, Debug)]
pub struct Range {
    /// First segment (`first_wal` in JSON, docs/json.md).
    #[serde(rename = "first_wal")]
    pub first: WalFileName,
    /// Last segment (`last_wal` in JSON).
    #[serde(rename = "last_wal")]
    pub last: WalFileName,
    /// Number of segments.
    pub segments: u64,
    /// LSN of the first byte (`start_lsn` in JSON).
    #[serde(rename = "start_lsn")]
    pub start: Lsn,
    /// End of valid WAL in the last segment (`end_lsn` in JSON).
    #[serde(rename = "end_lsn")]
    pub end: Lsn,
    /// First commit or abort time in the range.
    pub first_xact_time: Option<crate::pg::PgTimestamp>,
    /// Last commit or abort time in the range.
    pub last_xact_time: Option<crate::pg::PgTimestamp>,
    /// Commits and aborts.
    pub commits: u64,
    /// Segments flagged as damaged by the index.
    pub damaged: Vec<WalFileName>,
}

/// Missing segments between two ranges.
#[derive(Serialize, Clone, Debug)]
pub struct Gap {
    /// First missing segment (`first_wal` in JSON).
    #[serde(rename = "first_wal")]
    pub first: WalFileName,
    /// Last missing segment (`last_wal` in JSON).
    #[serde(rename = "last_wal")]
    pub last: WalFileName,
    /// How many.
    pub segments: u64,
}

/// What the index says about one timeline.
#[derive(Serialize, Clone, Debug)]
pub struct TimelineRanges {
    /// The timeline.
    pub timeline: TimeLineId,
    /// Its contiguous ranges.
    pub ranges: Vec<Range>,
    /// The gaps between them.
    pub gaps: Vec<Gap>,
    /// Its `.partial` segments.
    pub partials: Vec<WalFileName>,
}

fn fmt_time(us: Option<i64>) -> Option<crate::pg::PgTimestamp> {
    us.map(crate::pg::PgTimestamp::from_unix_micros)
}

/// Groups summaries (whole, or [`super::SegmentBrief`]s) into contiguous ranges and gaps per
/// timeline.
pub fn ranges<S: SegmentFacts>(
    summaries: &BTreeMap<(TimeLineId, XLogSegNo), S>,
    seg_size: WalSegSize,
) -> Vec<TimelineRanges> {
    let mut by_tli: BTreeMap<TimeLineId, Vec<&S>> = BTreeMap::new();
    let mut partials: BTreeMap<TimeLineId, Vec<WalFileName>> = BTreeMap::new();
    for s in summaries.values() {
        if s.is_partial() {
            partials.entry(s.timeline()).or_default().push(s.name().clone());
        } else {
            by_tli.entry(s.timeline()).or_default().push(s);
        }
    }
    let mut out = Vec::new();
    let tlis: BTreeSet<TimeLineId> = by_tli.keys().chain(partials.keys()).copied().collect();
    for tli in tlis {
        let segs = by_tli.remove(&tli).unwrap_or_default();
        let mut ranges: Vec<Range> = Vec::new();
        let mut gaps = Vec::new();
        let mut prev: Option<u64> = None;
        // The last segment of the open range: its name is copied once, when the range closes.
        let mut open_last: Option<&S> = None;
        for s in segs {
            let name_of = |n: u64| WalFileName::segment(tli, XLogSegNo(n), seg_size);
            let segno = s.segno().0;
            let contiguous = prev.is_some_and(|p| segno == p + 1);
            if let (Some(p), false) = (prev, contiguous) {
                gaps.push(Gap {
                    first: name_of(p + 1),
                    last: name_of(segno - 1),
                    segments: segno - p - 1,
                });
            }
            match ranges.last_mut() {
                Some(r) if contiguous => {
                    r.segments += 1;
                    r.end = s.end();
                    if s.last_xact_time_us().is_some() {
                        r.last_xact_time = fmt_time(s.last_xact_time_us());
                    }
                    if r.first_xact_time.is_none() {
                        r.first_xact_time = fmt_time(s.first_xact_time_us());
                    }
                    r.commits += s.xacts();
                    if s.damaged() {
                        r.damaged.push(s.name().clone());
                    }
                }
                last => {
                    if let (Some(r), Some(l)) = (last, open_last) {
                        r.last = l.name().clone();
                    }
                    ranges.push(Range {
                        first: s.name().clone(),
                        last: s.name().clone(),
                        segments: 1,
                        start: s.start(),
                        end: s.end(),
                        first_xact_time: fmt_time(s.first_xact_time_us()),
                        last_xact_time: fmt_time(s.last_xact_time_us()),
                        commits: s.xacts(),
                        damaged: if s.damaged() { vec![s.name().clone()] } else { Vec::new() },
                    })
                }
            }
            open_last = Some(s);
            prev = Some(segno);
        }
        if let (Some(r), Some(l)) = (ranges.last_mut(), open_last) {
            r.last = l.name().clone();
        }
        out.push(TimelineRanges {
            timeline: tli,
            ranges,
            gaps,
            partials: partials.remove(&tli).unwrap_or_default(),
        });
    }
    out
}

/// The reason PostgreSQL writes into a timeline's history file when recovery ended because the
/// WAL ran out rather than at a target (`getRecoveryStopReason` in xlogrecovery.c): the recovery
/// that began the timeline replayed everything it could fetch.
pub const REASON_END_OF_WAL: &str = "no recovery target specified";

/// Two histories in one repository: `parent` went on after `child` branched from it, so two
/// servers archived into the repository (a restored copy that kept the original's archiving, or
/// an old primary that kept writing after a failover).
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The timeline that went on.
    pub parent: TimeLineId,
    /// The timeline that branched from it.
    pub child: TimeLineId,
    /// Where `child` branched off `parent` (its first LSN).
    pub switchpoint: Lsn,
    /// The last archived segment of `parent`, which holds its WAL after the switch point
    /// (`parent_last_wal` in JSON).
    #[serde(rename = "parent_last_wal")]
    pub parent_last_segment: WalFileName,
    /// Why the parent's WAL after the switch point was written after the branch (and not before
    /// it, as after a point-in-time recovery to an earlier point).
    pub evidence: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "timeline {} went on after timeline {} branched from it at {} (up to {}; {}): two servers archived into this repository",
            self.parent.get(),
            self.child.get(),
            self.switchpoint,
            self.parent_last_segment,
            self.evidence
        )
    }
}

/// The diverged histories of the archive, by (parent, child). A parent that holds WAL after a
/// child's switch point is normal after a point-in-time recovery to an earlier point: that WAL
/// was written before the branch. It counts as divergence only if it was written after the
/// branch, which the index shows in one of two ways:
///
/// - the child's history says its recovery ended at the end of the WAL
///   ([`REASON_END_OF_WAL`]): that recovery replayed all the parent's WAL it could fetch, so WAL
///   of the parent after the switch point was archived later;
/// - a transaction of the parent after the switch point is newer than the child's first dated
///   record (its end-of-recovery record, or its first transaction after the switch point).
///
/// `.partial` segments are ignored: a promoted standby archives its parent's last segment as
/// `.partial`, which is not divergence.
pub fn divergences(
    summaries: &BTreeMap<(TimeLineId, XLogSegNo), SegmentSummary>,
    histories: &BTreeMap<TimeLineId, TimelineHistory>,
) -> Vec<Divergence> {
    let mut out = Vec::new();
    for (child, h) in histories {
        let Some(p) = h.ancestors.last() else { continue };
        let (parent, sw) = (p.tli, p.switchpoint);
        let full = |s: &&SegmentSummary| !s.is_partial();
        // The parent's segments with WAL at or after the switch point.
        let after: Vec<&SegmentSummary> = summaries
            .values()
            .filter(full)
            .filter(|s| s.timeline == parent)
            .filter(|s| s.start > sw || s.last_record.is_some_and(|r| r >= sw))
            .collect();
        let Some(last) = after.iter().max_by_key(|s| s.segno) else { continue };
        let evidence = if p.reason == REASON_END_OF_WAL {
            Some(format!(
                "timeline {} began where its recovery ran out of WAL, so this WAL was archived after it began",
                child.get()
            ))
        } else {
            // Transactions after the switch point: on the parent, in segments that start after
            // it; on the child, likewise (the segment holding the switch point mixes both).
            let parent_newest =
                after.iter().filter(|s| s.start > sw).filter_map(|s| s.last_xact_time_us).max();
            let child_segs =
                || summaries.values().filter(full).filter(move |s| s.timeline == *child);
            let child_first = child_segs()
                .flat_map(|s| s.end_of_recovery.iter())
                .filter(|e| e.tli == *child)
                .map(|e| e.time_us)
                .chain(child_segs().filter(|s| s.start > sw).filter_map(|s| s.first_xact_time_us))
                .min();
            match (parent_newest, child_first) {
                (Some(pn), Some(cf)) if pn > cf => Some(format!(
                    "timeline {} has a transaction at {}, after timeline {} began at {}",
                    parent.get(),
                    crate::pg::PgTimestamp::from_unix_micros(pn),
                    child.get(),
                    crate::pg::PgTimestamp::from_unix_micros(cf)
                )),
                _ => None,
            }
        };
        if let Some(evidence) = evidence {
            out.push(Divergence {
                parent,
                child: *child,
                switchpoint: sw,
                parent_last_segment: last.name.clone(),
                evidence,
            });
        }
    }
    out
}

/// A problem `wal verify` found.
#[derive(Serialize, Clone, Debug)]
pub struct Problem {
    /// `missing`, `corrupt`, `damaged`, `foreign`, `security`, `timeline` or `index`.
    pub kind: &'static str,
    /// The object or range concerned.
    pub name: String,
    /// What is wrong.
    pub detail: String,
}

/// A temporary file in the repository, as `wal verify` reports it (not a problem: the archive
/// is whole without it; see [`crate::storage::Storage::temporaries`]).
#[derive(Serialize, Clone, Debug)]
pub struct TemporaryFile {
    /// Path relative to the repository root.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Seconds since it was last written.
    pub age_seconds: u64,
    /// `in use` (a writer holds it), `recent` (written less than an hour ago) or `stale` (left
    /// by a killed writer: the next write into its directory removes it).
    pub state: &'static str,
}

/// What `wal verify` found.
#[derive(Serialize, Debug, Default)]
pub struct VerifyReport {
    /// Segments decoded.
    pub segments: u64,
    /// Records whose CRC was checked.
    pub records: u64,
    /// Timelines looked at.
    pub timelines: Vec<TimeLineId>,
    /// Problems, in archive order.
    pub problems: Vec<Problem>,
    /// What is not a problem of the archive but needs the operator's attention (kind
    /// `diverged`: two servers archived into the repository); not counted as problems.
    pub warnings: Vec<Problem>,
    /// Temporary files anywhere in the repository, in path order (not problems).
    pub temporaries: Vec<TemporaryFile>,
}

fn geometry(h: &LongPageHeader) -> crate::pg::WalGeometry {
    crate::pg::WalGeometry { seg_size: h.seg_size, blcksz: h.xlog_blcksz, version: h.version }
}

/// Options of `wal verify`.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Only segments that end after this LSN.
    pub from: Option<Lsn>,
    /// Only this timeline.
    pub timeline: Option<TimeLineId>,
}

/// Verifies every stored segment (or those selected) and the timeline histories.
pub fn verify(repo: &Repository, cfg: &RepoConfig, opts: &VerifyOptions) -> Result<VerifyReport> {
    let seg = cfg.wal_segment_size;
    let inv = inventory(repo, seg)?;
    let mut rep = VerifyReport::default();
    let push = rep_push;
    let mut problems: Vec<Problem> = Vec::new();
    // Histories.
    let mut hist: BTreeMap<TimeLineId, TimelineHistory> = BTreeMap::new();
    for (tli, name) in &inv.histories {
        match read_history(repo, name) {
            Ok(h) => {
                hist.insert(*tli, h);
            }
            Err(e) => problems.push(push(
                if e.is_foreign_object() {
                    "security"
                } else if e.kind == Kind::Corrupt {
                    "corrupt"
                } else {
                    "timeline"
                },
                name.to_string(),
                e.message,
            )),
        }
    }
    let lowest = inv.segments.keys().next().copied();
    // Progress in the log (target walrs::progress): segments read, at their size in PostgreSQL.
    let in_scope: u64 = inv
        .segments
        .iter()
        .filter(|(t, _)| opts.timeline.is_none_or(|o| o == **t))
        .map(|(_, m)| m.len() as u64)
        .sum();
    let progress = crate::progress::Progress::new("wal verify", in_scope * seg.bytes());
    // The summaries of the segments that verified, for the divergence check.
    let mut summaries: BTreeMap<(TimeLineId, XLogSegNo), SegmentSummary> = BTreeMap::new();
    for (tli, segs) in &inv.segments {
        if opts.timeline.is_some_and(|t| t != *tli) {
            continue;
        }
        rep.timelines.push(*tli);
        if Some(*tli) != lowest && !hist.contains_key(tli) && tli.get() > 1 {
            problems.push(push(
                "timeline",
                format!("{tli}.history"),
                format!("timeline {} has segments but no history file", tli.get()),
            ));
        }
        // Where this timeline must start: its branch point from the parent.
        let first_expected =
            hist.get(tli).and_then(|h| h.ancestors.last()).map(|p| p.switchpoint.segment(seg).0);
        let name_of = |n: u64| WalFileName::segment(*tli, XLogSegNo(n), seg).to_string();
        if let (Some(fe), Some((&XLogSegNo(first), _))) = (first_expected, segs.iter().next())
            && first > fe
            && opts.from.is_none()
        {
            problems.push(push(
                "missing",
                format!("{} .. {}", name_of(fe), name_of(first - 1)),
                format!(
                    "timeline {} begins at {} but its first archived segment is {}",
                    tli.get(),
                    name_of(fe),
                    name_of(first)
                ),
            ));
        }
        if let Some(h) = hist.get(tli) {
            for a in &h.ancestors {
                if !inv.segments.contains_key(&a.tli)
                    && !hist.contains_key(&a.tli)
                    && a.tli.get() != 1
                    && opts.timeline.is_none()
                {
                    problems.push(push(
                        "timeline",
                        format!("{tli}.history"),
                        format!("ancestor timeline {} is not in the archive", a.tli.get()),
                    ));
                }
            }
        }
        let mut prev_segno: Option<u64> = None;
        let mut carry: Option<Carry> = None;
        let mut last_rec: Option<Lsn> = None;
        for (&XLogSegNo(segno), name) in segs {
            progress.add(seg.bytes());
            let seg_end = XLogSegNo(segno).end_lsn(seg);
            let in_scope = opts.from.is_none_or(|f| seg_end > f);
            if let Some(p) = prev_segno
                && segno > p + 1
                && in_scope
            {
                problems.push(push(
                    "missing",
                    if segno - p - 1 == 1 {
                        name_of(p + 1)
                    } else {
                        format!("{} .. {}", name_of(p + 1), name_of(segno - 1))
                    },
                    format!(
                        "{} segment(s) missing between {} and {}",
                        segno - p - 1,
                        name_of(p),
                        name.as_str()
                    ),
                ));
                carry = None;
                last_rec = None;
            }
            if segno > prev_segno.map_or(segno, |p| p + 1) {
                carry = None;
                last_rec = None;
            }
            prev_segno = Some(segno);
            if !in_scope {
                carry = None;
                last_rec = None;
                continue;
            }
            let incoming = carry.take();
            let had_carry = incoming.is_some();
            let mut records = 0u64;
            let mut scanner: Option<WalScanner> = None;
            let mut interp_err: Option<String> = None;
            let mut sc_version = crate::pg::PgMajorVersion::V15;
            let result = super::stored::decode_stored(repo, name, |frame, hdr| {
                if let Some(h) = hdr {
                    if h.system_id != cfg.system_identifier {
                        return Err(WalrsError::new(
                            Kind::ForeignCluster,
                            format!(
                                "holds WAL of system {} (the repository's is {})",
                                h.system_id, cfg.system_identifier
                            ),
                        ));
                    }
                    if h.segno() != XLogSegNo(segno) {
                        return Err(WalrsError::new(
                            Kind::Corrupt,
                            format!("holds the segment starting at {}", h.page_addr),
                        ));
                    }
                    if h.tli > *tli {
                        return Err(WalrsError::new(
                            Kind::Corrupt,
                            format!("holds WAL of timeline {}", h.tli.get()),
                        ));
                    }
                    // The first frame, also of a second read: start over.
                    records = 0;
                    interp_err = None;
                    sc_version = h.version;
                    let mut sc = WalScanner::new(h.page_addr, geometry(h));
                    sc.resume(incoming.clone(), last_rec);
                    scanner = Some(sc);
                }
                if let Some(sc) = scanner.as_mut() {
                    sc.feed(frame, |r| {
                        records += 1;
                        if let Err(e) = crate::pg::records::interpret(r, sc_version)
                            && interp_err.is_none()
                        {
                            interp_err = Some(e.to_string());
                        }
                    });
                }
                Ok(())
            });
            rep.segments += 1;
            match result {
                Err(e) => {
                    carry = None;
                    last_rec = None;
                    let kind = match e.kind {
                        _ if e.is_foreign_object() => "security",
                        Kind::ForeignCluster => "foreign",
                        Kind::NotFound => "missing",
                        _ => "corrupt",
                    };
                    problems.push(push(kind, name.to_string(), e.message));
                }
                Ok(digest) => {
                    let Some(sc) = scanner.take() else { continue };
                    rep.records += records;
                    last_rec = sc.last_record();
                    let scan = sc.finish();
                    // A segment that did not end cleanly breaks the chain: the next one is read
                    // on its own, not blamed for this one's damage.
                    if scan.error.is_some() {
                        last_rec = None;
                    }
                    if let Some(e) = &interp_err {
                        problems.push(push("damaged", name.to_string(), e.clone()));
                    }
                    if let Some(e) = &scan.error {
                        let what = if had_carry && e.to_string().contains("does not continue") {
                            "the record chain breaks at the segment boundary: "
                        } else {
                            ""
                        };
                        problems.push(push("damaged", name.to_string(), format!("{what}{e}")));
                    }
                    match scan.end {
                        ScanEnd::Continues(c) => carry = Some(c),
                        ScanEnd::EndOfWal(at)
                            if segs.range(XLogSegNo(segno + 1)..).next().is_some() =>
                        {
                            problems.push(push(
                                "damaged",
                                name.to_string(),
                                format!("valid WAL ends at {at}, but later segments exist"),
                            ));
                        }
                        _ => {}
                    }
                    // The index must describe this very object.
                    match super::load_summary(repo, name) {
                        Ok(Some(s)) if s.content_digest == digest => {
                            summaries.insert((s.timeline, s.segno), s);
                        }
                        Ok(Some(_)) => problems.push(push("index", name.to_string(), "the index entry describes other content (run `walrs wal index --rebuild`)".into())),
                        Ok(None) => problems.push(push("index", name.to_string(), "no index entry (run `walrs wal index --rebuild`)".into())),
                        Err(e) => problems.push(push(
                            if e.is_foreign_object() { "security" } else { "index" },
                            name.to_string(),
                            e.message,
                        )),
                    }
                }
            }
        }
    }
    // Histories must not contradict each other: every ancestor entry of a timeline appears with
    // the same switch point in the histories of its descendants.
    for (tli, h) in &hist {
        for (child, ch) in &hist {
            if child <= tli {
                continue;
            }
            if ch.ancestors.iter().any(|a| a.tli == *tli) {
                for a in &h.ancestors {
                    if let Some(b) = ch.ancestors.iter().find(|b| b.tli == a.tli)
                        && b.switchpoint != a.switchpoint
                    {
                        problems.push(push(
                            "timeline",
                            format!("{child}.history"),
                            format!(
                                "says timeline {} ended at {}, {tli}.history says {}",
                                a.tli.get(),
                                b.switchpoint,
                                a.switchpoint
                            ),
                        ));
                    }
                }
            }
        }
    }
    // Diverged histories: judged on every segment, also those `--from` or `--timeline` left
    // out (their summaries only).
    for (tli, segs) in &inv.segments {
        for (segno, name) in segs {
            if !summaries.contains_key(&(*tli, *segno))
                && let Ok(Some(s)) = super::load_summary(repo, name)
            {
                summaries.insert((*tli, *segno), s);
            }
        }
    }
    for d in divergences(&summaries, &hist) {
        rep.warnings.push(push("diverged", format!("{}.history", d.child), d.to_string()));
    }
    progress.finish();
    rep.problems = problems;
    // What killed writers left behind, and writes in progress; nothing is removed here.
    match repo.storage().temporaries("", false) {
        Ok(t) => {
            rep.temporaries = t
                .into_iter()
                .map(|t| TemporaryFile {
                    path: t.path,
                    bytes: t.size,
                    age_seconds: t.age.as_secs(),
                    state: t.state.as_str(),
                })
                .collect();
        }
        Err(e) => tracing::warn!("could not look for temporary files: {e}"),
    }
    Ok(rep)
}

fn rep_push(kind: &'static str, name: String, detail: String) -> Problem {
    Problem { kind, name, detail }
}

/// Rebuilds every segment summary from the stored segments, then the roll-ups.
pub fn rebuild(repo: &Repository, cfg: &RepoConfig) -> Result<u64> {
    // The whole repository is swept of stale temporary files (docs/invariants.md): they are
    // what killed writers left, also in directories no write comes back to.
    match repo.storage().temporaries("", true) {
        Ok(t) => {
            let gone: Vec<_> =
                t.iter().filter(|t| t.state == crate::storage::TempState::Removed).collect();
            if !gone.is_empty() {
                tracing::info!(
                    "removed {} stale temporary file(s), {} bytes",
                    gone.len(),
                    gone.iter().map(|t| t.size).sum::<u64>()
                );
            }
        }
        Err(e) => tracing::warn!("could not sweep temporary files: {e}"),
    }
    let seg = cfg.wal_segment_size;
    let inv = inventory(repo, seg)?;
    let mut n = 0u64;
    let names: Vec<&WalFileName> =
        inv.segments.values().flat_map(|m| m.values()).chain(inv.partials.iter()).collect();
    for name in names {
        let mut ix: Option<SegmentIndexer> = None;
        let r = super::stored::decode_stored(repo, name, |frame, hdr| {
            if let Some(h) = hdr {
                ix = Some(SegmentIndexer::new(name, h));
            }
            if let Some(i) = ix.as_mut() {
                i.feed(frame);
            }
            Ok(())
        });
        match (r, ix) {
            (Ok(digest), Some(i)) => {
                super::store_summary(repo, &i.finish(digest))?;
                n += 1;
            }
            (Err(e), _) if e.is_foreign_object() => tracing::error!("{name}: not indexed: {e}"),
            (Err(e), _) => tracing::warn!("{name}: not indexed: {e}"),
            (Ok(_), None) => {}
        }
    }
    // Summaries whose segment is gone describe nothing: remove them.
    let live: std::collections::BTreeSet<String> = inv
        .segments
        .values()
        .flat_map(|m| m.values())
        .chain(inv.partials.iter())
        .map(|n| n.to_string())
        .collect();
    let orphans: Vec<WalFileName> = repo
        .list::<SegmentSummary>(&None)?
        .filter_map(|n| n.ok())
        .filter(|n| !live.contains(n.as_str()))
        .collect();
    for name in orphans {
        tracing::info!("removing the index entry of {name}: its segment is not in the repository");
        repo.delete::<SegmentSummary>(&name)?;
    }
    let orphan_maps: Vec<WalFileName> = repo
        .list::<super::blockmap::BlockMap>(&None)?
        .filter_map(|n| n.ok())
        .filter(|n| !live.contains(n.as_str()))
        .collect();
    for name in orphan_maps {
        tracing::info!("removing the block map of {name}: its segment is not in the repository");
        repo.delete::<super::blockmap::BlockMap>(&name)?;
    }
    super::drop_rollups(repo)?;
    super::load_all(repo, seg)?;
    Ok(n)
}
