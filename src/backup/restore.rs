//! Materialising a backup: every chunk decoded and extracted in parallel (chunks hold whole tar
//! entries, so they extract independently), directories 0700 and files 0600 as PostgreSQL
//! requires, every file fsynced, tablespaces at their locations or remapped. `backup_label` and
//! `tablespace_map` come out byte for byte (the map is rewritten only when tablespaces are
//! remapped, and then the original is kept beside it).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::tar::TarHeader;
use super::{BackupManifest, FrameReader, chain_members, load_manifest};
use crate::error::{Kind, Result, WalrsError};
use crate::pg::incremental::{self, BLCKSZ, FIXED_HEADER_LEN, IncrementalHeader};
use crate::repo::{BackupChunk, ChunkId, RepoObject, Repository};

/// Options of a data-directory restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// The data directory to create (must be absent or empty).
    pub pgdata: PathBuf,
    /// Tablespace locations to move: (old, new).
    pub tablespace_map: Vec<(String, String)>,
    /// Parallel chunk workers.
    pub workers: usize,
}

/// What a restore wrote.
#[derive(Debug, Default)]
pub struct RestoreStats {
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// The destinations written into, and whether the restore created them (else they existed
    /// and were empty): what [`remove_restored`] undoes.
    pub dests: Vec<(PathBuf, bool)>,
}

/// The top-level directory of the data directory that walrs's WAL spool may occupy on the
/// server: never restored (its content belongs to the original server's archiving).
pub const SPOOL_DIR: &str = "walrs_spool";

/// Whether a tar entry of the data directory's archive lies in [`SPOOL_DIR`].
fn in_spool(name: &str) -> bool {
    let rel = name.trim_start_matches("./");
    rel.strip_prefix(SPOOL_DIR).is_some_and(|r| r.is_empty() || r.starts_with('/'))
}

/// Removes what a restore wrote: every destination it created, and the content of those that
/// existed (empty) before. Best effort: what cannot be removed is logged.
pub fn remove_restored(dests: &[(PathBuf, bool)]) {
    for (d, created) in dests {
        let res = if *created {
            fs::remove_dir_all(d)
        } else {
            fs::read_dir(d).and_then(|rd| {
                for e in rd {
                    let p = e?.path();
                    if p.is_dir() && !p.is_symlink() {
                        fs::remove_dir_all(&p)?;
                    } else {
                        fs::remove_file(&p)?;
                    }
                }
                Ok(())
            })
        };
        match res {
            Ok(()) => tracing::info!("removed what the failed restore wrote into {}", d.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::error!(
                "could not remove what the failed restore wrote into {}: {e}; remove it by hand",
                d.display()
            ),
        }
    }
}

fn io(what: &str, p: &Path, e: std::io::Error) -> WalrsError {
    crate::durable::local_io(what, p, &e)
}

/// Checks that `p` is an empty directory or creates it; returns whether it created it.
fn ensure_empty_dir(p: &Path) -> Result<bool> {
    match fs::read_dir(p) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(WalrsError::new(
                    Kind::InvalidInput,
                    format!("{} is not empty", p.display()),
                )
                .hint("restore into a new or empty directory"));
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(p)
            .map(|()| true)
            .map_err(|e| io("creating", p, e)),
        Err(e) => Err(io("reading", p, e)),
    }
}

/// Where an archive's content goes.
fn archive_dest(m: &BackupManifest, a: &super::Archive, o: &RestoreOptions) -> Result<PathBuf> {
    match (&a.tablespace_oid, &a.location) {
        (None, _) => Ok(o.pgdata.clone()),
        (Some(_), Some(loc)) => {
            let mapped =
                o.tablespace_map.iter().find(|(old, _)| old == loc).map(|(_, new)| new.clone());
            Ok(PathBuf::from(mapped.unwrap_or_else(|| loc.clone())))
        }
        (Some(oid), None) => Err(WalrsError::new(
            Kind::Corrupt,
            format!("backup {}: tablespace {oid} has no location", m.id),
        )),
    }
}

