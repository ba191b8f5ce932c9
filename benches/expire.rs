//! Issue 15's measurements of `walrs expire`: planning over a repository of 100,000 WAL
//! segments (synthetic index roll-ups) and 100 backups (synthetic manifests), in process (the
//! pure planner) and as `walrs expire` on the file system and on S3 (the s3s-fs test server,
//! counting requests by operation); and the cost of deletion on S3 in requests per 1,000
//! objects (`expire --confirm` dropping real objects). `cargo bench --bench expire`; the
//! figures go to docs/benchmarks.md.

// Benchmarks are edges, like tests: a failed setup may panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use walrs::index::{EndKind, GroupRollup, SegmentSummary};
use walrs::pg::{Lsn, PgMajorVersion, SystemId, TimeLineId, WalFileName, WalSegSize, XLogSegNo};
use walrs::repo::{BackupManifest, Fixed, Repository, WalFile};
use walrs::retention::{Input, Policy, plan};
use walrs::storage::{AnyStorage, BytesBody, FsStorage, ObjectKey, Storage};

#[path = "common.rs"]
mod common;
#[allow(dead_code)]
#[path = "../tests/util/s3.rs"]
mod s3;

const SEGMENTS: u64 = 100_000;
const BACKUPS: u64 = 100;
const SEG: WalSegSize = WalSegSize::DEFAULT;
const M: u64 = 16 << 20;
const BASE_US: i64 = 1_795_219_200_000_000;

fn tl1() -> TimeLineId {
    TimeLineId::new(1).unwrap()
}

fn summary(n: u64) -> SegmentSummary {
    SegmentSummary {
        format_version: 1,
        name: WalFileName::segment(tl1(), XLogSegNo(n), SEG),
        timeline: tl1(),
        segno: XLogSegNo(n),
        start: Lsn(n * M),
        seg_size: SEG,
        first_record: Some(Lsn(n * M + 0x28)),
        last_record: Some(Lsn((n + 1) * M - 0x100)),
        end: Lsn((n + 1) * M),
        end_kind: EndKind::Full,
        continuation: 0,
        first_prev: None,
        records: 1000,
        commits: 10,
        aborts: 0,
        first_xact_time_us: Some(BASE_US + n as i64 * 60_000_000),
        last_xact_time_us: Some(BASE_US + n as i64 * 60_000_000 + 1),
        min_xid: Some(n as u32),
        max_xid: Some(n as u32 + 9),
        xids: vec![],
        xid_lsns: vec![],
        restore_points: vec![],
        checkpoints: vec![],
        backup_ends: vec![],
        end_of_recovery: vec![],
        error: None,
        content_digest: "xxh3:00000000000000000000000000000000".into(),
        block_map: None,
    }
}

/// Backup `i` of `count`, spread evenly over `segments` segments.
fn manifest(i: u64, count: u64, segments: u64) -> BackupManifest {
    let start = 2 + i * (segments - 4) / count;
    let t = BASE_US + start as i64 * 60_000_000;
    let id = walrs::repo::BackupId::at(
        std::time::UNIX_EPOCH + Duration::from_micros(u64::try_from(t).unwrap()),
    );
    BackupManifest {
        format_version: 1,
        id,
        label: "bench".into(),
        system_identifier: SystemId(7_300_000_000_000_000_001),
        pg_version: PgMajorVersion::V15,
        timeline: tl1(),
        start_lsn: Lsn(start * M + 0x28),
        stop_lsn: Lsn((start + 1) * M + 0x100),
        stop_timeline: tl1(),
        start_time: walrs::timefmt::rfc3339_micros(t),
        stop_time: walrs::timefmt::rfc3339_micros(t + 60_000_000),
        stop_time_us: t + 60_000_000,
        first_wal: WalFileName::segment(tl1(), XLogSegNo(start), SEG).to_string(),
        last_wal: WalFileName::segment(tl1(), XLogSegNo(start + 1), SEG).to_string(),
        archives: vec![],
        pg_manifest_key: String::new(),
        bytes: 1 << 30,
        stored_bytes: 1 << 28,
        compression: "zstd:1".into(),
        encrypted: false,
        backup_type: Default::default(),
        parent: None,
        chain: Vec::new(),
        incremental: None,
    }
}

