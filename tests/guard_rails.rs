//! Issue 12 (https://github.com/walrs/walrs/issues/12), the restore guard rails, against real
//! PostgreSQL 15 servers: a test restore that cannot archive into production's repository, and
//! diverged histories named when one did; a backup of a standby that restores as a primary; the
//! backup chosen exactly for `--target-xid` and for a restore point name used twice; the
//! restore_command that stops recovery on a hard failure. Also issue 11 item 8
//! (`--target-timeline 0`). The clusters, backups and restores come from the helpers of
//! `pitr.rs`.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::pitr::{Env, SUM, basebackup, restore_and_read, setup};
use crate::util::pg::{PgCluster, pg_bin};
use crate::util::{chown_to_test_user, test_user};

/// The timeline history object of timeline `t` in a file-system repository.
fn history_object(e: &Env, t: u32) -> std::path::PathBuf {
    e.repo.join("wal/history").join(format!("{t:08X}.history"))
}

/// The `restore --dry-run` text plan with `args`.
fn dry_run(e: &Env, args: &[&str]) -> crate::util::Out {
    let dir = e.world.path("dry-run");
    let mut all = vec!["restore", "--pgdata", dir.to_str().unwrap(), "--dry-run"];
    all.extend_from_slice(args);
    let out = e.run(&all);
    assert!(!dir.exists(), "a dry run wrote {}", dir.display());
    out
}