/// A safe relative path inside `dest`.
fn entry_path(dest: &Path, name: &str) -> Result<PathBuf> {
    let rel = Path::new(name.trim_start_matches("./"));
    if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(WalrsError::new(Kind::Corrupt, format!("unsafe path {name:?} in the backup")));
    }
    Ok(dest.join(rel))
}

/// Extracts one chunk (a run of whole tar entries) into `dest`; with `skip_spool` (the data
/// directory's archive), entries in [`SPOOL_DIR`] are read past, not written.
fn extract_chunk(
    repo: &Repository,
    chunk: &ChunkId,
    dest: &Path,
    skip_spool: bool,
    stats: &Mutex<RestoreStats>,
) -> Result<()> {
    let (key, mut dec) = open_chunk(repo, chunk)?;
    let mut frame = Vec::new();
    let mut header: Vec<u8> = Vec::with_capacity(512);
    // (file, bytes of data left, padding left)
    let mut current: Option<(Option<File>, u64, u64, PathBuf)> = None;
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut ended = false;
    while dec.next_frame(&mut frame)? {
        let mut data: &[u8] = &frame;
        while !data.is_empty() && !ended {
            if let Some((file, left, pad, path)) = current.as_mut() {
                if *left > 0 {
                    let n = (*left).min(data.len() as u64) as usize;
                    if let Some(f) = file.as_mut() {
                        f.write_all(data.get(..n).unwrap_or_default())
                            .map_err(|e| io("writing", path, e))?;
                        bytes += n as u64;
                    }
                    *left -= n as u64;
                    data = data.get(n..).unwrap_or_default();
                    continue;
                }
                if *pad > 0 {
                    let n = (*pad).min(data.len() as u64) as usize;
                    *pad -= n as u64;
                    data = data.get(n..).unwrap_or_default();
                    continue;
                }
                if let Some((Some(f), _, _, path)) = current.take() {
                    f.sync_all().map_err(|e| io("syncing", &path, e))?;
                }
                continue;
            }
            let want = 512 - header.len();
            let n = want.min(data.len());
            header.extend_from_slice(data.get(..n).unwrap_or_default());
            data = data.get(n..).unwrap_or_default();
            if header.len() < 512 {
                continue;
            }
            if header.iter().all(|b| *b == 0) {
                ended = true;
                break;
            }
            let h = TarHeader::parse(&header).ok_or_else(|| {
                WalrsError::new(Kind::Corrupt, format!("{key}: malformed tar header"))
            })?;
            header.clear();
            let path = entry_path(dest, &h.path)?;
            if skip_spool && in_spool(&h.path) {
                let data_len = if h.is_file() { h.size } else { 0 };
                current = Some((None, data_len, h.padded_size() - data_len, path));
                continue;
            }
            match h.typeflag {
                b'5' => {
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(&path)
                        .map_err(|e| io("creating", &path, e))?;
                    current = Some((None, 0, h.padded_size(), path));
                }
                b'2' => {
                    if let Some(parent) = path.parent() {
                        fs::DirBuilder::new()
                            .recursive(true)
                            .mode(0o700)
                            .create(parent)
                            .map_err(|e| io("creating", parent, e))?;
                    }
                    // A chunk extracted a second time (`reread`) finds its own link.
                    if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                        fs::remove_file(&path).map_err(|e| io("replacing", &path, e))?;
                    }
                    std::os::unix::fs::symlink(&h.link, &path)
                        .map_err(|e| io("linking", &path, e))?;
                    current = Some((None, 0, h.padded_size(), path));
                }
                _ if h.is_file() => {
                    if let Some(parent) = path.parent() {
                        fs::DirBuilder::new()
                            .recursive(true)
                            .mode(0o700)
                            .create(parent)
                            .map_err(|e| io("creating", parent, e))?;
                    }
                    let f = OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&path)
                        .map_err(|e| io("creating", &path, e))?;
                    files += 1;
                    current = Some((Some(f), h.size, h.padded_size() - h.size, path));
                }
                other => {
                    tracing::warn!(
                        "{key}: skipping tar entry {:?} of type {:?}",
                        h.path,
                        other as char
                    );
                    current = Some((None, 0, h.padded_size(), path));
                }
            }
        }
    }
    if let Some((Some(f), left, _, path)) = current.take() {
        if left > 0 {
            return Err(WalrsError::new(
                Kind::Corrupt,
                format!("{key}: truncated inside {}", path.display()),
            ));
        }
        f.sync_all().map_err(|e| io("syncing", &path, e))?;
    }
    if let Ok(mut s) = stats.lock() {
        s.files += files;
        s.bytes += bytes;
    }
    Ok(())
}

