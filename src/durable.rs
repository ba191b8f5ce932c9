//! The one durable local write, and the mapping of local I/O errors to error kinds.
//!
//! A file walrs writes on a local (or network) file system is written to a temporary file in the
//! directory of its final name, fsynced, renamed (or hard-linked) to that name, and the directory
//! is fsynced: the name exists only for complete content, and survives a crash once the call
//! returns (docs/invariants.md §3 and §6). Everything that writes local files goes through here:
//! `fetch` and the prefetcher (WAL for PostgreSQL), `binlog fetch`, `restore` (the recovery
//! settings, the tablespace map), the file-system repository backend (objects, linked into place
//! when write-once), and the spool's records, which are atomic but deliberately not fsynced
//! (caches: [`write_cache`]).
//!
//! Temporary files are registered with [`crate::cleanup`] for their whole life: their guard
//! removes them on every error path, and the deadline watchdog before it exits. Their names are
//! decided here ([`Naming`]), since the sweeps that remove what killed writers left behind
//! recognise them by name. What does not live here: what to write (callers), repository policy
//! (ownership, lazy directories, stale-file sweeps: `storage/fs.rs`), and repository error kinds
//! (`storage::StorageError`, which classifies errno values with [`classify`] as well).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cleanup::TempGuard;
use crate::error::{Kind, Result, WalrsError};

/// The mark in the name of a local temporary file (`.<name>.walrs-tmp.<pid>.<n>`).
pub const LOCAL_TEMP_MARK: &str = ".walrs-tmp.";

/// The prefix of a repository temporary file (`.tmp.<name>.<pid>.<n>`, file-system backend).
pub const REPOSITORY_TEMP_PREFIX: &str = ".tmp.";

/// Distinguishes the temporary files one process creates in one directory.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How a temporary file is named, after the final name's `base`, this process's id and a counter.
/// Each form is what its sweeper recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// `.<base>.walrs-tmp.<pid>.<n>`: a local file walrs puts in place for someone else (`%p` for
    /// PostgreSQL, a restored binlog, the recovery settings). Hidden, and never a name
    /// PostgreSQL reads.
    Local,
    /// `.tmp.<base>.<pid>.<n>`: an object of a file-system repository. Listings skip it; stale
    /// ones are swept by age and lock (docs/invariants.md §3).
    Repository,
    /// `<base>` with its extension replaced by `tmp.<pid>`, created or truncated (not exclusive):
    /// a spool cache file; one per process and final name.
    Spool,
}

/// Whether the final name exists once the data is in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Linked {
    /// The hard link made the final name: the object is ours.
    Created,
    /// Another file already had the final name; nothing was replaced.
    Exists,
}

/// A temporary file being written, in the directory of its final name. Dropped before it is put
/// in place, it is removed.
#[derive(Debug)]
pub struct TempFile {
    guard: TempGuard,
    file: File,
    /// Written to since the last fsync.
    dirty: bool,
}

/// A temporary file that could not be created: its path and the `open`'s error.
#[derive(Debug)]
pub struct CreateError {
    /// The temporary file's path.
    pub path: PathBuf,
    /// Why `open` failed (`NotFound` when the directory does not exist).
    pub source: std::io::Error,
}

impl TempFile {
    /// Creates a temporary file for the final name `base` in `dir`, mode 0600, named as `naming`
    /// says. With [`Naming::Local`] and [`Naming::Repository`] it is created exclusively
    /// (`O_CREAT|O_EXCL`): a name that exists (a stale file of an earlier process that had this
    /// pid) is left alone and the next counter value tried.
    pub fn create(dir: &Path, base: &str, naming: Naming) -> Result<TempFile, CreateError> {
        let pid = std::process::id();
        loop {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = match naming {
                Naming::Local => dir.join(format!(".{base}{LOCAL_TEMP_MARK}{pid}.{n}")),
                Naming::Repository => dir.join(format!("{REPOSITORY_TEMP_PREFIX}{base}.{pid}.{n}")),
                Naming::Spool => dir.join(base).with_extension(format!("tmp.{pid}")),
            };
            // Registered before it exists: the watchdog may fire while it is being created.
            let mut guard = TempGuard::new(path);
            let mut opts = OpenOptions::new();
            opts.write(true).mode(0o600);
            if naming == Naming::Spool {
                opts.create(true).truncate(true);
            } else {
                opts.create_new(true);
            }
            match opts.open(guard.path()) {
                Ok(file) => return Ok(TempFile { guard, file, dirty: false }),
                // Not ours: a stale file of an earlier process with our pid.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => guard.disarm(),
                Err(source) => {
                    let path = guard.path().to_path_buf();
                    return Err(CreateError { path, source });
                }
            }
        }
    }

