//! walrs on an S3 repository, through the binary, against a real S3-compatible server started by
//! the test (s3s-fs over HTTP on 127.0.0.1, SigV4 checked): the push/fetch contract, permanent
//! errors, and faults injected by an HTTP proxy in front of the server (500, 503 SlowDown, reset
//! mid-body, stall, truncated body, refused connections, the server stopped).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::proxy::{FaultProxy, HttpFault, Rule};
use crate::util::s3::S3Server;
use crate::util::wal::{Fill, SegSpec};
use crate::util::{Out, Walrs, key_b64, leftovers, walrs};

struct Env {
    _dir: tempfile::TempDir,
    wal: PathBuf,
    out: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("pg_wal");
    let out = dir.path().join("out");
    std::fs::create_dir(&wal).unwrap();
    std::fs::create_dir(&out).unwrap();
    Env { wal, out, _dir: dir }
}

/// walrs against `endpoint` (the server or a proxy in front of it), repository prefix `prefix`.
fn s3walrs(server: &S3Server, endpoint: &str, prefix: &str) -> Walrs {
    let mut w = walrs(Path::new("/unused")).env("WALRS_REPO", server.url(prefix));
    for (k, v) in server.env() {
        w = w.env(k, v);
    }
    w.env("WALRS_S3_ENDPOINT", endpoint).env("WALRS_S3_REQUEST_TIMEOUT", "2s")
}

fn push(w: Walrs, p: &Path) -> Out {
    w.args(["push".as_ref(), p.as_os_str()]).run()
}

fn fetch(w: Walrs, name: &str, dest: &Path) -> Out {
    w.args(["fetch".as_ref(), name.as_ref(), dest.as_os_str()]).run()
}

#[test]
fn push_fetch_contract_on_s3() {
    let server = S3Server::start();
    let e = env();
    let w = || s3walrs(&server, &server.endpoint(), "contract");
    let seg = SegSpec { fill: Fill::Random(1), ..SegSpec::new(1) };
    let p = seg.write(&e.wal);
    push(w(), &p).expect_code(0);
    assert!(server.object_file("contract", "walrs.config").exists());
    let obj = server.object_file("contract", &format!("wal/{}/{}", &seg.name()[..16], seg.name()));
    assert!(obj.exists(), "{}", obj.display());
    let dest = e.out.join("RECOVERYXLOG");
    fetch(w(), &seg.name(), &dest).expect_code(0);
    assert!(std::fs::read(&dest).unwrap() == seg.bytes());
    // Idempotent re-push, refused different content, not found.
    let again = push(w(), &p);
    again.expect_code(0);
    assert!(again.stderr.contains("identical content"), "{}", again.stderr);
    let other = SegSpec { fill: Fill::Random(2), ..SegSpec::new(1) };
    push(w(), &other.write(&e.wal)).expect_code(6);
    fetch(w(), "000000010000000000000002", &e.out.join("x")).expect_code(1);
    assert!(!e.out.join("x").exists());
    // A flipped byte in the stored object.
    let mut bytes = std::fs::read(&obj).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(&obj, &bytes).unwrap();
    fetch(w(), &seg.name(), &e.out.join("y")).expect_code(7);
    assert!(!e.out.join("y").exists());
    assert!(leftovers(&e.out).is_empty());
    // An empty prefix works too, and encryption.
    let k = key_b64(3);
    let enc = || s3walrs(&server, &server.endpoint(), "enc").env("WALRS_ENCRYPTION_KEY", &k);
    push(enc(), &SegSpec::new(2).write(&e.wal)).expect_code(0);
    fetch(enc(), "000000010000000000000002", &e.out.join("z")).expect_code(0);
    fetch(
        s3walrs(&server, &server.endpoint(), "enc"),
        "000000010000000000000002",
        &e.out.join("w"),
    )
    .expect_code(8);
}

