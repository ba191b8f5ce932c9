//! Prefetch: while PostgreSQL replays one WAL segment, the next ones along the timeline it will
//! follow are already being fetched into the spool (`<spool>/prefetch/`), decoded, verified and
//! fsynced, so that its next `restore_command` is a rename instead of a download.
//!
//! Who does what (docs/commands/fetch.md, docs/format/spool.md):
//! - `walrs fetch` serves a request from the spool when an entry for exactly that name is there
//!   and checks out (its sidecar names the same repository and system, the file has the recorded
//!   size and the segment's own page header, and the repository still holds the object with the
//!   recorded size); else it fetches from the repository as always. It then writes the name it
//!   served as the spool's `position`, removes entries that can no longer be asked for, and
//!   starts a prefetcher (a detached `walrs prefetch` in PostgreSQL's process group).
//! - The prefetcher holds `prefetch/.lock` (one per spool) and keeps the next `count` segments
//!   after the position present, `parallel` at a time, in the order PostgreSQL will ask for them:
//!   along the history of the newest timeline that descends from the position's timeline (what
//!   `recovery_target_timeline = 'latest'` follows), switching timelines where PostgreSQL's
//!   `XLogFileReadAnyTLI` would (the one port of that rule, `pg::history::ExpectedTimelines`,
//!   which the planner uses too). It stops at the first segment the repository does not hold
//!   (the end of the archive), and after releasing its lock looks at the position once more, so
//!   that a request that arrived meanwhile is not left without a prefetcher.
//! - Only requests PostgreSQL's recovery makes (`%p` = `pg_wal/RECOVERYXLOG`) start prefetching;
//!   other callers (pg_rewind, a manual fetch) get a plain fetch and leave the spool alone.
//!
//! A prefetched file is never served for another name: the spool file is named after the
//! segment, the sidecar repeats the name, and the segment's page header must agree. Killing
//! either process at any point leaves at worst a temporary file (removed by the next prefetcher)
//! or an entry without a sidecar (ignored, then replaced).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{Kind, Result, WalrsError};
use crate::pg::history::{ExpectedTimelines, TimelineHistory};
use crate::pg::page::LONG_PAGE_HEADER_LEN;
use crate::pg::{TimeLineId, WalFileKind, WalFileName, WalSegSize};
use crate::repo::{RepoConfig, Repository, WalFile};

use super::fetch::{check_first_frame, decode_to_temp};
use super::spool::{Spool, try_lock};
use crate::durable::{self, local_io};

/// Default number of segments kept ready ahead of replay (128 MiB of 16 MiB segments).
pub const DEFAULT_COUNT: usize = 8;
/// Default number of segments fetched at once.
pub const DEFAULT_PARALLEL: usize = 2;
/// The file name PostgreSQL's recovery passes as `%p` for WAL segments.
pub const RECOVERY_TARGET_NAME: &str = "RECOVERYXLOG";
/// Format version of a sidecar.
const META_VERSION: u32 = 1;
/// Name of the position file in the prefetch directory.
const POSITION: &str = "position";
/// Name of the prefetcher's lock file in the prefetch directory.
const LOCK: &str = ".lock";

/// The sidecar of a prefetched segment (`<name>.meta`), written after the segment is durable.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct Meta {
    format_version: u32,
    name: String,
    /// `Repository::describe()` of the repository it came from.
    repo: String,
    system_identifier: String,
    /// Size of the stored object it was decoded from.
    stored_len: u64,
    /// Size of the segment.
    plain_len: u64,
    /// Content digest of the object (docs/format/envelope.md).
    content_digest: String,
}

/// The prefetch directory of a spool.
pub struct PrefetchDir {
    dir: PathBuf,
}

impl PrefetchDir {
    /// The prefetch directory of `spool`, created if missing.
    pub fn open(spool: &Spool) -> Result<Self> {
        Ok(PrefetchDir { dir: spool.subdir("prefetch")? })
    }

    fn entry(&self, name: &WalFileName) -> PathBuf {
        self.dir.join(name.as_str())
    }

    fn meta_path(&self, name: &WalFileName) -> PathBuf {
        self.dir.join(format!("{name}.meta"))
    }