    /// The temporary file's path.
    pub fn path(&self) -> &Path {
        self.guard.path()
    }

    /// The open file (for its metadata or a lock; write through the [`Write`] implementation).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Flushes and fsyncs the file's content (nothing to do if nothing was written since the
    /// last call).
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.dirty {
            self.file.flush()?;
            self.file.sync_all()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Renames the file to `dest` (replacing what is there) and closes it. The caller fsyncs the
    /// directory ([`sync_dir`]) when the name must survive a crash. On failure the temporary file
    /// is removed.
    pub fn rename_to(mut self, dest: &Path) -> std::io::Result<()> {
        std::fs::rename(self.guard.path(), dest)?;
        self.guard.disarm();
        Ok(())
    }

    /// Hard-links the file to `dest`, atomic against every other writer of `dest`: the name is
    /// made only if nothing has it, and never replaced. The temporary name is removed either way.
    /// `EEXIST` with `dest` being this very file (same device and inode) is [`Linked::Created`]:
    /// on NFS a retried LINK whose first reply was lost reports `EEXIST` although the link was
    /// made. Other errors are returned as they are (`EPERM`/`EOPNOTSUPP` on file systems without
    /// hard links). The caller fsyncs the directory when it created the name.
    pub fn link_to(self, dest: &Path) -> std::io::Result<Linked> {
        match std::fs::hard_link(self.guard.path(), dest) {
            Ok(()) => Ok(Linked::Created),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let ours = self.file.metadata().ok().map(|m| (m.dev(), m.ino()));
                let theirs = std::fs::metadata(dest).ok().map(|m| (m.dev(), m.ino()));
                Ok(if ours.is_some() && ours == theirs { Linked::Created } else { Linked::Exists })
            }
            Err(e) => Err(e),
        }
        // Dropping `self` removes the temporary name (the object keeps the inode through the
        // link), then closes the file.
    }
}