#[test]
fn permanent_errors_fail_at_once_with_their_own_codes() {
    let server = S3Server::start();
    let e = env();
    let p = SegSpec::new(1).write(&e.wal);
    let started = Instant::now();
    let out = push(
        s3walrs(&server, &server.endpoint(), "x").env("AWS_SECRET_ACCESS_KEY", "wrong-secret"),
        &p,
    );
    out.expect_code(17);
    let out2 = fetch(
        s3walrs(&server, &server.endpoint(), "x").env("AWS_ACCESS_KEY_ID", "nobody"),
        "000000010000000000000001",
        &e.out.join("x"),
    );
    out2.expect_code(17);
    let missing = walrs(Path::new("/unused"))
        .env("WALRS_REPO", "s3://no-such-bucket/x")
        .env("WALRS_S3_ENDPOINT", server.endpoint())
        .env("AWS_ACCESS_KEY_ID", crate::util::s3::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", crate::util::s3::SECRET_KEY);
    let out3 = push(missing, &p);
    out3.expect_code(3);
    assert!(out3.stderr.contains("NoSuchBucket"), "{}", out3.stderr);
    let no_creds = walrs(Path::new("/unused"))
        .env("WALRS_REPO", server.url("x"))
        .env("WALRS_S3_ENDPOINT", server.endpoint())
        .env("HOME", "/nonexistent")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SHARED_CREDENTIALS_FILE");
    push(no_creds, &p).expect_code(3);
    assert!(started.elapsed() < Duration::from_secs(20), "permanent errors are not retried");
    assert!(!out.stderr.contains("retrying"), "{}", out.stderr);
}

/// Every fault, injected a few times: push and fetch retry and succeed with whole, verified data.
#[test]
fn transient_faults_are_retried() {
    let server = S3Server::start();
    let proxy = FaultProxy::start(server.addr);
    let e = env();
    let faults = [
        HttpFault::Status500,
        HttpFault::SlowDown,
        HttpFault::ResetMidBody,
        HttpFault::Stall,
        HttpFault::TruncateBody,
        HttpFault::Refuse,
    ];
    for (i, fault) in faults.into_iter().enumerate() {
        let prefix = format!("t{i}");
        let seg = SegSpec { fill: Fill::Random(i as u64 + 10), ..SegSpec::new(1) };
        let p = seg.write(&e.wal);
        // Set up the repository without faults, then fault the segment's own requests.
        push(s3walrs(&server, &server.endpoint(), &prefix), &SegSpec::new(7).write(&e.wal))
            .expect_code(0);
        for method in ["PUT", "GET"] {
            proxy.clear();
            proxy.add(Rule::new(Some(method), 2, fault));
            let w = s3walrs(&server, &proxy.endpoint(), &prefix).env("WALRS_TIMEOUT", "60");
            if method == "PUT" {
                let out = push(w, &p);
                out.expect_code(0);
                assert!(
                    out.stderr.contains("retrying") || out.stderr.contains("identical"),
                    "{fault:?}: {}",
                    out.stderr
                );
            } else {
                let dest = e.out.join(format!("{i}"));
                let out = fetch(w, &seg.name(), &dest);
                out.expect_code(0);
                assert!(
                    std::fs::read(&dest).unwrap() == seg.bytes(),
                    "{fault:?}: fetched bytes differ"
                );
            }
        }
        // Whatever happened on the way, the stored object is whole.
        let dest = e.out.join(format!("check{i}"));
        fetch(s3walrs(&server, &server.endpoint(), &prefix), &seg.name(), &dest).expect_code(0);
        assert!(std::fs::read(&dest).unwrap() == seg.bytes());
    }
    assert!(leftovers(&e.out).is_empty());
    crate::util::report_faults(
        "s3::transient_faults_are_retried",
        proxy.injected(),
        &format!("HTTP proxy, {} requests", proxy.requests()),
    );
    assert!(proxy.injected() >= 12 * 2 - 4, "faults were injected: {}", proxy.injected());
}

/// Faults that never stop: push never exits 0, fetch never leaves a file, neither outlives its
/// deadline, and the failure is the documented "unreachable" code (or 126 when asked).
#[test]
fn persistent_faults_fail_cleanly_within_the_deadline() {
    let server = S3Server::start();
    let proxy = FaultProxy::start(server.addr);
    let e = env();
    let seg = SegSpec { fill: Fill::Random(5), ..SegSpec::new(1) };
    let p = seg.write(&e.wal);
    push(s3walrs(&server, &server.endpoint(), "p"), &p).expect_code(0);
    let fresh = SegSpec { fill: Fill::Random(6), ..SegSpec::new(2) };
    let fresh_path = fresh.write(&e.wal);
    let deadline = 5;
    for fault in [
        HttpFault::Status500,
        HttpFault::SlowDown,
        HttpFault::ResetMidBody,
        HttpFault::Stall,
        HttpFault::TruncateBody,
        HttpFault::Refuse,
    ] {
        proxy.clear();
        proxy.add(Rule::new(None, u32::MAX, fault));
        let w = || {
            s3walrs(&server, &proxy.endpoint(), "p")
                .env("WALRS_TIMEOUT", deadline.to_string())
                .env("WALRS_S3_REQUEST_TIMEOUT", "1s")
        };
        let started = Instant::now();
        let out = push(w(), &fresh_path);
        let took = started.elapsed();
        assert_ne!(out.code, 0, "{fault:?}: push must not succeed");
        assert!(matches!(out.code, 12 | 13), "{fault:?}: exit {}: {}", out.code, out.stderr);
        assert!(took < Duration::from_secs(deadline + 3), "{fault:?}: push took {took:?}");
        let dest = e.out.join("RECOVERYXLOG");
        let started = Instant::now();
        let out = fetch(w(), &seg.name(), &dest);
        let took = started.elapsed();
        assert_eq!(out.code, 12, "{fault:?}: {}", out.stderr);
        assert!(took < Duration::from_secs(deadline + 3), "{fault:?}: fetch took {took:?}");
        assert!(!dest.exists(), "{fault:?}: a file was left at the destination");
        assert!(leftovers(&e.out).is_empty(), "{fault:?}: {:?}", leftovers(&e.out));
        let abort = w()
            .args([
                "fetch".as_ref(),
                "--abort-on-hard-failure".as_ref(),
                seg.name().as_ref(),
                dest.as_os_str(),
            ])
            .run();
        assert_eq!(abort.code, 126, "{fault:?}: {}", abort.stderr);
    }
    crate::util::report_faults(
        "s3::persistent_faults_fail_cleanly_within_the_deadline",
        proxy.injected(),
        &format!("HTTP proxy, {} requests", proxy.requests()),
    );
    // The segment pushed through faults never became a partial object.
    proxy.clear();
    let dest = e.out.join("fresh");
    let out = fetch(s3walrs(&server, &server.endpoint(), "p"), &fresh.name(), &dest);
    if out.code == 0 {
        assert!(std::fs::read(&dest).unwrap() == fresh.bytes(), "an object that exists is whole");
    } else {
        out.expect_code(1);
    }
}

#[test]
fn server_stopped_then_back() {
    let mut server = S3Server::start();
    let e = env();
    let seg = SegSpec::new(1);
    push(s3walrs(&server, &server.endpoint(), "s"), &seg.write(&e.wal)).expect_code(0);
    server.stop();
    let (url_env, endpoint) = (server.url("s"), server.endpoint());
    let w = || {
        let mut w =
            walrs(Path::new("/unused")).env("WALRS_REPO", &url_env).env("WALRS_TIMEOUT", "5");
        w = w.env("WALRS_S3_ENDPOINT", &endpoint).env("WALRS_S3_REQUEST_TIMEOUT", "2s");
        w.env("AWS_ACCESS_KEY_ID", crate::util::s3::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", crate::util::s3::SECRET_KEY)
    };
    let started = Instant::now();
    fetch(w(), &seg.name(), &e.out.join("x")).expect_code(12);
    assert!(started.elapsed() < Duration::from_secs(9));
    push(w(), &SegSpec::new(2).write(&e.wal)).expect_code(12);
    assert!(!e.out.join("x").exists());
    server.restart();
    fetch(w(), &seg.name(), &e.out.join("x")).expect_code(0);
    push(w(), &e.wal.join(SegSpec::new(2).name())).expect_code(0);
}

#[test]
fn racing_pushes_of_one_segment() {
    let server = S3Server::start();
    let e = env();
    push(s3walrs(&server, &server.endpoint(), "r"), &SegSpec::new(1).write(&e.wal)).expect_code(0);
    for round in 0..3u64 {
        let seg = SegSpec { fill: Fill::Random(round + 40), ..SegSpec::new(round + 2) };
        let p = seg.write(&e.wal);
        let procs: Vec<_> = (0..4)
            .map(|_| {
                let cmd = s3walrs(&server, &server.endpoint(), "r")
                    .args(["push".as_ref(), p.as_os_str()]);
                std::thread::spawn(move || cmd.run())
            })
            .collect();
        let outs: Vec<Out> = procs.into_iter().map(|t| t.join().unwrap()).collect();
        for o in &outs {
            o.expect_code(0);
        }
        let stored =
            outs.iter().filter(|o| o.stderr.contains(&format!("archived {}:", seg.name()))).count();
        assert_eq!(stored, 1, "exactly one push stores the segment");
        let dest = e.out.join(seg.name());
        fetch(s3walrs(&server, &server.endpoint(), "r"), &seg.name(), &dest).expect_code(0);
        assert!(std::fs::read(&dest).unwrap() == seg.bytes());
    }
}
