//! Push and fetch over a fault-injecting storage: whatever the storage does, push never reports
//! success for an object that is not whole, and fetch never leaves a partial file.

use std::path::Path;

use walrs::archive::{self, PushOptions, PushOutcome};
use walrs::error::Kind;
use walrs::repo::Repository;
use walrs::storage::{AnyStorage, ErrorKind, Fault, FaultRule, Faulty, MemoryStorage, Op, Storage};

use crate::util::leftovers;
use crate::util::wal::{Fill, SegSpec};

fn faulty_repo() -> (Repository, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let storage =
        AnyStorage::Faulty(Box::new(Faulty::new(AnyStorage::Memory(MemoryStorage::new()))));
    (Repository::new(storage, None), dir)
}

fn faults(repo: &Repository) -> &Faulty<AnyStorage> {
    match repo.storage() {
        AnyStorage::Faulty(f) => f,
        _ => unreachable!(),
    }
}

fn seg(dir: &Path, n: u64) -> (SegSpec, std::path::PathBuf) {
    let s = SegSpec { fill: Fill::Random(n + 100), ..SegSpec::new(n) };
    let p = s.write(dir);
    (s, p)
}

#[test]
fn push_reports_failure_for_every_injected_write_fault_then_recovers() {
    let (repo, dir) = faulty_repo();
    let (_, p1) = seg(dir.path(), 1);
    archive::push(&repo, &p1, &PushOptions::default()).unwrap();
    let mut injected = 0;
    for kind in [ErrorKind::Unavailable, ErrorKind::NoSpace, ErrorKind::Io, ErrorKind::Timeout] {
        for (n, fault) in [(2, Fault::Error(kind)), (3, Fault::ErrorAfter(kind))] {
            let (s, p) = seg(dir.path(), n);
            faults(&repo).add(FaultRule::once(Op::PutIfAbsent, fault.clone()));
            let e = archive::push(&repo, &p, &PushOptions::default()).unwrap_err();
            injected += 1;
            assert_ne!(e.kind, Kind::NotFound);
            // The retry PostgreSQL makes succeeds: either it stores the object or finds the
            // identical one that did land.
            let again = archive::push(&repo, &p, &PushOptions::default()).unwrap();
            match (&fault, again) {
                (Fault::Error(_), PushOutcome::Stored { .. }) => {}
                (Fault::ErrorAfter(_), PushOutcome::AlreadyArchived) => {}
                (f, o) => panic!("{f:?} then {o:?}"),
            }
            let out = dir.path().join("out");
            archive::fetch(&repo, &s.name(), &out).unwrap();
            assert!(std::fs::read(&out).unwrap() == s.bytes());
            // reset for the next round
            let key =
                walrs::repo::layout::wal_key(&walrs::pg::WalFileName::parse(&s.name()).unwrap())
                    .unwrap();
            repo.storage().delete(&key).unwrap();
        }
    }
    assert_eq!(faults(&repo).injected(), injected);
    crate::util::report_faults("faults::push_reports_failure", injected, "storage wrapper, writes");
}

#[test]
fn push_fails_when_the_config_cannot_be_read() {
    let (repo, dir) = faulty_repo();
    let (_, p1) = seg(dir.path(), 1);
    archive::push(&repo, &p1, &PushOptions::default()).unwrap();
    let (_, p2) = seg(dir.path(), 2);
    faults(&repo).add(FaultRule::once(Op::Get, Fault::Error(ErrorKind::Unavailable)));
    let e = archive::push(&repo, &p2, &PushOptions::default()).unwrap_err();
    assert_eq!(e.kind, Kind::Unavailable);
}

#[test]
fn fetch_never_leaves_a_partial_file() {
    let (repo, dir) = faulty_repo();
    let (s, p) = seg(dir.path(), 1);
    archive::push(&repo, &p, &PushOptions::default()).unwrap();
    let out_dir = dir.path().join("pg_wal");
    std::fs::create_dir(&out_dir).unwrap();
    let dest = out_dir.join("RECOVERYXLOG");
    let cases: Vec<(Fault, Kind)> = vec![
        (Fault::Error(ErrorKind::Unavailable), Kind::Unavailable),
        (Fault::Error(ErrorKind::Timeout), Kind::Timeout),
        (Fault::Error(ErrorKind::PermissionDenied), Kind::PermissionDenied),
        (Fault::TruncateRead(100), Kind::Corrupt),
        (Fault::TruncateRead(5_000_000), Kind::Corrupt),
        (Fault::BreakRead(2_000_000), Kind::Io),
        (Fault::CorruptRead(3_000_000), Kind::Corrupt),
        (Fault::CorruptRead(20), Kind::Corrupt),
    ];
    let n = cases.len();
    for (fault, want) in cases {
        faults(&repo).clear();
        // The config read goes through get too: let it pass, fault the object read.
        faults(&repo).add(FaultRule { op: Op::Get, skip: 1, times: 1, fault: fault.clone() });
        let e = archive::fetch(&repo, &s.name(), &dest).unwrap_err();
        assert_eq!(e.kind, want, "{fault:?}: {e}");
        assert!(!dest.exists(), "{fault:?} left a file at the destination");
        assert!(leftovers(&out_dir).is_empty(), "{fault:?} left {:?}", leftovers(&out_dir));
    }
    assert_eq!(faults(&repo).injected(), n as u64);
    crate::util::report_faults(
        "faults::fetch_never_leaves_a_partial_file",
        n as u64,
        "storage wrapper, reads",
    );
    faults(&repo).clear();
    archive::fetch(&repo, &s.name(), &dest).unwrap();
    assert!(std::fs::read(&dest).unwrap() == s.bytes());
}

#[test]
fn not_found_only_from_an_authoritative_answer() {
    let (repo, dir) = faulty_repo();
    let (_, p) = seg(dir.path(), 1);
    archive::push(&repo, &p, &PushOptions::default()).unwrap();
    let dest = dir.path().join("x");
    assert_eq!(
        archive::fetch(&repo, "000000010000000000000002", &dest).unwrap_err().kind,
        Kind::NotFound
    );
    faults(&repo).add(FaultRule::always(Op::Get, Fault::Error(ErrorKind::Unavailable)));
    assert_eq!(
        archive::fetch(&repo, "000000010000000000000002", &dest).unwrap_err().kind,
        Kind::Unavailable
    );
}
