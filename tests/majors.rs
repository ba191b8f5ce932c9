//! The whole loop on every PostgreSQL major walrs supports besides the system's 15 (13, 14 with
//! the older `BASE_BACKUP` syntax; 16, 17, 18): archive through `walrs push`, `walrs basebackup`,
//! writes, `walrs restore --target-time` between two transactions, a server of the same major
//! started on the result (WAL through `walrs fetch`, with prefetch), and the rows compared.
//! Server binaries: scripts/install-prereqs.sh (npm builds under /opt/walrs-test-pg).

use std::time::Duration;

use crate::util::pg::{PgCluster, PgWorld};
use crate::util::{Walrs, chown_to_test_user};

fn whole_loop(major: u32) {
    let world = PgWorld::new();
    let repo = world.mkdir("repo");
    let mut a = PgCluster::init_major(
        &world,
        "a",
        &format!(
            "archive_mode = on\narchive_command = 'WALRS_REPO={} {} push %p'\n",
            repo.display(),
            world.walrs.display()
        ),
        major,
    );
    a.start();
    assert!(a.sql("SHOW server_version_num").starts_with(&major.to_string()));
    a.sql("CREATE TABLE t (id int, v text)");
    a.sql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g");
    let (u, g) = crate::util::test_user();
    let walrs = || Walrs::new(&world.walrs).env("WALRS_REPO", &repo);
    let out = walrs()
        .run_as(u, g)
        .args([
            "basebackup",
            "-d",
            &format!("host={} port={} user=postgres", a.sock.display(), a.port),
        ])
        .run();
    out.expect_code(0);
    let id = out.stdout.trim().to_string();

    a.sql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1001, 3000) g");
    // Enough WAL that replay crosses several segments.
    a.sql("CREATE TABLE filler AS SELECT g, repeat(md5(g::text), 4) AS x FROM generate_series(1, 200000) g");
    let expected = a.sql("SELECT count(*) || ':' || sum(hashtext(v)) FROM t");
    std::thread::sleep(Duration::from_millis(1100));
    let target = a.sql("SELECT now()");
    std::thread::sleep(Duration::from_millis(1100));
    a.sql("DELETE FROM t WHERE id > 2000");
    a.switch_and_wait_archived();
    a.stop();

    let dir = world.path("restored");
    walrs()
        .args([
            "restore",
            "--backup",
            &id,
            "--pgdata",
            dir.to_str().unwrap(),
            "--target-time",
            &target,
        ])
        .run()
        .expect_code(0);
    chown_to_test_user(&dir);
    let mut b = PgCluster::with_data(&world, "b", dir, "archive_mode = off\n");
    b.server_bin = a.server_bin.clone();
    b.start();
    b.wait_for("the end of recovery", Duration::from_secs(120), || {
        b.sql("SELECT pg_is_in_recovery()") == "f"
    });
    assert_eq!(
        b.sql("SELECT count(*) || ':' || sum(hashtext(v)) FROM t"),
        expected,
        "PostgreSQL {major}: the restored rows differ\n{}",
        b.server_log()
    );
    let log = b.server_log();
    assert!(
        log.contains("restored log file"),
        "PostgreSQL {major}: no WAL came through walrs fetch\n{log}"
    );
    walrs().args(["backup", "verify", &id]).run().expect_code(0);
}

#[test]
fn pg13_whole_loop() {
    whole_loop(13);
}

#[test]
fn pg14_whole_loop() {
    whole_loop(14);
}

#[test]
fn pg16_whole_loop() {
    whole_loop(16);
}

#[test]
fn pg17_whole_loop() {
    whole_loop(17);
}

#[test]
fn pg18_whole_loop() {
    whole_loop(18);
}
