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
use std::time::SystemTime;

use crate::error::{Kind, Result, WalrsError};
use crate::pg::{TimeLineId, WalFileName, WalSegSize, XLogSegNo};

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

/// A file of the spool whose segment the repository no longer holds (`walrs expire`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leftover {
    /// Its path.
    pub path: PathBuf,
    /// The segment it names.
    pub segment: WalFileName,
}

impl Spool {
    /// The files of the spool that name a segment `gone` says the repository no longer holds,
    /// last modified before `before`: push records (`push/<name>.ok`), prefetched segments and
    /// their sidecars (`prefetch/<name>`, `prefetch/<name>.meta`). Lock files, `position` and
    /// files being written are never returned: a lock file may be held, and a temporary file is
    /// its writer's to remove (docs/format/spool.md). Sidecars and records come before the
    /// segments, so that removing in this order never leaves a sidecar without its segment.
    pub fn leftovers(
        &self,
        seg: WalSegSize,
        before: SystemTime,
        gone: impl Fn(TimeLineId, XLogSegNo) -> bool,
    ) -> Result<Vec<Leftover>> {
        let mut out = Vec::new();
        for (sub, suffixes) in [("push", &[".ok"][..]), ("prefetch", &[".meta", ""][..])] {
            let dir = self.root.join(sub);
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(crate::durable::local_io("listing", &dir, &e)),
            };
            let mut found = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| crate::durable::local_io("listing", &dir, &e))?;
                let file = entry.file_name();
                let Some(file) = file.to_str() else { continue };
                for (rank, suffix) in suffixes.iter().enumerate() {
                    let Some(stem) = file.strip_suffix(suffix) else { continue };
                    let Ok(name) = WalFileName::parse(stem) else { continue };
                    let Some(segno) = name.segno(seg).filter(|_| name.is_segment_like()) else {
                        continue;
                    };
                    if !gone(name.timeline(), segno) {
                        continue;
                    }
                    let meta = entry.metadata().map_err(|e| {
                        crate::durable::local_io("reading the metadata of", &entry.path(), &e)
                    })?;
                    if meta.is_file() && meta.modified().is_ok_and(|m| m < before) {
                        found.push((rank, Leftover { path: entry.path(), segment: name }));
                    }
                    break;
                }
            }
            found.sort_by(|a, b| (a.0, &a.1.path).cmp(&(b.0, &b.1.path)));
            out.extend(found.into_iter().map(|(_, l)| l));
        }
        Ok(out)
    }
}

/// Removes `leftovers` in their order; a file already gone is no error. Returns how many were
/// removed.
pub fn remove(leftovers: &[Leftover]) -> Result<usize> {
    let mut n = 0;
    for l in leftovers {
        match std::fs::remove_file(&l.path) {
            Ok(()) => n += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(crate::durable::local_io("removing", &l.path, &e)),
        }
    }
    Ok(n)
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

    /// Issue 15: the spool files of segments the repository no longer holds, past the grace
    /// period, and nothing else.
    #[test]
    fn issue_15_leftovers_are_old_files_of_gone_segments() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::at(dir.path().join("spool"));
        let seg = WalSegSize::DEFAULT;
        let old = SystemTime::now() - std::time::Duration::from_secs(3 * 86_400);
        let write = |rel: &str, age: Option<SystemTime>| {
            let p = spool.root().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let f = std::fs::File::create(&p).unwrap();
            if let Some(t) = age {
                f.set_modified(t).unwrap();
            }
        };
        let gone1 = "000000010000000000000003";
        let gone2 = "000000010000000000000004";
        let held = "000000010000000000000009";
        write(&format!("push/{gone1}.ok"), Some(old));
        write(&format!("push/{gone1}.lock"), Some(old));
        write("push/background.lock", Some(old));
        write(&format!("prefetch/{gone2}"), Some(old));
        write(&format!("prefetch/{gone2}.meta"), Some(old));
        write(&format!("prefetch/.{gone2}.walrs-tmp.1.1"), Some(old));
        write("prefetch/position", Some(old));
        write(&format!("prefetch/{held}"), Some(old));
        write(&format!("prefetch/{held}.meta"), Some(old));
        // Young: within the grace period.
        write("push/000000010000000000000005.ok", None);
        // No spool at all is no error.
        assert!(
            Spool::at(dir.path().join("none")).leftovers(seg, old, |_, _| true).unwrap().is_empty()
        );
        let before = SystemTime::now() - std::time::Duration::from_secs(86_400);
        let gone = |t: TimeLineId, s: XLogSegNo| t.get() == 1 && s.0 < 9;
        let found = spool.leftovers(seg, before, gone).unwrap();
        let rel: Vec<String> = found
            .iter()
            .map(|l| l.path.strip_prefix(spool.root()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            rel,
            [
                format!("push/{gone1}.ok"),
                format!("prefetch/{gone2}.meta"),
                format!("prefetch/{gone2}")
            ]
        );
        assert_eq!(remove(&found).unwrap(), 3);
        assert_eq!(remove(&found).unwrap(), 0);
        assert!(spool.leftovers(seg, before, gone).unwrap().is_empty());
        assert!(spool.root().join(format!("push/{gone1}.lock")).exists());
        assert!(spool.root().join(format!("prefetch/{held}")).exists());
    }

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
