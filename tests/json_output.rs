//! Snapshots (insta) of every `--json` output and of the text of `restore --dry-run` (issue 13),
//! taken from real repositories the tests build: a PostgreSQL 15 cluster archiving through `walrs
//! push`, a base backup, a restore point, a restored copy promoted to timeline 2 that archives
//! into the same repository while timeline 1 goes on (diverged histories), and a MariaDB server
//! whose binlogs `walrs binlog tail` stores. The volatile parts (times, LSNs, segment numbers,
//! system ids, backup ids, sizes and counts, digests, paths) are redacted, so a snapshot changes
//! only when the shape of an output does: a renamed, added, removed or retyped field. The shapes
//! are documented in docs/json.md; a missing snapshot fails (scripts/test.sh runs with
//! `INSTA_UPDATE=no`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use regex::Regex;
use serde_json::Value;

use crate::pitr::{basebackup, setup};
use crate::util::mariadb::{MariaDb, REPL_PASSWORD, REPL_USER};
use crate::util::pg::PgCluster;
use crate::util::{Walrs, chown_to_test_user, short_tempdir, walrs_bin};

/// Numbers that are the same in every run: kept. Every other number is redacted.
const STABLE_NUMBERS: &[&str] = &[
    "timeline",
    "timelines",
    "target_timeline",
    "stop_timeline",
    "parent",
    "child",
    "other_branches",
    "pg_version",
    "format_version",
    "server_id",
    "name_uses",
];

/// Arrays of a PostgreSQL repository whose length depends on the run (how much WAL, how many
/// files): only their first element is kept, which still shows the shape of the elements.
pub(crate) const VARIABLE_ARRAYS: &[&str] = &["files", "chunks", "wal_files", "temporaries", "wal"];

/// Redacts the volatile parts of output text.
pub(crate) struct Redactor {
    dirs: Vec<String>,
    variable_arrays: &'static [&'static str],
    rules: Vec<(Regex, &'static str)>,
}

impl Redactor {
    pub(crate) fn new(dirs: &[&Path], variable_arrays: &'static [&'static str]) -> Redactor {
        let r = |re: &str, with: &'static str| (Regex::new(re).unwrap(), with);
        Redactor {
            dirs: dirs.iter().map(|d| d.display().to_string()).collect(),
            variable_arrays,
            rules: vec![
                r(r"\b(restore|basebackup)-[A-Za-z0-9_-]+-\d+-\d+\b", "$1-[holder]"),
                r(r"\b\d{8}T\d{6}Z\b", "[backup-id]"),
                r(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", "[time]"),
                r(r"\b\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\+00", "[pg-time]"),
                r(r"\b([0-9A-F]{8})[0-9A-F]{16}\b", "${1}[seg]"),
                r(r"\b[0-9A-F]{1,8}/[0-9A-F]{1,8}\b", "[lsn]"),
                r(r"\b[0-9a-f]{64}\b", "[digest]"),
                r(r"\b(xxh3|sha256):[0-9a-f]+\b", "$1:[digest]"),
                r(r"\b\d+-\d+-\d+(\.\.\d+-\d+-\d+)?\b", "[gtid]"),
                r(r"\bxid \d+", "xid [xid]"),
                r(r"\b\d+ (segment\(s\)|MiB|file\(s\)|bytes)", "[n] $1"),
            ],
        }
    }

    fn text(&self, s: &str) -> String {
        let mut s = s.to_string();
        for d in &self.dirs {
            s = s.replace(d.as_str(), "[dir]");
        }
        for (re, with) in &self.rules {
            s = re.replace_all(&s, *with).into_owned();
        }
        s
    }

    fn json(&self, v: &Value, key: &str) -> Value {
        match v {
            Value::String(_) if key == "system_identifier" => Value::from("[system-id]"),
            Value::String(s) if key == "version" || key == "server_uuid" => {
                Value::from(if s.is_empty() { "" } else { "[server]" })
            }
            Value::String(s) => Value::from(self.text(s)),
            Value::Number(_) if STABLE_NUMBERS.contains(&key) => v.clone(),
            Value::Number(_) => Value::from("[n]"),
            Value::Array(a) => {
                let keep =
                    if self.variable_arrays.contains(&key) { a.len().min(1) } else { a.len() };
                Value::Array(a.iter().take(keep).map(|e| self.json(e, key)).collect())
            }
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, e)| (k.clone(), self.json(e, k))).collect())
            }
            other => other.clone(),
        }
    }

    /// The command's JSON, checked to be one object, redacted and pretty-printed.
    pub(crate) fn snapshot(&self, stdout: &str) -> String {
        let v: Value =
            serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"));
        assert!(v.is_object(), "every --json output is one object:\n{stdout}");
        serde_json::to_string_pretty(&self.json(&v, "")).unwrap()
    }
}

fn ok(w: Walrs) -> String {
    let out = w.run();
    out.expect_code(0);
    out.stdout
}