/// Restores into `world/<name>` with `args` and returns the directory, handed to the test user.
fn restore_into(e: &Env, name: &str, args: &[&str]) -> std::path::PathBuf {
    let dir = e.world.path(name);
    let mut all = vec!["restore", "--pgdata", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = e.run(&all);
    out.expect_code(0);
    chown_to_test_user(&dir);
    dir
}

/// Issue 12 item 1: a copy restored for a test with default settings does not archive into
/// production's repository, and a restore to production's latest point stays exact. A copy
/// restored with `--archive-mode=preserve` that does archive (timeline 2) while production goes
/// on (timeline 1): `timeline`, `wal verify` and the plan say the histories diverged, the default
/// plan follows production and names the other branch and its flag, and a time on production
/// refused on the copy's timeline names the timeline that holds it.
#[test]
fn pg15_issue_12_test_restore_does_not_archive_and_diverged_histories_are_named() {
    let (e, a) = setup(false);
    a.sql("CREATE TABLE t (id int, v text)");
    a.sql("INSERT INTO t SELECT g, 'base' FROM generate_series(1, 1000) g");
    basebackup(&e, &a);
    a.sql("INSERT INTO t SELECT g, 'one' FROM generate_series(1001, 2000) g");
    a.switch_and_wait_archived();

    // A test restore with the defaults, beside production. Its postgresql.conf is production's:
    // archive_mode = on, archive_command into this repository.
    let dir = e.world.path("test-copy");
    let out = e.run(&["restore", "--pgdata", dir.to_str().unwrap()]);
    out.expect_code(0);
    let conf = std::fs::read_to_string(dir.join("postgresql.conf")).unwrap();
    assert!(conf.contains("archive_mode = on"), "the backup's own setting: {conf}");
    chown_to_test_user(&dir);
    let mut c = PgCluster::with_data(&e.world, "test-copy-run", dir, "");
    c.start();
    c.wait_for("promotion", Duration::from_secs(120), || {
        c.sql("SELECT pg_is_in_recovery()") == "f"
    });
    assert_eq!(c.sql("SHOW archive_mode"), "off");
    assert_eq!(c.sql("SELECT timeline_id FROM pg_control_checkpoint()"), "2");
    c.sql("INSERT INTO t SELECT g, 'test' FROM generate_series(5001, 5100) g");
    c.sql("SELECT pg_switch_wal()");
    // A clean shutdown lets an archiver archive what is ready: timeline 2's history first.
    c.stop();
    assert!(
        !history_object(&e, 2).exists(),
        "the test copy archived timeline 2 into production's repository"
    );
    assert!(out.stdout.contains("archiving is off in the restored cluster"), "{}", out.stdout);

    // Production goes on, with a new backup; the whole loop stays exact.
    a.sql("INSERT INTO t SELECT g, 'two' FROM generate_series(2001, 3000) g");
    basebackup(&e, &a);
    a.sql("INSERT INTO t SELECT g, 'three' FROM generate_series(3001, 4000) g");
    let prod = a.sql(SUM);
    a.switch_and_wait_archived();
    assert_eq!(restore_and_read(&e, "r-prod", &[]), prod, "production's latest point");

    // A copy that keeps production's archiving (what --archive-mode=preserve is for, misused
    // here): it promotes to timeline 2 and archives into the same repository.
    let dir = restore_into(&e, "copy", &["--archive-mode=preserve"]);
    let auto = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    assert!(!auto.contains("archive_mode"), "{auto}");
    let mut d = PgCluster::with_data(&e.world, "copy-run", dir, "");
    d.start();
    d.wait_for("promotion", Duration::from_secs(120), || {
        d.sql("SELECT pg_is_in_recovery()") == "f"
    });
    d.sql("INSERT INTO t SELECT g, 'copy' FROM generate_series(6001, 6500) g");
    let copy = d.sql(SUM);
    d.switch_and_wait_archived();
    d.stop();
    assert!(history_object(&e, 2).exists(), "the copy archived timeline 2");
    // Production, meanwhile, keeps archiving timeline 1.
    std::thread::sleep(Duration::from_millis(1100));
    a.sql("INSERT INTO t SELECT g, 'four' FROM generate_series(4001, 4500) g");
    std::thread::sleep(Duration::from_millis(1100));
    let t_prod = a.sql("SELECT clock_timestamp()");
    let at_t_prod = a.sql(SUM);
    std::thread::sleep(Duration::from_millis(1100));
    a.sql("INSERT INTO t SELECT g, 'five' FROM generate_series(4501, 5000) g");
    let prod = a.sql(SUM);
    a.switch_and_wait_archived();

    let tl = e.run(&["timeline"]);
    tl.expect_code(0);
    assert!(
        tl.stdout.contains("warning: histories diverged: timeline 1 went on after timeline 2"),
        "{}",
        tl.stdout
    );
    let tj = e.run(&["timeline", "--json"]);
    let tj: serde_json::Value = serde_json::from_str(&tj.stdout).unwrap();
    let t2 = tj["timelines"].as_array().unwrap().iter().find(|t| t["timeline"] == 2).unwrap();
    assert_eq!(t2["diverged"], true, "{tj}");
    let v = e.run(&["wal", "verify"]);
    v.expect_code(0);
    let warning = v
        .stdout
        .lines()
        .find(|l| l.starts_with("warning: diverged: 00000002.history: timeline 1 went on after"))
        .unwrap_or_else(|| panic!("no warning line of its own: {}", v.stdout));
    assert!(warning.contains("two servers archived into this repository"), "{warning}");

    // The default plan follows production, and names the other branch and its flag.
    let plan = dry_run(&e, &[]);
    plan.expect_code(0);
    eprintln!("the plan on diverged histories:\n{}{}\n{}", plan.stdout, tl.stdout, v.stdout);
    assert!(plan.stdout.contains("histories diverged: timeline 1 went on"), "{}", plan.stdout);
    assert!(
        plan.stdout.contains("following timeline 1 (")
            && plan.stdout.contains("the other branch ends on timeline 2 (--target-timeline 2)"),
        "{}",
        plan.stdout
    );
    let j = e.run(&[
        "restore",
        "--pgdata",
        e.world.path("dry-run").to_str().unwrap(),
        "--dry-run",
        "--json",
    ]);
    let j: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(j["target_timeline"], 1, "{j}");
    assert_eq!(j["other_branches"], serde_json::json!([2]), "{j}");
    assert_eq!(j["diverged"][0]["child"], 2, "{j}");
    assert_eq!(restore_and_read(&e, "r-prod-2", &[]), prod, "production's latest point, exactly");
    assert_eq!(
        restore_and_read(&e, "r-t-prod", &["--target-time", &t_prod]),
        at_t_prod,
        "a point in time on production"
    );
    // The other branch, when asked for, exactly; the plan names production's branch then.
    let plan = dry_run(&e, &["--target-timeline", "2"]);
    assert!(
        plan.stdout.contains("following timeline 2 (--target-timeline 2)")
            && plan.stdout.contains("the other branch ends on timeline 1 (--target-timeline 1)"),
        "{}",
        plan.stdout
    );
    assert_eq!(restore_and_read(&e, "r-copy", &["--target-timeline", "2"]), copy, "the copy");
    // A time on production, asked for on the copy's timeline: refused, naming timeline 1.
    let out = dry_run(&e, &["--target-timeline", "2", "--target-time", &t_prod]);
    out.expect_code(19);
    assert!(
        out.stderr.contains("after the last archived transaction on the path to timeline 2")
            && out.stderr.contains("timeline 1 holds it (--target-timeline 1)"),
        "{}",
        out.stderr
    );
}

/// Runs pg_basebackup against `a` as a standby would be made: `-R` (primary_conninfo in
/// postgresql.auto.conf, standby.signal) and a physical slot `-C -S slot`.
fn make_standby_data(a: &PgCluster, dest: &Path) {
    let o = Command::new(pg_bin().join("pg_basebackup"))
        .args(["-U", "postgres", "-X", "stream", "-c", "fast", "--no-sync", "-R", "-C"])
        .args(["-S", "standby_slot", "-h"])
        .arg(&a.sock)
        .args(["-p", &a.port.to_string(), "-D"])
        .arg(dest)
        .output()
        .unwrap();
    assert!(o.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&o.stderr));
    chown_to_test_user(dest);
}