fn fsync_tree(dir: &Path) -> Result<()> {
    for e in fs::read_dir(dir).map_err(|e| io("reading", dir, e))? {
        let e = e.map_err(|e| io("reading", dir, e))?;
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            fsync_tree(&e.path())?;
        }
    }
    crate::durable::sync_dir(dir).map_err(|e| io("syncing", dir, e))
}

/// Restores the backup's files; an incremental backup with its chain
/// ([`restore_chain_into`]), every member read from the repository and checked first.
pub fn restore_files(
    repo: &Repository,
    m: &BackupManifest,
    o: &RestoreOptions,
) -> Result<RestoreStats> {
    let chain = load_chain(repo, m)?;
    let mut dests: Vec<(PathBuf, bool)> = Vec::new();
    let restored = if chain.len() > 1 {
        restore_chain_into(repo, &chain, o, &mut dests)
    } else {
        restore_into(repo, m, o, &mut dests)
    };
    match restored {
        Ok(mut stats) => {
            stats.dests = dests;
            Ok(stats)
        }
        Err(e) => {
            remove_restored(&dests);
            if e.hint.is_some() || dests.is_empty() {
                return Err(e);
            }
            Err(e.hint(format!("what the restore of backup {} wrote was removed again", m.id)))
        }
    }
}

fn restore_into(
    repo: &Repository,
    m: &BackupManifest,
    o: &RestoreOptions,
    dests: &mut Vec<(PathBuf, bool)>,
) -> Result<RestoreStats> {
    let mut jobs: Vec<(ChunkId, PathBuf, bool, u64)> = Vec::new();
    for a in &m.archives {
        let dest = archive_dest(m, a, o)?;
        let created = ensure_empty_dir(&dest)?;
        dests.push((dest.clone(), created));
        for c in &a.chunks {
            let base = a.tablespace_oid.is_none();
            jobs.push((ChunkId::from_key(&c.key)?, dest.clone(), base, c.plain_len));
        }
    }
    let stats = Mutex::new(RestoreStats::default());
    let next = AtomicUsize::new(0);
    let first_error: Mutex<Option<WalrsError>> = Mutex::new(None);
    let workers = o.workers.clamp(1, 16).min(jobs.len().max(1));
    let progress =
        crate::progress::Progress::new("restore", jobs.iter().map(|(_, _, _, n)| *n).sum::<u64>());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some((k, dest, base, len)) = jobs.get(i) else { break };
                    if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                        break;
                    }
                    // A chunk that fails verification from a network backend is extracted
                    // once more (every file it writes is created or replaced anew).
                    let name = BackupChunk::key(k).map(|k| k.to_string()).unwrap_or_default();
                    let extracted = crate::repo::reread::read_verified(repo, &name, || {
                        extract_chunk(repo, k, dest, *base, &stats)
                    });
                    match extracted {
                        Ok(()) => progress.add(*len),
                        Err(e) => {
                            if let Ok(mut slot) = first_error.lock() {
                                slot.get_or_insert(e);
                            }
                        }
                    }
                }
            });
        }
    });
    progress.finish();
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    // The tablespace map names the locations: rewrite it when they moved.
    if !o.tablespace_map.is_empty() {
        let map = o.pgdata.join("tablespace_map");
        match fs::read(&map) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| {
                    WalrsError::new(
                        Kind::Corrupt,
                        format!("{}: not UTF-8; cannot remap its locations", map.display()),
                    )
                })?;
                let write = crate::durable::write_file;
                write(&o.pgdata.join("tablespace_map.walrs-original"), text.as_bytes())?;
                let rewritten: String = text
                    .lines()
                    .map(|l| {
                        let (oid, path) = l.split_once(' ').unwrap_or((l, ""));
                        let new = o
                            .tablespace_map
                            .iter()
                            .find(|(old, _)| old == path)
                            .map(|(_, n)| n.as_str())
                            .unwrap_or(path);
                        format!("{oid} {new}\n")
                    })
                    .collect();
                write(&map, rewritten.as_bytes())?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("reading", &map, e)),
        }
    }
    for (d, _) in dests.iter() {
        fsync_tree(d)?;
    }
    Ok(stats.into_inner().unwrap_or_default())
}

