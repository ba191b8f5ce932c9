//! Prefetch with a real PostgreSQL 15: a cluster recovering from a base backup through
//! `walrs fetch` gets most segments from the spool, never a wrong one (planted entries under
//! the wrong name, from another repository, or cut short are refused), and replays everything;
//! the same with walrs and its prefetchers killed with SIGKILL at random points; a fetch outside
//! recovery (pg_rewind's way) leaves the spool alone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::pg::{PgCluster, PgWorld};
use crate::util::{chown_to_test_user, files, walrs};

const CHECK_SQL: &str =
    "SELECT count(*) || ':' || sum(g) || ':' || sum(hashtext(x)::bigint) FROM t";

/// A cluster archiving through walrs, a base backup taken before a few dozen segments of writes.
/// Returns (world, repo, backup dir, expected CHECK_SQL, last archived segment).
/// `steps` inserts of 200,000 rows after the base backup (each about 3 segments of WAL).
fn archived_history(world: &PgWorld, steps: u32) -> (PathBuf, PathBuf, String, String) {
    let repo = world.mkdir("repo");
    let bin = world.walrs.display().to_string();
    let mut a = PgCluster::init(
        world,
        "a",
        &format!(
            "archive_mode = on\narchive_command = 'WALRS_REPO={} {bin} push %p'\n",
            repo.display()
        ),
    );
    a.start();
    a.sql("CREATE TABLE t (g int, x text)");
    let backup = world.path("backup");
    a.basebackup(&backup);
    for step in 0..steps {
        a.sql(&format!(
            "INSERT INTO t SELECT g, repeat(md5(g::text), 2) FROM generate_series({}, {}) g",
            step * 200_000 + 1,
            (step + 1) * 200_000
        ));
    }
    a.sql("UPDATE t SET x = upper(x) WHERE g % 7 = 0");
    let expected = a.sql(CHECK_SQL);
    let last = a.switch_and_wait_archived();
    a.stop();
    (repo, backup, expected, last)
}

fn recover(world: &PgWorld, backup: &Path, restore_command: &str) -> PgCluster {
    let mut b = PgCluster::with_data(
        world,
        "b",
        backup.to_path_buf(),
        &format!("archive_mode = off\nrestore_command = '{restore_command}'\n"),
    );
    std::fs::write(backup.join("recovery.signal"), "").unwrap();
    chown_to_test_user(backup);
    b.start();
    b.wait_for("the end of recovery", Duration::from_secs(300), || {
        b.sql("SELECT pg_is_in_recovery()") == "f"
    });
    b
}

/// Segment names in `repo` (one timeline), in order.
fn segments(repo: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for group in files(&repo.join("wal")) {
        let name = group.rsplit('/').next().unwrap().to_string();
        if name.len() == 24 {
            out.push(name);
        }
    }
    out.sort();
    out
}

#[test]
fn prefetch_serves_recovery_and_refuses_wrong_entries() {
    let world = PgWorld::new();
    let (repo, backup, expected, last) = archived_history(&world, 6);
    let segs = segments(&repo);
    assert!(segs.len() >= 12, "expected a dozen segments or more, found {segs:?}");
    let bin = world.walrs.display().to_string();

    // pg_rewind's way: %p is the segment's own path in pg_wal, not RECOVERYXLOG: a plain fetch.
    let spool = backup.join("walrs_spool");
    let probe = backup.join("pg_wal").join(&segs[2]);
    walrs(&repo).args(["fetch", segs[2].as_str()]).arg(&probe).run().expect_code(0);
    // (the backup may hold the source's spool: look-ahead push records)
    assert!(!spool.join("prefetch").exists(), "a fetch outside recovery started prefetching");
    std::fs::remove_file(&probe).unwrap();

    // Plant entries that must never be served: segment 4's content under segment 5's name, an
    // entry that names another repository, and one cut short. Each has a sidecar that otherwise
    // looks right.
    let pre = spool.join("prefetch");
    std::fs::create_dir_all(&pre).unwrap();
    let fetch_plain = |name: &str, dest: &Path| {
        walrs(&repo).args(["fetch", name]).arg(dest).run().expect_code(0);
    };
    fetch_plain(&segs[4], &pre.join(&segs[5]));
    // xlp_sysid: bytes 8..16 of the long page header.
    let head = std::fs::read(pre.join(&segs[5])).unwrap();
    let sysid = u64::from_le_bytes(head[8..16].try_into().unwrap());
    let meta = |name: &str, repo_desc: &str| {
        format!(
            r#"{{"format_version":1,"name":"{name}","repo":"{repo_desc}","system_identifier":"{sysid}","stored_len":{},"plain_len":16777216,"content_digest":"00"}}"#,
            stored_len(&repo, name)
        )
    };
    let desc = format!("file://{}", repo.display());
    std::fs::write(pre.join(format!("{}.meta", segs[5])), meta(&segs[5], &desc)).unwrap();
    fetch_plain(&segs[6], &pre.join(&segs[6]));
    std::fs::write(pre.join(format!("{}.meta", segs[6])), meta(&segs[6], "file:///elsewhere"))
        .unwrap();
    fetch_plain(&segs[7], &pre.join(&segs[7]));
    let f = std::fs::OpenOptions::new().write(true).open(pre.join(&segs[7])).unwrap();
    f.set_len(8 << 20).unwrap();
    std::fs::write(pre.join(format!("{}.meta", segs[7])), meta(&segs[7], &desc)).unwrap();

    let b = recover(
        &world,
        &backup,
        &format!("WALRS_REPO={} WALRS_LOG=info {bin} fetch %f %p", repo.display()),
    );
    assert_eq!(b.sql(CHECK_SQL), expected, "the recovered cluster holds different data");
    let log = b.server_log();
    assert!(log.contains(&format!("restored log file \"{last}\"")), "{log}");
    let from_spool = log.matches("from the prefetch spool").count();
    let replayed = log.matches("restored log file").count();
    // The first segment and the three planted ones come from the repository.
    assert!(
        from_spool * 2 >= replayed.saturating_sub(4),
        "only {from_spool} of {replayed} segments came from the prefetch spool:\n{log}"
    );
    for planted in [&segs[5], &segs[6], &segs[7]] {
        assert!(
            log.contains(&format!("prefetched {planted} not used")),
            "the planted entry {planted} was not refused:\n{log}"
        );
    }
    // Served entries are gone; nothing is left but the position and the lock.
    let left: Vec<String> = files(&pre)
        .into_iter()
        .filter(|f| !f.ends_with("position") && !f.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "left in the spool after recovery: {left:?}");
    eprintln!("{from_spool} of {replayed} segments came from the spool");
}