/// Issue 12 item 2: `walrs basebackup` of a standby (archive_mode = always into the primary's
/// repository) works; the backup ships standby.signal and pg_basebackup -R's primary_conninfo
/// and primary_slot_name. Restored without target, it recovers to the end of the archive and
/// promotes, without connecting to the primary. With `--standby` it is a standby again: it
/// streams from the primary through the slot.
#[test]
fn pg15_issue_12_standby_backup_restores_as_a_primary() {
    let (e, a) = setup(false);
    a.sql("CREATE TABLE t (id int, v text)");
    a.sql("INSERT INTO t SELECT g, 'base' FROM generate_series(1, 1000) g");
    let sdata = e.world.path("standby-data");
    make_standby_data(&a, &sdata);
    assert!(sdata.join("standby.signal").exists());
    let archive = format!(
        "archive_mode = always\narchive_command = 'WALRS_REPO={} {} push %p'\nhot_standby = on\n",
        e.repo.display(),
        e.world.walrs.display()
    );
    let mut s = PgCluster::with_data(&e.world, "standby", sdata, &archive);
    s.start();
    a.wait_for("the standby to stream", Duration::from_secs(60), || {
        a.sql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == "1"
    });
    a.sql("INSERT INTO t SELECT g, 'one' FROM generate_series(1001, 2000) g");
    let lsn = a.sql("SELECT pg_current_wal_insert_lsn()");
    s.wait_for("replay on the standby", Duration::from_secs(60), || {
        s.sql(&format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'")) == "t"
    });

    // The backup, from the standby. Its stop segment is archived once the primary switches
    // segments; the primary writes a little and switches until the backup is complete.
    let (u, g) = test_user();
    let mut child = e
        .walrs()
        .run_as(u, g)
        .args([
            "basebackup",
            "-d",
            &format!("host={} port={} user=postgres", s.sock.display(), s.port),
        ])
        .start();
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "the standby backup did not end");
        a.sql("SELECT txid_current()");
        a.sql("SELECT pg_switch_wal()");
        std::thread::sleep(Duration::from_millis(300));
    };
    let out = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "basebackup of the standby: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    a.sql("INSERT INTO t SELECT g, 'two' FROM generate_series(2001, 3000) g");
    let expected = a.sql(SUM);
    a.switch_and_wait_archived();

    // Restored without a target: a primary.
    let dir = restore_into(&e, "r", &["--backup", &id]);
    let mut r = PgCluster::with_data(&e.world, "r-run", dir.clone(), "");
    r.start();
    r.wait_for("promotion", Duration::from_secs(120), || {
        r.sql("SELECT pg_is_in_recovery()") == "f"
    });
    assert!(!dir.join("standby.signal").exists(), "standby.signal was restored");
    let auto = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("#walrs-disabled# primary_conninfo = "), "{auto}");
    assert!(auto.contains("#walrs-disabled# primary_slot_name = 'standby_slot'"), "{auto}");
    assert_eq!(r.sql(SUM), expected, "the end of the archive");
    assert_eq!(r.sql("SHOW primary_conninfo"), "");
    assert_eq!(
        a.sql("SELECT count(*) FROM pg_stat_replication"),
        "1",
        "only the standby streams from the primary"
    );
    r.stop();

    // With --standby: a standby of the same primary, through the slot (its standby is gone).
    s.stop();
    let dir = restore_into(&e, "rs", &["--backup", &id, "--standby"]);
    assert!(dir.join("standby.signal").exists() && !dir.join("recovery.signal").exists());
    let auto = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    assert!(!auto.contains("#walrs-disabled# primary_conninfo"), "{auto}");
    let rc = auto.lines().rfind(|l| l.starts_with("restore_command")).unwrap();
    assert!(!rc.contains("--abort-on-hard-failure"), "a standby retries: {rc}");
    let mut rs = PgCluster::with_data(&e.world, "rs-run", dir, "");
    rs.start();
    a.sql("INSERT INTO t SELECT g, 'three' FROM generate_series(3001, 3100) g");
    let lsn = a.sql("SELECT pg_current_wal_insert_lsn()");
    let expected = a.sql(SUM);
    rs.wait_for("the restored standby to stream", Duration::from_secs(120), || {
        rs.sql("SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'") == "1"
            && rs.sql(&format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'")) == "t"
    });
    assert_eq!(rs.sql("SELECT pg_is_in_recovery()"), "t");
    assert_eq!(rs.sql(SUM), expected);
    rs.stop();
}