impl Write for TempFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.dirty = true;
        self.file.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.dirty = true;
        self.file.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Fsyncs the directory `dir`, so that a name just made in it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory a file at `path` lives in (`.` for a bare name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A new local temporary file beside `dest`, to be put in place with [`install`] once it is
/// complete. Errors are local I/O errors ([`local_io`]).
pub fn create_beside(dest: &Path) -> Result<TempFile> {
    let dir = parent_dir(dest);
    let base = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    create_in(&dir, &base)
}

/// A new local temporary file in `dir` for the final name `base` ([`Naming::Local`]).
pub fn create_in(dir: &Path, base: &str) -> Result<TempFile> {
    TempFile::create(dir, base, Naming::Local).map_err(|e| local_io("creating", &e.path, &e.source))
}

/// Puts a complete temporary file in place at `dest`, durably: fsync of the file (unless it is
/// fsynced already), a check that `dest` is still a place walrs may write
/// ([`check_destination`]), rename over `dest`, fsync of `dest`'s directory.
pub fn install(mut tmp: TempFile, dest: &Path) -> Result<()> {
    tmp.sync().map_err(|e| local_io("syncing", tmp.path(), &e))?;
    check_destination(dest)?;
    tmp.rename_to(dest).map_err(|e| local_io("renaming into", dest, &e))?;
    let dir = parent_dir(dest);
    sync_dir(&dir).map_err(|e| local_io("syncing directory", &dir, &e))
}

/// Writes `content` to `path` durably: a temporary file beside it (mode 0600), fsync, rename,
/// fsync of the directory. `path` is replaced if it is a regular file, refused if it is anything
/// else ([`check_destination`]). On failure the temporary file is removed and `path` is as it was.
pub fn write_file(path: &Path, content: &[u8]) -> Result<()> {
    let mut tmp = create_beside(path)?;
    tmp.write_all(content).map_err(|e| local_io("writing", tmp.path(), &e))?;
    install(tmp, path)
}

/// [`write_file`] for a file other users read (node_exporter's textfile collector, man pages):
/// mode 0644 instead of 0600, set before the rename, so that the name never shows a file they
/// cannot read.
pub fn write_file_readable(path: &Path, content: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut tmp = create_beside(path)?;
    tmp.write_all(content).map_err(|e| local_io("writing", tmp.path(), &e))?;
    tmp.file
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(|e| local_io("setting the mode of", tmp.path(), &e))?;
    install(tmp, path)
}

/// Writes `content` to `path` through a temporary file and a rename ([`Naming::Spool`]), so that
/// a reader sees the old file, the new one or none, never a torn one. Not fsynced: for caches
/// whose loss after a crash only costs the work of redoing them, whose readers validate what
/// they find.
pub fn write_cache(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let base = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut tmp =
        TempFile::create(&parent_dir(path), &base, Naming::Spool).map_err(|e| e.source)?;
    tmp.write_all(content)?;
    tmp.rename_to(path)
}

/// Refuses a destination that is not a place for a file walrs writes (exit 4): a path ending in
/// `/` (it names a directory) and a path where something other than a regular file exists (a
/// directory, a symlink, a device, a FIFO, a socket), which the final rename would replace. A
/// regular file there is fine: it is replaced. Commands call it before they read anything from
/// the repository, and [`install`] once more just before the rename.
pub fn check_destination(dest: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::FileTypeExt;
    if dest.as_os_str().as_bytes().ends_with(b"/") || dest.file_name().is_none() {
        return Err(WalrsError::new(
            Kind::InvalidInput,
            format!(
                "{}: the destination names a directory; give the path of a file",
                dest.display()
            ),
        ));
    }
    let what = match std::fs::symlink_metadata(dest) {
        Ok(m) => m.file_type(),
        // Nothing there: the file will be created (a missing directory is reported then).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        // ENOTDIR: a component of the path is a file, so the directory does not exist.
        Err(e) if e.raw_os_error() == Some(20) => {
            return Err(WalrsError::new(
                Kind::InvalidInput,
                format!("{}: the destination's directory does not exist: {e}", dest.display()),
            ));
        }
        Err(e) => return Err(local_io("checking the destination", dest, &e)),
    };
    let what = match () {
        _ if what.is_file() => return Ok(()),
        _ if what.is_dir() => "a directory",
        _ if what.is_symlink() => "a symbolic link",
        _ if what.is_block_device() => "a block device",
        _ if what.is_char_device() => "a character device",
        _ if what.is_fifo() => "a FIFO",
        _ if what.is_socket() => "a socket",
        _ => "not a file",
    };
    Err(WalrsError::new(
        Kind::InvalidInput,
        format!("{}: the destination exists and is not a regular file ({what}); walrs replaces only regular files", dest.display()),
    )
    .hint("remove it or give another destination"))
}

/// What an I/O error means, by its errno: the classes the exit codes tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoClass {
    /// `ENOSPC`, `EDQUOT`.
    NoSpace,
    /// `EROFS`.
    ReadOnly,
    /// `EACCES`, `EPERM`.
    PermissionDenied,
    /// `ENOENT`.
    NotFound,
    /// A timeout.
    TimedOut,
    /// Anything else.
    Other,
}

/// The class of an I/O error. Raw errno values are Linux's: ENOSPC 28, EROFS 30, EDQUOT 122,
/// EACCES 13, EPERM 1.
pub fn classify(e: &std::io::Error) -> IoClass {
    use std::io::ErrorKind as K;
    match (e.kind(), e.raw_os_error()) {
        (_, Some(28 | 122)) | (K::StorageFull | K::QuotaExceeded, _) => IoClass::NoSpace,
        (_, Some(30)) | (K::ReadOnlyFilesystem, _) => IoClass::ReadOnly,
        (K::PermissionDenied, _) | (_, Some(1 | 13)) => IoClass::PermissionDenied,
        (K::NotFound, _) => IoClass::NotFound,
        (K::TimedOut, _) => IoClass::TimedOut,
        _ => IoClass::Other,
    }
}

