//! Look-ahead push with a real PostgreSQL 15: a backlog of ready segments drains through
//! `walrs push` calls that each archive several segments, the calls that find a spool record
//! return at once, and everything PostgreSQL handed over is in the repository, identical. Then
//! the same under `kill -9` of walrs at random points, followed by a recovery that replays it all.

use std::path::Path;
use std::time::Duration;

use crate::util::pg::{PgCluster, PgWorld};
use crate::util::{chown_to_test_user, files, leftovers, walrs};

const CHECK_SQL: &str =
    "SELECT count(*) || ':' || sum(g) || ':' || sum(hashtext(x)::bigint) FROM t";

fn env_prefix(repo: &Path) -> String {
    format!("WALRS_REPO={} WALRS_LOG=info WALRS_PUSH_PARALLEL=4", repo.display())
}

/// Every file PostgreSQL handed to archive_command (copied to `copy` first) comes back
/// identical through `walrs fetch`; the repository has no temporary files (when processes were
/// killed: none but the temporary files of a write cut short, which no listing or fetch sees);
/// the index holds one contiguous range that verifies.
fn check_archive(world: &PgWorld, repo: &Path, copy: &Path, killed: bool) -> usize {
    let archived = files(copy);
    let out = world.mkdir("fetched");
    for name in &archived {
        let dest = out.join(name);
        walrs(repo).args(["fetch", name.as_str()]).arg(&dest).run().expect_code(0);
        assert!(
            std::fs::read(&dest).unwrap() == std::fs::read(copy.join(name)).unwrap(),
            "{name} differs from what PostgreSQL handed over"
        );
        std::fs::remove_file(&dest).unwrap();
    }
    let left = leftovers(repo);
    if killed {
        for p in &left {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let parts: Vec<&str> = name.split('.').collect();
            assert!(
                parts.len() == 5 && parts[1] == "tmp" && parts[3].parse::<u32>().is_ok(),
                "{name} is not the temporary file of a write cut short"
            );
            assert!(
                archived.iter().any(|a| a == parts[2]),
                "{name}: not a segment PostgreSQL sent"
            );
        }
    } else {
        assert!(left.is_empty(), "temporary files in the repository: {left:?}");
    }
    let list = walrs(repo).args(["wal", "list", "--json"]).run();
    list.expect_code(0);
    let j: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(j["timelines"][0]["ranges"].as_array().map(Vec::len), Some(1), "{}", list.stdout);
    walrs(repo).args(["wal", "verify"]).run().expect_code(0);
    archived.iter().filter(|n| n.len() == 24).count()
}

/// The spool holds no temporary files, and every record names an object the repository holds.
fn check_spool(data: &Path, repo: &Path) {
    let push = data.join("walrs_spool/push");
    for f in files(&push) {
        assert!(!f.contains(".tmp"), "temporary file left in the spool: {f}");
        if let Some(name) = f.strip_suffix(".ok") {
            let group = &name[..16];
            assert!(
                repo.join("wal").join(group).join(name).exists(),
                "the spool records {name} as archived, but the repository does not hold it"
            );
        }
    }
}

fn backlog(a: &PgCluster, rows: u32) -> usize {
    a.sql(&format!(
        "CREATE TABLE t AS SELECT g, repeat(md5(g::text), 2) AS x FROM generate_series(1, {rows}) g"
    ));
    a.sql("SELECT pg_switch_wal()");
    let status = a.data.join("pg_wal/archive_status");
    std::fs::read_dir(&status)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".ready"))
        .count()
}

fn set_archive_command(a: &PgCluster, cmd: &str) {
    a.sql(&format!("ALTER SYSTEM SET archive_command = '{}'", cmd.replace('\'', "''")));
    a.sql("SELECT pg_reload_conf()");
}

