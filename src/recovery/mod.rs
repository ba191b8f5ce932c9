//! Recovery targets, the planner and the recovery settings writer.
//!
//! The planner is pure: backup manifests, the WAL index and the timeline histories in, a plan or
//! a refusal out. A plan names the backup, the timeline path from the backup to the target, the
//! WAL segment range it relies on (all present and undamaged in the index) and the recovery
//! settings; a target that cannot be proven reachable is refused with the reason, before anything
//! is written. `walrs restore` then checks every planned object exists before it restores.

pub mod config;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::backup::BackupManifest;
use crate::error::{Kind, Result, WalrsError};
use crate::index::{EndKind, SegmentSummary};
use crate::pg::{
    Lsn, PgTimestamp, TimeLineId, TimelineHistory, WalFileName, WalSegSize, XLogSegNo,
};

/// What to recover to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The end of the archived WAL (no target).
    End,
    /// `recovery_target_time` (Unix microseconds).
    Time(i64),
    /// `recovery_target_lsn`.
    Lsn(Lsn),
    /// `recovery_target_xid`.
    Xid(u32),
    /// `recovery_target_name`.
    Name(String),
    /// `recovery_target = 'immediate'`: the end of the backup.
    Immediate,
}

/// `recovery_target_timeline`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetTimeline {
    /// The newest timeline in the archive.
    Latest,
    /// The backup's timeline.
    Current,
    /// This one.
    Id(u32),
}

/// A parsed timestamp with time zone: `YYYY-MM-DD[ T]HH:MM[:SS[.ffffff]][Z|±HH[:MM]| UTC]`.
/// Without a zone, UTC is assumed (and the recovery setting is written with `+00`).
pub fn parse_timestamp(s: &str) -> std::result::Result<i64, String> {
    let bad = || format!("invalid timestamp {s:?}: expected e.g. '2026-11-21 14:03:07+00'");
    let t = s.trim();
    let (date, rest) = t.split_at_checked(10).ok_or_else(bad)?;
    let mut dp = date.split('-');
    let (y, mo, d): (i64, i64, i64) = (
        dp.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
        dp.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
        dp.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
    );
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match mo {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=12).contains(&mo) || !(1..=month_days).contains(&d) {
        return Err(format!("invalid timestamp {s:?}: no such date"));
    }
    let rest = rest.strip_prefix(['T', ' ', 't']).unwrap_or(rest);
    // Split the zone off: Z, UTC, +HH[:MM], -HH[:MM].
    let (time, zone) = if let Some(i) = rest.find(['+', '-', 'Z', 'z', ' ']) {
        rest.split_at(i)
    } else {
        (rest, "")
    };
    let mut tp = time.split(':');
    let h: i64 = tp.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let mi: i64 = tp.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let sec = tp.next().unwrap_or("0");
    let (si, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let sec_i: i64 = si.parse().map_err(|_| bad())?;
    if h > 23
        || mi > 59
        || sec_i > 60
        || frac.len() > 6
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let micros: i64 =
        if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse().map_err(|_| bad())? };
    let zone = zone.trim();
    let offset_s: i64 = match zone {
        "" | "Z" | "z" | "UTC" | "utc" | "GMT" => 0,
        z if z.starts_with(['+', '-']) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let body = z.get(1..).unwrap_or_default();
            let (hh, mm) = match body.split_once(':') {
                Some((a, b)) => (a, b),
                None if body.len() == 4 => body.split_at(2),
                None => (body, "0"),
            };
            let hh: i64 = hh.parse().map_err(|_| bad())?;
            let mm: i64 = mm.parse().map_err(|_| bad())?;
            // PostgreSQL's limit for a numeric zone offset is 15:59.
            if !(0..=15).contains(&hh) || !(0..=59).contains(&mm) {
                return Err(format!(
                    "invalid timestamp {s:?}: time zone offset out of range (at most ±15:59)"
                ));
            }
            sign * (hh * 3600 + mm * 60)
        }
        _ => {
            return Err(format!(
                "invalid timestamp {s:?}: unsupported time zone {zone:?} (use Z, UTC or +HH:MM)"
            ));
        }
    };
    // Days from civil (Howard Hinnant).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec_i - offset_s;
    Ok(secs * 1_000_000 + micros)
}

