//! Issue 11 ("Integrity holes") and issue 12 ("Guard rails", the storage half) on S3, through the
//! walrs binary as PostgreSQL calls it, against the s3s-fs test server and the fault proxy:
//! writes whose stored bytes differ from those sent are never acknowledged (single PUTs and
//! multipart uploads, MD5 ETags and SSE-KMS-like ones), a byte damaged on the way of a read is
//! read again instead of being reported as a corrupt object, a proxy flipping bytes of request and
//! response bodies yields no false success over hundreds of pushes and fetches, and an unreachable
//! store fails push and fetch after the unreachable timeout, long before their deadlines.
//!
//! Why the server runs with [`Quirks::skip_digest_checks`] in the write tests: s3s checks the
//! signed `x-amz-content-sha256` of every body and s3s-fs the `Content-MD5` and checksum headers,
//! as AWS does, so a body flipped on the way is refused there and the hole cannot be seen. Many
//! S3-compatible stores check none of them; the quirk makes the test server one of those, so a
//! flipped byte is stored and only walrs's own verification stands between it and an exit 0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::proxy::{FaultProxy, HttpFault, Rule};
use crate::util::s3::{Quirks, S3Server};
use crate::util::wal::{Fill, SegSpec};
use crate::util::{Out, Walrs, leftovers, walrs};

use walrs::storage::{BytesBody, ObjectKey, PutOutcome, Storage};

/// A store that keeps whatever body arrives.
const UNCHECKED: Quirks =
    Quirks { skip_digest_checks: true, kms_etags: false, deny_deletes_of: None };

struct Dirs {
    _dir: tempfile::TempDir,
    wal: PathBuf,
    out: PathBuf,
}

fn dirs() -> Dirs {
    let dir = tempfile::tempdir().unwrap();
    let (wal, out) = (dir.path().join("pg_wal"), dir.path().join("out"));
    std::fs::create_dir(&wal).unwrap();
    std::fs::create_dir(&out).unwrap();
    Dirs { wal, out, _dir: dir }
}

/// walrs against `endpoint` (the server or the proxy), repository prefix `prefix`.
fn s3walrs(server: &S3Server, endpoint: &str, prefix: &str) -> Walrs {
    let mut w = walrs(Path::new("/unused")).env("WALRS_REPO", server.url(prefix));
    for (k, v) in server.env() {
        w = w.env(k, v);
    }
    w.env("WALRS_S3_ENDPOINT", endpoint).env("WALRS_S3_REQUEST_TIMEOUT", "5s")
}

fn push(w: Walrs, p: &Path) -> Out {
    w.args(["push".as_ref(), p.as_os_str()]).run()
}

fn fetch(w: Walrs, name: &str, dest: &Path) -> Out {
    w.args(["fetch".as_ref(), name.as_ref(), dest.as_os_str()]).run()
}

/// 1 MiB segments (the smallest PostgreSQL allows), a quarter of them incompressible.
fn small_seg(segno: u64) -> SegSpec {
    let fill = if segno.is_multiple_of(4) { Fill::Random(segno) } else { Fill::Pattern(segno) };
    SegSpec { seg_size: 1 << 20, fill, ..SegSpec::new(segno) }
}

fn wal_key(seg: &SegSpec) -> String {
    format!("wal/{}/{}", &seg.name()[..16], seg.name())
}

/// Whether the object s3s-fs holds for `seg` under `prefix` decodes, verified, to the segment.
fn stored_intact(server: &S3Server, prefix: &str, seg: &SegSpec) -> bool {
    let Ok(bytes) = std::fs::read(server.object_file(prefix, &wal_key(seg))) else {
        return false;
    };
    walrs::codec::decode_to_vec(&bytes, &seg.name(), None)
        .is_ok_and(|(plain, _)| plain == seg.bytes())
}

