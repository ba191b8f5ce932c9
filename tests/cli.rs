//! The `walrs push` / `walrs fetch` contract, through the binary: exit codes from
//! docs/exit-codes.md for every failure kind, and nothing left behind on any failure.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use walrs::pg::PgMajorVersion;

use crate::util::wal::{Fill, SegSpec};
use crate::util::{Tmpfs, chown_to_test_user, files, key_b64, leftovers, test_user, walrs};

/// A repository directory and a pg_wal-like source directory.
struct Setup {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    wal: PathBuf,
    out: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let wal = dir.path().join("pg_wal");
    let out = dir.path().join("out");
    for d in [&repo, &wal, &out] {
        std::fs::create_dir(d).unwrap();
    }
    Setup { repo, wal, out, _dir: dir }
}

fn push(repo: &Path, path: &Path) -> crate::util::Out {
    walrs(repo).arg_push(path)
}

trait PushFetch {
    fn arg_push(self, path: &Path) -> crate::util::Out;
    fn arg_fetch(self, name: &str, dest: &Path) -> crate::util::Out;
}

impl PushFetch for crate::util::Walrs {
    fn arg_push(self, path: &Path) -> crate::util::Out {
        self.args(["push".as_ref(), path.as_os_str()]).run()
    }
    fn arg_fetch(self, name: &str, dest: &Path) -> crate::util::Out {
        self.args(["fetch".as_ref(), name.as_ref(), dest.as_os_str()]).run()
    }
}

/// The repository's files other than the index (derived data written after each segment).
fn stored_files(repo: &Path) -> Vec<String> {
    files(repo).into_iter().filter(|f| !f.starts_with("index/")).collect()
}

fn object_path(repo: &Path, name: &str) -> PathBuf {
    repo.join("wal").join(&name[..16]).join(name)
}

#[test]
fn push_then_fetch_roundtrip_every_codec() {
    for (i, c) in ["zstd", "zstd:7", "lz4", "none"].iter().enumerate() {
        let s = setup();
        let seg = SegSpec { fill: Fill::Random(i as u64 + 1), ..SegSpec::new(3) };
        let p = seg.write(&s.wal);
        let out = walrs(&s.repo).env("WALRS_COMPRESSION", c).arg_push(&p);
        out.expect_code(0);
        assert!(out.stdout.is_empty(), "push prints nothing on stdout");
        let dest = s.out.join("RECOVERYXLOG");
        walrs(&s.repo).arg_fetch(&seg.name(), &dest).expect_code(0);
        assert!(std::fs::read(&dest).unwrap() == seg.bytes(), "{c}: fetched bytes differ");
        assert!(leftovers(&s.repo).is_empty() && leftovers(&s.out).is_empty());
    }
}

#[test]
fn repository_layout_and_modes() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup();
    push(&s.repo, &SegSpec::new(0x1FF).write(&s.wal)).expect_code(0);
    assert_eq!(
        files(&s.repo),
        vec![
            "index/blocks/0000000100000001/0000000100000001000000FF",
            "index/seg/0000000100000001/0000000100000001000000FF",
            "wal/0000000100000001/0000000100000001000000FF",
            "walrs.config",
            "walrs.config.copy"
        ]
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&object_path(&s.repo, "0000000100000001000000FF")), 0o600);
    assert_eq!(mode(&s.repo.join("walrs.config")), 0o600);
    assert_eq!(mode(&s.repo.join("wal")), 0o700);
    assert_eq!(mode(&s.repo.join("wal/0000000100000001")), 0o700);
}

#[test]
fn identical_repush_succeeds_with_a_warning() {
    let s = setup();
    let p = SegSpec::new(4).write(&s.wal);
    push(&s.repo, &p).expect_code(0);
    let obj = object_path(&s.repo, "000000010000000000000004");
    let before = std::fs::read(&obj).unwrap();
    let out = push(&s.repo, &p);
    out.expect_code(0);
    assert!(out.stderr.contains("already archived with identical content"), "{}", out.stderr);
    assert_eq!(std::fs::read(&obj).unwrap(), before, "the stored object must not be rewritten");
}

#[test]
fn different_content_under_the_same_name_is_refused() {
    let s = setup();
    let seg = SegSpec::new(5);
    push(&s.repo, &seg.write(&s.wal)).expect_code(0);
    let obj = object_path(&s.repo, &seg.name());
    let before = std::fs::read(&obj).unwrap();
    let other = SegSpec { fill: Fill::Pattern(999), ..SegSpec::new(5) };
    let out = push(&s.repo, &other.write(&s.wal));
    out.expect_code(6);
    assert!(out.stderr.contains("different content"), "{}", out.stderr);
    assert_eq!(std::fs::read(&obj).unwrap(), before);
    assert!(leftovers(&s.repo).is_empty());
}

#[test]
fn history_files_are_never_overwritten() {
    let s = setup();
    push(&s.repo, &SegSpec::new(1).write(&s.wal)).expect_code(0);
    let h = s.wal.join("00000002.history");
    std::fs::write(&h, "1\t0/3000160\tno recovery target specified\n").unwrap();
    push(&s.repo, &h).expect_code(0);
    push(&s.repo, &h).expect_code(0);
    std::fs::write(&h, "1\t0/4000000\tno recovery target specified\n").unwrap();
    let out = push(&s.repo, &h);
    out.expect_code(6);
    let dest = s.out.join("RECOVERYHISTORY");
    walrs(&s.repo).arg_fetch("00000002.history", &dest).expect_code(0);
    assert_eq!(
        std::fs::read_to_string(&dest).unwrap(),
        "1\t0/3000160\tno recovery target specified\n"
    );
    // Not a history file at all.
    std::fs::write(s.wal.join("00000003.history"), "garbage\n").unwrap();
    push(&s.repo, &s.wal.join("00000003.history")).expect_code(4);
}

