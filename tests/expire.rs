//! Issue 15, retention end to end with a real PostgreSQL 15, on the file system and on S3: four
//! backups with transactions between, `walrs expire --retain-full 2` as a dry run (nothing
//! changes) and confirmed (the two old backups and their WAL gone, `wal verify` clean, a PITR
//! target between the kept backups exact, one before them refused with 19), pins, `backup
//! delete`, an expire while a base backup waits for its WAL, and `kill -9` of expire at random
//! points followed by a rerun that finishes the job.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::pitr::SUM;
use crate::util::pg::{PgCluster, PgWorld};
use crate::util::s3::S3Server;
use crate::util::{Out, Walrs, chown_to_test_user, files};
use walrs::storage::Storage;

/// Where the repository is.
enum Backend {
    Fs(PathBuf),
    S3 { server: S3Server, creds: PathBuf },
}

struct Env {
    world: PgWorld,
    backend: Backend,
}

const PREFIX: &str = "expire";

impl Env {
    fn new(s3: bool, block: Option<&std::path::Path>) -> (Env, PgCluster) {
        let world = PgWorld::new();
        let backend = if s3 {
            let server = S3Server::start();
            let creds = world.path("aws-credentials");
            crate::util::s3_credentials_file(&creds);
            Backend::S3 { server, creds }
        } else {
            Backend::Fs(world.mkdir("repo"))
        };
        let e = Env { world, backend };
        let env_s: String = e.env_vars().iter().map(|(k, v)| format!("{k}={v} ")).collect();
        // With `block`, archiving fails while that file exists. Look-ahead is off then: a
        // background pusher an earlier call started goes on archiving ready segments past the
        // guard for a while (it lingers 500 ms, longer on a busy machine), and the held-back
        // segment would arrive anyway.
        let (guard, parallel) = match block {
            Some(b) => (format!("test ! -e {} && ", b.display()), " --parallel 1"),
            None => (String::new(), ""),
        };
        let archive = format!(
            "archive_mode = on\narchive_command = '{guard}{env_s}{} push{parallel} %p'\n",
            e.world.walrs.display()
        );
        let mut a = PgCluster::init(&e.world, "a", &archive);
        a.start();
        (e, a)
    }

