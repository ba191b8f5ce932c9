//! The WAL decoder against real WAL: a PostgreSQL 15 workload (bulk inserts with full-page
//! images, commits, a rollback, prepared transactions committed and rolled back, a restore point,
//! checkpoints, WAL switches) is archived, then every segment is scanned (chained across segment
//! boundaries) and compared record for record with `pg_waldump` over the same files.

use std::collections::BTreeMap;
use std::path::Path;

use walrs::pg::records::{interpret, main_data};
use walrs::pg::{Carry, LongPageHeader, RecordKind, ScanEnd, WalGeometry, scan_segment};

use crate::util::files;
use crate::util::pg::{PgCluster, PgWorld, pg_bin};

struct Seen {
    lsn: String,
    rmid: u8,
    xid: u32,
    kind: RecordKind,
}

fn scan_dir(dir: &Path, names: &[String]) -> (Vec<Seen>, Vec<String>) {
    let mut out = Vec::new();
    let mut ends = Vec::new();
    let mut carry: Option<Carry> = None;
    for name in names {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let hdr = LongPageHeader::decode(&bytes).unwrap();
        let geo =
            WalGeometry { seg_size: hdr.seg_size, blcksz: hdr.xlog_blcksz, version: hdr.version };
        let scan = scan_segment(&bytes, hdr.page_addr, geo, carry.take(), |rec| {
            main_data(rec, geo.version).unwrap_or_else(|e| panic!("{e}"));
            out.push(Seen {
                lsn: rec.lsn.to_string(),
                rmid: rec.header.rmid,
                xid: rec.header.xid,
                kind: interpret(rec, geo.version).unwrap(),
            });
        });
        assert!(scan.error.is_none(), "{name}: {:?}", scan.error);
        ends.push(format!("{name}: {:?}", std::mem::discriminant(&scan.end)));
        if let ScanEnd::Continues(c) = scan.end {
            carry = Some(c);
        }
    }
    (out, ends)
}

/// (lsn, rmgr, tx, desc) of every record pg_waldump prints.
fn waldump(dir: &Path, first: &str, last: &str) -> Vec<(String, String, u32, String)> {
    let o = std::process::Command::new(pg_bin().join("pg_waldump"))
        .arg("-p")
        .arg(dir)
        .args([first, last])
        .env("TZ", "UTC")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    text.lines()
        .filter(|l| l.starts_with("rmgr:"))
        .map(|l| {
            let rmgr = l["rmgr:".len()..].split_whitespace().next().unwrap().to_string();
            let tx: u32 =
                l.split("tx:").nth(1).unwrap().split(',').next().unwrap().trim().parse().unwrap();
            let lsn =
                l.split("lsn: ").nth(1).unwrap().split(',').next().unwrap().trim().to_string();
            let desc = l.split("desc: ").nth(1).unwrap_or_default().to_string();
            (lsn, rmgr, tx, desc)
        })
        .collect()
}

/// pg_waldump prints `0/01A2F3B8`; walrs prints `0/1A2F3B8`.
fn norm(lsn: &str) -> String {
    let (hi, lo) = lsn.split_once('/').unwrap();
    format!("{:X}/{:X}", u64::from_str_radix(hi, 16).unwrap(), u64::from_str_radix(lo, 16).unwrap())
}