#[test]
fn partial_and_backup_files_keep_their_names() {
    let s = setup();
    push(&s.repo, &SegSpec::new(1).write(&s.wal)).expect_code(0);
    let seg = SegSpec::new(2);
    let partial = s.wal.join(format!("{}.partial", seg.name()));
    std::fs::write(&partial, seg.bytes()).unwrap();
    push(&s.repo, &partial).expect_code(0);
    let backup = s.wal.join("000000010000000000000002.00000028.backup");
    std::fs::write(&backup, "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n")
        .unwrap();
    push(&s.repo, &backup).expect_code(0);
    // The partial is served only under its own name, never as the full segment.
    walrs(&s.repo).arg_fetch(&seg.name(), &s.out.join("x")).expect_code(1);
    assert!(!s.out.join("x").exists());
    walrs(&s.repo).arg_fetch(&format!("{}.partial", seg.name()), &s.out.join("p")).expect_code(0);
    assert!(std::fs::read(s.out.join("p")).unwrap() == seg.bytes());
    walrs(&s.repo)
        .arg_fetch("000000010000000000000002.00000028.backup", &s.out.join("b"))
        .expect_code(0);
}

#[test]
fn first_push_of_a_history_file_identifies_the_cluster_from_pg_wal() {
    let s = setup();
    SegSpec { tli: 2, ..SegSpec::new(9) }.write(&s.wal);
    let h = s.wal.join("00000002.history");
    std::fs::write(&h, "1\t0/9000000\tno recovery target specified\n").unwrap();
    push(&s.repo, &h).expect_code(0);
    let cfg =
        String::from_utf8_lossy(&std::fs::read(s.repo.join("walrs.config")).unwrap()).into_owned();
    assert!(cfg.contains(&crate::util::wal::SYSID.to_string()), "{cfg}");
    // Without any segment beside it, a new repository cannot be created.
    let t = setup();
    let h2 = t.wal.join("00000002.history");
    std::fs::write(&h2, "1\t0/9000000\treason\n").unwrap();
    push(&t.repo, &h2).expect_code(14);
}

#[test]
fn not_found_is_exit_1_and_leaves_nothing() {
    let s = setup();
    push(&s.repo, &SegSpec::new(1).write(&s.wal)).expect_code(0);
    let dest = s.out.join("RECOVERYXLOG");
    for name in ["000000010000000000000002", "00000002.history", "000000010000000000000001.partial"]
    {
        let out = walrs(&s.repo).arg_fetch(name, &dest);
        out.expect_code(1);
        assert!(!dest.exists());
    }
    assert!(leftovers(&s.out).is_empty());
}

#[test]
fn only_not_found_exits_1() {
    let s = setup();
    // An empty directory is not a repository: a hard error, not "not found" (which would let
    // PostgreSQL end recovery early).
    walrs(&s.repo).arg_fetch("000000010000000000000001", &s.out.join("x")).expect_code(14);
    walrs(&s.repo.join("missing"))
        .arg_fetch("000000010000000000000001", &s.out.join("x"))
        .expect_code(3);
    walrs(Path::new("relative/repo"))
        .arg_fetch("000000010000000000000001", &s.out.join("x"))
        .expect_code(3);
    walrs(&s.repo)
        .env_remove("WALRS_REPO")
        .arg_fetch("000000010000000000000001", &s.out.join("x"))
        .expect_code(3);
    walrs(&s.repo).args(["fetch", "only-one-arg"]).run().expect_code(2);
    walrs(&s.repo).args(["no-such-command"]).run().expect_code(2);
    walrs(&s.repo).args(["--version"]).run().expect_code(0);
    assert!(!s.out.join("x").exists());
}

#[test]
fn names_with_paths_are_rejected() {
    let s = setup();
    push(&s.repo, &SegSpec::new(1).write(&s.wal)).expect_code(0);
    for bad in [
        "../000000010000000000000001",
        "../../etc/passwd",
        "wal/0000000100000000/000000010000000000000001",
        "..",
        "000000010000000000000001/",
    ] {
        let out = walrs(&s.repo).arg_fetch(bad, &s.out.join("x"));
        out.expect_code(4);
        assert!(!s.out.join("x").exists());
    }
    let evil = s.wal.join("..000000010000000000000001");
    std::fs::write(&evil, SegSpec::new(1).bytes()).unwrap();
    push(&s.repo, &evil).expect_code(4);
    std::fs::write(s.wal.join("RECOVERYXLOG"), SegSpec::new(1).bytes()).unwrap();
    push(&s.repo, &s.wal.join("RECOVERYXLOG")).expect_code(4);
    assert_eq!(stored_files(&s.repo).len(), 3);
}

#[test]
fn files_that_are_not_what_their_name_says_are_rejected() {
    let s = setup();
    // Not WAL at all.
    let junk = s.wal.join("000000010000000000000001");
    std::fs::write(&junk, vec![0u8; 16 << 20]).unwrap();
    push(&s.repo, &junk).expect_code(4);
    // A valid segment renamed to another segment's name.
    std::fs::write(&junk, SegSpec::new(2).bytes()).unwrap();
    let out = push(&s.repo, &junk);
    out.expect_code(4);
    assert!(out.stderr.contains("renamed"), "{}", out.stderr);
    // Truncated segment.
    std::fs::write(&junk, &SegSpec::new(1).bytes()[..1 << 20]).unwrap();
    push(&s.repo, &junk).expect_code(4);
    // Missing file.
    push(&s.repo, &s.wal.join("000000010000000000000009")).expect_code(4);
    assert!(files(&s.repo).is_empty(), "nothing may be stored: {:?}", files(&s.repo));
}

