//! The retention planner (docs/commands/expire.md): a pure function of the catalogue, the WAL
//! index, the timeline histories, the policy, the pins, the leases and the time, which says for
//! every backup and every archived segment whether it is kept and which rule decided. No I/O:
//! `commands/expire.rs` gathers the input and `repo`'s deletion step carries the plan out, in the
//! order of docs/invariants.md.
//!
//! What stays whatever the policy: the newest complete backup, pinned backups, backups a live
//! lease names, every kept backup's WAL from its start to its stop, the WAL from the start of
//! every backup kept by `--retain-full`, by the window, by a lease, and of the newest backup,
//! through the archive's end on every timeline path that reaches it (PostgreSQL's
//! `XLogFileReadAnyTLI` decides which file of a path is read), and every `.history` file.
//! Backups are ordered by stop LSN and stop time, never by id.

pub mod binlog;
pub mod dumps;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::error::{Kind, Result, WalrsError};
use crate::index::SegmentSummary;
use crate::pg::history::ExpectedTimelines;
use crate::pg::{Lsn, TimeLineId, TimelineHistory, WalFileName, WalSegSize, XLogSegNo};
use crate::repo::{BackupId, BackupManifest, Lease, LeaseKind};
use crate::timefmt::rfc3339_micros;

/// Microseconds in a day.
const DAY_US: i64 = 86_400_000_000;

/// The retention policy (flags, `WALRS_RETAIN_*`, `[retention]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `--retain-window`: every instant of the last this many microseconds stays recoverable.
    pub window_us: Option<i64>,
    /// `--retain-full`: at least the N newest complete backups.
    pub full: Option<u32>,
    /// `--retain-daily`: the first backup of each of the last N days (UTC) that have one.
    pub daily: Option<u32>,
    /// `--retain-weekly`: the same per ISO week.
    pub weekly: Option<u32>,
    /// `--retain-monthly`: the same per month.
    pub monthly: Option<u32>,
    /// `--retain-yearly`: the same per year.
    pub yearly: Option<u32>,
    /// `--retain-max-size`: drop the oldest backups beyond this many stored bytes (never below
    /// `--retain-full`, never the window).
    pub max_size: Option<u64>,
    /// `--retain-grace`: incomplete backups younger than this are never removed.
    pub grace_us: i64,
    /// `--retain-binlogs`: at least the N newest closed binlog files (binlog repositories).
    pub binlogs: Option<u32>,
    /// `--retain-dumps`: the N newest complete logical dumps ([`dumps`]).
    pub dumps: Option<u32>,
}

/// The default grace period of incomplete backups: 24 h.
pub const DEFAULT_GRACE_US: i64 = DAY_US;

impl Policy {
    /// Whether a rule of base backups and WAL is given (else only binlogs are planned).
    pub fn has_wal_rule(&self) -> bool {
        let some = |n: Option<u32>| n.is_some_and(|n| n > 0);
        self.window_us.is_some_and(|w| w > 0)
            || some(self.full)
            || some(self.daily)
            || some(self.weekly)
            || some(self.monthly)
            || some(self.yearly)
    }

    /// Refuses a policy that would keep nothing (exit 2).
    pub fn check(&self) -> Result<()> {
        let some = |n: Option<u32>| n.is_some_and(|n| n > 0);
        if !some(self.binlogs)
            && !some(self.dumps)
            && self.window_us.is_none_or(|w| w <= 0)
            && !some(self.full)
            && !some(self.daily)
            && !some(self.weekly)
            && !some(self.monthly)
            && !some(self.yearly)
        {
            return Err(WalrsError::new(
                Kind::Usage,
                "this retention policy keeps nothing: give --retain-window, --retain-full N (N > 0), a --retain-daily/weekly/monthly/yearly N, --retain-binlogs N or --retain-dumps N",
            )
            .hint("e.g. `walrs expire --retain-full 2 --retain-window 7d`"));
        }
        Ok(())
    }
}

