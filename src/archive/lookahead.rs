//! Look-ahead push: while PostgreSQL's archiver waits for one `walrs push`, that call also
//! archives other segments PostgreSQL has marked ready (`pg_wal/archive_status/*.ready`), several
//! at once, and records each one in the spool once it is durable. When the archiver then asks for
//! one of those, the call finds the record, checks it cheaply, and exits 0 at once.
//!
//! Rules (docs/commands/push.md, docs/format/spool.md):
//! - only files PostgreSQL marked ready are pushed (the `.ready` file is read, never written);
//! - a record is written only after its object is durable and verified in the repository, and it
//!   names the repository and the local file's identity (device, inode, size, modification time);
//!   the fast path also asks the repository that the object is still there with the recorded
//!   size, so a record never stands in for a missing object;
//! - each segment is pushed under a per-segment lock in the spool: concurrent `walrs push`
//!   processes never push the same segment at once, and the one that waited finds the record;
//! - a crash at any point leaves at worst an unlocked lock file, a temporary record file or no
//!   record: the next call pushes again, and a second push of identical content is a no-op;
//! - at most `parallel` segments are in flight, each bounded by its codec buffers, and no new
//!   one starts once half of the call's deadline has passed.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Kind, Result, WalrsError};
use crate::pg::{WalFileKind, WalFileName};
use crate::repo::{Repository, WalFile};

use super::push::{PushOptions, PushOutcome, push};
use super::spool::{Spool, try_lock, wal_dir};

/// Default number of segments a push works on at once (measured: docs/benchmarks.md).
pub const DEFAULT_PARALLEL: usize = 4;
/// How many segments one call pushes at most, per unit of parallelism: enough that the archiver
/// then finds a run of records, few enough that one call stays short.
const BATCH_PER_WORKER: usize = 4;
/// Format version of a push record.
const RECORD_VERSION: u32 = 1;

/// What the spool says about a segment that look-ahead archived.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct Record {
    format_version: u32,
    name: String,
    /// `Repository::describe()` of the repository it went to.
    repo: String,
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    /// Size of the stored object.
    stored_len: u64,
    /// Content digest of the stored object.
    content_digest: String,
}

/// The identity of a local file as `stat` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