/// Issue 12 item 3: a transaction that commits while backup B is being taken (between its start
/// and stop) can be reached from the older backup A only. `--target-xid` chose B, and
/// PostgreSQL stopped with "requested recovery stop point is before consistent recovery point".
#[test]
fn pg15_issue_12_target_xid_committed_inside_a_backup() {
    let (e, a) = setup(false);
    a.sql("CREATE TABLE t (id int, v text)");
    a.sql("INSERT INTO t SELECT g, 'base' FROM generate_series(1, 1000) g");
    let id_a = basebackup(&e, &a);
    a.sql("INSERT INTO t SELECT g, 'one' FROM generate_series(1001, 2000) g");
    // Enough data that backup B streams for a while.
    a.sql("CREATE TABLE big AS SELECT g, repeat(md5(g::text), 8) AS v FROM generate_series(1, 300000) g");
    a.switch_and_wait_archived();

    // Backup B, held still (SIGSTOP) while the server streams the data files.
    let (u, g) = test_user();
    let child = e
        .walrs()
        .run_as(u, g)
        .args([
            "basebackup",
            "-d",
            &format!("host={} port={} user=postgres", a.sock.display(), a.port),
        ])
        .start();
    let pid = child.id().to_string();
    let phase = || a.sql("SELECT coalesce(max(phase), '') FROM pg_stat_progress_basebackup");
    let started = Instant::now();
    while phase() != "streaming database files" {
        assert!(started.elapsed() < Duration::from_secs(120), "backup B never streamed files");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let before = a.sql("SELECT pg_current_wal_insert_lsn()");
    let xid = a.sql(
        "BEGIN; INSERT INTO t SELECT g, 'two' FROM generate_series(2001, 3000) g; SELECT txid_current(); COMMIT;",
    );
    let xid = xid.lines().find(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit())).unwrap();
    let after = a.sql("SELECT pg_current_wal_insert_lsn()");
    let at_xid = a.sql(SUM);
    let still = phase();
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "backup B: {}", String::from_utf8_lossy(&out.stderr));
    let id_b = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // The setup did what it claims: the commit lies inside B's start..stop.
    assert_eq!(still, "streaming database files", "backup B went on while held");
    let show = e.run(&["backup", "show", &id_b, "--json"]);
    let m: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    let lsn = |s: &str| {
        let (hi, lo) = s.split_once('/').unwrap();
        (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
    };
    assert!(
        lsn(m["start_lsn"].as_str().unwrap()) < lsn(&before)
            && lsn(&after) <= lsn(m["stop_lsn"].as_str().unwrap()),
        "the commit ({before} .. {after}) is not inside backup B ({m})"
    );
    a.sql("INSERT INTO t SELECT g, 'three' FROM generate_series(3001, 4000) g");
    a.switch_and_wait_archived();

    // The plan chooses A, the newest backup consistent before the commit record.
    let plan = dry_run(&e, &["--target-xid", xid, "--json"]);
    plan.expect_code(0);
    let p: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(p["backup"], id_a.as_str(), "{p}");
    // Chosen by the commit record's own LSN, which the index recorded when the segment was pushed.
    assert_eq!(p["target"]["type"], "xid", "{p}");
    assert_eq!(p["target"]["xid"].to_string(), xid, "{p}");
    let at = p["target"]["record_lsn"].as_str().unwrap_or_else(|| panic!("{p}"));
    assert!(
        p["target"]["description"]
            .as_str()
            .unwrap()
            .starts_with(&format!("xid {xid} (ends at {at} ")),
        "{p}"
    );
    assert!(lsn(&before) <= lsn(at) && lsn(at) < lsn(&after), "{at} not in {before} .. {after}");
    assert_eq!(restore_and_read(&e, "r-xid", &["--target-xid", xid]), at_xid, "exactly");
    // B cannot reach it: refused (19), nothing written.
    let out = dry_run(&e, &["--target-xid", xid, "--backup", &id_b]);
    out.expect_code(19);
    assert!(
        out.stderr.contains(&format!("backup {id_b} cannot reach xid {xid}")),
        "{}",
        out.stderr
    );
}