/// An incomplete backup (no manifest): its id and the time its id names (its start).
#[derive(Clone, Debug)]
pub struct Incomplete {
    /// Its id.
    pub id: BackupId,
    /// Its start, Unix microseconds (from the id).
    pub started_us: i64,
    /// It carries the marker of a deletion an earlier run began.
    pub expiring: bool,
}

/// The planner's input.
pub struct Input<'a> {
    /// Complete backups, in any order.
    pub backups: &'a [BackupManifest],
    /// Backups without a manifest.
    pub incomplete: &'a [Incomplete],
    /// The index, by (timeline, segment number).
    pub summaries: &'a BTreeMap<(TimeLineId, XLogSegNo), SegmentSummary>,
    /// Timeline histories.
    pub histories: &'a BTreeMap<TimeLineId, TimelineHistory>,
    /// Segment size.
    pub seg_size: WalSegSize,
    /// Pinned backups.
    pub pins: &'a BTreeSet<BackupId>,
    /// Every lease found (live or stale).
    pub leases: &'a [Lease],
    /// Now, Unix microseconds.
    pub now_us: i64,
}

/// What the plan says of one complete backup.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BackupVerdict {
    /// Its id.
    pub id: BackupId,
    /// Its stop LSN.
    pub stop_lsn: Lsn,
    /// Its stop time (RFC 3339, UTC).
    pub stop_time: String,
    /// Kept or dropped.
    pub keep: bool,
    /// Every rule that keeps it, or the one reason it goes.
    pub reasons: Vec<String>,
    /// Bytes stored.
    pub stored_bytes: u64,
}

/// A run of consecutive archived segments of one timeline with one verdict.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct WalRange {
    /// The timeline.
    pub timeline: TimeLineId,
    /// Its first segment.
    #[serde(rename = "first_wal")]
    pub first: WalFileName,
    /// Its last segment.
    #[serde(rename = "last_wal")]
    pub last: WalFileName,
    /// Segments in the range.
    pub segments: u64,
    /// Kept or dropped.
    pub keep: bool,
    /// The rule that decided.
    pub reason: String,
}

/// What the plan says of an incomplete backup.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct IncompleteVerdict {
    /// Its id.
    pub id: BackupId,
    /// Kept or dropped.
    pub keep: bool,
    /// Why.
    pub reason: String,
}

/// A lease as the plan saw it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LeaseReport {
    /// Its holder.
    pub holder: String,
    /// basebackup or restore.
    pub kind: &'static str,
    /// Still holding at planning time.
    pub live: bool,
    /// Its expiry (RFC 3339, UTC).
    pub expire_time: String,
    /// The backup it names.
    pub backup: Option<BackupId>,
}

/// A retention plan.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Plan {
    /// When it was made (RFC 3339, UTC).
    pub plan_time: String,
    /// Every complete backup, oldest first (by stop LSN, then stop time).
    pub backups: Vec<BackupVerdict>,
    /// Every archived segment in runs, by timeline and segment number.
    pub wal: Vec<WalRange>,
    /// Every incomplete backup.
    pub incomplete: Vec<IncompleteVerdict>,
    /// Every lease.
    pub leases: Vec<LeaseReport>,
    /// The segments (and `.partial` segments) to delete, in order.
    #[serde(skip)]
    pub drop_segments: Vec<WalFileName>,
}

impl Plan {
    /// The ids of the complete backups the plan drops, oldest first.
    pub fn dropped_backups(&self) -> impl Iterator<Item = &BackupId> {
        self.backups.iter().filter(|b| !b.keep).map(|b| &b.id)
    }

    /// The ids of the incomplete backups the plan drops.
    pub fn dropped_incomplete(&self) -> impl Iterator<Item = &BackupId> {
        self.incomplete.iter().filter(|b| !b.keep).map(|b| &b.id)
    }
}

