//! The operator's view of a repository, shared by `walrs status` and `walrs metrics`
//! (docs/commands/status.md, docs/commands/metrics.md): per timeline the archived range, its gaps
//! and the recoverable window, the last archived segment and its age, the backups, the binlogs'
//! last stored event.
//!
//! Everything comes from the catalogue (`manifest.json` of each backup), the WAL index (group
//! roll-ups read as briefs, [`index::load_briefs`]), the `.history` files, one `HEAD` of the last segment of each
//! timeline (the time it was archived) and the binlog part and metadata names: never a listing
//! of every WAL object, so the answer takes milliseconds on a repository of 100,000 segments
//! (docs/benchmarks.md). [`gather`] reads, [`compute`] is pure and unit-tested; [`metrics`]
//! renders the Prometheus text exposition format from the same [`Status`].

pub mod check;
pub mod metrics;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::backup::BackupManifest;
use crate::error::Result;
use crate::index::{self, SegmentBrief, SegmentFacts, verify};
use crate::pg::history::ExpectedTimelines;
use crate::pg::{
    Lsn, PgMajorVersion, PgTimestamp, SystemId, TimeLineId, WalFileName, WalSegSize, XLogSegNo,
};
use crate::repo::{RepoConfig, Repository, WalFile};

/// What `walrs status` reports (its `--json` document, docs/json.md).
#[derive(Serialize, Clone, Debug)]
pub struct Status {
    /// The repository, as walrs names it in messages.
    pub repository: String,
    /// When the status was taken (RFC 3339, UTC).
    pub time: String,
    /// The cluster the repository's WAL belongs to (`None`: a binlog-only repository).
    pub system_identifier: Option<SystemId>,
    /// Its major version.
    pub pg_version: Option<PgMajorVersion>,
    /// Per timeline, oldest first.
    pub timelines: Vec<TimelineStatus>,
    /// The most recently archived segment.
    pub last_archived: Option<LastArchived>,
    /// The backup catalogue.
    pub backups: BackupsStatus,
    /// The binlogs stored in the repository, if any.
    pub binlog: Option<BinlogStatus>,
    /// The restore drills recorded (`walrs drill`): `None` when there are none.
    pub drill: Option<DrillStatus>,
    /// Unix seconds of `time` (for the metrics).
    #[serde(skip)]
    pub now_unix: f64,
    /// The WAL segment size in bytes (for the metrics).
    #[serde(skip)]
    pub wal_segment_bytes: Option<u64>,
}

/// The restore drills of the repository: the last one and the last that passed.
#[derive(Serialize, Clone, Debug)]
pub struct DrillStatus {
    /// Drill records in the repository.
    pub count: usize,
    /// The newest drill, passed or failed.
    pub last: DrillBrief,
    /// The newest drill that passed (`None`: none did).
    pub last_success: Option<DrillBrief>,
    /// Seconds since the newest passing drill ended.
    pub last_success_age_seconds: Option<f64>,
}

/// One drill, as `status` shows it (the whole record: `walrs drill list --json`).
#[derive(Serialize, Clone, Debug)]
pub struct DrillBrief {
    /// The drill's id.
    pub id: String,
    /// `pass` or `fail`.
    pub result: String,
    /// The failing check, `None` when it passed.
    pub failed_check: Option<String>,
    /// When it started and ended (RFC 3339, UTC).
    pub start_time: String,
    /// See `start_time`.
    pub stop_time: String,
    /// The backup it restored.
    pub backup: Option<String>,
    /// The target time it recovered to (`None`: the end of the archive).
    pub target_time: Option<String>,
    /// Its recovery time objective: restore, recovery and checks together.
    pub rto_seconds: f64,
    /// Unix seconds of `stop_time` (for the metrics).
    #[serde(skip)]
    pub stop_unix: Option<f64>,
}

impl DrillBrief {
    fn of(r: &crate::drill::DrillRecord) -> DrillBrief {
        DrillBrief {
            id: r.id.clone(),
            result: r.result.clone(),
            failed_check: r.failed_check.clone(),
            start_time: r.start_time.clone(),
            stop_time: r.stop_time.clone(),
            backup: r.backup.clone(),
            target_time: r.target.time.clone(),
            rto_seconds: r.rto.total_seconds,
            stop_unix: crate::timefmt::parse_timestamp(&r.stop_time).ok().map(|us| us as f64 / 1e6),
        }
    }
}

