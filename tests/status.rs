//! Issue 16, `walrs status` and `walrs metrics`, against a repository with two timelines and a
//! gap, built with real PostgreSQL 15 clusters: a base backup on timeline 1, WAL after it, a
//! restore promoted to timeline 2 that archives into the same repository, a second backup there,
//! and one segment of timeline 1 removed with its index entry. Every value `status --json` reports
//! is compared with what `wal list --json` and `backup list --json` report; the metrics text is
//! read with the Prometheus client library's own parser (the venv scripts/install-prereqs.sh
//! sets up), never a regex, printed, written with `--textfile` and scraped over HTTP from
//! `--listen`. Also: `wal verify` and `backup verify` log their progress and rate.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::pitr::{Env, basebackup, setup};
use crate::util::chown_to_test_user;
use crate::util::pg::PgCluster;

/// Per family name: its type, its help, its samples (labels, value).
pub(crate) type Families = BTreeMap<String, (String, String, Vec<(BTreeMap<String, String>, f64)>)>;

/// The Python of the venv with `prometheus_client` (scripts/install-prereqs.sh).
const VENV_PYTHON: &str = "/opt/walrs-test-venv/bin/python";

/// Parses exposition text with `prometheus_client.parser.text_string_to_metric_families` and
/// returns, per family name, its type, help and samples `(labels, value)`. Panics if the parser
/// refuses the text.
pub(crate) fn parse_exposition(text: &str) -> Families {
    assert!(
        Path::new(VENV_PYTHON).exists(),
        "{VENV_PYTHON} not found: run scripts/install-prereqs.sh"
    );
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {"type": f.type, "help": f.documentation,
                   "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]}
print(json.dumps(out))
"#;
    let mut child = Command::new(VENV_PYTHON)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "the Prometheus parser refused the text:\n{}\n{text}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .map(|(name, f)| {
            let samples = f["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    assert_eq!(s["name"], name.as_str(), "a sample outside its family");
                    let labels = s["labels"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                        .collect();
                    (labels, s["value"].as_f64().unwrap())
                })
                .collect();
            (
                name.clone(),
                (
                    f["type"].as_str().unwrap().to_owned(),
                    f["help"].as_str().unwrap().to_owned(),
                    samples,
                ),
            )
        })
        .collect()
}