    fn env_vars(&self) -> Vec<(&'static str, String)> {
        match &self.backend {
            Backend::Fs(repo) => vec![("WALRS_REPO", repo.display().to_string())],
            Backend::S3 { server, creds } => vec![
                ("WALRS_REPO", server.url(PREFIX)),
                ("WALRS_S3_ENDPOINT", server.endpoint()),
                ("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()),
            ],
        }
    }

    fn walrs(&self) -> Walrs {
        let mut w = Walrs::new(&self.world.walrs);
        for (k, v) in self.env_vars() {
            w = w.env(k, v);
        }
        w
    }

    fn run(&self, args: &[&str]) -> Out {
        self.walrs().args(args).run()
    }

    /// Every object key in the repository, sorted.
    fn keys(&self) -> Vec<String> {
        match &self.backend {
            Backend::Fs(repo) => files(repo),
            Backend::S3 { server, .. } => {
                let s = server.storage(PREFIX, Duration::from_secs(60));
                let mut v: Vec<String> =
                    s.list("").unwrap().map(|m| m.unwrap().key.to_string()).collect();
                v.sort();
                v
            }
        }
    }

    fn basebackup(&self, a: &PgCluster) -> String {
        let (u, g) = crate::util::test_user();
        let out = self
            .walrs()
            .run_as(u, g)
            .args([
                "basebackup",
                "-d",
                &format!("host={} port={} user=postgres", a.sock.display(), a.port),
            ])
            .run();
        out.expect_code(0);
        out.stdout.trim().to_string()
    }

    /// Restores with `args`, starts a server on it and returns the table checksum.
    fn restore_and_read(&self, name: &str, args: &[&str]) -> String {
        let dir = self.world.path(name);
        let mut all = vec!["restore", "--pgdata", dir.to_str().unwrap()];
        all.extend_from_slice(args);
        self.run(&all).expect_code(0);
        chown_to_test_user(&dir);
        let mut c =
            PgCluster::with_data(&self.world, &format!("{name}-run"), dir, "archive_mode = off\n");
        c.start();
        c.wait_for("the end of recovery", Duration::from_secs(120), || {
            c.sql("SELECT pg_is_in_recovery()") == "f"
        });
        let sum = c.sql(SUM);
        c.stop();
        sum
    }

    fn backup_ids(&self) -> Vec<String> {
        let out = self.run(&["backup", "list", "--json"]);
        out.expect_code(0);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Four backups with a batch of rows before each and after the last; returns the ids, the
/// table checksums after each batch, and a time between each pair of batches.
fn four_backups(e: &Env, a: &PgCluster) -> (Vec<String>, Vec<String>, Vec<String>) {
    a.sql("CREATE TABLE t (id int, v text)");
    let (mut ids, mut sums, mut times) = (vec![], vec![], vec![]);
    for i in 0..4 {
        a.sql(&format!(
            "INSERT INTO t SELECT g, 'b{i}' FROM generate_series({}, {}) g",
            i * 100 + 1,
            i * 100 + 100
        ));
        a.switch_and_wait_archived();
        ids.push(e.basebackup(a));
        std::thread::sleep(Duration::from_millis(1100));
        a.sql(&format!(
            "INSERT INTO t SELECT g, 'a{i}' FROM generate_series({}, {}) g",
            i * 100 + 51,
            i * 100 + 60
        ));
        sums.push(a.sql(SUM));
        std::thread::sleep(Duration::from_millis(1100));
        times.push(a.sql("SELECT clock_timestamp()"));
        std::thread::sleep(Duration::from_millis(1100));
    }
    a.sql("INSERT INTO t SELECT g, 'end' FROM generate_series(1000, 1010) g");
    a.switch_and_wait_archived();
    (ids, sums, times)
}

/// Whether the key `k` is one of backup `id`'s objects (its directory, its pin): whole path
/// components, since a second backup within the same second is `<id>-2`.
fn names_backup(k: &str, id: &str) -> bool {
    k.split('/').any(|c| c == id || c.strip_suffix(".json") == Some(id))
}

fn wal_segments(keys: &[String]) -> Vec<String> {
    keys.iter()
        .filter(|k| k.starts_with("wal/") && !k.starts_with("wal/history/"))
        .filter_map(|k| k.rsplit('/').next())
        .filter(|n| n.len() == 24)
        .map(str::to_owned)
        .collect()
}

fn retain_full_2(s3: bool) {
    let (e, a) = Env::new(s3, None);
    let (ids, sums, times) = four_backups(&e, &a);
    assert_eq!(e.backup_ids(), ids);

    // A dry run prints the plan and changes nothing (a reader first completes the index
    // roll-ups, a cache any reader may write).
    e.run(&["wal", "list"]).expect_code(0);
    let before = e.keys();
    let out = e.run(&["expire", "--retain-full", "2", "--explain"]);
    out.expect_code(0);
    for old in &ids[..2] {
        assert!(out.stdout.contains(&format!("backup {old}  drop")), "{}", out.stdout);
    }
    assert!(out.stdout.contains("kept: newest 2 full"), "{}", out.stdout);
    assert!(out.stdout.contains("dropped: older than every kept backup"), "{}", out.stdout);
    assert!(out.stdout.contains("dry run: nothing was deleted"), "{}", out.stdout);
    assert_eq!(e.keys(), before, "a dry run changed the repository");
    let json = e.run(&["expire", "--retain-full", "2", "--json"]);
    json.expect_code(0);
    let plan: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(plan["confirmed"], false);
    assert_eq!(plan["backups"][0]["keep"], false);
    assert_eq!(plan["backups"][3]["reasons"][0], "kept: newest backup");
    assert_eq!(e.keys(), before);
    // A policy that keeps nothing is refused.
    e.run(&["expire", "--retain-full", "0", "--confirm"]).expect_code(2);
    assert_eq!(e.keys(), before);

    // Pins hold; a pinned backup cannot be deleted.
    e.run(&["backup", "keep", &ids[0]]).expect_code(0);
    e.run(&["expire", "--retain-full", "2", "--confirm"]).expect_code(0);
    assert_eq!(e.backup_ids(), vec![ids[0].clone(), ids[2].clone(), ids[3].clone()]);
    let refused = e.run(&["backup", "delete", &ids[0]]);
    refused.expect_code(2);
    assert!(refused.stderr.contains("pinned"), "{}", refused.stderr);
    e.run(&["backup", "keep", "--remove", &ids[0]]).expect_code(0);

    // Spool leftovers: the database host's spool holds records and prefetched copies of WAL
    // the run below deletes; those past the grace period go with it, nothing else does.
    let show = e.run(&["backup", "show", &ids[2], "--json"]);
    show.expect_code(0);
    let m: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    let first_needed = m["first_wal"].as_str().unwrap().to_owned();
    let segs_before = wal_segments(&before);
    let old: Vec<&String> = segs_before.iter().filter(|s| **s < first_needed).collect();
    assert!(old.len() >= 2, "the test needs WAL before the kept backups: {segs_before:?}");
    let spool = e.world.path("spool");
    let days_ago = std::time::SystemTime::now() - Duration::from_secs(3 * 86_400);
    let put = |rel: &str, aged: bool| {
        let p = spool.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let f = std::fs::File::create(&p).unwrap();
        if aged {
            f.set_modified(days_ago).unwrap();
        }
    };
    put(&format!("prefetch/{}", old[0]), true);
    put(&format!("prefetch/{}.meta", old[0]), true);
    put(&format!("push/{}.ok", old[1]), true);
    put(&format!("push/{}.lock", old[1]), true);
    put(&format!("push/{}.ok", old[0]), false);
    put(&format!("prefetch/{first_needed}"), true);
    put(&format!("prefetch/{first_needed}.meta"), true);
    let spool_files = || {
        let mut v: Vec<String> = ["push", "prefetch"]
            .iter()
            .flat_map(|d| std::fs::read_dir(spool.join(d)).unwrap())
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    let all = spool_files();
    let spool_arg = ["--spool-dir", spool.to_str().unwrap()];
    let dry = e.run(&[&["expire", "--retain-full", "2", "--explain"][..], &spool_arg].concat());
    dry.expect_code(0);
    assert!(dry.stdout.contains("would remove 3 file(s)"), "{}", dry.stdout);
    assert_eq!(spool_files(), all, "a dry run changed the spool");

    // Confirmed: the two old backups and their WAL are gone.
    let out =
        e.run(&[&["expire", "--retain-full", "2", "--confirm", "--json"][..], &spool_arg].concat());
    out.expect_code(0);
    // Issue 16: the deletion's progress is in the log at the default level (target
    // walrs::progress), in objects: the final line counts every object deleted.
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("expire: ") && l.contains(" objects/s"))
        .unwrap_or_else(|| panic!("no progress line: {}", out.stderr));
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let counted = report["deleted"]["objects"].as_u64().unwrap();
    assert!(counted > 0 && line.contains(&format!("expire: {counted} ")), "{line} vs {report}");
    assert_eq!(report["deleted"]["spool"], 3, "{report}");
    assert_eq!(report["spool"].as_array().unwrap().len(), 3, "{report}");
    let mut want = vec![
        format!("{}.lock", old[1]),
        format!("{}.ok", old[0]),
        first_needed.clone(),
        format!("{first_needed}.meta"),
    ];
    want.sort();
    assert_eq!(spool_files(), want);
    assert_eq!(e.backup_ids(), ids[2..].to_vec());
    let keys = e.keys();
    for old in &ids[..2] {
        assert!(!keys.iter().any(|k| names_backup(k, old)), "{old} left objects: {keys:?}");
    }
    let segs = wal_segments(&keys);
    assert!(!segs.is_empty());
    assert!(
        segs.iter().all(|s| s.as_str() >= first_needed.as_str()),
        "WAL older than {first_needed} is left: {segs:?}"
    );
    assert!(
        wal_segments(&before).iter().any(|s| s.as_str() < first_needed.as_str()),
        "the test needs WAL before the kept backups"
    );
    assert!(
        !keys.iter().any(|k| k.starts_with("index/seg/")
            && k.rsplit('/').next().unwrap() < first_needed.as_str()),
        "index entries of deleted WAL are left: {keys:?}"
    );
    e.run(&["wal", "verify"]).expect_code(0);
    // A rerun has nothing left to do.
    let again = e.run(&["expire", "--retain-full", "2", "--confirm", "--json"]);
    again.expect_code(0);
    let again: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(again["deleted"]["backups"], 0);
    assert_eq!(again["deleted"]["segments"], 0);

    // A PITR target between the kept backups is exact; one before them is refused.
    assert_eq!(e.restore_and_read("r-between", &["--target-time", &times[2]]), sums[2]);
    let dir = e.world.path("r-before");
    let out = e.run(&["restore", "--pgdata", dir.to_str().unwrap(), "--target-time", &times[0]]);
    out.expect_code(19);
    assert!(!dir.exists());

    // The restore left a lease on its backup (its recovery fetches WAL for a while): a policy
    // that would drop that backup keeps it, with its WAL.
    let out = e.run(&["expire", "--retain-full", "1", "--confirm", "--json"]);
    out.expect_code(0);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(plan["backups"][0]["id"], ids[2].as_str());
    assert_eq!(plan["backups"][0]["keep"], true, "{plan}");
    let why = plan["backups"][0]["reasons"][0].as_str().unwrap();
    assert!(why.starts_with("kept: lease restore-"), "{why}");
    assert_eq!(plan["leases"][0]["live"], true);
    assert_eq!(e.backup_ids(), ids[2..].to_vec());
    e.run(&["wal", "verify"]).expect_code(0);
}

#[test]
fn issue_15_expire_retain_full_2_fs() {
    retain_full_2(false);
}

#[test]
fn issue_15_expire_retain_full_2_s3() {
    retain_full_2(true);
}

/// kill -9 of `expire --confirm` at random points: after each, every backup the catalogue lists
/// verifies and plans a restore; a rerun finishes the job and `wal verify` is clean.
fn killed_and_rerun(s3: bool) {
    let (e, a) = Env::new(s3, None);
    let (ids, _, _) = four_backups(&e, &a);
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
            as u64;
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut killed = 0;
    for round in 0..6 {
        let delay = Duration::from_millis(next() % (40 + 60 * round));
        let mut child = e.walrs().args(["expire", "--retain-full", "1", "--confirm"]).spawn();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        for id in e.backup_ids() {
            e.run(&["backup", "verify", &id]).expect_code(0);
            let dir = e.world.path(&format!("dry-{round}-{id}"));
            e.run(&[
                "restore",
                "--pgdata",
                dir.to_str().unwrap(),
                "--backup",
                &id,
                "--target-immediate",
                "--dry-run",
            ])
            .expect_code(0);
        }
    }
    eprintln!("expire killed {killed} time(s) of 6 (seed {seed})");
    e.run(&["expire", "--retain-full", "1", "--confirm"]).expect_code(0);
    assert_eq!(e.backup_ids(), vec![ids[3].clone()]);
    // Temporary files of a writer killed mid-write (the marker's) are the file system's to
    // sweep once stale (docs/invariants.md); every object is gone.
    let keys: Vec<String> =
        e.keys().into_iter().filter(|k| !k.rsplit('/').next().unwrap().starts_with('.')).collect();
    for old in &ids[..3] {
        assert!(!keys.iter().any(|k| names_backup(k, old)), "{old} left objects: {keys:?}");
    }
    let labels = keys.iter().filter(|k| k.ends_with(".backup")).count();
    assert_eq!(labels, 1, "only the kept backup's .backup file is left: {keys:?}");
    e.run(&["wal", "verify"]).expect_code(0);
}

#[test]
fn issue_15_expire_killed_at_random_points_fs() {
    killed_and_rerun(false);
}

#[test]
fn issue_15_expire_killed_at_random_points_s3() {
    killed_and_rerun(true);
}

/// Expire while a base backup waits for its WAL (archiving held back): the backup is left alone,
/// completes once the WAL arrives, and restores.
#[test]
fn issue_15_expire_while_a_base_backup_waits_for_its_wal() {
    let block_dir = tempfile::tempdir().unwrap();
    // The archive_command runs as the cluster's user: it must see the block file (a 0700
    // directory of root's hides it, and archiving then goes on).
    std::fs::set_permissions(block_dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let block = block_dir.path().join("block");
    let (e, a) = Env::new(false, Some(&block));
    a.sql("CREATE TABLE t (id int, v text)");
    a.sql("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 100) g");
    let first = e.basebackup(&a);
    a.sql("INSERT INTO t SELECT g, 'y' FROM generate_series(101, 200) g");
    a.switch_and_wait_archived();
    std::fs::write(&block, "").unwrap();
    let (u, g) = crate::util::test_user();
    let bb_log = e.world.path("basebackup.log");
    let mut bb = e
        .walrs()
        .run_as(u, g)
        .args([
            "basebackup",
            "--no-archive-check",
            "--wal-wait",
            "5m",
            "-d",
            &format!("host={} port={} user=postgres", a.sock.display(), a.port),
        ])
        .spawn_logged(&bb_log);
    // Wait until it has stored its data and waits for the WAL (PostgreSQL's manifest stored).
    // Within the first one's second, the new backup's id is the first's with a suffix
    // (20261204T234149Z-2): the directory is compared whole.
    let Backend::Fs(repo) = &e.backend else { unreachable!() };
    let first_manifest = format!("backups/{first}/backup_manifest");
    let start = Instant::now();
    while !files(repo).iter().any(|k| k.ends_with("/backup_manifest") && *k != first_manifest) {
        let log = || std::fs::read_to_string(&bb_log).unwrap_or_default();
        if let Some(status) = bb.try_wait().unwrap() {
            panic!("the base backup ended ({status}) before its WAL wait:\n{}", log());
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the base backup never got to its WAL wait:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Past a grace period of 1 s, only the base backup's lease keeps its directory.
    std::thread::sleep(Duration::from_millis(1100));
    let out =
        e.run(&["expire", "--retain-full", "1", "--retain-grace", "1s", "--confirm", "--explain"]);
    out.expect_code(0);
    assert!(
        out.stdout.contains("keep  kept: lease basebackup-"),
        "{}\nbase backup:\n{}\nserver:\n{}",
        out.stdout,
        std::fs::read_to_string(&bb_log).unwrap_or_default(),
        std::fs::read_to_string(&a.log).unwrap_or_default()
    );
    assert!(out.stdout.contains("live"), "{}", out.stdout);
    std::fs::remove_file(&block).unwrap();
    let status = bb.wait().unwrap();
    assert!(status.success(), "the base backup failed: {status}");
    let ids = e.backup_ids();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let sum = a.sql(SUM);
    a.switch_and_wait_archived();
    assert_eq!(e.restore_and_read("r", &["--backup", &ids[1]]), sum);
}

/// Binlog retention: `walrs expire --retain-binlogs 2 --confirm` on a repository `binlog tail`
/// filled with five binlog files keeps the two newest closed files and the active one, deletes
/// the older ones (metadata first), and what stays still fetches byte for byte.
#[test]
fn issue_15_expire_retain_binlogs() {
    use crate::util::mariadb::{MariaDb, REPL_PASSWORD, REPL_USER};
    let db = MariaDb::start(&[]);
    let tmp = crate::util::short_tempdir("wexp");
    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let w = || Walrs::new(&crate::util::walrs_bin()).env("WALRS_REPO", &repo);
    db.sql("CREATE TABLE t.r (id INT AUTO_INCREMENT PRIMARY KEY, v TEXT) ENGINE=InnoDB");
    for i in 0..4 {
        db.sql(&format!("INSERT INTO t.r (v) VALUES ('{i}')"));
        db.sql("FLUSH BINARY LOGS");
    }
    let server = db.binlogs();
    assert!(server.len() >= 5, "{server:?}");
    let mut tail = w()
        .args(["binlog", "tail", "--host", "127.0.0.1", "--user", REPL_USER, "--server-id", "4243"])
        .arg("--port")
        .arg(db.port.to_string())
        .env("WALRS_MYSQL_PASSWORD", REPL_PASSWORD)
        .spawn_logged(&tmp.path().join("tail.log"));
    let list = || -> Vec<(String, String)> {
        let out = w().args(["binlog", "list", "--json"]).run();
        if out.code != 0 {
            return vec![];
        }
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (f["name"].as_str().unwrap().to_owned(), f["state"].as_str().unwrap().to_owned())
            })
            .collect()
    };
    let start = Instant::now();
    while list().iter().filter(|(_, s)| s == "closed").count() < server.len() - 1 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the tail never caught up: {:?}",
            list()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::process::Command::new("kill").args(["-TERM", &tail.id().to_string()]).status().unwrap();
    tail.wait().unwrap();
    let before = list();
    let closed: Vec<String> =
        before.iter().filter(|(_, s)| s == "closed").map(|(n, _)| n.clone()).collect();

    // A dry run changes nothing; --retain-binlogs alone plans no base backups.
    let out = w().args(["expire", "--retain-binlogs", "2", "--explain"]).run();
    out.expect_code(0);
    assert!(out.stdout.contains(&format!("binlog {}  drop", closed[0])), "{}", out.stdout);
    assert!(out.stdout.contains("kept: newest 2 binlogs"), "{}", out.stdout);
    assert_eq!(list(), before);

    let out = w().args(["expire", "--retain-binlogs", "2", "--confirm", "--json"]).run();
    out.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["deleted"]["binlogs"], closed.len() - 2);
    let after = list();
    let kept: Vec<&str> = after.iter().map(|(n, _)| n.as_str()).collect();
    let want: Vec<&str> = before.iter().skip(closed.len() - 2).map(|(n, _)| n.as_str()).collect();
    assert_eq!(kept, want, "{after:?}");
    assert!(!files(&repo).iter().any(|k| k.contains(&closed[0])), "{:?}", files(&repo));
    for (name, state) in &after {
        if state == "closed" {
            let dest = tmp.path().join(name);
            w().args(["binlog", "fetch", name]).arg(&dest).run().expect_code(0);
            assert_eq!(std::fs::read(&dest).unwrap(), db.binlog_bytes(name), "{name}");
        }
    }
}
