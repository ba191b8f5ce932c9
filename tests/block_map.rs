//! Issue 18, step 1 and 2: the block maps `walrs push` stores per segment, against `pg_waldump` of
//! the same segments. A PostgreSQL workload that touches relations in every way the changed-block
//! backup must know about (inserts and updates with full-page images, an index build, a VACUUM
//! that truncates a table, VACUUM FULL, a dropped table, a rolled-back CREATE TABLE, an unlogged
//! table's init fork, CREATE DATABASE with both strategies where the version has them, DROP
//! DATABASE) is archived through `walrs push`; the union of the block maps in the repository
//! (records continuing into the next segment resolved from the stored WAL) must equal the set of
//! `blkref #N: rel T/D/R [fork F] blk B` that pg_waldump prints, and the smgr creates and
//! truncates, the relations commit/abort records drop and the database records must equal the
//! ones pg_waldump describes. On PostgreSQL 15 (the system's pg_waldump) and 17 (the PyPI tool
//! set's). Then `wal index --rebuild` writes the same maps again, and `expire` removes a map with
//! its segment.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use walrs::index::blockmap::{BlockMap, load_block_map, resolve_unresolved};
use walrs::pg::{BlockRef, RelFileLocator, WalFileName};
use walrs::repo::Repository;
use walrs::storage::{AnyStorage, fs::FsStorage};

use crate::util::files;
use crate::util::pg::{PgCluster, PgWorld, pg_bin};

/// pg_waldump of PostgreSQL `major`: the system's for 15, the PyPI tool set's otherwise.
fn waldump_bin(major: u32) -> PathBuf {
    if major == 15 {
        return pg_bin().join("pg_waldump");
    }
    let root = std::env::var("WALRS_TEST_PGTOOLS_ROOT")
        .unwrap_or_else(|_| "/opt/walrs-test-pgtools".into());
    let dir = PathBuf::from(root).join(major.to_string());
    std::fs::read_dir(&dir)
        .ok()
        .and_then(|rd| {
            rd.filter_map(|e| e.ok()).map(|e| e.path().join("bin/pg_waldump")).find(|b| b.exists())
        })
        .unwrap_or_else(|| {
            panic!(
                "pg_waldump {major} not found under {} (scripts/install-prereqs.sh)",
                dir.display()
            )
        })
}

/// What pg_waldump says about the relation files.
#[derive(Default, Debug)]
struct Theirs {
    blocks: BTreeSet<BlockRef>,
    creates: BTreeSet<(u32, u32, u32, u8)>,
    truncates: BTreeSet<(u32, u32, u32, u32, u32)>,
    drops: BTreeSet<(u32, u32, u32)>,
    db_records: usize,
}

fn fork_no(name: &str) -> u8 {
    match name {
        "main" => 0,
        "fsm" => 1,
        "vm" => 2,
        "init" => 3,
        other => panic!("fork {other}"),
    }
}

/// `base/5/16384_init`, `global/1262` as pg_waldump prints relation paths: (spc, db, rel, fork).
fn rel_path(p: &str) -> (u32, u32, u32, u8) {
    let (path, fork) = match p.rsplit_once('_') {
        Some((a, f)) if ["fsm", "vm", "init"].contains(&f) => (a, fork_no(f)),
        _ => (p, 0),
    };
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["base", db, rel] => (1663, db.parse().unwrap(), rel.parse().unwrap(), fork),
        ["global", rel] => (1664, 0, rel.parse().unwrap(), fork),
        _ => panic!("relation path {p}"),
    }
}

