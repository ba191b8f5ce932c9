//! Issue 11, item 2: an object whose encryption is not the repository's (an unencrypted object in
//! an encrypted repository, an encrypted one in an unencrypted repository, one encrypted with
//! another key) is a foreign object. Every reader refuses it as corrupt (exit 7), `wal verify`
//! reports it as a security problem without the `wal index --rebuild` hint, and the rebuild does
//! not index it. The forgeries below hold the genuine content of the cluster's own objects, under
//! their own names, so that only the encryption gives them away. Objects of every kind are
//! planted: WAL, history, index summary, backup manifest and backup chunk.

use std::path::{Path, PathBuf};

use walrs::codec::{Compression, MasterKey, decode_to_vec, encode_to_vec};

use crate::util::pg::{PgCluster, PgWorld};
use crate::util::wal::SegSpec;
use crate::util::{Walrs, chown_to_test_user, key_b64, walrs};

fn key(seed: u8) -> MasterKey {
    MasterKey::from_base64(&key_b64(seed)).unwrap()
}

/// Rewrites the object at `path` (logical name `name`, readable with `from`) with the same
/// content, encrypted with `to` (or not at all): what someone who can write to the repository
/// can plant.
fn reencode(path: &Path, name: &str, from: Option<&MasterKey>, to: Option<&MasterKey>) {
    let (plain, _) = decode_to_vec(&std::fs::read(path).unwrap(), name, from).unwrap();
    std::fs::write(path, encode_to_vec(name, &plain, Compression::Zstd(1), to).unwrap()).unwrap();
}

struct Setup {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    wal: PathBuf,
    out: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (repo, wal, out) =
        (dir.path().join("repo"), dir.path().join("pg_wal"), dir.path().join("out"));
    for d in [&repo, &wal, &out] {
        std::fs::create_dir(d).unwrap();
    }
    Setup { _dir: dir, repo, wal, out }
}

fn wal_object(repo: &Path, name: &str) -> PathBuf {
    if name.ends_with(".history") {
        return repo.join("wal/history").join(name);
    }
    repo.join("wal").join(&name[..16]).join(name)
}

fn summary_object(repo: &Path, name: &str) -> PathBuf {
    repo.join("index/seg").join(&name[..16]).join(name)
}

fn with_key(repo: &Path, k: Option<u8>) -> Walrs {
    let w = walrs(repo);
    match k {
        Some(seed) => w.env("WALRS_ENCRYPTION_KEY", key_b64(seed)),
        None => w,
    }
}

/// Pushes segments 1 to 3 and `00000002.history` with `k`.
fn archive(s: &Setup, k: Option<u8>) {
    for n in 1..=3 {
        with_key(&s.repo, k)
            .args(["push".as_ref(), SegSpec::new(n).write(&s.wal).as_os_str()])
            .run()
            .expect_code(0);
    }
    let h = s.wal.join("00000002.history");
    std::fs::write(&h, "1\t0/3000000\tno recovery target specified\n").unwrap();
    with_key(&s.repo, k).args(["push".as_ref(), h.as_os_str()]).run().expect_code(0);
}

fn fetch(s: &Setup, k: Option<u8>, name: &str) -> crate::util::Out {
    let dest = s.out.join(name);
    let out = with_key(&s.repo, k).args(["fetch".as_ref(), name.as_ref(), dest.as_os_str()]).run();
    if out.code != 0 {
        assert!(!dest.exists(), "{name}: a failed fetch left {}", dest.display());
    }
    out
}

/// The lines of `wal verify`'s report whose kind is `kind`.
fn verify_lines(out: &crate::util::Out, kind: &str) -> Vec<String> {
    out.stdout.lines().filter(|l| l.starts_with(&format!("{kind}: "))).map(str::to_owned).collect()
}

