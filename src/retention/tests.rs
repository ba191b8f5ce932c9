//! Tests of the retention planner: its rules on small repositories, and the property test over
//! random histories (several timelines, gaps, pins, windows, GFS points) that checks the plan
//! against the recovery planner: after applying it, every kept backup still restores to its end
//! and every target in the window that was reachable still is.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use super::*;
use crate::index::EndKind;
use crate::recovery::{self, PlanInput, Target, TargetTimeline};
use proptest::prelude::*;

const M: u64 = 0x100_0000;
const MINUTE: i64 = 60_000_000;
/// 2026-11-21T00:00:00Z.
const BASE_US: i64 = 1_795_219_200_000_000;

fn tl(n: u32) -> TimeLineId {
    TimeLineId::new(n).unwrap()
}

/// Segment `n` of timeline `t`, full, its last transaction at minute `n` after [`BASE_US`].
fn seg(t: u32, n: u64) -> SegmentSummary {
    SegmentSummary {
        format_version: 1,
        name: WalFileName::segment(tl(t), XLogSegNo(n), WalSegSize::DEFAULT),
        timeline: tl(t),
        segno: XLogSegNo(n),
        start: Lsn(n * M),
        seg_size: WalSegSize::DEFAULT,
        first_record: Some(Lsn(n * M + 0x28)),
        last_record: Some(Lsn((n + 1) * M - 0x100)),
        end: Lsn((n + 1) * M),
        end_kind: EndKind::Full,
        continuation: 0,
        first_prev: None,
        records: 10,
        commits: 1,
        aborts: 0,
        first_xact_time_us: Some(time_of(n) - MINUTE / 2),
        last_xact_time_us: Some(time_of(n)),
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

fn time_of(segno: u64) -> i64 {
    BASE_US + segno as i64 * MINUTE
}

/// Backup `id` on timeline `t` from segment `start` to the middle of segment `stop`.
fn backup(id: &str, t: u32, start: u64, stop: u64) -> BackupManifest {
    BackupManifest {
        format_version: 1,
        id: id.parse().unwrap(),
        label: id.into(),
        system_identifier: crate::pg::SystemId(1),
        pg_version: crate::pg::PgMajorVersion::V15,
        timeline: tl(t),
        start_lsn: Lsn(start * M + 0x28),
        stop_lsn: Lsn(stop * M + 0x1000),
        stop_timeline: tl(t),
        start_time: String::new(),
        stop_time: String::new(),
        stop_time_us: time_of(stop) - MINUTE / 2,
        first_wal: String::new(),
        last_wal: String::new(),
        archives: vec![],
        pg_manifest_key: String::new(),
        bytes: 100,
        stored_bytes: 100,
        compression: "none".into(),
        encrypted: false,
        backup_type: Default::default(),
        parent: None,
        chain: Vec::new(),
        incremental: None,
    }
}

struct Repo {
    backups: Vec<BackupManifest>,
    summaries: BTreeMap<(TimeLineId, XLogSegNo), SegmentSummary>,
    histories: BTreeMap<TimeLineId, TimelineHistory>,
    pins: BTreeSet<BackupId>,
    leases: Vec<Lease>,
    now_us: i64,
}

impl Repo {
    fn linear(segments: u64, backups: Vec<BackupManifest>) -> Self {
        Repo {
            backups,
            summaries: (1..=segments).map(|n| ((tl(1), XLogSegNo(n)), seg(1, n))).collect(),
            histories: BTreeMap::new(),
            pins: BTreeSet::new(),
            leases: vec![],
            now_us: time_of(segments + 1),
        }
    }

    fn plan(&self, policy: &Policy) -> Result<Plan> {
        let input = Input {
            backups: &self.backups,
            incomplete: &[],
            summaries: &self.summaries,
            histories: &self.histories,
            seg_size: WalSegSize::DEFAULT,
            pins: &self.pins,
            leases: &self.leases,
            now_us: self.now_us,
        };
        plan(&input, policy)
    }

    /// The repository once the plan is carried out.
    fn apply(&self, p: &Plan) -> Repo {
        let dropped: BTreeSet<&BackupId> = p.dropped_backups().collect();
        let gone: BTreeSet<&WalFileName> = p.drop_segments.iter().collect();
        Repo {
            backups: self.backups.iter().filter(|b| !dropped.contains(&b.id)).cloned().collect(),
            summaries: self
                .summaries
                .iter()
                .filter(|(_, s)| !gone.contains(&s.name))
                .map(|(k, s)| (*k, s.clone()))
                .collect(),
            histories: self.histories.clone(),
            pins: self.pins.clone(),
            leases: self.leases.clone(),
            now_us: self.now_us,
        }
    }

    fn restore(
        &self,
        target: &Target,
        tli: TimeLineId,
        backup: Option<&str>,
    ) -> Result<recovery::Plan> {
        let input = PlanInput {
            backups: &self.backups,
            summaries: &self.summaries,
            histories: &self.histories,
            seg_size: WalSegSize::DEFAULT,
        };
        recovery::plan(&input, target, TargetTimeline::Id(tli), backup, true)
    }
}

fn kept(p: &Plan) -> Vec<&str> {
    p.backups.iter().filter(|b| b.keep).map(|b| b.id.as_str()).collect()
}

#[test]
fn a_policy_that_keeps_nothing_is_refused() {
    let r = Repo::linear(4, vec![backup("20261121T000000Z", 1, 1, 1)]);
    for policy in [
        Policy::default(),
        Policy { full: Some(0), ..Policy::default() },
        Policy { max_size: Some(10), ..Policy::default() },
    ] {
        let e = r.plan(&policy).unwrap_err();
        assert_eq!(e.kind, Kind::Usage, "{e}");
        assert!(e.message.contains("keeps nothing"), "{e}");
    }
}

/// Backups are ordered by stop LSN, never by id: ids that sort the other way round (a clock set
/// back, a restored cluster) do not make the newest look oldest (wal-g#636).
#[test]
fn newest_by_stop_lsn_not_by_id() {
    let r = Repo::linear(
        10,
        vec![
            backup("20261129T000000Z", 1, 1, 1),
            backup("20261128T000000Z", 1, 4, 4),
            backup("20261121T000000Z", 1, 7, 7),
        ],
    );
    let p = r.plan(&Policy { full: Some(2), ..Policy::default() }).unwrap();
    assert_eq!(kept(&p), vec!["20261128T000000Z", "20261121T000000Z"]);
    assert_eq!(p.backups[0].reasons, vec!["dropped: older than every kept backup"]);
    assert_eq!(p.backups[1].reasons, vec!["kept: newest 2 full"]);
    // The WAL from the start of the oldest kept backup through the end stays; before it goes.
    let names: Vec<&str> = p.drop_segments.iter().map(WalFileName::as_str).collect();
    assert_eq!(
        names,
        vec!["000000010000000000000001", "000000010000000000000002", "000000010000000000000003"]
    );
    assert_eq!(p.wal.len(), 2, "{:?}", p.wal);
    assert_eq!(p.wal[1].reason, "kept: WAL from start of 20261128T000000Z");
    assert_eq!(p.wal[1].segments, 7);
}

/// Issue 18: a kept incremental backup keeps its whole chain, and says so.
#[test]
fn issue_18_a_kept_incremental_keeps_its_parents() {
    let full = backup("20261121T000000Z", 1, 1, 1);
    let mut i1 = backup("20261122T000000Z", 1, 4, 4);
    let mut i2 = backup("20261123T000000Z", 1, 7, 7);
    i1.backup_type = crate::repo::manifest::BackupType::Incremental;
    i1.parent = Some(full.id.clone());
    i1.chain = vec![full.id.clone(), i1.id.clone()];
    i2.backup_type = crate::repo::manifest::BackupType::Incremental;
    i2.parent = Some(i1.id.clone());
    i2.chain = vec![full.id.clone(), i1.id.clone(), i2.id.clone()];
    let old = backup("20261120T000000Z", 1, 0, 0);
    let r = Repo::linear(10, vec![old, full, i1, i2]);
    // --retain-full counts full backups: the newest one, and the incremental ones after it.
    let p = r.plan(&Policy { full: Some(1), ..Policy::default() }).unwrap();
    assert_eq!(kept(&p), vec!["20261121T000000Z", "20261122T000000Z", "20261123T000000Z"]);
    assert_eq!(p.backups[1].reasons[0], "kept: newest 1 full");
    // A window that keeps only the newest incremental keeps its parents, and says why.
    let p = r.plan(&Policy { window_us: Some(MINUTE), ..Policy::default() }).unwrap();
    assert_eq!(kept(&p), vec!["20261121T000000Z", "20261122T000000Z", "20261123T000000Z"]);
    assert_eq!(
        p.backups[1].reasons,
        vec!["kept: parent of 20261123T000000Z", "kept: parent of 20261122T000000Z"]
    );
    assert_eq!(p.backups[2].reasons, vec!["kept: parent of 20261123T000000Z"]);
    // Even a size limit does not drop a parent of a kept child.
    let p = r.plan(&Policy { full: Some(1), max_size: Some(100), ..Policy::default() }).unwrap();
    assert_eq!(kept(&p).len(), 3, "{:?}", p.backups);
    assert_eq!(kept(&p)[0], "20261121T000000Z");
}

#[test]
fn gfs_keeps_the_first_of_each_period_and_its_wal_only() {
    // Backups on days 0, 0, 1, 3 (segment numbers are minutes: 1440 a day).
    let day = 1440;
    let segs = 3 * day + 20;
    let mut r = Repo::linear(
        segs,
        vec![
            backup("20261121T000000Z", 1, 10, 11),
            backup("20261121T010000Z", 1, 100, 101),
            backup("20261122T000000Z", 1, day + 10, day + 11),
            backup("20261124T000000Z", 1, 3 * day + 10, 3 * day + 11),
        ],
    );
    r.now_us = time_of(segs + 1);
    let p = r.plan(&Policy { daily: Some(2), ..Policy::default() }).unwrap();
    assert_eq!(kept(&p), vec!["20261122T000000Z", "20261124T000000Z"]);
    let p = r.plan(&Policy { weekly: Some(2), ..Policy::default() }).unwrap();
    // 2026-11-21 is a Saturday: the 21st and 22nd are one ISO week, the 24th the next.
    assert_eq!(kept(&p), vec!["20261121T000000Z", "20261124T000000Z"]);
    assert!(p.backups[0].reasons.contains(&"kept: weekly 2".to_owned()), "{:?}", p.backups[0]);
    // Its own WAL (segments 10 and 11) stays, the WAL after it does not.
    let dropped: BTreeSet<u64> =
        p.drop_segments.iter().map(|n| n.segno(WalSegSize::DEFAULT).unwrap().0).collect();
    assert!(!dropped.contains(&10) && !dropped.contains(&11) && dropped.contains(&12));
    assert!(dropped.contains(&9) && !dropped.contains(&(3 * day + 10)));
    let p = r.plan(&Policy { monthly: Some(5), yearly: Some(1), ..Policy::default() }).unwrap();
    assert_eq!(kept(&p), vec!["20261121T000000Z", "20261124T000000Z"]);
    assert_eq!(year_month(0), (1970, 1));
    assert_eq!(year_month(20_778), (2026, 11));
}

#[test]
fn pins_leases_grace_and_max_size() {
    let mut r = Repo::linear(
        12,
        vec![
            backup("20261121T000000Z", 1, 1, 1),
            backup("20261122T000000Z", 1, 4, 4),
            backup("20261123T000000Z", 1, 8, 8),
        ],
    );
    r.pins.insert("20261121T000000Z".parse().unwrap());
    let lease = |backup: &str, expires_us: i64| Lease {
        format_version: 1,
        holder: "restore-h-1-1".into(),
        kind: LeaseKind::Restore,
        host: "h".into(),
        pid: 1,
        started_us: 0,
        expires_us,
        backup: Some(backup.parse().unwrap()),
        wal_from: None,
        timeline: None,
    };
    r.leases.push(lease("20261122T000000Z", r.now_us + 1));
    let p = r.plan(&Policy { full: Some(1), ..Policy::default() }).unwrap();
    assert_eq!(kept(&p).len(), 3);
    assert_eq!(p.backups[0].reasons, vec!["kept: pinned (walrs backup keep)"]);
    assert_eq!(p.backups[1].reasons, vec!["kept: lease restore-h-1-1"]);
    // A restore lease keeps the WAL from its backup's start through the end.
    assert!(
        p.drop_segments.iter().all(|n| n.segno(WalSegSize::DEFAULT).unwrap().0 < 4),
        "{:?}",
        p.drop_segments
    );
    // A stale lease is reported and ignored.
    r.leases[0] = lease("20261122T000000Z", r.now_us - 1);
    let p = r.plan(&Policy { full: Some(1), ..Policy::default() }).unwrap();
    assert_eq!(kept(&p), vec!["20261121T000000Z", "20261123T000000Z"]);
    assert!(!p.leases[0].live);
    // Max size drops what GFS alone keeps, never --retain-full or pins.
    r.pins.clear();
    r.leases.clear();
    let p = r.plan(&Policy { full: Some(1), max_size: Some(150), ..Policy::default() }).unwrap();
    assert_eq!(kept(&p), vec!["20261123T000000Z"]);
    let p = r
        .plan(&Policy { full: Some(2), yearly: Some(1), max_size: Some(50), ..Policy::default() })
        .unwrap();
    assert_eq!(kept(&p), vec!["20261122T000000Z", "20261123T000000Z"]);
    assert_eq!(p.backups[0].reasons, vec!["dropped: beyond --retain-max-size"]);
    // Incomplete backups: kept within the grace period.
    let incomplete = [
        Incomplete {
            id: "20261121T000001Z".parse().unwrap(),
            started_us: r.now_us - 2 * DAY_US,
            expiring: false,
        },
        Incomplete {
            id: "20261123T000001Z".parse().unwrap(),
            started_us: r.now_us - 60,
            expiring: false,
        },
        Incomplete {
            id: "20261123T000002Z".parse().unwrap(),
            started_us: r.now_us - 60,
            expiring: true,
        },
    ];
    let input = Input {
        backups: &r.backups,
        incomplete: &incomplete,
        summaries: &r.summaries,
        histories: &r.histories,
        seg_size: WalSegSize::DEFAULT,
        pins: &r.pins,
        leases: &r.leases,
        now_us: r.now_us,
    };
    let p = plan(&input, &Policy { full: Some(1), grace_us: DAY_US, ..Policy::default() }).unwrap();
    let d: Vec<&str> = p.dropped_incomplete().map(BackupId::as_str).collect();
    assert_eq!(d, vec!["20261121T000001Z", "20261123T000002Z"]);
}

#[test]
fn backup_ids_name_their_start() {
    let id: BackupId = "20261121T000000Z-2".parse().unwrap();
    assert_eq!(id_time_us(&id), Some(BASE_US));
}

/// A random repository: timeline 1, maybe timelines branching from it (or from each other) with
/// the parent going on after the switch, segments missing here and there, backups on any
/// timeline with ids in random order, pins.
#[derive(Debug, Clone)]
struct History {
    /// (timeline, parent, switch segment, last segment).
    timelines: Vec<(u32, u32, u64, u64)>,
    last1: u64,
    gaps: Vec<(u32, u64)>,
    /// (timeline index, start segment, length, pinned).
    backups: Vec<(usize, f64, u64, bool)>,
    policy: Policy,
    now_after: u64,
}

fn histories_strategy() -> impl Strategy<Value = History> {
    (
        10u64..50,
        prop::collection::vec((0usize..3, 0.1f64..0.9, 1u64..20), 0..3),
        prop::collection::vec((1u32..4, 0u64..60), 0..3),
        prop::collection::vec((0usize..4, 0.0f64..1.0, 0u64..3, prop::bool::weighted(0.15)), 1..7),
        (
            prop::option::of(1i64..40),
            prop::option::of(0u32..4),
            prop::option::of(0u32..3),
            prop::option::of(0u32..3),
            prop::option::of(prop::option::of(50u64..600)),
        ),
        0u64..5,
    )
        .prop_map(
            |(last1, branches, gaps, backups, (w, full, daily, weekly, size), now_after)| {
                let mut timelines: Vec<(u32, u32, u64, u64)> = Vec::new();
                for (i, (parent, at, len)) in branches.into_iter().enumerate() {
                    let tli = i as u32 + 2;
                    // Parent: 1, or a timeline made before this one.
                    let parent = (parent as u32 + 1).min(tli - 1);
                    let (p_from, p_last) = if parent == 1 {
                        (1, last1)
                    } else {
                        let p = timelines[(parent - 2) as usize];
                        (p.2, p.3)
                    };
                    let switch = p_from + ((p_last - p_from) as f64 * at) as u64;
                    timelines.push((tli, parent, switch.max(p_from), switch.max(p_from) + len));
                }
                let policy = Policy {
                    window_us: w.map(|m| m * MINUTE),
                    full,
                    daily,
                    weekly,
                    monthly: None,
                    yearly: None,
                    max_size: size.flatten(),
                    grace_us: DAY_US,
                    binlogs: None,
                    dumps: None,
                };
                History { timelines, last1, gaps, backups, policy, now_after }
            },
        )
}

impl History {
    fn build(&self) -> Repo {
        let mut summaries = BTreeMap::new();
        let mut histories = BTreeMap::new();
        let mut ranges = vec![(1u32, 1u64, self.last1)];
        for n in 1..=self.last1 {
            summaries.insert((tl(1), XLogSegNo(n)), seg(1, n));
        }
        for &(t, parent, switch, last) in &self.timelines {
            // The switch is in the middle of segment `switch`, which the child's file holds.
            let mut text = String::new();
            if parent > 1 {
                text = histories
                    .get(&tl(parent))
                    .map(|h: &TimelineHistory| {
                        h.ancestors
                            .iter()
                            .map(|a| format!("{}\t{}\tx\n", a.tli.get(), a.switchpoint))
                            .collect()
                    })
                    .unwrap_or_default();
            }
            text.push_str(&format!("{parent}\t{}\tx\n", Lsn(switch * M + M / 2)));
            histories.insert(tl(t), TimelineHistory::parse(tl(t), text.as_bytes()).unwrap());
            for n in switch..=last {
                summaries.insert((tl(t), XLogSegNo(n)), seg(t, n));
            }
            ranges.push((t, switch, last));
        }
        for &(t, n) in &self.gaps {
            summaries.remove(&(tl(t), XLogSegNo(n)));
        }
        let mut backups = Vec::new();
        let mut pins = BTreeSet::new();
        for (i, &(which, at, len, pinned)) in self.backups.iter().enumerate() {
            let (t, from, last) = ranges[which % ranges.len()];
            // A child's WAL on its own timeline starts after the switch segment.
            let from = if t > 1 { from + 1 } else { from };
            if from > last {
                continue;
            }
            let start = from + ((last - from) as f64 * at) as u64;
            let stop = (start + len).min(last);
            // Ids in an order unrelated to the backups' (day 28 down to day 10).
            let id = format!("202611{:02}T{:02}0000Z", 28 - (i * 7) % 19, i);
            let mut b = backup(&id, t, start, stop);
            if stop == start {
                b.stop_lsn = Lsn(start * M + 0x1000);
            }
            if pinned {
                pins.insert(b.id.clone());
            }
            backups.push(b);
        }
        let end = summaries.keys().map(|(_, n)| n.0).max().unwrap_or(1);
        Repo {
            backups,
            summaries,
            histories,
            pins,
            leases: vec![],
            now_us: time_of(end + self.now_after),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// After the plan is applied: every kept backup that restored to its end before still does,
    /// every target in the window (every segment's time and the end, on every timeline whose
    /// path reaches the backup before the window) reachable before still is, pinned backups and
    /// the newest N stay, and nothing reachable from a kept backup lost a segment.
    #[test]
    fn the_plan_never_loses_a_recoverable_second(h in histories_strategy()) {
        let before = h.build();
        let p = match before.plan(&h.policy) {
            Ok(p) => p,
            Err(e) => {
                prop_assert!(h.policy.check().is_err(), "{e}");
                return Ok(());
            }
        };
        // `.history` files are never dropped: only segments and `.partial` segments are.
        for n in &p.drop_segments {
            prop_assert!(n.is_segment_like(), "{n} dropped");
        }
        let after = before.apply(&p);
        let kept_ids: BTreeSet<&str> = kept(&p).into_iter().collect();
        for b in &before.backups {
            if before.pins.contains(&b.id) {
                prop_assert!(kept_ids.contains(b.id.as_str()), "pinned {} dropped", b.id);
            }
        }
        let mut order: Vec<&BackupManifest> = before.backups.iter().collect();
        order.sort_by_key(|b| (b.stop_lsn, b.stop_time_us));
        if let Some(full) = h.policy.full {
            for b in order.iter().rev().take(full as usize) {
                prop_assert!(kept_ids.contains(b.id.as_str()), "newest-{full} {} dropped", b.id);
            }
        }
        // Kept backups restore to their end, and from there to the end of every path.
        let tlis: BTreeSet<TimeLineId> = before.summaries.keys().map(|(t, _)| *t)
            .chain(before.histories.keys().copied()).collect();
        for b in before.backups.iter().filter(|b| kept_ids.contains(b.id.as_str())) {
            if before.restore(&Target::Immediate, b.stop_timeline, Some(&b.id)).is_ok() {
                let r = after.restore(&Target::Immediate, b.stop_timeline, Some(&b.id));
                prop_assert!(r.is_ok(), "backup {} no longer restores: {:?}", b.id, r.err());
            }
        }
        // The window: on every timeline path, from the backup before it.
        if let Some(w) = h.policy.window_us {
            let from = before.now_us - w;
            for t in &tlis {
                let path = ExpectedTimelines::new(*t, before.histories.get(t));
                let on = |b: &&&BackupManifest| on_path(&path, b);
                let anchor = order.iter().filter(on).rfind(|b| b.stop_time_us <= from)
                    .or_else(|| order.iter().find(on));
                if anchor.is_none() {
                    continue;
                }
                let mut targets = vec![Target::End];
                targets.extend(before.summaries.values()
                    .filter_map(|s| s.last_xact_time_us)
                    .filter(|us| *us >= from)
                    .flat_map(|us| [Target::Time(us), Target::Time(us - 1)]));
                for target in targets {
                    if before.restore(&target, *t, None).is_ok() {
                        let r = after.restore(&target, *t, None);
                        prop_assert!(r.is_ok(), "{target:?} on timeline {t:?} lost: {:?}", r.err());
                    }
                }
            }
        }
        // The newest backup stays, with the WAL from it through the end of every path.
        if let Some(newest) = order.last() {
            prop_assert!(kept_ids.contains(newest.id.as_str()));
            for t in &tlis {
                if before.restore(&Target::End, *t, Some(&newest.id)).is_ok() {
                    prop_assert!(after.restore(&Target::End, *t, Some(&newest.id)).is_ok());
                }
            }
        }
    }
}
