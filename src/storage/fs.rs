//! The file-system backend: a repository is a directory on a local or network file system.
//!
//! Every write goes to a temporary file in the target directory (`.tmp.<name>.<pid>.<n>`, mode
//! 0600), is fsynced, then renamed (`put`) or hard-linked (`put_if_absent`, atomic against
//! concurrent writers, also on NFS) into place, and the directory is fsynced. Directories are
//! created 0700, and their parents fsynced, only when a write finds them missing, so the hot path
//! costs one open, the writes, one fsync, a rename (or a stat, a link and an unlink) and one
//! directory fsync. Readers never see a
//! partial object; a crash leaves at most a temporary file, which listings ignore.
//!
//! A repository has one owner, the owner of its root directory (normally the user PostgreSQL's
//! `archive_command` runs as). walrs run as root writes files and directories owned by that
//! owner (a root-owned `walrs.config` would make every `push` fail); any other user is refused
//! before anything is written, naming both users. Reading is not restricted.
//!
//! Temporary files of killed writers are swept (docs/invariants.md, "Temporary files"): a writer
//! holds an `flock` on its temporary file for the file's whole life, and a temporary file that
//! no process holds and that has not been written for [`STALE_TEMP_AGE`] is removed by the next
//! write into its directory (once per directory and process) and by [`Storage::temporaries`]
//! with `remove`. A write that fails removes the directories it created for the object.

use std::fs::{self, File};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{
    BatchDeleteError, Body, ErrorKind, Listing, ObjectKey, ObjectMeta, PutOutcome, Storage,
    StorageError, TempState, Temporary,
};
use crate::bytes::read_full;
use crate::durable::{self, Linked, Naming, TempFile};

/// Prefix of the repository's temporary file names (`.tmp.<name>.<pid>.<n>`, named by
/// [`durable::Naming::Repository`]).
const TEMP_PREFIX: &str = durable::REPOSITORY_TEMP_PREFIX;

/// A temporary file is stale once no process holds its lock and it has not been written for this
/// long. The lock is the proof that its writer is gone; the age covers the instant between its
/// creation and its lock, files of walrs builds that did not lock them, and file systems whose
/// locks other hosts do not see (NFS mounted with `nolock` or `local_lock`): no walrs writer
/// leaves the file it is writing untouched for an hour while it streams into it.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// Read buffer for object streams: large enough that frame reads are one syscall.
const READ_BUFFER: usize = 256 * 1024;

/// A repository directory.
#[derive(Debug)]
pub struct FsStorage {
    root: PathBuf,
    owner: Owner,
    /// Directories this process has swept of stale temporary files (once each).
    swept: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
}

/// Who writes, against who owns the repository root.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    /// The owner writes (or walrs cannot tell who it runs as): files are its own.
    Same,
    /// Root writes into another user's repository: new files and directories get this uid/gid.
    ChownTo(u32, u32),
    /// Another user (`euid`) writes into the repository of `owner`: every write is refused.
    Refuse {
        /// The repository root's owner.
        owner: u32,
        /// Who walrs runs as.
        euid: u32,
    },
}

impl Owner {
    /// The policy for a process running as `euid` in a repository root owned by `uid`:`gid`.
    fn decide(euid: Option<u32>, uid: u32, gid: u32) -> Owner {
        match euid {
            None => Owner::Same,
            Some(e) if e == uid => Owner::Same,
            Some(0) => Owner::ChownTo(uid, gid),
            Some(e) => Owner::Refuse { owner: uid, euid: e },
        }
    }
}

/// What to make of the temporary file `name` (at `path`, last written `age` ago): in use, recent
/// or stale (see [`STALE_TEMP_AGE`]). With `remove`, a stale one is removed while this process
/// holds its lock.
fn sweep_one(path: &Path, name: &str, age: Duration, size: u64, remove: bool) -> TempState {
    // `.tmp.<name>.<pid>.<n>`: this process's own files are in use (or a dead namesake's,
    // which a pid's next owner leaves alone in any case).
    let pid = name.rsplit('.').nth(1).and_then(|p| p.parse::<u32>().ok());
    if pid == Some(std::process::id()) {
        return TempState::InUse;
    }
    if age < STALE_TEMP_AGE {
        return TempState::Recent;
    }
    // A shared lock is granted only if no writer holds its exclusive one. Any failure to tell
    // (a file system without locks) keeps the file.
    let Ok(f) = File::open(path) else { return TempState::InUse };
    if f.try_lock_shared().is_err() {
        return TempState::InUse;
    }
    if remove && fs::remove_file(path).is_ok() {
        tracing::info!("removed the stale temporary file {} ({size} bytes)", path.display());
        return TempState::Removed;
    }
    TempState::Stale
}

