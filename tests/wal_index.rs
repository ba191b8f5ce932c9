//! The WAL index and `walrs wal list | verify`, `walrs timeline` against a real PostgreSQL 15:
//! archive through walrs, verify clean, switch timelines (restore, promote, write, archive), then
//! damage the archive in each way and check that `wal verify` names every damaged segment.

use std::path::Path;
use std::time::Duration;

use crate::util::pg::{PgCluster, PgWorld};
use crate::util::{chown_to_test_user, files, walrs};

fn wal(repo: &Path, args: &[&str]) -> crate::util::Out {
    walrs(repo).args(args).run()
}

fn object(repo: &Path, name: &str) -> std::path::PathBuf {
    repo.join("wal").join(&name[..16]).join(name)
}

#[test]
fn pg15_index_timelines_and_verify() {
    let world = PgWorld::new();
    let repo = world.mkdir("repo");
    let walrs_bin = world.walrs.display().to_string();
    let env = format!("WALRS_REPO={} WALRS_LOG=info", repo.display());
    let archive = format!("archive_mode = on\narchive_command = '{env} {walrs_bin} push %p'\n");
    let mut a = PgCluster::init(&world, "a", &archive);
    a.start();
    a.sql("CREATE TABLE t (a int, b text)");
    let backup = world.path("backup");
    a.basebackup(&backup);
    a.sql("INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 300000) g");
    a.sql("SELECT pg_create_restore_point('before-update')");
    a.sql("UPDATE t SET b = 'y' WHERE a % 2 = 0");
    let last_a = a.switch_and_wait_archived();
    a.stop();

    // Clean archive: verify passes, list shows one contiguous range up to the last segment.
    let v = wal(&repo, &["wal", "verify"]);
    v.expect_code(0);
    assert!(v.stdout.contains(": ok"), "{}", v.stdout);
    let list = wal(&repo, &["wal", "list", "--json"]);
    list.expect_code(0);
    let j: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(j["timelines"].as_array().unwrap().len(), 1);
    let ranges = j["timelines"][0]["ranges"].as_array().unwrap();
    assert_eq!(ranges.len(), 1, "{}", list.stdout);
    assert_eq!(ranges[0]["last_wal"], last_a.as_str());
    assert!(ranges[0]["commits"].as_u64().unwrap() > 0);

    // Timeline switch: recover the base backup, promote (timeline 2), write, archive.
    let restore = format!("{env} {walrs_bin} fetch %f %p");
    let mut b = PgCluster::with_data(
        &world,
        "b",
        backup.clone(),
        &format!("{archive}restore_command = '{restore}'\n"),
    );
    std::fs::write(backup.join("recovery.signal"), "").unwrap();
    chown_to_test_user(&backup);
    b.start();
    b.wait_for("promotion", Duration::from_secs(180), || {
        b.sql("SELECT pg_is_in_recovery()") == "f"
    });
    b.sql("INSERT INTO t SELECT g, 'timeline two' FROM generate_series(1, 100000) g");
    let last_b = b.switch_and_wait_archived();
    assert!(last_b.starts_with("00000002"), "{last_b}");
    b.stop();

    let tl = wal(&repo, &["timeline", "--json"]);
    tl.expect_code(0);
    let t: serde_json::Value = serde_json::from_str(&tl.stdout).unwrap();
    let t2 =
        t["timelines"].as_array().unwrap().iter().find(|e| e["timeline"] == 2).expect("timeline 2");
    assert_eq!(t2["parent"], 1, "{}", tl.stdout);
    let switch: walrs::pg::Lsn = t2["switchpoint"].as_str().unwrap().parse().unwrap();
    assert!(switch.0 > 0);
    let human = wal(&repo, &["timeline"]);
    assert!(
        human.stdout.contains(&format!("branched from timeline 1 at {switch}")),
        "{}",
        human.stdout
    );
    let list = wal(&repo, &["wal", "list", "--json"]);
    let j: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let tls: Vec<u64> = j["timelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["timeline"].as_u64().unwrap())
        .collect();
    assert_eq!(tls, vec![1, 2]);
    let first2 = j["timelines"][1]["ranges"][0]["first_wal"].as_str().unwrap().to_string();
    let seg = walrs::pg::WalSegSize::DEFAULT;
    assert_eq!(
        walrs::pg::WalFileName::parse(&first2).unwrap().segno(seg).unwrap(),
        switch.segment(seg),
        "timeline 2 starts in the segment of its switch point"
    );
    let v = wal(&repo, &["wal", "verify"]);
    v.expect_code(0);
    assert!(v.stdout.contains("[1, 2]"), "{}", v.stdout);
    let v2 = wal(&repo, &["wal", "verify", "--timeline", "2", "--json"]);
    v2.expect_code(0);

    // Damage: a missing middle segment, a flipped byte, two swapped objects.
    let segs: Vec<String> = files(&repo.join("wal"))
        .into_iter()
        .filter_map(|p| p.rsplit('/').next().map(str::to_owned))
        .filter(|n| n.len() == 24 && n.starts_with("00000001"))
        .collect();
    assert!(segs.len() >= 6, "{segs:?}");
    let (gone, flipped, sw1, sw2) = (&segs[2], &segs[3], &segs[4], &segs[5]);
    std::fs::remove_file(object(&repo, gone)).unwrap();
    let p = object(&repo, flipped);
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x08;
    std::fs::write(&p, bytes).unwrap();
    let (p1, p2) = (object(&repo, sw1), object(&repo, sw2));
    let (b1, b2) = (std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap());
    std::fs::write(&p1, b2).unwrap();
    std::fs::write(&p2, b1).unwrap();
    let v = wal(&repo, &["wal", "verify"]);
    v.expect_code(18);
    for (kind, name) in
        [("missing", gone), ("corrupt", flipped), ("corrupt", sw1), ("corrupt", sw2)]
    {
        assert!(
            v.stdout.lines().any(|l| l.starts_with(kind) && l.contains(name.as_str())),
            "{kind} {name} not reported:\n{}",
            v.stdout
        );
    }
    let j: serde_json::Value =
        serde_json::from_str(&wal(&repo, &["wal", "verify", "--json"]).stdout).unwrap();
    assert!(j["problems"].as_array().unwrap().len() >= 4);
    // --from beyond the damage: clean again.
    let after = walrs::pg::WalFileName::parse(sw2).unwrap().segno(seg).unwrap().0 + 1;
    let from = walrs::pg::XLogSegNo(after).start_lsn(seg).to_string();
    let v = wal(&repo, &["wal", "verify", "--timeline", "1", "--from", &from]);
    v.expect_code(0);
}

#[test]
fn pushing_a_segment_with_damaged_records_stores_flags_and_reports_it() {
    let world = PgWorld::new();
    let copy = world.mkdir("copy");
    let mut a = PgCluster::init(
        &world,
        "a",
        &format!("archive_mode = on\narchive_command = 'cp %p {}/%f'\n", copy.display()),
    );
    a.start();
    a.sql("CREATE TABLE t AS SELECT g, repeat('z', 200) AS b FROM generate_series(1, 200000) g");
    a.switch_and_wait_archived();
    a.stop();
    let segs: Vec<String> = files(&copy).into_iter().filter(|n| n.len() == 24).collect();
    assert!(segs.len() >= 3);
    let repo = world.mkdir("repo");
    let victim = &segs[1];
    let mut bytes = std::fs::read(copy.join(victim)).unwrap();
    bytes[5 * 8192 + 4000] ^= 0x55; // inside record data: the page headers stay valid
    std::fs::write(copy.join(victim), bytes).unwrap();
    for s in &segs {
        let out = walrs(&repo).args(["push".as_ref(), copy.join(s).as_os_str()]).run();
        out.expect_code(0);
        if s == victim {
            assert!(
                out.stderr.contains("damaged") && out.stderr.contains("ERROR"),
                "{}",
                out.stderr
            );
        }
    }
    let list = wal(&repo, &["wal", "list"]);
    assert!(list.stdout.contains(&format!("damaged: {victim}")), "{}", list.stdout);
    let v = wal(&repo, &["wal", "verify"]);
    v.expect_code(18);
    assert!(
        v.stdout.lines().any(|l| l.starts_with("damaged") && l.contains(victim.as_str())),
        "{}",
        v.stdout
    );
    assert!(v.stdout.contains("checksum"), "{}", v.stdout);
    // The index can be rebuilt from the stored segments, with the same verdicts.
    std::fs::remove_dir_all(repo.join("index")).unwrap();
    let r = wal(&repo, &["wal", "index", "--rebuild"]);
    r.expect_code(0);
    assert!(r.stdout.contains(&format!("indexed {}", segs.len())), "{}", r.stdout);
    let list = wal(&repo, &["wal", "list"]);
    assert!(list.stdout.contains(&format!("damaged: {victim}")), "{}", list.stdout);
}