#[test]
fn wal_of_another_cluster_is_refused() {
    let s = setup();
    push(&s.repo, &SegSpec::new(1).write(&s.wal)).expect_code(0);
    let other = SegSpec { sysid: 42, ..SegSpec::new(2) };
    let out = push(&s.repo, &other.write(&s.wal));
    out.expect_code(5);
    assert!(
        out.stderr.contains("42") && out.stderr.contains(&crate::util::wal::SYSID.to_string()),
        "{}",
        out.stderr
    );
    let v16 = SegSpec { version: PgMajorVersion::V16, ..SegSpec::new(3) };
    push(&s.repo, &v16.write(&s.wal)).expect_code(5);
    let t = setup();
    let small = SegSpec { seg_size: 1 << 20, ..SegSpec::new(4) };
    push(&t.repo, &small.write(&t.wal)).expect_code(0);
    push(&t.repo, &SegSpec::new(4).write(&t.wal)).expect_code(5);
}

#[test]
fn a_flipped_byte_in_a_stored_object_is_caught() {
    for compression in ["zstd", "none"] {
        let s = setup();
        let seg = SegSpec { fill: Fill::Random(3), ..SegSpec::new(1) };
        walrs(&s.repo)
            .env("WALRS_COMPRESSION", compression)
            .arg_push(&seg.write(&s.wal))
            .expect_code(0);
        let obj = object_path(&s.repo, &seg.name());
        let mut bytes = std::fs::read(&obj).unwrap();
        for at in [30, 200, bytes.len() / 2, bytes.len() - 10] {
            bytes[at] ^= 0x04;
            std::fs::write(&obj, &bytes).unwrap();
            let dest = s.out.join("RECOVERYXLOG");
            let out = walrs(&s.repo).arg_fetch(&seg.name(), &dest);
            out.expect_code(7);
            assert!(
                out.stderr.contains(&seg.name()),
                "the message names the object: {}",
                out.stderr
            );
            assert!(!dest.exists(), "no partial file at the destination");
            assert!(leftovers(&s.out).is_empty());
            bytes[at] ^= 0x04;
        }
        // A corrupt stored object is also reported when the same file is pushed again.
        bytes[300] ^= 0x01;
        std::fs::write(&obj, &bytes).unwrap();
        push(&s.repo, &s.wal.join(seg.name())).expect_code(7);
    }
}

#[test]
fn a_truncated_object_is_caught() {
    let s = setup();
    let seg = SegSpec { fill: Fill::Random(5), ..SegSpec::new(1) };
    push(&s.repo, &seg.write(&s.wal)).expect_code(0);
    let obj = object_path(&s.repo, &seg.name());
    let bytes = std::fs::read(&obj).unwrap();
    for cut in [0, 10, 100, bytes.len() / 3, bytes.len() - 60, bytes.len() - 1] {
        std::fs::write(&obj, &bytes[..cut]).unwrap();
        let dest = s.out.join("RECOVERYXLOG");
        walrs(&s.repo).arg_fetch(&seg.name(), &dest).expect_code(7);
        assert!(!dest.exists());
        assert!(leftovers(&s.out).is_empty());
    }
}

#[test]
fn swapped_objects_are_caught() {
    let s = setup();
    let a = SegSpec::new(1);
    let b = SegSpec::new(2);
    push(&s.repo, &a.write(&s.wal)).expect_code(0);
    push(&s.repo, &b.write(&s.wal)).expect_code(0);
    let (pa, pb) = (object_path(&s.repo, &a.name()), object_path(&s.repo, &b.name()));
    let (ba, bb) = (std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap());
    std::fs::write(&pa, &bb).unwrap();
    std::fs::write(&pb, &ba).unwrap();
    let out = walrs(&s.repo).arg_fetch(&a.name(), &s.out.join("x"));
    out.expect_code(7);
    assert!(out.stderr.contains("renamed or swapped"), "{}", out.stderr);
}

#[test]
fn encryption_wrong_and_missing_keys() {
    let s = setup();
    let seg = SegSpec::new(1);
    let k1 = key_b64(1);
    walrs(&s.repo).env("WALRS_ENCRYPTION_KEY", &k1).arg_push(&seg.write(&s.wal)).expect_code(0);
    // The stored object does not contain the plaintext.
    let stored = std::fs::read(object_path(&s.repo, &seg.name())).unwrap();
    let probe = &seg.bytes()[40..72];
    assert!(!stored.windows(probe.len()).any(|w| w == probe));
    let dest = s.out.join("RECOVERYXLOG");
    walrs(&s.repo).env("WALRS_ENCRYPTION_KEY", &k1).arg_fetch(&seg.name(), &dest).expect_code(0);
    assert!(std::fs::read(&dest).unwrap() == seg.bytes());
    std::fs::remove_file(&dest).unwrap();

    let wrong =
        walrs(&s.repo).env("WALRS_ENCRYPTION_KEY", key_b64(2)).arg_fetch(&seg.name(), &dest);
    wrong.expect_code(8);
    assert!(wrong.stderr.contains("wrong encryption key"), "{}", wrong.stderr);
    assert!(!wrong.stderr.contains(&key_b64(2)), "the key must never be logged");
    let missing = walrs(&s.repo).arg_fetch(&seg.name(), &dest);
    missing.expect_code(8);
    assert!(missing.stderr.contains("encrypted"), "{}", missing.stderr);
    walrs(&s.repo)
        .env("WALRS_ENCRYPTION_KEY", "bm90LWEta2V5")
        .arg_fetch(&seg.name(), &dest)
        .expect_code(8);
    // Pushing without the key, or with another key, into an encrypted repository.
    walrs(&s.repo).arg_push(&SegSpec::new(2).write(&s.wal)).expect_code(8);
    walrs(&s.repo)
        .env("WALRS_ENCRYPTION_KEY", key_b64(3))
        .arg_push(&s.wal.join(SegSpec::new(2).name()))
        .expect_code(8);
    assert!(!dest.exists());
    assert_eq!(stored_files(&s.repo).len(), 3, "{:?}", files(&s.repo));

    // A key file works the same; a key for an unencrypted repository is refused.
    let keyfile = s.out.join("key");
    std::fs::write(&keyfile, format!("{k1}\n")).unwrap();
    walrs(&s.repo)
        .env("WALRS_ENCRYPTION_KEY_FILE", &keyfile)
        .arg_fetch(&seg.name(), &dest)
        .expect_code(0);
    let t = setup();
    push(&t.repo, &SegSpec::new(1).write(&t.wal)).expect_code(0);
    walrs(&t.repo)
        .env("WALRS_ENCRYPTION_KEY", &k1)
        .arg_push(&SegSpec::new(2).write(&t.wal))
        .expect_code(8);
}

