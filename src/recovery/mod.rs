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
use crate::index::SegmentSummary;
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
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return Err(bad());
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
    // Segments on the path in order, from the index.
    let on_path = |s: &SegmentSummary| -> bool {
        let start = s.start;
        let end = Lsn(s.start.0 + seg.bytes());
        path.iter().enumerate().any(|(i, (t, to))| {
            let from =
                if i == 0 { Lsn(0) } else { path.get(i - 1).and_then(|p| p.1).unwrap_or(Lsn(0)) };
            *t == s.timeline
                && !s.name.ends_with(".partial")
                && end > from
                && to.is_none_or(|to| start < to)
        })
    };
    let path_segs: Vec<&SegmentSummary> = input.summaries.values().filter(|s| on_path(s)).collect();
    // The target's position.
    let (target_lsn, target_desc): (Option<Lsn>, String) = match target {
        Target::End => {
            let last = path_segs.iter().filter(|s| s.timeline == tli).map(|s| s.end).max();
            (last, "the end of the archived WAL".into())
        }
        Target::Lsn(l) => (Some(*l), format!("LSN {l}")),
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
                        "target time {} is after the last archived transaction ({}); recovery could not prove it reached the target",
                        PgTimestamp::from_unix_micros(*us),
                        last.map(|t| PgTimestamp::from_unix_micros(t).to_string())
                            .unwrap_or_else(|| "none".into())
                    )));
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
    let usable = |b: &&BackupManifest| -> bool {
        let bt = b.timeline.get();
        if tli_at(b.start_lsn) != bt && !path.iter().any(|(t, _)| *t == bt) {
            return false;
        }
        if tli_at(b.start_lsn) != bt {
            return false;
        }
        match target {
            Target::Time(us) => b.stop_time_us <= *us,
            Target::Immediate | Target::End => true,
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
        let start = XLogSegNo(n).start_lsn(seg);
        // The timeline PostgreSQL reads this segment from: the newest on the path that covers it.
        let t = path
            .iter()
            .enumerate()
            .rev()
            .find(|(i, _)| {
                let from = if *i == 0 {
                    Lsn(0)
                } else {
                    path.get(i - 1).and_then(|p| p.1).unwrap_or(Lsn(0))
                };
                Lsn(start.0 + seg.bytes()) > from
            })
            .map(|(_, (t, _))| *t)
            .unwrap_or(tli);
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
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }
}
