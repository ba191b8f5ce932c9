//! Issue 16, `walrs check`, against real PostgreSQL 15 clusters: a correct setup passes (exit 0,
//! the check's segment found in the repository, the time it took printed), and each
//! misconfiguration the issue lists is named on its own line with its fix and the documented
//! exit code (docs/commands/check.md): `archive_mode` off, `archive_command` empty, not calling
//! walrs, or pushing into another repository, `wal_level = minimal`, `max_wal_senders = 0`,
//! `archive_timeout` 0 or very large, an archiver that keeps failing with a `.ready` backlog,
//! another cluster's repository, a key that is not the repository's.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::pitr::{Env, setup};
use crate::util::pg::PgCluster;
use crate::util::{Out, test_user};

/// `walrs check` as the cluster's OS user (who owns the repository), with `args`.
fn check(e: &Env, a: &PgCluster, args: &[&str]) -> Out {
    let (u, g) = test_user();
    e.walrs()
        .run_as(u, g)
        .args(["check", "-d", &format!("host={} port={} user=postgres", a.sock.display(), a.port)])
        .args(args)
        .run()
}

/// The `--json` report of `walrs check`.
fn check_json(e: &Env, a: &PgCluster, args: &[&str]) -> (Out, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = check(e, a, &all);
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}\n{}", out.stdout, out.stderr));
    (out, v)
}

/// The result of check `name` in a `--json` report.
fn result<'a>(v: &'a Value, name: &str) -> &'a str {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {v}"))["result"]
        .as_str()
        .unwrap()
}

/// Appends `conf` to the cluster's postgresql.conf (later lines win) and restarts it.
fn reconfigure(a: &mut PgCluster, conf: &str) {
    a.stop();
    let p = a.data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&p).unwrap();
    text.push_str(&format!("\n{conf}\n"));
    std::fs::write(&p, text).unwrap();
    a.start();
}

/// The text output has the line `FAIL <name>: ...` followed by a `fix:` line.
#[track_caller]
fn assert_fails_with_fix(out: &Out, name: &str, says: &str) {
    let lines: Vec<&str> = out.stdout.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.starts_with(&format!("FAIL {name}:")))
        .unwrap_or_else(|| panic!("no FAIL {name} line:\n{}\n{}", out.stdout, out.stderr));
    assert!(lines[i].contains(says), "{}", lines[i]);
    assert!(
        lines.get(i + 1).is_some_and(|l| l.trim_start().starts_with("fix: ")),
        "no fix after {}:\n{}",
        lines[i],
        out.stdout
    );
}