#[test]
fn unencrypted_objects_planted_in_an_encrypted_repository_are_refused() {
    let s = setup();
    let k1 = key(1);
    archive(&s, Some(1));
    let (seg2, seg3) = (SegSpec::new(2).name(), SegSpec::new(3).name());
    reencode(&wal_object(&s.repo, &seg2), &seg2, Some(&k1), None);
    reencode(&wal_object(&s.repo, "00000002.history"), "00000002.history", Some(&k1), None);
    let idx = format!("index:{seg3}");
    reencode(&summary_object(&s.repo, &seg3), &idx, Some(&k1), None);

    // fetch: exit 7, nothing delivered; the untouched objects still come back.
    for name in [seg2.as_str(), "00000002.history"] {
        let out = fetch(&s, Some(1), name);
        out.expect_code(7);
        assert!(out.stderr.contains(&format!("foreign object {name}")), "{}", out.stderr);
        assert!(out.stderr.contains("not encrypted"), "{}", out.stderr);
    }
    fetch(&s, Some(1), &SegSpec::new(1).name()).expect_code(0);
    fetch(&s, Some(1), &seg3).expect_code(0);

    // wal verify: a security problem for each, and never the rebuild hint for them.
    let v = with_key(&s.repo, Some(1)).args(["wal", "verify"]).run();
    v.expect_code(18);
    let security = verify_lines(&v, "security");
    for name in [seg2.as_str(), "00000002.history", seg3.as_str()] {
        let line = security.iter().find(|l| l.starts_with(&format!("security: {name}: ")));
        let line = line.unwrap_or_else(|| panic!("no security problem for {name}:\n{}", v.stdout));
        assert!(line.contains("foreign object"), "{line}");
        assert!(!line.contains("--rebuild"), "{line}");
    }
    assert_eq!(security.len(), 3, "{}", v.stdout);
    assert!(!v.stdout.contains("--rebuild"), "{}", v.stdout);

    // The rebuild does not take the planted segment in, and replaces the planted summary with
    // one computed from the authenticated segment.
    let r = with_key(&s.repo, Some(1)).args(["wal", "index", "--rebuild"]).run();
    r.expect_code(0);
    assert!(r.stderr.contains(&format!("{seg2}: not indexed: foreign object")), "{}", r.stderr);
    let v = with_key(&s.repo, Some(1)).args(["wal", "verify"]).run();
    v.expect_code(18);
    let security = verify_lines(&v, "security");
    assert!(
        security.len() == 2
            && security.iter().any(|l| l.starts_with(&format!("security: {seg2}: ")))
            && security.iter().any(|l| l.starts_with("security: 00000002.history: ")),
        "{}",
        v.stdout
    );
    assert!(verify_lines(&v, "index").is_empty(), "{}", v.stdout);
}

#[test]
fn an_encrypted_object_planted_in_an_unencrypted_repository_is_refused() {
    let s = setup();
    archive(&s, None);
    let seg2 = SegSpec::new(2).name();
    reencode(&wal_object(&s.repo, &seg2), &seg2, None, Some(&key(2)));
    let out = fetch(&s, None, &seg2);
    out.expect_code(7);
    assert!(out.stderr.contains(&format!("foreign object {seg2}")), "{}", out.stderr);
    assert!(out.stderr.contains("is not encrypted"), "{}", out.stderr);
    let v = with_key(&s.repo, None).args(["wal", "verify"]).run();
    v.expect_code(18);
    let security = verify_lines(&v, "security");
    assert!(
        security.len() == 1
            && security[0].starts_with(&format!("security: {seg2}: foreign object")),
        "{}",
        v.stdout
    );
}