#[test]
fn read_only_repository_permission_denied() {
    let s = setup();
    let (uid, gid) = test_user();
    chown_to_test_user(s.repo.parent().unwrap());
    std::fs::set_permissions(
        s.repo.parent().unwrap(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let seg1 = SegSpec::new(1).write(&s.wal);
    walrs(&s.repo).run_as(uid, gid).arg_push(&seg1).expect_code(0);
    let seg2 = SegSpec { fill: Fill::Random(2), ..SegSpec::new(2) }.write(&s.wal);
    chown_to_test_user(&seg2);
    let out =
        std::process::Command::new("chmod").args(["-R", "a-w"]).arg(&s.repo).status().unwrap();
    assert!(out.success());
    let out = walrs(&s.repo).run_as(uid, gid).arg_push(&seg2);
    out.expect_code(9);
    assert!(leftovers(&s.repo).is_empty());
    assert_eq!(stored_files(&s.repo).len(), 3);
    // Reading still works.
    let dest = s.out.join("x");
    chown_to_test_user(&s.out);
    walrs(&s.repo).run_as(uid, gid).arg_fetch("000000010000000000000001", &dest).expect_code(0);
}

#[test]
fn read_only_file_system() {
    let fs = Tmpfs::new("64m");
    let s = setup();
    let repo = fs.path.join("repo");
    std::fs::create_dir(&repo).unwrap();
    push(&repo, &SegSpec::new(1).write(&s.wal)).expect_code(0);
    fs.remount_ro();
    let out = push(&repo, &SegSpec { fill: Fill::Random(9), ..SegSpec::new(2) }.write(&s.wal));
    out.expect_code(10);
    walrs(&repo).arg_fetch("000000010000000000000001", &s.out.join("x")).expect_code(0);
    assert!(leftovers(&repo).is_empty());
}

#[test]
fn full_repository_disk() {
    let fs = Tmpfs::new("512k");
    let s = setup();
    let repo = fs.path.join("repo");
    std::fs::create_dir(&repo).unwrap();
    let small =
        |n, seed| SegSpec { seg_size: 1 << 20, fill: Fill::Random(seed), ..SegSpec::new(n) };
    let out = push(&repo, &small(1, 11).write(&s.wal));
    out.expect_code(11);
    assert!(out.stderr.to_lowercase().contains("space"), "{}", out.stderr);
    assert!(leftovers(&repo).is_empty(), "{:?}", leftovers(&repo));
    assert!(!files(&repo).iter().any(|f| f.starts_with("wal/")), "{:?}", files(&repo));
    // After space is freed, archiving resumes.
    drop(fs);
}

#[test]
fn full_destination_disk_leaves_no_partial_file() {
    let s = setup();
    let seg = SegSpec { seg_size: 1 << 20, fill: Fill::Random(4), ..SegSpec::new(1) };
    push(&s.repo, &seg.write(&s.wal)).expect_code(0);
    let fs = Tmpfs::new("256k");
    let dest = fs.path.join("RECOVERYXLOG");
    let out = walrs(&s.repo).arg_fetch(&seg.name(), &dest);
    out.expect_code(11);
    assert!(!dest.exists());
    assert!(leftovers(&fs.path).is_empty(), "{:?}", leftovers(&fs.path));
}

#[test]
fn deadline_ends_a_stalled_fetch_and_cleans_up() {
    let s = setup();
    let seg = SegSpec { fill: Fill::Random(8), ..SegSpec::new(1) };
    push(&s.repo, &seg.write(&s.wal)).expect_code(0);
    let obj = object_path(&s.repo, &seg.name());
    let saved = s.out.join("saved");
    std::fs::rename(&obj, &saved).unwrap();
    // The object becomes a pipe that delivers part of the data and then stalls, like a hung
    // network file system.
    assert!(std::process::Command::new("mkfifo").arg(&obj).status().unwrap().success());
    let mut writer = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("(head -c 3000000 {}; sleep 20) > {}", saved.display(), obj.display()))
        .spawn()
        .unwrap();
    let dest = s.out.join("RECOVERYXLOG");
    let started = Instant::now();
    let out = walrs(&s.repo).env("WALRS_TIMEOUT", "2").arg_fetch(&seg.name(), &dest);
    let took = started.elapsed();
    out.expect_code(13);
    assert!(took < Duration::from_secs(15), "the deadline must end the command");
    assert!(out.stderr.contains("deadline"), "{}", out.stderr);
    assert!(!dest.exists());
    assert!(leftovers(&s.out).is_empty(), "{:?}", leftovers(&s.out));
    let _ = writer.kill();
    let _ = writer.wait();
}

#[test]
fn abort_on_hard_failure_makes_fetch_fatal_but_not_not_found() {
    let s = setup();
    let seg = SegSpec::new(1);
    push(&s.repo, &seg.write(&s.wal)).expect_code(0);
    let obj = object_path(&s.repo, &seg.name());
    let mut bytes = std::fs::read(&obj).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(&obj, &bytes).unwrap();
    let dest = s.out.join("x");
    walrs(&s.repo)
        .args(["fetch", "--abort-on-hard-failure"])
        .arg(seg.name())
        .arg(&dest)
        .run()
        .expect_code(126);
    walrs(&s.repo)
        .env("WALRS_FETCH_ABORT_ON_HARD_FAILURE", "1")
        .arg_fetch(&seg.name(), &dest)
        .expect_code(126);
    walrs(&s.repo)
        .env("WALRS_FETCH_ABORT_ON_HARD_FAILURE", "1")
        .arg_fetch("000000010000000000000002", &dest)
        .expect_code(1);
    // Pushes ignore the fetch setting, even a malformed one.
    walrs(&s.repo)
        .env("WALRS_FETCH_ABORT_ON_HARD_FAILURE", "maybe")
        .arg_push(&SegSpec::new(2).write(&s.wal))
        .expect_code(0);
    // The config file's setting applies too; an empty variable leaves it in force.
    let cfg = s.out.join("walrs.toml");
    std::fs::write(&cfg, "fetch_abort_on_hard_failure = true\n").unwrap();
    walrs(&s.repo).env("WALRS_CONFIG", &cfg).arg_fetch(&seg.name(), &dest).expect_code(126);
    walrs(&s.repo)
        .env("WALRS_CONFIG", &cfg)
        .env("WALRS_FETCH_ABORT_ON_HARD_FAILURE", "")
        .arg_fetch(&seg.name(), &dest)
        .expect_code(126);
    walrs(&s.repo).env("WALRS_CONFIG", "").arg_fetch(&seg.name(), &dest).expect_code(7);
    assert!(!dest.exists());
}

#[test]
fn config_file_and_precedence() {
    let s = setup();
    let cfg = s.out.join("walrs.toml");
    std::fs::write(
        &cfg,
        format!("repo = \"file://{}\"\ncompression = \"lz4\"\n", s.repo.display()),
    )
    .unwrap();
    let seg = SegSpec::new(1);
    // The file supplies the repository; WALRS_REPO (set by the helper) is removed here.
    walrs(&s.repo)
        .env_remove("WALRS_REPO")
        .env("WALRS_CONFIG", &cfg)
        .arg_push(&seg.write(&s.wal))
        .expect_code(0);
    let obj = std::fs::read(object_path(&s.repo, &seg.name())).unwrap();
    assert_eq!(obj[10], 2, "lz4 from the config file");
    // The environment beats the file; the flag beats the environment.
    let other = s.out.join("other");
    std::fs::create_dir(&other).unwrap();
    walrs(&other).env("WALRS_CONFIG", &cfg).arg_push(&s.wal.join(seg.name())).expect_code(0);
    assert!(other.join("walrs.config").exists());
    let third = s.out.join("third");
    std::fs::create_dir(&third).unwrap();
    walrs(&other)
        .env("WALRS_CONFIG", &cfg)
        .args([
            "--repo".as_ref(),
            third.as_os_str(),
            "push".as_ref(),
            s.wal.join(seg.name()).as_os_str(),
        ])
        .run()
        .expect_code(0);
    assert!(third.join("walrs.config").exists());
    // Errors in the file are configuration errors.
    std::fs::write(&cfg, "repository = \"/x\"\n").unwrap();
    walrs(&s.repo).env("WALRS_CONFIG", &cfg).arg_push(&s.wal.join(seg.name())).expect_code(3);
    walrs(&s.repo)
        .env("WALRS_COMPRESSION", "gzip")
        .arg_push(&s.wal.join(seg.name()))
        .expect_code(3);
}

#[test]
fn concurrent_pushes_of_the_same_segment() {
    let s = setup();
    let seg = SegSpec { fill: Fill::Random(77), ..SegSpec::new(1) };
    let p = seg.write(&s.wal);
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (repo, p) = (s.repo.clone(), p.clone());
            std::thread::spawn(move || push(&repo, &p).code)
        })
        .collect();
    let codes: Vec<i32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(codes.iter().all(|c| *c == 0), "{codes:?}");
    assert!(leftovers(&s.repo).is_empty());
    let dest = s.out.join("x");
    walrs(&s.repo).arg_fetch(&seg.name(), &dest).expect_code(0);
    assert!(std::fs::read(&dest).unwrap() == seg.bytes());
}