/// Hands everything a restore wrote to `uid`:`gid` (`restore --owner`): each destination (the
/// data directory, the tablespaces' directories) and all below it, symbolic links themselves
/// (`lchown`), never what they point to. A separate last step: PostgreSQL runs only on a data
/// directory its own user owns, and a restore run as root writes root's files. Returns the
/// number of entries changed.
pub fn chown_restored(dests: &[(PathBuf, bool)], uid: u32, gid: u32) -> Result<u64> {
    fn walk(p: &Path, uid: u32, gid: u32, n: &mut u64) -> Result<()> {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(|e| io("chown of", p, e))?;
        *n += 1;
        let meta = fs::symlink_metadata(p).map_err(|e| io("reading", p, e))?;
        if meta.is_dir() {
            for e in fs::read_dir(p).map_err(|e| io("reading", p, e))? {
                let e = e.map_err(|e| io("reading", p, e))?;
                walk(&e.path(), uid, gid, n)?;
            }
        }
        Ok(())
    }
    let mut n = 0;
    for (d, _) in dests {
        walk(d, uid, gid, &mut n)?;
    }
    Ok(n)
}

/// The members of `m`'s chain, oldest first (`[m]` for a full backup), each read from the
/// repository: a member that is missing or incomplete, or that does not match the chain `m`
/// records, refuses the restore before anything is written (exit 19).
pub fn load_chain(repo: &Repository, m: &BackupManifest) -> Result<Vec<BackupManifest>> {
    if !m.is_incremental() {
        return Ok(vec![m.clone()]);
    }
    let mut loaded = Vec::new();
    for id in &m.chain {
        if *id == m.id {
            continue;
        }
        match load_manifest(repo, id)? {
            Some(b) => loaded.push(b),
            None => {
                return Err(WalrsError::new(
                    Kind::Unreachable,
                    format!("backup {}: member {id} of its chain is missing or incomplete", m.id),
                )
                .hint(
                    "an incremental backup restores only with its whole chain; nothing was written",
                ));
            }
        }
    }
    let members = chain_members(&loaded, m)
        .map_err(|e| WalrsError::new(Kind::Unreachable, e).hint("nothing was written"))?;
    Ok(members.into_iter().cloned().collect())
}

/// A file of the newest member stored as `INCREMENTAL.<name>` whose blocks below the truncation
/// length are not all written yet: older members fill them.
struct Need {
    /// The truncation block length of the newest member's incremental file.
    truncation: u32,
    /// Which blocks below `truncation` are written.
    have: Vec<bool>,
    /// How many are not.
    missing: u32,
}

impl Need {
    fn want(&self, b: u32) -> bool {
        b < self.truncation && !self.have.get(b as usize).copied().unwrap_or(true)
    }

    fn got(&mut self, b: u32) {
        if let Some(h) = self.have.get_mut(b as usize)
            && !*h
        {
            *h = true;
            self.missing -= 1;
        }
    }
}

/// Blocks written at their place in a file, consecutive ones gathered into one write of up to
/// [`BlockRuns::MAX_BLOCKS`] blocks (a whole relation file of a chain's full member is one
/// `pwrite` per MiB, not one per 8 kB block). Memory: one run's buffer per worker.
struct BlockRuns<'f> {
    file: &'f File,
    path: &'f Path,
    /// The first block of the gathered run.
    start: u64,
    /// The run's bytes (a whole number of blocks).
    buf: Vec<u8>,
}

impl<'f> BlockRuns<'f> {
    const MAX_BLOCKS: usize = 128;

    fn new(file: &'f File, path: &'f Path, buf: Vec<u8>) -> Self {
        let mut buf = buf;
        buf.clear();
        BlockRuns { file, path, start: 0, buf }
    }