    fn read_meta(&self, name: &WalFileName) -> Option<Meta> {
        let bytes = std::fs::read(self.meta_path(name)).ok()?;
        let m: Meta = serde_json::from_slice(&bytes).ok()?;
        (m.format_version == META_VERSION && m.name == name.as_str()).then_some(m)
    }

    fn remove_entry(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!("{name}.meta")));
        let _ = std::fs::remove_file(self.dir.join(name));
    }

    /// The prefetch directory of `spool` if it exists.
    pub fn existing(spool: &Spool) -> Option<Self> {
        let dir = spool.root().join("prefetch");
        dir.is_dir().then_some(PrefetchDir { dir })
    }

    /// The name of the last segment `fetch` served, if any.
    fn position(&self) -> Option<WalFileName> {
        let text = std::fs::read_to_string(self.dir.join(POSITION)).ok()?;
        WalFileName::parse(text.trim()).ok().filter(|n| n.kind() == WalFileKind::Segment)
    }

    /// Records `name` as the last segment served.
    pub fn set_position(&self, name: &WalFileName) -> Result<()> {
        let p = self.dir.join(POSITION);
        durable::write_cache(&p, name.as_str().as_bytes()).map_err(|e| local_io("writing", &p, &e))
    }

    /// Serves `name` from the spool into `dest` if a sound entry is there: moved (or copied,
    /// across file systems) into place, fsynced. `Ok(false)`: no usable entry (an unusable one is
    /// removed); the caller fetches from the repository.
    pub fn serve(
        &self,
        repo: &Repository,
        cfg: &RepoConfig,
        name: &WalFileName,
        dest: &Path,
    ) -> Result<bool> {
        let Some(meta) = self.read_meta(name) else { return Ok(false) };
        match self.check_entry(repo, cfg, name, &meta) {
            Ok(()) => {}
            Err(why) => {
                tracing::warn!("prefetched {name} not used ({why}); fetching it again");
                self.remove_entry(name.as_str());
                return Ok(false);
            }
        }
        let src = self.entry(name);
        let dir = durable::parent_dir(dest);
        durable::check_destination(dest)?;
        match std::fs::rename(&src, dest) {
            Ok(()) => {}
            // EXDEV: the spool is on another file system than pg_wal.
            Err(e) if e.raw_os_error() == Some(18) => copy_into(&src, dest, &dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(local_io("moving into place", dest, &e)),
        }
        durable::sync_dir(&dir).map_err(|e| local_io("syncing directory", &dir, &e))?;
        let _ = crate::cleanup::mark_committed();
        let _ = std::fs::remove_file(self.meta_path(name));
        let _ = std::fs::remove_file(&src);
        Ok(true)
    }

    fn check_entry(
        &self,
        repo: &Repository,
        cfg: &RepoConfig,
        name: &WalFileName,
        meta: &Meta,
    ) -> std::result::Result<(), String> {
        if meta.repo != repo.describe() {
            return Err(format!("it came from {}", meta.repo));
        }
        if meta.system_identifier != cfg.system_identifier.to_string() {
            return Err(format!("it belongs to system {}", meta.system_identifier));
        }
        let path = self.entry(name);
        let mut f = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let len = f.metadata().map_err(|e| e.to_string())?.len();
        if len != meta.plain_len || len != cfg.wal_segment_size.bytes() {
            return Err(format!("it holds {len} bytes, not {}", meta.plain_len));
        }
        let mut head = vec![0u8; LONG_PAGE_HEADER_LEN];
        f.read_exact(&mut head).map_err(|e| e.to_string())?;
        check_first_frame(name, cfg, &head).map_err(|e| e.to_string())?;
        match repo.head::<WalFile>(name) {
            Ok(Some(m)) if m.size == meta.stored_len => Ok(()),
            Ok(Some(m)) => Err(format!("the repository's object now has {} bytes", m.size)),
            Ok(None) => Err("the repository no longer holds it".into()),
            Err(e) => Err(format!("the repository cannot confirm it: {e}")),
        }
    }

    /// After `name` was served: removes entries PostgreSQL can no longer ask for (at or before
    /// `name`'s segment, on an older timeline, or implausibly far ahead: a stale spool).
    pub fn forget_before(&self, name: &WalFileName, seg_size: WalSegSize, count: usize) {
        let (Some(served), tli) = (name.segno(seg_size), name.timeline()) else { return };
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return };
        let horizon = served.0 + 2 * count.max(1) as u64;
        for e in rd.flatten() {
            let file = e.file_name();
            let Some(file) = file.to_str() else { continue };
            let base = file.strip_suffix(".meta").unwrap_or(file);
            let Ok(n) = WalFileName::parse(base) else { continue };
            let Some(segno) = n.segno(seg_size) else { continue };
            if n.kind() != WalFileKind::Segment
                || segno.0 <= served.0
                || segno.0 > horizon
                || n.timeline() < tli
            {
                self.remove_entry(base);
            }
        }
    }

    /// Removes prefetched entries (and temporary files) last touched more than `max_age` ago:
    /// what a recovery that ended before the end of the archive left behind.
    pub fn sweep_stale(&self, max_age: Duration) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return };
        let now = SystemTime::now();
        for e in rd.flatten() {
            let file = e.file_name();
            let Some(file) = file.to_str() else { continue };
            if file == LOCK || file == POSITION {
                continue;
            }
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > max_age);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Removes temporary files of earlier prefetchers (call with the lock held: no other
    /// prefetcher is writing).
    fn remove_temporaries(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return };
        for e in rd.flatten() {
            if e.file_name()
                .to_str()
                .is_some_and(|f| f.contains(".walrs-tmp.") || f.contains(".tmp."))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    fn try_lock(&self) -> Result<Option<File>> {
        try_lock(&self.dir.join(LOCK))
    }

    /// Whether a prefetcher holds the lock right now.
    pub fn prefetcher_running(&self) -> bool {
        matches!(self.try_lock(), Ok(None))
    }

    /// Fetches `name` into the spool: decoded and verified into a temporary file, fsynced,
    /// renamed, then the sidecar. `Ok(false)`: the repository does not hold it.
    fn prefetch_one(
        &self,
        repo: &Repository,
        cfg: &RepoConfig,
        name: &WalFileName,
    ) -> Result<bool> {
        if self.read_meta(name).is_some() && self.entry(name).exists() {
            return Ok(true);
        }
        let (tmp, summary) = match decode_to_temp(repo, cfg, name, &self.dir, name.as_str()) {
            Ok(x) => x,
            Err(e) if e.kind == Kind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let path = self.entry(name);
        tmp.rename_to(&path).map_err(|e| local_io("renaming into", &path, &e))?;
        let meta = Meta {
            format_version: META_VERSION,
            name: name.to_string(),
            repo: repo.describe(),
            system_identifier: cfg.system_identifier.to_string(),
            stored_len: summary.stored_len,
            plain_len: summary.plain_len,
            content_digest: summary.digest_hex(),
        };
        let bytes = serde_json::to_vec(&meta)
            .map_err(|e| WalrsError::new(Kind::Internal, format!("sidecar of {name}: {e}")))?;
        let mp = self.meta_path(name);
        durable::write_cache(&mp, &bytes).map_err(|e| local_io("writing", &mp, &e))?;
        Ok(true)
    }
}

/// Copies the spool file `src` into `dest` durably, through a temporary file beside it
/// ([`durable::install`]).
fn copy_into(src: &Path, dest: &Path, dir: &Path) -> Result<()> {
    let base = dest.file_name().and_then(|n| n.to_str()).unwrap_or("wal");
    let mut out = durable::create_in(dir, base)?;
    let mut input = File::open(src).map_err(|e| local_io("opening", src, &e))?;
    std::io::copy(&mut input, &mut out).map_err(|e| local_io("copying into", out.path(), &e))?;
    durable::install(out, dest)
}

/// The timeline PostgreSQL asks for at each of the `count` segments after `pos`, following
/// `history` (the history of the newest timeline descending from `pos`'s, if any) the way
/// `XLogFileReadAnyTLI` does ([`ExpectedTimelines::segment_timeline`]): the newest timeline of the
/// history that has begun at that segment, never one older than `pos`'s.
pub fn plan(
    pos: &WalFileName,
    seg_size: WalSegSize,
    history: Option<&TimelineHistory>,
    count: usize,
) -> Vec<WalFileName> {
    let Some(start) = pos.segno(seg_size) else { return Vec::new() };
    let current = pos.timeline();
    // The path PostgreSQL follows, if the history descends from the position's timeline.
    let path =
        history.map(|h| ExpectedTimelines::new(h.tli, Some(h))).filter(|p| p.contains(current));
    (1..=count as u64)
        .filter_map(|i| {
            let segno = start.checked_add(i)?;
            let tli = path
                .as_ref()
                .and_then(|p| p.segment_timeline(segno, seg_size, Some(current)))
                .unwrap_or(current);
            Some(WalFileName::segment(tli, segno, seg_size))
        })
        .collect()
}

/// The history of the newest timeline PostgreSQL can be following when it asks for `pos`: one
/// whose ancestry includes `pos`'s timeline and that branches off it after `pos`'s segment (had
/// it branched at or before, PostgreSQL would have asked for that timeline's segment). None:
/// `pos`'s timeline is the newest such.
fn newest_descendant<'h>(
    histories: &'h BTreeMap<TimeLineId, TimelineHistory>,
    pos: &WalFileName,
    seg_size: WalSegSize,
) -> Option<&'h TimelineHistory> {
    let tli = pos.timeline();
    let segno = pos.segno(seg_size)?;
    histories.values().rev().find(|h| {
        h.tli > tli
            && h.ancestors.iter().any(|a| a.tli == tli && a.switchpoint.segment(seg_size) > segno)
    })
}