/// Sweeps the directory `dir` (not its subdirectories): every temporary file in it, as
/// [`sweep_one`] judges it, in name order, with paths relative to `root`.
fn sweep_dir(
    root: &Path,
    dir: &Path,
    remove: bool,
    out: &mut Vec<Temporary>,
    subdirs: &mut Vec<PathBuf>,
) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut found = Vec::new();
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        if ft.is_dir() && !name.starts_with('.') {
            subdirs.push(e.path());
        } else if ft.is_file() && name.starts_with(TEMP_PREFIX) {
            found.push((name, e.path()));
        }
    }
    found.sort();
    for (name, path) in found {
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        let age = meta
            .modified()
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        let state = sweep_one(&path, &name, age, meta.len(), remove);
        let rel = path.strip_prefix(root).unwrap_or(&path).display().to_string();
        out.push(Temporary { path: rel, size: meta.len(), age, state });
    }
}

impl FsStorage {
    /// Opens the repository at `root`, which must be an existing directory: walrs creates what is
    /// inside, never the root itself, so a missing mount or a typo fails loudly instead of filling
    /// another disk.
    pub fn open(root: &Path) -> Result<Self, StorageError> {
        let key = root.display().to_string();
        match fs::metadata(root) {
            Ok(m) if m.is_dir() => Ok(FsStorage {
                root: root.to_path_buf(),
                owner: Owner::decide(crate::users::effective_uid(), m.uid(), m.gid()),
                swept: Default::default(),
            }),
            Ok(_) => Err(StorageError::new(
                ErrorKind::Misconfigured,
                "open repository",
                &key,
                "not a directory",
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StorageError::new(
                ErrorKind::Misconfigured,
                "open repository",
                &key,
                "the directory does not exist (create it with mkdir -m 700, or fix WALRS_REPO)",
            )),
            Err(e) => Err(StorageError::from_io("open repository", &key, &e)),
        }
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    /// Refuses a write by a user other than the repository's owner (root excepted). Every write
    /// checks it; a command that would write only after long work checks it up front.
    pub fn check_writer(&self, op: &'static str, key: &str) -> Result<(), StorageError> {
        match self.owner {
            Owner::Refuse { owner, euid } => Err(StorageError::new(
                ErrorKind::PermissionDenied,
                op,
                key,
                format!(
                    "the repository {} belongs to {}, but walrs runs as {}: what it wrote would not be the owner's (run walrs as that user)",
                    self.root.display(),
                    crate::users::describe(owner),
                    crate::users::describe(euid)
                ),
            )),
            Owner::Same | Owner::ChownTo(..) => Ok(()),
        }
    }

    /// Hands a new file or directory to the repository's owner when root writes.
    fn give_to_owner(&self, path: &Path, key: &str) -> Result<(), StorageError> {
        if let Owner::ChownTo(uid, gid) = self.owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| StorageError::from_io("chown to the repository's owner", key, &e))?;
        }
        Ok(())
    }

    /// Removes the stale temporary files of `dir`, the first time this process writes into it:
    /// what writers killed there left behind. Best effort: a failure only leaves them.
    fn sweep_once(&self, dir: &Path) {
        match self.swept.lock() {
            Ok(mut seen) if !seen.contains(dir) => {
                seen.insert(dir.to_path_buf());
            }
            _ => return,
        }
        let mut out = Vec::new();
        sweep_dir(&self.root, dir, true, &mut out, &mut Vec::new());
    }