#[test]
fn config_twin_is_used_and_repaired() {
    let s = setup();
    push(&s.repo, &SegSpec::new(1).write(&s.wal)).expect_code(0);
    let (cfg, copy) = (s.repo.join("walrs.config"), s.repo.join("walrs.config.copy"));
    let original = std::fs::read(&cfg).unwrap();
    std::fs::remove_file(&copy).unwrap();
    push(&s.repo, &SegSpec::new(2).write(&s.wal)).expect_code(0);
    assert!(copy.exists(), "a push recreates the missing twin");
    // A damaged primary: readers fall back to the twin.
    let mut bad = original.clone();
    let n = bad.len();
    bad[n / 2] ^= 0x10;
    std::fs::write(&cfg, &bad).unwrap();
    let out = walrs(&s.repo).arg_fetch("000000010000000000000001", &s.out.join("x"));
    out.expect_code(0);
    assert!(out.stderr.contains("damaged"), "{}", out.stderr);
    // A missing primary is recreated by the next push.
    std::fs::remove_file(&cfg).unwrap();
    push(&s.repo, &SegSpec::new(3).write(&s.wal)).expect_code(0);
    assert!(cfg.exists());
    // Both damaged: a hard error, never "not found".
    std::fs::write(&cfg, &bad).unwrap();
    std::fs::write(&copy, &bad).unwrap();
    walrs(&s.repo).arg_fetch("000000010000000000000009", &s.out.join("y")).expect_code(7);
}