/// One stretch of the timeline path: WAL of `tli` from `from` up to `to` (exclusive; `None` for
/// the target timeline, which runs to the target).
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct PathStep {
    /// Timeline.
    pub tli: u32,
    /// Start.
    pub from: Lsn,
    /// End (its switch point), if it is not the last.
    pub to: Option<Lsn>,
}

/// A recovery plan.
#[derive(Serialize, Clone, Debug)]
pub struct Plan {
    /// The backup restored.
    pub backup: String,
    /// Its stop LSN (recovery replays at least this far).
    pub backup_stop: Lsn,
    /// The timeline path.
    pub path: Vec<PathStep>,
    /// The target timeline.
    pub target_timeline: u32,
    /// What the target resolves to in the archive.
    pub target: String,
    /// The first and last WAL segment replay needs.
    pub first_segment: String,
    /// See `first_segment`.
    pub last_segment: String,
    /// Every segment replay needs, in order.
    pub segments: Vec<String>,
    /// Bytes to fetch: the backup plus its WAL (plaintext).
    pub bytes: u64,
}

/// Everything the planner looks at.
pub struct PlanInput<'a> {
    /// Complete backups.
    pub backups: &'a [BackupManifest],
    /// The index, by (timeline, segment number).
    pub summaries: &'a BTreeMap<(TimeLineId, u64), SegmentSummary>,
    /// Timeline histories, by timeline.
    pub histories: &'a BTreeMap<u32, TimelineHistory>,
    /// Segment size.
    pub seg_size: WalSegSize,
}

fn refuse(msg: impl Into<String>) -> WalrsError {
    WalrsError::new(Kind::Unreachable, msg)
}

/// The path of timelines leading to `target`: (tli, start, switch point) oldest first.
fn ancestry(target: u32, histories: &BTreeMap<u32, TimelineHistory>) -> Vec<(u32, Option<Lsn>)> {
    let mut out = Vec::new();
    if let Some(h) = histories.get(&target) {
        for a in &h.ancestors {
            out.push((a.tli.get(), Some(a.switchpoint)));
        }
    }
    out.push((target, None));
    out
}

/// The start of the last record on the path that is archived in full: recovery can stop at a
/// target LSN only if a record at or after it can be read. `path_segs` in LSN order.
fn last_complete_record(path_segs: &[&SegmentSummary], seg: WalSegSize) -> Option<Lsn> {
    path_segs
        .iter()
        .filter(|s| s.error.is_none())
        .filter_map(|s| {
            let next_archived =
                path_segs.iter().any(|n| n.start.0 == s.start.0 + seg.bytes() && n.error.is_none());
            if s.end_kind != EndKind::Continues || next_archived {
                s.last_record
            } else {
                // The last record runs into a segment that is not archived; the first one
                // that starts here is complete if another starts after it.
                s.first_record.filter(|f| Some(*f) != s.last_record)
            }
        })
        .max()
}

