//! A real PostgreSQL 15 archives through `walrs push`, every archived file comes back
//! byte-identical through `walrs fetch`, and a cluster recovering from a base backup with
//! `restore_command = 'walrs fetch %f %p'` replays everything and holds the same data. Run on a
//! file-system repository and on an S3 repository (a real S3-compatible server on 127.0.0.1).

use std::path::Path;
use std::time::Duration;

use crate::util::pg::{PgCluster, PgWorld};
use crate::util::s3::S3Server;
use crate::util::{chown_to_test_user, files, key_b64, leftovers, walrs};

const CHECK_SQL: &str = "SELECT count(*) || ':' || sum(g) || ':' || sum(hashtext(x)::bigint) || ':' || \
    (SELECT string_agg(id::text, ',' ORDER BY id) FROM tx) FROM t";

/// The repository: `WALRS_*` / `AWS_*` variables for archive_command, restore_command and direct
/// walrs runs.
fn archive_and_recover(compression: &str, encrypted: bool, s3: Option<&S3Server>) {
    let world = PgWorld::new();
    let repo_dir = world.mkdir("repo");
    let copy = world.mkdir("copy");
    let mut vars: Vec<(String, String)> = match s3 {
        None => vec![("WALRS_REPO".into(), repo_dir.display().to_string())],
        Some(server) => {
            let mut v = vec![("WALRS_REPO".to_string(), server.url("pg"))];
            v.extend(server.env().into_iter().map(|(k, v)| (k.to_string(), v)));
            v
        }
    };
    vars.push(("WALRS_COMPRESSION".into(), compression.into()));
    vars.push(("WALRS_LOG".into(), "info".into()));
    if encrypted {
        let key_file = world.path("walrs.key");
        std::fs::write(&key_file, key_b64(7) + "\n").unwrap();
        std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        chown_to_test_user(&key_file);
        vars.push(("WALRS_ENCRYPTION_KEY_FILE".into(), key_file.display().to_string()));
    }
    let env: String = vars.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    let walrs_bin = world.walrs.display().to_string();
    // The copy is what PostgreSQL handed to archive_command: the reference for byte comparisons.
    let archive = format!("cp %p {}/%f && {env}{walrs_bin} push %p", copy.display());
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
        let mut cmd = walrs(Path::new("/unused")).args(["fetch", name.as_str()]).arg(&dest);
        for (k, v) in &vars {
            cmd = cmd.env(k, v);
        }
        cmd.run().expect_code(0);
        assert!(
            std::fs::read(&dest).unwrap() == std::fs::read(copy.join(name)).unwrap(),
            "{name} differs"
        );
    }
    assert!(
        leftovers(&repo_dir).is_empty(),
        "temporary files left in the repository: {:?}",
        leftovers(&repo_dir)
    );
    assert!(leftovers(&out_dir).is_empty());

    // The index built by push agrees: one contiguous range up to the last archived segment, and
    // every stored segment verifies (record CRCs, chains across segments, index digests).
    let run = |args: &[&str]| {
        let mut cmd = walrs(Path::new("/unused")).args(args);
        for (k, v) in &vars {
            cmd = cmd.env(k, v);
        }
        cmd.run()
    };
    let list = run(&["wal", "list", "--json"]);
    list.expect_code(0);
    let j: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(j["timelines"][0]["ranges"].as_array().map(Vec::len), Some(1), "{}", list.stdout);
    assert_eq!(j["timelines"][0]["ranges"][0]["last_wal"], last.as_str(), "{}", list.stdout);
    run(&["wal", "verify"]).expect_code(0);

    // Recovery from the base backup, every segment through walrs fetch.
    let restore = format!("{env}{walrs_bin} fetch %f %p");
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
    assert!(!log.contains(" ERROR walrs"), "walrs reported errors:\n{log}");
}

#[test]
fn pg15_archive_fetch_recover_zstd() {
    archive_and_recover("zstd", false, None);
}

#[test]
fn pg15_archive_fetch_recover_encrypted_lz4() {
    archive_and_recover("lz4", true, None);
}

#[test]
fn pg15_archive_fetch_recover_s3() {
    let server = S3Server::start();
    archive_and_recover("zstd", false, Some(&server));
}

#[test]
fn pg15_archive_fetch_recover_s3_encrypted() {
    let server = S3Server::start();
    archive_and_recover("zstd:3", true, Some(&server));
}