    /// Creates the missing directories from the root down to `dir`, fsyncing each new entry's
    /// parent; adds the ones it created to `created`, topmost first.
    fn ensure_dir(
        &self,
        dir: &Path,
        key: &str,
        created: &mut Vec<PathBuf>,
    ) -> Result<(), StorageError> {
        let mut missing = Vec::new();
        let mut cur = dir;
        while cur != self.root && !cur.is_dir() {
            missing.push(cur.to_path_buf());
            match cur.parent() {
                Some(p) => cur = p,
                None => break,
            }
        }
        for d in missing.iter().rev() {
            match fs::DirBuilder::new().mode(0o700).create(d) {
                Ok(()) => {
                    created.push(d.clone());
                    self.give_to_owner(d, key)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StorageError::from_io("create directory for", key, &e)),
            }
            if let Some(parent) = d.parent() {
                durable::sync_dir(parent)
                    .map_err(|e| StorageError::from_io("sync directory for", key, &e))?;
            }
        }
        Ok(())
    }

    /// Writes `body` to a fresh temporary file beside `final_path` and fsyncs it.
    fn write_temp(
        &self,
        key: &ObjectKey,
        final_path: &Path,
        body: &mut dyn Body,
    ) -> Result<(TempFile, u64), StorageError> {
        let k = key.as_str();
        self.check_writer("write", k)?;
        let dir = final_path.parent().unwrap_or(&self.root).to_path_buf();
        let base = final_path.file_name().and_then(|n| n.to_str()).unwrap_or("object");
        self.sweep_once(&dir);
        // Declared before the temporary file, so dropped after it: on failure the file is
        // removed first, then the directories this write created, if they are empty (a
        // basebackup that runs out of space leaves no empty `backups/<id>/base.tar/`).
        let mut new_dirs = CreatedDirs(Vec::new());
        let created = match TempFile::create(&dir, base, Naming::Repository) {
            Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => {
                self.ensure_dir(&dir, k, &mut new_dirs.0)?;
                TempFile::create(&dir, base, Naming::Repository)
            }
            other => other,
        };
        let mut tmp = created
            .map_err(|e| StorageError::from_io("create temporary file for", k, &e.source))?;
        self.give_to_owner(tmp.path(), k)?;
        // Held until the file is closed: the sweep's proof that this writer is alive.
        if let Err(e) = tmp.file().try_lock() {
            tracing::debug!("could not lock {}: {e}", tmp.path().display());
        }
        let mut written = 0u64;
        loop {
            match body.next_chunk() {
                Ok(Some(chunk)) => {
                    tmp.write_all(chunk).map_err(|e| StorageError::from_io("write", k, &e))?;
                    written += chunk.len() as u64;
                }
                Ok(None) => break,
                Err(e) => return Err(StorageError::new(ErrorKind::Body, "produce data for", k, e)),
            }
        }
        tmp.sync().map_err(|e| StorageError::from_io("fsync", k, &e))?;
        let size = tmp.file().metadata().map_err(|e| StorageError::from_io("stat", k, &e))?.len();
        if size != written {
            return Err(StorageError::new(
                ErrorKind::Io,
                "verify",
                k,
                format!("wrote {written} bytes but the file holds {size}"),
            ));
        }
        new_dirs.0.clear();
        Ok((tmp, written))
    }
}

/// Directories a failed write created: removed (deepest first) if they are empty.
struct CreatedDirs(Vec<PathBuf>);

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            if fs::remove_dir(d).is_err() {
                break;
            }
        }
    }
}