/// Plans a recovery (see the module docs).
pub fn plan(
    input: &PlanInput<'_>,
    target: &Target,
    timeline: TargetTimeline,
    backup: Option<&str>,
    inclusive: bool,
) -> Result<Plan> {
    let seg = input.seg_size;
    if input.backups.is_empty() {
        return Err(refuse("the repository holds no complete backup"));
    }
    let chosen_by_id = match backup {
        Some(id) if id != "latest" => Some(
            input
                .backups
                .iter()
                .find(|b| b.id == id)
                .ok_or_else(|| refuse(format!("no complete backup {id}")))?,
        ),
        _ => None,
    };
    // The target timeline.
    let newest = input
        .summaries
        .keys()
        .map(|(t, _)| t.get())
        .chain(input.histories.keys().copied())
        .max()
        .unwrap_or(1);
    let tli = match timeline {
        TargetTimeline::Latest => newest,
        TargetTimeline::Id(n) => n,
        TargetTimeline::Current => match chosen_by_id {
            Some(b) => b.timeline.get(),
            None => input.backups.last().map(|b| b.timeline.get()).unwrap_or(1),
        },
    };
    if tli > 1
        && !input.histories.contains_key(&tli)
        && input.summaries.keys().all(|(t, _)| t.get() != tli)
    {
        return Err(refuse(format!("timeline {tli} is not in the archive")));
    }
    let path = ancestry(tli, input.histories);
    // Where on the path each LSN lives.
    let tli_at = |lsn: Lsn| -> u32 {
        for (t, end) in &path {
            if end.is_none_or(|e| lsn < e) {
                return *t;
            }
        }
        tli
    };
    // The timeline PostgreSQL reads segment `n` from: the newest on the path whose start (the
    // previous timeline's switch point) is before the segment's end. The segment holding a switch
    // point comes from the new timeline: it holds the parent's WAL up to the switch point,
    // copied at promotion, then the new timeline's (XLogFileReadAnyTLI in xlogrecovery.c).
    let seg_tli = |n: u64| -> u32 {
        let end = Lsn(XLogSegNo(n).start_lsn(seg).0 + seg.bytes());
        path.iter()
            .enumerate()
            .rev()
            .find(|(i, _)| {
                let from = if *i == 0 {
                    Lsn(0)
                } else {
                    path.get(i - 1).and_then(|p| p.1).unwrap_or(Lsn(0))
                };
                end > from
            })
            .map(|(_, (t, _))| *t)
            .unwrap_or(tli)
    };
    // Segments on the path in order, from the index: exactly the ones replay reads, so no record
    // of a parent timeline after its switch point is counted. `.partial` segments never are:
    // restore_command is never asked for them.
    let on_path = |s: &SegmentSummary| -> bool {
        !s.name.ends_with(".partial") && s.timeline == seg_tli(s.segno)
    };
    let path_segs: Vec<&SegmentSummary> = input.summaries.values().filter(|s| on_path(s)).collect();
    // The target's position.
    let (target_lsn, target_desc): (Option<Lsn>, String) = match target {
        Target::End => {
            let last = path_segs.iter().filter(|s| s.timeline == tli).map(|s| s.end).max();
            (last, "the end of the archived WAL".into())
        }
        Target::Lsn(l) => {
            // Recovery stops at the first record at or after the target: it must be archived
            // (recoveryStopsBefore/After in xlogrecovery.c).
            let last = last_complete_record(&path_segs, seg);
            if last.is_none_or(|r| *l > r) {
                return Err(refuse(format!(
                    "target LSN {l} is past the last archived record on the path to timeline {tli} ({}); recovery could not prove it reached the target",
                    last.map(|r| r.to_string()).unwrap_or_else(|| "none".into())
                )));
            }
            match path_segs.iter().find(|s| s.last_record.is_some_and(|r| r >= *l)) {
                Some(s) => (Some(s.end.max(Lsn(l.0 + 1))), format!("LSN {l} (in {})", s.name)),
                None => (Some(*l), format!("LSN {l}")),
            }
        }
        Target::Immediate => (None, "the end of the backup (immediate)".into()),
        Target::Time(us) => {
            // Recovery stops at the first transaction end after the target: it must be archived.
            let hit = path_segs.iter().find(|s| {
                s.last_xact_time_us.is_some_and(|t| if inclusive { t > *us } else { t >= *us })
            });
            match hit {
                Some(s) => (
                    Some(s.end),
                    format!("time {} (stops in {})", PgTimestamp::from_unix_micros(*us), s.name),
                ),
                None => {
                    let last = path_segs.iter().filter_map(|s| s.last_xact_time_us).max();
                    return Err(refuse(format!(
                        "target time {} is after the last archived transaction ({}); recovery could not prove it reached the target; no target recovers to the end of the archive (restore without --target-time)",
                        PgTimestamp::from_unix_micros(*us),
                        last.map(|t| PgTimestamp::from_unix_micros(t).to_string())
                            .unwrap_or_else(|| "none".into())
                    ))
                    .hint("later transactions may still be in the server's current WAL segment, which PostgreSQL archives only when it fills or when archive_timeout forces a switch: set archive_timeout (pgconf-templates/archive.conf), or run SELECT pg_switch_wal() on the server, then plan again"));
                }
            }
        }
        Target::Xid(x) => {
            let hit = path_segs.iter().find(|s| {
                s.min_xid.is_some_and(|m| m <= *x)
                    && s.max_xid.is_some_and(|m| m >= *x)
                    && (s.xids.is_empty() || s.xids.contains(x))
            });
            match hit {
                Some(s) => (Some(s.end), format!("xid {x} (ends in {})", s.name)),
                None => {
                    return Err(refuse(format!(
                        "no commit or abort of xid {x} is in the archive on the path to timeline {tli}"
                    )));
                }
            }
        }
        Target::Name(n) => {
            let hit = path_segs
                .iter()
                .find_map(|s| s.restore_points.iter().find(|r| r.name == *n).map(|r| (s, r.lsn)));
            match hit {
                Some((s, lsn)) => {
                    (Some(Lsn(lsn.0 + 1)), format!("restore point {n:?} at {lsn} (in {})", s.name))
                }
                None => {
                    return Err(refuse(format!(
                        "restore point {n:?} is not in the archive on the path to timeline {tli}"
                    )));
                }
            }
        }
    };
    // The backup: the newest complete one on the path whose end is before the target.
    // Usable for the target timeline only if the WAL from its start to its stop lies on the
    // path: it started on its timeline before that timeline's switch point, and stopped on its
    // stop timeline at or before that one's switch point.
    let usable = |b: &&BackupManifest| -> bool {
        if tli_at(b.start_lsn) != b.timeline.get() {
            return false;
        }
        if tli_at(Lsn(b.stop_lsn.0.saturating_sub(1))) != b.stop_timeline.get() {
            return false;
        }
        match target {
            Target::Time(us) => b.stop_time_us <= *us,
            Target::Immediate | Target::End => true,
            Target::Lsn(l) => b.stop_lsn <= *l,
            _ => target_lsn.is_some_and(|l| b.stop_lsn <= l),
        }
    };
    let b = match chosen_by_id {
        Some(b) => {
            if !usable(&b) {
                return Err(refuse(format!(
                    "backup {} cannot reach {target_desc} on timeline {tli}: it ends at {} ({}) on timeline {}",
                    b.id,
                    b.stop_lsn,
                    b.stop_time,
                    b.timeline.get()
                )));
            }
            b
        }
        None => {
            match input.backups.iter().filter(usable).max_by_key(|b| (b.stop_lsn, b.stop_time_us)) {
                Some(b) => b,
                None => {
                    let first = input
                        .backups
                        .first()
                        .map(|b| format!("{} ends at {} ({})", b.id, b.stop_lsn, b.stop_time))
                        .unwrap_or_default();
                    return Err(refuse(format!(
                        "no backup ends before {target_desc} on the path to timeline {tli} (the earliest, {first})"
                    )));
                }
            }
        }
    };
    // The WAL replay needs: from the backup's start to the target (or the backup's stop).
    let end_lsn = match target {
        Target::Immediate => b.stop_lsn,
        _ => target_lsn.unwrap_or(b.stop_lsn).max(b.stop_lsn),
    };
    let first = b.start_lsn.segment(seg).0;
    let last = Lsn(end_lsn.0.saturating_sub(1)).segment(seg).0;
    let mut segments = Vec::new();
    let mut bytes = b.bytes;
    for n in first..=last {
        let t = seg_tli(n);
        let tl = TimeLineId::new(t).map_err(|e| WalrsError::new(Kind::Internal, e.to_string()))?;
        let name = WalFileName::segment(tl, XLogSegNo(n), seg);
        match input.summaries.get(&(tl, n)) {
            None => {
                return Err(refuse(format!(
                    "{name} is missing from the archive: replay from backup {} to {target_desc} needs every segment from {} to {}",
                    b.id,
                    WalFileName::segment(b.timeline, XLogSegNo(first), seg),
                    WalFileName::segment(
                        TimeLineId::new(tli).unwrap_or(TimeLineId::FIRST),
                        XLogSegNo(last),
                        seg
                    )
                )));
            }
            Some(s) if s.name.ends_with(".partial") => {
                return Err(refuse(format!(
                    "{name} is missing from the archive (only {} is): replay from backup {} to {target_desc} needs the full segment; PostgreSQL's restore_command never asks for a .partial file",
                    s.name, b.id
                )));
            }
            Some(s) if s.error.is_some() => {
                return Err(refuse(format!(
                    "{name} is damaged ({}); replay cannot pass it",
                    s.error.clone().unwrap_or_default()
                )));
            }
            Some(s) => bytes += u64::from(s.seg_size),
        }
        segments.push(name.to_string());
    }
    let path_steps: Vec<PathStep> = path
        .iter()
        .enumerate()
        .filter(|(_, (t, to))| to.is_none_or(|to| to > b.start_lsn) && *t >= b.timeline.get())
        .map(|(i, (t, to))| PathStep {
            tli: *t,
            from: if i == 0 {
                b.start_lsn
            } else {
                path.get(i - 1).and_then(|p| p.1).unwrap_or(b.start_lsn).max(b.start_lsn)
            },
            to: *to,
        })
        .collect();
    Ok(Plan {
        backup: b.id.clone(),
        backup_stop: b.stop_lsn,
        path: path_steps,
        target_timeline: tli,
        target: target_desc,
        first_segment: segments.first().cloned().unwrap_or_default(),
        last_segment: segments.last().cloned().unwrap_or_default(),
        segments,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let base = parse_timestamp("2026-11-21 14:03:07+00").unwrap();
        assert_eq!(base, 1_795_269_787_000_000);
        assert_eq!(parse_timestamp("2026-11-21T14:03:07Z").unwrap(), base);
        assert_eq!(parse_timestamp("2026-11-21 14:03:07 UTC").unwrap(), base);
        assert_eq!(parse_timestamp("2026-11-21 15:03:07+01").unwrap(), base);
        assert_eq!(parse_timestamp("2026-11-21 15:33:07+01:30").unwrap(), base);
        assert_eq!(parse_timestamp("2026-11-21 09:03:07-0500").unwrap(), base);
        assert_eq!(parse_timestamp("2026-11-21 14:03:07.5+00").unwrap(), base + 500_000);
        assert_eq!(parse_timestamp("2026-11-21 14:03:07.000123").unwrap(), base + 123);
        assert_eq!(parse_timestamp("2026-11-21 14:03").unwrap(), base - 7_000_000);
        assert!(
            parse_timestamp("2028-02-29 00:00:00").is_ok()
                && parse_timestamp("2000-02-29 00:00").is_ok()
        );
        assert_eq!(parse_timestamp("2026-11-21 14:03:07-15:59").unwrap(), base + 57_540_000_000);
        assert_eq!(
            PgTimestamp::from_unix_micros(base).to_string(),
            "2026-11-21 14:03:07.000000+00"
        );
        for bad in [
            "",
            "2026-13-01 00:00:00",
            "2026-11-21 25:00:00",
            "yesterday",
            "2026-11-21 14:03:07 PST",
            "2026-11-21 14:03:07.1234567",
            // no such day: never silently the 3rd of March
            "2026-02-29 00:00:00",
            "2026-02-31 00:00:00",
            "2026-04-31 12:00:00",
            "1900-02-29 00:00:00",
            // offsets PostgreSQL refuses
            "2026-11-21 14:03:07+99",
            "2026-11-21 14:03:07+16:00",
            "2026-11-21 14:03:07+01:60",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    const M: u64 = 0x100_0000;

    fn tl(n: u32) -> TimeLineId {
        TimeLineId::new(n).unwrap()
    }

    /// A summary of segment `n` of timeline `t`: records from `n*M + 0x28` to `last`, valid WAL
    /// to `end`.
    fn seg(t: u32, n: u64, last: u64, end: u64, kind: EndKind) -> SegmentSummary {
        SegmentSummary {
            format_version: 1,
            name: WalFileName::segment(tl(t), XLogSegNo(n), WalSegSize::DEFAULT).to_string(),
            timeline: t,
            segno: n,
            start: Lsn(n * M),
            seg_size: 16 << 20,
            first_record: Some(Lsn(n * M + 0x28)),
            last_record: Some(Lsn(last)),
            end: Lsn(end),
            end_kind: kind,
            continuation: 0,
            first_prev: None,
            records: 10,
            commits: 0,
            aborts: 0,
            first_xact_time_us: None,
            last_xact_time_us: None,
            min_xid: None,
            max_xid: None,
            xids: vec![],
            restore_points: vec![],
            checkpoints: vec![],
            backup_ends: vec![],
            end_of_recovery: vec![],
            error: None,
            content_digest: String::new(),
        }
    }

    fn full(t: u32, n: u64) -> SegmentSummary {
        seg(t, n, (n + 1) * M - 0x100, (n + 1) * M, EndKind::Full)
    }

    fn backup(id: &str, t: u32, start: u64, stop: u64, stop_t: u32, time: i64) -> BackupManifest {
        BackupManifest {
            format_version: 1,
            id: id.into(),
            label: id.into(),
            system_identifier: crate::pg::SystemId(1),
            pg_version: crate::pg::PgMajorVersion::V15,
            timeline: tl(t),
            start_lsn: Lsn(start),
            stop_lsn: Lsn(stop),
            stop_timeline: tl(stop_t),
            start_time: String::new(),
            stop_time: String::new(),
            stop_time_us: time,
            first_wal: String::new(),
            last_wal: String::new(),
            archives: vec![],
            pg_manifest_key: String::new(),
            bytes: 0,
            stored_bytes: 0,
            compression: "none".into(),
            encrypted: false,
        }
    }

    fn index(segs: Vec<SegmentSummary>) -> BTreeMap<(TimeLineId, u64), SegmentSummary> {
        segs.into_iter().map(|s| ((tl(s.timeline), s.segno), s)).collect()
    }

    /// Timeline 2 branches from timeline 1 at 0/3800000, in the middle of segment 3; timeline
    /// 1 went on to segment 4.
    const SWITCH: u64 = 3 * M + 0x80_0000;

    fn histories() -> BTreeMap<u32, TimelineHistory> {
        let h = TimelineHistory::parse(
            tl(2),
            format!("1\t{}\tno recovery target\n", Lsn(SWITCH)).as_bytes(),
        )
        .unwrap();
        BTreeMap::from([(2, h)])
    }

    fn branched() -> Vec<SegmentSummary> {
        vec![full(1, 1), full(1, 2), full(1, 3), full(1, 4), full(2, 3), full(2, 4)]
    }

    fn run(
        backups: &[BackupManifest],
        segs: Vec<SegmentSummary>,
        target: &Target,
        timeline: TargetTimeline,
    ) -> Result<Plan> {
        let summaries = index(segs);
        let histories = histories();
        let input = PlanInput {
            backups,
            summaries: &summaries,
            histories: &histories,
            seg_size: WalSegSize::DEFAULT,
        };
        plan(&input, target, timeline, None, true)
    }

    #[test]
    fn issue_5_records_after_the_switch_point_are_not_on_the_path() {
        let backups = [backup("A", 1, M + 0x28, M + 0x100, 1, 1000)];
        // Timeline 1's segment 3 has a commit after the switch point (at time 9000); timeline
        // 2's copy of segment 3 and its segment 4 have nothing after 4000.
        let mut segs = branched();
        for s in &mut segs {
            if (s.timeline, s.segno) == (1, 3) {
                s.last_xact_time_us = Some(9000);
                s.restore_points.push(crate::index::summary::RestorePointEntry {
                    name: "on-1-after-switch".into(),
                    lsn: Lsn(SWITCH + 0x1000),
                    time_us: 9000,
                });
            }
            if (s.timeline, s.segno) == (2, 3) {
                s.last_xact_time_us = Some(3000);
            }
        }
        let e =
            run(&backups, segs.clone(), &Target::Time(4000), TargetTimeline::Latest).unwrap_err();
        assert_eq!(e.kind, Kind::Unreachable, "{e}");
        let e = run(
            &backups,
            segs.clone(),
            &Target::Name("on-1-after-switch".into()),
            TargetTimeline::Latest,
        )
        .unwrap_err();
        assert_eq!(e.kind, Kind::Unreachable, "{e}");
        // On timeline 1 itself both are reachable.
        let p = run(&backups, segs.clone(), &Target::Time(4000), TargetTimeline::Id(1)).unwrap();
        assert_eq!(p.last_segment, "000000010000000000000003");
        // And a time before the switch on timeline 2 is read from timeline 2's copy.
        let p = run(&backups, segs, &Target::Time(2000), TargetTimeline::Latest).unwrap();
        assert_eq!(
            p.segments,
            ["000000010000000000000001", "000000010000000000000002", "000000020000000000000003"]
        );
        assert_eq!(p.target_timeline, 2);
    }

    #[test]
    fn issue_5_a_backup_across_the_switch_point_is_not_on_the_child_timeline() {
        // B starts on timeline 1 before the switch point and stops after it, still on 1.
        let backups = [
            backup("A", 1, M + 0x28, M + 0x100, 1, 1000),
            backup("B", 1, 3 * M + 0x28, SWITCH + 0x1000, 1, 5000),
        ];
        let p = run(&backups, branched(), &Target::End, TargetTimeline::Latest).unwrap();
        assert_eq!(p.backup, "A", "{p:?}");
        assert_eq!(p.target_timeline, 2);
        // On timeline 1 it is the newest usable one.
        let p = run(&backups, branched(), &Target::End, TargetTimeline::Id(1)).unwrap();
        assert_eq!(p.backup, "B", "{p:?}");
        // Given by id, it is refused for timeline 2.
        let summaries = index(branched());
        let histories = histories();
        let input = PlanInput {
            backups: &backups,
            summaries: &summaries,
            histories: &histories,
            seg_size: WalSegSize::DEFAULT,
        };
        let e = plan(&input, &Target::End, TargetTimeline::Latest, Some("B"), true).unwrap_err();
        assert_eq!(e.kind, Kind::Unreachable, "{e}");
        // A backup that ends exactly at the switch point is usable on timeline 2.
        let at = [backup("C", 1, 3 * M + 0x28, SWITCH, 1, 5000)];
        let p = run(&at, branched(), &Target::End, TargetTimeline::Latest).unwrap();
        assert_eq!(p.backup, "C");
    }

    #[test]
    fn issue_5_lsn_past_the_last_archived_record_is_refused() {
        let backups = [backup("A", 1, M + 0x28, M + 0x100, 1, 1000)];
        // The last archived segment ends with a switch record at 0/2000500.
        let segs = vec![full(1, 1), seg(1, 2, 2 * M + 0x500, 2 * M + 0x518, EndKind::Switch)];
        for l in [2 * M + 0x501, 2 * M + 0x80_0000, 3 * M - 1] {
            let e = run(&backups, segs.clone(), &Target::Lsn(Lsn(l)), TargetTimeline::Id(1))
                .unwrap_err();
            assert_eq!(e.kind, Kind::Unreachable, "{e}");
            assert!(e.message.contains("past the last archived record"), "{e}");
        }
        let p =
            run(&backups, segs.clone(), &Target::Lsn(Lsn(2 * M + 0x500)), TargetTimeline::Id(1))
                .unwrap();
        assert_eq!(p.last_segment, "000000010000000000000002");
        // A last record that runs into a segment not archived cannot be read.
        let cont = vec![full(1, 1), seg(1, 2, 3 * M - 0x10, 3 * M, EndKind::Continues)];
        let e = run(&backups, cont.clone(), &Target::Lsn(Lsn(3 * M - 0x10)), TargetTimeline::Id(1))
            .unwrap_err();
        assert_eq!(e.kind, Kind::Unreachable, "{e}");
        run(&backups, cont, &Target::Lsn(Lsn(2 * M + 0x28)), TargetTimeline::Id(1)).unwrap();
        // A backup that ends after the target LSN is not chosen for it.
        let later = [backup("L", 1, M + 0x28, 2 * M + 0x100, 1, 1000)];
        let e =
            run(&later, segs, &Target::Lsn(Lsn(2 * M + 0x80)), TargetTimeline::Id(1)).unwrap_err();
        assert!(e.message.contains("no backup ends before"), "{e}");
    }

    #[test]
    fn issue_5_a_partial_segment_is_not_archived() {
        let backups = [backup("A", 1, M + 0x28, M + 0x100, 1, 1000)];
        let mut partial = full(1, 2);
        partial.name.push_str(".partial");
        partial.end_kind = EndKind::EndOfWal;
        let segs = vec![full(1, 1), partial, full(1, 3)];
        let e = run(&backups, segs, &Target::End, TargetTimeline::Id(1)).unwrap_err();
        assert_eq!(e.kind, Kind::Unreachable, "{e}");
        assert!(e.message.contains("000000010000000000000002 is missing"), "{e}");
    }
}
