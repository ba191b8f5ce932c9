//! Issue 11, item 7: temporary files that killed writers leave in a file-system repository are
//! swept once no writer holds them and they have not been written for an hour, by the next write
//! into their directory, by `basebackup` (under `backups/`) and by `wal index --rebuild`; a live
//! writer's temporary file is never removed; `wal verify` reports them. Also: a write that fails
//! for lack of space leaves no empty directories, and the spool's lock files are 0600 whatever
//! the umask.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::util::pg::{PgCluster, PgWorld};
use crate::util::wal::{Fill, SegSpec};
use crate::util::{Tmpfs, Walrs, files, walrs};

struct Setup {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    wal: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (repo, wal) = (dir.path().join("repo"), dir.path().join("pg_wal"));
    std::fs::create_dir(&repo).unwrap();
    std::fs::create_dir(&wal).unwrap();
    Setup { _dir: dir, repo, wal }
}

fn push(s: &Setup, n: u64) {
    let p = SegSpec::new(n).write(&s.wal);
    walrs(&s.repo).args(["push".as_ref(), p.as_os_str()]).run().expect_code(0);
}

/// A temporary file named the way the file-system backend names them, `age` old, 64 KiB.
fn plant(dir: &Path, object: &str, pid: u32, age: Duration) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(format!(".tmp.{object}.{pid}.0"));
    std::fs::write(&p, vec![7u8; 64 << 10]).unwrap();
    File::options().write(true).open(&p).unwrap().set_modified(SystemTime::now() - age).unwrap();
    p
}

const HOURS_2: Duration = Duration::from_secs(2 * 3600);
/// No walrs process has this pid (above the kernel's pid_max of 2^22).
const DEAD_PID: u32 = 9_999_999;

#[test]
fn stale_temporaries_are_swept_and_live_ones_kept() {
    let s = setup();
    push(&s, 1);
    let group = s.repo.join("wal/0000000100000000");
    let stale = plant(&group, "000000010000000000000005", DEAD_PID, HOURS_2);
    let stale_idx = plant(
        &s.repo.join("index/seg/0000000100000000"),
        "000000010000000000000005",
        DEAD_PID,
        HOURS_2,
    );
    let recent = plant(&group, "000000010000000000000007", DEAD_PID, Duration::from_secs(600));
    let in_backups =
        plant(&s.repo.join("backups/20261121T172545Z/base.tar"), "000003", DEAD_PID, HOURS_2);
    // Held by a writer (this process holds its lock), unmodified for two hours all the same.
    let held = plant(&group, "000000010000000000000006", DEAD_PID, HOURS_2);
    let lock = File::options().write(true).open(&held).unwrap();
    lock.lock().unwrap();

    // wal verify reports them, not as problems (they are not damage). The crafted segments
    // hold no WAL records, so their only problems are `damaged` ones.
    let v = walrs(&s.repo).args(["wal", "verify"]).run();
    v.expect_code(18);
    let problems: Vec<&str> = v
        .stdout
        .lines()
        .filter(|l| !l.starts_with("temporary: ") && !l.contains(" segment(s), "))
        .collect();
    assert!(problems.iter().all(|l| l.starts_with("damaged: ")), "{}", v.stdout);
    for (p, state) in [
        (&stale, "stale"),
        (&stale_idx, "stale"),
        (&recent, "recent"),
        (&in_backups, "stale"),
        (&held, "in use"),
    ] {
        let rel = p.strip_prefix(&s.repo).unwrap().display().to_string();
        assert!(
            v.stdout
                .lines()
                .any(|l| l.starts_with(&format!("temporary: {rel}: 65536 bytes"))
                    && l.contains(state)),
            "{rel} ({state}) not reported:\n{}",
            v.stdout
        );
    }
    assert!(v.stdout.contains("5 temporary file(s)"), "{}", v.stdout);
    let j = walrs(&s.repo).args(["wal", "verify", "--json"]).run();
    j.expect_code(18);
    let j: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(j["temporaries"].as_array().map(Vec::len), Some(5), "{j}");

    // The next push into the group (and its index directory) removes the stale ones only.
    push(&s, 2);
    assert!(!stale.exists() && !stale_idx.exists());
    assert!(recent.exists() && held.exists() && in_backups.exists());
    // Once its writer is gone, the held one goes too.
    drop(lock);
    push(&s, 3);
    assert!(!held.exists() && recent.exists());
    // The rebuild sweeps the whole repository.
    walrs(&s.repo).args(["wal", "index", "--rebuild"]).run().expect_code(0);
    assert!(!in_backups.exists() && recent.exists());
    let v = walrs(&s.repo).args(["wal", "verify"]).run();
    v.expect_code(18);
    assert!(v.stdout.contains("1 temporary file(s)"), "{}", v.stdout);
}

/// A body that hands out one chunk, then waits until told to go on.
struct Paused {
    sent: bool,
    go: std::sync::mpsc::Receiver<()>,
}

impl walrs::storage::Body for Paused {
    fn next_chunk(&mut self) -> Result<Option<&[u8]>, String> {
        if !self.sent {
            self.sent = true;
            return Ok(Some(b"first bytes of an object"));
        }
        let _ = self.go.recv();
        Ok(None)
    }
}

