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

use super::BackupManifest;
use super::tar::TarHeader;
use crate::error::{Kind, Result, WalrsError};
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
    let key = BackupChunk::key(chunk)?;
    let mut dec = repo.open::<BackupChunk>(chunk).map_err(|e| {
        if e.kind == Kind::NotFound {
            WalrsError::new(
                Kind::Corrupt,
                format!("chunk {key} of the backup is missing from the repository ({e})"),
            )
        } else {
            e
        }
    })?;
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

/// Restores the backup's files.
pub fn restore_files(
    repo: &Repository,
    m: &BackupManifest,
    o: &RestoreOptions,
) -> Result<RestoreStats> {
    let mut dests: Vec<(PathBuf, bool)> = Vec::new();
    match restore_into(repo, m, o, &mut dests) {
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