/// Issue 11, item 8: `fetch` called an object encrypted with another key a "wrong encryption
/// key" (8) and `wal verify` called it "corrupt". The configured key is the repository's, so the
/// object is foreign: both say so, in the same words.
#[test]
fn an_object_encrypted_with_another_key_is_a_foreign_object_for_every_reader() {
    let s = setup();
    archive(&s, Some(1));
    let seg2 = SegSpec::new(2).name();
    reencode(&wal_object(&s.repo, &seg2), &seg2, Some(&key(1)), Some(&key(3)));
    let out = fetch(&s, Some(1), &seg2);
    out.expect_code(7);
    let line = out.stderr.lines().find(|l| l.contains("foreign object")).unwrap_or_else(|| {
        panic!("fetch does not name the foreign object:\n{}", out.stderr);
    });
    // The message itself, without the log prefix and the hint.
    let msg = line.split("walrs fetch: ").nth(1).unwrap().split(" (hint:").next().unwrap();
    assert!(msg.contains(&key(3).id().to_string()), "{msg}");
    let v = with_key(&s.repo, Some(1)).args(["wal", "verify"]).run();
    v.expect_code(18);
    assert!(
        v.stdout.lines().any(|l| l == format!("security: {seg2}: {msg}")),
        "wal verify does not report what fetch reported ({msg}):\n{}",
        v.stdout
    );
    assert!(!v.stdout.contains("corrupt:"), "{}", v.stdout);
}

/// Backup objects: a planted manifest and a planted chunk, in an encrypted repository of a real
/// PostgreSQL 15.
#[test]
fn unencrypted_backup_objects_planted_in_an_encrypted_repository_are_refused() {
    let world = PgWorld::new();
    let repo = world.mkdir("repo");
    let key_file = world.path("key");
    std::fs::write(&key_file, key_b64(9)).unwrap();
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap();
    chown_to_test_user(&key_file);
    let archive = format!(
        "archive_mode = on\narchive_command = 'WALRS_REPO={} WALRS_ENCRYPTION_KEY_FILE={} {} push %p'\n",
        repo.display(),
        key_file.display(),
        world.walrs.display()
    );
    let mut a = PgCluster::init(&world, "a", &archive);
    a.start();
    a.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let run = |args: &[&str]| {
        Walrs::new(&world.walrs)
            .env("WALRS_REPO", &repo)
            .env("WALRS_ENCRYPTION_KEY_FILE", &key_file)
            .args(args)
            .run()
    };
    let (u, g) = crate::util::test_user();
    let bb = Walrs::new(&world.walrs)
        .env("WALRS_REPO", &repo)
        .env("WALRS_ENCRYPTION_KEY_FILE", &key_file)
        .run_as(u, g)
        .args([
            "basebackup",
            "-d",
            &format!("host={} port={} user=postgres", a.sock.display(), a.port),
        ])
        .run();
    bb.expect_code(0);
    let id = bb.stdout.trim().to_string();
    a.stop();
    run(&["backup", "verify", &id]).expect_code(0);
    let k = key(9);

    // The manifest: every reader of the catalogue refuses it.
    let manifest = format!("backups/{id}/manifest.json");
    let genuine = std::fs::read(repo.join(&manifest)).unwrap();
    reencode(&repo.join(&manifest), &manifest, Some(&k), None);
    for args in [vec!["backup", "list"], vec!["backup", "show", &id], vec!["backup", "verify", &id]]
    {
        let out = run(&args);
        out.expect_code(7);
        assert!(
            out.stderr.contains(&format!("foreign object {manifest}")),
            "{args:?}: {}",
            out.stderr
        );
    }
    let dest = world.path("restored-1");
    let out = run(&["restore", "--pgdata", dest.to_str().unwrap()]);
    out.expect_code(7);
    assert!(out.stderr.contains("foreign object"), "{}", out.stderr);
    std::fs::write(repo.join(&manifest), genuine).unwrap();

    // A chunk: backup verify reports it, restore refuses it and removes what it wrote.
    let chunk = format!("backups/{id}/base.tar/000000");
    reencode(&repo.join(&chunk), &chunk, Some(&k), None);
    let v = run(&["backup", "verify", &id]);
    v.expect_code(18);
    assert!(v.stdout.contains(&format!("{chunk}: foreign object {chunk}")), "{}", v.stdout);
    let dest = world.path("restored-2");
    let out = run(&["restore", "--pgdata", dest.to_str().unwrap()]);
    out.expect_code(7);
    assert!(out.stderr.contains(&format!("foreign object {chunk}")), "{}", out.stderr);
    assert!(
        std::fs::read_dir(&dest).map(|d| d.count()).unwrap_or(0) == 0,
        "restore left files in {}",
        dest.display()
    );
}
