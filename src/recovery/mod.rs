//! Recovery targets, the planner and the recovery settings writer.
//!
//! The planner is pure: backup manifests, the WAL index and the timeline histories in, a plan or
//! a refusal out. A plan names the backup, the timeline path from the backup to the target, the
//! WAL segment range it relies on (all present and undamaged in the index) and the recovery
//! settings; a target that cannot be proven reachable is refused with the reason, before anything
//! is written. `walrs restore` then checks every planned object exists before it restores.

pub mod config;
pub mod input;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Kind, Result, WalrsError};
use crate::index::verify::{Divergence, divergences};
use crate::index::{EndKind, SegmentSummary};
use crate::pg::history::ExpectedTimelines;
use crate::pg::{
    Lsn, PgTimestamp, TimeLineId, TimelineHistory, WalFileName, WalSegSize, XLogSegNo,
};
use crate::repo::BackupManifest;

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
    /// No `--target-timeline`: the newest timeline in the archive, unless histories diverged
    /// (two servers archived into the repository): then the end of the branch whose last archived
    /// transaction is the newest, the operator's production.
    Default,
    /// The newest timeline in the archive (what PostgreSQL's `latest` follows).
    Latest,
    /// The backup's timeline.
    Current,
    /// This one.
    Id(TimeLineId),
}

/// Timestamps of recovery targets (`--target-time`): see [`crate::timefmt::parse_timestamp`].
pub use crate::timefmt::parse_timestamp;

/// One stretch of the timeline path: WAL of `tli` from `from` up to `to` (exclusive; `None` for
/// the target timeline, which runs to the target).
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct PathStep {
    /// Timeline (`timeline` in JSON, docs/json.md).
    #[serde(rename = "timeline")]
    pub tli: TimeLineId,
    /// Start (`start_lsn` in JSON).
    #[serde(rename = "start_lsn")]
    pub from: Lsn,
    /// End (its switch point), if it is not the last (`end_lsn` in JSON).
    #[serde(rename = "end_lsn")]
    pub to: Option<Lsn>,
}

/// The recovery target of a plan as data (`target` in `restore --json`, docs/json.md): what was
/// asked for and where the archive says recovery stops. Fields that do not apply to the kind of
/// target are `None` (`null`).
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct PlanTarget {
    /// `end` (no target: the end of the archived WAL), `immediate`, `time`, `lsn`, `xid` or
    /// `name`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `--target-time`, in UTC.
    pub time: Option<PgTimestamp>,
    /// `--target-lsn`.
    pub lsn: Option<Lsn>,
    /// `--target-xid`.
    pub xid: Option<u32>,
    /// `--target-name`.
    pub name: Option<String>,
    /// Whether recovery stops just after the target (`false`: `--target-exclusive`).
    pub inclusive: bool,
    /// The archived segment in which recovery reaches the target, when the index tells.
    pub stop_wal: Option<WalFileName>,
    /// The record that marks the target, when the index knows its position: the commit or abort
    /// of the xid, the restore point (the first one replay meets).
    pub record_lsn: Option<Lsn>,
    /// How many restore points of that name are on the path (`name` targets; PostgreSQL stops at
    /// the first it replays).
    pub name_uses: Option<usize>,
    /// The target in words, as the text output prints it.
    pub description: String,
}

/// A recovery plan.
#[derive(Serialize, Clone, Debug)]
pub struct Plan {
    /// The backup restored.
    pub backup: String,
    /// Its stop LSN (recovery replays at least this far; `backup_stop_lsn` in JSON).
    #[serde(rename = "backup_stop_lsn")]
    pub backup_stop: Lsn,
    /// The backups the restore reads, oldest first: the backup alone when it is full, its whole
    /// chain when it is incremental.
    pub chain: Vec<ChainMember>,
    /// The timeline path.
    pub path: Vec<PathStep>,
    /// The target timeline.
    pub target_timeline: TimeLineId,
    /// What the target resolves to in the archive, in words (in JSON: `target.description`).
    #[serde(skip)]
    pub target: String,
    /// The target as data (`target` in JSON).
    #[serde(rename = "target")]
    pub target_data: PlanTarget,
    /// The first and last WAL segment replay needs (`first_wal`, `last_wal` in JSON; `""` when
    /// it needs none).
    #[serde(rename = "first_wal", serialize_with = "name_or_empty")]
    pub first_segment: Option<WalFileName>,
    /// See `first_segment`.
    #[serde(rename = "last_wal", serialize_with = "name_or_empty")]
    pub last_segment: Option<WalFileName>,
    /// Every segment replay needs, in order (`wal_files` in JSON).
    #[serde(rename = "wal_files")]
    pub segments: Vec<WalFileName>,
    /// Bytes to fetch: the backup plus its WAL (plaintext).
    pub bytes: u64,
    /// Diverged histories in the archive: parents that went on after a child branched from
    /// them (two servers archived into the repository). Empty when there are none.
    pub diverged: Vec<Divergence>,
    /// With diverged histories: the timelines at the ends of the branches the plan does not
    /// follow (`--target-timeline N` follows one of them).
    pub other_branches: Vec<TimeLineId>,
    /// Why the plan chose what it chose where the archive offered a choice: diverged
    /// histories, a restore point name used more than once.
    pub notes: Vec<String>,
}

/// A backup of the restored chain.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ChainMember {
    /// Its id.
    pub id: String,
    /// `full` or `incremental`.
    #[serde(rename = "type")]
    pub backup_type: &'static str,
    /// How an incremental member was made (`pg17-summaries`, `walrs-block-map`); `null` for
    /// the full one.
    pub method: Option<String>,
}