fn stored_len(repo: &Path, name: &str) -> u64 {
    std::fs::metadata(repo.join("wal").join(&name[..16]).join(name)).unwrap().len()
}

/// restore_command runs `walrs fetch` in the background and, at most 12 times, kills it after a
/// random 0-4 ms (a fetch served from the spool is over in a few) or the prefetcher after a
/// random 0-59 ms (or as soon as one runs in the 100 ms after that), with SIGKILL; a fetch that was killed is run again
/// without interference, as PostgreSQL would retry it. Recovery must replay everything, with
/// nothing partial ever reaching pg_wal.
#[test]
fn prefetch_survives_kill_9() {
    let world = PgWorld::new();
    // More WAL than the other tests: every call is a chance for a kill, and fetches served from
    // the spool are over in a few milliseconds.
    let (repo, backup, expected, last) = archived_history(&world, 10);
    let bin = world.walrs.display().to_string();
    let kills = world.path("kills");
    let script = world.path("fetcher.sh");
    let env = format!("WALRS_REPO={} WALRS_LOG=info", repo.display());
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
# $1 = %f, $2 = %p. The dice are cast before the fetch starts, so that the kill follows its
# start closely (a fetch served from the spool is over in a few milliseconds).
k=$(cat {kills} 2>/dev/null | wc -l)
r=$(od -An -N1 -tu1 /dev/urandom | tr -d ' ')
{env} {bin} fetch "$1" "$2" &
pid=$!
if [ "$k" -lt 12 ]; then
    if [ $((r % 2)) -eq 0 ]; then
        sleep "$(printf '0.%03d' $((r % 60)))" 2>/dev/null || sleep 0.02
        # A prefetcher runs only while it has work: look for one a little longer.
        for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
            if pkill -9 -f "prefetch .*--spool-dir {spool}" 2>/dev/null; then echo prefetcher >> {kills}; break; fi
            sleep 0.005 2>/dev/null || break
        done
    else
        sleep "$(printf '0.%03d' $((r % 5)))" 2>/dev/null || sleep 0.002
        state=$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null)
        if [ -n "$state" ] && [ "$state" != Z ] && kill -9 $pid 2>/dev/null; then
            echo fetch >> {kills}
            wait $pid
            {env} {bin} fetch "$1" "$2"
            exit $?
        fi
    fi
fi
wait $pid
"#,
            kills = kills.display(),
            spool = backup.join("walrs_spool").display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    chown_to_test_user(&script);

    let b = recover(&world, &backup, &format!("{} %f %p", script.display()));
    let killed = std::fs::read_to_string(&kills).unwrap_or_default();
    let n = killed.lines().count();
    assert!(n >= 3, "only {n} kills landed; the test proves little");
    assert_eq!(b.sql(CHECK_SQL), expected, "the recovered cluster holds different data");
    let log = b.server_log();
    assert!(log.contains(&format!("restored log file \"{last}\"")), "{log}");
    // Nothing partial or temporary ever reached pg_wal.
    let stray: Vec<String> =
        files(&backup.join("pg_wal")).into_iter().filter(|f| f.contains("walrs-tmp")).collect();
    assert!(stray.is_empty(), "temporary files in pg_wal: {stray:?}");
    eprintln!(
        "{} fetch kills, {} prefetcher kills, recovered",
        killed.matches("fetch\n").count(),
        killed.matches("prefetcher").count()
    );
}