fn load_histories(repo: &Repository) -> Result<BTreeMap<TimeLineId, TimelineHistory>> {
    Ok(crate::index::verify::timelines(repo)?
        .into_iter()
        .filter_map(|(t, info)| info.history.map(|h| (t, h)))
        .collect())
}

/// The prefetcher: keeps the `count` segments after the spool's position present until nothing
/// is left to do or half of `deadline` has passed. Returns how many segments it fetched.
pub fn run_prefetcher(
    repo: &Repository,
    dir: &PrefetchDir,
    count: usize,
    parallel: usize,
    deadline: Instant,
) -> Result<usize> {
    let started = Instant::now();
    let cutoff = started + deadline.saturating_duration_since(started) / 2;
    let cfg = repo.require_config()?;
    let seg_size = cfg.wal_segment_size;
    let mut histories: Option<BTreeMap<TimeLineId, TimelineHistory>> = None;
    let mut fetched = 0usize;
    loop {
        let Some(lock) = dir.try_lock()? else { return Ok(fetched) };
        dir.remove_temporaries();
        let mut handled = None;
        while Instant::now() < cutoff {
            let Some(pos) = dir.position() else { break };
            if histories.is_none() {
                histories = Some(load_histories(repo)?);
            }
            let hist = histories.as_ref().and_then(|h| newest_descendant(h, &pos, seg_size));
            let wanted: Vec<WalFileName> = plan(&pos, seg_size, hist, count)
                .into_iter()
                .filter(|n| !(dir.read_meta(n).is_some() && dir.entry(n).exists()))
                .collect();
            handled = Some(pos.clone());
            if wanted.is_empty() {
                break;
            }
            let (got, end) = fetch_in_order(repo, &cfg, dir, &wanted, parallel, cutoff)?;
            fetched += got;
            if end || got == 0 {
                break;
            }
        }
        drop(lock);
        // A request that arrived while we held the lock may have found it taken: look again.
        if dir.position() == handled || Instant::now() >= cutoff {
            return Ok(fetched);
        }
    }
}