#[test]
fn pg15_decoder_agrees_with_pg_waldump() {
    let world = PgWorld::new();
    let arch = world.mkdir("arch");
    let mut pg = PgCluster::init(
        &world,
        "a",
        &format!(
            "archive_mode = on\narchive_command = 'cp %p {}/%f'\nmax_prepared_transactions = 5\n",
            arch.display()
        ),
    );
    pg.start();
    pg.sql("CREATE TABLE t (a int, b text)");
    pg.sql("CHECKPOINT"); // full-page images for what follows
    pg.sql("INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 300000) g");
    pg.sql("BEGIN; INSERT INTO t VALUES (-1, 'prepared'); PREPARE TRANSACTION 'p1'");
    pg.sql("COMMIT PREPARED 'p1'");
    pg.sql("BEGIN; INSERT INTO t VALUES (-2, 'prepared'); PREPARE TRANSACTION 'p2'");
    pg.sql("ROLLBACK PREPARED 'p2'");
    pg.sql("BEGIN; INSERT INTO t VALUES (-3, 'aborted'); ROLLBACK");
    pg.sql("SELECT pg_create_restore_point('walrs-test-point')");
    pg.sql("SELECT pg_switch_wal()");
    pg.sql("UPDATE t SET b = repeat('y', 300) WHERE a % 3 = 0");
    pg.sql("CHECKPOINT");
    pg.switch_and_wait_archived();
    pg.stop();

    let names: Vec<String> = files(&arch).into_iter().filter(|n| n.len() == 24).collect();
    assert!(names.len() >= 8, "{names:?}");
    let (ours, ends) = scan_dir(&arch, &names);
    let theirs = waldump(&arch, names.first().unwrap(), names.last().unwrap());
    assert!(theirs.len() > 1000, "pg_waldump printed {} records", theirs.len());
    // Every record, in order, at the same LSN with the same xid.
    let ours_lsns: Vec<&str> = ours.iter().map(|s| s.lsn.as_str()).collect();
    let theirs_lsns: Vec<String> = theirs.iter().map(|t| norm(&t.0)).collect();
    if ours_lsns != theirs_lsns {
        let first_diff = ours_lsns.iter().zip(&theirs_lsns).position(|(a, b)| *a != b.as_str());
        panic!(
            "record lists differ: walrs {} records, pg_waldump {}; first difference at index {first_diff:?}; ends {ends:?}",
            ours_lsns.len(),
            theirs_lsns.len()
        );
    }
    for (o, t) in ours.iter().zip(&theirs) {
        assert_eq!(o.xid, t.2, "xid at {}", o.lsn);
        let rmgr_ok = match o.rmid {
            0 => t.1 == "XLOG",
            1 => t.1 == "Transaction",
            _ => true,
        };
        assert!(rmgr_ok, "rmgr at {}: {} vs {}", o.lsn, o.rmid, t.1);
    }
    // Commits, aborts, prepared ones, the restore point, switches and checkpoints agree.
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for (o, t) in ours.iter().zip(&theirs) {
        let desc = &t.3;
        let ts = |d: &str| -> String { d.split(';').next().unwrap().replace(" UTC", "+00") };
        match &o.kind {
            RecordKind::Commit { xid, time, prepared: false } => {
                assert!(desc.starts_with("COMMIT "), "{}: {desc}", o.lsn);
                assert_eq!(
                    ts(&desc["COMMIT ".len()..]),
                    time.to_string(),
                    "commit time at {}",
                    o.lsn
                );
                assert_eq!(*xid, t.2);
                *kinds.entry("commit").or_default() += 1;
            }
            RecordKind::Commit { xid, time, prepared: true } => {
                let want =
                    format!("COMMIT_PREPARED {xid}: {}", time.to_string().replace("+00", " UTC"));
                assert!(desc.starts_with(&want), "{}: {desc} vs {want}", o.lsn);
                *kinds.entry("commit prepared").or_default() += 1;
            }
            RecordKind::Abort { xid, time, prepared: true } => {
                let want =
                    format!("ABORT_PREPARED {xid}: {}", time.to_string().replace("+00", " UTC"));
                assert!(desc.starts_with(&want), "{}: {desc} vs {want}", o.lsn);
                *kinds.entry("abort prepared").or_default() += 1;
            }
            RecordKind::Abort { time, prepared: false, .. } => {
                assert!(desc.starts_with("ABORT "), "{}: {desc}", o.lsn);
                assert_eq!(ts(&desc["ABORT ".len()..]), time.to_string());
                *kinds.entry("abort").or_default() += 1;
            }
            RecordKind::RestorePoint { name, .. } => {
                assert_eq!(desc.trim(), format!("RESTORE_POINT {name}"));
                assert_eq!(name, "walrs-test-point");
                *kinds.entry("restore point").or_default() += 1;
            }
            RecordKind::Switch => {
                assert!(desc.starts_with("SWITCH"), "{desc}");
                *kinds.entry("switch").or_default() += 1;
            }
            RecordKind::Checkpoint { redo, shutdown } => {
                let want = format!(
                    "CHECKPOINT_{} redo {redo};",
                    if *shutdown { "SHUTDOWN" } else { "ONLINE" }
                );
                assert!(desc.starts_with(&want), "{}: {desc} vs {want}", o.lsn);
                *kinds.entry("checkpoint").or_default() += 1;
            }
            _ => {
                assert!(
                    !(t.1 == "Transaction"
                        && (desc.starts_with("COMMIT") || desc.starts_with("ABORT"))),
                    "missed a transaction end at {}: {desc}",
                    o.lsn
                );
            }
        }
    }
    for k in [
        "commit",
        "commit prepared",
        "abort prepared",
        "abort",
        "restore point",
        "switch",
        "checkpoint",
    ] {
        assert!(kinds.get(k).copied().unwrap_or(0) >= 1, "no {k} seen: {kinds:?}");
    }
    eprintln!("{} records agree with pg_waldump: {kinds:?}", ours.len());
}