/// Pushes segment 1 (the repository config comes from it), then writes the roll-ups of
/// `segments` segments and `backups` manifests through the library.
fn build(repo: &Repository, walrs_env: &[(&str, String)], segments: u64, backups: u64) {
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join("000000010000000000000001");
    std::fs::write(&seg, common::segment(1)).unwrap();
    let mut push = Command::new(env!("CARGO_BIN_EXE_walrs"));
    push.arg("push").arg(&seg).env("WALRS_PUSH_PARALLEL", "1");
    for (k, v) in walrs_env {
        push.env(k, v);
    }
    assert!(push.status().unwrap().success());
    let mut groups: BTreeMap<String, GroupRollup> = BTreeMap::new();
    for n in 1..=segments {
        let s = summary(n);
        let g = s.name.group().unwrap().to_owned();
        let r = groups.entry(g.clone()).or_insert_with(|| GroupRollup {
            format_version: 1,
            group: g.clone(),
            segments: BTreeMap::new(),
        });
        r.segments.insert(s.name.clone(), s);
    }
    for (g, r) in &groups {
        // A roll-up of a full group is read alone; the last group's summaries are listed too.
        repo.save(g, r, Fixed).unwrap();
        // Groups are found by listing the summaries' prefixes (one request per 1,000 groups),
        // so each group needs a summary object; one per group stands for the 256 of a real
        // repository (a full group's summaries are never read, only its roll-up).
        if let Some((name, s)) = r.segments.iter().next_back() {
            repo.save(name, s, Fixed).unwrap();
        }
    }
    for i in 0..backups {
        repo.save_new(
            &manifest(i, backups, segments).id.clone(),
            &manifest(i, backups, segments),
            Fixed,
        )
        .unwrap();
    }
}