impl Storage for FsStorage {
    fn get(&self, key: &ObjectKey) -> Result<Box<dyn Read + Send + '_>, StorageError> {
        let f = File::open(self.path(key)).map_err(|e| open_error(key.as_str(), &e))?;
        Ok(Box::new(BufReader::with_capacity(READ_BUFFER, f)))
    }

    fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        let k = key.as_str();
        let mut f = File::open(self.path(key)).map_err(|e| open_error(k, &e))?;
        let size = f.metadata().map_err(|e| StorageError::from_io("stat", k, &e))?.len();
        let want = len.min(size.saturating_sub(offset));
        f.seek(SeekFrom::Start(offset)).map_err(|e| StorageError::from_io("seek", k, &e))?;
        let mut buf = vec![0u8; usize::try_from(want).unwrap_or(usize::MAX)];
        let got = read_full(&mut f, &mut buf).map_err(|e| StorageError::from_io("read", k, &e))?;
        buf.truncate(got);
        Ok(buf)
    }

    fn put(&self, key: &ObjectKey, body: &mut dyn Body) -> Result<ObjectMeta, StorageError> {
        let k = key.as_str();
        let path = self.path(key);
        let (tmp, size) = self.write_temp(key, &path, body)?;
        tmp.rename_to(&path).map_err(|e| StorageError::from_io("rename into place", k, &e))?;
        let dir = path.parent().unwrap_or(&self.root);
        durable::sync_dir(dir).map_err(|e| StorageError::from_io("sync directory for", k, &e))?;
        Ok(ObjectMeta { key: key.clone(), size })
    }

    fn put_if_absent(
        &self,
        key: &ObjectKey,
        body: &mut dyn Body,
    ) -> Result<PutOutcome, StorageError> {
        let k = key.as_str();
        let path = self.path(key);
        if path.exists() {
            return Ok(PutOutcome::Exists);
        }
        let (tmp, size) = self.write_temp(key, &path, body)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        match tmp.link_to(&path) {
            Ok(Linked::Created) => {
                durable::sync_dir(&dir)
                    .map_err(|e| StorageError::from_io("sync directory for", k, &e))?;
                Ok(PutOutcome::Created(ObjectMeta { key: key.clone(), size }))
            }
            Ok(Linked::Exists) => Ok(PutOutcome::Exists),
            // File systems without hard links (EPERM, EOPNOTSUPP): a check-then-rename could
            // silently replace a concurrent writer's object, so refuse loudly instead.
            Err(e) if matches!(e.raw_os_error(), Some(1 | 95)) => Err(StorageError::new(
                ErrorKind::Misconfigured,
                "link into place",
                k,
                format!(
                    "the repository's file system does not support hard links ({e}); walrs needs them for atomic write-once objects"
                ),
            )),
            Err(e) => Err(StorageError::from_io("link into place", k, &e)),
        }
    }

    fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError> {
        match fs::metadata(self.path(key)) {
            Ok(m) if m.is_file() => Ok(Some(ObjectMeta { key: key.clone(), size: m.len() })),
            Ok(_) => Ok(None),
            // ENOTDIR (20): a component of the path is a file, so the object cannot exist.
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(StorageError::from_io("stat", key.as_str(), &e)),
        }
    }

    fn modified(&self, key: &ObjectKey) -> Result<Option<std::time::SystemTime>, StorageError> {
        match fs::metadata(self.path(key)) {
            Ok(m) if m.is_file() => {
                m.modified().map(Some).map_err(|e| StorageError::from_io("stat", key.as_str(), &e))
            }
            Ok(_) => Ok(None),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(StorageError::from_io("stat", key.as_str(), &e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Listing<'_>, StorageError> {
        let (dir_part, name_prefix) = match prefix.rfind('/') {
            Some(i) => {
                (prefix.get(..=i).unwrap_or_default(), prefix.get(i + 1..).unwrap_or_default())
            }
            None => ("", prefix),
        };
        let mut list = FsList { root: self.root.clone(), stack: Vec::new() };
        match list.read_level(dir_part, Some(name_prefix)) {
            Ok(level) => list.stack.push(level),
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(Box::new(list))
    }

    fn list_prefixes(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let dir = self.root.join(prefix);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if absent(&e) => return Ok(Vec::new()),
            Err(e) => return Err(StorageError::from_io("list", prefix, &e)),
        };
        let mut candidates = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| StorageError::from_io("list", prefix, &e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir && ObjectKey::new(name.as_str()).is_ok() {
                candidates.push(name);
            }
        }
        // Only prefixes with at least one object below them, as S3 reports. Each check stops at
        // the first object (no stat of every file), but the kernel still reads a directory whole
        // (a group of the WAL index holds 256 files): several threads check them at once.
        let checks = holds_objects(&dir, &candidates);
        let mut out = Vec::new();
        for (name, held) in candidates.into_iter().zip(checks) {
            match held {
                Ok(true) => out.push(name),
                Ok(false) => {}
                Err(e) => {
                    return Err(StorageError::from_io("list", &format!("{prefix}{name}/"), &e));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.check_writer("delete", key.as_str())?;
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => {
                let dir = path.parent().unwrap_or(&self.root);
                durable::sync_dir(dir)
                    .map_err(|e| StorageError::from_io("sync directory for", key.as_str(), &e))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::from_io("delete", key.as_str(), &e)),
        }
    }

    /// Unlinks every key, then fsyncs each directory once (not once per key), then removes the
    /// directories the deletes left empty, below the top level (`backups/<id>/base.tar/`,
    /// `backups/<id>/`, `wal/<group>/`; never `wal/` or `backups/` themselves), fsyncing each
    /// parent. `rmdir` fails on a directory that is not empty, so a writer that has just put a
    /// file there keeps it; one that finds its directory gone creates it again (docs/invariants.md
    /// §3).
    fn delete_many(&self, keys: &[ObjectKey]) -> Result<(), BatchDeleteError> {
        let all = |error| BatchDeleteError { remaining: keys.to_vec(), error };
        if let Some(first) = keys.first() {
            self.check_writer("delete", first.as_str()).map_err(all)?;
        }
        let mut dirs = std::collections::BTreeSet::new();
        for (i, key) in keys.iter().enumerate() {
            let path = self.path(key);
            match fs::remove_file(&path) {
                Ok(()) => {
                    dirs.insert(path.parent().unwrap_or(&self.root).to_path_buf());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(BatchDeleteError {
                        remaining: keys.get(i..).unwrap_or_default().to_vec(),
                        error: StorageError::from_io("delete", key.as_str(), &e),
                    });
                }
            }
        }
        // Durable before the caller goes on to the next step of its order.
        for dir in &dirs {
            durable::sync_dir(dir).map_err(|e| {
                all(StorageError::from_io("sync directory for", &dir.display().to_string(), &e))
            })?;
        }
        // Deepest first, so that a parent emptied by its children goes too.
        let depth =
            |d: &Path| d.strip_prefix(&self.root).map(|r| r.components().count()).unwrap_or(0);
        let mut queue: std::collections::BTreeSet<(std::cmp::Reverse<usize>, PathBuf)> =
            dirs.into_iter().map(|d| (std::cmp::Reverse(depth(&d)), d)).collect();
        while let Some((std::cmp::Reverse(n), dir)) = queue.pop_first() {
            if n < 2 || fs::remove_dir(&dir).is_err() {
                continue;
            }
            if let Some(parent) = dir.parent() {
                let _ = durable::sync_dir(parent);
                queue.insert((std::cmp::Reverse(n - 1), parent.to_path_buf()));
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn temporaries(&self, prefix: &str, remove: bool) -> Result<Vec<Temporary>, StorageError> {
        let start = self.root.join(prefix);
        match fs::metadata(&start) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(Vec::new()),
            Err(e) if absent(&e) => return Ok(Vec::new()),
            Err(e) => return Err(StorageError::from_io("list", prefix, &e)),
        }
        let mut out = Vec::new();
        let mut todo = vec![start];
        while let Some(dir) = todo.pop() {
            let mut subdirs = Vec::new();
            sweep_dir(&self.root, &dir, remove, &mut out, &mut subdirs);
            todo.extend(subdirs);
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

/// Whether an I/O error means "there is nothing at this path": not found, or ENOTDIR (20), a
/// component of the path being a file, so that no object can live below it.
fn absent(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(20)
}

/// `StorageError::from_io`, with ENOTDIR reported as not found as well.
fn absent_as_not_found(op: &'static str, key: &str, e: &std::io::Error) -> StorageError {
    let mut err = StorageError::from_io(op, key, e);
    if absent(e) {
        err.kind = ErrorKind::NotFound;
    }
    err
}

/// The error of opening an object for reading.
fn open_error(key: &str, e: &std::io::Error) -> StorageError {
    absent_as_not_found("read", key, e)
}

type Level = (String, std::vec::IntoIter<(String, bool, u64)>);

/// A lazy depth-first walk: one directory's sorted entries in memory at a time per level.
struct FsList {
    root: PathBuf,
    stack: Vec<Level>,
}

impl FsList {
    /// Reads the directory `dir_key` ("" or ending in '/'), keeping names starting with `filter`.
    fn read_level(&self, dir_key: &str, filter: Option<&str>) -> Result<Level, StorageError> {
        let dir = self.root.join(dir_key);
        let rd = fs::read_dir(&dir).map_err(|e| absent_as_not_found("list", dir_key, &e))?;
        let mut entries = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| StorageError::from_io("list", dir_key, &e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            if filter.is_some_and(|f| !name.starts_with(f))
                || ObjectKey::new(name.as_str()).is_err()
            {
                continue; // temporary files, foreign names
            }
            let ft = entry.file_type().map_err(|e| StorageError::from_io("list", dir_key, &e))?;
            if ft.is_dir() {
                entries.push((name, true, 0));
            } else if ft.is_file() {
                let size = match entry.metadata() {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(StorageError::from_io("list", dir_key, &e)),
                };
                entries.push((name, false, size));
            }
        }
        // Sorting directories as "name/" makes the depth-first walk yield keys in byte order.
        entries.sort_by(|a, b| {
            let ka = if a.1 { format!("{}/", a.0) } else { a.0.clone() };
            let kb = if b.1 { format!("{}/", b.0) } else { b.0.clone() };
            ka.cmp(&kb)
        });
        Ok((dir_key.to_owned(), entries.into_iter()))
    }
}

/// Whether `dir` holds an object (a regular file with an object name, not a temporary file) at
/// any depth: stops at the first one, reading only the entries' types.
/// Directories checked by one thread at least before [`holds_objects`] uses more.
const CHECKS_PER_THREAD: usize = 64;
/// Threads [`holds_objects`] uses at most.
const CHECK_THREADS: usize = 4;

/// [`holds_object`] of each `names` under `dir`, in order; on several threads when there are many.
fn holds_objects(dir: &Path, names: &[String]) -> Vec<std::io::Result<bool>> {
    let check = |n: &String| holds_object(&dir.join(n));
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(CHECK_THREADS)
        .min(names.len() / CHECKS_PER_THREAD);
    if threads < 2 {
        return names.iter().map(check).collect();
    }
    let chunk = names.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let check = &check;
        let workers: Vec<_> = names
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(check).collect::<Vec<_>>()))
            .collect();
        let mut out = Vec::with_capacity(names.len());
        for (w, part) in workers.into_iter().zip(names.chunks(chunk)) {
            match w.join() {
                Ok(v) => out.extend(v),
                // A panicked checker: checked again here (the answer must be complete).
                Err(_) => out.extend(part.iter().map(check)),
            }
        }
        out
    })
}

fn holds_object(dir: &Path) -> std::io::Result<bool> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if absent(&e) => return Ok(false),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        if ObjectKey::new(name.as_str()).is_err() {
            continue; // temporary files, foreign names
        }
        let ft = entry.file_type()?;
        if ft.is_file() || (ft.is_dir() && holds_object(&entry.path())?) {
            return Ok(true);
        }
    }
    Ok(false)
}

impl Iterator for FsList {
    type Item = Result<ObjectMeta, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (prefix, it) = self.stack.last_mut()?;
            let Some((name, is_dir, size)) = it.next() else {
                self.stack.pop();
                continue;
            };
            let key = format!("{prefix}{name}");
            if is_dir {
                match self.read_level(&format!("{key}/"), None) {
                    Ok(level) => self.stack.push(level),
                    Err(e) if e.kind == ErrorKind::NotFound => {}
                    Err(e) => return Some(Err(e)),
                }
                continue;
            }
            return Some(ObjectKey::new(key).map(|key| ObjectMeta { key, size }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_owner_per_repository() {
        assert_eq!(Owner::decide(Some(999), 999, 998), Owner::Same);
        assert_eq!(Owner::decide(None, 999, 998), Owner::Same);
        assert_eq!(Owner::decide(Some(0), 0, 0), Owner::Same);
        assert_eq!(Owner::decide(Some(0), 999, 998), Owner::ChownTo(999, 998));
        let refused = Owner::decide(Some(999), 0, 0);
        assert_eq!(refused, Owner::Refuse { owner: 0, euid: 999 });
        let s = FsStorage {
            root: PathBuf::from("/srv/walrs"),
            owner: refused,
            swept: Default::default(),
        };
        let e = s.check_writer("write", "walrs.config").unwrap_err();
        assert_eq!(e.kind, ErrorKind::PermissionDenied);
        let m = e.to_string();
        assert!(m.contains("/srv/walrs belongs to root (uid 0)") && m.contains("uid 999"), "{m}");
    }
}
