//! The spool: a small local directory where `push` records the segments its look-ahead archived
//! (`push/`) and `fetch` keeps segments it prefetched (`prefetch/`). docs/format/spool.md.
//!
//! Nothing in the spool is ever the only copy of anything: a record is written only after its
//! segment is durable in the repository, and a prefetched segment is a verified copy of a
//! repository object. Losing the spool costs time, never data; a stale or foreign spool is
//! checked, not trusted.
//!
//! Location: `--spool-dir` / `WALRS_SPOOL_DIR` / `spool_dir`, else `walrs_spool` in the data
//! directory when the WAL path PostgreSQL passes is in `pg_wal/` (as `%p` always is). Outside a
//! data directory (a manual `walrs push /some/file`) there is no default and both features are
//! off. The default is outside `pg_wal` so prefetched segments never compete with PostgreSQL's
//! own WAL for that space.

use std::path::{Path, PathBuf};

use crate::error::{Kind, Result, WalrsError};

/// Name of the default spool directory inside the data directory.
pub const DEFAULT_NAME: &str = "walrs_spool";

/// A spool directory (not necessarily created yet).
#[derive(Clone, Debug)]
pub struct Spool {
    root: PathBuf,
}

/// The directory of a WAL path (`pg_wal/000000010000000000000001` gives `pg_wal`), `.` for a
/// bare name.
pub fn wal_dir(path: &Path) -> PathBuf {
    crate::durable::parent_dir(path)
}

impl Spool {
    /// A spool at `root`.
    pub fn at(root: PathBuf) -> Self {
        Spool { root }
    }

    /// The spool for a WAL path: `configured`, else `walrs_spool` beside the `pg_wal` directory
    /// that holds `wal_path` (lexically: a symlinked `pg_wal` still puts it in the data directory).
    pub fn locate(configured: Option<&Path>, wal_path: &Path) -> Option<Spool> {
        if let Some(dir) = configured {
            return Some(Spool::at(dir.to_path_buf()));
        }
        let dir = wal_dir(wal_path);
        let dir = if dir.is_absolute() { dir } else { std::env::current_dir().ok()?.join(dir) };
        if dir.file_name()? != "pg_wal" {
            return None;
        }
        Some(Spool::at(dir.parent()?.join(DEFAULT_NAME)))
    }

    /// The spool's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The subdirectory `sub`, created (mode 0700) if missing.
    pub fn subdir(&self, sub: &str) -> Result<PathBuf> {
        use std::os::unix::fs::DirBuilderExt;
        let d = self.root.join(sub);
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&d).map_err(|e| {
            WalrsError::new(
                Kind::Io,
                format!("cannot create the spool directory {}: {e}", d.display()),
            )
            .hint("set WALRS_SPOOL_DIR to a directory the PostgreSQL user can write")
        })?;
        Ok(d)
    }
}

/// Takes an exclusive `flock` on `path` (created if missing, mode 0600 whatever the umask, like
/// every other spool file) without waiting; `None` when another process holds it. Dropping the
/// file releases it.
pub fn try_lock(path: &Path) -> Result<Option<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| crate::durable::local_io("opening", path, &e))?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(crate::durable::local_io("locking", path, &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_location_needs_pg_wal() {
        let s = Spool::locate(None, Path::new("/data/pg_wal/000000010000000000000001")).unwrap();
        assert_eq!(s.root(), Path::new("/data/walrs_spool"));
        assert!(Spool::locate(None, Path::new("/tmp/x/000000010000000000000001")).is_none());
        let c = Spool::locate(Some(Path::new("/spool")), Path::new("/tmp/x/f")).unwrap();
        assert_eq!(c.root(), Path::new("/spool"));
        let rel = Spool::locate(None, Path::new("pg_wal/RECOVERYXLOG")).unwrap();
        assert!(rel.root().is_absolute() && rel.root().ends_with("walrs_spool"));
    }
}