/// The chain of `b` as the planner's catalogue has it, oldest first (members it does not hold
/// are left out: such a chain is refused before anything is restored).
fn chain_of(input: &PlanInput<'_>, b: &BackupManifest) -> Vec<ChainMember> {
    b.chain_ids()
        .iter()
        .filter_map(|id| input.backups.iter().find(|m| m.id == *id))
        .map(|m| ChainMember {
            id: m.id.to_string(),
            backup_type: m.backup_type.as_str(),
            method: m.is_incremental().then(|| {
                m.incremental
                    .as_ref()
                    .map_or_else(|| "pg17-summaries".to_owned(), |i| i.method.clone())
            }),
        })
        .collect()
}

/// A segment name as a string, `""` for none (the form plans were always printed in).
fn name_or_empty<S: serde::Serializer>(
    name: &Option<WalFileName>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(name.as_ref().map_or("", WalFileName::as_str))
}

/// Everything the planner looks at.
pub struct PlanInput<'a> {
    /// Complete backups.
    pub backups: &'a [BackupManifest],
    /// The index, by (timeline, segment number).
    pub summaries: &'a BTreeMap<(TimeLineId, XLogSegNo), SegmentSummary>,
    /// Timeline histories, by timeline.
    pub histories: &'a BTreeMap<TimeLineId, TimelineHistory>,
    /// Segment size.
    pub seg_size: WalSegSize,
}

fn refuse(msg: impl Into<String>) -> WalrsError {
    WalrsError::new(Kind::Unreachable, msg)
}