/// Issue 12 item 4: a restore point name used before the backup and again after it. PostgreSQL
/// stops at the first one it replays from the backup's start; walrs took the first one in the
/// archive and refused (19).
#[test]
fn pg15_issue_12_restore_point_name_used_twice() {
    let (e, a) = setup(false);
    a.sql("CREATE TABLE t (id int, v text)");
    a.sql("INSERT INTO t SELECT g, 'base' FROM generate_series(1, 1000) g");
    a.sql("SELECT pg_create_restore_point('daily')");
    a.sql("INSERT INTO t SELECT g, 'one' FROM generate_series(1001, 2000) g");
    basebackup(&e, &a);
    a.sql("INSERT INTO t SELECT g, 'two' FROM generate_series(2001, 3000) g");
    let at_second = a.sql(SUM);
    a.sql("SELECT pg_create_restore_point('daily')");
    a.sql("INSERT INTO t SELECT g, 'three' FROM generate_series(3001, 4000) g");
    a.switch_and_wait_archived();
    let plan = dry_run(&e, &["--target-name", "daily"]);
    plan.expect_code(0);
    eprintln!("{}", plan.stdout);
    assert!(plan.stdout.contains("restore point \"daily\" is used 2 times"), "{}", plan.stdout);
    assert_eq!(restore_and_read(&e, "r-name", &["--target-name", "daily"]), at_second);
    // Issue 11 item 8 on a real repository: timeline 0 is a command-line error.
    dry_run(&e, &["--target-timeline", "0"]).expect_code(2);
}