/// One timeline.
#[derive(Serialize, Clone, Debug)]
pub struct TimelineStatus {
    /// The timeline.
    pub timeline: TimeLineId,
    /// The timeline it branched from (`None` for the first, or without a `.history` file).
    pub parent: Option<TimeLineId>,
    /// Where it branched off its parent.
    pub switchpoint: Option<Lsn>,
    /// The first archived segment.
    pub first_wal: Option<WalFileName>,
    /// The last archived segment.
    pub last_wal: Option<WalFileName>,
    /// Archived segments (`.partial` segments not counted).
    pub segments: u64,
    /// The first byte of the first segment.
    pub start_lsn: Option<Lsn>,
    /// The end of valid WAL in the last segment.
    pub end_lsn: Option<Lsn>,
    /// The last commit or abort archived on this timeline.
    pub last_xact_time: Option<PgTimestamp>,
    /// When the last segment was archived (its object's modification time), if known.
    pub last_archived_time: Option<String>,
    /// Missing segments between archived ones.
    pub gaps: Vec<verify::Gap>,
    /// `.partial` segments.
    pub partials: Vec<WalFileName>,
    /// Segments the index marks as damaged.
    pub damaged: Vec<WalFileName>,
    /// What a restore along this timeline can reach.
    pub recovery_window: Option<RecoveryWindow>,
}

/// The span of time a point-in-time restore along one timeline can reach: from the end of the
/// oldest backup whose WAL continues without a gap to the furthest archived point, to the last
/// commit or abort archived there.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct RecoveryWindow {
    /// The backup that opens the window.
    pub backup: String,
    /// Its end: the earliest reachable point.
    pub start_time: String,
    /// Its stop LSN.
    pub start_lsn: Lsn,
    /// The last archived commit or abort the WAL reaches (the backup's end when none is later).
    pub end_time: String,
    /// The end of the WAL without a gap from the backup.
    pub end_lsn: Lsn,
    /// The last segment of that WAL.
    pub last_wal: WalFileName,
    /// `start_time` in Unix seconds (for the metrics).
    #[serde(skip)]
    pub start_unix: f64,
    /// `end_time` in Unix seconds.
    #[serde(skip)]
    pub end_unix: f64,
}

/// The segment archived last.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct LastArchived {
    /// Its name.
    pub wal: WalFileName,
    /// Its timeline.
    pub timeline: TimeLineId,
    /// When it was archived (its object's modification time); `None` when the store keeps no
    /// time.
    pub archived_time: Option<String>,
    /// Seconds since then.
    pub age_seconds: Option<f64>,
    /// `archived_time` in Unix seconds (for the metrics).
    #[serde(skip)]
    pub archived_unix: Option<f64>,
}

/// The backup catalogue, summed up.
#[derive(Serialize, Clone, Debug, Default)]
pub struct BackupsStatus {
    /// Complete backups.
    pub count: usize,
    /// Backups without a manifest (interrupted, never restorable).
    pub incomplete: usize,
    /// Plaintext bytes of all complete backups.
    pub bytes: u64,
    /// Bytes they take in the repository.
    pub stored_bytes: u64,
    /// The backup that ended first.
    pub oldest: Option<BackupBrief>,
    /// The backup that ended last.
    pub newest: Option<BackupBrief>,
}

/// One backup in the summary.
#[derive(Serialize, Clone, Debug)]
pub struct BackupBrief {
    /// Its id.
    pub id: String,
    /// `full` (every walrs backup so far is a full backup).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The timeline at its start.
    pub timeline: TimeLineId,
    /// When it started.
    pub start_time: String,
    /// When it ended.
    pub stop_time: String,
    /// How long it took, in seconds (`None` when its start time does not parse).
    pub duration_seconds: Option<f64>,
    /// Plaintext bytes.
    pub bytes: u64,
    /// Stored bytes.
    pub stored_bytes: u64,
    /// `stop_time` in Unix seconds (for the metrics).
    #[serde(skip)]
    pub stop_unix: f64,
}