#[test]
fn a_newer_repository_format_is_unsupported() {
    let s = setup();
    push(&s.repo, &SegSpec::new(1).write(&s.wal)).expect_code(0);
    let cfg_json = r#"{"format": "walrs-repository", "format_version": 2, "something": "new"}"#;
    let enc = walrs::codec::encode_to_vec(
        "walrs.config",
        cfg_json.as_bytes(),
        walrs::codec::Compression::None,
        None,
    )
    .unwrap();
    std::fs::write(s.repo.join("walrs.config"), &enc).unwrap();
    walrs(&s.repo).arg_fetch("000000010000000000000001", &s.out.join("x")).expect_code(15);
    walrs(&s.repo).arg_push(&s.wal.join("000000010000000000000001")).expect_code(15);
}

#[test]
fn abort_on_hard_failure_also_covers_configuration_errors() {
    let s = setup();
    push(&s.repo, &SegSpec::new(1).write(&s.wal)).expect_code(0);
    let dest = s.out.join("x");
    walrs(&s.repo)
        .env("WALRS_TIMEOUT", "soon")
        .env("WALRS_FETCH_ABORT_ON_HARD_FAILURE", "1")
        .arg_fetch("000000010000000000000001", &dest)
        .expect_code(126);
    walrs(&s.repo.join("missing"))
        .args(["fetch", "--abort-on-hard-failure", "000000010000000000000001"])
        .arg(&dest)
        .run()
        .expect_code(126);
    walrs(&s.repo)
        .env("WALRS_FETCH_ABORT_ON_HARD_FAILURE", "maybe")
        .arg_fetch("000000010000000000000001", &dest)
        .expect_code(3);
    // An empty variable is unset, not an error.
    walrs(&s.repo)
        .env("WALRS_TIMEOUT", "")
        .arg_fetch("000000010000000000000001", &dest)
        .expect_code(0);
}

/// What is at `p`, without following a symlink.
fn file_type(p: &Path) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = std::fs::symlink_metadata(p).unwrap().file_type();
    match () {
        _ if t.is_symlink() => "symlink",
        _ if t.is_dir() => "directory",
        _ if t.is_char_device() => "char device",
        _ if t.is_fifo() => "fifo",
        _ if t.is_file() => "file",
        _ => "other",
    }
}