#[test]
fn lookahead_drains_a_backlog() {
    let world = PgWorld::new();
    let repo = world.mkdir("repo");
    let copy = world.mkdir("copy");
    // No archive_command yet: PostgreSQL keeps every closed segment ready.
    let mut a = PgCluster::init(&world, "a", "archive_mode = on\narchive_command = ''\n");
    a.start();
    let ready = backlog(&a, 1_500_000);
    assert!(ready >= 12, "expected a backlog of ready segments, found {ready}");

    let bin = world.walrs.display().to_string();
    set_archive_command(
        &a,
        &format!("cp %p {}/%f && {} {bin} push %p", copy.display(), env_prefix(&repo)),
    );
    let last = a.switch_and_wait_archived();
    assert_eq!(a.sql("SELECT failed_count FROM pg_stat_archiver"), "0", "{}", a.server_log());

    let log = a.server_log();
    let fast = log.matches("was archived by an earlier call's look-ahead").count();
    let batches = log.matches("look-ahead archived").count();
    assert!(
        fast >= ready / 2,
        "only {fast} of {ready} backlog segments were answered from look-ahead records:\n{log}"
    );
    let segments = check_archive(&world, &repo, &copy, false);
    assert!(segments >= ready, "{segments} segments archived, {ready} were ready");
    assert!(
        files(&repo.join("wal").join(&last[..16])).contains(&last),
        "{last} is not in the repository"
    );
    check_spool(&a.data, &repo);
    assert!(batches >= 1, "no call archived other segments:\n{log}");
    eprintln!("backlog {ready}: {fast} calls answered from records, {batches} look-ahead batches");
}

/// archive_command runs walrs in the background and kills it, and any background look-ahead
/// pusher, with SIGKILL after a random delay of 0-59 ms (at most 16 times, never two calls in a
/// row), then fails the call: kills land before the lock, during look-ahead pushes, between an
/// object and its record, after the primary. Then
/// archiving goes on normally; nothing may be lost, partial or recorded falsely, and a cluster
/// recovering from a base backup taken before the writes replays it all.
#[test]
fn lookahead_survives_kill_9() {
    let world = PgWorld::new();
    let repo = world.mkdir("repo");
    let copy = world.mkdir("copy");
    let last = world.path("last-call-killed");
    let kills = world.path("kills");
    let armed = world.path("armed");
    let script = world.path("killer.sh");
    let bin = world.walrs.display().to_string();
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
# $1 = %p. While armed, kill walrs after a random 0-59 ms, at most 16 times and never two calls
# in a row (three failures in a row would park the archiver for a minute).
cp "$1" {copy}/"$(basename "$1")" || exit 1
{env} {bin} push "$1" &
pid=$!
k=$(cat {kills} 2>/dev/null | wc -l)
if [ -e {armed} ] && [ "$k" -lt 16 ] && [ ! -e {last} ]; then
    r=$(od -An -N1 -tu1 /dev/urandom | tr -d ' ')
    sleep "$(printf '0.%03d' $((r % 60)))" 2>/dev/null || sleep 0.02
    state=$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null)
    if [ -n "$state" ] && [ "$state" != Z ] && kill -9 $pid 2>/dev/null; then
        # The background pusher a call may have started is killed too, wherever it is.
        pkill -9 -f "^{bin} push" 2>/dev/null
        echo killed >> {kills}
        touch {last}
        wait $pid
        exit 1
    fi
