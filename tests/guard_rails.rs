//! Guard rails (issue 12) against a real PostgreSQL 15: `basebackup` refusing broken archiving
//! before it streams anything, a command run as root keeping the repository's owner (and
//! `restore --owner`), and every printing command writing into a closed pipe without a panic.

use std::path::PathBuf;
use std::time::Duration;

use crate::util::pg::{PgCluster, PgWorld};
use crate::util::{Out, Walrs, chown_to_test_user, test_user};

struct Env {
    world: PgWorld,
    repo: PathBuf,
}

impl Env {
    fn walrs(&self) -> Walrs {
        Walrs::new(&self.world.walrs).env("WALRS_REPO", &self.repo)
    }
}

/// A world with a repository owned by the test user and a cluster whose archive_command is
/// `archive_command` (with `{walrs}` and `{repo}` replaced), started.
fn setup(archive_command: &str) -> (Env, PgCluster) {
    let world = PgWorld::new();
    let repo = world.mkdir("repo");
    let cmd = archive_command
        .replace("{walrs}", &world.walrs.display().to_string())
        .replace("{repo}", &repo.display().to_string());
    let conf = format!("archive_mode = on\narchive_command = '{}'\n", cmd.replace('\'', "''"));
    let mut a = PgCluster::init(&world, "a", &conf);
    a.start();
    (Env { world, repo }, a)
}

fn conn(a: &PgCluster) -> String {
    format!("host={} port={} user=postgres", a.sock.display(), a.port)
}

#[track_caller]
fn no_panic(out: &Out, code: i32, what: &str) {
    assert!(
        !out.stderr.contains("panicked") && out.code != 101,
        "{what}: a closed stdout made walrs panic (exit {}):\n{}",
        out.code,
        out.stderr
    );
    assert_eq!(out.code, code, "{what}: exit code; stderr:\n{}", out.stderr);
}

/// Issue 12, item 8: every command that prints, with stdout a pipe nobody reads any more
/// (`walrs wal list | head -1` after `head` exited). The output ends; the command does its work
/// and exits with its own code: a base backup is still complete, a restore still restores.
#[test]
fn closed_stdout_is_not_a_panic() {
    let (e, a) = setup("WALRS_REPO={repo} {walrs} push %p");
    a.sql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g");
    let (u, g) = test_user();
    let out = e.walrs().run_as(u, g).args(["basebackup", "-d", &conn(&a)]).run_closed_stdout();
    no_panic(&out, 0, "basebackup");
    // The backup is complete although its id could not be printed.
    let list = e.walrs().args(["backup", "list", "--json"]).run();
    list.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let id = v["backups"][0]["id"].as_str().expect("a complete backup").to_string();
    a.switch_and_wait_archived();

    let dry = e.world.path("dry");
    let dry = dry.to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["wal", "list"],
        vec!["wal", "list", "--json"],
        vec!["wal", "verify"],
        vec!["wal", "verify", "--json"],
        vec!["wal", "index", "--rebuild"],
        vec!["timeline"],
        vec!["timeline", "--json"],
        vec!["backup", "list"],
        vec!["backup", "list", "--all", "--json"],
        vec!["backup", "show", &id],
        vec!["backup", "show", &id, "--json"],
        vec!["backup", "verify", &id],
        vec!["restore", "--pgdata", dry, "--dry-run"],
        vec!["restore", "--pgdata", dry, "--dry-run", "--json"],
    ];
    for args in &cases {
        let out = e.walrs().args(args).run_closed_stdout();
        no_panic(&out, 0, &args.join(" "));
    }
    // A real restore: the plan cannot be printed, the restore completes and exits 0.
    for json in [false, true] {
        let dir = e.world.path(if json { "r-json" } else { "r" });
        let mut args = vec!["restore", "--pgdata", dir.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        let out = e.walrs().args(&args).run_closed_stdout();
        no_panic(&out, 0, &args.join(" "));
        assert!(dir.join("recovery.signal").exists(), "the restore did not complete");
        assert!(dir.join("PG_VERSION").exists(), "the restore did not complete");
    }
    // And the restored directory recovers.
    let dir = e.world.path("r");
    chown_to_test_user(&dir);
    let mut c = PgCluster::with_data(&e.world, "r-run", dir, "archive_mode = off\n");
    c.start();
    c.wait_for("the end of recovery", Duration::from_secs(120), || {
        c.sql("SELECT pg_is_in_recovery()") == "f"
    });
    assert_eq!(c.sql("SELECT count(*) FROM t"), "1000");
    c.stop();
}