/// Issue 11, items 3 and 8: `fetch` refuses a destination that exists and is not a regular file
/// (a device, a symlink, a directory, a FIFO) and a destination with a trailing slash, with exit
/// 4, before it reads the object: the object of the first segment is damaged, so a fetch that
/// decoded it first would exit 7. Nothing at the destination changes. A regular file is replaced.
#[test]
fn fetch_refuses_a_destination_that_is_not_a_regular_file() {
    let s = setup();
    let (bad, good) = (SegSpec::new(1), SegSpec::new(2));
    push(&s.repo, &bad.write(&s.wal)).expect_code(0);
    push(&s.repo, &good.write(&s.wal)).expect_code(0);
    let obj = object_path(&s.repo, &bad.name());
    let mut bytes = std::fs::read(&obj).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(&obj, &bytes).unwrap();

    // A character device like /dev/null (1, 3), made here rather than touching the real one.
    let dev = s.out.join("null");
    let st = std::process::Command::new("mknod").arg(&dev).args(["c", "1", "3"]).status().unwrap();
    assert!(st.success());
    let target = s.out.join("target");
    std::fs::write(&target, "keep").unwrap();
    let link = s.out.join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let dir = s.out.join("dir");
    std::fs::create_dir(&dir).unwrap();
    let fifo = s.out.join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for (dest, kind) in
        [(&dev, "char device"), (&link, "symlink"), (&dir, "directory"), (&fifo, "fifo")]
    {
        for seg in [&bad, &good] {
            let out = walrs(&s.repo).arg_fetch(&seg.name(), dest);
            out.expect_code(4);
            assert!(out.stderr.contains("not a regular file"), "{}", out.stderr);
            assert_eq!(file_type(dest), kind);
        }
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
    // A trailing slash names a directory, whether one exists there or not.
    let mut slashed = dir.clone().into_os_string();
    slashed.push("/");
    let mut new_slashed = s.out.join("new").into_os_string();
    new_slashed.push("/");
    for dest in [&slashed, &new_slashed] {
        for seg in [&bad, &good] {
            let out = walrs(&s.repo).arg_fetch(&seg.name(), Path::new(dest));
            out.expect_code(4);
            assert!(out.stderr.contains("names a directory"), "{}", out.stderr);
        }
    }
    assert!(!s.out.join("new").exists());
    assert!(leftovers(&s.out).is_empty(), "{:?}", leftovers(&s.out));
    // A regular file is replaced, as always.
    let file = s.out.join("file");
    std::fs::write(&file, "old").unwrap();
    walrs(&s.repo).arg_fetch(&good.name(), &file).expect_code(0);
    assert!(std::fs::read(&file).unwrap() == good.bytes());
}

/// Issue 11, item 3: a segment served from the prefetch spool is moved into `%p` by its own
/// rename: that path refuses a symlink at `%p` too.
#[test]
fn a_prefetched_segment_is_not_moved_over_a_symlink() {
    let s = setup();
    for n in 1..=3 {
        push(&s.repo, &SegSpec::new(n).write(&s.wal)).expect_code(0);
    }
    let data = s.out.join("data");
    let pg_wal = data.join("pg_wal");
    std::fs::create_dir_all(&pg_wal).unwrap();
    let dest = pg_wal.join("RECOVERYXLOG");
    walrs(&s.repo).arg_fetch(&SegSpec::new(1).name(), &dest).expect_code(0);
    let seg2 = SegSpec::new(2).name();
    let meta = data.join("walrs_spool/prefetch").join(format!("{seg2}.meta"));
    let t0 = Instant::now();
    while !meta.exists() {
        assert!(t0.elapsed() < Duration::from_secs(30), "the prefetcher did not fetch {seg2}");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_file(&dest).unwrap();
    let target = s.out.join("target");
    std::fs::write(&target, "keep").unwrap();
    std::os::unix::fs::symlink(&target, &dest).unwrap();
    let out = walrs(&s.repo).arg_fetch(&seg2, &dest);
    out.expect_code(4);
    assert!(out.stderr.contains("not a regular file"), "{}", out.stderr);
    assert_eq!(file_type(&dest), "symlink");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
}

/// Issue 11, item 3: `binlog fetch` installs its file the way `fetch` does, and refuses the same
/// destinations. The binlog namespace is written through the library (no server needed).
#[test]
fn binlog_fetch_refuses_a_destination_that_is_not_a_regular_file() {
    use std::sync::Arc;
    use walrs::mysql::event::ChecksumAlg;
    use walrs::mysql::store::{BinlogStore, Part, ServerIdentity};
    use walrs::repo::Repository;
    use walrs::storage::{AnyStorage, FsStorage};
    let s = setup();
    let repo = Arc::new(Repository::new(AnyStorage::Fs(FsStorage::open(&s.repo).unwrap()), None));
    let server = ServerIdentity {
        flavour: "mariadb".into(),
        server_id: 1,
        server_uuid: None,
        basename: "mysql-bin".into(),
        checksum: ChecksumAlg::Crc32,
        version: "10.11".into(),
    };
    let (store, _) = BinlogStore::open_for(repo, &server, None).unwrap();
    let part = Part { start: 0, end: 4, first_ts: 0, last_ts: 0 };
    store.put_part("mysql-bin.000001", &part, b"\xfebin").unwrap();
    let target = s.out.join("target");
    std::fs::write(&target, "keep").unwrap();
    let link = s.out.join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = walrs(&s.repo)
        .args(["binlog".as_ref(), "fetch".as_ref(), "mysql-bin.000001".as_ref(), link.as_os_str()])
        .run();
    out.expect_code(4);
    assert!(out.stderr.contains("not a regular file"), "{}", out.stderr);
    assert_eq!(file_type(&link), "symlink");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    let file = s.out.join("file");
    walrs(&s.repo)
        .args(["binlog".as_ref(), "fetch".as_ref(), "mysql-bin.000001".as_ref(), file.as_os_str()])
        .run()
        .expect_code(0);
    assert_eq!(std::fs::read(&file).unwrap(), b"\xfebin");
}

/// Issue 11, item 8: a directory named like a segment is not a WAL file: exit 4, not 16.
#[test]
fn pushing_a_directory_is_invalid_input() {
    let s = setup();
    let dir = s.wal.join(SegSpec::new(1).name());
    std::fs::create_dir(&dir).unwrap();
    let out = push(&s.repo, &dir);
    out.expect_code(4);
    assert!(out.stderr.contains("not a regular file"), "{}", out.stderr);
    // The same for a .history name (no header to read first).
    let h = s.wal.join("00000002.history");
    std::fs::create_dir(&h).unwrap();
    push(&s.repo, &SegSpec::new(2).write(&s.wal)).expect_code(0);
    let out = push(&s.repo, &h);
    out.expect_code(4);
    assert!(out.stderr.contains("not a regular file"), "{}", out.stderr);
}

/// Issue 11, item 8: a deadline too long to compute (`WALRS_TIMEOUT`, `--timeout`, the config
/// file's `timeout`) was a panic (exit 101); it is a configuration error (exit 3).
#[test]
fn a_huge_timeout_is_a_configuration_error() {
    let s = setup();
    let seg = SegSpec::new(1);
    push(&s.repo, &seg.write(&s.wal)).expect_code(0);
    let dest = s.out.join("x");
    for v in ["18446744073709551615", "18446744073709551615ms", "5124095576030431h", "9000h"] {
        let out = walrs(&s.repo).env("WALRS_TIMEOUT", v).arg_fetch(&seg.name(), &dest);
        out.expect_code(3);
        assert!(
            out.stderr.contains("timeout") && out.stderr.contains("too long"),
            "{}",
            out.stderr
        );
        walrs(&s.repo).env("WALRS_TIMEOUT", v).arg_push(&s.wal.join(seg.name())).expect_code(3);
        walrs(&s.repo).args(["--timeout", v, "wal", "verify"]).run().expect_code(3);
    }
    let cfg = s.out.join("walrs.toml");
    std::fs::write(&cfg, "timeout = 9223372036854775807\n").unwrap();
    let out = walrs(&s.repo).env("WALRS_CONFIG", &cfg).arg_fetch(&seg.name(), &dest);
    out.expect_code(3);
    assert!(out.stderr.contains("too long"), "{}", out.stderr);
    assert!(!dest.exists());
    // The longest accepted deadline still works.
    walrs(&s.repo).env("WALRS_TIMEOUT", "8760h").arg_fetch(&seg.name(), &dest).expect_code(0);
}

/// Issue 11, item 4: with both config objects gone and WAL stored, a push of another cluster's
/// segment created a config with the foreign system identifier (and then exited 6), after which
/// every fetch of the real cluster exited 7. No push creates a config while the repository holds
/// WAL: exit 14, nothing written; only the twin (or a copy of the config) repairs it.
#[test]
fn no_config_is_created_while_the_repository_holds_wal() {
    let s = setup();
    let a1 = SegSpec::new(1);
    push(&s.repo, &a1.write(&s.wal)).expect_code(0);
    let (cfg, copy) = (s.repo.join("walrs.config"), s.repo.join("walrs.config.copy"));
    let saved_copy = std::fs::read(&copy).unwrap();
    std::fs::remove_file(&cfg).unwrap();
    std::fs::remove_file(&copy).unwrap();
    let other = s.out.join("other");
    std::fs::create_dir(&other).unwrap();
    let foreign = |n: u64| SegSpec {
        sysid: crate::util::wal::SYSID + 1,
        fill: Fill::Pattern(77),
        ..SegSpec::new(n)
    };
    for n in [1, 2] {
        let out = push(&s.repo, &foreign(n).write(&other));
        out.expect_code(14);
        assert!(out.stderr.contains("holds WAL"), "{}", out.stderr);
    }
    // The cluster's own segment too: walrs does not guess which cluster the repository is for.
    push(&s.repo, &SegSpec::new(2).write(&s.wal)).expect_code(14);
    assert!(!cfg.exists() && !copy.exists(), "a config was created");
    assert_eq!(stored_files(&s.repo), vec![format!("wal/{}/{}", &a1.name()[..16], a1.name())]);
    walrs(&s.repo).arg_fetch(&a1.name(), &s.out.join("x")).expect_code(14);
    // The twin put back: the next push recreates the primary, and the archive is whole again.
    std::fs::write(&copy, &saved_copy).unwrap();
    push(&s.repo, &SegSpec::new(2).write(&s.wal)).expect_code(0);
    assert!(cfg.exists());
    walrs(&s.repo).arg_fetch(&a1.name(), &s.out.join("x")).expect_code(0);
    push(&s.repo, &foreign(3).write(&other)).expect_code(5);
}

/// Issue 11, item 8: every log line of a push names the command (`walrs push:`, as push.md
/// promises), the lines of the look-ahead's worker threads and of the background pusher
/// included: PostgreSQL's log interleaves them with its own.
#[test]
fn look_ahead_log_lines_carry_the_push_prefix() {
    let s = setup();
    let pg_wal = s.out.join("data/pg_wal");
    std::fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
    for n in 1..=12 {
        let seg = SegSpec::new(n);
        seg.write(&pg_wal);
        std::fs::write(pg_wal.join(format!("archive_status/{}.ready", seg.name())), "").unwrap();
    }
    // The background pusher writes to the same stderr; `run` reads it to its end.
    let out = walrs(&s.repo)
        .env("WALRS_PUSH_PARALLEL", "4")
        .arg_push(&pg_wal.join(SegSpec::new(1).name()));
    out.expect_code(0);
    assert!(out.stderr.contains("in the background"), "{}", out.stderr);
    let unprefixed: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains(" walrs push: "))
        .collect();
    assert!(unprefixed.is_empty(), "log lines without the prefix:\n{}", unprefixed.join("\n"));
    let archived = out.stderr.matches("archived 0000000100000000000000").count();
    assert!(archived >= 12, "{}", out.stderr);
}

/// Issue 11, item 4: the explicit repair of a repository that lost both config objects:
/// `walrs repo init --from-objects` derives the config from the stored WAL (the oldest and the
/// newest segment must agree) with the configured key, which must open them.
#[test]
fn repo_init_from_objects_recreates_a_lost_config() {
    let s = setup();
    let k = key_b64(4);
    for n in [1, 2, 0x1FF] {
        walrs(&s.repo)
            .env("WALRS_ENCRYPTION_KEY", &k)
            .arg_push(&SegSpec::new(n).write(&s.wal))
            .expect_code(0);
    }
    let (cfg, copy) = (s.repo.join("walrs.config"), s.repo.join("walrs.config.copy"));
    let field = |f: &Path, name: &str| -> serde_json::Value {
        let (json, _) = walrs::codec::decode_to_vec(
            &std::fs::read(f).unwrap(),
            f.file_name().unwrap().to_str().unwrap(),
            None,
        )
        .unwrap();
        serde_json::from_slice::<serde_json::Value>(&json).unwrap()[name].clone()
    };
    let before: Vec<serde_json::Value> =
        ["system_identifier", "pg_version", "wal_segment_size", "wal_block_size", "encryption"]
            .iter()
            .map(|n| field(&cfg, n))
            .collect();
    std::fs::remove_file(&cfg).unwrap();
    std::fs::remove_file(&copy).unwrap();
    walrs(&s.repo).args(["repo", "init"]).run().expect_code(2);
    // Without the key the encrypted segments cannot be read: nothing is created.
    let out = walrs(&s.repo).args(["repo", "init", "--from-objects"]).run();
    out.expect_code(8);
    assert!(!cfg.exists() && !copy.exists());
    let out = walrs(&s.repo)
        .env("WALRS_ENCRYPTION_KEY", &k)
        .args(["repo", "init", "--from-objects"])
        .run();
    out.expect_code(0);
    assert!(out.stdout.contains("recreated the config"), "{}", out.stdout);
    let after: Vec<serde_json::Value> =
        ["system_identifier", "pg_version", "wal_segment_size", "wal_block_size", "encryption"]
            .iter()
            .map(|n| field(&cfg, n))
            .collect();
    assert_eq!(before, after);
    assert!(copy.exists());
    walrs(&s.repo)
        .env("WALRS_ENCRYPTION_KEY", &k)
        .arg_fetch(&SegSpec::new(2).name(), &s.out.join("x"))
        .expect_code(0);
    // Once there is a config, there is nothing to derive.
    walrs(&s.repo)
        .env("WALRS_ENCRYPTION_KEY", &k)
        .args(["repo", "init", "--from-objects"])
        .run()
        .expect_code(0);

    // WAL of two clusters: walrs cannot tell which the repository is for.
    let t = setup();
    push(&t.repo, &SegSpec::new(1).write(&t.wal)).expect_code(0);
    let other = SegSpec { sysid: crate::util::wal::SYSID + 1, ..SegSpec::new(9) };
    let planted = object_path(&t.repo, &other.name());
    std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
    let enc = walrs::codec::encode_to_vec(
        &other.name(),
        &other.bytes(),
        walrs::codec::Compression::Zstd(1),
        None,
    )
    .unwrap();
    std::fs::write(&planted, enc).unwrap();
    std::fs::remove_file(t.repo.join("walrs.config")).unwrap();
    std::fs::remove_file(t.repo.join("walrs.config.copy")).unwrap();
    let out = walrs(&t.repo).args(["repo", "init", "--from-objects"]).run();
    out.expect_code(5);
    assert!(out.stderr.contains("more than one cluster"), "{}", out.stderr);
    assert!(!t.repo.join("walrs.config").exists());
}