/// The start of the last record on the path that is archived in full: recovery can stop at a
/// target LSN only if a record at or after it can be read. `path_segs` in LSN order.
fn last_complete_record(path_segs: &[&SegmentSummary], seg: WalSegSize) -> Option<Lsn> {
    path_segs
        .iter()
        .filter(|s| s.error.is_none())
        .filter_map(|s| {
            let next_archived = path_segs
                .iter()
                .any(|n| s.start.checked_add(seg.bytes()) == Some(n.start) && n.error.is_none());
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

/// The target timeline the planner follows, with what diverged histories make it say.
struct TimelineChoice {
    tli: TimeLineId,
    diverged: Vec<Divergence>,
    other_branches: Vec<TimeLineId>,
    notes: Vec<String>,
}

/// Resolves `--target-timeline`. Without it, the newest timeline, unless histories diverged:
/// then, of the branch ends (timelines no other branched from, and parents that went on after a
/// child branched), the one whose last archived transaction is the newest (ties: the higher
/// timeline). With diverged histories the choice is explained, naming the other branch ends and
/// the flag that follows them.
fn choose_timeline(
    input: &PlanInput<'_>,
    timeline: TargetTimeline,
    chosen_backup: Option<&BackupManifest>,
) -> TimelineChoice {
    let tlis: std::collections::BTreeSet<TimeLineId> =
        input.summaries.keys().map(|(t, _)| *t).chain(input.histories.keys().copied()).collect();
    let newest = tlis.iter().copied().max().unwrap_or(TimeLineId::FIRST);
    let diverged = divergences(input.summaries, input.histories);
    let parents: std::collections::BTreeSet<TimeLineId> =
        input.histories.values().filter_map(|h| h.ancestors.last().map(|a| a.tli)).collect();
    let ends: Vec<TimeLineId> = tlis
        .iter()
        .copied()
        .filter(|t| !parents.contains(t) || diverged.iter().any(|d| d.parent == *t))
        .collect();
    let last_xact = |t: TimeLineId| {
        input
            .summaries
            .values()
            .filter(|s| s.timeline == t && !s.is_partial())
            .filter_map(|s| s.last_xact_time_us)
            .max()
    };
    let (tli, why) = match timeline {
        TargetTimeline::Default if !diverged.is_empty() => {
            let t = ends.iter().copied().max_by_key(|t| (last_xact(*t), *t)).unwrap_or(newest);
            let why = match last_xact(t) {
                Some(us) => format!(
                    "the branch whose last archived transaction ({}) is the newest",
                    PgTimestamp::from_unix_micros(us)
                ),
                None => "the highest branch: no branch has an archived transaction".to_string(),
            };
            (t, why)
        }
        TargetTimeline::Default => (newest, String::new()),
        TargetTimeline::Latest => (newest, "the highest timeline, --target-timeline latest".into()),
        TargetTimeline::Id(n) => (n, format!("--target-timeline {}", n.get())),
        TargetTimeline::Current => {
            let t = match chosen_backup {
                Some(b) => b.timeline,
                None => input.backups.last().map_or(TimeLineId::FIRST, |b| b.timeline),
            };
            (t, "the backup's timeline, --target-timeline current".into())
        }
    };
    let mut notes = Vec::new();
    let mut other_branches = Vec::new();
    if !diverged.is_empty() {
        for d in &diverged {
            notes.push(format!("histories diverged: {d}"));
        }
        other_branches = ends.iter().copied().filter(|t| *t != tli).collect();
        let others = other_branches
            .iter()
            .map(|t| format!("timeline {t} (--target-timeline {t})", t = t.get()))
            .collect::<Vec<_>>()
            .join(", ");
        notes.push(format!(
            "following timeline {} ({why}); {}",
            tli.get(),
            if others.is_empty() {
                "no other branch ends elsewhere".to_string()
            } else {
                format!("the other branch ends on {others}")
            }
        ));
    }
    TimelineChoice { tli, diverged, other_branches, notes }
}

/// The timelines other than the path's whose archived segments hold what `hit` looks for, as
/// a hint for a refusal: `; timeline 1 holds it (--target-timeline 1)`.
fn elsewhere(
    input: &PlanInput<'_>,
    on_path: &dyn Fn(&SegmentSummary) -> bool,
    hit: &dyn Fn(&SegmentSummary) -> bool,
) -> String {
    let tlis: std::collections::BTreeSet<TimeLineId> = input
        .summaries
        .values()
        .filter(|s| !s.is_partial() && !on_path(s) && hit(s))
        .map(|s| s.timeline)
        .collect();
    tlis.iter()
        .map(|t| format!("; timeline {t} holds it (--target-timeline {t})", t = t.get()))
        .collect::<String>()
}

/// The LSN of the commit or abort record of `xid` in segment `s`, from its summary; `None` for
/// a summary written before the index recorded these LSNs (then the segment's start is a safe
/// lower bound).
fn xact_lsn(s: &SegmentSummary, xid: u32) -> Option<Lsn> {
    if s.xid_lsns.len() != s.xids.len() {
        return None;
    }
    s.xids.iter().position(|x| *x == xid).and_then(|i| s.xid_lsns.get(i).copied())
}

/// The timeline path to the target timeline and the archived segments replay reads along it.
struct OnPath<'a> {
    /// The target timeline.
    tli: TimeLineId,
    /// Its ancestry (`expectedTLEs`).
    path: ExpectedTimelines,
    seg: WalSegSize,
    /// The archived segments on the path, in LSN order, from the index: exactly the ones replay
    /// reads, so no record of a parent timeline after its switch point is counted. `.partial`
    /// segments never are: restore_command is never asked for them.
    segs: Vec<&'a SegmentSummary>,
}

impl<'a> OnPath<'a> {
    /// The path to `tli`; a timeline the archive knows nothing of is refused.
    fn new(input: &PlanInput<'a>, tli: TimeLineId) -> Result<Self> {
        if tli.get() > 1
            && !input.histories.contains_key(&tli)
            && input.summaries.keys().all(|(t, _)| *t != tli)
        {
            return Err(refuse(format!("timeline {} is not in the archive", tli.get())));
        }
        let path = ExpectedTimelines::new(tli, input.histories.get(&tli));
        let mut on = OnPath { tli, path, seg: input.seg_size, segs: Vec::new() };
        on.segs = input.summaries.values().filter(|s| on.holds(s)).collect();
        Ok(on)
    }

    /// The timeline PostgreSQL reads segment `n` from along the path.
    fn segment_timeline(&self, n: XLogSegNo) -> TimeLineId {
        self.path.segment_timeline(n, self.seg, None).unwrap_or(self.tli)
    }

    /// Whether replay reads the segment `s` summarises.
    fn holds(&self, s: &SegmentSummary) -> bool {
        !s.is_partial() && s.timeline == self.segment_timeline(s.segno)
    }
}

/// What the target resolves to on the path.
struct Resolved<'a> {
    /// Where replay must get to; `None` for the end of the backup.
    lsn: Option<Lsn>,
    /// The target as the plan states it.
    desc: String,
    /// The commit (or abort) record of a target xid: a backup must be consistent before it.
    xid_pos: Option<Lsn>,
    /// A restore point name may be used more than once: PostgreSQL stops at the first one it
    /// replays, which depends on where replay starts (the backup's start). Every one on the
    /// path, in LSN order.
    name_hits: Vec<(Lsn, &'a SegmentSummary)>,
    /// Where the archive says recovery reaches the target: the segment and the record that
    /// marks it, when the index tells.
    stop_at: (Option<WalFileName>, Option<Lsn>),
}

impl Resolved<'_> {
    /// The first use of the target name at or after `from`.
    fn first_name_from(&self, from: Lsn) -> Option<&(Lsn, &SegmentSummary)> {
        self.name_hits.iter().find(|(l, _)| *l >= from)
    }
}

/// Resolves the target on the path; a target the archive cannot prove reachable is refused.
fn resolve_target<'a>(
    input: &PlanInput<'a>,
    on: &OnPath<'a>,
    target: &Target,
    inclusive: bool,
) -> Result<Resolved<'a>> {
    let tli = on.tli.get();
    let path_segs = &on.segs;
    let on_path = |s: &SegmentSummary| on.holds(s);
    let name_hits: Vec<(Lsn, &SegmentSummary)> = match target {
        Target::Name(n) => {
            let mut v: Vec<(Lsn, &SegmentSummary)> = path_segs
                .iter()
                .flat_map(|s| {
                    s.restore_points.iter().filter(|r| r.name == *n).map(move |r| (r.lsn, *s))
                })
                .collect();
            v.sort_by_key(|(l, _)| *l);
            v
        }
        _ => Vec::new(),
    };
    let mut xid_pos: Option<Lsn> = None;
    let mut stop_at: (Option<WalFileName>, Option<Lsn>) = (None, None);
    let (lsn, desc): (Option<Lsn>, String) = match target {
        Target::End => {
            let last = path_segs.iter().filter(|s| s.timeline == on.tli).max_by_key(|s| s.end);
            stop_at.0 = last.map(|s| s.name.clone());
            (last.map(|s| s.end), "the end of the archived WAL".into())
        }
        Target::Lsn(l) => {
            // Recovery stops at the first record at or after the target: it must be archived
            // (recoveryStopsBefore/After in xlogrecovery.c).
            let last = last_complete_record(path_segs, on.seg);
            if last.is_none_or(|r| *l > r) {
                return Err(refuse(format!(
                    "target LSN {l} is past the last archived record on the path to timeline {tli} ({}); recovery could not prove it reached the target",
                    last.map(|r| r.to_string()).unwrap_or_else(|| "none".into())
                )));
            }
            match path_segs.iter().find(|s| s.last_record.is_some_and(|r| r >= *l)) {
                Some(s) => {
                    stop_at.0 = Some(s.name.clone());
                    (Some(s.end.max(l.saturating_add(1))), format!("LSN {l} (in {})", s.name))
                }
                None => (Some(*l), format!("LSN {l}")),
            }
        }
        Target::Immediate => (None, "the end of the backup (immediate)".into()),
        Target::Time(us) => {
            // Recovery stops at the first transaction end after the target: it must be archived.
            let after = |s: &SegmentSummary| {
                s.last_xact_time_us.is_some_and(|t| if inclusive { t > *us } else { t >= *us })
            };
            let hit = path_segs.iter().find(|s| after(s));
            match hit {
                Some(s) => {
                    stop_at.0 = Some(s.name.clone());
                    (
                        Some(s.end),
                        format!(
                            "time {} (stops in {})",
                            PgTimestamp::from_unix_micros(*us),
                            s.name
                        ),
                    )
                }
                None => {
                    let last = path_segs.iter().filter_map(|s| s.last_xact_time_us).max();
                    return Err(refuse(format!(
                        "target time {} is after the last archived transaction on the path to timeline {tli} ({}); recovery could not prove it reached the target{}; no target recovers to the end of the archive (restore without --target-time)",
                        PgTimestamp::from_unix_micros(*us),
                        last.map(|t| PgTimestamp::from_unix_micros(t).to_string())
                            .unwrap_or_else(|| "none".into()),
                        elsewhere(input, &on_path, &after)
                    ))
                    .hint("later transactions may still be in the server's current WAL segment, which PostgreSQL archives only when it fills or when archive_timeout forces a switch: set archive_timeout (pgconf-templates/archive.conf), or run SELECT pg_switch_wal() on the server, then plan again"));
                }
            }
        }
        Target::Xid(x) => {
            let holds = |s: &SegmentSummary| {
                s.min_xid.is_some_and(|m| m <= *x)
                    && s.max_xid.is_some_and(|m| m >= *x)
                    && (s.xids.is_empty() || s.xids.contains(x))
            };
            match path_segs.iter().find(|s| holds(s)) {
                Some(s) => {
                    // Without the record's LSN (a summary of an older walrs), the segment's
                    // start: a backup that ends before it is consistent before the record.
                    let at = xact_lsn(s, *x);
                    xid_pos = Some(at.unwrap_or(s.start));
                    stop_at = (Some(s.name.clone()), at);
                    let desc = match at {
                        Some(l) => format!("xid {x} (ends at {l} in {})", s.name),
                        None => format!("xid {x} (ends in {})", s.name),
                    };
                    (Some(s.end), desc)
                }
                None => {
                    return Err(refuse(format!(
                        "no commit or abort of xid {x} is in the archive on the path to timeline {tli}{}",
                        elsewhere(input, &on_path, &holds)
                    )));
                }
            }
        }
        Target::Name(n) => match name_hits.as_slice() {
            [] => {
                let named = |s: &SegmentSummary| s.restore_points.iter().any(|r| r.name == *n);
                return Err(refuse(format!(
                    "restore point {n:?} is not in the archive on the path to timeline {tli}{}",
                    elsewhere(input, &on_path, &named)
                )));
            }
            [(l, s)] => {
                stop_at = (Some(s.name.clone()), Some(*l));
                (Some(l.saturating_add(1)), format!("restore point {n:?} at {l} (in {})", s.name))
            }
            [(l, s), ..] => {
                stop_at = (Some(s.name.clone()), Some(*l));
                (
                    Some(l.saturating_add(1)),
                    format!("restore point {n:?} (used {} times, first at {l})", name_hits.len()),
                )
            }
        },
    };
    Ok(Resolved { lsn, desc, xid_pos, name_hits, stop_at })
}