/// Issue 11 item 8: `--target-timeline 0` is a command-line error (2), whatever the repository.
#[test]
fn issue_11_target_timeline_0_is_a_usage_error() {
    let repo = crate::util::short_tempdir("wr0");
    let dir = repo.path().join("pgdata");
    let out = crate::util::walrs(repo.path())
        .args(["restore", "--pgdata", dir.to_str().unwrap(), "--target-timeline", "0"])
        .run();
    out.expect_code(2);
    assert!(out.stderr.contains("--target-timeline \"0\""), "{}", out.stderr);
    assert!(!dir.exists());
}

/// Starts PostgreSQL on `data` with pg_ctl and says whether it came up; a server that did is
/// stopped again at once.
fn starts(data: &Path, log: &Path) -> bool {
    let (u, g) = test_user();
    let pg_ctl = |args: &[&str]| {
        let mut cmd = Command::new(pg_bin().join("pg_ctl"));
        for k in ["PGDATA", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGSERVICE", "PGOPTIONS"] {
            cmd.env_remove(k);
        }
        cmd.env("LC_ALL", "C.UTF-8").uid(u).gid(g).arg("-D").arg(data).args(args);
        cmd.output().unwrap()
    };
    // `pg_ctl -w start` succeeds as soon as the server accepts read-only connections (or, without
    // hot standby, once recovery has started), which may come before replay reaches the damaged
    // segment: wait for the outcome itself, the end of recovery or the server's exit.
    pg_ctl(&["-l", log.to_str().unwrap(), "-w", "-t", "120", "start"]);
    let t0 = std::time::Instant::now();
    let up = loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(|l| l.ends_with("database system is ready to accept connections")) {
            break true;
        }
        if !data.join("postmaster.pid").exists() {
            break false;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no outcome of recovery in 120 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    if up {
        pg_ctl(&["-m", "immediate", "-w", "stop"]);
    }
    up
}

/// Issue 12 item 7 (the restore half): the restore_command `restore` writes stops recovery on a
/// hard failure (a corrupt object here). It read as "not found": PostgreSQL ended recovery at
/// the segment before and promoted, without the last transactions and without an error.
#[test]
fn pg15_issue_12_restore_command_aborts_on_a_hard_failure() {
    let (e, a) = setup(false);
    a.sql("CREATE TABLE t (id int, v text)");
    a.sql("INSERT INTO t SELECT g, 'base' FROM generate_series(1, 1000) g");
    basebackup(&e, &a);
    a.sql("INSERT INTO t SELECT g, 'one' FROM generate_series(1001, 2000) g");
    a.switch_and_wait_archived();
    a.sql("INSERT INTO t SELECT g, 'two' FROM generate_series(2001, 3000) g");
    let expected = a.sql(SUM);
    let last = a.switch_and_wait_archived();
    let dir = restore_into(&e, "r", &[]);

    // The last segment of the archive, damaged in the repository.
    let object = e.repo.join("wal").join(&last[..16]).join(&last);
    let good = std::fs::read(&object).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n / 2] ^= 0x01;
    std::fs::write(&object, &bad).unwrap();
    let mut r = PgCluster::with_data(&e.world, "r-run", dir.clone(), "");
    assert!(
        !starts(&dir, &r.log),
        "recovery ended early at a corrupt object and the server came up:\n{}",
        r.server_log()
    );
    let log = r.server_log();
    assert!(log.contains(&format!("could not restore file \"{last}\"")), "{log}");
    let auto = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains(" fetch --abort-on-hard-failure %f %p'"), "{auto}");
    // Repaired, the same data directory recovers to the end.
    std::fs::write(&object, &good).unwrap();
    r.start();
    r.wait_for("the end of recovery", Duration::from_secs(120), || {
        r.sql("SELECT pg_is_in_recovery()") == "f"
    });
    assert_eq!(r.sql(SUM), expected);
}
