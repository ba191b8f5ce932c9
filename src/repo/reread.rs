//! A second read before "corrupt": an object from a network backend that fails verification is
//! read once more before it is reported as damaged in the store.
//!
//! Over a network a byte can be damaged on the way (a faulty NIC, proxy or middlebox) while the
//! stored object is sound; calling that "corrupt" (exit 7, "move it aside") would make an operator
//! discard a good object. So every complete read of an object goes through [`read_verified`]:
//! `fetch`, `push`'s comparison with an existing object, [`Repository::load`] (manifests, the
//! index, histories, binlog metadata), the chunks `restore` extracts, and the objects `wal verify`
//! and `backup verify` check. On a verification failure from a network backend the whole read is done
//! again. A re-read that verifies wins (the damage was in transit, logged as a warning); one that
//! fails the same way confirms the stored object is damaged (exit 7); one that fails differently
//! means the data is being damaged on the way (exit 12: the store may be sound, retry). A local
//! file system is not read twice: what it returns is what it holds.

use crate::error::{Kind, Result, WalrsError};
use crate::repo::Repository;

/// Runs `read`, a complete verified read of the object `name` (it must start from scratch each
/// time it is called), and runs it once more when it fails verification on a network backend.
pub fn read_verified<T>(
    repo: &Repository,
    name: &str,
    read: impl FnMut() -> Result<T>,
) -> Result<T> {
    read_verified_from(repo.storage().is_network(), &repo.describe(), name, read)
}

/// [`read_verified`] for a store described as `store`, read over a network when `network`.
pub fn read_verified_from<T>(
    network: bool,
    store: &str,
    name: &str,
    mut read: impl FnMut() -> Result<T>,
) -> Result<T> {
    let first = match read() {
        Err(e) if network && e.kind == Kind::Corrupt => e,
        other => return other,
    };
    match read() {
        Ok(v) => {
            tracing::warn!(
                "{name}: the first read from {store} failed verification ({}); a re-read verified it: the damage happened in transit, the stored object is sound",
                first.message
            );
            Ok(v)
        }
        Err(again) if again.kind == Kind::Corrupt && again.message == first.message => {
            // The first error itself, so that what it carries (its hint, a foreign object's
            // mark) survives.
            let mut e = first;
            e.message = format!(
                "{} (read twice from {store}: the re-read agreed, so the stored object is damaged)",
                e.message
            );
            Err(e)
        }
        Err(again) if again.kind == Kind::Corrupt => Err(WalrsError::new(
            Kind::Unavailable,
            format!(
                "{name}: two reads from {store} failed verification differently (first read: {}; re-read: {}): the data is damaged on the way, the stored object may be sound",
                first.message, again.message
            ),
        )
        .hint("retry; if it persists, check the network path to the store (proxies, load balancers, NICs), and do not move the object aside")),
        Err(mut again) => {
            again.message = format!(
                "{} (after a first read that failed verification: {})",
                again.message, first.message
            );
            Err(again)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corrupt(detail: &str) -> WalrsError {
        WalrsError::new(Kind::Corrupt, format!("corrupt object x: {detail}")).hint("move it aside")
    }

    /// Runs `read_verified_from` over a script of results; returns the result and the reads made.
    fn run(network: bool, script: Vec<Result<u32>>) -> (Result<u32>, usize) {
        let mut script = script.into_iter();
        let mut reads = 0;
        let r = read_verified_from(network, "s3://b/p", "x", || {
            reads += 1;
            script.next().unwrap()
        });
        (r, reads)
    }

    #[test]
    fn a_re_read_that_verifies_wins() {
        let (r, reads) = run(true, vec![Err(corrupt("checksum mismatch in frame 3")), Ok(7)]);
        assert_eq!((r.unwrap(), reads), (7, 2));
    }

    #[test]
    fn the_same_failure_twice_is_corrupt() {
        let (r, reads) = run(
            true,
            vec![
                Err(corrupt("checksum mismatch in frame 3")),
                Err(corrupt("checksum mismatch in frame 3")),
            ],
        );
        let e = r.unwrap_err();
        assert_eq!((e.kind, reads), (Kind::Corrupt, 2));
        assert!(e.message.contains("re-read agreed"), "{e}");
        assert_eq!(e.hint.as_deref(), Some("move it aside"));
    }

    #[test]
    fn different_failures_are_damage_in_transit() {
        let (r, _) = run(
            true,
            vec![
                Err(corrupt("checksum mismatch in frame 3")),
                Err(corrupt("checksum mismatch in frame 9")),
            ],
        );
        let e = r.unwrap_err();
        assert_eq!(e.kind, Kind::Unavailable);
        assert!(e.message.contains("first read") && e.message.contains("frame 9"), "{e}");
        assert!(e.hint.unwrap().contains("do not move"));
    }

    #[test]
    fn other_failures_are_kept_and_local_stores_are_read_once() {
        let unreachable = || WalrsError::new(Kind::Unavailable, "down");
        let (r, reads) = run(true, vec![Err(corrupt("a")), Err(unreachable())]);
        let e = r.unwrap_err();
        assert_eq!((e.kind, reads), (Kind::Unavailable, 2));
        assert!(e.message.contains("first read that failed verification"), "{e}");
        let (r, reads) = run(false, vec![Err(corrupt("a")), Ok(1)]);
        assert_eq!((r.unwrap_err().kind, reads), (Kind::Corrupt, 1));
        let (r, reads) = run(true, vec![Err(WalrsError::new(Kind::NotFound, "no")), Ok(1)]);
        assert_eq!((r.unwrap_err().kind, reads), (Kind::NotFound, 1));
    }

    #[test]
    fn a_foreign_object_read_twice_stays_a_foreign_object() {
        let foreign = || {
            WalrsError::from(crate::codec::CodecError::Foreign {
                name: "x".into(),
                detail: "it is not encrypted".into(),
            })
        };
        let (r, reads) = run(true, vec![Err(foreign()), Err(foreign())]);
        let e = r.unwrap_err();
        assert_eq!((e.kind, reads), (Kind::Corrupt, 2));
        assert!(e.is_foreign_object(), "{e}");
    }
}
