//! `walrs binlog tail | list | fetch` against a real MariaDB started by the test (issue 7):
//! writes, rotations, a large transaction and row events, every closed file compared byte for
//! byte with the server's (and with `mariadb-binlog --raw`), the tail stopped, killed and
//! restarted while the server writes, the server restarted under the tail, a purged binlog, and
//! a byte flipped on the way by a proxy.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::util::mariadb::{MariaDb, REPL_PASSWORD, REPL_USER};
use crate::util::s3::S3Server;
use crate::util::tcp_proxy::TcpFaultProxy;
use crate::util::{Walrs, key_b64, short_tempdir, walrs_bin};

/// Where the binlogs go: `WALRS_REPO` and the environment that goes with it.
struct Repo {
    url: String,
    env: Vec<(String, String)>,
}

impl Repo {
    fn fs(path: &Path) -> Repo {
        std::fs::create_dir_all(path).unwrap();
        Repo { url: path.display().to_string(), env: Vec::new() }
    }

    fn walrs(&self) -> Walrs {
        let mut w = Walrs::new(&walrs_bin()).env("WALRS_REPO", &self.url);
        for (k, v) in &self.env {
            w = w.env(k, v);
        }
        w
    }
}

/// Offset of the in-use flag of a binlog file (flags of the Format Description at offset 4).
const IN_USE_FLAG_AT: usize = 4 + 17;

struct Tail {
    child: Child,
    log: PathBuf,
}