/// Fetches `names` with `parallel` workers in order; at the first name the repository does not
/// hold, no later one is started. Returns (segments fetched, whether the archive ended).
fn fetch_in_order(
    repo: &Repository,
    cfg: &RepoConfig,
    dir: &PrefetchDir,
    names: &[WalFileName],
    parallel: usize,
    cutoff: Instant,
) -> Result<(usize, bool)> {
    let next = AtomicUsize::new(0);
    let stop_at = AtomicUsize::new(usize::MAX);
    let fetched = AtomicUsize::new(0);
    let failure: Mutex<Option<WalrsError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..parallel.clamp(1, names.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(name) = names.get(i) else { return };
                    if i > stop_at.load(Ordering::SeqCst) || Instant::now() >= cutoff {
                        return;
                    }
                    match dir.prefetch_one(repo, cfg, name) {
                        Ok(true) => {
                            fetched.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(false) => {
                            stop_at.fetch_min(i, Ordering::SeqCst);
                        }
                        Err(e) => {
                            stop_at.fetch_min(i, Ordering::SeqCst);
                            if let Ok(mut f) = failure.lock() {
                                f.get_or_insert(e);
                            }
                        }
                    }
                }
            });
        }
    });
    let got = fetched.load(Ordering::SeqCst);
    if let Some(e) = failure.into_inner().ok().flatten() {
        if got == 0 {
            return Err(e);
        }
        tracing::warn!("prefetch stopped: {e}");
    }
    Ok((got, stop_at.load(Ordering::SeqCst) != usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::Lsn;
    use crate::pg::history::TimelineHistoryEntry;

    fn n(s: &str) -> WalFileName {
        WalFileName::parse(s).unwrap()
    }

    fn tli(t: u32) -> TimeLineId {
        TimeLineId::new(t).unwrap()
    }

    #[test]
    fn plan_follows_one_timeline_without_history() {
        let got = plan(&n("0000000100000000000000FE"), WalSegSize::DEFAULT, None, 3);
        let names: Vec<String> = got.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            names,
            ["0000000100000000000000FF", "000000010000000100000000", "000000010000000100000001"]
        );
    }

    #[test]
    fn plan_switches_timeline_in_the_switch_segment() {
        // Timeline 1 ended at 0/5800100 (segment 5), timeline 2 at 0/8000000 (segment 8).
        let h = TimelineHistory {
            tli: tli(3),
            ancestors: vec![
                TimelineHistoryEntry {
                    tli: tli(1),
                    switchpoint: "0/5800100".parse::<Lsn>().unwrap(),
                    reason: String::new(),
                },
                TimelineHistoryEntry {
                    tli: tli(2),
                    switchpoint: "0/8000000".parse::<Lsn>().unwrap(),
                    reason: String::new(),
                },
            ],
        };
        let got = plan(&n("000000010000000000000003"), WalSegSize::DEFAULT, Some(&h), 6);
        let names: Vec<String> = got.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            names,
            [
                "000000010000000000000004",
                "000000020000000000000005",
                "000000020000000000000006",
                "000000020000000000000007",
                "000000030000000000000008",
                "000000030000000000000009",
            ]
        );
        // Never back to an older timeline than the one asked for.
        let got = plan(&n("000000030000000000000003"), WalSegSize::DEFAULT, Some(&h), 1);
        assert_eq!(got[0].to_string(), "000000030000000000000004");
        // Asked for timeline 1 at segment 6, after timeline 2 began (segment 5): PostgreSQL is
        // not following 2 or 3 (a recovery_target_timeline of 1).
        let mut all = BTreeMap::new();
        all.insert(tli(3), h.clone());
        let ws = WalSegSize::DEFAULT;
        assert!(newest_descendant(&all, &n("000000010000000000000006"), ws).is_none());
        assert_eq!(
            newest_descendant(&all, &n("000000010000000000000004"), ws).map(|h| h.tli),
            Some(tli(3))
        );
        assert_eq!(
            newest_descendant(&all, &n("000000020000000000000007"), ws).map(|h| h.tli),
            Some(tli(3))
        );
        assert!(newest_descendant(&all, &n("000000020000000000000008"), ws).is_none());
        // A history that does not descend from the position's timeline is ignored.
        let got = plan(&n("000000070000000000000003"), WalSegSize::DEFAULT, Some(&h), 1);
        assert_eq!(got[0].to_string(), "000000070000000000000004");
    }
}