fn walrs(env: &[(&str, String)], args: &[&str]) -> (Duration, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_walrs"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let t = Instant::now();
    let out = c.output().unwrap();
    let took = t.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (took, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // 1. The pure planner.
    let summaries: BTreeMap<(TimeLineId, XLogSegNo), SegmentSummary> =
        (1..=SEGMENTS).map(|n| ((tl1(), XLogSegNo(n)), summary(n))).collect();
    let backups: Vec<BackupManifest> =
        (0..BACKUPS).map(|i| manifest(i, BACKUPS, SEGMENTS)).collect();
    let histories = BTreeMap::new();
    let pins = BTreeSet::new();
    let now = BASE_US + (SEGMENTS as i64 + 10) * 60_000_000;
    let policies = [
        ("--retain-full 2", Policy { full: Some(2), ..Policy::default() }),
        (
            "--retain-window 7d --retain-weekly 8 --retain-monthly 12",
            Policy {
                window_us: Some(7 * 86_400_000_000),
                weekly: Some(8),
                monthly: Some(12),
                ..Policy::default()
            },
        ),
    ];
    for (name, p) in &policies {
        let mut times = Vec::new();
        let mut dropped = 0;
        for _ in 0..5 {
            let input = Input {
                backups: &backups,
                incomplete: &[],
                summaries: &summaries,
                histories: &histories,
                seg_size: SEG,
                pins: &pins,
                leases: &[],
                now_us: now,
            };
            let t = Instant::now();
            let plan = plan(&input, p).unwrap();
            times.push(t.elapsed());
            dropped = plan.drop_segments.len();
        }
        println!(
            "planner, {SEGMENTS} segments, {BACKUPS} backups, {name}: median {:.1} ms ({dropped} segments dropped)",
            median(times).as_secs_f64() * 1e3
        );
    }

    // 2. `walrs expire` (dry run) on the file system.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    std::fs::create_dir(&root).unwrap();
    let env = vec![("WALRS_REPO", root.display().to_string())];
    let repo = Repository::new(AnyStorage::Fs(FsStorage::open(&root).unwrap()), None);
    let t = Instant::now();
    build(&repo, &env, SEGMENTS, BACKUPS);
    eprintln!("fs repository built in {:.1} s", t.elapsed().as_secs_f64());
    let mut times = Vec::new();
    for _ in 0..5 {
        let (took, out) = walrs(&env, &["expire", "--retain-full", "2"]);
        times.push(took);
        assert!(out.contains("drop 98 backup(s)"), "{out}");
    }
    println!(
        "walrs expire --retain-full 2 (dry run), file system: median {:.0} ms",
        median(times).as_secs_f64() * 1e3
    );

    // 3. The same on S3: requests by operation.
    let server = s3::S3Server::start();
    let prefix = "bench";
    let s3_env = vec![
        ("WALRS_REPO", server.url(prefix)),
        ("WALRS_S3_ENDPOINT", server.endpoint()),
        ("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY.to_owned()),
    ];
    let repo = Repository::new(
        AnyStorage::S3(Box::new(server.storage(prefix, Duration::from_secs(600)))),
        None,
    );
    let t = Instant::now();
    build(&repo, &s3_env, SEGMENTS, BACKUPS);
    eprintln!("S3 repository built in {:.1} s", t.elapsed().as_secs_f64());
    server.counters.reset();
    let (took, _) = walrs(&s3_env, &["expire", "--retain-full", "2"]);
    let counts = server.counters.snapshot();
    let total: u64 = counts.values().sum();
    println!(
        "walrs expire --retain-full 2 (dry run), S3 (s3s-fs on 127.0.0.1): {:.0} ms, {total} requests {counts:?}",
        took.as_secs_f64() * 1e3
    );

    // 4. Deletion on S3: a repository of 3,000 segments (real objects: WAL, summaries) and 10
    //    backups, `expire --retain-full 1 --confirm`: requests per 1,000 objects deleted.
    let prefix = "delete";
    let del_env = vec![
        ("WALRS_REPO", server.url(prefix)),
        ("WALRS_S3_ENDPOINT", server.endpoint()),
        ("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY.to_owned()),
    ];
    let store = server.storage(prefix, Duration::from_secs(600));
    let repo = Repository::new(
        AnyStorage::S3(Box::new(server.storage(prefix, Duration::from_secs(600)))),
        None,
    );
    let segments = 3_000;
    build(&repo, &del_env, segments, 10);
    for n in 2..=segments {
        let name = WalFileName::segment(tl1(), XLogSegNo(n), SEG);
        let key: ObjectKey = <WalFile as walrs::repo::RepoObject>::key(&name).unwrap();
        store.put(&key, &mut BytesBody::new(b"x")).unwrap();
    }
    for i in 0..10 {
        let m = manifest(i, 10, segments);
        for c in 0..5 {
            let k = walrs::repo::layout::chunk_key(&m.id, "base.tar", c).unwrap();
            store.put(&k, &mut BytesBody::new(b"x")).unwrap();
        }
    }
    let before = count(&store);
    server.counters.reset();
    let (took, out) = walrs(&del_env, &["expire", "--retain-full", "1", "--confirm", "--json"]);
    let counts = server.counters.snapshot();
    let after = count(&store);
    let deleted = before - after;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let total: u64 = counts.values().sum();
    println!(
        "walrs expire --retain-full 1 --confirm, S3: {deleted} objects deleted ({} backups, {} segments) in {:.0} ms with {total} requests ({:.1} per 1,000 objects) {counts:?}",
        v["deleted"]["backups"],
        v["deleted"]["segments"],
        took.as_secs_f64() * 1e3,
        total as f64 * 1000.0 / deleted as f64
    );
}

fn count(s: &dyn Storage) -> u64 {
    s.list("").unwrap().count() as u64
}