/// Issue 13: one shape convention across commands, documented in docs/json.md. Every `--json`
/// output of a PostgreSQL repository, and the text of `restore --dry-run`.
#[test]
fn json_outputs_have_the_documented_shapes() {
    let (e, mut a) = setup(false);
    a.sql("CREATE TABLE t (id int, v text)");
    a.sql("INSERT INTO t SELECT g, 'one' FROM generate_series(1, 1000) g");
    let id = basebackup(&e, &a);
    a.sql("INSERT INTO t SELECT g, 'two' FROM generate_series(1001, 2000) g");
    std::thread::sleep(Duration::from_millis(1100));
    let between = a.sql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));
    a.sql("SELECT pg_create_restore_point('snap')");
    a.sql("INSERT INTO t SELECT g, 'three' FROM generate_series(2001, 3000) g");
    a.switch_and_wait_archived();

    // A restored copy promoted to timeline 2, archiving into the same repository.
    let dir = e.world.path("b");
    e.run(&["restore", "--pgdata", dir.to_str().unwrap(), "--archive-mode=preserve"])
        .expect_code(0);
    chown_to_test_user(&dir);
    let archive = format!(
        "archive_mode = on\narchive_command = 'WALRS_REPO={} {} push %p'\n",
        e.repo.display(),
        e.world.walrs.display()
    );
    let mut b = PgCluster::with_data(&e.world, "b-run", dir, &archive);
    b.start();
    b.wait_for("promotion", Duration::from_secs(120), || {
        b.sql("SELECT pg_is_in_recovery()") == "f"
    });
    b.sql("INSERT INTO t SELECT g, 'tl2' FROM generate_series(3001, 3500) g");
    b.switch_and_wait_archived();
    b.stop();
    // Timeline 1 goes on after timeline 2 branched: diverged histories.
    a.sql("INSERT INTO t SELECT g, 'tl1-after' FROM generate_series(4001, 4300) g");
    a.switch_and_wait_archived();
    a.stop();

    let red = Redactor::new(&[e.world.dir.path()], VARIABLE_ARRAYS);
    let run = |args: &[&str]| ok(e.walrs().args(args));
    let json = |args: &[&str]| red.snapshot(&run(args));
    insta::assert_snapshot!("backup_list", json(&["backup", "list", "--json"]));
    insta::assert_snapshot!("backup_list_all", json(&["backup", "list", "--all", "--json"]));
    insta::assert_snapshot!("backup_show", json(&["backup", "show", &id, "--json"]));
    insta::assert_snapshot!("wal_list", json(&["wal", "list", "--json"]));
    insta::assert_snapshot!("wal_verify", json(&["wal", "verify", "--json"]));
    insta::assert_snapshot!("timeline", json(&["timeline", "--json"]));

    let pgdata = e.world.path("never-written");
    let pgdata = pgdata.to_str().unwrap();
    let plans: [(&str, Vec<&str>); 5] = [
        ("restore_plan_end", vec![]),
        ("restore_plan_latest", vec!["--target-timeline", "latest"]),
        ("restore_plan_name", vec!["--target-name", "snap", "--target-timeline", "1"]),
        ("restore_plan_time", vec!["--target-time", &between, "--target-timeline", "1"]),
        ("restore_plan_immediate", vec!["--target-immediate", "--target-timeline", "1"]),
    ];
    for (name, extra) in &plans {
        let mut args = vec!["restore", "--pgdata", pgdata, "--dry-run"];
        args.extend_from_slice(extra);
        let text = red.text(&run(&args));
        insta::assert_snapshot!(format!("{name}_text"), text);
        args.push("--json");
        insta::assert_snapshot!(*name, json(&args));
    }
    assert!(!Path::new(pgdata).exists(), "a dry run wrote the data directory");
    // Issue 15: the retention plan (the restore above left its lease).
    insta::assert_snapshot!("expire", json(&["expire", "--retain-full", "1", "--json"]));
}

/// `walrs binlog tail` in the background, killed when the test ends.
struct Tail(std::process::Child);

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Issue 13: `binlog list --json` of binlogs a real MariaDB wrote: a closed file and the active
/// one, in the documented shape.
#[test]
fn binlog_list_json_has_the_documented_shape() {
    let db = MariaDb::start(&[]);
    let tmp = short_tempdir("wjs");
    let repo: PathBuf = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let walrs = || Walrs::new(&walrs_bin()).env("WALRS_REPO", &repo);
    db.sql("CREATE DATABASE d");
    db.sql("CREATE TABLE d.t (id int primary key, v text)");
    db.sql("INSERT INTO d.t VALUES (1, 'one'), (2, 'two')");
    db.sql("FLUSH BINARY LOGS");
    db.sql("INSERT INTO d.t VALUES (3, 'three')");
    let log = tmp.path().join("tail.log");
    let _tail = Tail(
        walrs()
            .args(["binlog", "tail", "--host", "127.0.0.1", "--user", REPL_USER])
            .args(["--server-id", "4242", "--port", &db.port.to_string()])
            .args(["--flush-interval", "1s"])
            .env("WALRS_MYSQL_PASSWORD", REPL_PASSWORD)
            .spawn_logged(&log),
    );
    // Until the closed file and the active one, with its events, are stored.
    let t0 = Instant::now();
    let listed = loop {
        let out = walrs().args(["binlog", "list", "--json"]).run();
        if out.code == 0 {
            let v: Value = serde_json::from_str(&out.stdout).unwrap();
            let states: Vec<&str> = v["files"]
                .as_array()
                .map(|f| f.iter().filter_map(|f| f["state"].as_str()).collect())
                .unwrap_or_default();
            if states == ["closed", "active"] && v["files"][1]["last_event_time"].is_string() {
                break out.stdout;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the tail did not store the binlogs:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let red = Redactor::new(&[tmp.path(), db.dir.path()], &[]);
    insta::assert_snapshot!("binlog_list", red.snapshot(&listed));
}