/// Issue 11, item 1: a PUT body damaged on the way to a store that checks no digest. walrs must
/// see from the store's answer that the bytes kept are not the bytes sent, delete them and write
/// again, and never exit 0 on a damaged object.
#[test]
fn issue_11_damaged_upload_is_never_acknowledged() {
    let server = S3Server::start_with(UNCHECKED);
    let proxy = FaultProxy::start(server.addr);
    let d = dirs();
    let w = |prefix: &str| s3walrs(&server, &proxy.endpoint(), prefix);
    push(w("a"), &small_seg(1).write(&d.wal)).expect_code(0);

    // The first two PUTs of the segment are damaged: the third is stored whole.
    let seg = small_seg(2);
    proxy.add(Rule::new(Some("PUT"), 2, HttpFault::FlipRequestBody).on_path("/wal/"));
    let out = push(w("a"), &seg.write(&d.wal));
    assert_eq!(proxy.flips(), 2, "{}", out.stderr);
    out.expect_code(0);
    assert!(out.stderr.contains("kept other bytes than were sent"), "{}", out.stderr);
    assert!(stored_intact(&server, "a", &seg), "push exited 0 on a damaged object");
    let dest = d.out.join("RECOVERYXLOG");
    fetch(s3walrs(&server, &server.endpoint(), "a"), &seg.name(), &dest).expect_code(0);
    assert!(std::fs::read(&dest).unwrap() == seg.bytes());

    // Every PUT damaged: no exit 0 before the deadline, and the damaged object is gone, so the
    // next push (PostgreSQL's retry) is not stuck on it.
    proxy.clear();
    proxy.add(Rule::new(Some("PUT"), u32::MAX, HttpFault::FlipRequestBody).on_path("/wal/"));
    let seg = small_seg(3);
    let p = seg.write(&d.wal);
    let started = Instant::now();
    let out = push(w("a").env("WALRS_TIMEOUT", "6"), &p);
    assert_eq!(out.code, 12, "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(out.stderr.contains("the damaged object was deleted"), "{}", out.stderr);
    assert!(!server.object_file("a", &wal_key(&seg)).exists(), "the damaged object is left");
    proxy.clear();
    push(w("a"), &p).expect_code(0);
    assert!(stored_intact(&server, "a", &seg));
}

/// Issue 11, item 1, where the ETag is not an MD5 (SSE-KMS): a store that returns the checksum
/// walrs sent proves the write without reading it; one that returns nothing is read back, and a
/// damaged object found that way is deleted and written again.
#[test]
fn issue_11_kms_etags_are_verified_by_checksum_or_read_back() {
    let d = dirs();

    // The store checks and returns x-amz-checksum-sha256: no read-back needed (a GET of the
    // object would meet a 500 and be counted).
    let server = S3Server::start_with(Quirks {
        skip_digest_checks: false,
        kms_etags: true,
        deny_deletes_of: None,
    });
    let proxy = FaultProxy::start(server.addr);
    push(s3walrs(&server, &server.endpoint(), "k"), &small_seg(1).write(&d.wal)).expect_code(0);
    proxy.add(Rule::new(Some("GET"), u32::MAX, HttpFault::Status500).on_path("/wal/"));
    let out = push(s3walrs(&server, &proxy.endpoint(), "k"), &small_seg(2).write(&d.wal));
    out.expect_code(0);
    assert_eq!(proxy.injected(), 0, "no GET of the object was needed: {}", out.stderr);
    assert!(proxy.requests() > 0);
    assert!(stored_intact(&server, "k", &small_seg(2)));

    // The store checks nothing and returns no checksum: the object is read back.
    let server = S3Server::start_with(Quirks {
        skip_digest_checks: true,
        kms_etags: true,
        deny_deletes_of: None,
    });
    let proxy = FaultProxy::start(server.addr);
    let w = || s3walrs(&server, &proxy.endpoint(), "k");
    push(w(), &small_seg(1).write(&d.wal)).expect_code(0);
    let seg = small_seg(2);
    proxy.add(Rule::new(Some("PUT"), 1, HttpFault::FlipRequestBody).on_path("/wal/"));
    let out = push(w(), &seg.write(&d.wal));
    assert_eq!(proxy.flips(), 1);
    out.expect_code(0);
    assert!(out.stderr.contains("read-back of the object differs"), "{}", out.stderr);
    assert!(stored_intact(&server, "k", &seg), "push exited 0 on a damaged object");
}

/// Issue 11, item 1, multipart: a damaged part is sent again when its ETag disagrees; where part
/// ETags prove nothing (SSE-KMS), the completed object is read back and, if damaged, deleted and
/// reported (the body was streamed, so the caller writes again).
#[test]
fn issue_11_multipart_parts_and_object_are_verified() {
    let body: Vec<u8> =
        (0..(20u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let deadline = Duration::from_secs(120);

    let server = S3Server::start_with(UNCHECKED);
    let proxy = FaultProxy::start(server.addr);
    let s3 = server.storage_at(&proxy.endpoint(), "m", deadline);
    // Part 2 of 3 is damaged on its way once.
    proxy.add(
        Rule { skip: 1, ..Rule::new(Some("PUT"), 1, HttpFault::FlipRequestBody) }.on_path("/big"),
    );
    let key = ObjectKey::new("big").unwrap();
    let out = s3.put_if_absent(&key, &mut BytesBody::new(&body)).unwrap();
    assert!(matches!(out, PutOutcome::Created(_)), "{out:?}");
    assert_eq!(proxy.flips(), 1);
    assert!(std::fs::read(server.object_file("m", "big")).unwrap() == body, "damaged object");

    // SSE-KMS-like ETags: part 1 is damaged on both of its sends (its ETag disagrees, so it is
    // sent again, and disagrees again: part ETags prove nothing here); the read-back finds it.
    let server = S3Server::start_with(Quirks {
        skip_digest_checks: true,
        kms_etags: true,
        deny_deletes_of: None,
    });
    let proxy = FaultProxy::start(server.addr);
    let s3 = server.storage_at(&proxy.endpoint(), "m", deadline);
    proxy.add(Rule::new(Some("PUT"), 2, HttpFault::FlipRequestBody).on_path("/big"));
    let err = s3.put_if_absent(&key, &mut BytesBody::new(&body)).unwrap_err();
    assert_eq!(proxy.flips(), 2);
    assert_eq!(err.kind, walrs::storage::ErrorKind::Unavailable, "{err}");
    assert!(err.detail.contains("kept other bytes than were sent"), "{err}");
    assert!(!server.object_file("m", "big").exists(), "the damaged object is left");
    // Without damage the same upload is verified by its read-back and acknowledged.
    proxy.clear();
    let out = s3.put_if_absent(&key, &mut BytesBody::new(&body)).unwrap();
    assert!(matches!(out, PutOutcome::Created(_)), "{out:?}");
    assert!(std::fs::read(server.object_file("m", "big")).unwrap() == body);
}

/// Issue 11, item 5: a byte damaged on the way of a GET is not a corrupt stored object: fetch
/// (and push's comparison with an existing object) read again; a stored object that is really
/// damaged is still reported as corrupt, saying that a re-read agreed.
#[test]
fn issue_11_transient_read_corruption_is_read_again() {
    let server = S3Server::start();
    let proxy = FaultProxy::start(server.addr);
    let d = dirs();
    let w = || s3walrs(&server, &proxy.endpoint(), "r");
    let seg = SegSpec { fill: Fill::Random(9), ..SegSpec::new(1) };
    let p = seg.write(&d.wal);
    push(w(), &p).expect_code(0);

    proxy.add(Rule::new(Some("GET"), 1, HttpFault::FlipResponseBody).on_path("/wal/"));
    let dest = d.out.join("RECOVERYXLOG");
    let out = fetch(w(), &seg.name(), &dest);
    assert_eq!(proxy.flips(), 1);
    out.expect_code(0);
    assert!(std::fs::read(&dest).unwrap() == seg.bytes());
    assert!(out.stderr.contains("a re-read verified it"), "{}", out.stderr);

    // PostgreSQL pushing the segment again: the comparison reads the object, damaged once.
    proxy.add(Rule::new(Some("GET"), 1, HttpFault::FlipResponseBody).on_path("/wal/"));
    let out = push(w(), &p);
    assert_eq!(proxy.flips(), 2);
    out.expect_code(0);
    assert!(out.stderr.contains("identical content"), "{}", out.stderr);

    // Damage in the store itself: both reads fail alike, and the message says so.
    let obj = server.object_file("r", &wal_key(&seg));
    let mut bytes = std::fs::read(&obj).unwrap();
    let n = bytes.len();
    bytes[n / 3] ^= 0x10;
    std::fs::write(&obj, &bytes).unwrap();
    let out = fetch(w(), &seg.name(), &d.out.join("x"));
    out.expect_code(7);
    assert!(out.stderr.contains("re-read agreed"), "{}", out.stderr);
    assert!(!d.out.join("x").exists());
    assert!(leftovers(&d.out).is_empty(), "{:?}", leftovers(&d.out));
}

/// Issue 11, tests: a proxy flipping bytes of request and response bodies, 200 pushes and 200
/// fetches through the binary. A false success is an exit 0 from push while the stored object
/// does not decode to the segment, or from fetch with other content than the segment's.
#[test]
fn issue_11_byte_flips_yield_no_false_success() {
    const N: u64 = 200;
    const THREADS: u64 = 4;
    let server = S3Server::start_with(UNCHECKED);
    let proxy = FaultProxy::start(server.addr);
    let d = dirs();
    let started = Instant::now();
    push(s3walrs(&server, &server.endpoint(), "f"), &small_seg(1000).write(&d.wal)).expect_code(0);
    let segs: Vec<SegSpec> = (1..=N).map(small_seg).collect();
    for s in &segs {
        s.write(&d.wal);
    }

    // Pushes: half the uploads of a segment are damaged on the way, and a third of the reads of
    // one (read-backs, comparisons).
    proxy.add(
        Rule::new(Some("PUT"), u32::MAX, HttpFault::FlipRequestBody).on_path("/wal/").percent(50),
    );
    proxy.add(
        Rule::new(Some("GET"), u32::MAX, HttpFault::FlipResponseBody).on_path("/wal/").percent(33),
    );
    let run = |op: &'static str| -> BTreeMap<i32, u64> {
        let exits = std::sync::Mutex::new(BTreeMap::new());
        let false_successes = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|sc| {
            for t in 0..THREADS {
                let (segs, exits, fs, server, proxy, d) =
                    (&segs, &exits, &false_successes, &server, &proxy, &d);
                sc.spawn(move || {
                    for seg in segs.iter().skip(t as usize).step_by(THREADS as usize) {
                        let w = s3walrs(server, &proxy.endpoint(), "f");
                        let code = if op == "push" {
                            let out = push(w, &d.wal.join(seg.name()));
                            if out.code == 0 && !stored_intact(server, "f", seg) {
                                eprintln!("FALSE SUCCESS: push {}: {}", seg.name(), out.stderr);
                                fs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                            out.code
                        } else {
                            let dest = d.out.join(seg.name());
                            let out = fetch(w, &seg.name(), &dest);
                            if out.code == 0 && std::fs::read(&dest).unwrap() != seg.bytes() {
                                eprintln!("FALSE SUCCESS: fetch {}: {}", seg.name(), out.stderr);
                                fs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                            if out.code != 0 {
                                assert!(!dest.exists(), "fetch {} left a file", seg.name());
                            }
                            out.code
                        };
                        *exits.lock().unwrap().entry(code).or_insert(0) += 1;
                    }
                });
            }
        });
        let mut exits = exits.into_inner().unwrap();
        exits.insert(-1, false_successes.into_inner());
        exits
    };
    let push_exits = run("push");
    let push_flips = proxy.flips();
    // Pushes that failed are repeated without faults, as PostgreSQL would. An object stored
    // damaged stays so for good (write-once; the repeated push fails on it): counted, then removed
    // behind walrs's back so that every segment is in the store for the fetches.
    proxy.clear();
    let mut stuck = 0;
    for seg in &segs {
        let clean = || push(s3walrs(&server, &server.endpoint(), "f"), &d.wal.join(seg.name()));
        if !stored_intact(&server, "f", seg)
            && (clean().code != 0 || !stored_intact(&server, "f", seg))
        {
            stuck += 1;
            let _ = std::fs::remove_file(server.object_file("f", &wal_key(seg)));
            clean().expect_code(0);
        }
    }
    proxy.add(
        Rule::new(Some("GET"), u32::MAX, HttpFault::FlipResponseBody).on_path("/wal/").percent(50),
    );
    let fetch_exits = run("fetch");
    let fetch_flips = proxy.flips() - push_flips;

    let show = |m: &BTreeMap<i32, u64>| {
        m.iter()
            .filter(|(c, _)| **c >= 0)
            .map(|(c, n)| format!("exit {c}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let line = format!(
        "pushes {N}, flips injected {push_flips} ({}), false successes {}, objects damaged for good {stuck}; fetches {N}, flips injected {fetch_flips} ({}), false successes {}; {:.1} s",
        show(&push_exits),
        push_exits[&-1],
        show(&fetch_exits),
        fetch_exits[&-1],
        started.elapsed().as_secs_f64()
    );
    crate::util::report_faults(
        "s3_integrity::issue_11_byte_flips_yield_no_false_success",
        proxy.injected(),
        &line,
    );
    assert_eq!(push_exits[&-1], 0, "false successes of push: {line}");
    assert_eq!(stuck, 0, "objects damaged for good: {line}");
    assert_eq!(fetch_exits[&-1], 0, "false successes of fetch: {line}");
    // The faults did happen, and were survived: damaged uploads are written again, damaged reads
    // read again.
    assert!(push_flips >= N / 3 && fetch_flips >= N / 3, "{line}");
    assert!(push_exits.get(&0).copied().unwrap_or(0) >= N * 95 / 100, "{line}");
    assert!(fetch_exits.get(&0).copied().unwrap_or(0) >= N / 2, "{line}");
    for (code, _) in fetch_exits.iter().filter(|(c, _)| **c > 0) {
        assert!(matches!(code, 7 | 12), "fetch exit {code}: {line}");
    }
    assert!(leftovers(&d.out).is_empty(), "{:?}", leftovers(&d.out));
}

/// Issue 12, item 7: with the store refusing, stalling or failing every request, push and fetch
/// exit 12 once it has not answered for the unreachable timeout (3 s here), long before their
/// deadline (60 s here; 600 s and 300 s by default); the default budget is 60 s.
#[test]
fn issue_12_unreachable_store_fails_within_the_unreachable_timeout() {
    let mut server = S3Server::start();
    let proxy = FaultProxy::start(server.addr);
    let d = dirs();
    let seg = SegSpec::new(1);
    push(s3walrs(&server, &server.endpoint(), "u"), &seg.write(&d.wal)).expect_code(0);
    let fresh = SegSpec::new(2).write(&d.wal);
    let budget = Duration::from_secs(3);
    let (url, env) = (server.url("u"), server.env());
    let w = |endpoint: &str| {
        let mut w = walrs(Path::new("/unused")).env("WALRS_REPO", &url);
        for (k, v) in &env {
            w = w.env(k, v);
        }
        w.env("WALRS_S3_ENDPOINT", endpoint)
            .env("WALRS_TIMEOUT", "60")
            .env("WALRS_S3_REQUEST_TIMEOUT", "2s")
            .env("WALRS_UNREACHABLE_TIMEOUT", "3s")
    };
    let check = |what: &str, endpoint: &str| {
        let started = Instant::now();
        let out = push(w(endpoint), &fresh);
        let took = started.elapsed();
        assert_eq!(out.code, 12, "{what}: push: {}", out.stderr);
        assert!(took >= budget / 2 && took < Duration::from_secs(20), "{what}: push took {took:?}");
        assert!(out.stderr.contains("unreachable timeout"), "{what}: {}", out.stderr);
        let dest = d.out.join("RECOVERYXLOG");
        let started = Instant::now();
        let out = fetch(w(endpoint), &seg.name(), &dest);
        let took = started.elapsed();
        assert_eq!(out.code, 12, "{what}: fetch: {}", out.stderr);
        assert!(
            took >= budget / 2 && took < Duration::from_secs(20),
            "{what}: fetch took {took:?}"
        );
        assert!(!dest.exists() && leftovers(&d.out).is_empty());
        eprintln!(
            "{what}: push and fetch exit 12 after {took:?} (budget {budget:?}, deadline 60 s)"
        );
    };
    for fault in [HttpFault::Refuse, HttpFault::Stall, HttpFault::SlowDown] {
        proxy.clear();
        proxy.add(Rule::new(None, u32::MAX, fault));
        check(&format!("{fault:?}"), &proxy.endpoint());
    }
    let endpoint = server.endpoint();
    server.stop();
    check("server stopped", &endpoint);

    // The default, without waiting a minute for it.
    let help = walrs(Path::new("/unused")).args(["push", "--help"]).run();
    help.expect_code(0);
    assert!(help.stdout.contains("--unreachable-timeout"), "{}", help.stdout);
    assert!(help.stdout.contains("WALRS_UNREACHABLE_TIMEOUT"), "{}", help.stdout);
    assert!(help.stdout.contains("default 60s"), "{}", help.stdout);
    assert_eq!(walrs::storage::s3::DEFAULT_UNREACHABLE_TIMEOUT, Duration::from_secs(60));
}
