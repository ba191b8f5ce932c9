//! A real PostgreSQL 15 archives through `walrs push`, every archived file comes back
//! byte-identical through `walrs fetch`, and a cluster recovering from a base backup with
//! `restore_command = 'walrs fetch %f %p'` replays everything and holds the same data.

use std::time::Duration;

use crate::util::pg::{PgCluster, PgWorld};
use crate::util::{chown_to_test_user, files, key_b64, leftovers, walrs};

const CHECK_SQL: &str = "SELECT count(*) || ':' || sum(g) || ':' || sum(hashtext(x)::bigint) || ':' || \
    (SELECT string_agg(id::text, ',' ORDER BY id) FROM tx) FROM t";

fn archive_and_recover(compression: &str, encrypted: bool) {
    let world = PgWorld::new();
    let repo = world.mkdir("repo");
    let copy = world.mkdir("copy");
    let mut env =
        format!("WALRS_REPO={} WALRS_COMPRESSION={compression} WALRS_LOG=info", repo.display());
    let key_file = world.path("walrs.key");
    if encrypted {
        std::fs::write(&key_file, key_b64(7) + "\n").unwrap();
        std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        chown_to_test_user(&key_file);
        env.push_str(&format!(" WALRS_ENCRYPTION_KEY_FILE={}", key_file.display()));
    }
    let walrs_bin = world.walrs.display().to_string();
    // The copy is what PostgreSQL handed to archive_command: the reference for byte comparisons.
    let archive = format!("cp %p {}/%f && {env} {walrs_bin} push %p", copy.display());
    let mut a = PgCluster::init(
        &world,
        "a",
        &format!("archive_mode = on\narchive_command = '{archive}'\n"),
    );
    a.start();
    a.sql("CREATE TABLE tx (id int)");
    let backup = world.path("backup");
    a.basebackup(&backup);

    a.sql("CREATE TABLE t AS SELECT g, repeat(md5(g::text), 2) AS x FROM generate_series(1, 2000000) g");
    a.sql("UPDATE t SET x = upper(x) WHERE g % 7 = 0");
    for i in 0..25 {
        a.sql(&format!("INSERT INTO tx VALUES ({i})"));
    }
    let expected = a.sql(CHECK_SQL);
    let last = a.switch_and_wait_archived();
    let failed = a.sql("SELECT failed_count FROM pg_stat_archiver");
    assert_eq!(failed, "0", "archive_command failed at least once:\n{}", a.server_log());

    // Every file PostgreSQL archived comes back identical.
    let archived = files(&copy);
    let segments = archived.iter().filter(|n| n.len() == 24).count();
    assert!(
        segments >= 15,
        "expected tens of segments, PostgreSQL archived {segments}: {archived:?}"
    );
    let out_dir = world.mkdir("fetched");
    for name in &archived {
        let dest = out_dir.join(name);
        let mut cmd = walrs(&repo).args(["fetch", name.as_str()]).arg(&dest);
        if encrypted {
            cmd = cmd.env("WALRS_ENCRYPTION_KEY_FILE", &key_file);
        }
        cmd.run().expect_code(0);
        assert!(
            std::fs::read(&dest).unwrap() == std::fs::read(copy.join(name)).unwrap(),
            "{name} differs"
        );
    }
    assert!(
        leftovers(&repo).is_empty(),
        "temporary files left in the repository: {:?}",
        leftovers(&repo)
    );
    assert!(leftovers(&out_dir).is_empty());

    // Recovery from the base backup, every segment through walrs fetch.
    let restore = format!("{env} {walrs_bin} fetch %f %p");
    let mut b = PgCluster::with_data(
        &world,
        "b",
        backup.clone(),
        &format!("archive_mode = off\nrestore_command = '{restore}'\n"),
    );
    std::fs::write(backup.join("recovery.signal"), "").unwrap();
    chown_to_test_user(&backup);
    b.start();
    b.wait_for("the end of recovery", Duration::from_secs(300), || {
        b.sql("SELECT pg_is_in_recovery()") == "f"
    });
    assert_eq!(b.sql(CHECK_SQL), expected, "the recovered cluster holds different data");
    let log = b.server_log();
    assert!(
        log.contains(&format!("restored log file \"{last}\" from archive")),
        "the last archived segment was not restored through walrs:\n{log}"
    );
    let restored = log.matches("restored log file").count();
    assert!(
        restored >= segments,
        "only {restored} of {segments} segments came through walrs fetch"
    );
    assert!(
        !log.contains("walrs fetch: ERROR") && !log.contains(" ERROR walrs"),
        "walrs reported errors:\n{log}"
    );
}

#[test]
fn pg15_archive_fetch_recover_zstd() {
    archive_and_recover("zstd", false);
}

#[test]
fn pg15_archive_fetch_recover_encrypted_lz4() {
    archive_and_recover("lz4", true);
}