impl Tail {
    fn start(repo: &Repo, port: u16, log: &Path, extra: &[&str]) -> Tail {
        let child = repo
            .walrs()
            .args([
                "binlog",
                "tail",
                "--host",
                "127.0.0.1",
                "--user",
                REPL_USER,
                "--server-id",
                "4242",
            ])
            .args(["--port", &port.to_string(), "--flush-interval", "1s", "--max-backoff", "1s"])
            .args(extra)
            .env("WALRS_MYSQL_PASSWORD", REPL_PASSWORD)
            .env("WALRS_LOG", "debug")
            .spawn_logged(log);
        Tail { child, log: log.to_path_buf() }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit code.
    fn stop(mut self) -> i32 {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "tail did not stop: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn wait_exit(mut self, within: Duration) -> i32 {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            if t0.elapsed() > within {
                let _ = self.child.kill();
                panic!("tail did not exit: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed when the test ends, passing or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn list_json(repo: &Repo) -> serde_json::Value {
    let out = repo.walrs().args(["binlog", "list", "--json"]).run();
    if out.code != 0 {
        return serde_json::Value::Null;
    }
    serde_json::from_str(&out.stdout).unwrap()
}

fn stored(repo: &Repo) -> Vec<(String, String, u64)> {
    let v = list_json(repo);
    let Some(files) = v["files"].as_array() else { return Vec::new() };
    files
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["state"].as_str().unwrap().to_string(),
                f["bytes"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Waits until the repository holds every binlog of the server: all but the last closed, the
/// last one up to the server's current size. Returns how long it took.
fn wait_caught_up(repo: &Repo, db: &MariaDb, tail: &Tail, within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let server = db.binlogs();
        let repo_files = stored(repo);
        let want: Vec<(String, String, u64)> = server
            .iter()
            .enumerate()
            .map(|(i, (n, s))| {
                let state = if i + 1 == server.len() { "active" } else { "closed" };
                (n.clone(), state.to_string(), *s)
            })
            .collect();
        // Files the server purged may still be in the repository: compare the server's range.
        let have: Vec<_> =
            repo_files.into_iter().filter(|f| server.iter().any(|s| s.0 == f.0)).collect();
        if have == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "repository never caught up: server {want:?}, repository {have:?}\n{}",
            tail.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn fetch(repo: &Repo, name: &str, dest: &Path) -> Vec<u8> {
    repo.walrs().args(["binlog", "fetch", name]).arg(dest).run().expect_code(0);
    std::fs::read(dest).unwrap()
}

/// Compares every stored file with the server's: closed ones byte for byte, the active one
/// with the in-use flag masked.
fn compare_all(repo: &Repo, db: &MariaDb, out: &Path) -> usize {
    let server = db.binlogs();
    for (i, (name, _)) in server.iter().enumerate() {
        let ours = fetch(repo, name, &out.join(name));
        let mut theirs = db.binlog_bytes(name);
        if i + 1 == server.len() {
            theirs[IN_USE_FLAG_AT] &= !1;
            assert_eq!(ours.len(), theirs.len(), "{name} (active): length");
        }
        assert!(
            ours == theirs,
            "{name}: stored file differs from the server's ({} vs {} bytes)",
            ours.len(),
            theirs.len()
        );
    }
    server.len()
}

fn write_rows(db: &MariaDb, n: usize, tag: &str) {
    db.sql(&format!(
        "INSERT INTO t.r (tag, v) SELECT '{tag}', repeat(md5(seq), 8) FROM t.seq_1_to_{n}"
    ));
}

/// Creates the table most tests write: `t.r`.
fn create_r(db: &MariaDb) {
    db.sql("CREATE TABLE t.r (id INT AUTO_INCREMENT PRIMARY KEY, tag VARCHAR(16), v TEXT) ENGINE=InnoDB");
}

/// A server with 20 rows in `t.r`, tailed into `<tmp>/repo` until caught up, the tail stopped:
/// the repository holds the active binlog as parts. Returns the server, the repository's
/// directory, the repository and the tail's log path.
fn tailed_and_stopped(tmp: &Path) -> (MariaDb, PathBuf, Repo, PathBuf) {
    let db = MariaDb::start(&[]);
    let dir = tmp.join("repo");
    let repo = Repo::fs(&dir);
    let log = tmp.join("tail.log");
    create_r(&db);
    write_rows(&db, 20, "a");
    let tail = Tail::start(&repo, db.port, &log, &[]);
    wait_caught_up(&repo, &db, &tail, Duration::from_secs(60));
    assert_eq!(tail.stop(), 0);
    (db, dir, repo, log)
}

#[test]
fn issue_7_tail_stores_byte_identical_binlogs() {
    let db = MariaDb::start(&[]);
    let tmp = short_tempdir("wbl");
    let repo = Repo::fs(&tmp.path().join("repo"));
    create_r(&db);
    write_rows(&db, 100, "before");
    let tail = Tail::start(&repo, db.port, &tmp.path().join("tail.log"), &[]);
    let raw = tmp.path().join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    let mut reference = KillOnDrop(
        Command::new("mariadb-binlog")
            .args(["--read-from-remote-server", "--raw", "--stop-never", "--host=127.0.0.1"])
            .arg(format!("--port={}", db.port))
            .arg(format!("--user={REPL_USER}"))
            .arg(format!("--password={REPL_PASSWORD}"))
            .arg("--stop-never-slave-server-id=4343")
            .arg(format!("--result-file={}/", raw.display()))
            .arg(&db.binlogs()[0].0)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Row events, a large transaction (~26 MB of row events), updates and deletes, rotations.
    write_rows(&db, 1000, "a");
    db.sql("BEGIN; INSERT INTO t.r (tag, v) SELECT 'big', repeat(md5(seq), 4) FROM t.seq_1_to_200000; COMMIT;");
    db.sql("UPDATE t.r SET v = 'updated' WHERE id % 7 = 0; DELETE FROM t.r WHERE id % 11 = 0;");
    db.sql("FLUSH BINARY LOGS");
    write_rows(&db, 500, "b");
    db.sql("FLUSH BINARY LOGS");
    db.sql("FLUSH BINARY LOGS");
    write_rows(&db, 10, "c");
    let took = wait_caught_up(&repo, &db, &tail, Duration::from_secs(120));
    eprintln!("caught up after {took:?}");

    // The active file's last event reaches the repository within the flush interval (1 s).
    write_rows(&db, 3, "latest");
    let took = wait_caught_up(&repo, &db, &tail, Duration::from_secs(30));
    eprintln!("last event of the active binlog stored after {took:?} (flush interval 1 s)");

    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let n = compare_all(&repo, &db, &out);
    assert!(n >= 4, "{n} binlogs");

    // The reference client, streaming since the start of the run (--stop-never): every file,
    // the active one included (both clear its in-use flag), equals ours.
    let server = db.binlogs();
    let t0 = Instant::now();
    while server
        .iter()
        .any(|(n, size)| std::fs::metadata(raw.join(n)).map(|m| m.len()).unwrap_or(0) != *size)
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "mariadb-binlog did not catch up");
        std::thread::sleep(Duration::from_millis(100));
    }
    reference.0.kill().unwrap();
    reference.0.wait().unwrap();
    for (name, _) in &server {
        let theirs = std::fs::read(raw.join(name)).unwrap();
        let ours = std::fs::read(out.join(name)).unwrap();
        assert!(ours == theirs, "{name}: differs from mariadb-binlog --raw --stop-never");
    }

    // fetch: an unknown name is exit 1; --until-time fetches up to the file holding the time.
    repo.walrs()
        .args(["binlog", "fetch", "mysql-bin.999999"])
        .arg(tmp.path().join("x"))
        .run()
        .expect_code(1);
    assert!(!tmp.path().join("x").exists());
    let v = list_json(&repo);
    let first = &v["files"][0];
    // MariaDB GTIDs of a closed file: one range in domain 0, server 1.
    let gtids = first["gtids"][0].as_str().unwrap();
    assert!(gtids.starts_with("0-1-1..0-1-"), "{v}");
    let until = first["last_event_time"].as_str().unwrap().to_string();
    let dir = tmp.path().join("until");
    repo.walrs().args(["binlog", "fetch", "--until-time", &until]).arg(&dir).run().expect_code(0);
    let got = crate::util::files(&dir);
    assert!(got.contains(&server[0].0), "{got:?}");
    assert!(!got.contains(&server[server.len() - 1].0), "{got:?}");
    repo.walrs()
        .args(["binlog", "fetch", "--until-time", "2999-01-01 00:00:00"])
        .arg(tmp.path().join("until2"))
        .run()
        .expect_code(19);

    let text = repo.walrs().args(["binlog", "list"]).run();
    text.expect_code(0);
    assert!(text.stdout.contains("active"), "{}", text.stdout);
    assert_eq!(tail.stop(), 0);
}

#[test]
fn issue_7_tail_restarts_and_server_restarts_leave_no_gap() {
    let mut db = MariaDb::start(&[]);
    let tmp = short_tempdir("wbl");
    let repo = Repo::fs(&tmp.path().join("repo"));
    create_r(&db);
    let log = tmp.path().join("tail.log");

    // A writer keeps the server busy while the tail is stopped, killed and restarted.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sock = db.socket();
    let s2 = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut i = 0;
        while !s2.load(std::sync::atomic::Ordering::SeqCst) {
            let q = if i % 40 == 39 {
                "FLUSH BINARY LOGS".to_string()
            } else {
                format!(
                    "INSERT INTO t.r (tag, v) SELECT 'w{i}', repeat(md5(seq), 4) FROM t.seq_1_to_50"
                )
            };
            let _ = Command::new("mariadb")
                .arg(format!("--socket={}", sock.display()))
                .args(["-uroot", "-e", &q])
                .stderr(std::process::Stdio::null())
                .status();
            i += 1;
        }
    });

    let tail = Tail::start(&repo, db.port, &log, &[]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(tail.stop(), 0, "SIGTERM: flush, then exit 0");
    std::thread::sleep(Duration::from_secs(1));
    let tail = Tail::start(&repo, db.port, &log, &[]);
    std::thread::sleep(Duration::from_secs(3));
    tail.kill9(); // a crash: what was not flushed is received again
    std::thread::sleep(Duration::from_millis(500));
    let tail = Tail::start(&repo, db.port, &log, &[]);
    std::thread::sleep(Duration::from_secs(2));

    // The server restarts under the tail (its file ends with a Stop event, a new file begins).
    db.restart();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
    write_rows(&db, 5, "end");
    wait_caught_up(&repo, &db, &tail, Duration::from_secs(120));
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let n = compare_all(&repo, &db, &out);
    assert!(n >= 3, "{n} binlogs");
    let log_text = tail.log();
    assert!(log_text.contains("reconnecting"), "{log_text}");
    assert_eq!(tail.stop(), 0);
}

#[test]
fn issue_7_purged_binlog_is_an_error_and_a_gap() {
    let db = MariaDb::start(&[]);
    let tmp = short_tempdir("wbl");
    let repo = Repo::fs(&tmp.path().join("repo"));
    create_r(&db);
    let log = tmp.path().join("tail.log");
    let tail = Tail::start(&repo, db.port, &log, &[]);
    write_rows(&db, 10, "a");
    wait_caught_up(&repo, &db, &tail, Duration::from_secs(60));
    assert_eq!(tail.stop(), 0);

    // While the tail is down the server writes on, rotates and purges what the tail needs.
    write_rows(&db, 10, "b");
    db.sql("FLUSH BINARY LOGS");
    db.sql("FLUSH BINARY LOGS");
    let last = db.binlogs().last().unwrap().0.clone();
    // The server keeps files a dump thread still reads: wait until it noticed the tail left.
    let t0 = Instant::now();
    no_dump_threads(&db);
    // ...and until InnoDB's binlog checkpoint has moved past the files.
    loop {
        db.sql(&format!("PURGE BINARY LOGS TO '{last}'"));
        if db.binlogs()[0].0 == last {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the server does not purge: {:?}",
            db.binlogs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let tail = Tail::start(&repo, db.port, &log, &[]);
    let code = tail.wait_exit(Duration::from_secs(60));
    assert_eq!(code, 20, "{}", std::fs::read_to_string(&log).unwrap());
    let v = list_json(&repo);
    assert_eq!(v["gaps"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["gaps"][0]["missing_file"], "mysql-bin.000001");
    let text = repo.walrs().args(["binlog", "list"]).run();
    assert!(text.stdout.contains("GAP"), "{}", text.stdout);
    repo.walrs()
        .args(["binlog", "fetch", "--until-time", "2999-01-01 00:00:00"])
        .arg(tmp.path().join("u"))
        .run()
        .expect_code(19);

    // --accept-gap: continues from the server's oldest binlog; the gap stays listed.
    let tail = Tail::start(&repo, db.port, &log, &["--accept-gap"]);
    write_rows(&db, 10, "c");
    let t0 = Instant::now();
    loop {
        let s = stored(&repo);
        if s.iter().any(|f| f.0 == last && f.2 == db.binlogs().last().unwrap().1) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{s:?}\n{}", tail.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = tmp.path().join("o");
    std::fs::create_dir_all(&out).unwrap();
    compare_all(&repo, &db, &out);
    let v = list_json(&repo);
    assert_eq!(v["gaps"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(tail.stop(), 0);
}

#[test]
fn issue_7_corrupted_event_on_the_wire_is_detected() {
    let db = MariaDb::start(&[]);
    let tmp = short_tempdir("wbl");
    let repo = Repo::fs(&tmp.path().join("repo"));
    db.sql("CREATE TABLE t.big (id INT PRIMARY KEY, v LONGTEXT) ENGINE=InnoDB");
    // One ~2 MB row event: a byte well inside the stream lands in its row data.
    db.sql("INSERT INTO t.big VALUES (1, repeat('x', 2000000))");
    let proxy = TcpFaultProxy::start(format!("127.0.0.1:{}", db.port).parse().unwrap());
    proxy.flip_once_at(1_000_000);
    let log = tmp.path().join("tail.log");
    let tail = Tail::start(&repo, proxy.port, &log, &[]);
    wait_caught_up(&repo, &db, &tail, Duration::from_secs(60));
    assert!(proxy.fired());
    let text = tail.log();
    assert!(text.contains("checksum mismatch"), "{text}");
    assert!(proxy.connections() >= 2, "reconnected after the corrupt event");
    let out = tmp.path().join("o");
    std::fs::create_dir_all(&out).unwrap();
    compare_all(&repo, &db, &out);
    assert_eq!(tail.stop(), 0);
}

#[test]
fn issue_7_truncated_event_is_an_error_not_a_panic() {
    let db = MariaDb::start(&[]);
    let tmp = short_tempdir("wbl");
    let repo = Repo::fs(&tmp.path().join("repo"));
    db.sql("CREATE TABLE t.big (id INT PRIMARY KEY, v LONGTEXT) ENGINE=InnoDB");
    db.sql("INSERT INTO t.big VALUES (1, repeat('x', 2000000))");
    let proxy = TcpFaultProxy::start(format!("127.0.0.1:{}", db.port).parse().unwrap());
    // The event claims 1000 bytes more than its packet holds (a parser that trusted the size
    // would read past the packet, or panic).
    proxy.inflate_big_event_once();
    let log = tmp.path().join("tail.log");
    let tail = Tail::start(&repo, proxy.port, &log, &[]);
    wait_caught_up(&repo, &db, &tail, Duration::from_secs(60));
    assert!(proxy.fired());
    let text = tail.log();
    assert!(text.contains("truncated binlog event"), "{text}");
    assert!(proxy.connections() >= 2, "reconnected after the bad event");
    let out = tmp.path().join("o");
    std::fs::create_dir_all(&out).unwrap();
    compare_all(&repo, &db, &out);
    assert_eq!(tail.stop(), 0);
}

#[test]
fn issue_7_encrypted_repository_on_s3() {
    let db = MariaDb::start(&[]);
    let server = S3Server::start();
    let tmp = short_tempdir("wbl");
    let mut env: Vec<(String, String)> =
        server.env().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    env.push(("WALRS_ENCRYPTION_KEY".into(), key_b64(7)));
    let repo = Repo { url: server.url("bl"), env };
    create_r(&db);
    // Through the server's Unix socket (the --host/--port given by Tail::start are then unused).
    let sock = db.socket().display().to_string();
    let tail = Tail::start(&repo, db.port, &tmp.path().join("tail.log"), &["--socket", &sock]);
    write_rows(&db, 300, "secret-rows");
    db.sql("FLUSH BINARY LOGS");
    write_rows(&db, 30, "secret-rows");
    wait_caught_up(&repo, &db, &tail, Duration::from_secs(60));
    let out = tmp.path().join("o");
    std::fs::create_dir_all(&out).unwrap();
    compare_all(&repo, &db, &out);
    let stored = std::fs::read(server.object_file("bl", "binlog/files/mysql-bin.000001")).unwrap();
    assert!(!stored.windows(11).any(|w| w == b"secret-rows"), "stored in clear");
    // Without the key: refused.
    let no_key = Repo { url: repo.url.clone(), env: repo.env[..repo.env.len() - 1].to_vec() };
    no_key.walrs().args(["binlog", "list"]).run().expect_code(8);
    assert_eq!(tail.stop(), 0);
}

/// The states a crash can leave while a file is closed (format/binlog.md "Write order"): the whole
/// file and its parts without metadata, and the whole file alone without metadata. The next tail
/// finishes the close; nothing is rewritten.
#[test]
fn issue_7_interrupted_close_is_finished_on_restart() {
    let tmp = short_tempdir("wbl");
    let (db, dir, repo, log) = tailed_and_stopped(tmp.path());
    // The parts of the active file, as a crash right after the whole file was written leaves them.
    let name = db.binlogs()[0].0.clone();
    let parts = dir.join("binlog/parts").join(&name);
    let saved = tmp.path().join("saved-parts");
    Command::new("cp").arg("-a").arg(&parts).arg(&saved).status().unwrap();
    db.sql("FLUSH BINARY LOGS");
    write_rows(&db, 20, "b");
    db.sql("FLUSH BINARY LOGS");
    let tail = Tail::start(&repo, db.port, &log, &[]);
    wait_caught_up(&repo, &db, &tail, Duration::from_secs(60));
    assert_eq!(tail.stop(), 0);
    let whole = dir.join("binlog/files").join(&name);
    let mtime = std::fs::metadata(&whole).unwrap().modified().unwrap();
    let second = db.binlogs()[1].0.clone();
    std::fs::remove_file(dir.join(format!("binlog/meta/{name}.json"))).unwrap();
    std::fs::remove_file(dir.join(format!("binlog/meta/{second}.json"))).unwrap();
    std::fs::create_dir_all(&parts).unwrap();
    for f in std::fs::read_dir(&saved).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), parts.join(f.file_name())).unwrap();
    }

    let tail = Tail::start(&repo, db.port, &log, &[]);
    write_rows(&db, 5, "c");
    wait_caught_up(&repo, &db, &tail, Duration::from_secs(60));
    assert_eq!(tail.stop(), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("finishing an interrupted close"), "{text}");
    assert!(text.contains("writing its missing metadata"), "{text}");
    let left = std::fs::read_dir(&parts).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "leftover parts deleted");
    assert_eq!(std::fs::metadata(&whole).unwrap().modified().unwrap(), mtime, "not rewritten");
    let v = list_json(&repo);
    assert!(v["files"][0]["last_event_time"].is_string(), "{v}");
    assert!(v["files"][1]["last_event_time"].is_string(), "{v}");
    let out = tmp.path().join("o");
    std::fs::create_dir_all(&out).unwrap();
    compare_all(&repo, &db, &out);
}

#[test]
fn issue_7_refuses_another_server_and_a_wrong_password() {
    let db = MariaDb::start(&[]);
    let tmp = short_tempdir("wbl");
    let repo = Repo::fs(&tmp.path().join("repo"));
    let log = tmp.path().join("tail.log");
    let tail = Tail::start(&repo, db.port, &log, &[]);
    wait_caught_up(&repo, &db, &tail, Duration::from_secs(60));
    assert_eq!(tail.stop(), 0);

    // Another server (server_id 2) into the same repository: exit 5, nothing written.
    let other = MariaDb::start(&["--server-id=2"]);
    let before = list_json(&repo);
    let tail = Tail::start(&repo, other.port, &log, &[]);
    assert_eq!(
        tail.wait_exit(Duration::from_secs(60)),
        5,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(list_json(&repo), before);

    // A wrong password: exit 17, no retry loop.
    let child = repo
        .walrs()
        .args(["binlog", "tail", "--host", "127.0.0.1", "--user", REPL_USER, "--server-id", "4242"])
        .args(["--port", &db.port.to_string()])
        .env("WALRS_MYSQL_PASSWORD", "wrong")
        .spawn_logged(&log);
    let tail = Tail { child, log: log.clone() };
    assert_eq!(tail.wait_exit(Duration::from_secs(60)), 17);
}

#[test]
fn issue_7_server_without_checksums() {
    let db = MariaDb::start(&["--binlog-checksum=NONE"]);
    let tmp = short_tempdir("wbl");
    let repo = Repo::fs(&tmp.path().join("repo"));
    create_r(&db);
    let tail = Tail::start(&repo, db.port, &tmp.path().join("tail.log"), &[]);
    write_rows(&db, 200, "a");
    db.sql("FLUSH BINARY LOGS");
    write_rows(&db, 20, "b");
    wait_caught_up(&repo, &db, &tail, Duration::from_secs(60));
    let out = tmp.path().join("o");
    std::fs::create_dir_all(&out).unwrap();
    compare_all(&repo, &db, &out);
    assert_eq!(list_json(&repo)["server"]["flavour"], "mariadb");
    assert_eq!(tail.stop(), 0);
}

/// The server's `@@gtid_binlog_pos`.
fn gtid_pos(db: &MariaDb) -> String {
    db.sql("SELECT @@gtid_binlog_pos").trim().to_string()
}

/// Waits until the repository holds exactly the server's binlogs from `first` on (all but the
/// last closed, the last up to the server's size), then compares them byte for byte (the active
/// one with the in-use flag masked).
fn caught_up_from(repo: &Repo, db: &MariaDb, tail: &Tail, first: &str, out: &Path) {
    let t0 = Instant::now();
    loop {
        let server = db.binlogs();
        let start = server.iter().position(|(n, _)| n == first).expect("first file on the server");
        let want: Vec<(String, String, u64)> = server
            .iter()
            .enumerate()
            .skip(start)
            .map(|(i, (n, s))| {
                let state = if i + 1 == server.len() { "active" } else { "closed" };
                (n.clone(), state.to_string(), *s)
            })
            .collect();
        let have = stored(repo);
        if have == want {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "repository: {have:?}, expected the server's files from {first}: {want:?}\n{}",
            tail.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::create_dir_all(out).unwrap();
    let server = db.binlogs();
    for (i, (name, _)) in server.iter().enumerate().filter(|(_, (n, _))| n.as_str() >= first) {
        let ours = fetch(repo, name, &out.join(name));
        let mut theirs = db.binlog_bytes(name);
        if i + 1 == server.len() {
            theirs[IN_USE_FLAG_AT] &= !1;
        }
        assert!(
            ours == theirs,
            "{name}: differs from the server's ({} vs {} bytes)",
            ours.len(),
            theirs.len()
        );
    }
}

/// No binlog data in a file-system repository (its config object may exist).
fn no_binlogs_stored(dir: &Path) -> bool {
    ["binlog/files", "binlog/parts", "binlog/gaps"]
        .iter()
        .all(|d| std::fs::read_dir(dir.join(d)).map(|mut r| r.next().is_none()).unwrap_or(true))
}

/// Waits until the server has no dump thread left (a stopped tail's is noticed late).
fn no_dump_threads(db: &MariaDb) {
    let t0 = Instant::now();
    while db
        .sql(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'",
        )
        .trim()
        != "0"
    {
        assert!(t0.elapsed() < Duration::from_secs(30), "the dump thread stays");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `--start-gtid` (issue 7, GTID positioning): an empty repository starts at the beginning of
/// the file holding the first transaction after the position, whole and byte-identical; the
/// position is ignored once the repository holds binlogs.
#[test]
fn issue_7_start_gtid_starts_at_the_file_of_the_next_transaction() {
    let db = MariaDb::start(&[]);
    let tmp = short_tempdir("wbl");
    create_r(&db);
    write_rows(&db, 10, "a");
    db.sql("FLUSH BINARY LOGS");
    write_rows(&db, 10, "b1");
    let mid2 = gtid_pos(&db); // the next transaction (b2) is in the second file
    write_rows(&db, 10, "b2");
    let end2 = gtid_pos(&db); // the last of the second file: the next one is in the third
    db.sql("FLUSH BINARY LOGS");
    write_rows(&db, 10, "c");
    let files: Vec<String> = db.binlogs().into_iter().map(|(n, _)| n).collect();
    assert_eq!(files.len(), 3, "{files:?}");

    let dir_a = tmp.path().join("a");
    let repo_a = Repo::fs(&dir_a);
    let log_a = tmp.path().join("a.log");
    let tail = Tail::start(&repo_a, db.port, &log_a, &["--start-gtid", &mid2]);
    caught_up_from(&repo_a, &db, &tail, &files[1], &tmp.path().join("oa"));
    assert_eq!(stored(&repo_a)[0].0, files[1]);
    assert!(
        tail.log().contains(&format!("after GTID {mid2} is in {}", files[1])),
        "{}",
        tail.log()
    );
    assert_eq!(tail.stop(), 0);

    // Through the environment; the position after the second file's last transaction.
    let repo_b = Repo::fs(&tmp.path().join("b"));
    let child = repo_b
        .walrs()
        .args(["binlog", "tail", "--host", "127.0.0.1", "--user", REPL_USER, "--server-id", "4243"])
        .args(["--port", &db.port.to_string(), "--flush-interval", "1s"])
        .env("WALRS_MYSQL_PASSWORD", REPL_PASSWORD)
        .env("WALRS_BINLOG_START_GTID", &end2)
        .spawn_logged(&tmp.path().join("b.log"));
    let tail = Tail { child, log: tmp.path().join("b.log") };
    caught_up_from(&repo_b, &db, &tail, &files[2], &tmp.path().join("ob"));
    assert_eq!(tail.stop(), 0);

    // A repository that holds binlogs resumes where it ends, whatever --start-gtid says.
    write_rows(&db, 10, "d");
    let tail = Tail::start(&repo_a, db.port, &log_a, &["--start-gtid", &end2]);
    caught_up_from(&repo_a, &db, &tail, &files[1], &tmp.path().join("oa2"));
    assert_eq!(tail.stop(), 0);
}

/// A `--start-gtid` that is not a GTID position is refused before anything is done (exit 2,
/// like every malformed option), from the flag or the environment, as is one given with
/// --start-file.
#[test]
fn issue_7_start_gtid_syntax_is_checked() {
    let tmp = short_tempdir("wbl");
    let dir = tmp.path().join("repo");
    let repo = Repo::fs(&dir);
    let tail = |extra: &[&str], env: Option<&str>| {
        let mut w = repo
            .walrs()
            .args(["binlog", "tail", "--user", REPL_USER, "--server-id", "4242", "--port", "1"])
            .args(extra);
        if let Some(v) = env {
            w = w.env("WALRS_BINLOG_START_GTID", v);
        }
        w.run()
    };
    for bad in ["0-1", "0-1-2-3", "x-1-2", "0-1-2,", "0-1-5,0-2-6", "0-1-99999999999999999999", ""]
    {
        let out = tail(&["--start-gtid", bad], None);
        out.expect_code(2);
        assert!(out.stderr.contains("--start-gtid"), "{bad:?}: {}", out.stderr);
    }
    let out = tail(&[], Some("0-1-x"));
    out.expect_code(2);
    assert!(out.stderr.contains("0-1-x"), "{}", out.stderr);
    tail(&["--start-gtid", "0-1-5", "--start-file", "mysql-bin.000001"], None).expect_code(2);
    assert_eq!(crate::util::files(&dir), Vec::<String>::new());
}

/// A position the server cannot serve is refused with a clear error, and nothing is stored:
/// ahead of its binlogs (exit 4), from a domain it has never written (exit 4: the server itself
/// would start at its first binlog), and after purged binlogs (exit 20, no gap recorded).
#[test]
fn issue_7_start_gtid_the_server_cannot_serve_is_refused() {
    let db = MariaDb::start(&[]);
    let tmp = short_tempdir("wbl");
    create_r(&db);
    write_rows(&db, 10, "a");
    let early = gtid_pos(&db);
    write_rows(&db, 10, "a2");
    let now = gtid_pos(&db);
    let seq: u64 = now.rsplit('-').next().unwrap().parse().unwrap();
    let cases = [
        (format!("0-1-{}", seq + 1000), 4, "not in the master's binlog"),
        (format!("{now},9-1-5"), 4, "domain 9"),
        ("0-7-1".to_string(), 4, "diverged"),
    ];
    for (i, (state, code, says)) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("r{i}"));
        let repo = Repo::fs(&dir);
        let log = tmp.path().join(format!("r{i}.log"));
        let tail = Tail::start(&repo, db.port, &log, &["--start-gtid", state]);
        let got = tail.wait_exit(Duration::from_secs(60));
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(got, *code, "{state}: {text}");
        assert!(text.contains(says) && text.contains(state.as_str()), "{state}: {text}");
        assert!(no_binlogs_stored(&dir), "{state}: something was stored");
    }

    // Purged: the binlogs after `early` are gone.
    db.sql("FLUSH BINARY LOGS");
    write_rows(&db, 10, "b");
    let last = db.binlogs().last().unwrap().0.clone();
    no_dump_threads(&db);
    let t0 = Instant::now();
    loop {
        db.sql(&format!("PURGE BINARY LOGS TO '{last}'"));
        if db.binlogs()[0].0 == last {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "the server does not purge");
        std::thread::sleep(Duration::from_millis(200));
    }
    let dir = tmp.path().join("purged");
    let repo = Repo::fs(&dir);
    let log = tmp.path().join("purged.log");
    let tail = Tail::start(&repo, db.port, &log, &["--start-gtid", &early]);
    let got = tail.wait_exit(Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(got, 20, "{text}");
    assert!(text.contains("purged") && text.contains(&early), "{text}");
    assert!(no_binlogs_stored(&dir), "something was stored");
}

/// The continuity check (issue 7): the server's file of the same name is another history
/// (RESET MASTER, then as many bytes and more under the same name, with the stored file's end
/// on an event boundary of the new one, in another GTID domain): resuming is refused with exit
/// 5, naming both GTID positions, and the stored file stays as it was.
#[test]
fn issue_7_resume_refuses_another_history_under_the_same_name() {
    let tmp = short_tempdir("wbl");
    let (db, _dir, repo, log) = tailed_and_stopped(tmp.path());
    let (name, stored_len) = db.binlogs()[0].clone();
    let old_pos = gtid_pos(&db);
    let before = fetch(&repo, &name, &tmp.path().join("before"));
    assert_eq!(before.len() as u64, stored_len);

    // A new history under the same name, in GTID domain 1, ending exactly at the stored length
    // and going on after it: one-row transactions whose size grows byte for byte with the row.
    no_dump_threads(&db);
    db.sql("RESET MASTER");
    let insert = |n: usize| {
        db.sql(&format!(
            "SET SESSION gtid_domain_id = 1; INSERT INTO t.r (tag, v) VALUES ('new', REPEAT('y', {n}))"
        ));
        db.binlogs()[0].1
    };
    // The first transaction after the reset may come with a Binlog_checkpoint event: measure
    // on the second.
    let first = insert(1000);
    let mut size = insert(1000);
    let tx1000 = size - first;
    assert!(size < stored_len, "the stored file ({stored_len}) is too short for this test");
    while stored_len - size > tx1000 + 8999 {
        size = insert(5000);
    }
    let rest = stored_len - size;
    assert!(rest >= tx1000, "{rest} bytes left, a transaction is at least {tx1000}");
    let end = insert(1000 + (rest - tx1000) as usize);
    assert_eq!(end, stored_len, "the new history does not end on the stored length");
    write_rows(&db, 10, "after");
    let server_pos = db.sql(&format!("SELECT BINLOG_GTID_POS('{name}', {stored_len})"));
    let server_pos = server_pos.trim();
    assert!(server_pos.starts_with("1-1-"), "{server_pos}");

    let tail = Tail::start(&repo, db.port, &log, &[]);
    let code = tail.wait_exit(Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 5, "{text}");
    assert!(text.contains(server_pos) && text.contains(&old_pos), "{text}");
    let after = fetch(&repo, &name, &tmp.path().join("after"));
    assert!(after == before, "the stored {name} changed");
    assert_eq!(stored(&repo).len(), 1);

    // Again, with the stored length inside one large event of the new file: the server cannot
    // give a position there (NULL), and the file is longer: refused too.
    no_dump_threads(&db);
    db.sql("RESET MASTER");
    db.sql(&format!("INSERT INTO t.r (tag, v) VALUES ('big', REPEAT('z', {}))", stored_len + 1000));
    let null = db.sql(&format!("SELECT BINLOG_GTID_POS('{name}', {stored_len})"));
    assert_eq!(null.trim(), "NULL");
    let tail = Tail::start(&repo, db.port, &log, &[]);
    let code = tail.wait_exit(Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 5, "{text}");
    assert!(text.contains("not an event boundary"), "{text}");
    let after = fetch(&repo, &name, &tmp.path().join("after2"));
    assert!(after == before, "the stored {name} changed");
}

/// Issue 12, item 8, for the binlog commands that print: `binlog list` (text and JSON) and
/// `binlog fetch --until-time` with stdout a closed pipe end their output, not in a panic; the
/// files are still written.
#[test]
fn closed_stdout_binlog_list_and_fetch_are_not_a_panic() {
    let tmp = short_tempdir("wbl");
    let (db, _dir, repo, _log) = tailed_and_stopped(tmp.path());
    let name = db.binlogs()[0].0.clone();
    let out_dir = tmp.path().join("until");
    let cases: Vec<Vec<String>> = vec![
        vec!["binlog".into(), "list".into()],
        vec!["binlog".into(), "list".into(), "--json".into()],
        vec![
            "binlog".into(),
            "fetch".into(),
            "--until-time".into(),
            "2000-01-01 00:00:00".into(),
            out_dir.display().to_string(),
        ],
    ];
    for args in &cases {
        let out = repo.walrs().args(args).run_closed_stdout();
        assert!(
            !out.stderr.contains("panicked") && out.code == 0,
            "{args:?}: exit {}:\n{}",
            out.code,
            out.stderr
        );
    }
    assert!(out_dir.join(&name).exists(), "binlog fetch --until-time wrote {name}");
}

/// Issue 11, item 6: a server unreachable when `binlog tail` starts is retried with backoff, as
/// after a disconnect (it was exit 70, "a bug in walrs", at once); once the server is up the
/// tail streams, and SIGTERM still ends it with exit 0.
#[test]
fn binlog_tail_retries_unreachable_start() {
    let mut db = MariaDb::start(&[]);
    create_r(&db);
    write_rows(&db, 20, "a");
    db.stop();
    let tmp = short_tempdir("wbl");
    let repo = Repo::fs(&tmp.path().join("repo"));
    let log = tmp.path().join("tail.log");
    let mut tail = Tail::start(&repo, db.port, &log, &[]);
    // Two failed attempts, and still running.
    let t0 = Instant::now();
    loop {
        if let Some(st) = tail.child.try_wait().unwrap() {
            panic!("binlog tail exited ({st}) while the server was down:\n{}", tail.log());
        }
        if tail.log().matches("reconnecting in").count() >= 2 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no retries:\n{}", tail.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(stored(&repo).is_empty(), "nothing can be stored without a server");
    db.restart();
    write_rows(&db, 5, "b");
    wait_caught_up(&repo, &db, &tail, Duration::from_secs(60));
    assert_eq!(tail.stop(), 0);
    let out = tmp.path().join("o");
    std::fs::create_dir_all(&out).unwrap();
    compare_all(&repo, &db, &out);
}

/// A tail stopped (SIGTERM) before it ever reached the server ends with exit 0: nothing was
/// received, nothing is lost.
#[test]
fn binlog_tail_stopped_before_the_server_answered_exits_0() {
    let tmp = short_tempdir("wbl");
    let repo = Repo::fs(&tmp.path().join("repo"));
    let log = tmp.path().join("tail.log");
    let port = crate::util::mariadb::free_port();
    let tail = Tail::start(&repo, port, &log, &[]);
    let t0 = Instant::now();
    while !tail.log().contains("reconnecting in") {
        assert!(t0.elapsed() < Duration::from_secs(60), "no retry:\n{}", tail.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let code = tail.stop();
    assert_eq!(code, 0, "{}", std::fs::read_to_string(&log).unwrap_or_default());
}

/// Issue 16: `walrs status` and `walrs metrics` of a binlog repository name its newest stored
/// event: the file `binlog list` shows last, its state and its last event time, while the file is
/// still active (stored as parts) and after a rotation closed it; the metrics text, read by the
/// Prometheus client's own parser, carries the same time and no gap.
#[test]
fn issue_16_status_and_metrics_name_the_last_stored_binlog_event() {
    let tmp = short_tempdir("wbs");
    let (db, _dir, repo, log) = tailed_and_stopped(tmp.path());
    let agree = |repo: &Repo| -> serde_json::Value {
        let list = list_json(repo);
        let last = list["files"].as_array().unwrap().last().unwrap().clone();
        let out = repo.walrs().args(["status", "--json"]).run();
        out.expect_code(0);
        let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let b = &s["binlog"];
        assert_eq!(b["flavour"], "mariadb", "{s}");
        assert_eq!(b["server_id"], list["server"]["server_id"], "{s}");
        assert_eq!(b["basename"], list["server"]["basename"], "{s}");
        assert_eq!(b["last_file"], last["name"], "{s}\n{list}");
        assert_eq!(b["last_file_closed"], last["state"] == "closed", "{s}\n{list}");
        assert!(last["last_event_time"].is_string(), "{list}");
        assert_eq!(b["last_event_time"], last["last_event_time"], "{s}\n{list}");
        assert_eq!(b["gaps"], 0, "{s}");
        assert!(b["last_event_age_seconds"].as_f64().unwrap() >= 0.0, "{s}");
        // A binlog-only repository: no WAL, no backups.
        assert!(s["system_identifier"].is_null(), "{s}");
        assert_eq!(s["timelines"].as_array().map(Vec::len), Some(0), "{s}");

        let text = repo.walrs().args(["status"]).run();
        text.expect_code(0);
        let want = format!(
            "binlog (mariadb server {}): last stored event at {} (",
            b["server_id"],
            b["last_event_time"].as_str().unwrap()
        );
        assert!(text.stdout.contains(&want), "{want}\n{}", text.stdout);
        assert!(text.stdout.contains(&format!(" in {}\n", last["name"].as_str().unwrap())));

        let out = repo.walrs().args(["metrics"]).run();
        out.expect_code(0);
        let m = crate::status::parse_exposition(&out.stdout);
        let id = b["server_id"].to_string();
        let labels = [("server_id", id.as_str()), ("basename", b["basename"].as_str().unwrap())];
        let ts = crate::status::value(&m, "walrs_binlog_last_event_timestamp_seconds", &labels);
        assert_eq!(ts, crate::status::unix_of(last["last_event_time"].as_str().unwrap()));
        let age = crate::status::value(&m, "walrs_binlog_last_event_age_seconds", &labels);
        assert!(age >= 0.0, "{age}");
        assert_eq!(crate::status::value(&m, "walrs_binlog_gaps", &labels), 0.0);
        last
    };
    let first = agree(&repo);
    assert_eq!(first["state"], "active", "the tail stopped with the file open: {first}");

    // A rotation: the file is closed (its metadata now carries the last event), a new one starts.
    db.sql("FLUSH BINARY LOGS");
    write_rows(&db, 5, "b");
    let tail = Tail::start(&repo, db.port, &log, &[]);
    wait_caught_up(&repo, &db, &tail, Duration::from_secs(60));
    assert_eq!(tail.stop(), 0);
    let second = agree(&repo);
    assert_ne!(second["name"], first["name"]);
    let list = list_json(&repo);
    let old = list["files"].as_array().unwrap().iter().find(|f| f["name"] == first["name"]);
    assert_eq!(old.unwrap()["state"], "closed", "{list}");
}