/// Where a period of a GFS rule starts: its number since the epoch (days, ISO weeks from a
/// Monday, months, years), UTC.
fn period(us: i64, rule: Gfs) -> i64 {
    let days = us.div_euclid(DAY_US);
    match rule {
        Gfs::Daily => days,
        // 1970-01-01 was a Thursday: Monday-based weeks start 3 days before it.
        Gfs::Weekly => (days + 3).div_euclid(7),
        Gfs::Monthly => {
            let (y, m) = year_month(days);
            y * 12 + i64::from(m)
        }
        Gfs::Yearly => year_month(days).0,
    }
}

/// The year and month (1-12) of a day since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn year_month(days: i64) -> (i64, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m as u32)
}

#[derive(Clone, Copy)]
enum Gfs {
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Gfs {
    fn word(self) -> &'static str {
        match self {
            Gfs::Daily => "daily",
            Gfs::Weekly => "weekly",
            Gfs::Monthly => "monthly",
            Gfs::Yearly => "yearly",
        }
    }
}

/// A backup from whose start the WAL is kept through the archive's end, and why.
struct Anchor<'a> {
    backup: &'a BackupManifest,
    reason: String,
}

/// Whether backup `b` lies on `path`: replay along it reads the backup's start on the backup's
/// timeline and its stop on its stop timeline (the recovery planner's rule for a usable backup).
fn on_path(path: &ExpectedTimelines, b: &BackupManifest) -> bool {
    path.timeline_of(b.start_lsn) == b.timeline
        && path.timeline_of(b.stop_lsn.saturating_sub(1)) == b.stop_timeline
}