fn waldump(major: u32, dir: &Path, first: &str, last: &str) -> Theirs {
    let o =
        Command::new(waldump_bin(major)).arg("-p").arg(dir).args([first, last]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let mut t = Theirs::default();
    for line in text.lines().filter(|l| l.starts_with("rmgr:")) {
        let rmgr = line["rmgr:".len()..].split_whitespace().next().unwrap();
        let desc = line.split("desc: ").nth(1).unwrap_or_default();
        // Block references: "blkref #0: rel 1663/5/16384 fork fsm blk 2 FPW" (15) or
        // "blkref #0: rel 1663/5/16384, fork fsm, blk 2" (16+).
        for part in desc.split("blkref #").skip(1) {
            let words: Vec<&str> = part
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|w| !w.is_empty())
                .collect();
            let rel = words.iter().position(|w| *w == "rel").unwrap();
            let ids: Vec<u32> = words[rel + 1].split('/').map(|x| x.parse().unwrap()).collect();
            let fork =
                words.iter().position(|w| *w == "fork").map(|i| fork_no(words[i + 1])).unwrap_or(0);
            let blk = words.iter().position(|w| *w == "blk").unwrap();
            t.blocks.insert(BlockRef {
                rel: RelFileLocator { spc: ids[0], db: ids[1], rel: ids[2] },
                fork,
                block: words[blk + 1].parse().unwrap(),
            });
        }
        let desc_only = desc.split(", blkref #").next().unwrap_or_default();
        match rmgr {
            "Storage" if desc_only.starts_with("CREATE ") => {
                t.creates.insert(rel_path(desc_only["CREATE ".len()..].trim()));
            }
            "Storage" if desc_only.starts_with("TRUNCATE ") => {
                // "TRUNCATE base/5/16384 to 12 blocks flags 7"
                let w: Vec<&str> = desc_only.split_whitespace().collect();
                let (s, d, r, _) = rel_path(w[1]);
                t.truncates.insert((s, d, r, w[3].parse().unwrap(), w[6].parse().unwrap()));
            }
            "Database" => t.db_records += 1,
            "Transaction" if desc_only.starts_with("COMMIT") || desc_only.starts_with("ABORT") => {
                for section in desc_only.split("; ") {
                    if let Some(rels) = section.strip_prefix("rels: ") {
                        for r in rels.split_whitespace() {
                            let (s, d, r, _) = rel_path(r);
                            t.drops.insert((s, d, r));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    t
}

/// The union of the block maps of `names` in the repository, unresolved records resolved.
fn ours(repo: &Repository, names: &[String]) -> (Theirs, usize, usize) {
    let mut t = Theirs::default();
    let (mut unresolved, mut maps) = (0, 0);
    for (i, n) in names.iter().enumerate() {
        let name = WalFileName::parse(n).unwrap();
        let mut m: BlockMap =
            load_block_map(repo, &name).unwrap().unwrap_or_else(|| panic!("{n}: no block map"));
        maps += 1;
        assert!(m.error.is_none(), "{n}: {:?}", m.error);
        if m.unresolved.is_some() {
            unresolved += 1;
            let next = WalFileName::parse(&names[i + 1]).unwrap();
            m = resolve_unresolved(repo, &m, &next).unwrap().expect("resolved");
        }
        assert!(m.complete, "{n}");
        t.blocks.extend(m.block_refs());
        t.creates.extend(m.creates.iter().copied());
        t.truncates.extend(m.truncates.iter().copied());
        t.drops.extend(m.drops.iter().copied());
        t.db_records += m.db_creates.len() + m.db_drops.len();
    }
    (t, unresolved, maps)
}

fn check_major(major: u32) {
    let world = PgWorld::new();
    let repo_dir = world.mkdir("repo");
    let arch = world.mkdir("arch");
    let walrs_bin = world.walrs.display().to_string();
    let conf = format!(
        "archive_mode = on\narchive_command = 'cp %p {}/%f && WALRS_REPO={} {walrs_bin} push %p'\n",
        arch.display(),
        repo_dir.display()
    );
    let mut pg = PgCluster::init_major(&world, "a", &conf, major);
    pg.start();
    pg.sql("SELECT pg_switch_wal()");
    pg.sql("CREATE TABLE t (a int PRIMARY KEY, b text)");
    pg.sql("CHECKPOINT");
    pg.sql("INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 300000) g");
    pg.sql("UPDATE t SET b = 'y' WHERE a % 97 = 0");
    pg.sql("CREATE INDEX t_b ON t (b)");
    pg.sql("CREATE TABLE shrink AS SELECT g AS a, repeat('z', 300) AS b FROM generate_series(1, 20000) g");
    pg.sql("DELETE FROM shrink WHERE a > 500");
    pg.sql("VACUUM shrink");
    pg.sql("CREATE TABLE rewritten AS SELECT g AS a FROM generate_series(1, 10000) g");
    pg.sql("VACUUM FULL rewritten");
    pg.sql("CREATE TABLE gone AS SELECT g AS a FROM generate_series(1, 1000) g");
    pg.sql("DROP TABLE gone");
    pg.sql("BEGIN; CREATE TABLE never (a int); INSERT INTO never VALUES (1); ROLLBACK");
    pg.sql("CREATE UNLOGGED TABLE u (a int)");
    pg.sql("CREATE DATABASE db1");
    if major >= 15 {
        pg.sql("CREATE DATABASE db2 STRATEGY FILE_COPY");
        pg.sql("DROP DATABASE db2");
    }
    pg.sql("DROP DATABASE db1");
    pg.sql("CHECKPOINT");
    pg.switch_and_wait_archived();
    pg.stop();

    let names: Vec<String> = files(&arch).into_iter().filter(|n| n.len() == 24).collect();
    // The first segment's records began before walrs saw WAL; skip it (pg_waldump starts there too).
    let names = names[1..].to_vec();
    assert!(names.len() >= 6, "{names:?}");
    let theirs = waldump(major, &arch, names.first().unwrap(), names.last().unwrap());
    let repo = Repository::new(AnyStorage::Fs(FsStorage::open(&repo_dir).unwrap()), None);
    let (ours, unresolved, maps) = ours(&repo, &names);
    assert!(
        theirs.blocks.len() > 5000,
        "pg_waldump printed {} block references",
        theirs.blocks.len()
    );
    let only_ours: Vec<_> = ours.blocks.difference(&theirs.blocks).take(5).collect();
    let only_theirs: Vec<_> = theirs.blocks.difference(&ours.blocks).take(5).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "block sets differ ({} vs {}): only walrs {only_ours:?}, only pg_waldump {only_theirs:?}",
        ours.blocks.len(),
        theirs.blocks.len()
    );
    assert_eq!(ours.creates, theirs.creates, "smgr creates");
    assert!(ours.creates.iter().any(|c| c.3 == 3), "an init fork created: {:?}", ours.creates);
    assert_eq!(ours.truncates, theirs.truncates, "smgr truncates");
    assert!(!ours.truncates.is_empty(), "VACUUM truncated shrink");
    assert_eq!(ours.drops, theirs.drops, "dropped relations");
    assert!(ours.drops.len() >= 3, "{:?}", ours.drops);
    assert_eq!(ours.db_records, theirs.db_records, "database records");
    assert!(ours.db_records >= 2);
    eprintln!(
        "PostgreSQL {major}: {} block references, {} creates, {} truncates, {} drops, {} database records agree with pg_waldump over {maps} segments ({unresolved} with a record resolved from the next segment)",
        ours.blocks.len(),
        ours.creates.len(),
        ours.truncates.len(),
        ours.drops.len(),
        ours.db_records
    );

    // A rebuild writes the same maps.
    let before: Vec<BlockMap> = names
        .iter()
        .map(|n| load_block_map(&repo, &WalFileName::parse(n).unwrap()).unwrap().unwrap())
        .collect();
    for n in &names {
        let key = repo_dir.join("index/blocks").join(&n[..16]).join(n);
        std::fs::remove_file(&key).unwrap();
    }
    crate::util::walrs(&repo_dir).args(["wal", "index", "--rebuild"]).run().expect_code(0);
    for (n, b) in names.iter().zip(&before) {
        let again = load_block_map(&repo, &WalFileName::parse(n).unwrap()).unwrap();
        assert_eq!(again.as_ref(), Some(b), "{n}: rebuilt block map");
    }
}

#[test]
fn pg15_block_maps_agree_with_pg_waldump() {
    check_major(15);
}

#[test]
fn pg17_block_maps_agree_with_pg_waldump() {
    check_major(17);
}
