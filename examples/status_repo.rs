//! Builds a synthetic file-system repository for measuring `walrs status` and `walrs metrics`
//! (benches/status.sh, docs/benchmarks.md): `status_repo DIR [SEGMENTS]` (default 100,000
//! segments of 16 MiB). Timeline 1 holds the first 60 % of the segments, timeline 2 (branched at
//! the start of the next segment, with its `.history` object) the rest; one segment of timeline 1
//! is missing (a gap); a backup every 3,000 segments. Every segment has its object (a 4 KiB
//! placeholder: status never reads a segment) and its summary in the WAL index; every full
//! group has its roll-up, the last group of each timeline (still filling) none, as a live archive
//! has them. Objects are written through the library (config, index, manifests, history), except
//! the placeholders, written as files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::BTreeMap;
use std::process::Command;

use walrs::backup::BackupManifest;
use walrs::codec::Compression;
use walrs::index::{EndKind, GroupRollup, SegmentSummary};
use walrs::pg::{
    Lsn, PgMajorVersion, SystemId, TimeLineId, TimelineHistory, WalFileName, WalSegSize, XLogSegNo,
};
use walrs::repo::{BackupId, Fixed, RepoConfig, Repository, object::encode_json};
use walrs::storage::{AnyStorage, Storage, memory::MemoryStorage};

const SYSTEM: u64 = 7_300_000_000_000_000_001;
/// 2026-01-01T00:00:00Z in Unix microseconds; one segment every 30 s after it.
const T0_US: i64 = 1_767_225_600_000_000;

fn summary(tli: TimeLineId, n: u64, seg: WalSegSize) -> SegmentSummary {
    let segno = XLogSegNo(n);
    let start = segno.start_lsn(seg);
    let t = T0_US + n as i64 * 30_000_000;
    SegmentSummary {
        format_version: walrs::index::FORMAT_VERSION,
        name: WalFileName::segment(tli, segno, seg),
        timeline: tli,
        segno,
        start,
        seg_size: seg,
        first_record: Some(start.saturating_add(40)),
        last_record: Some(Lsn(segno.end_lsn(seg).0 - 200)),
        end: segno.end_lsn(seg),
        end_kind: EndKind::Full,
        continuation: 0,
        first_prev: None,
        records: 60_000,
        commits: 400,
        aborts: 2,
        first_xact_time_us: Some(t),
        last_xact_time_us: Some(t + 29_000_000),
        min_xid: Some(1_000 + n as u32 * 400),
        max_xid: Some(1_400 + n as u32 * 400),
        xids: vec![],
        xid_lsns: vec![],
        restore_points: vec![],
        checkpoints: vec![],
        backup_ends: vec![],
        end_of_recovery: vec![],
        error: None,
        content_digest: format!("{n:064x}"),
        block_map: None,
    }
}

