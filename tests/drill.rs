//! `walrs drill` end to end with a real PostgreSQL 15 (data checksums on): a healthy drill to a
//! time target passes and records the target it reached; a random drill draws from the window;
//! a false `--sql` assertion fails it (23); a drill killed mid-way leaves a server that the next
//! drill stops; a flipped byte in a WAL segment the plan needs fails recovery with the segment
//! named (21); a flipped byte inside a table's data file in a backup chunk fails before
//! PostgreSQL starts (the envelope catches it, 7); a target before every backup is refused as
//! `restore` refuses it (19); a scratch file system smaller than the plan is refused before
//! anything is restored (11). Status and metrics show the last drill; a drill holds a lease.
//! One cluster and repository for all of them
//! (the CI time limit), in that order: the damaging cases come last.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::pg::{PgCluster, PgWorld, pg_bin};
use crate::util::{Out, Walrs, test_user};

struct Env {
    world: PgWorld,
    repo: PathBuf,
    scratch: PathBuf,
}

impl Env {
    fn walrs(&self) -> Walrs {
        Walrs::new(&self.world.walrs).env("WALRS_REPO", &self.repo)
    }

    /// A drill (as root: the server runs as postgres) with the test's scratch directory.
    fn drill(&self, args: &[&str]) -> Out {
        self.walrs()
            .args(["drill", "--scratch-dir", self.scratch.to_str().unwrap()])
            .args(args)
            .run()
    }

    fn json(&self, out: &Out) -> Value {
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr:\n{}", out.stdout, out.stderr))
    }

    fn scratch_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.scratch)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("walrs-drill-"))
            .collect()
    }
}

/// A process that exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// Every JSON value replaced by its type, except the fields that are the same in every run.
fn shape(v: &Value, key: &str) -> Value {
    const KEEP: &[&str] = &["result", "type", "failed_check", "format_version"];
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v, k))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| shape(v, key)).collect()),
        Value::Null | Value::Bool(_) => v.clone(),
        _ if KEEP.contains(&key) => v.clone(),
        Value::Number(_) => Value::String("[n]".into()),
        Value::String(_) => Value::String("[s]".into()),
    }
}

/// Stops a server the test saw left behind, should the test fail before the next drill does.
struct QuitOnDrop(u32);

impl Drop for QuitOnDrop {
    fn drop(&mut self) {
        if alive(self.0) {
            let _ =
                std::process::Command::new("kill").args(["-QUIT", &self.0.to_string()]).status();
        }
    }
}

fn flip_byte(file: &Path, offset: usize) -> Vec<u8> {
    let orig = std::fs::read(file).unwrap();
    let mut b = orig.clone();
    b[offset] ^= 0x40;
    std::fs::write(file, &b).unwrap();
    orig
}

fn setup() -> (Env, PgCluster) {
    let world = PgWorld::new();
    let repo = world.mkdir("repo");
    let scratch = world.mkdir("scratch");
    let archive = format!(
        "archive_mode = on\narchive_command = 'WALRS_REPO={} {} push %p'\n",
        repo.display(),
        world.walrs.display()
    );
    let mut a = PgCluster::init(&world, "a", &archive);
    // Data checksums: the drill's full read verifies them.
    let (u, g) = test_user();
    let o = std::process::Command::new(pg_bin().join("pg_checksums"))
        .args(["--enable", "-D"])
        .arg(&a.data)
        .uid(u)
        .gid(g)
        .output()
        .unwrap();
    assert!(o.status.success(), "pg_checksums: {}", String::from_utf8_lossy(&o.stderr));
    a.start();
    (Env { world, repo, scratch }, a)
}