/// The backup given by `--backup ID` (not `latest`), if any.
fn backup_by_id<'a>(
    input: &PlanInput<'a>,
    backup: Option<&str>,
) -> Result<Option<&'a BackupManifest>> {
    match backup {
        Some(id) if id != "latest" => input
            .backups
            .iter()
            .find(|b| b.id == id)
            .map(Some)
            .ok_or_else(|| refuse(format!("no complete backup {id}"))),
        _ => Ok(None),
    }
}

/// The backup: the one given, or the newest complete one on the path whose end is before the
/// target. Usable for the target timeline only if the WAL from its start to its stop lies on the
/// path: it started on its timeline before that timeline's switch point, and stopped on its stop
/// timeline at or before that one's switch point. And it must be consistent before recovery
/// stops: PostgreSQL checks the target from the backup's start on, and a stop before the
/// backup's end is fatal ("requested recovery stop point is before consistent recovery point"),
/// so the record recovery stops at must lie at or after the backup's stop.
fn choose_backup<'a>(
    input: &PlanInput<'a>,
    on: &OnPath<'_>,
    target: &Target,
    resolved: &Resolved<'_>,
    chosen_by_id: Option<&'a BackupManifest>,
) -> Result<&'a BackupManifest> {
    let tli = on.tli.get();
    let target_desc = &resolved.desc;
    // An incremental backup is usable only with its whole chain complete and consistent.
    let chain_ok = |b: &BackupManifest| -> std::result::Result<(), String> {
        crate::repo::manifest::chain_members(input.backups, b).map(|_| ())
    };
    let usable = |b: &&BackupManifest| -> bool {
        if chain_ok(b).is_err() {
            return false;
        }
        if on.path.timeline_of(b.start_lsn) != b.timeline {
            return false;
        }
        if on.path.timeline_of(b.stop_lsn.saturating_sub(1)) != b.stop_timeline {
            return false;
        }
        match target {
            Target::Time(us) => b.stop_time_us <= *us,
            Target::Immediate | Target::End => true,
            Target::Lsn(l) => b.stop_lsn <= *l,
            Target::Xid(_) => resolved.xid_pos.is_some_and(|p| b.stop_lsn <= p),
            // The first use of the name replay meets from the backup's start.
            Target::Name(_) => {
                resolved.first_name_from(b.start_lsn).is_some_and(|(l, _)| b.stop_lsn <= *l)
            }
        }
    };
    if let Some(b) = chosen_by_id {
        if let Err(why) = chain_ok(b) {
            return Err(refuse(format!(
                "{why}: an incremental backup restores only with its whole chain"
            )));
        }
        if !usable(&b) {
            return Err(refuse(format!(
                "backup {} cannot reach {target_desc} on timeline {tli}: it ends at {} ({}) on timeline {}",
                b.id,
                b.stop_lsn,
                b.stop_time,
                b.timeline.get()
            )));
        }
        return Ok(b);
    }
    match input.backups.iter().filter(usable).max_by_key(|b| (b.stop_lsn, b.stop_time_us)) {
        Some(b) => Ok(b),
        None => {
            let first = input
                .backups
                .first()
                .map(|b| format!("{} ends at {} ({})", b.id, b.stop_lsn, b.stop_time))
                .unwrap_or_default();
            Err(refuse(format!(
                "no backup ends before {target_desc} on the path to timeline {tli} (the earliest, {first})"
            )))
        }
    }
}

