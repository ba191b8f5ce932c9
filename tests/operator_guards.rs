//! Guard rails (issue 12) against a real PostgreSQL 15: `basebackup` refusing broken archiving
//! before it streams anything, a command run as root keeping the repository's owner (and
//! `restore --owner`), and every printing command writing into a closed pipe without a panic.

use std::os::unix::process::CommandExt;
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

/// Every file and directory under `dir` (itself included) with its owner.
fn owners(dir: &std::path::Path) -> Vec<(String, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        out.push((p.display().to_string(), m.uid(), m.gid()));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

/// Issue 12, item 6: `basebackup` run as root as the first writer of an empty repository that
/// belongs to the cluster's user. walrs.config came out root-owned 0600, every `push` of the
/// server then failed with exit 9 and the backup waited for WAL that never came. Now what root
/// writes belongs to the repository's owner: archiving works and the backup completes.
#[test]
fn root_first_writer_keeps_repo_owner() {
    let (e, a) = setup("WALRS_REPO={repo} {walrs} push %p");
    assert!(crate::util::files(&e.repo).is_empty());
    let out = e.walrs().args(["basebackup", "--wal-wait", "60s", "-d", &conn(&a)]).run();
    out.expect_code(0);
    let id = out.stdout.trim().to_string();
    let (u, g) = test_user();
    let foreign: Vec<_> =
        owners(&e.repo).into_iter().filter(|(_, ou, og)| (*ou, *og) != (u, g)).collect();
    assert!(foreign.is_empty(), "not owned by the repository's owner: {foreign:?}");
    a.switch_and_wait_archived();
    assert_eq!(a.sql("SELECT failed_count FROM pg_stat_archiver"), "0", "{}", a.server_log());
    // The owner reads what root wrote.
    let list = e.walrs().run_as(u, g).args(["backup", "verify", &id]).run();
    list.expect_code(0);
}

/// Issue 12, item 6: a user other than the repository's owner (and not root) is refused before
/// anything is written, and the message names both users.
#[test]
fn non_owner_writer_is_refused_before_writing() {
    use std::os::unix::fs::PermissionsExt;
    let dir = crate::util::short_tempdir("wown");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A repository root owned by root that anybody could write into.
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::set_permissions(&repo, std::fs::Permissions::from_mode(0o777)).unwrap();
    let wal = dir.path().join("pg_wal");
    std::fs::create_dir(&wal).unwrap();
    let seg = crate::util::wal::SegSpec::new(1).write(&wal);
    chown_to_test_user(&wal);
    let (u, g) = test_user();
    let out = crate::util::walrs(&repo).run_as(u, g).arg("push").arg(&seg).run();
    out.expect_code(9);
    assert!(
        out.stderr.contains("postgres") && out.stderr.contains("root"),
        "the message names both users: {}",
        out.stderr
    );
    assert!(crate::util::files(&repo).is_empty(), "something was written");
    assert!(crate::util::leftovers(&repo).is_empty(), "something was written");
    // The owner (root here) writes as before: the refusal is about who writes.
    crate::util::walrs(&repo).arg("push").arg(&seg).run().expect_code(0);
}

/// Issue 12, item 6: `restore` run as root. Without `--owner` it ends with the `chown` the
/// operator must run (PostgreSQL refuses a data directory it does not own); with `--owner USER`
/// it hands every restored file to USER itself, and the server starts on it as is.
#[test]
fn restore_as_root_names_or_does_the_chown() {
    let (e, a) = setup("WALRS_REPO={repo} {walrs} push %p");
    a.sql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 500) g");
    let (u, g) = test_user();
    e.walrs().run_as(u, g).args(["basebackup", "-d", &conn(&a)]).run().expect_code(0);
    a.switch_and_wait_archived();

    let plain = e.world.path("plain");
    let out = e.walrs().args(["restore", "--pgdata", plain.to_str().unwrap()]).run();
    out.expect_code(0);
    let chown = format!("chown -R postgres: {}", plain.display());
    assert!(out.stdout.contains(&chown), "stdout names the chown: {}", out.stdout);
    assert!(out.stderr.contains(&chown), "and so does the log: {}", out.stderr);

    // Refused before anything is written: an unknown user; another user's files, as non-root.
    let bad = e.world.path("bad");
    let out = e
        .walrs()
        .args(["restore", "--pgdata", bad.to_str().unwrap(), "--owner", "no-such-user-walrs"])
        .run();
    out.expect_code(2);
    assert!(!bad.exists(), "a refused restore wrote something");
    let out = e
        .walrs()
        .run_as(u, g)
        .args(["restore", "--pgdata", bad.to_str().unwrap(), "--owner", "root"])
        .run();
    out.expect_code(9);
    assert!(!bad.exists(), "a refused restore wrote something");

    let owned = e.world.path("owned");
    let out = e
        .walrs()
        .args(["restore", "--pgdata", owned.to_str().unwrap(), "--owner", "postgres"])
        .run();
    out.expect_code(0);
    assert!(!out.stdout.contains("chown -R"), "nothing left to do: {}", out.stdout);
    let foreign: Vec<_> =
        owners(&owned).into_iter().filter(|(_, ou, og)| (*ou, *og) != (u, g)).collect();
    assert!(foreign.is_empty(), "not handed to postgres: {foreign:?}");
    // PgCluster::with_data would chown the directory itself: start the server directly.
    let log = e.world.path("owned.log");
    std::fs::write(&log, "").unwrap();
    chown_to_test_user(&log);
    let sock = e.world.mkdir("owned-sock");
    let status = std::process::Command::new(crate::util::pg::pg_bin().join("pg_ctl"))
        .arg("-D")
        .arg(&owned)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", "120", "-o"])
        .arg(format!(
            "-c port=5433 -c listen_addresses='' -c unix_socket_directories={} -c archive_mode=off",
            sock.display()
        ))
        .arg("start")
        .env("LC_ALL", "C.UTF-8")
        .uid(u)
        .gid(g)
        .output()
        .unwrap()
        .status;
    let stop = || {
        std::process::Command::new(crate::util::pg::pg_bin().join("pg_ctl"))
            .arg("-D")
            .arg(&owned)
            .args(["-m", "immediate", "-w", "stop"])
            .uid(u)
            .gid(g)
            .output()
    };
    if !status.success() {
        let _ = stop();
        panic!(
            "the server did not start on the restored directory:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
    }
    let _ = stop();
}

/// Sets `archive_command` and waits until new sessions see it.
fn set_archive_command(a: &PgCluster, cmd: &str) {
    a.sql(&format!("ALTER SYSTEM SET archive_command = '{}'", cmd.replace('\'', "''")));
    a.sql("SELECT pg_reload_conf()");
    a.wait_for("the new archive_command", Duration::from_secs(30), || {
        a.sql("SHOW archive_command") == cmd
    });
}

/// `walrs basebackup` as the cluster's user at the default log level; the output and how long
/// it took.
fn basebackup(e: &Env, a: &PgCluster, extra: &[&str]) -> (Out, Duration) {
    let (u, g) = test_user();
    let t0 = std::time::Instant::now();
    let out = e
        .walrs()
        .env("WALRS_LOG", "warn")
        .run_as(u, g)
        .args(["basebackup", "--wal-wait", "20s", "-d", &conn(a)])
        .args(extra)
        .run();
    (out, t0.elapsed())
}

#[track_caller]
fn refused(e: &Env, a: &PgCluster, what: &str, expect: &[&str]) {
    let before = crate::util::files(&e.repo.join("backups"));
    let (out, took) = basebackup(e, a, &[]);
    assert_eq!(out.code, 3, "{what}: exit code; stderr:\n{}", out.stderr);
    for s in expect {
        assert!(out.stderr.contains(s), "{what}: the refusal says {s:?}:\n{}", out.stderr);
    }
    assert!(out.stderr.contains("--no-archive-check"), "{what}: {}", out.stderr);
    // At once, not after streaming and waiting for WAL (the default --wal-wait is 5 min).
    assert!(took < Duration::from_secs(120), "{what}: refused only after {took:?}");
    let after = crate::util::files(&e.repo.join("backups"));
    assert_eq!(before, after, "{what}: the refused backup stored something");
}

/// Issue 12, item 5: `basebackup` against a server whose archiving cannot bring the backup's WAL
/// to the repository used to stream the whole backup and then wait silently for minutes (exit
/// 13 or 12). It now refuses at once, with the fix, when archiving is off, empty, does not call
/// walrs or names another repository (in WALRS_REPO, --repo or a --config file); proceeds with a
/// warning when it cannot tell (a wrapper script); shows the server's messages at the default
/// log level; and while it waits for WAL reports every 10 s the segment awaited and
/// pg_stat_archiver's last failure.
#[test]
fn basebackup_refuses_broken_archiving() {
    let (e, mut a) = setup("WALRS_REPO={repo} {walrs} push %p");
    a.sql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g");
    let walrs = e.world.walrs.display().to_string();
    let other = e.world.mkdir("other");

    set_archive_command(&a, "test ! -f /nonexistent/%f && cp %p /nonexistent/%f");
    refused(&e, &a, "cp", &["does not call walrs push", "it runs test, cp", "archive_command = '"]);
    set_archive_command(&a, "");
    refused(&e, &a, "empty", &["archive_command is empty"]);
    set_archive_command(&a, &format!("WALRS_REPO={} {walrs} push %p", other.display()));
    refused(&e, &a, "WALRS_REPO", &[&other.display().to_string(), &e.repo.display().to_string()]);
    set_archive_command(&a, &format!("{walrs} --repo {} push %p", other.display()));
    refused(&e, &a, "--repo", &[&other.display().to_string()]);
    let cfg = e.world.path("walrs.toml");
    std::fs::write(&cfg, format!("repo = \"{}\"\n", other.display())).unwrap();
    chown_to_test_user(&cfg);
    set_archive_command(&a, &format!("{walrs} --config {} push %p", cfg.display()));
    refused(&e, &a, "--config", &[&other.display().to_string()]);

    // A wrapper script: walrs cannot see into it. A warning at the default level, and the
    // backup goes on (the script archives into the repository). The server's messages are
    // shown at the default level too: with client_min_messages = log the walsender reports
    // each replication command as a notice.
    let script = e.world.path("archive.sh");
    std::fs::write(
        &script,
        // --parallel 1: a background look-ahead pusher would linger past the script's call and
        // could archive the next step's segment although its archive_command is `false`.
        format!(
            "#!/bin/sh\nexec env WALRS_REPO={} {walrs} push --parallel 1 \"$1\"\n",
            e.repo.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    chown_to_test_user(&script);
    a.sql("ALTER SYSTEM SET client_min_messages = 'log'");
    a.sql("ALTER SYSTEM SET log_replication_commands = on");
    set_archive_command(&a, &format!("{} %p", script.display()));
    let (out, _) = basebackup(&e, &a, &[]);
    out.expect_code(0);
    assert!(
        out.stderr.contains("WARN") && out.stderr.contains("cannot check that it archives into"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("server: LOG:  received replication command: BASE_BACKUP")
            || out.stderr.contains("server: LOG: received replication command: BASE_BACKUP"),
        "the server's notice at the default log level:\n{}",
        out.stderr
    );
    let id = out.stdout.trim().to_string();
    e.walrs().args(["backup", "verify", &id]).run().expect_code(0);
    a.sql("ALTER SYSTEM RESET client_min_messages");
    a.sql("ALTER SYSTEM RESET log_replication_commands");

    // --no-archive-check skips the refusal; with archiving failing the backup waits for its WAL
    // and says every 10 s which segment it waits for and how the archiver fails.
    set_archive_command(&a, "false");
    let (out, took) = basebackup(&e, &a, &["--no-archive-check"]);
    assert_eq!(out.code, 13, "{}", out.stderr);
    let progress: Vec<&str> =
        out.stderr.lines().filter(|l| l.contains("still waiting for")).collect();
    assert!(!progress.is_empty(), "no progress while waiting:\n{}", out.stderr);
    assert!(
        progress
            .iter()
            .all(|l| l.contains("pg_stat_archiver: ") && l.contains("last failure 0000")),
        "{progress:?}"
    );
    assert!(out.stderr.contains("did not reach the repository within 20 s"), "{}", out.stderr);
    assert!(took < Duration::from_secs(200), "waited {took:?}");

    // archive_mode = off (a restart).
    set_archive_command(&a, &format!("WALRS_REPO={} {walrs} push %p", e.repo.display()));
    a.sql("ALTER SYSTEM SET archive_mode = off");
    a.stop();
    a.start();
    refused(&e, &a, "archive_mode = off", &["archive_mode is off", "archive_mode = on"]);
}

/// Issue 12, item 5, on a standby: its own archive_command counts only with archive_mode =
/// always; with `on` the primary archives (walrs cannot read the primary's settings from the
/// standby), so the check warns and the backup proceeds, completing once the primary archived
/// its WAL. With `always`, a command that does not call walrs is refused as on a primary.
#[test]
fn basebackup_archive_check_on_a_standby() {
    let (e, a) = setup("WALRS_REPO={repo} {walrs} push %p");
    a.sql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g");
    let data = e.world.path("s-data");
    a.basebackup(&data);
    std::fs::write(data.join("standby.signal"), "").unwrap();
    chown_to_test_user(&data);
    let conf = format!(
        "primary_conninfo = 'host={} port={} user=postgres'\nhot_standby = on\n\
         restore_command = 'WALRS_REPO={} {} fetch %f %p'\n\
         archive_mode = on\narchive_command = 'cp %p /nonexistent/%f'\n",
        a.sock.display(),
        a.port,
        e.repo.display(),
        e.world.walrs.display()
    );
    let mut s = PgCluster::with_data(&e.world, "s", data, &conf);
    s.start();
    s.wait_for("the standby", Duration::from_secs(60), || {
        s.sql("SELECT pg_is_in_recovery()") == "t"
    });

    let (u, g) = test_user();
    let mut child = e
        .walrs()
        .env("WALRS_LOG", "warn")
        .run_as(u, g)
        .args(["basebackup", "--wal-wait", "120s", "-d", &conn(&s)])
        .start();
    // The primary archives the WAL the standby's backup needs once its segments are complete.
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(180), "the standby's backup never ended");
        a.sql("INSERT INTO t VALUES (0)");
        a.sql("SELECT pg_switch_wal()");
        std::thread::sleep(Duration::from_secs(1));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("the server is a standby with archive_mode = on"), "{stderr}");

    // archive_mode = always: the standby's own command must push here.
    let mut text = std::fs::read_to_string(s.data.join("postgresql.conf")).unwrap();
    text.push_str("archive_mode = always\n");
    std::fs::write(s.data.join("postgresql.conf"), text).unwrap();
    s.stop();
    s.start();
    s.wait_for("the standby", Duration::from_secs(60), || {
        s.sql("SELECT pg_is_in_recovery()") == "t"
    });
    refused(&e, &s, "standby, archive_mode = always", &["does not call walrs push"]);
}