#[test]
fn pg15_drill() {
    let (e, a) = setup();
    a.sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    a.sql("INSERT INTO t SELECT g, 'drill-marker-' || g FROM generate_series(1, 1000) g");
    // Chunks stored uncompressed: the test finds the table's rows in them (bottom).
    let (u, g) = test_user();
    let id = e
        .walrs()
        .run_as(u, g)
        .args(["basebackup", "--compression", "none", "-d"])
        .arg(format!("host={} port={} user=postgres", a.sock.display(), a.port))
        .run();
    id.expect_code(0);
    let id = id.stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(1100));
    a.sql("INSERT INTO t SELECT g, 'one' FROM generate_series(1001, 2000) g");
    std::thread::sleep(Duration::from_millis(1100));
    let between = a.sql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));
    a.sql("INSERT INTO t SELECT g, 'two' FROM generate_series(2001, 3000) g");
    a.switch_and_wait_archived();

    // 1. Healthy: to a time between the two batches, with assertions that hold there.
    let sql = e.world.path("checks.sql");
    std::fs::write(
        &sql,
        "-- the state at the target\nSELECT count(*) = 2000 FROM t;\nSELECT max(id) FROM t WHERE v = 'one';\n",
    )
    .unwrap();
    let out = e.drill(&["--target-time", &between, "--sql", sql.to_str().unwrap(), "--json"]);
    out.expect_code(0);
    let rec = e.json(&out);
    assert_eq!(rec["result"], "pass", "{rec:#}");
    assert_eq!(rec["backup"], id.as_str());
    // The recorded target is the one asked for (normalized to RFC 3339 UTC, microseconds).
    let asked = walrs::recovery::parse_timestamp(&between).unwrap();
    assert_eq!(rec["target"]["time"], walrs::timefmt::rfc3339_micros(asked).as_str(), "{rec:#}");
    assert_eq!(rec["target"]["type"], "time");
    let line = rec["reached"]["log_line"].as_str().unwrap();
    assert!(line.contains("recovery stopping before commit"), "{line}");
    assert!(rec["segments_replayed"].as_u64().unwrap() >= 1, "{rec:#}");
    assert!(rec["checks"]["relations_read"].as_u64().unwrap() > 50, "{rec:#}");
    assert_eq!(rec["checks"]["data_checksums"], true);
    assert_eq!(rec["checks"]["amcheck"], true);
    assert!(rec["checks"]["indexes_checked"].as_u64().unwrap() > 50, "{rec:#}");
    assert_eq!(rec["checks"]["sql_assertions"], 2);
    for part in ["restore_seconds", "recovery_seconds", "checks_seconds", "total_seconds"] {
        assert!(rec["rto"][part].as_f64().unwrap() > 0.0, "{part}: {rec:#}");
    }
    insta::assert_snapshot!("drill_pass", serde_json::to_string_pretty(&shape(&rec, "")).unwrap());
    assert!(e.scratch_dirs().is_empty(), "scratch left: {:?}", e.scratch_dirs());
    // A finished drill released its lease.
    let leases = std::fs::read_dir(e.repo.join("leases"))
        .map(|d| d.filter_map(|f| f.ok()?.file_name().into_string().ok()).collect::<Vec<_>>())
        .unwrap_or_default();
    assert!(leases.is_empty(), "leases left by a finished drill: {leases:?}");

    // 1b. Server binaries of another major version are refused before anything is touched (3):
    // no scratch directory, no lease, no record (step 2 counts two drills).
    let other = crate::util::pg::server_bin(17);
    let out = e.drill(&["--target-time", &between, "--pg-bin", other.to_str().unwrap()]);
    out.expect_code(3);
    assert!(
        out.stderr.contains("PostgreSQL 17, but the backup is of PostgreSQL 15"),
        "{}",
        out.stderr
    );
    assert!(e.scratch_dirs().is_empty(), "scratch left: {:?}", e.scratch_dirs());
    assert!(!e.repo.join("leases").read_dir().is_ok_and(|mut d| d.next().is_some()));

    // 2. A random instant of the window, reproducible from its seed; text output.
    let out = e.drill(&["--target-random", "--seed", "7"]);
    out.expect_code(0);
    assert!(out.stdout.contains(": pass"), "{}", out.stdout);
    let list = e.walrs().args(["drill", "list", "--json"]).run();
    list.expect_code(0);
    let drills = e.json(&list)["drills"].as_array().unwrap().clone();
    assert_eq!(drills.len(), 2, "{drills:?}");
    assert_eq!(drills[0]["id"], rec["id"]);
    let random = &drills[1];
    assert_eq!(
        (random["target"]["random"].clone(), random["target"]["seed"].clone()),
        (true.into(), 7.into())
    );
    let t = |v: &Value| walrs::recovery::parse_timestamp(v.as_str().unwrap()).unwrap();
    let (from, to, at) = (
        t(&random["target"]["window_start_time"]),
        t(&random["target"]["window_end_time"]),
        t(&random["target"]["time"]),
    );
    assert!(from <= at && at < to, "{random:#}");
    let text = e.walrs().args(["drill", "list"]).run();
    text.expect_code(0);
    assert!(text.stdout.contains(rec["id"].as_str().unwrap()), "{}", text.stdout);

    // 3. A false assertion fails the drill with 23, and is recorded.
    std::fs::write(&sql, "SELECT count(*) = 1 FROM t").unwrap();
    let out = e.drill(&["--sql", sql.to_str().unwrap(), "--json"]);
    out.expect_code(23);
    let rec = e.json(&out);
    assert_eq!((rec["result"].as_str(), rec["failed_check"].as_str()), (Some("fail"), Some("sql")));
    assert!(rec["error"].as_str().unwrap().contains("returned false"), "{rec:#}");
    insta::assert_snapshot!(
        "drill_fail_sql",
        serde_json::to_string_pretty(&shape(&rec, "")).unwrap()
    );
    let list = e.walrs().args(["drill", "list", "--json"]).run();
    insta::assert_snapshot!(
        "drill_list",
        serde_json::to_string_pretty(&shape(&e.json(&list), "")).unwrap()
    );

    // Status and metrics show the last drill (the failed one) and the last that passed (the
    // random one), as drill list has them.
    let status = e.walrs().args(["status", "--json"]).run();
    status.expect_code(0);
    let d = e.json(&status)["drill"].clone();
    assert_eq!(d["count"], 3, "{d:#}");
    assert_eq!(d["last"]["id"], rec["id"], "{d:#}");
    assert_eq!(d["last"]["failed_check"], "sql", "{d:#}");
    assert_eq!(d["last_success"]["id"], random["id"], "{d:#}");
    assert_eq!(d["last_success"]["rto_seconds"], random["rto"]["total_seconds"], "{d:#}");
    let text = e.walrs().args(["status"]).run();
    text.expect_code(0);
    assert!(text.stdout.contains("FAILED"), "{}", text.stdout);
    let metrics = e.walrs().args(["metrics"]).run();
    metrics.expect_code(0);
    let stop = t(&random["stop_time"]) as f64 / 1e6;
    let line = metrics
        .stdout
        .lines()
        .find(|l| l.starts_with("walrs_drill_last_success_timestamp_seconds{"))
        .unwrap_or_else(|| panic!("{}", metrics.stdout));
    let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((v - stop).abs() < 1e-3, "{line} vs {stop}");
    assert!(
        metrics
            .stdout
            .lines()
            .any(|l| l.starts_with("walrs_drill_last_passed{") && l.ends_with(" 0"))
    );

    // 4. A drill killed while its server runs: the next drill stops that server.
    let mut stale_pid = None;
    for _attempt in 0..3 {
        let mut child =
            e.walrs().args(["drill", "--scratch-dir", e.scratch.to_str().unwrap()]).start();
        let until = Instant::now() + Duration::from_secs(120);
        let pid = loop {
            let pid = e.scratch_dirs().iter().find_map(|d| {
                let s = std::fs::read_to_string(d.join("data/postmaster.pid")).ok()?;
                s.lines().next()?.trim().parse::<u32>().ok()
            });
            if pid.is_some() || Instant::now() > until {
                break pid;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        if let Some(p) = pid.filter(|p| alive(*p)) {
            stale_pid = Some(p);
            break;
        }
    }
    let stale_pid = stale_pid.expect("a killed drill never left its server running (3 attempts)");
    let _guard = QuitOnDrop(stale_pid);
    // The killed drill took its lease before it restored anything, and `walrs expire` keeps
    // the drill's backup for it (the lease expires by itself once nothing renews it).
    let drill_leases = || -> Vec<String> {
        std::fs::read_dir(e.repo.join("leases"))
            .map(|d| {
                d.filter_map(|f| f.ok()?.file_name().into_string().ok())
                    .filter(|n| n.starts_with("drill-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(!drill_leases().is_empty(), "the killed drill holds no lease");
    let plan = e.walrs().args(["expire", "--retain-full", "1", "--json"]).run();
    plan.expect_code(0);
    let plan = e.json(&plan);
    let lease = plan["leases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == "drill")
        .unwrap_or_else(|| panic!("no drill lease in the plan: {plan:#}"))
        .clone();
    assert_eq!((lease["live"].clone(), lease["backup"].clone()), (true.into(), id.as_str().into()));
    let kept = plan["backups"].as_array().unwrap().iter().find(|b| b["id"] == id.as_str()).unwrap();
    let holder = lease["holder"].as_str().unwrap();
    assert!(
        kept["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str() == Some(format!("kept: lease {holder}").as_str())),
        "{kept:#}"
    );
    let stale_dirs = e.scratch_dirs();
    assert_eq!(stale_dirs.len(), 1);
    let out = e.drill(&[]);
    out.expect_code(0);
    assert!(out.stderr.contains("killed drill"), "{}", out.stderr);
    let until = Instant::now() + Duration::from_secs(30);
    while alive(stale_pid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(stale_pid), "the killed drill's server {stale_pid} still runs");
    assert!(e.scratch_dirs().is_empty(), "{:?}", e.scratch_dirs());

    // 4b. A scratch file system smaller than the plan: refused before anything is restored
    // (exit 11), recorded as the check `scratch`, nothing left there, no new lease (the killed
    // drill's above stays until it expires).
    let leases = || -> Vec<String> {
        let mut l: Vec<String> = std::fs::read_dir(e.repo.join("leases"))
            .map(|d| d.filter_map(|f| f.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        l.sort();
        l
    };
    let leases_before = leases();
    let small = crate::util::Tmpfs::new("1m");
    let out = e.walrs().args(["drill", "--json", "--scratch-dir"]).arg(&small.path).run();
    out.expect_code(11);
    let rec = e.json(&out);
    assert_eq!(rec["failed_check"], "scratch", "{rec:#}");
    assert!(rec["error"].as_str().unwrap().contains("MiB free"), "{rec:#}");
    let left: Vec<_> =
        std::fs::read_dir(&small.path).unwrap().flatten().map(|f| f.path()).collect();
    assert!(left.is_empty(), "left on the small scratch file system: {left:?}");
    assert_eq!(leases(), leases_before, "a refused drill changed the leases");

    // 5. A flipped byte in the last WAL segment the plan needs: recovery fails, naming it.
    let plan = e
        .walrs()
        .args([
            "restore",
            "--dry-run",
            "--json",
            "--pgdata",
            e.world.path("unused").to_str().unwrap(),
        ])
        .run();
    plan.expect_code(0);
    let last = e.json(&plan)["last_wal"].as_str().unwrap().to_string();
    let obj = e.repo.join("wal").join(&last[..16]).join(&last);
    let len = std::fs::metadata(&obj).unwrap().len() as usize;
    let orig = flip_byte(&obj, len / 2);
    let out = e.drill(&["--json"]);
    std::fs::write(&obj, orig).unwrap();
    out.expect_code(21);
    let rec = e.json(&out);
    assert_eq!(rec["failed_check"], "recovery", "{rec:#}");
    let err = rec["error"].as_str().unwrap();
    assert!(err.contains(&format!("WAL file {last}")), "{err}");
    assert!(e.scratch_dirs().is_empty(), "{:?}", e.scratch_dirs());

    // 5b. A target before every backup: refused as `restore` refuses it (19, the same message),
    //     recorded with the check `plan`, nothing restored.
    let early = "2000-01-01 00:00:00";
    let refused = e
        .walrs()
        .args(["restore", "--dry-run", "--target-time", early, "--pgdata"])
        .arg(e.world.path("unused"))
        .run();
    refused.expect_code(19);
    let out = e.drill(&["--json", "--target-time", early]);
    out.expect_code(19);
    let rec = e.json(&out);
    assert_eq!(rec["failed_check"], "plan", "{rec:#}");
    let msg = rec["error"].as_str().unwrap();
    assert!(refused.stderr.contains(msg), "drill: {msg}\nrestore: {}", refused.stderr);
    assert!(rec["backup"].is_null() && rec["rto"]["recovery_seconds"] == 0.0, "{rec:#}");
    assert!(e.scratch_dirs().is_empty(), "{:?}", e.scratch_dirs());

    // 6. A flipped byte inside the table's rows in a backup chunk: caught before PostgreSQL
    //    starts (the chunk's envelope), exit 7, nothing left behind.
    let marker = b"drill-marker-500";
    let chunks = e.repo.join("backups").join(&id).join("base.tar");
    let (chunk, at) = std::fs::read_dir(&chunks)
        .unwrap()
        .flatten()
        .find_map(|c| {
            let b = std::fs::read(c.path()).ok()?;
            let at = b.windows(marker.len()).position(|w| w == marker)?;
            Some((c.path(), at))
        })
        .expect("the table's rows in an uncompressed chunk");
    let orig = flip_byte(&chunk, at + 3);
    let out = e.drill(&["--json", "--backup", &id]);
    std::fs::write(&chunk, orig).unwrap();
    out.expect_code(7);
    let rec = e.json(&out);
    assert_eq!(rec["failed_check"], "restore", "{rec:#}");
    assert!(rec["reached"].is_null() && rec["rto"]["recovery_seconds"] == 0.0, "{rec:#}");
    assert!(e.scratch_dirs().is_empty(), "{:?}", e.scratch_dirs());
    let list = e.walrs().args(["drill", "list", "--json"]).run();
    // Every drill but the killed one is recorded: 3 above, the one after the kill, the refused
    // scratch, the flipped WAL byte, the target before every backup, the flipped chunk byte.
    assert_eq!(e.json(&list)["drills"].as_array().unwrap().len(), 8);
    drop(a);
}