/// Plans (see the module docs). Refuses a policy that keeps nothing.
pub fn plan(input: &Input<'_>, policy: &Policy) -> Result<Plan> {
    policy.check()?;
    if !policy.has_wal_rule() {
        return Err(WalrsError::new(
            Kind::Usage,
            "no retention rule for base backups and WAL (--retain-binlogs and --retain-dumps apply to binlogs and dumps only)",
        ));
    }
    let now = input.now_us;
    let mut order: Vec<&BackupManifest> = input.backups.iter().collect();
    order.sort_by_key(|b| (b.stop_lsn, b.stop_time_us));
    let live: Vec<&Lease> = input.leases.iter().filter(|l| l.is_live(now)).collect();

    // Backups: every rule that keeps each one.
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); order.len()];
    let mut anchors: Vec<Anchor<'_>> = Vec::new();
    let mut fixed: Vec<bool> = vec![false; order.len()];
    let n = order.len();
    let add = |reasons: &mut Vec<Vec<String>>, i: usize, r: String| {
        if let Some(v) = reasons.get_mut(i) {
            v.push(r);
        }
    };
    if let Some(newest) = order.last() {
        add(&mut reasons, n - 1, "kept: newest backup".into());
        anchors.push(Anchor {
            backup: newest,
            reason: format!("kept: WAL from start of newest backup {}", newest.id),
        });
        if let Some(f) = fixed.last_mut() {
            *f = true;
        }
    }
    if let Some(full) = policy.full.filter(|f| *f > 0) {
        // The newest `full` full backups, and every (incremental) backup after the oldest of them;
        // with only full backups, the newest `full` backups.
        let fulls: Vec<usize> =
            (0..n).filter(|i| order.get(*i).is_some_and(|b| !b.is_incremental())).collect();
        let from =
            fulls.len().checked_sub(full as usize).and_then(|k| fulls.get(k)).copied().unwrap_or(0);
        for (i, b) in order.iter().enumerate().skip(from) {
            add(&mut reasons, i, format!("kept: newest {full} full"));
            if let Some(f) = fixed.get_mut(i) {
                *f = true;
            }
            anchors.push(Anchor { backup: b, reason: format!("kept: WAL from start of {}", b.id) });
        }
    }
    let tlis: BTreeSet<TimeLineId> =
        input.summaries.keys().map(|(t, _)| *t).chain(input.histories.keys().copied()).collect();
    let paths: Vec<ExpectedTimelines> =
        tlis.iter().map(|t| ExpectedTimelines::new(*t, input.histories.get(t))).collect();
    if let Some(w) = policy.window_us.filter(|w| *w > 0) {
        let from = now.saturating_sub(w);
        let reason = format!("kept: PITR window from {}", rfc3339_micros(from));
        // Every backup that ended in the window, and on every timeline path, the backup before
        // the window: the newest on the path that ended at or before its start (else the
        // oldest on the path).
        for (i, b) in order.iter().enumerate() {
            if b.stop_time_us > from {
                add(&mut reasons, i, reason.clone());
                if let Some(f) = fixed.get_mut(i) {
                    *f = true;
                }
            }
        }
        for path in &paths {
            let on = |b: &BackupManifest| on_path(path, b);
            let anchor = order
                .iter()
                .rposition(|b| on(b) && b.stop_time_us <= from)
                .or_else(|| order.iter().position(|b| on(b)));
            let Some((i, b)) = anchor.and_then(|i| order.get(i).map(|b| (i, *b))) else {
                continue;
            };
            if reasons.get(i).is_some_and(|r| !r.contains(&reason)) {
                add(&mut reasons, i, reason.clone());
            }
            if let Some(f) = fixed.get_mut(i) {
                *f = true;
            }
            anchors.push(Anchor { backup: b, reason: reason.clone() });
        }
    }
    for rule in [Gfs::Daily, Gfs::Weekly, Gfs::Monthly, Gfs::Yearly] {
        let count = match rule {
            Gfs::Daily => policy.daily,
            Gfs::Weekly => policy.weekly,
            Gfs::Monthly => policy.monthly,
            Gfs::Yearly => policy.yearly,
        };
        let Some(count) = count.filter(|c| *c > 0) else { continue };
        // The first backup of each period, newest period first.
        let mut firsts: BTreeMap<i64, usize> = BTreeMap::new();
        for (i, b) in order.iter().enumerate() {
            firsts.entry(period(b.stop_time_us, rule)).or_insert(i);
        }
        for (_, i) in firsts.iter().rev().take(count as usize) {
            add(&mut reasons, *i, format!("kept: {} {count}", rule.word()));
        }
    }
    for (i, b) in order.iter().enumerate() {
        if input.pins.contains(&b.id) {
            add(&mut reasons, i, "kept: pinned (walrs backup keep)".into());
            if let Some(f) = fixed.get_mut(i) {
                *f = true;
            }
        }
        for l in live.iter().filter(|l| l.backup.as_ref() == Some(&b.id)) {
            add(&mut reasons, i, format!("kept: lease {}", l.holder));
            if let Some(f) = fixed.get_mut(i) {
                *f = true;
            }
            if l.kind.restores() {
                anchors.push(Anchor { backup: b, reason: format!("kept: lease {}", l.holder) });
            }
        }
    }

    // --retain-max-size: drop the oldest kept by GFS alone until the rest fits.
    let mut size_dropped = vec![false; n];
    if let Some(max) = policy.max_size {
        loop {
            let kept_bytes: u64 = order
                .iter()
                .zip(&reasons)
                .zip(&size_dropped)
                .filter(|((_, r), d)| !r.is_empty() && !**d)
                .map(|((b, _), _)| b.stored_bytes)
                .sum();
            if kept_bytes <= max {
                break;
            }
            let victim = (0..n).find(|i| {
                !fixed.get(*i).copied().unwrap_or(true)
                    && reasons.get(*i).is_some_and(|r| !r.is_empty())
                    && !size_dropped.get(*i).copied().unwrap_or(true)
            });
            match victim.and_then(|i| size_dropped.get_mut(i)) {
                Some(d) => *d = true,
                None => break,
            }
        }
    }

    // A kept incremental backup keeps every member of its chain (it restores only with them),
    // whatever else dropped them; newest first, so a chain's parents are seen after the child.
    for i in (0..n).rev() {
        let kept = reasons.get(i).is_some_and(|r| !r.is_empty())
            && !size_dropped.get(i).copied().unwrap_or(true);
        let Some(b) = order.get(i).copied() else { continue };
        if !kept || !b.is_incremental() {
            continue;
        }
        for member in b.chain.iter().filter(|m| **m != b.id) {
            if let Some(j) = order.iter().position(|o| o.id == *member) {
                add(&mut reasons, j, format!("kept: parent of {}", b.id));
                if let Some(d) = size_dropped.get_mut(j) {
                    *d = false;
                }
            }
        }
    }

    let oldest_kept_stop = order
        .iter()
        .zip(&reasons)
        .zip(&size_dropped)
        .filter(|((_, r), d)| !r.is_empty() && !**d)
        .map(|((b, _), _)| (b.stop_lsn, b.stop_time_us))
        .min();
    let backups: Vec<BackupVerdict> = order
        .iter()
        .zip(reasons)
        .zip(&size_dropped)
        .map(|((b, r), sized)| {
            let (keep, reasons) = if *sized {
                (false, vec!["dropped: beyond --retain-max-size".to_owned()])
            } else if r.is_empty() {
                let older = oldest_kept_stop.is_none_or(|k| (b.stop_lsn, b.stop_time_us) < k);
                let why = if older {
                    "dropped: older than every kept backup"
                } else {
                    "dropped: no rule keeps it"
                };
                (false, vec![why.to_owned()])
            } else {
                (true, r)
            };
            BackupVerdict {
                id: b.id.clone(),
                stop_lsn: b.stop_lsn,
                stop_time: if b.stop_time.is_empty() {
                    rfc3339_micros(b.stop_time_us)
                } else {
                    b.stop_time.clone()
                },
                keep,
                reasons,
                stored_bytes: b.stored_bytes,
            }
        })
        .collect();

    // WAL: from each anchor through the end on every path, then each kept backup's own.
    let seg = input.seg_size;
    let mut kept: BTreeMap<(TimeLineId, XLogSegNo), String> = BTreeMap::new();
    for path in &paths {
        // The earliest anchor this path reaches, and the earliest WAL a live lease needs.
        let from = anchors
            .iter()
            .filter(|a| {
                on_path(path, a.backup) && backups.iter().any(|v| v.id == a.backup.id && v.keep)
            })
            .map(|a| (a.backup.start_lsn.segment(seg), a.reason.clone()))
            .chain(live.iter().filter_map(|l| {
                let from = l.wal_from?;
                let reaches = l.timeline.is_none_or(|lt| path.timeline_of(from) == lt);
                reaches.then(|| (from.segment(seg), format!("kept: lease {}", l.holder)))
            }))
            .min_by_key(|(s, _)| *s);
        let Some((from, reason)) = from else { continue };
        for span in path.oldest_first() {
            let range = (span.tli, from)..=(span.tli, XLogSegNo(u64::MAX));
            for ((tli, n), _) in input.summaries.range(range) {
                if path.segment_timeline(*n, seg, None) == Some(*tli) {
                    kept.entry((*tli, *n)).or_insert_with(|| reason.clone());
                }
            }
        }
    }
    // Then each kept backup's own WAL.
    for (b, v) in order.iter().zip(&backups) {
        if !v.keep {
            continue;
        }
        let path = ExpectedTimelines::new(b.stop_timeline, input.histories.get(&b.stop_timeline));
        let first = b.start_lsn.segment(seg);
        let last = b.stop_lsn.saturating_sub(1).segment(seg).max(first);
        for n in first.0..=last.0 {
            let n = XLogSegNo(n);
            let tli = path.segment_timeline(n, seg, None).unwrap_or(b.stop_timeline);
            kept.entry((tli, n)).or_insert_with(|| format!("kept: WAL of backup {}", b.id));
        }
    }
    // A live base backup lease that does not know its start yet: the WAL after the newest
    // complete backup's start stays (its start is later).
    if live.iter().any(|l| l.kind == LeaseKind::Basebackup && l.wal_from.is_none()) {
        let from = order.last().map_or(XLogSegNo(0), |b| b.start_lsn.segment(seg));
        for ((tli, n), _) in input.summaries.iter().filter(|((_, n), _)| *n >= from) {
            kept.entry((*tli, *n)).or_insert_with(|| "kept: a base backup in progress".into());
        }
    }

    // With no complete backup, nothing says what the WAL is for: it all stays.
    let no_backup = order.is_empty();
    let oldest_kept_start = order
        .iter()
        .zip(&backups)
        .filter(|(_, v)| v.keep)
        .map(|(b, _)| b.start_lsn.segment(seg))
        .min();
    let mut wal: Vec<WalRange> = Vec::new();
    let mut drop_segments = Vec::new();
    for ((tli, n), s) in input.summaries {
        let (keep, reason) = match kept.get(&(*tli, *n)) {
            Some(r) => (true, r.clone()),
            None if no_backup => (true, "kept: no complete backup yet".to_owned()),
            None if oldest_kept_start.is_none_or(|o| *n < o) => {
                (false, "dropped: older than every kept backup".to_owned())
            }
            None => (false, "dropped: on no kept backup's path".to_owned()),
        };
        if !keep {
            drop_segments.push(s.name.clone());
        }
        match wal.last_mut() {
            Some(r)
                if r.timeline == *tli
                    && r.keep == keep
                    && r.reason == reason
                    && r.last.segno(seg).and_then(|l| l.checked_add(1)) == Some(*n) =>
            {
                r.last = WalFileName::segment(*tli, *n, seg);
                r.segments += 1;
            }
            _ => wal.push(WalRange {
                timeline: *tli,
                first: WalFileName::segment(*tli, *n, seg),
                last: WalFileName::segment(*tli, *n, seg),
                segments: 1,
                keep,
                reason,
            }),
        }
    }

    let incomplete = input
        .incomplete
        .iter()
        .map(|i| {
            // A base backup's lease names no id (it is chosen later): it holds every incomplete
            // backup that started (by its id, whole seconds) no earlier than the lease.
            let leased = live.iter().find(|l| {
                l.backup.as_ref() == Some(&i.id)
                    || (l.kind == LeaseKind::Basebackup
                        && l.backup.is_none()
                        && i.started_us >= l.started_us - l.started_us.rem_euclid(1_000_000))
            });
            let (keep, reason) = if i.expiring {
                (false, "dropped: the rest of a deletion an earlier expire began".to_owned())
            } else if let Some(l) = leased {
                (true, format!("kept: lease {}", l.holder))
            } else if now.saturating_sub(i.started_us) < policy.grace_us {
                (true, "kept: incomplete, within the grace period".to_owned())
            } else {
                (
                    false,
                    "dropped: incomplete (no manifest) and older than the grace period".to_owned(),
                )
            };
            IncompleteVerdict { id: i.id.clone(), keep, reason }
        })
        .collect();
    let leases = input
        .leases
        .iter()
        .map(|l| LeaseReport {
            holder: l.holder.clone(),
            kind: l.kind.as_str(),
            live: l.is_live(now),
            expire_time: rfc3339_micros(l.expires_us),
            backup: l.backup.clone(),
        })
        .collect();
    Ok(Plan { plan_time: rfc3339_micros(now), backups, wal, incomplete, leases, drop_segments })
}

/// The start time a backup id names (its first 16 characters, `YYYYMMDDTHHMMSSZ`), Unix
/// microseconds.
pub fn id_time_us(id: &BackupId) -> Option<i64> {
    let s = id.as_str();
    let t = format!(
        "{}-{}-{} {}:{}:{}+00",
        s.get(0..4)?,
        s.get(4..6)?,
        s.get(6..8)?,
        s.get(9..11)?,
        s.get(11..13)?,
        s.get(13..15)?
    );
    crate::timefmt::parse_timestamp(&t).ok()
}

#[cfg(test)]
mod tests;