    /// Adds block `b` (its bytes read from `r`), writing the run first when `b` does not
    /// continue it or it is full.
    fn add(&mut self, b: u32, r: &mut impl std::io::Read) -> Result<std::io::Result<()>> {
        let n = (self.buf.len() as u64) / BLCKSZ;
        if !self.buf.is_empty()
            && (self.start + n != u64::from(b)
                || self.buf.len() >= Self::MAX_BLOCKS * BLCKSZ as usize)
        {
            self.flush()?;
        }
        if self.buf.is_empty() {
            self.start = u64::from(b);
        }
        let at = self.buf.len();
        self.buf.resize(at + BLCKSZ as usize, 0);
        let slot = self.buf.get_mut(at..).unwrap_or_default();
        Ok(r.read_exact(slot))
    }

    /// Writes the gathered run.
    fn flush(&mut self) -> Result<()> {
        use std::os::unix::fs::FileExt;
        if !self.buf.is_empty() {
            self.file
                .write_all_at(&self.buf, self.start * BLCKSZ)
                .map_err(|e| io("writing", self.path, e))?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes what is left and gives the buffer back for the next file.
    fn finish(mut self) -> Result<Vec<u8>> {
        self.flush()?;
        Ok(std::mem::take(&mut self.buf))
    }
}

/// Which member a chain restore pass reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The newest member: every entry is restored (incremental files as their blocks).
    Newest,
    /// An older member: only the blocks still needed.
    Older,
}

/// Restores a chain (oldest first, the restored backup last) with no combine step and no
/// staging copy: the newest member is extracted as a backup is (its directory tree, every file
/// it holds whole, `backup_label` without its `INCREMENTAL FROM` lines as `pg_combinebackup`
/// writes it), each of its `INCREMENTAL.<name>` files as `<name>` with its blocks written in
/// place and the file sized to its reconstructed length; then each older member, newest first,
/// fills the blocks still needed below the truncation length, each block written once, until
/// a member holds the file whole. What no member has stays zero, as in `pg_combinebackup`.
/// Files the newest member does not have (dropped relations) are not restored. Each member's
/// chunks extract in parallel (a file is in one chunk); the members one after another.
fn restore_chain_into(
    repo: &Repository,
    chain: &[BackupManifest],
    o: &RestoreOptions,
    dests: &mut Vec<(PathBuf, bool)>,
) -> Result<RestoreStats> {
    let newest =
        chain.last().ok_or_else(|| WalrsError::new(Kind::Internal, "an empty chain to restore"))?;
    // Destinations by archive name, from the newest member.
    let mut by_archive: Vec<(String, PathBuf, bool)> = Vec::new();
    for a in &newest.archives {
        let dest = archive_dest(newest, a, o)?;
        let created = ensure_empty_dir(&dest)?;
        dests.push((dest.clone(), created));
        by_archive.push((a.name.clone(), dest, a.tablespace_oid.is_none()));
    }
    let pending: Mutex<std::collections::HashMap<PathBuf, Need>> =
        Mutex::new(std::collections::HashMap::new());
    let stats = Mutex::new(RestoreStats::default());
    let total: u64 = chain
        .iter()
        .flat_map(|m| m.archives.iter())
        .flat_map(|a| a.chunks.iter())
        .map(|c| c.plain_len)
        .sum();
    let progress = crate::progress::Progress::new("restore", total);
    for (i, m) in chain.iter().enumerate().rev() {
        let pass = if i + 1 == chain.len() { Pass::Newest } else { Pass::Older };
        if pass == Pass::Older && pending.lock().map(|p| p.is_empty()).unwrap_or(false) {
            break;
        }
        let mut jobs: Vec<(ChunkId, PathBuf, bool, u64)> = Vec::new();
        for a in &m.archives {
            // A tablespace the newest member no longer has is not restored.
            let Some((_, dest, base)) = by_archive.iter().find(|(n, _, _)| *n == a.name) else {
                continue;
            };
            for c in &a.chunks {
                jobs.push((ChunkId::from_key(&c.key)?, dest.clone(), *base, c.plain_len));
            }
        }
        run_jobs(&jobs, o.workers, &progress, |k, dest, base| {
            let name = BackupChunk::key(k).map(|k| k.to_string()).unwrap_or_default();
            crate::repo::reread::read_verified(repo, &name, || {
                extract_chain_chunk(repo, k, dest, base, pass, &pending, &stats)
            })
        })?;
    }
    progress.finish();
    let left = pending.into_inner().unwrap_or_default();
    if let Some(path) = left.keys().next() {
        return Err(WalrsError::new(
            Kind::Corrupt,
            format!(
                "backup {}: {} is incremental and no older member of its chain holds it whole ({} file(s) in all)",
                newest.id,
                path.display(),
                left.len()
            ),
        ));
    }
    for (d, _) in dests.iter() {
        fsync_tree(d)?;
    }
    Ok(stats.into_inner().unwrap_or_default())
}

/// Runs `work` on every job on up to `workers` threads; the first error stops the others.
fn run_jobs(
    jobs: &[(ChunkId, PathBuf, bool, u64)],
    workers: usize,
    progress: &crate::progress::Progress,
    work: impl Fn(&ChunkId, &Path, bool) -> Result<()> + Sync,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let first_error: Mutex<Option<WalrsError>> = Mutex::new(None);
    let workers = workers.clamp(1, 16).min(jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some((k, dest, base, len)) = jobs.get(i) else { break };
                    if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                        break;
                    }
                    match work(k, dest, *base) {
                        Ok(()) => progress.add(*len),
                        Err(e) => {
                            if let Ok(mut slot) = first_error.lock() {
                                slot.get_or_insert(e);
                            }
                        }
                    }
                }
            });
        }
    });
    match first_error.into_inner().ok().flatten() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` at a clean end before the first byte.
fn read_or_end(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let n = crate::bytes::read_full(r, buf)?;
    if n == 0 {
        return Ok(false);
    }
    if n < buf.len() {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "truncated"));
    }
    Ok(true)
}

/// Reads and drops `n` bytes.
fn skip<R: std::io::Read>(r: &mut R, n: u64) -> std::io::Result<()> {
    let got = std::io::copy(&mut std::io::Read::take(&mut *r, n), &mut std::io::sink())?;
    if got < n {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "truncated"));
    }
    Ok(())
}

/// The largest `backup_label` read into memory to drop its incremental lines.
const MAX_LABEL: u64 = 1 << 20;

/// `backup_label` of an incremental backup as `pg_combinebackup` writes it for the combined
/// directory: without the `INCREMENTAL FROM LSN:` and `INCREMENTAL FROM TLI:` lines (a server
/// refuses to start on a label that has them).
pub fn combined_backup_label(label: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(label.len());
    for line in label.split_inclusive(|b| *b == b'\n') {
        if line.starts_with(b"INCREMENTAL FROM LSN: ")
            || line.starts_with(b"INCREMENTAL FROM TLI: ")
        {
            continue;
        }
        out.extend_from_slice(line);
    }
    out
}

fn mkdirs(p: &Path) -> Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(p).map_err(|e| io("creating", p, e))
}

/// Reads an incremental file's header from a tar entry of `data_len` bytes (the fixed part, the
/// block numbers, the padding); the reader is left at the first block.
fn read_incremental_header<R: std::io::Read>(
    r: &mut R,
    data_len: u64,
    key: &crate::storage::ObjectKey,
    path: &str,
) -> Result<(IncrementalHeader, Vec<u32>)> {
    let corrupt = |what: String| WalrsError::new(Kind::Corrupt, format!("{key}: {path}: {what}"));
    if data_len < FIXED_HEADER_LEN as u64 {
        return Err(corrupt(format!("{data_len} bytes, too short for an incremental file")));
    }
    let mut fixed = [0u8; FIXED_HEADER_LEN];
    r.read_exact(&mut fixed).map_err(|e| corrupt(e.to_string()))?;
    let ih = IncrementalHeader::parse(&fixed).map_err(|e| corrupt(e.to_string()))?;
    ih.check_size(data_len).map_err(|e| corrupt(e.to_string()))?;
    let mut nums = vec![0u8; 4 * ih.num_blocks as usize];
    r.read_exact(&mut nums).map_err(|e| corrupt(e.to_string()))?;
    let blocks = ih.block_numbers(&nums).map_err(|e| corrupt(e.to_string()))?;
    skip(r, ih.header_len() - FIXED_HEADER_LEN as u64 - nums.len() as u64)
        .map_err(|e| corrupt(e.to_string()))?;
    Ok((ih, blocks))
}

/// One chunk of a chain member (see [`restore_chain_into`]).
fn extract_chain_chunk(
    repo: &Repository,
    chunk: &ChunkId,
    dest: &Path,
    base: bool,
    pass: Pass,
    pending: &Mutex<std::collections::HashMap<PathBuf, Need>>,
    stats: &Mutex<RestoreStats>,
) -> Result<()> {
    use std::io::Read;
    let (key, dec) = open_chunk(repo, chunk)?;
    let mut r = std::io::BufReader::with_capacity(256 * 1024, FrameReader::new(dec));
    let read_err = |e: std::io::Error| WalrsError::new(Kind::Corrupt, format!("{key}: {e}"));
    let corrupt = |what: String| WalrsError::new(Kind::Corrupt, format!("{key}: {what}"));
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut header = [0u8; 512];
    let mut block = vec![0u8; BLCKSZ as usize];
    let mut run_buf: Vec<u8> = Vec::with_capacity(BlockRuns::MAX_BLOCKS * BLCKSZ as usize);
    loop {
        if !read_or_end(&mut r, &mut header).map_err(read_err)? {
            break;
        }
        if header.iter().all(|b| *b == 0) {
            // The end of the archive: the rest is zero padding; the digest is checked by
            // reading to the end.
            std::io::copy(&mut r, &mut std::io::sink()).map_err(read_err)?;
            break;
        }
        let h = TarHeader::parse(&header).ok_or_else(|| corrupt("malformed tar header".into()))?;
        let data_len = if h.is_file() { h.size } else { 0 };
        let pad = h.padded_size() - data_len;
        let path = entry_path(dest, &h.path)?;
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let skip_all = (base && in_spool(&h.path))
            || !(h.is_file() || (pass == Pass::Newest && matches!(h.typeflag, b'5' | b'2')));
        if skip_all {
            if !h.is_file() && !matches!(h.typeflag, b'5' | b'2') {
                tracing::warn!(
                    "{key}: skipping tar entry {:?} of type {:?}",
                    h.path,
                    h.typeflag as char
                );
            }
            skip(&mut r, data_len + pad).map_err(read_err)?;
            continue;
        }
        match (pass, h.typeflag) {
            (_, b'5') => mkdirs(&path)?,
            (_, b'2') => {
                if let Some(parent) = path.parent() {
                    mkdirs(parent)?;
                }
                if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                    fs::remove_file(&path).map_err(|e| io("replacing", &path, e))?;
                }
                std::os::unix::fs::symlink(&h.link, &path).map_err(|e| io("linking", &path, e))?;
            }
            _ => {}
        }
        if !h.is_file() {
            skip(&mut r, data_len + pad).map_err(read_err)?;
            continue;
        }
        let target = incremental::restored_name(file_name).map(|n| path.with_file_name(n));
        let open = |p: &Path, truncate: bool| -> Result<File> {
            if let Some(parent) = p.parent() {
                mkdirs(parent)?;
            }
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(truncate)
                .mode(0o600)
                .open(p)
                .map_err(|e| io("creating", p, e))
        };
        match (pass, target) {
            (Pass::Newest, None) => {
                let mut f = open(&path, true)?;
                if base
                    && h.path.trim_start_matches("./") == "backup_label"
                    && data_len <= MAX_LABEL
                {
                    let mut label = vec![0u8; data_len as usize];
                    r.read_exact(&mut label).map_err(read_err)?;
                    let label = combined_backup_label(&label);
                    f.write_all(&label).map_err(|e| io("writing", &path, e))?;
                    bytes += label.len() as u64;
                } else {
                    let n = std::io::copy(&mut (&mut r).take(data_len), &mut f)
                        .map_err(|e| io("writing", &path, e))?;
                    if n < data_len {
                        return Err(corrupt(format!("truncated inside {}", path.display())));
                    }
                    bytes += n;
                }
                f.sync_all().map_err(|e| io("syncing", &path, e))?;
                files += 1;
            }
            (Pass::Newest, Some(t)) => {
                let (ih, blocks) = read_incremental_header(&mut r, data_len, &key, &h.path)?;
                let f = open(&t, true)?;
                let len = u64::from(ih.reconstructed_len(&blocks)) * BLCKSZ;
                f.set_len(len).map_err(|e| io("sizing", &t, e))?;
                let mut need = Need {
                    truncation: ih.truncation_block_length,
                    have: vec![false; ih.truncation_block_length as usize],
                    missing: ih.truncation_block_length,
                };
                let mut runs = BlockRuns::new(&f, &t, std::mem::take(&mut run_buf));
                for b in &blocks {
                    runs.add(*b, &mut r)?.map_err(read_err)?;
                    bytes += BLCKSZ;
                    need.got(*b);
                }
                run_buf = runs.finish()?;
                files += 1;
                // A file still missing blocks is synced once, by the member that completes it.
                if need.missing == 0 {
                    f.sync_all().map_err(|e| io("syncing", &t, e))?;
                } else if let Ok(mut p) = pending.lock() {
                    p.insert(t, need);
                }
            }
            (Pass::Older, target) => {
                let whole = target.is_none();
                let t = target.unwrap_or_else(|| path.clone());
                let need = pending.lock().ok().and_then(|mut p| p.remove(&t));
                let Some(mut need) = need else {
                    skip(&mut r, data_len + pad).map_err(read_err)?;
                    continue;
                };
                let f = open(&t, false)?;
                let mut runs = BlockRuns::new(&f, &t, std::mem::take(&mut run_buf));
                let used = if whole {
                    // Every block it has below the truncation length that no newer member had.
                    let n = data_len / BLCKSZ;
                    for b in 0..n {
                        let b32 = u32::try_from(b).unwrap_or(u32::MAX);
                        if need.want(b32) {
                            runs.add(b32, &mut r)?.map_err(read_err)?;
                            bytes += BLCKSZ;
                            need.got(b32);
                        } else {
                            r.read_exact(&mut block).map_err(read_err)?;
                        }
                    }
                    n * BLCKSZ
                } else {
                    let (_, blocks) = read_incremental_header(&mut r, data_len, &key, &h.path)?;
                    for b in &blocks {
                        if need.want(*b) {
                            runs.add(*b, &mut r)?.map_err(read_err)?;
                            bytes += BLCKSZ;
                            need.got(*b);
                        } else {
                            r.read_exact(&mut block).map_err(read_err)?;
                        }
                    }
                    data_len
                };
                run_buf = runs.finish()?;
                skip(&mut r, data_len - used).map_err(read_err)?;
                // A whole file ends the search; an incremental one passes it on. The file is
                // synced once, when it leaves the search (not by every member that adds to it).
                if !whole && need.missing > 0 {
                    if let Ok(mut p) = pending.lock() {
                        p.insert(t, need);
                    }
                } else {
                    f.sync_all().map_err(|e| io("syncing", &t, e))?;
                }
                skip(&mut r, pad).map_err(read_err)?;
                continue;
            }
        }
        skip(&mut r, pad).map_err(read_err)?;
    }
    if let Ok(mut s) = stats.lock() {
        s.files += files;
        s.bytes += bytes;
    }
    Ok(())
}

/// Opens a chunk of the backup; a missing one is corrupt (the manifest names it).
fn open_chunk<'r>(
    repo: &'r Repository,
    chunk: &ChunkId,
) -> Result<(crate::storage::ObjectKey, crate::codec::Decoder<crate::repo::ObjectReader<'r>>)> {
    let key = BackupChunk::key(chunk)?;
    let dec = repo.open::<BackupChunk>(chunk).map_err(|e| {
        if e.kind == Kind::NotFound {
            WalrsError::new(
                Kind::Corrupt,
                format!("chunk {key} of the backup is missing from the repository ({e})"),
            )
        } else {
            e
        }
    })?;
    Ok((key, dec))
}