/// A correctly configured server: every check passes, the round trip finds its segment in the
/// repository (with the check's restore point in the index) and says how long it took; the
/// warning about `archive_timeout = 0` does not change the exit code.
#[test]
fn pg15_issue_16_check_passes_on_a_correct_setup() {
    let (e, a) = setup(false);
    a.sql("CREATE TABLE t (id int)");
    a.switch_and_wait_archived();

    let out = check(&e, &a, &[]);
    out.expect_code(0);
    assert!(out.stdout.contains("all checks passed: "), "{}", out.stdout);
    assert!(out.stdout.contains("warn archive_timeout: archive_timeout = 0"), "{}", out.stdout);
    for name in ["repository", "encryption_key", "config_twin", "repository_writable"] {
        assert!(out.stdout.contains(&format!("ok   {name}: ")), "{name}:\n{}", out.stdout);
    }
    assert!(!out.stdout.contains("FAIL"), "{}", out.stdout);
    assert!(e.repo.join("check").read_dir().map_or(true, |mut d| d.next().is_none()));

    // The JSON report: every check, the round trip's segment and time.
    let (out, v) = check_json(&e, &a, &["--timeout", "2m"]);
    out.expect_code(0);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["exit_code"], 0);
    assert!(v["first_failed"].is_null());
    for name in [
        "connection",
        "system_identifier",
        "archive_mode",
        "archive_command",
        "wal_level",
        "max_wal_senders",
        "archiver",
        "ready_backlog",
        "roundtrip",
    ] {
        assert_eq!(result(&v, name), "ok", "{name}: {v}");
    }
    assert_eq!(result(&v, "archive_timeout"), "warn");
    // The shape (docs/json.md): the prose `detail` and the restore point's name (a time and a
    // pid) redacted too.
    let mut shape = v.clone();
    for c in shape["checks"].as_array_mut().unwrap() {
        c["detail"] = Value::from("[detail]");
    }
    shape["roundtrip"]["restore_point"] = Value::from("[restore-point]");
    let red = crate::json_output::Redactor::new(&[e.world.dir.path()], &[]);
    insta::assert_snapshot!("check", red.snapshot(&shape.to_string()));
    let wal = v["roundtrip"]["wal"].as_str().unwrap();
    let rp = v["roundtrip"]["restore_point"].as_str().unwrap();
    assert!(v["roundtrip"]["seconds"].as_f64().unwrap() >= 0.0);
    // The segment is in the repository, with its index entry.
    let group = &wal[..16];
    assert!(e.repo.join("wal").join(group).join(wal).is_file(), "{wal} not stored");
    assert!(e.repo.join("index/seg").join(group).join(wal).is_file(), "{wal} not indexed");
    assert!(rp.starts_with("walrs-check-"), "{rp}");

    // archive_timeout large: a warning; a minute: ok.
    a.sql("ALTER SYSTEM SET archive_timeout = '2h'");
    a.sql("SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(300));
    let (out, v) = check_json(&e, &a, &[]);
    out.expect_code(0);
    assert_eq!(result(&v, "archive_timeout"), "warn", "{v}");
    a.sql("ALTER SYSTEM SET archive_timeout = '60s'");
    a.sql("SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(300));
    let (out, v) = check_json(&e, &a, &[]);
    out.expect_code(0);
    assert_eq!(result(&v, "archive_timeout"), "ok", "{v}");
}

/// Each misconfiguration of the server is named on its own line with its fix, and the exit code
/// is the documented one of the first failed check (3 for a setting).
#[test]
fn pg15_issue_16_check_names_each_misconfiguration() {
    let (e, mut a) = setup(false);
    a.sql("CREATE TABLE t (id int)");
    a.switch_and_wait_archived();
    let walrs = e.world.walrs.display().to_string();
    let repo = e.repo.display().to_string();

    // archive_mode off (a restart).
    reconfigure(&mut a, "archive_mode = off");
    let out = check(&e, &a, &[]);
    out.expect_code(3);
    assert_fails_with_fix(&out, "archive_mode", "archive_mode is off");
    assert!(out.stdout.contains("check archive_mode failed (exit 3)"), "{}", out.stdout);
    assert!(out.stdout.contains("skip roundtrip: "), "{}", out.stdout);

    // archive_command empty.
    reconfigure(&mut a, "archive_mode = on\narchive_command = ''");
    let out = check(&e, &a, &[]);
    out.expect_code(3);
    assert_fails_with_fix(&out, "archive_command", "archive_command is empty");

    // archive_command not calling walrs.
    reconfigure(&mut a, "archive_command = 'cp %p /nowhere/%f'");
    let out = check(&e, &a, &[]);
    out.expect_code(3);
    assert_fails_with_fix(&out, "archive_command", "does not call walrs push");

    // archive_command calling walrs with another repository.
    let other = e.world.mkdir("other-repo");
    reconfigure(
        &mut a,
        &format!("archive_command = 'WALRS_REPO={} {walrs} push %p'", other.display()),
    );
    let (out, v) = check_json(&e, &a, &[]);
    out.expect_code(3);
    assert_eq!(result(&v, "archive_command"), "fail", "{v}");
    assert_eq!(v["first_failed"], "archive_command");
    assert_eq!(v["exit_code"], 3);
    let line = v["checks"].as_array().unwrap().iter().find(|c| c["name"] == "archive_command");
    let detail = line.unwrap()["detail"].as_str().unwrap();
    assert!(detail.contains(&other.display().to_string()), "{detail}");
    assert!(line.unwrap()["fix"].is_string());

    // max_wal_senders = 0 (archiving correct again): the round trip still passes.
    reconfigure(
        &mut a,
        &format!("archive_command = 'WALRS_REPO={repo} {walrs} push %p'\nmax_wal_senders = 0"),
    );
    let out = check(&e, &a, &[]);
    out.expect_code(3);
    assert_fails_with_fix(&out, "max_wal_senders", "max_wal_senders = 0");
    assert!(out.stdout.contains("ok   roundtrip: "), "{}", out.stdout);

    // wal_level = minimal (PostgreSQL allows it only with archiving off and no WAL senders):
    // named too, beside archive_mode.
    reconfigure(&mut a, "wal_level = minimal\narchive_mode = off");
    let out = check(&e, &a, &[]);
    out.expect_code(3);
    assert_fails_with_fix(&out, "wal_level", "wal_level = minimal");
    assert_fails_with_fix(&out, "archive_mode", "archive_mode is off");
    assert_fails_with_fix(&out, "max_wal_senders", "max_wal_senders = 0");
}

/// An archiver that keeps failing (the command runs walrs with a key file that does not exist):
/// `pg_stat_archiver`'s failures and the last failed file are reported, the `.ready` backlog is
/// counted, and the round trip gives up within `--timeout` with exit 13, naming the segment.
#[test]
fn pg15_issue_16_check_reports_a_failing_archiver_and_its_backlog() {
    let (e, mut a) = setup(false);
    a.sql("CREATE TABLE t (id int)");
    a.switch_and_wait_archived();
    reconfigure(
        &mut a,
        &format!(
            "archive_command = 'WALRS_REPO={} WALRS_ENCRYPTION_KEY_FILE=/nonexistent/key {} push %p'",
            e.repo.display(),
            e.world.walrs.display()
        ),
    );
    for i in 0..10 {
        a.sql(&format!("INSERT INTO t VALUES ({i})"));
        a.sql("SELECT pg_switch_wal()");
    }
    a.wait_for("the archiver to fail", Duration::from_secs(60), || {
        a.sql("SELECT failed_count > 0 FROM pg_stat_archiver") == "t"
    });
    let started = Instant::now();
    let (out, v) = check_json(&e, &a, &["--timeout", "8s"]);
    let took = started.elapsed();
    out.expect_code(13);
    assert!(took < Duration::from_secs(60), "the wait was not bounded by --timeout: {took:?}");
    assert_eq!(result(&v, "archiver"), "warn", "{v}");
    assert_eq!(result(&v, "ready_backlog"), "warn", "{v}");
    assert_eq!(result(&v, "roundtrip"), "fail", "{v}");
    assert_eq!(v["first_failed"], "roundtrip");
    assert_eq!(v["exit_code"], 13);
    let detail = |n: &str| {
        v["checks"].as_array().unwrap().iter().find(|c| c["name"] == n).unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let last_failed = a.sql("SELECT last_failed_wal FROM pg_stat_archiver");
    assert!(detail("archiver").contains("last failed file"), "{}", detail("archiver"));
    assert!(!last_failed.is_empty());
    assert!(
        detail("ready_backlog").contains("wait for the archiver"),
        "{}",
        detail("ready_backlog")
    );
    assert!(detail("roundtrip").contains("did not reach"), "{}", detail("roundtrip"));
    assert!(out.stderr.contains("check roundtrip failed"), "{}", out.stderr);
}

/// The repository is another cluster's (exit 5, named before anything else), and a key that
/// is not the repository's (exit 8): the repository half of the check.
#[test]
fn pg15_issue_16_check_refuses_another_clusters_repository_and_a_wrong_key() {
    let (e, a) = setup(false);
    a.sql("CREATE TABLE t (id int)");
    a.switch_and_wait_archived();
    // A second cluster whose archive_command names the first one's repository.
    let mut b = PgCluster::init(
        &e.world,
        "b",
        &format!(
            "archive_mode = on\narchive_command = 'WALRS_REPO={} {} push %p'\n",
            e.repo.display(),
            e.world.walrs.display()
        ),
    );
    drop(a);
    b.start();
    let out = check(&e, &b, &[]);
    out.expect_code(5);
    assert_fails_with_fix(&out, "system_identifier", "the repository holds the WAL of system");
    assert!(out.stdout.contains("check system_identifier failed (exit 5)"), "{}", out.stdout);
    assert!(out.stdout.contains("skip roundtrip: "), "{}", out.stdout);

    // A key configured for this unencrypted repository.
    let key = e.world.path("stray-key");
    std::fs::write(&key, crate::util::key_b64(3)).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    crate::util::chown_to_test_user(&key);
    let (u, g) = test_user();
    let out = e
        .walrs()
        .run_as(u, g)
        .env("WALRS_ENCRYPTION_KEY_FILE", &key)
        .args(["check", "--json", "-d"])
        .arg(format!("host={} port={} user=postgres", b.sock.display(), b.port))
        .run();
    out.expect_code(8);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["first_failed"], "encryption_key", "{v}");
    assert_eq!(result(&v, "repository_writable"), "skipped");
    b.stop();
}