/// Unix seconds of an RFC 3339 UTC time as walrs prints it (`...Z`, with or without fraction).
pub(crate) fn unix_of(t: &str) -> f64 {
    let o = Command::new("date").args(["-u", "-d", t, "+%s.%N"]).output().unwrap();
    assert!(o.status.success(), "date -d {t}");
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

fn json(e: &Env, args: &[&str]) -> Value {
    let out = e.run(args);
    out.expect_code(0);
    serde_json::from_str(&out.stdout).unwrap_or_else(|err| panic!("{err}: {}", out.stdout))
}

/// Builds the repository: backup 1 on timeline 1, WAL after it, timeline 2 (a promoted restore)
/// with backup 2 and WAL after it, then a gap in timeline 1 after backup 1. Returns the env and
/// the removed segment.
fn two_timelines_and_a_gap() -> (Env, String) {
    let (e, mut a) = setup(false);
    a.sql("CREATE TABLE t (id int, v text)");
    a.sql("INSERT INTO t SELECT g, 'base' FROM generate_series(1, 1000) g");
    basebackup(&e, &a);
    for i in 0..4 {
        a.sql(&format!("INSERT INTO t VALUES ({i}, 'one')"));
        a.switch_and_wait_archived();
    }
    a.stop();
    let dir = e.world.path("b");
    e.run(&["restore", "--pgdata", dir.to_str().unwrap(), "--archive-mode=preserve"])
        .expect_code(0);
    chown_to_test_user(&dir);
    let archive = format!(
        "archive_mode = on\narchive_command = 'WALRS_REPO={} {} push %p'\n",
        e.repo.display(),
        e.world.walrs.display()
    );
    let mut b = PgCluster::with_data(&e.world, "b-run", dir, &archive);
    b.start();
    b.wait_for("promotion", Duration::from_secs(120), || {
        b.sql("SELECT pg_is_in_recovery()") == "f"
    });
    b.sql("INSERT INTO t VALUES (10, 'two')");
    b.switch_and_wait_archived();
    std::thread::sleep(Duration::from_millis(1100));
    basebackup(&e, &b);
    b.sql("INSERT INTO t VALUES (11, 'two')");
    b.switch_and_wait_archived();
    b.stop();

    // The gap: the second segment after backup 1's last, its index entry, and the roll-up of
    // its group (a cache that the next reader rebuilds from the entries).
    let list = json(&e, &["backup", "list", "--json"]);
    let bk1 = list["backups"].as_array().unwrap().iter().find(|b| b["timeline"] == 1).unwrap();
    let last = bk1["last_wal"].as_str().unwrap();
    let n = u64::from_str_radix(&last[16..], 16).unwrap() + 2;
    let gone = format!("{}{n:08X}", &last[..16]);
    let group = &gone[..16];
    for p in [
        e.repo.join("wal").join(group).join(&gone),
        e.repo.join("index/seg").join(group).join(&gone),
        e.repo.join("index/group").join(group),
    ] {
        std::fs::remove_file(&p).unwrap_or_else(|err| panic!("{}: {err}", p.display()));
    }
    (e, gone)
}

/// `status --json` equals what `wal list --json` and `backup list --json` report; the text
/// output names the gap and the windows; `metrics` (printed, `--textfile`, `--listen`) parses
/// as the exposition format and carries the same values.
#[test]
fn pg15_issue_16_status_and_metrics_match_wal_list_and_backup_list() {
    let (e, gone) = two_timelines_and_a_gap();
    let wal = json(&e, &["wal", "list", "--json"]);
    let backups = json(&e, &["backup", "list", "--json"]);
    let status = json(&e, &["status", "--json"]);

    // Timelines: archived range, segments, LSNs, gaps and partials as `wal list` has them.
    let wl = wal["timelines"].as_array().unwrap();
    let st = status["timelines"].as_array().unwrap();
    assert_eq!(st.len(), 2, "{status}");
    assert_eq!(wl.len(), 2, "{wal}");
    for (w, s) in wl.iter().zip(st) {
        assert_eq!(s["timeline"], w["timeline"]);
        let ranges = w["ranges"].as_array().unwrap();
        let (first, last) = (&ranges[0], &ranges[ranges.len() - 1]);
        assert_eq!(s["first_wal"], first["first_wal"]);
        assert_eq!(s["last_wal"], last["last_wal"]);
        assert_eq!(s["start_lsn"], first["start_lsn"]);
        assert_eq!(s["end_lsn"], last["end_lsn"]);
        let segments: u64 = ranges.iter().map(|r| r["segments"].as_u64().unwrap()).sum();
        assert_eq!(s["segments"], segments);
        assert_eq!(s["gaps"], w["gaps"]);
        assert_eq!(s["partials"], w["partials"]);
        let last_xact = ranges.iter().rev().find(|r| !r["last_xact_time"].is_null());
        assert_eq!(s["last_xact_time"], last_xact.unwrap()["last_xact_time"]);
    }
    assert_eq!(st[0]["gaps"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(st[0]["gaps"][0]["first_wal"], gone.as_str());
    assert_eq!(st[1]["gaps"].as_array().unwrap().len(), 0);
    assert_eq!(st[1]["parent"], 1);

    // Backups as `backup list` has them.
    let bl = backups["backups"].as_array().unwrap();
    assert_eq!(bl.len(), 2);
    let b = &status["backups"];
    assert_eq!(b["count"], 2);
    let sum = |k: &str| bl.iter().map(|x| x[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(b["bytes"], sum("bytes"));
    assert_eq!(b["stored_bytes"], sum("stored_bytes"));
    let (bk1, bk2) = (&bl[0], &bl[1]);
    assert_eq!(bk1["timeline"], 1);
    assert_eq!(bk2["timeline"], 2);
    assert_eq!(b["oldest"]["id"], bk1["id"]);
    assert_eq!(b["newest"]["id"], bk2["id"]);
    assert_eq!(b["newest"]["stop_time"], bk2["stop_time"]);
    assert_eq!(b["newest"]["type"], "full");

    // Recovery windows. Timeline 1: from backup 1 to the last commit before the gap (the range
    // that ends just before it). Timeline 2: backup 1's WAL breaks at the gap, so the window
    // opens at backup 2 and reaches the last commit of timeline 2.
    let w1 = &st[0]["recovery_window"];
    assert_eq!(w1["backup"], bk1["id"]);
    assert_eq!(w1["start_time"], bk1["stop_time"]);
    assert_eq!(w1["start_lsn"], bk1["stop_lsn"]);
    let before_gap = wl[0]["ranges"][0].clone();
    assert_eq!(w1["last_wal"], before_gap["last_wal"]);
    assert_eq!(w1["end_lsn"], before_gap["end_lsn"]);
    assert_eq!(w1["end_time"], before_gap["last_xact_time"]);
    let w2 = &st[1]["recovery_window"];
    assert_eq!(w2["backup"], bk2["id"]);
    assert_eq!(w2["start_time"], bk2["stop_time"]);
    let tl2_last = wl[1]["ranges"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(w2["last_wal"], tl2_last["last_wal"]);
    assert_eq!(w2["end_lsn"], tl2_last["end_lsn"]);
    assert_eq!(w2["end_time"], tl2_last["last_xact_time"]);

    // The last archived segment: timeline 2's last, with the time its object was written.
    let la = &status["last_archived"];
    assert_eq!(la["wal"], st[1]["last_wal"]);
    assert_eq!(la["timeline"], 2);
    let name = la["wal"].as_str().unwrap();
    let meta = std::fs::metadata(e.repo.join("wal").join(&name[..16]).join(name)).unwrap();
    assert_eq!(unix_of(la["archived_time"].as_str().unwrap()), meta.mtime() as f64);
    assert!(la["age_seconds"].as_f64().unwrap() >= 0.0);
    assert!(status["binlog"].is_null());
    assert!(status["drill"].is_null());

    // The shape (docs/json.md), the volatile values redacted as for every --json output.
    let red = crate::json_output::Redactor::new(
        &[e.world.dir.path()],
        crate::json_output::VARIABLE_ARRAYS,
    );
    insta::assert_snapshot!("status", red.snapshot(&e.run(&["status", "--json"]).stdout));

    // The text form.
    let out = e.run(&["status"]);
    out.expect_code(0);
    assert!(
        out.stdout.contains(&format!("  gap: {gone} .. {gone} (1 segment(s) missing)")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("timeline 2 (from timeline 1 at "), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!("backup {}", bk2["id"].as_str().unwrap())),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("backups: 2 (full)"), "{}", out.stdout);

    // The progress of the long verifications is in the log (target walrs::progress), with
    // the rate, so it can be scraped from the journal too.
    let out = e.run(&["wal", "verify"]);
    assert_eq!(out.code, 18, "the gap is a problem: {}", out.stderr);
    assert!(out.stderr.contains("wal verify: ") && out.stderr.contains(" MiB/s"), "{}", out.stderr);
    let out = e.run(&["backup", "verify", bk2["id"].as_str().unwrap()]);
    out.expect_code(0);
    assert!(
        out.stderr.contains("backup verify: ") && out.stderr.contains(" MiB/s"),
        "{}",
        out.stderr
    );

    // metrics: printed.
    let out = e.run(&["metrics"]);
    out.expect_code(0);
    let m = parse_exposition(&out.stdout);
    check_metrics(&m, &status);

    // --textfile: written whole by a rename over the old file, nothing left beside it.
    let dir = e.world.mkdir("textfile");
    let prom = dir.join("walrs.prom");
    std::fs::write(&prom, "old\n").unwrap();
    let old_ino = std::fs::metadata(&prom).unwrap().ino();
    e.run(&["metrics", "--textfile", prom.to_str().unwrap()]).expect_code(0);
    assert_ne!(std::fs::metadata(&prom).unwrap().ino(), old_ino, "not replaced by a rename");
    assert_eq!(std::fs::metadata(&prom).unwrap().mode() & 0o777, 0o644);
    assert_eq!(crate::util::files(&dir), vec!["walrs.prom".to_string()]);
    assert!(crate::util::leftovers(&dir).is_empty());
    check_metrics(&parse_exposition(&std::fs::read_to_string(&prom).unwrap()), &status);
    // A directory that does not exist: refused, nothing written.
    let out = e.run(&["metrics", "--textfile", dir.join("no/such.prom").to_str().unwrap()]);
    assert_eq!(out.code, 4, "{}", out.stderr);

    // --listen: served over HTTP and scraped.
    let mut child = e.walrs().args(["metrics", "--listen", "127.0.0.1:0"]).start();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr);
    let mut line = String::new();
    let addr = loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut lines, &mut line).unwrap();
        assert!(n > 0, "walrs metrics --listen ended: {:?}", child.wait());
        if let Some(rest) = line.split("http://").nth(1) {
            break rest.trim().trim_end_matches("/metrics").to_owned();
        }
    };
    let get = |path: &str| -> (String, String) {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        (head.to_owned(), body.to_owned())
    };
    let (head, body) = get("/metrics");
    let (head2, _) = get("/other");
    let (head3, body3) = get("/metrics");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    check_metrics(&parse_exposition(&body), &status);
    assert!(head2.starts_with("HTTP/1.1 404"), "{head2}");
    assert!(head3.starts_with("HTTP/1.1 200"), "{head3}");
    check_metrics(&parse_exposition(&body3), &status);
}

/// The value of `family` with `labels` (besides `repository`), which must be there once.
#[track_caller]
pub(crate) fn value(m: &Families, family: &str, labels: &[(&str, &str)]) -> f64 {
    let (kind, help, samples) = m.get(family).unwrap_or_else(|| panic!("no family {family}"));
    assert_eq!(kind, "gauge", "{family}");
    assert!(!help.is_empty(), "{family} has no HELP");
    let found: Vec<f64> = samples
        .iter()
        .filter(|(l, _)| labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(found.len(), 1, "{family} {labels:?}: {samples:?}");
    found[0]
}

/// The metrics carry the values of `status` (which the test compared with `wal list` and
/// `backup list`), every sample labelled with the repository as `status` names it.
fn check_metrics(m: &Families, status: &Value) {
    let repo = status["repository"].as_str().unwrap().to_owned();
    for (name, (_, _, samples)) in m {
        assert!(name.starts_with("walrs_"), "{name}");
        for (l, _) in samples {
            assert_eq!(l.get("repository"), Some(&repo), "{name}");
        }
    }
    let st = status["timelines"].as_array().unwrap();
    for t in st {
        let tl = t["timeline"].to_string();
        let w = &t["recovery_window"];
        let start = value(m, "walrs_recovery_window_start_timestamp_seconds", &[("timeline", &tl)]);
        // The backup's end in microseconds; its `stop_time` has whole seconds.
        assert_eq!(start.floor(), unix_of(w["start_time"].as_str().unwrap()), "{start} {w}");
        let end = value(m, "walrs_recovery_window_end_timestamp_seconds", &[("timeline", &tl)]);
        assert!((end - unix_of(w["end_time"].as_str().unwrap())).abs() < 1e-3, "{end} {w}");
        assert_eq!(
            value(m, "walrs_wal_gaps", &[("timeline", &tl)]),
            t["gaps"].as_array().unwrap().len() as f64
        );
        assert_eq!(
            value(m, "walrs_wal_segments", &[("timeline", &tl)]),
            t["segments"].as_u64().unwrap() as f64
        );
    }
    assert_eq!(value(m, "walrs_wal_gaps", &[("timeline", "1")]), 1.0);
    assert_eq!(value(m, "walrs_backups", &[]), 2.0);
    let newest = &status["backups"]["newest"];
    assert_eq!(
        value(m, "walrs_last_backup_end_timestamp_seconds", &[]).floor(),
        unix_of(newest["stop_time"].as_str().unwrap())
    );
    let d = value(m, "walrs_last_backup_duration_seconds", &[]);
    assert!((d - newest["duration_seconds"].as_f64().unwrap()).abs() < 1e-6);
    assert_eq!(
        value(m, "walrs_repository_bytes", &[("kind", "backups")]),
        status["backups"]["stored_bytes"].as_u64().unwrap() as f64
    );
    let la = &status["last_archived"];
    let ts = value(m, "walrs_last_archived_timestamp_seconds", &[]);
    assert_eq!(ts.floor(), unix_of(la["archived_time"].as_str().unwrap()));
    let age = value(m, "walrs_last_archived_age_seconds", &[]);
    assert!(age >= 0.0);
    // No binlogs here: the families are declared, without samples.
    for f in [
        "walrs_binlog_last_event_age_seconds",
        "walrs_binlog_last_event_timestamp_seconds",
        "walrs_binlog_gaps",
    ] {
        assert!(m.get(f).is_some_and(|(_, _, s)| s.is_empty()), "{f}");
    }
}

/// On S3: `status` takes the time a segment was archived from the object's `Last-Modified`
/// (one HEAD of the last segment of each timeline), and answers from the index in a handful of
/// requests (counted by the proxy in front of the store), once the roll-up is written.
#[test]
fn status_on_s3_reads_the_archive_time_in_a_handful_of_requests() {
    use crate::util::proxy::FaultProxy;
    use crate::util::s3::S3Server;
    use crate::util::wal::SegSpec;
    let server = S3Server::start();
    let proxy = FaultProxy::start(server.endpoint().trim_start_matches("http://").parse().unwrap());
    let walrs = || {
        let mut w = crate::util::walrs(Path::new("/unused")).env("WALRS_REPO", server.url("st"));
        for (k, v) in server.env() {
            w = w.env(k, v);
        }
        w.env("WALRS_S3_ENDPOINT", proxy.endpoint())
    };
    let dir = tempfile::tempdir().unwrap();
    // Segments 1, 2, 4, 5 of 1 MiB: a gap at 3.
    for n in [1u64, 2, 4, 5] {
        let seg = SegSpec { seg_size: 1 << 20, ..SegSpec::new(n) };
        walrs().arg("push").arg(seg.write(dir.path())).run().expect_code(0);
    }
    let list = walrs().args(["wal", "list", "--json"]).run();
    list.expect_code(0);
    let wal: Value = serde_json::from_str(&list.stdout).unwrap();
    // The first status may fold the summaries into the group's roll-up; the second reads it.
    walrs().args(["status", "--json"]).run().expect_code(0);
    let before = proxy.requests();
    let out = walrs().args(["status", "--json"]).run();
    let requests = proxy.requests() - before;
    out.expect_code(0);
    let s: Value = serde_json::from_str(&out.stdout).unwrap();
    let t = &s["timelines"][0];
    assert_eq!(t["first_wal"], wal["timelines"][0]["ranges"][0]["first_wal"]);
    assert_eq!(t["last_wal"], "000000010000000000000005");
    assert_eq!(t["gaps"], wal["timelines"][0]["gaps"]);
    assert_eq!(t["gaps"][0]["first_wal"], "000000010000000000000003");
    assert!(t["recovery_window"].is_null(), "no backup: {s}");
    let la = &s["last_archived"];
    assert_eq!(la["wal"], "000000010000000000000005");
    let archived = unix_of(la["archived_time"].as_str().expect("Last-Modified read"));
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - archived).abs() < 600.0, "archived {archived}, now {now}");
    eprintln!("status on S3: {requests} requests");
    assert!(requests <= 12, "status sent {requests} requests");
}

/// Removes what depends on the moment of the run (`time`, the ages) from a `status --json`
/// document, recursively.
fn without_clock(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| k != "time" && !k.ends_with("age_seconds"));
            m.values_mut().for_each(without_clock);
        }
        Value::Array(a) => a.iter_mut().for_each(without_clock),
        _ => {}
    }
}