/// A restore point name used more than once: the target is its first use at or after the chosen
/// backup's start, and a note says so. Other targets stay as resolved.
fn first_use_from_backup(
    target: &Target,
    resolved: &Resolved<'_>,
    b: &BackupManifest,
    notes: &mut Vec<String>,
) -> (Option<Lsn>, String, (Option<WalFileName>, Option<Lsn>)) {
    match (target, resolved.first_name_from(b.start_lsn)) {
        (Target::Name(n), Some((l, s))) if resolved.name_hits.len() > 1 => {
            let all = resolved
                .name_hits
                .iter()
                .map(|(l, _)| l.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            notes.push(format!(
                "restore point {n:?} is used {} times on the path (at {all}): PostgreSQL stops at the first one it replays, at {l}, the first at or after the start of backup {} ({}); another backup (--backup) reaches another",
                resolved.name_hits.len(),
                b.id,
                b.start_lsn
            ));
            (
                Some(l.saturating_add(1)),
                format!("restore point {n:?} at {l} (in {})", s.name),
                (Some(s.name.clone()), Some(*l)),
            )
        }
        _ => (resolved.lsn, resolved.desc.clone(), resolved.stop_at.clone()),
    }
}

/// The target of a plan as data (`target` in `restore --json`).
fn plan_target(
    target: &Target,
    inclusive: bool,
    stop_at: (Option<WalFileName>, Option<Lsn>),
    name_uses: usize,
    description: &str,
) -> PlanTarget {
    PlanTarget {
        kind: match target {
            Target::End => "end",
            Target::Immediate => "immediate",
            Target::Time(_) => "time",
            Target::Lsn(_) => "lsn",
            Target::Xid(_) => "xid",
            Target::Name(_) => "name",
        },
        time: match target {
            Target::Time(us) => Some(PgTimestamp::from_unix_micros(*us)),
            _ => None,
        },
        lsn: match target {
            Target::Lsn(l) => Some(*l),
            _ => None,
        },
        xid: match target {
            Target::Xid(x) => Some(*x),
            _ => None,
        },
        name: match target {
            Target::Name(n) => Some(n.clone()),
            _ => None,
        },
        inclusive,
        stop_wal: stop_at.0,
        record_lsn: stop_at.1,
        name_uses: matches!(target, Target::Name(_)).then_some(name_uses),
        description: description.to_owned(),
    }
}

/// Proves the WAL replay needs, from the backup's start to the target (or the backup's stop), is
/// archived along the path: every segment present, full and undamaged. Returns the segments in
/// order and the bytes to fetch (the backup's and theirs).
fn prove_wal_path(
    input: &PlanInput<'_>,
    on: &OnPath<'_>,
    b: &BackupManifest,
    target: &Target,
    target_lsn: Option<Lsn>,
    target_desc: &str,
) -> Result<(Vec<WalFileName>, u64)> {
    let seg = on.seg;
    let end_lsn = match target {
        Target::Immediate => b.stop_lsn,
        _ => target_lsn.unwrap_or(b.stop_lsn).max(b.stop_lsn),
    };
    let first = b.start_lsn.segment(seg);
    let last = end_lsn.saturating_sub(1).segment(seg);
    let mut segments = Vec::new();
    let mut bytes = b.bytes;
    for n in (first.0..=last.0).map(XLogSegNo) {
        let tl = on.segment_timeline(n);
        let name = WalFileName::segment(tl, n, seg);
        match input.summaries.get(&(tl, n)) {
            None => {
                return Err(refuse(format!(
                    "{name} is missing from the archive: replay from backup {} to {target_desc} needs every segment from {} to {}",
                    b.id,
                    WalFileName::segment(b.timeline, first, seg),
                    WalFileName::segment(on.tli, last, seg)
                )));
            }
            Some(s) if s.is_partial() => {
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
            Some(s) => bytes += s.seg_size.bytes(),
        }
        segments.push(name);
    }
    Ok((segments, bytes))
}

/// The stretches of the path replay from backup `b` follows: the timelines from the backup's
/// on, each from where it began (or the backup's start) to its switch point.
fn path_steps(on: &OnPath<'_>, b: &BackupManifest) -> Vec<PathStep> {
    on.path
        .oldest_first()
        .filter(|s| s.end.is_none_or(|to| to > b.start_lsn) && s.tli >= b.timeline)
        .map(|s| PathStep {
            tli: s.tli,
            from: s.begin.map_or(b.start_lsn, |f| f.max(b.start_lsn)),
            to: s.end,
        })
        .collect()
}

/// Plans a recovery (see the module docs): the target timeline and its path, the target on
/// it, the backup, then the proof that the WAL between them is archived.
pub fn plan(
    input: &PlanInput<'_>,
    target: &Target,
    timeline: TargetTimeline,
    backup: Option<&str>,
    inclusive: bool,
) -> Result<Plan> {
    if input.backups.is_empty() {
        return Err(refuse("the repository holds no complete backup"));
    }
    let chosen_by_id = backup_by_id(input, backup)?;
    let TimelineChoice { tli, diverged, other_branches, mut notes } =
        choose_timeline(input, timeline, chosen_by_id);
    let on = OnPath::new(input, tli)?;
    let resolved = resolve_target(input, &on, target, inclusive)?;
    let b = choose_backup(input, &on, target, &resolved, chosen_by_id)?;
    let (target_lsn, target_desc, mut stop_at) =
        first_use_from_backup(target, &resolved, b, &mut notes);
    let (segments, bytes) = prove_wal_path(input, &on, b, target, target_lsn, &target_desc)?;
    if let Target::Immediate = target {
        stop_at = (segments.last().cloned(), None);
    }
    let target_data =
        plan_target(target, inclusive, stop_at, resolved.name_hits.len(), &target_desc);
    Ok(Plan {
        backup: b.id.to_string(),
        backup_stop: b.stop_lsn,
        chain: chain_of(input, b),
        path: path_steps(&on, b),
        target_timeline: tli,
        target: target_desc,
        target_data,
        first_segment: segments.first().cloned(),
        last_segment: segments.last().cloned(),
        segments,
        bytes,
        diverged,
        other_branches,
        notes,
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
            name: WalFileName::segment(tl(t), XLogSegNo(n), WalSegSize::DEFAULT),
            timeline: tl(t),
            segno: XLogSegNo(n),
            start: Lsn(n * M),
            seg_size: WalSegSize::DEFAULT,
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
            xid_lsns: vec![],
            restore_points: vec![],
            checkpoints: vec![],
            backup_ends: vec![],
            end_of_recovery: vec![],
            error: None,
            content_digest: String::new(),
            block_map: None,
        }
    }

    fn full(t: u32, n: u64) -> SegmentSummary {
        seg(t, n, (n + 1) * M - 0x100, (n + 1) * M, EndKind::Full)
    }

    /// The backups of the tests, by the letters they were known by.
    const A: &str = "20261121T000000Z";
    const B: &str = "20261122T000000Z";
    const C: &str = "20261123T000000Z";
    const L: &str = "20261124T000000Z";

    fn backup(id: &str, t: u32, start: u64, stop: u64, stop_t: u32, time: i64) -> BackupManifest {
        BackupManifest {
            format_version: 1,
            id: id.parse().unwrap(),
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
            backup_type: Default::default(),
            parent: None,
            chain: Vec::new(),
            incremental: None,
        }
    }

    fn index(segs: Vec<SegmentSummary>) -> BTreeMap<(TimeLineId, XLogSegNo), SegmentSummary> {
        segs.into_iter().map(|s| ((s.timeline, s.segno), s)).collect()
    }

    /// The last segment of a plan, as a string.
    fn last(p: &Plan) -> &str {
        p.last_segment.as_ref().map_or("", WalFileName::as_str)
    }

    /// Timeline 2 branches from timeline 1 at 0/3800000, in the middle of segment 3; timeline
    /// 1 went on to segment 4.
    const SWITCH: u64 = 3 * M + 0x80_0000;

    fn histories() -> BTreeMap<TimeLineId, TimelineHistory> {
        let h = TimelineHistory::parse(
            tl(2),
            format!("1\t{}\tno recovery target\n", Lsn(SWITCH)).as_bytes(),
        )
        .unwrap();
        BTreeMap::from([(tl(2), h)])
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
        let backups = [backup(A, 1, M + 0x28, M + 0x100, 1, 1000)];
        // Timeline 1's segment 3 has a commit after the switch point (at time 9000); timeline
        // 2's copy of segment 3 and its segment 4 have nothing after 4000.
        let mut segs = branched();
        for s in &mut segs {
            if (s.timeline.get(), s.segno.0) == (1, 3) {
                s.last_xact_time_us = Some(9000);
                s.restore_points.push(crate::index::summary::RestorePointEntry {
                    name: "on-1-after-switch".into(),
                    lsn: Lsn(SWITCH + 0x1000),
                    time_us: 9000,
                });
            }
            if (s.timeline.get(), s.segno.0) == (2, 3) {
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
        let p =
            run(&backups, segs.clone(), &Target::Time(4000), TargetTimeline::Id(tl(1))).unwrap();
        assert_eq!(last(&p), "000000010000000000000003");
        // And a time before the switch on timeline 2 is read from timeline 2's copy.
        let p = run(&backups, segs, &Target::Time(2000), TargetTimeline::Latest).unwrap();
        assert_eq!(
            p.segments,
            ["000000010000000000000001", "000000010000000000000002", "000000020000000000000003"]
        );
        assert_eq!(p.target_timeline, tl(2));
    }

    #[test]
    fn issue_5_a_backup_across_the_switch_point_is_not_on_the_child_timeline() {
        // B starts on timeline 1 before the switch point and stops after it, still on 1.
        let backups = [
            backup(A, 1, M + 0x28, M + 0x100, 1, 1000),
            backup(B, 1, 3 * M + 0x28, SWITCH + 0x1000, 1, 5000),
        ];
        let p = run(&backups, branched(), &Target::End, TargetTimeline::Latest).unwrap();
        assert_eq!(p.backup, A, "{p:?}");
        assert_eq!(p.target_timeline, tl(2));
        // On timeline 1 it is the newest usable one.
        let p = run(&backups, branched(), &Target::End, TargetTimeline::Id(tl(1))).unwrap();
        assert_eq!(p.backup, B, "{p:?}");
        // Given by id, it is refused for timeline 2.
        let summaries = index(branched());
        let histories = histories();
        let input = PlanInput {
            backups: &backups,
            summaries: &summaries,
            histories: &histories,
            seg_size: WalSegSize::DEFAULT,
        };
        let e = plan(&input, &Target::End, TargetTimeline::Latest, Some(B), true).unwrap_err();
        assert_eq!(e.kind, Kind::Unreachable, "{e}");
        // A backup that ends exactly at the switch point is usable on timeline 2.
        let at = [backup(C, 1, 3 * M + 0x28, SWITCH, 1, 5000)];
        let p = run(&at, branched(), &Target::End, TargetTimeline::Latest).unwrap();
        assert_eq!(p.backup, C);
    }

    #[test]
    fn issue_5_lsn_past_the_last_archived_record_is_refused() {
        let backups = [backup(A, 1, M + 0x28, M + 0x100, 1, 1000)];
        // The last archived segment ends with a switch record at 0/2000500.
        let segs = vec![full(1, 1), seg(1, 2, 2 * M + 0x500, 2 * M + 0x518, EndKind::Switch)];
        for l in [2 * M + 0x501, 2 * M + 0x80_0000, 3 * M - 1] {
            let e = run(&backups, segs.clone(), &Target::Lsn(Lsn(l)), TargetTimeline::Id(tl(1)))
                .unwrap_err();
            assert_eq!(e.kind, Kind::Unreachable, "{e}");
            assert!(e.message.contains("past the last archived record"), "{e}");
        }
        let p = run(
            &backups,
            segs.clone(),
            &Target::Lsn(Lsn(2 * M + 0x500)),
            TargetTimeline::Id(tl(1)),
        )
        .unwrap();
        assert_eq!(last(&p), "000000010000000000000002");
        // A last record that runs into a segment not archived cannot be read.
        let cont = vec![full(1, 1), seg(1, 2, 3 * M - 0x10, 3 * M, EndKind::Continues)];
        let e =
            run(&backups, cont.clone(), &Target::Lsn(Lsn(3 * M - 0x10)), TargetTimeline::Id(tl(1)))
                .unwrap_err();
        assert_eq!(e.kind, Kind::Unreachable, "{e}");
        run(&backups, cont, &Target::Lsn(Lsn(2 * M + 0x28)), TargetTimeline::Id(tl(1))).unwrap();
        // A backup that ends after the target LSN is not chosen for it.
        let later = [backup(L, 1, M + 0x28, 2 * M + 0x100, 1, 1000)];
        let e = run(&later, segs, &Target::Lsn(Lsn(2 * M + 0x80)), TargetTimeline::Id(tl(1)))
            .unwrap_err();
        assert!(e.message.contains("no backup ends before"), "{e}");
    }

    #[test]
    fn issue_5_a_partial_segment_is_not_archived() {
        let backups = [backup(A, 1, M + 0x28, M + 0x100, 1, 1000)];
        let mut partial = full(1, 2);
        partial.name = WalFileName::parse(&format!("{}.partial", partial.name)).unwrap();
        partial.end_kind = EndKind::EndOfWal;
        let segs = vec![full(1, 1), partial, full(1, 3)];
        let e = run(&backups, segs, &Target::End, TargetTimeline::Id(tl(1))).unwrap_err();
        assert_eq!(e.kind, Kind::Unreachable, "{e}");
        assert!(e.message.contains("000000010000000000000002 is missing"), "{e}");
    }

    fn plan_with(
        backups: &[BackupManifest],
        segs: Vec<SegmentSummary>,
        histories: &BTreeMap<TimeLineId, TimelineHistory>,
        target: &Target,
        timeline: TargetTimeline,
        backup: Option<&str>,
    ) -> Result<Plan> {
        let summaries = index(segs);
        let input =
            PlanInput { backups, summaries: &summaries, histories, seg_size: WalSegSize::DEFAULT };
        plan(&input, target, timeline, backup, true)
    }

    #[test]
    fn issue_12_xid_committed_inside_a_backup_is_reached_from_the_one_before() {
        // B starts in segment 2 and stops in it; xid 7 commits between its start and stop.
        let a = backup(A, 1, M + 0x28, M + 0x100, 1, 1000);
        let b = backup(B, 1, 2 * M + 0x28, 2 * M + 0x5000, 1, 3000);
        let mut s2 = full(1, 2);
        (s2.min_xid, s2.max_xid, s2.xids, s2.xid_lsns) =
            (Some(7), Some(7), vec![7], vec![Lsn(2 * M + 0x1000)]);
        let segs = vec![full(1, 1), s2.clone(), full(1, 3)];
        let none = BTreeMap::new();
        let x = Target::Xid(7);
        let p = plan_with(
            &[a.clone(), b.clone()],
            segs.clone(),
            &none,
            &x,
            TargetTimeline::Id(tl(1)),
            None,
        )
        .unwrap();
        assert_eq!(p.backup, A, "{p:?}");
        assert!(p.target.contains("ends at 0/2001000"), "{}", p.target);
        for (backups, id) in [(vec![a.clone(), b.clone()], Some(B)), (vec![b.clone()], None)] {
            let e = plan_with(&backups, segs.clone(), &none, &x, TargetTimeline::Id(tl(1)), id)
                .unwrap_err();
            assert_eq!(e.kind, Kind::Unreachable, "{e}");
        }
        // A commit after B's stop is reached from B.
        let mut later = s2.clone();
        later.xid_lsns = vec![Lsn(2 * M + 0x6000)];
        let segs2 = vec![full(1, 1), later, full(1, 3)];
        let p =
            plan_with(&[a.clone(), b.clone()], segs2, &none, &x, TargetTimeline::Id(tl(1)), None)
                .unwrap();
        assert_eq!(p.backup, B, "{p:?}");
        // A summary without the LSNs (an older walrs): the segment's start bounds the commit.
        s2.xid_lsns.clear();
        let segs3 = vec![full(1, 1), s2, full(1, 3)];
        let p = plan_with(&[a, b], segs3, &none, &x, TargetTimeline::Id(tl(1)), None).unwrap();
        assert_eq!(p.backup, A, "{p:?}");
    }

    #[test]
    fn issue_12_restore_point_used_twice_the_first_replay_meets() {
        let point = |lsn: u64| crate::index::summary::RestorePointEntry {
            name: "daily".into(),
            lsn: Lsn(lsn),
            time_us: 0,
        };
        let mut s1 = full(1, 1);
        s1.restore_points.push(point(M + 0x500));
        let mut s3 = full(1, 3);
        s3.restore_points.push(point(3 * M + 0x500));
        let b = backup(B, 1, 2 * M + 0x28, 2 * M + 0x100, 1, 3000);
        let segs = vec![s1.clone(), full(1, 2), s3.clone(), full(1, 4)];
        let none = BTreeMap::new();
        let n = Target::Name("daily".into());
        let p =
            plan_with(std::slice::from_ref(&b), segs, &none, &n, TargetTimeline::Id(tl(1)), None)
                .unwrap();
        assert_eq!((p.backup.as_str(), last(&p)), (B, "000000010000000000000003"));
        assert!(p.target.contains("at 0/3000500"), "{}", p.target);
        assert!(p.notes.iter().any(|n| n.contains("used 2 times")), "{:?}", p.notes);
        // A third use inside B's window: replay from B stops there, before B is consistent; A,
        // older, reaches the first use.
        let mut s2 = full(1, 2);
        s2.restore_points.push(point(2 * M + 0x80));
        let a = backup(A, 1, M + 0x28, M + 0x100, 1, 1000);
        let segs = vec![s1, s2, s3, full(1, 4)];
        let p =
            plan_with(&[a, b.clone()], segs.clone(), &none, &n, TargetTimeline::Id(tl(1)), None)
                .unwrap();
        assert_eq!((p.backup.as_str(), last(&p)), (A, "000000010000000000000001"));
        let e = plan_with(&[b], segs, &none, &n, TargetTimeline::Id(tl(1)), None).unwrap_err();
        assert_eq!(e.kind, Kind::Unreachable, "{e}");
    }

    /// Timeline 2 began where its recovery ran out of WAL (0/3800000); timeline 1 went on to
    /// segment 6, with later transactions than timeline 2's.
    fn diverged() -> (BTreeMap<TimeLineId, TimelineHistory>, Vec<SegmentSummary>) {
        let h = TimelineHistory::parse(
            tl(2),
            format!("1\t{}\tno recovery target specified\n", Lsn(SWITCH)).as_bytes(),
        )
        .unwrap();
        let mut segs = vec![full(1, 1), full(1, 2), full(2, 3), full(2, 4)];
        for n in 3..=6 {
            let mut s = full(1, n);
            s.last_xact_time_us = Some(i64::try_from(n).unwrap() * 2000);
            segs.push(s);
        }
        for s in &mut segs {
            if s.timeline == tl(2) {
                s.last_xact_time_us = Some(5000);
            }
        }
        (BTreeMap::from([(tl(2), h)]), segs)
    }

    #[test]
    fn issue_12_diverged_histories_are_named_and_the_default_follows_the_one_that_went_on() {
        let (hist, segs) = diverged();
        let backups = [backup(A, 1, M + 0x28, M + 0x100, 1, 1000)];
        let end = Target::End;
        let p =
            plan_with(&backups, segs.clone(), &hist, &end, TargetTimeline::Default, None).unwrap();
        assert_eq!(p.target_timeline, tl(1), "{p:?}");
        assert_eq!(last(&p), "000000010000000000000006");
        assert_eq!(p.other_branches, [tl(2)]);
        assert_eq!((p.diverged[0].parent, p.diverged[0].child), (tl(1), tl(2)));
        assert!(p.notes.iter().any(|n| n.contains("--target-timeline 2")), "{:?}", p.notes);
        // latest is PostgreSQL's: the highest timeline, and the plan names the other branch.
        let p =
            plan_with(&backups, segs.clone(), &hist, &end, TargetTimeline::Latest, None).unwrap();
        assert_eq!((p.target_timeline, p.other_branches.as_slice()), (tl(2), &[tl(1)][..]));
        // A time only timeline 1 reaches, asked for on timeline 2: the refusal names timeline 1.
        let e = plan_with(
            &backups,
            segs.clone(),
            &hist,
            &Target::Time(9000),
            TargetTimeline::Id(tl(2)),
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("timeline 1 holds it (--target-timeline 1)"), "{e}");
        // Timeline 0 cannot reach the planner: `TargetTimeline::Id` holds a `TimeLineId`, which
        // refuses 0, and `--target-timeline 0` is a usage error on the command line
        // (tests/guard_rails.rs).
        assert!(TimeLineId::new(0).is_err());
    }

    #[test]
    fn issue_12_a_recovery_to_an_earlier_point_is_not_divergence() {
        // Timeline 2 recovered to a target before the end of timeline 1, whose later WAL (and
        // transactions) predate timeline 2: nothing diverged, the default is the newest timeline.
        let h = TimelineHistory::parse(
            tl(2),
            format!("1\t{}\tbefore 2026-11-21 16:00:00+00\n", Lsn(SWITCH)).as_bytes(),
        )
        .unwrap();
        let hist = BTreeMap::from([(tl(2), h)]);
        let mut segs = vec![full(1, 1), full(1, 2), full(1, 3), full(1, 4), full(1, 5)];
        segs[4].last_xact_time_us = Some(4000);
        let mut t2 = vec![full(2, 3), full(2, 4), full(2, 5)];
        t2[2].first_xact_time_us = Some(9000);
        t2[2].last_xact_time_us = Some(9000);
        segs.extend(t2);
        let summaries = index(segs.clone());
        assert!(divergences(&summaries, &hist).is_empty());
        let backups = [backup(A, 1, M + 0x28, M + 0x100, 1, 1000)];
        let p =
            plan_with(&backups, segs.clone(), &hist, &Target::End, TargetTimeline::Default, None)
                .unwrap();
        assert_eq!(p.target_timeline, tl(2));
        assert!(p.notes.is_empty() && p.other_branches.is_empty(), "{p:?}");
        // The same timeline 1 with a transaction after timeline 2's first: diverged.
        segs[4].last_xact_time_us = Some(9500);
        let d = divergences(&index(segs), &hist);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].evidence.contains("after timeline 2 began"), "{}", d[0].evidence);
    }
}