/// A writer that stalls in the middle of an object for longer than the sweep's age keeps its
/// temporary file: the lock it holds tells a sweeping push that it is alive.
#[test]
fn a_stalled_live_writer_keeps_its_temporary_file() {
    use walrs::storage::{FsStorage, ObjectKey, PutOutcome, Storage};
    let s = setup();
    push(&s, 1);
    let group = s.repo.join("wal/0000000100000000");
    let (tx, rx) = std::sync::mpsc::channel();
    let storage = FsStorage::open(&s.repo).unwrap();
    let key = ObjectKey::new("wal/0000000100000000/000000010000000000000009").unwrap();
    let tmp_prefix = format!(".tmp.000000010000000000000009.{}.", std::process::id());
    std::thread::scope(|scope| {
        let writer =
            scope.spawn(|| storage.put_if_absent(&key, &mut Paused { sent: false, go: rx }));
        let t0 = std::time::Instant::now();
        let tmp = loop {
            let found = std::fs::read_dir(&group)
                .unwrap()
                .flatten()
                .find(|e| e.file_name().to_string_lossy().starts_with(&tmp_prefix));
            if let Some(e) = found {
                break e.path();
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "the writer made no temporary file");
            std::thread::sleep(Duration::from_millis(5));
        };
        File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(SystemTime::now() - HOURS_2)
            .unwrap();
        let out =
            walrs(&s.repo).args(["push".as_ref(), SegSpec::new(2).write(&s.wal).as_os_str()]).run();
        let kept = tmp.exists();
        // The writer goes on whatever happened (a failed assertion must not leave it waiting).
        tx.send(()).unwrap();
        let stored = writer.join().unwrap();
        out.expect_code(0);
        assert!(kept, "a push removed a live writer's temporary file");
        assert!(matches!(stored, Ok(PutOutcome::Created(_))), "{stored:?}");
    });
    assert_eq!(
        std::fs::read(group.join("000000010000000000000009")).unwrap(),
        b"first bytes of an object"
    );
}

/// A write that fails for lack of space leaves no directory it created: a push into a new
/// group on a full file system, and a base backup whose first chunk does not fit.
#[test]
fn a_write_that_runs_out_of_space_leaves_no_empty_directories() {
    let fs = Tmpfs::new("512k");
    let s = setup();
    let repo = fs.path.join("repo");
    std::fs::create_dir(&repo).unwrap();
    let seg = SegSpec { seg_size: 1 << 20, fill: Fill::Random(5), ..SegSpec::new(1) };
    let p = seg.write(&s.wal);
    walrs(&repo).args(["push".as_ref(), p.as_os_str()]).run().expect_code(11);
    assert!(
        !repo.join("wal").exists(),
        "{:?}",
        std::fs::read_dir(&repo).unwrap().collect::<Vec<_>>()
    );

    let world = PgWorld::new();
    let mut a = PgCluster::init(&world, "a", "archive_mode = off\n");
    a.start();
    let (u, g) = crate::util::test_user();
    std::fs::create_dir(fs.path.join("bb")).unwrap();
    crate::util::chown_to_test_user(&fs.path.join("bb"));
    let out = Walrs::new(&world.walrs)
        .env("WALRS_REPO", fs.path.join("bb"))
        .run_as(u, g)
        .args([
            "basebackup",
            // Archiving is off: the chunk runs out of space long before the backup would wait
            // for its WAL.
            "--no-archive-check",
            "-d",
            &format!("host={} port={} user=postgres", a.sock.display(), a.port),
        ])
        .run();
    a.stop();
    out.expect_code(11);
    let left: Vec<String> = files(&fs.path.join("bb"));
    assert_eq!(left, vec!["walrs.config", "walrs.config.copy"], "{}", out.stderr);
    assert!(!fs.path.join("bb/backups").exists(), "empty directories left under backups/");
}

/// The spool's lock files (prefetch, look-ahead) are created 0600, not with the umask's mode.
#[test]
fn spool_lock_files_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup();
    for n in 1..=3 {
        push(&s, n);
    }
    let data = s.wal.parent().unwrap().join("data");
    let pg_wal = data.join("pg_wal");
    std::fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
    let bin = crate::util::walrs_bin();
    let sh = |cmd: String| {
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("umask 000; exec {cmd}"))
            .env("WALRS_REPO", &s.repo)
            .env("WALRS_PREFETCH", "1")
            .status()
            .unwrap();
        assert!(st.success(), "{cmd}");
    };
    sh(format!(
        "{} fetch 000000010000000000000001 {}",
        bin.display(),
        pg_wal.join("RECOVERYXLOG").display()
    ));
    // A look-ahead push: the cluster's segments 4 to 6, marked ready.
    for n in 4..=6 {
        SegSpec::new(n).write(&pg_wal);
        std::fs::write(pg_wal.join(format!("archive_status/{}.ready", SegSpec::new(n).name())), "")
            .unwrap();
    }
    sh(format!("{} push {}", bin.display(), pg_wal.join(SegSpec::new(4).name()).display()));
    let locks: Vec<PathBuf> = files(&data.join("walrs_spool"))
        .into_iter()
        .filter(|f| f.ends_with(".lock"))
        .map(|f| data.join("walrs_spool").join(f))
        .collect();
    assert!(locks.iter().any(|p| p.ends_with("prefetch/.lock")), "{locks:?}");
    assert!(locks.iter().any(|p| p.parent().unwrap().ends_with("push")), "{locks:?}");
    for p in &locks {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
}