fi
rm -f {last}
wait $pid
"#,
            last = last.display(),
            copy = copy.display(),
            kills = kills.display(),
            armed = armed.display(),
            env = env_prefix(&repo),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    chown_to_test_user(&script);

    let mut a = PgCluster::init(
        &world,
        "a",
        &format!("archive_mode = on\narchive_command = '{} %p'\n", script.display()),
    );
    a.start();
    a.sql("CREATE TABLE warmup (i int)");
    let backup = world.path("backup");
    a.basebackup(&backup);
    // From now on every other call is killed; each failure costs the archiver a one-second
    // pause, so ready segments pile up behind it and look-ahead has work.
    std::fs::write(&armed, "").unwrap();
    // WAL arrives in bursts, so that many calls find work (a kill only counts when it lands
    // while walrs is still running).
    let ready = backlog(&a, 300_000);
    for step in 0..14 {
        a.sql(&format!(
            "INSERT INTO t SELECT g, repeat(md5(g::text), 2) FROM generate_series({}, {}) g",
            300_001 + step * 150_000,
            300_000 + (step + 1) * 150_000
        ));
        a.sql("SELECT pg_switch_wal()");
        std::thread::sleep(Duration::from_millis(300));
    }
    a.sql("UPDATE t SET x = upper(x) WHERE g % 5 = 0");
    let expected = a.sql(CHECK_SQL);
    let last = a.switch_and_wait_archived();

    let killed = std::fs::read_to_string(&kills).unwrap_or_default().lines().count();
    assert!(killed >= 4, "only {killed} walrs processes were killed; the test proves little");
    let segments = check_archive(&world, &repo, &copy, true);
    assert!(segments >= ready);
    check_spool(&a.data, &repo);
    a.stop();

    // Recovery from the base backup replays everything through walrs fetch.
    let mut b = PgCluster::with_data(
        &world,
        "b",
        backup.clone(),
        &format!(
            "archive_mode = off\nrestore_command = 'WALRS_REPO={} {bin} fetch %f %p'\n",
            repo.display()
        ),
    );
    std::fs::write(backup.join("recovery.signal"), "").unwrap();
    chown_to_test_user(&backup);
    b.start();
    b.wait_for("the end of recovery", Duration::from_secs(300), || {
        b.sql("SELECT pg_is_in_recovery()") == "f"
    });
    assert_eq!(b.sql(CHECK_SQL), expected, "the recovered cluster holds different data");
    let log = b.server_log();
    assert!(log.contains(&format!("restored log file \"{last}\"")), "{log}");
    eprintln!("{killed} kills, {segments} segments, recovered");
}

/// Issue 13: a failing archive attempt logs one line per failure. The repository belongs to
/// another cluster, so every push fails (exit 5) with the same hint; with a backlog of ready
/// segments, the look-ahead used to add one warning per other ready segment to each attempt.
/// Now PostgreSQL's log holds one walrs line per failed attempt (PostgreSQL's own "archive
/// command failed" line counts the attempts).
#[test]
fn a_failing_archive_logs_one_line_per_attempt() {
    let world = PgWorld::new();
    let repo = world.mkdir("repo");
    // The repository of another cluster (a crafted segment of another system identifier).
    let other = world.mkdir("other-wal");
    let seg = crate::util::wal::SegSpec::new(1).write(&other);
    walrs(&repo).arg("push").arg(&seg).run().expect_code(0);
    chown_to_test_user(&repo);
    let mut a = PgCluster::init(&world, "a", "archive_mode = on\narchive_command = ''\n");
    a.start();
    let ready = backlog(&a, 300_000);
    assert!(ready >= 3, "expected a backlog of ready segments, found {ready}");
    let bin = world.walrs.display().to_string();
    set_archive_command(
        &a,
        &format!("WALRS_REPO={} WALRS_PUSH_PARALLEL=4 {bin} push %p", repo.display()),
    );
    // PostgreSQL tries a file three times in a row, a second apart, then waits a minute.
    a.wait_for("three failed attempts", Duration::from_secs(60), || {
        a.sql("SELECT failed_count FROM pg_stat_archiver").parse::<u32>().unwrap_or(0) >= 3
    });
    set_archive_command(&a, "");
    a.stop();
    // A background pusher lingers for half a second after its last push.
    std::thread::sleep(Duration::from_secs(2));
    let log = a.server_log();
    let attempts = log.matches("archive command failed with exit code 5").count();
    let walrs_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("walrs push:") && (l.contains(" ERROR ") || l.contains(" WARN ")))
        .collect();
    assert!(attempts >= 3, "{attempts} failed attempts:\n{log}");
    assert_eq!(
        walrs_lines.len(),
        attempts,
        "{attempts} failed attempts, but {} walrs lines:\n{}",
        walrs_lines.len(),
        walrs_lines.join("\n")
    );
    assert!(
        walrs_lines.iter().all(|l| l.contains("(hint: ")),
        "each line is the attempt's own error, with its hint:\n{}",
        walrs_lines.join("\n")
    );
    // Nothing of this cluster went into the other cluster's repository.
    assert_eq!(files(&repo.join("wal")).len(), 1, "{:?}", files(&repo.join("wal")));
}