/// The binlogs of the repository.
#[derive(Serialize, Clone, Debug)]
pub struct BinlogStatus {
    /// `mariadb` or `mysql`.
    pub flavour: String,
    /// The source server's `server_id`.
    pub server_id: u32,
    /// The binlog base name.
    pub basename: String,
    /// The file holding the newest stored event.
    pub last_file: Option<String>,
    /// Whether that file is closed.
    pub last_file_closed: Option<bool>,
    /// The newest stored event's timestamp.
    pub last_event_time: Option<String>,
    /// Seconds since then.
    pub last_event_age_seconds: Option<f64>,
    /// Recorded gaps (binlogs the server purged before walrs stored them).
    pub gaps: usize,
    /// `last_event_time` in Unix seconds (for the metrics).
    #[serde(skip)]
    pub last_event_unix: Option<f64>,
}

/// What [`compute`] works from: everything [`gather`] read.
pub struct Inputs {
    /// [`Repository::describe`].
    pub repository: String,
    /// The repository config, if the repository has WAL.
    pub config: Option<RepoConfig>,
    /// The index, as [`index::load_briefs`] returns it.
    pub summaries: BTreeMap<(TimeLineId, XLogSegNo), SegmentBrief>,
    /// The timelines' histories ([`verify::timelines`]).
    pub timelines: BTreeMap<TimeLineId, verify::TimelineInfo>,
    /// Complete backups.
    pub backups: Vec<BackupManifest>,
    /// Incomplete backups.
    pub incomplete: usize,
    /// When the last segment of each timeline was archived, where known.
    pub archived: BTreeMap<TimeLineId, SystemTime>,
    /// The binlog config and the last stored event.
    pub binlog: Option<(crate::mysql::store::BinlogConfig, Option<crate::mysql::store::LastEvent>)>,
    /// The drill records ([`crate::drill::latest`]).
    pub drills: crate::drill::Latest,
    /// Now.
    pub now: SystemTime,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn rfc3339_of_unix(secs: f64) -> String {
    crate::timefmt::rfc3339_micros((secs * 1e6).round() as i64)
}

/// Reads what the status needs from `repo` and computes it. A repository without a config is
/// a binlog repository if it has a binlog config, else not a repository (exit 14).
pub fn gather(repo: &Repository, now: SystemTime) -> Result<Status> {
    let binlog_cfg = crate::mysql::store::read_config(repo)?;
    let config = match (repo.read_config()?, &binlog_cfg) {
        (Some(c), _) => {
            repo.check_key(&c)?;
            Some(c)
        }
        (None, Some(b)) => {
            repo.check_key_info(b.encryption.as_ref())?;
            None
        }
        (None, None) => {
            // The error `wal list` and `backup list` give.
            repo.require_config()?;
            None
        }
    };
    let mut input = Inputs {
        repository: repo.describe(),
        config: config.clone(),
        summaries: BTreeMap::new(),
        timelines: BTreeMap::new(),
        backups: Vec::new(),
        incomplete: 0,
        archived: BTreeMap::new(),
        binlog: None,
        drills: crate::drill::latest(repo)?,
        now,
    };
    if let Some(cfg) = &config {
        input.summaries = index::load_briefs(repo, cfg.wal_segment_size)?;
        input.timelines = verify::timelines(repo)?;
        let (done, incomplete) = crate::backup::catalogue(repo)?;
        input.backups = done;
        input.incomplete = incomplete.len();
        // One HEAD per timeline: when its last full segment was archived.
        let mut last: BTreeMap<TimeLineId, &WalFileName> = BTreeMap::new();
        for s in input.summaries.values().filter(|s| !s.is_partial()) {
            last.insert(s.timeline, &s.name);
        }
        for (tli, name) in last {
            let key = <WalFile as crate::repo::RepoObject>::key(name)?;
            if let Some(t) = crate::storage::Storage::modified(repo.storage(), &key)? {
                input.archived.insert(tli, t);
            }
        }
    }
    if let Some(b) = binlog_cfg {
        let last = crate::mysql::store::last_stored_event(repo)?;
        input.binlog = Some((b, last));
    }
    Ok(compute(&input))
}

/// The status from what [`gather`] read. Pure.
pub fn compute(input: &Inputs) -> Status {
    let now = unix(input.now);
    let (system_identifier, pg_version, seg) = match &input.config {
        Some(c) => (Some(c.system_identifier), Some(c.pg_version), Some(c.wal_segment_size)),
        None => (None, None, None),
    };
    let mut timelines = Vec::new();
    if let Some(seg) = seg {
        let ranges = verify::ranges(&input.summaries, seg);
        let mut tlis: Vec<TimeLineId> = ranges.iter().map(|r| r.timeline).collect();
        for t in input.timelines.keys() {
            if !tlis.contains(t) {
                tlis.push(*t);
            }
        }
        tlis.sort();
        for tli in tlis {
            let r = ranges.iter().find(|r| r.timeline == tli);
            let info = input.timelines.get(&tli);
            let first = r.and_then(|r| r.ranges.first());
            let last = r.and_then(|r| r.ranges.last());
            let last_xact =
                r.map(|r| r.ranges.iter().rev().find_map(|x| x.last_xact_time)).unwrap_or_default();
            timelines.push(TimelineStatus {
                timeline: tli,
                parent: info.and_then(|i| i.parent),
                switchpoint: info.and_then(|i| i.switchpoint),
                first_wal: first.map(|f| f.first.clone()),
                last_wal: last.map(|l| l.last.clone()),
                segments: r.map(|r| r.ranges.iter().map(|x| x.segments).sum()).unwrap_or(0),
                start_lsn: first.map(|f| f.start),
                end_lsn: last.map(|l| l.end),
                last_xact_time: last_xact,
                last_archived_time: input
                    .archived
                    .get(&tli)
                    .map(|t| crate::timefmt::rfc3339_utc(*t)),
                gaps: r.map(|r| r.gaps.clone()).unwrap_or_default(),
                partials: r.map(|r| r.partials.clone()).unwrap_or_default(),
                damaged: r
                    .map(|r| r.ranges.iter().flat_map(|x| x.damaged.iter().cloned()).collect())
                    .unwrap_or_default(),
                recovery_window: window(input, tli, seg),
            });
        }
    }
    // The segment archived last: the newest modification time among the timelines' last
    // segments; without times, the furthest position (segment, then timeline).
    let last_archived = timelines
        .iter()
        .filter_map(|t| t.last_wal.as_ref().map(|w| (t, w)))
        .max_by(|(a, aw), (b, bw)| {
            let at = input.archived.get(&a.timeline);
            let bt = input.archived.get(&b.timeline);
            at.cmp(&bt).then_with(|| {
                let pos =
                    |w: &WalFileName, t: TimeLineId| (seg.and_then(|s| w.segno(s)).map(|n| n.0), t);
                pos(aw, a.timeline).cmp(&pos(bw, b.timeline))
            })
        })
        .map(|(t, w)| {
            let at = input.archived.get(&t.timeline).map(|x| unix(*x));
            LastArchived {
                wal: w.clone(),
                timeline: t.timeline,
                archived_time: input
                    .archived
                    .get(&t.timeline)
                    .map(|x| crate::timefmt::rfc3339_utc(*x)),
                age_seconds: at.map(|a| (now - a).max(0.0)),
                archived_unix: at,
            }
        });
    let brief = |m: &BackupManifest| {
        let start = crate::timefmt::parse_timestamp(&m.start_time).ok();
        BackupBrief {
            id: m.id.to_string(),
            kind: m.backup_type.as_str(),
            timeline: m.timeline,
            start_time: m.start_time.clone(),
            stop_time: m.stop_time.clone(),
            duration_seconds: start.map(|s| ((m.stop_time_us - s) as f64 / 1e6).max(0.0)),
            bytes: m.bytes,
            stored_bytes: m.stored_bytes,
            stop_unix: m.stop_time_us as f64 / 1e6,
        }
    };
    let backups = BackupsStatus {
        count: input.backups.len(),
        incomplete: input.incomplete,
        bytes: input.backups.iter().map(|m| m.bytes).sum(),
        stored_bytes: input.backups.iter().map(|m| m.stored_bytes).sum(),
        oldest: input.backups.iter().min_by_key(|m| (m.stop_time_us, m.id.clone())).map(brief),
        newest: input.backups.iter().max_by_key(|m| (m.stop_time_us, m.id.clone())).map(brief),
    };
    let binlog = input.binlog.as_ref().map(|(cfg, last)| {
        let t = last.as_ref().map(|l| f64::from(l.time));
        BinlogStatus {
            flavour: cfg.flavour.clone(),
            server_id: cfg.server_id,
            basename: cfg.basename.clone(),
            last_file: last.as_ref().map(|l| l.file.clone()),
            last_file_closed: last.as_ref().map(|l| l.closed),
            last_event_time: t.map(|t| {
                crate::timefmt::rfc3339_utc(UNIX_EPOCH + std::time::Duration::from_secs(t as u64))
            }),
            last_event_age_seconds: t.map(|t| (now - t).max(0.0)),
            gaps: last.as_ref().map_or(0, |l| l.gaps),
            last_event_unix: t,
        }
    });
    Status {
        repository: input.repository.clone(),
        time: rfc3339_of_unix(now),
        system_identifier,
        pg_version,
        timelines,
        last_archived,
        backups,
        binlog,
        drill: input.drills.last.as_ref().map(|last| {
            let last_success = input.drills.last_success.as_ref().map(DrillBrief::of);
            DrillStatus {
                count: input.drills.count,
                last: DrillBrief::of(last),
                last_success_age_seconds: last_success
                    .as_ref()
                    .and_then(|b| b.stop_unix)
                    .map(|t| (now - t).max(0.0)),
                last_success,
            }
        }),
        now_unix: now,
        wal_segment_bytes: seg.map(|s| s.bytes()),
    }
}

/// The recovery window along timeline `tli`: for each backup whose start and stop lie on the
/// path to `tli`, how far the archived WAL reaches from its first segment without a gap,
/// reading each segment from the timeline PostgreSQL would ask for first
/// ([`ExpectedTimelines::segment_timeline`], as the planner does); the furthest reach wins, and
/// the oldest backup with that reach opens the window. `None` when no backup's WAL reaches its
/// own stop point.
fn window(input: &Inputs, tli: TimeLineId, seg: WalSegSize) -> Option<RecoveryWindow> {
    let history = input.timelines.get(&tli).and_then(|i| i.history.as_ref());
    let path = ExpectedTimelines::new(tli, history);
    let has = |t: TimeLineId, n: XLogSegNo| {
        input.summaries.get(&(t, n)).filter(|s| !s.is_partial() && !s.damaged)
    };
    // The furthest segment number on this timeline: the walk ends there.
    let end = input
        .summaries
        .values()
        .filter(|s| s.timeline == tli && !s.is_partial())
        .map(|s| s.segno)
        .max()?;
    // The backups whose start and stop lie on the path, and the segments their walks start at.
    let usable: Vec<&BackupManifest> = input
        .backups
        .iter()
        .filter(|m| {
            path.timeline_of(m.start_lsn) == m.timeline
                && path.timeline_of(m.stop_lsn) == m.stop_timeline
        })
        .collect();
    let mut starts: Vec<XLogSegNo> = usable.iter().map(|m| m.start_lsn.segment(seg)).collect();
    starts.sort();
    starts.dedup();
    // Walks forward from each start along the path, reading each segment from the timeline
    // PostgreSQL would ask for first, to the last segment reached without a gap. The latest start
    // first: a walk that arrives at a later start on the timeline a fresh walk from there takes
    // goes on exactly as that walk did, so it takes its result; every segment is visited once.
    // Per start: (the first timeline chosen, the last segment reached).
    let mut reaches: BTreeMap<XLogSegNo, (Option<TimeLineId>, Option<&SegmentBrief>)> =
        BTreeMap::new();
    for &from in starts.iter().rev() {
        let (mut cur, mut last, mut first_tl) = (None, None, None);
        let mut n = from;
        while n <= end {
            let Some(t) = path.segment_timeline(n, seg, cur) else { break };
            if n == from {
                first_tl = Some(t);
            } else if let Some((Some(ft), r)) = reaches.get(&n)
                && *ft == t
            {
                last = r.or(last);
                break;
            }
            let Some(s) = has(t, n) else { break };
            last = Some(s);
            cur = Some(t);
            n = XLogSegNo(n.0 + 1);
        }
        reaches.insert(from, (first_tl, last));
    }
    let mut best: Option<(&BackupManifest, &SegmentBrief)> = None;
    for m in usable {
        let Some((_, Some(r))) = reaches.get(&m.start_lsn.segment(seg)) else { continue };
        let r = *r;
        if r.end < m.stop_lsn {
            continue; // the backup's own WAL is not all there
        }
        let better = match best {
            None => true,
            Some((b, br)) => {
                (r.segno, r.timeline) > (br.segno, br.timeline)
                    || ((r.segno, r.timeline) == (br.segno, br.timeline)
                        && m.stop_time_us < b.stop_time_us)
            }
        };
        if better {
            best = Some((m, r));
        }
    }
    let (m, r) = best?;
    // The last commit or abort between the backup and the end of its reach, along the path.
    let from = m.stop_lsn.segment(seg);
    let mut last_xact: Option<i64> = None;
    let mut n = r.segno;
    loop {
        let t = path.segment_timeline(n, seg, None).unwrap_or(tli);
        if let Some(s) = has(t, n)
            && let Some(x) = s.last_xact_time_us
        {
            last_xact = Some(x);
            break;
        }
        if n <= from {
            break;
        }
        n = XLogSegNo(n.0 - 1);
    }
    let start_unix = m.stop_time_us as f64 / 1e6;
    let later = last_xact.filter(|x| *x > m.stop_time_us);
    let end_unix = later.map_or(start_unix, |x| x as f64 / 1e6);
    // The commit's own time, as `wal list` prints it; else the backup's end, as it was recorded.
    let end_time = later.map_or_else(|| m.stop_time.clone(), crate::timefmt::rfc3339_micros);
    Some(RecoveryWindow {
        backup: m.id.to_string(),
        start_time: m.stop_time.clone(),
        start_lsn: m.stop_lsn,
        end_time,
        end_lsn: r.end,
        last_wal: r.name.clone(),
        start_unix,
        end_unix,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use crate::index::{EndKind, SegmentSummary};
    use crate::pg::TimelineHistory;

    const M: u64 = 1 << 20;

    fn tl(t: u32) -> TimeLineId {
        TimeLineId::new(t).unwrap()
    }

    fn seg() -> WalSegSize {
        WalSegSize::new(M as u32).unwrap()
    }

    /// Segment `n` of timeline `t`, with a commit at `n` seconds.
    fn full(t: u32, n: u64) -> SegmentSummary {
        let segno = XLogSegNo(n);
        let start = segno.start_lsn(seg());
        SegmentSummary {
            format_version: crate::index::FORMAT_VERSION,
            name: WalFileName::segment(tl(t), segno, seg()),
            timeline: tl(t),
            segno,
            start,
            seg_size: seg(),
            first_record: Some(start.saturating_add(40)),
            last_record: Some(Lsn(start.0 + M - 0x100)),
            end: segno.end_lsn(seg()),
            end_kind: EndKind::Full,
            continuation: 0,
            first_prev: None,
            records: 10,
            commits: 1,
            aborts: 0,
            first_xact_time_us: Some(n as i64 * 1_000_000),
            last_xact_time_us: Some(n as i64 * 1_000_000),
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

    /// A backup of timeline `t` from segment `start` to `stop` (mid-segment), ended at `time` s.
    fn backup(id: &str, t: u32, start: u64, stop: u64, time: i64) -> BackupManifest {
        BackupManifest {
            format_version: 1,
            id: id.parse().unwrap(),
            label: id.into(),
            system_identifier: SystemId(1),
            pg_version: PgMajorVersion::V15,
            timeline: tl(t),
            start_lsn: Lsn(start * M + 40),
            stop_lsn: Lsn(stop * M + 0x1000),
            stop_timeline: tl(t),
            start_time: crate::timefmt::rfc3339_micros((time - 60) * 1_000_000)
                .replace(".000000", ""),
            stop_time: crate::timefmt::rfc3339_micros(time * 1_000_000).replace(".000000", ""),
            stop_time_us: time * 1_000_000 + 500,
            first_wal: String::new(),
            last_wal: String::new(),
            archives: vec![],
            pg_manifest_key: String::new(),
            bytes: 100,
            stored_bytes: 10,
            compression: "none".into(),
            encrypted: false,
            backup_type: Default::default(),
            parent: None,
            chain: Vec::new(),
            incremental: None,
        }
    }

    /// Timeline 1: segments 1..=20 without 10; timeline 2 branched in segment 15 and has
    /// 15..=25.
    fn inputs(backups: Vec<BackupManifest>) -> Inputs {
        let mut summaries = BTreeMap::new();
        for n in (1..=20).filter(|n| *n != 10) {
            summaries.insert((tl(1), XLogSegNo(n)), SegmentBrief::from(&full(1, n)));
        }
        for n in 15..=25 {
            summaries.insert((tl(2), XLogSegNo(n)), SegmentBrief::from(&full(2, n)));
        }
        let sw = Lsn(15 * M + 0x8000);
        let h = TimelineHistory::parse(tl(2), format!("1\t{sw}\tno recovery target\n").as_bytes())
            .unwrap();
        let mut timelines = BTreeMap::new();
        timelines.insert(
            tl(2),
            verify::TimelineInfo {
                timeline: tl(2),
                parent: Some(tl(1)),
                switchpoint: Some(sw),
                reason: None,
                history: Some(h),
            },
        );
        Inputs {
            repository: "/r".into(),
            config: Some(RepoConfig::new(
                SystemId(1),
                PgMajorVersion::V15,
                seg(),
                8192,
                crate::codec::Compression::None,
                None,
            )),
            summaries,
            timelines,
            backups,
            incomplete: 1,
            archived: BTreeMap::new(),
            binlog: None,
            drills: crate::drill::Latest::default(),
            now: UNIX_EPOCH + std::time::Duration::from_secs(100),
        }
    }

    fn drill(id: &str, result: &str, stop: &str, rto: f64) -> crate::drill::DrillRecord {
        serde_json::from_value(serde_json::json!({
            "format_version": 1, "id": id, "result": result,
            "failed_check": (result != "pass").then_some("sql"), "error": null,
            "start_time": "1970-01-01T00:00:10Z", "stop_time": stop, "host": "h",
            "walrs_version": "0.1.0", "backup": "20260101T000000Z",
            "target": {"type": "time", "time": "1970-01-01T00:00:05Z", "random": true},
            "reached": null,
            "rto": {"restore_seconds": 1.0, "recovery_seconds": 1.0, "checks_seconds": 1.0,
                    "total_seconds": rto},
            "bytes": 1, "wal_bytes": 1, "segments": 1, "segments_replayed": 1,
            "checks": {"databases": 1, "relations_read": 1, "bytes_read": 1, "amcheck": false,
                       "indexes_checked": 0, "data_checksums": false, "sql_assertions": 0}
        }))
        .unwrap()
    }

    /// Issue 17: the last drill (here a failure) and the last that passed are in the status and
    /// the metrics; without drills, `drill` is null and the drill families have no sample.
    #[test]
    fn the_last_drill_and_the_last_success_are_shown() {
        let s = compute(&inputs(vec![]));
        assert!(s.drill.is_none());
        let m = metrics::render(&s);
        assert!(m.contains("# TYPE walrs_drill_last_success_timestamp_seconds gauge"));
        assert!(!m.contains("walrs_drill_rto_seconds{"), "{m}");

        let mut i = inputs(vec![]);
        i.drills = crate::drill::Latest {
            count: 3,
            last: Some(drill("19700101T000040Z-0002", "fail", "1970-01-01T00:00:50Z", 9.0)),
            last_success: Some(drill("19700101T000020Z-0001", "pass", "1970-01-01T00:00:30Z", 4.5)),
        };
        let s = compute(&i);
        let d = s.drill.as_ref().unwrap();
        assert_eq!(d.count, 3);
        assert_eq!(d.last.result, "fail");
        assert_eq!(d.last.failed_check.as_deref(), Some("sql"));
        assert_eq!(d.last_success.as_ref().unwrap().id, "19700101T000020Z-0001");
        assert_eq!(d.last_success_age_seconds, Some(70.0));
        let m = metrics::render(&s);
        assert!(
            m.contains("walrs_drill_last_success_timestamp_seconds{repository=\"/r\"} 30\n"),
            "{m}"
        );
        assert!(m.contains("walrs_drill_rto_seconds{repository=\"/r\"} 4.5\n"), "{m}");
        assert!(m.contains("walrs_drill_last_passed{repository=\"/r\"} 0\n"), "{m}");
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["drill"]["last"]["target_time"], "1970-01-01T00:00:05Z");
        assert_eq!(j["drill"]["last_success"]["rto_seconds"], 4.5);
    }

    /// The gap in timeline 1 ends the window of a backup before it on both timelines; a backup
    /// after it opens the window, and of two backups that reach as far, the older one.
    #[test]
    fn windows_follow_the_path_and_stop_at_gaps() {
        let a = backup("20260101T000000Z", 1, 2, 3, 3);
        let c = backup("20260101T000100Z", 1, 5, 5, 5);
        let b = backup("20260101T000200Z", 1, 12, 12, 12);
        let b2 = backup("20260101T000300Z", 1, 13, 13, 13);
        let s = compute(&inputs(vec![c.clone(), b2.clone(), a.clone(), b.clone()]));
        assert_eq!(s.timelines.len(), 2);
        let (t1, t2) = (&s.timelines[0], &s.timelines[1]);
        assert_eq!(t1.gaps.len(), 1);
        assert_eq!(t1.gaps[0].first.as_str(), "00000001000000000000000A");
        // Timeline 1: b reaches 20 (b2 too, but b ended first).
        let w1 = t1.recovery_window.as_ref().unwrap();
        assert_eq!(w1.backup, b.id.to_string());
        assert_eq!(w1.last_wal.as_str(), "000000010000000000000014");
        assert_eq!(w1.end_time, crate::timefmt::rfc3339_micros(20_000_000));
        assert_eq!(w1.start_time, b.stop_time);
        // Timeline 2: from b through timeline 1 to segment 14, then timeline 2 from 15.
        let w2 = t2.recovery_window.as_ref().unwrap();
        assert_eq!(w2.backup, b.id.to_string());
        assert_eq!(w2.last_wal.as_str(), "000000020000000000000019");
        assert_eq!(w2.end_lsn, XLogSegNo(25).end_lsn(seg()));
        assert_eq!(t2.parent, Some(tl(1)));
        assert_eq!(s.backups.count, 4);
        assert_eq!(s.backups.incomplete, 1);
        assert_eq!(s.backups.oldest.as_ref().unwrap().id, a.id.to_string());
        assert_eq!(s.backups.newest.as_ref().unwrap().id, b2.id.to_string());
        assert_eq!(s.backups.newest.as_ref().unwrap().duration_seconds, Some(60.0005));
        assert_eq!(s.backups.bytes, 400);
    }

    /// Only backups before the gap: the window on timeline 1 ends before it (the oldest backup
    /// opens it, at the last commit it reaches); a backup whose own WAL crosses the gap is not
    /// used; no backup at all: no window.
    #[test]
    fn a_window_ends_at_the_last_segment_before_a_gap() {
        let a = backup("20260101T000000Z", 1, 2, 3, 3);
        let c = backup("20260101T000100Z", 1, 5, 5, 5);
        let d = backup("20260101T000200Z", 1, 9, 10, 9); // its own WAL crosses the gap
        let s = compute(&inputs(vec![d, c, a.clone()]));
        let w1 = s.timelines[0].recovery_window.as_ref().unwrap();
        assert_eq!(w1.backup, a.id.to_string());
        assert_eq!(w1.last_wal.as_str(), "000000010000000000000009");
        assert_eq!(w1.end_time, crate::timefmt::rfc3339_micros(9_000_000));
        assert_eq!(w1.end_unix, 9.0);
        let w2 = s.timelines[1].recovery_window.as_ref().unwrap();
        assert_eq!(w2.last_wal.as_str(), "000000010000000000000009");
        let none = compute(&inputs(vec![]));
        assert!(none.timelines.iter().all(|t| t.recovery_window.is_none()));
        assert!(none.backups.newest.is_none());
        assert_eq!(none.last_archived.as_ref().unwrap().wal.as_str(), "000000020000000000000019");
    }
}