/// Turns an I/O error on a local file (not a repository object) into an error: `what` and the
/// path in the message, the kind from [`classify`]. A missing file or directory is the input's
/// fault (exit 4), not "not found" in the repository (exit 1, which belongs to `fetch`).
pub fn local_io(what: &str, path: &Path, e: &std::io::Error) -> WalrsError {
    let kind = match classify(e) {
        IoClass::NoSpace => Kind::NoSpace,
        IoClass::ReadOnly => Kind::ReadOnly,
        IoClass::PermissionDenied => Kind::PermissionDenied,
        IoClass::NotFound => Kind::InvalidInput,
        IoClass::TimedOut => Kind::Timeout,
        IoClass::Other => Kind::Io,
    };
    WalrsError::new(kind, format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_file_replaces_durably_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("postgresql.auto.conf");
        write_file(&p, b"one\n").unwrap();
        write_file(&p, b"two\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two\n");
        assert_eq!(names(d.path()), ["postgresql.auto.conf"]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_the_temporary() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("x");
        std::fs::write(&dest, b"old").unwrap();
        let mut tmp = create_beside(&dest).unwrap();
        tmp.write_all(b"new").unwrap();
        let name = tmp.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(".x.walrs-tmp.") && name.contains(&std::process::id().to_string())
        );
        drop(tmp); // an error path: never installed
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(names(d.path()), ["x"]);
    }

    #[test]
    fn install_refuses_what_is_not_a_regular_file() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("sub");
        std::fs::create_dir(&dest).unwrap();
        let e = write_file(&dest, b"x").unwrap_err();
        assert_eq!(e.kind, Kind::InvalidInput);
        assert!(dest.is_dir());
        assert_eq!(names(d.path()), ["sub"]);
        let e = write_file(&d.path().join("missing/dir/f"), b"x").unwrap_err();
        assert_eq!(e.kind, Kind::InvalidInput, "{e}");
        let e = check_destination(Path::new("/tmp/")).unwrap_err();
        assert_eq!(e.kind, Kind::InvalidInput);
    }

    #[test]
    fn a_taken_temporary_name_is_skipped_not_removed() {
        let d = tempfile::tempdir().unwrap();
        let pid = std::process::id();
        // Stale files of an earlier process with our pid, for every counter value this test
        // could draw next.
        let next = TEMP_COUNTER.load(Ordering::Relaxed);
        for n in next..next + 64 {
            std::fs::write(d.path().join(format!(".tmp.obj.{pid}.{n}")), b"stale").unwrap();
        }
        let mut t = TempFile::create(d.path(), "obj", Naming::Repository).unwrap();
        t.write_all(b"fresh").unwrap();
        t.sync().unwrap();
        assert_eq!(t.link_to(&d.path().join("obj")).unwrap(), Linked::Created);
        assert_eq!(std::fs::read(d.path().join("obj")).unwrap(), b"fresh");
        let left = names(d.path());
        assert_eq!(left.iter().filter(|n| n.starts_with(".tmp.")).count(), 64, "{left:?}");
    }

    #[test]
    fn link_never_replaces_and_knows_its_own_link() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("obj");
        let mut a = TempFile::create(d.path(), "obj", Naming::Repository).unwrap();
        a.write_all(b"first").unwrap();
        assert_eq!(a.link_to(&dest).unwrap(), Linked::Created);
        let mut b = TempFile::create(d.path(), "obj", Naming::Repository).unwrap();
        b.write_all(b"second").unwrap();
        assert_eq!(b.link_to(&dest).unwrap(), Linked::Exists);
        assert_eq!(std::fs::read(&dest).unwrap(), b"first");
        assert_eq!(names(d.path()), ["obj"]);
        // A link that exists already and is this file (NFS's retried LINK): created.
        let c = TempFile::create(d.path(), "obj2", Naming::Repository).unwrap();
        std::fs::hard_link(c.path(), d.path().join("obj2")).unwrap();
        assert_eq!(c.link_to(&d.path().join("obj2")).unwrap(), Linked::Created);
        assert_eq!(names(d.path()), ["obj", "obj2"]);
    }

    #[test]
    fn cache_writes_are_atomic_and_named_for_the_spool() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("000000010000000000000001.ok");
        write_cache(&p, b"{}").unwrap();
        write_cache(&p, b"{\"a\":1}").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"a\":1}");
        assert_eq!(names(d.path()), ["000000010000000000000001.ok"]);
        let t = TempFile::create(d.path(), "position", Naming::Spool).unwrap();
        assert_eq!(
            t.path().file_name().unwrap().to_string_lossy(),
            format!("position.tmp.{}", std::process::id())
        );
    }

    #[test]
    fn io_errors_map_to_kinds() {
        let e =
            |n: i32| local_io("writing", Path::new("/x"), &std::io::Error::from_raw_os_error(n));
        assert_eq!(e(28).kind, Kind::NoSpace);
        assert_eq!(e(122).kind, Kind::NoSpace);
        assert_eq!(e(30).kind, Kind::ReadOnly);
        assert_eq!(e(13).kind, Kind::PermissionDenied);
        assert_eq!(e(1).kind, Kind::PermissionDenied);
        assert_eq!(e(2).kind, Kind::InvalidInput);
        assert_eq!(e(5).kind, Kind::Io);
        assert_eq!(e(5).message, format!("writing /x: {}", std::io::Error::from_raw_os_error(5)));
    }
}