fn file_id(path: &Path) -> std::io::Result<FileId> {
    let m = std::fs::metadata(path)?;
    Ok(FileId {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

/// One call's look-ahead context.
pub struct LookAhead<'a> {
    repo: &'a Repository,
    wal_dir: PathBuf,
    status_dir: PathBuf,
    push_dir: PathBuf,
    parallel: usize,
    deadline: Instant,
    started: Instant,
}

/// How the fast path ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// A sound record: the segment is archived.
    Yes,
    /// No record, or one that does not hold: push it.
    No,
}

impl<'a> LookAhead<'a> {
    /// The look-ahead context for the WAL file `path`, if it lives in a directory with an
    /// `archive_status` subdirectory (a `pg_wal`) and a spool is available.
    pub fn new(
        repo: &'a Repository,
        path: &Path,
        spool: Option<&Spool>,
        parallel: usize,
        deadline: Instant,
    ) -> Result<Option<Self>> {
        let wal_dir = wal_dir(path);
        let status_dir = wal_dir.join("archive_status");
        let Some(spool) = spool else { return Ok(None) };
        if parallel < 2 || !status_dir.is_dir() {
            return Ok(None);
        }
        let push_dir = spool.subdir("push")?;
        Ok(Some(LookAhead {
            repo,
            wal_dir,
            status_dir,
            push_dir,
            parallel,
            deadline,
            started: Instant::now(),
        }))
    }

    /// The repository.
    pub fn repo(&self) -> &'a Repository {
        self.repo
    }

    fn record_path(&self, name: &WalFileName) -> PathBuf {
        self.push_dir.join(format!("{name}.ok"))
    }

    fn lock_path(&self, name: &WalFileName) -> PathBuf {
        self.push_dir.join(format!("{name}.lock"))
    }

    /// Takes the lock of the background pusher (`<spool>/push/background.lock`) without
    /// waiting; `None` while another one runs. Held for the pusher's whole life.
    pub fn try_lock_background(&self) -> Result<Option<File>> {
        try_lock(&self.push_dir.join("background.lock"))
    }

    /// Whether new work may still start: not after half of the deadline (the answer of a call,
    /// or the end of a background pusher, must not be late).
    pub fn within_budget(&self) -> bool {
        self.started.elapsed() <= self.deadline.saturating_duration_since(self.started) / 2
    }

    fn read_record(&self, name: &WalFileName) -> Option<Record> {
        let bytes = std::fs::read(self.record_path(name)).ok()?;
        let r: Record = serde_json::from_slice(&bytes).ok()?;
        (r.format_version == RECORD_VERSION && r.name == name.as_str()).then_some(r)
    }

    /// A record that matches the repository and the local file as it is now.
    fn matching_record(&self, name: &WalFileName, path: &Path) -> Option<Record> {
        let r = self.read_record(name)?;
        let id = file_id(path).ok()?;
        let same = r.repo == self.repo.describe()
            && FileId { dev: r.dev, ino: r.ino, size: r.size, mtime_ns: r.mtime_ns } == id;
        same.then_some(r)
    }

    /// Takes the lock of the segment the archiver asked for, waiting (until the deadline) for
    /// another process that is pushing it right now. Hold it across [`LookAhead::recorded`] and
    /// the push.
    pub fn lock_primary(&self, name: &WalFileName) -> Result<File> {
        self.lock_blocking(name)
    }

    /// The fast path: whether look-ahead (of this or another call) already archived `path`. A
    /// record must match the repository and the file, and the repository must still hold the
    /// object with the recorded size.
    pub fn recorded(&self, name: &WalFileName, path: &Path) -> Result<Recorded> {
        let Some(r) = self.matching_record(name, path) else { return Ok(Recorded::No) };
        match self.repo.head::<WalFile>(name)? {
            Some(meta) if meta.size == r.stored_len => Ok(Recorded::Yes),
            found => {
                tracing::warn!(
                    "{name}: the spool records it as archived, but the repository {}; pushing it again",
                    if found.is_some() { "holds another size" } else { "does not hold it" }
                );
                let _ = std::fs::remove_file(self.record_path(name));
                Ok(Recorded::No)
            }
        }
    }

    /// Takes the segment's lock, waiting for another holder until the deadline.
    fn lock_blocking(&self, name: &WalFileName) -> Result<File> {
        let path = self.lock_path(name);
        loop {
            match try_lock(&path)? {
                Some(f) => return Ok(f),
                None if Instant::now() + Duration::from_millis(10) < self.deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                None => {
                    return Err(WalrsError::new(
                        Kind::Timeout,
                        format!("{name}: another walrs push held its lock until the deadline"),
                    ));
                }
            }
        }
    }

    /// The names PostgreSQL has marked ready, as the archiver orders them (timeline history
    /// files first, then by name).
    fn ready(&self) -> Vec<WalFileName> {
        let Ok(rd) = std::fs::read_dir(&self.status_dir) else { return Vec::new() };
        let mut names: Vec<WalFileName> = rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".ready").and_then(|b| WalFileName::parse(b).ok()))
            .collect();
        names.sort_by(|a, b| {
            let h = |n: &WalFileName| n.kind() != WalFileKind::History;
            (h(a), a.as_str()).cmp(&(h(b), b.as_str()))
        });
        names
    }

    /// The segments to push besides `primary` (the archiver's own, if this is its call): ready,
    /// not recorded, oldest first. Also drops spool entries of segments that are no longer ready.
    pub fn candidates(&self, primary: Option<&WalFileName>) -> Vec<WalFileName> {
        let ready = self.ready();
        self.clean(&ready, primary);
        ready
            .into_iter()
            .filter(|n| Some(n) != primary)
            .filter(|n| self.matching_record(n, &self.wal_dir.join(n.as_str())).is_none())
            .take(self.parallel * BATCH_PER_WORKER)
            .collect()
    }

    /// Removes records and lock files whose segment is not ready any more (PostgreSQL marked
    /// it done). A lock held by a running push is left alone.
    fn clean(&self, ready: &[WalFileName], primary: Option<&WalFileName>) {
        let keep: HashSet<&str> =
            ready.iter().map(WalFileName::as_str).chain(primary.map(WalFileName::as_str)).collect();
        let Ok(rd) = std::fs::read_dir(&self.push_dir) else { return };
        for e in rd.filter_map(|e| e.ok()) {
            let Ok(file) = e.file_name().into_string() else { continue };
            let Some((stem, ext)) = file.rsplit_once('.') else { continue };
            if keep.contains(stem) {
                continue;
            }
            let p = e.path();
            match ext {
                "ok" => {
                    let _ = std::fs::remove_file(&p);
                }
                "lock" => {
                    if let Ok(Some(_held)) = try_lock(&p) {
                        let _ = std::fs::remove_file(&p);
                    }
                }
                // The background pusher's lock is not a segment's.
                _ if stem == "background" => {}
                // A temporary record file of a process that died between write and rename.
                _ if file.contains(".ok.tmp.") || file.contains(".tmp.") => {
                    let _ = std::fs::remove_file(&p);
                }
                _ => {}
            }
        }
    }

    /// Pushes `candidates`, `parallel - 1` at a time (the calling thread is one of the workers;
    /// the archiver's own segment is the last of the `parallel`). Each segment is pushed under its lock
    /// and recorded once durable. The first failure ends the look-ahead: no other candidate
    /// starts (what failed one, an unreachable or foreign repository, a full disk, would most
    /// likely fail the rest), and the failures are left to the archiver's own calls, which report
    /// them, one line each. Here they are logged at info level only, so that PostgreSQL's log gets
    /// one line per failed archive attempt, not one more per other ready segment.
    pub fn push_all(&self, candidates: Vec<WalFileName>, opts: &PushOptions) -> usize {
        self.push_all_noting(candidates, opts, &Mutex::new(HashSet::new()))
    }

    /// As [`LookAhead::push_all`]; the names that failed are added to `failed`.
    pub fn push_all_noting(
        &self,
        candidates: Vec<WalFileName>,
        opts: &PushOptions,
        failed: &Mutex<HashSet<WalFileName>>,
    ) -> usize {
        let queue = Mutex::new(VecDeque::from(candidates));
        let done = std::sync::atomic::AtomicUsize::new(0);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let work = || {
            while let Some(name) = self.next(&queue) {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match self.push_one(&name, opts) {
                    Ok(true) => {
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        tracing::info!(
                            "look-ahead push of {name} failed, look-ahead stopped (the archiver's own call for it reports the failure): {e}"
                        );
                        if let Ok(mut f) = failed.lock() {
                            f.insert(name);
                        }
                    }
                }
            }
        };
        // The archiver's own segment is pushed beside these: `parallel - 1` workers here. Each
        // worker logs under the caller's span (`walrs push:`), as the caller does.
        let span = tracing::Span::current();
        std::thread::scope(|s| {
            for _ in 2..self.parallel {
                let span = span.clone();
                s.spawn(move || span.in_scope(work));
            }
            work();
        });
        done.into_inner()
    }

    fn next(&self, queue: &Mutex<VecDeque<WalFileName>>) -> Option<WalFileName> {
        if !self.within_budget() {
            return None;
        }
        queue.lock().ok()?.pop_front()
    }

    /// Pushes one ready segment under its lock and records it. `Ok(false)`: someone else has it.
    fn push_one(&self, name: &WalFileName, opts: &PushOptions) -> Result<bool> {
        let path = self.wal_dir.join(name.as_str());
        let Some(_lock) = try_lock(&self.lock_path(name))? else { return Ok(false) };
        if self.matching_record(name, &path).is_some() {
            return Ok(false);
        }
        // PostgreSQL may have archived and removed it since the directory was read.
        if !self.status_dir.join(format!("{name}.ready")).exists() {
            return Ok(false);
        }
        self.push_and_record(name, &path, opts)
    }

    /// Pushes `path` (whose lock the caller holds) and records it once durable. `Ok(false)`:
    /// pushed, but not recorded (the file changed meanwhile, or the record could not be
    /// written; a later call then pushes it again, which is a no-op).
    pub fn push_and_record(
        &self,
        name: &WalFileName,
        path: &Path,
        opts: &PushOptions,
    ) -> Result<bool> {
        let before = file_id(path).map_err(|e| crate::durable::local_io("reading", path, &e))?;
        let (stored_len, digest) = match push(self.repo, path, opts)? {
            PushOutcome::Stored { summary, .. } => (summary.stored_len, summary.digest_hex()),
            PushOutcome::AlreadyArchived => {
                let meta = self.repo.head::<WalFile>(name)?.ok_or_else(|| {
                    WalrsError::new(Kind::Io, format!("{name} vanished from the repository"))
                })?;
                (meta.size, String::new())
            }
        };
        // The file must be the one that was pushed: a change during the push is not recorded.
        let Ok(after) = file_id(path) else { return Ok(false) };
        if before != after {
            return Ok(false);
        }
        let record = Record {
            format_version: RECORD_VERSION,
            name: name.to_string(),
            repo: self.repo.describe(),
            dev: after.dev,
            ino: after.ino,
            size: after.size,
            mtime_ns: after.mtime_ns,
            stored_len,
            content_digest: digest,
        };
        let json = serde_json::to_vec(&record)
            .map_err(|e| WalrsError::new(Kind::Internal, e.to_string()))?;
        let rp = self.record_path(name);
        if let Err(e) = crate::durable::write_cache(&rp, &json) {
            tracing::warn!(
                "{name} is archived, but its spool record {} could not be written: {e}",
                rp.display()
            );
            return Ok(false);
        }
        tracing::debug!("look-ahead archived {name}");
        Ok(true)
    }
}