fn main() {
    let dir = std::path::PathBuf::from(
        std::env::args().nth(1).expect("usage: status_repo DIR [SEGMENTS]"),
    );
    let total: u64 = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(100_000);
    std::fs::create_dir_all(&dir).unwrap();
    // Built in memory, then each object written out as the file the file-system backend keeps
    // (the same bytes; without one fsync per object, which would take most of an hour).
    let repo = Repository::new(AnyStorage::Memory(MemoryStorage::new()), None);
    let seg = WalSegSize::new(16 << 20).unwrap();
    let cfg = RepoConfig::new(
        SystemId(SYSTEM),
        PgMajorVersion::V15,
        seg,
        8192,
        Compression::Zstd(1),
        None,
    );
    repo.store_config(&cfg).unwrap();

    let t1 = TimeLineId::new(1).unwrap();
    let t2 = TimeLineId::new(2).unwrap();
    let first = 1u64;
    let switch = first + total * 6 / 10; // timeline 2 starts with this segment
    let gap = first + total * 3 / 10;
    let history =
        format!("1\t{}\tno recovery target specified\n", XLogSegNo(switch).start_lsn(seg));
    repo.put_new::<TimelineHistory>(&t2, history.as_bytes(), Compression::None).unwrap();

    let mut groups: BTreeMap<String, GroupRollup> = BTreeMap::new();
    let mut last_group: BTreeMap<TimeLineId, String> = BTreeMap::new();
    let placeholder = vec![0u8; 4096];
    for n in first..first + total {
        if n == gap {
            continue;
        }
        let tli = if n < switch { t1 } else { t2 };
        let s = summary(tli, n, seg);
        let name = s.name.to_string();
        let group = name[..16].to_owned();
        let d = dir.join("wal").join(&group);
        if !d.exists() {
            std::fs::create_dir_all(&d).unwrap();
        }
        std::fs::write(d.join(&name), &placeholder).unwrap();
        last_group.insert(tli, group.clone());
        groups
            .entry(group.clone())
            .or_insert_with(|| GroupRollup {
                format_version: walrs::index::FORMAT_VERSION,
                group,
                segments: BTreeMap::new(),
            })
            .segments
            .insert(s.name.clone(), s);
    }
    // Every segment has its summary; the full groups also their roll-up (the last group of each
    // timeline is still filling: no roll-up yet).
    let open: Vec<&String> = last_group.values().collect();
    let (mut rollups, mut summaries) = (0, 0);
    for (g, r) in &groups {
        for s in r.segments.values() {
            repo.save::<SegmentSummary>(&s.name, s, Fixed).unwrap();
            summaries += 1;
        }
        if !open.contains(&g) {
            repo.save::<GroupRollup>(g, r, Fixed).unwrap();
            rollups += 1;
        }
    }
    let mut backups = 0;
    let mut n = first + 10;
    while n + 10 < first + total {
        let tli = if n < switch { t1 } else { t2 };
        let stop_us = T0_US + (n as i64 + 1) * 30_000_000;
        let id: BackupId = walrs::timefmt::rfc3339_utc(
            std::time::UNIX_EPOCH + std::time::Duration::from_micros(stop_us as u64),
        )
        .replace(['-', ':'], "")
        .parse()
        .unwrap();
        let m = BackupManifest {
            format_version: 1,
            id: id.clone(),
            label: id.to_string(),
            system_identifier: SystemId(SYSTEM),
            pg_version: PgMajorVersion::V15,
            timeline: tli,
            start_lsn: XLogSegNo(n).start_lsn(seg).saturating_add(40),
            stop_lsn: XLogSegNo(n).start_lsn(seg).saturating_add(0x10_0000),
            stop_timeline: tli,
            start_time: walrs::timefmt::rfc3339_utc(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_micros(stop_us as u64 - 600_000_000),
            ),
            stop_time: walrs::timefmt::rfc3339_utc(
                std::time::UNIX_EPOCH + std::time::Duration::from_micros(stop_us as u64),
            ),
            stop_time_us: stop_us,
            first_wal: WalFileName::segment(tli, XLogSegNo(n), seg).to_string(),
            last_wal: WalFileName::segment(tli, XLogSegNo(n), seg).to_string(),
            archives: vec![],
            pg_manifest_key: String::new(),
            bytes: 50 << 30,
            stored_bytes: 12 << 30,
            compression: "zstd:1".into(),
            encrypted: false,
            backup_type: Default::default(),
            parent: None,
            chain: Vec::new(),
            incremental: None,
        };
        repo.put_new::<BackupManifest>(&id, encode_json(&m).unwrap().as_slice(), Fixed).unwrap();
        backups += 1;
        n += 3_000;
    }
    let mut objects = 0;
    for item in repo.storage().list("").unwrap() {
        let key = item.unwrap().key;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut repo.storage().get(&key).unwrap(), &mut bytes).unwrap();
        let path = dir.join(key.as_str());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        objects += 1;
    }
    // The placeholders' directories and the objects': the modes the backend creates.
    let _ = Command::new("chmod").args(["-R", "go-rwx"]).arg(&dir).status();
    println!(
        "{}: {} segments ({} on timeline 1, gap at {}), {summaries} summaries, {rollups} roll-ups, {backups} backups; {objects} objects written through the library",
        dir.display(),
        total - 1,
        switch - first - 1,
        WalFileName::segment(t1, XLogSegNo(gap), seg)
    );
}