/// Issue 16's 100 ms target: `status` and `metrics` read a complete roll-up's digest instead of
/// its segments. On a file-system repository with complete roll-ups (1 GiB segments: 4 per
/// group), two timelines (the first ends in a `.partial` at the switch), a gap, a `.partial`
/// beside its full segment, damaged segments on both timelines and backups on both, the
/// answers read from the digests are byte for byte those read from the roll-ups' segments
/// (every roll-up then rewritten without its digest, as an older walrs writes it).
#[test]
fn status_from_rollup_digests_matches_the_full_read() {
    use walrs::backup::BackupManifest;
    use walrs::codec::Compression;
    use walrs::index::{EndKind, GroupBrief, GroupRollup, RollupWithoutDigest, SegmentSummary};
    use walrs::pg::{
        Lsn, PgMajorVersion, SystemId, TimeLineId, TimelineHistory, WalFileName, WalSegSize,
        XLogSegNo,
    };
    use walrs::repo::{BackupId, Fixed, RepoConfig, Repository, object::encode_json};
    use walrs::storage::{AnyStorage, Storage, memory::MemoryStorage};

    const SYSTEM: u64 = 7_300_000_000_000_000_002;
    const T0_US: i64 = 1_767_225_600_000_000;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let repo = Repository::new(AnyStorage::Memory(MemoryStorage::new()), None);
    let seg = WalSegSize::new(1 << 30).unwrap();
    let cfg = RepoConfig::new(
        SystemId(SYSTEM),
        PgMajorVersion::V15,
        seg,
        8192,
        Compression::Zstd(1),
        None,
    );
    repo.store_config(&cfg).unwrap();
    let (t1, t2) = (TimeLineId::new(1).unwrap(), TimeLineId::new(2).unwrap());
    let switch = 26u64; // timeline 2 starts with this segment
    let history =
        format!("1\t{}\tno recovery target specified\n", XLogSegNo(switch).start_lsn(seg));
    repo.put_new::<TimelineHistory>(&t2, history.as_bytes(), Compression::None).unwrap();
    let summary = |name: WalFileName, n: u64| {
        let segno = XLogSegNo(n);
        let start = segno.start_lsn(seg);
        let t = T0_US + n as i64 * 30_000_000;
        let quiet = n.is_multiple_of(5); // no transaction in it
        SegmentSummary {
            format_version: walrs::index::FORMAT_VERSION,
            timeline: name.timeline(),
            name,
            segno,
            start,
            seg_size: seg,
            first_record: Some(start.saturating_add(40)),
            last_record: Some(Lsn(segno.end_lsn(seg).0 - 200)),
            end: segno.end_lsn(seg),
            end_kind: EndKind::Full,
            continuation: 0,
            first_prev: None,
            records: 600,
            commits: if quiet { 0 } else { n % 7 + 1 },
            aborts: n % 2,
            first_xact_time_us: (!quiet).then_some(t),
            last_xact_time_us: (!quiet).then_some(t + 29_000_000),
            min_xid: None,
            max_xid: None,
            xids: vec![],
            xid_lsns: vec![],
            restore_points: vec![],
            checkpoints: vec![],
            backup_ends: vec![],
            end_of_recovery: vec![],
            error: [6, 20, 33].contains(&n).then(|| format!("invalid record at segment {n}")),
            content_digest: format!("{n:064x}"),
            block_map: None,
        }
    };
    let mut groups: BTreeMap<String, GroupRollup> = BTreeMap::new();
    let mut add = |s: SegmentSummary| {
        let g = s.name.group().unwrap().to_owned();
        groups
            .entry(g.clone())
            .or_insert_with(|| GroupRollup {
                format_version: walrs::index::FORMAT_VERSION,
                group: g,
                segments: BTreeMap::new(),
            })
            .segments
            .insert(s.name.clone(), s);
    };
    for n in 1..=41u64 {
        if n == 13 {
            continue; // the gap
        }
        let tli = if n < switch { t1 } else { t2 };
        add(summary(WalFileName::segment(tli, XLogSegNo(n), seg), n));
    }
    for n in [7u64, switch] {
        let mut p = summary(WalFileName::partial_segment(t1, XLogSegNo(n), seg), n);
        p.end_kind = EndKind::EndOfWal;
        p.end = p.start.saturating_add(0x2000);
        add(p);
    }
    let mut complete = 0;
    for (g, r) in &groups {
        for s in r.segments.values() {
            repo.save::<SegmentSummary>(&s.name, s, Fixed).unwrap();
        }
        repo.save::<GroupRollup>(g, r, Fixed).unwrap();
        let b: GroupBrief = repo.load(g).unwrap().unwrap();
        if b.segments.len() >= 4 {
            assert!(b.from_digest, "{g}: a complete roll-up is read from its digest");
            complete += 1;
        }
    }
    // Groups 1, 2, 4, 5 of timeline 1 and 7, 8, 9 of timeline 2 (the others hold the gap, a
    // timeline's start or its end).
    assert_eq!(complete, 7);
    for (n, tli) in [(2u64, t1), (9, t1), (15, t1), (28, t2), (35, t2)] {
        let stop_us = T0_US + (n as i64 + 1) * 30_000_000;
        let time = |us: i64| {
            walrs::timefmt::rfc3339_utc(
                std::time::UNIX_EPOCH + std::time::Duration::from_micros(us as u64),
            )
        };
        let id: BackupId = time(stop_us).replace(['-', ':'], "").parse().unwrap();
        let m = BackupManifest {
            format_version: 1,
            id: id.clone(),
            label: id.to_string(),
            system_identifier: SystemId(SYSTEM),
            pg_version: PgMajorVersion::V15,
            timeline: tli,
            start_lsn: XLogSegNo(n).start_lsn(seg).saturating_add(40),
            stop_lsn: XLogSegNo(n).start_lsn(seg).saturating_add(0x10_0000),
            stop_timeline: tli,
            start_time: time(stop_us - 600_000_000),
            stop_time: time(stop_us),
            stop_time_us: stop_us,
            first_wal: WalFileName::segment(tli, XLogSegNo(n), seg).to_string(),
            last_wal: WalFileName::segment(tli, XLogSegNo(n), seg).to_string(),
            archives: vec![],
            pg_manifest_key: String::new(),
            bytes: 50 << 20,
            stored_bytes: 12 << 20,
            compression: "zstd:1".into(),
            encrypted: false,
            backup_type: Default::default(),
            parent: None,
            chain: Vec::new(),
            incremental: None,
        };
        repo.put_new::<BackupManifest>(&id, encode_json(&m).unwrap().as_slice(), Fixed).unwrap();
    }
    // Each object written out as the file the file-system backend keeps (the same bytes).
    let write_out = |prefix: &str| {
        for item in repo.storage().list(prefix).unwrap() {
            let key = item.unwrap().key;
            let mut bytes = Vec::new();
            repo.storage().get(&key).unwrap().read_to_end(&mut bytes).unwrap();
            let path = root.join(key.as_str());
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
    };
    write_out("");
    let answers = || {
        let run = |args: &[&str]| {
            let out = crate::util::walrs(&root).args(args).run();
            (out.code, out.stdout, out.stderr)
        };
        let (code, json, err) = run(&["status", "--json"]);
        let mut json: Value =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json} {err}"));
        without_clock(&mut json);
        let (tcode, text, _) = run(&["status"]);
        let text: Vec<String> =
            text.lines().filter(|l| !l.contains(" ago")).map(str::to_owned).collect();
        let (mcode, metrics, _) = run(&["metrics"]);
        let metrics: Vec<String> =
            metrics.lines().filter(|l| !l.contains("age_seconds")).map(str::to_owned).collect();
        ((code, tcode, mcode), json, text, metrics)
    };
    let from_digests = answers();
    let st = &from_digests.1["timelines"];
    assert_eq!(st.as_array().unwrap().len(), 2, "{}", from_digests.1);
    assert_eq!(st[0]["gaps"].as_array().unwrap().len(), 1, "{st}");
    assert_eq!(st[0]["damaged"].as_array().unwrap().len(), 2, "{st}");
    assert_eq!(st[1]["damaged"].as_array().unwrap().len(), 1, "{st}");
    assert!(!st[0]["partials"].as_array().unwrap().is_empty(), "{st}");
    assert!(!st[1]["recovery_window"].is_null(), "{st}");
    // Every roll-up as an older walrs rewrites it: no digest, the segments read.
    for (g, r) in groups {
        repo.save(&g, &RollupWithoutDigest::from(r), Fixed).unwrap();
        let b: GroupBrief = repo.load(&g).unwrap().unwrap();
        assert!(!b.from_digest, "{g}");
    }
    write_out("index/group/");
    let from_segments = answers();
    assert_eq!(from_digests.0, from_segments.0, "exit codes");
    assert_eq!(from_digests.1, from_segments.1, "status --json");
    assert_eq!(from_digests.2, from_segments.2, "status");
    assert_eq!(from_digests.3, from_segments.3, "metrics");
}
