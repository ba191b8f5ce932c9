//! The hot path PostgreSQL calls: `push` (archive_command) and `fetch` (restore_command).
//!
//! Both are blocking, single-pass and bounded in memory by one frame: `push` streams the WAL file
//! through the encoder into a conditional write; `fetch` streams the object through the decoder
//! into a temporary file beside the destination and renames it into place only after the whole
//! object has been verified.

pub mod fetch;
pub mod lookahead;
pub mod prefetch;
pub mod push;
pub mod spool;

pub use fetch::{FetchOutcome, fetch};
pub use push::{PushOptions, PushOutcome, push};

use crate::cleanup::TempGuard;
use crate::error::{Kind, Result, WalrsError};
use crate::storage::StorageError;

/// Turns a local I/O error (on a local file, not the repository) into an error.
pub fn local_io(what: &str, path: &std::path::Path, e: &std::io::Error) -> WalrsError {
    let kind = WalrsError::from(StorageError::from_io("", "", e)).kind;
    let kind = match kind {
        Kind::NotFound => Kind::InvalidInput,
        Kind::Config | Kind::Internal => Kind::Io,
        k => k,
    };
    WalrsError::new(kind, format!("{what} {}: {e}", path.display()))
}

static TEMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Creates a new temporary file `.<base>.walrs-tmp.<pid>.<n>` in `dir` (exclusively, mode 0600)
/// for a local file that is renamed into place once complete. The guard removes it unless
/// disarmed (also when the deadline watchdog fires).
pub fn create_temp(dir: &std::path::Path, base: &str) -> Result<(TempGuard, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    loop {
        let n = TEMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut guard =
            TempGuard::new(dir.join(format!(".{base}.walrs-tmp.{}.{n}", std::process::id())));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(guard.path())
        {
            Ok(f) => return Ok((guard, f)),
            // A stale file of an earlier process that had our pid: not ours to remove.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => guard.disarm(),
            Err(e) => return Err(local_io("creating", guard.path(), &e)),
        }
    }
}

/// Refuses a destination that is not a place for a file walrs writes (exit 4): a path ending in
/// `/` (it names a directory) and a path where something other than a regular file exists (a
/// directory, a symlink, a device, a FIFO, a socket), which the final rename would replace. A
/// regular file there is fine: it is replaced. Commands call it before they read anything from
/// the repository, and [`install`] once more just before the rename.
pub fn check_destination(dest: &std::path::Path) -> Result<()> {
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

/// Puts a complete, fsynced temporary file in place: rename to `dest`, then fsync of `dest`'s
/// directory `dir`, so that the name survives a crash. `dest` is checked once more
/// ([`check_destination`]) right before the rename.
pub fn install(guard: &mut TempGuard, dest: &std::path::Path, dir: &std::path::Path) -> Result<()> {
    check_destination(dest)?;
    std::fs::rename(guard.path(), dest).map_err(|e| local_io("renaming into", dest, &e))?;
    guard.disarm();
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| local_io("syncing directory", dir, &e))
}
