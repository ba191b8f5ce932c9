//! `walrs fetch <name> <dest>`: restore one WAL file for PostgreSQL.
//!
//! The object is decoded into a temporary file beside `<dest>` (same directory, so the rename is
//! atomic), which is fsynced and renamed into place only after the trailer has been verified. On
//! every failure path the temporary file is removed (also by the deadline watchdog), so PostgreSQL
//! never sees a partial or empty file. "Not found" is reported only when the repository answered
//! that the object does not exist; a missing repository is a different error.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use crate::codec::ObjectSummary;
use crate::durable::{self, TempFile, local_io};
use crate::error::{Kind, Result, WalrsError};
use crate::pg::page::LONG_PAGE_HEADER_LEN;
use crate::pg::{LongPageHeader, WalFileName};
use crate::repo::{RepoConfig, Repository, WalFile};

/// What a fetch did.
#[derive(Debug)]
pub struct FetchOutcome {
    /// Sizes and digest of what was restored.
    pub summary: ObjectSummary,
}

/// Checks the first frame (at least the long page header) of a segment against its name and the
/// repository.
pub(crate) fn check_first_frame(name: &WalFileName, cfg: &RepoConfig, frame: &[u8]) -> Result<()> {
    let corrupt = |d: String| {
        WalrsError::new(Kind::Corrupt, format!("object {name} decodes, but {d}"))
            .hint("the repository holds a wrong file under this name; move it aside")
    };
    let hdr = LongPageHeader::decode(
        frame.get(..LONG_PAGE_HEADER_LEN.min(frame.len())).unwrap_or_default(),
    )
    .map_err(|e| corrupt(format!("is not a WAL segment: {e}")))?;
    if hdr.system_id != cfg.system_identifier {
        return Err(corrupt(format!(
            "holds WAL of system {}, not the repository's {}",
            hdr.system_id, cfg.system_identifier
        )));
    }
    if name.segno(hdr.seg_size) != Some(hdr.segno()) {
        return Err(corrupt(format!("holds the segment starting at {}", hdr.page_addr)));
    }
    Ok(())
}

/// Restores the WAL file `name` from `repo` to `dest`.
pub fn fetch(repo: &Repository, name: &str, dest: &Path) -> Result<FetchOutcome> {
    let started = Instant::now();
    let name =
        WalFileName::parse(name).map_err(|e| WalrsError::new(Kind::InvalidInput, e.to_string()))?;
    let cfg = repo.require_config()?;
    fetch_with_config(repo, &cfg, &name, dest, started)
}

/// [`fetch`] with the repository's configuration already read.
pub fn fetch_with_config(
    repo: &Repository,
    cfg: &RepoConfig,
    name: &WalFileName,
    dest: &Path,
    started: Instant,
) -> Result<FetchOutcome> {
    durable::check_destination(dest)?;
    let dir = durable::parent_dir(dest);
    let base = dest.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        WalrsError::new(
            Kind::InvalidInput,
            format!("{}: the destination needs a file name", dest.display()),
        )
    })?;
    remove_dead_temporaries(&dir, base);
    let (tmp, summary) = decode_to_temp(repo, cfg, name, &dir, base)?;
    durable::install(tmp, dest)?;
    let _ = crate::cleanup::mark_committed();
    tracing::info!(
        "restored {name} to {} ({} bytes) in {:.3} s",
        dest.display(),
        summary.plain_len,
        started.elapsed().as_secs_f64()
    );
    Ok(FetchOutcome { summary })
}

/// Removes `.{base}.walrs-tmp.<pid>.<n>` files in `dir` whose process no longer runs: what a
/// fetch killed with SIGKILL left beside `%p` (`dir` is local: `pg_wal`). A live pid, even a
/// reused one, keeps its files.
fn remove_dead_temporaries(dir: &Path, base: &str) {
    let prefix = format!(".{base}{}", durable::LOCAL_TEMP_MARK);
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let file = e.file_name();
        let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(prefix.as_str())) else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Decodes the WAL file `name` from `repo` into a new temporary file in `dir` (named after
/// `base`), every frame and the trailer verified and the file fsynced. The file is removed unless
/// the caller puts it in place. An object from a network backend that fails verification is read
/// once more before it is called corrupt (`reread`).
pub(crate) fn decode_to_temp(
    repo: &Repository,
    cfg: &RepoConfig,
    name: &WalFileName,
    dir: &Path,
    base: &str,
) -> Result<(TempFile, ObjectSummary)> {
    crate::repo::reread::read_verified(repo, name.as_str(), || {
        decode_once(repo, cfg, name, dir, base)
    })
}

/// One read of [`decode_to_temp`], into its own temporary file.
fn decode_once(
    repo: &Repository,
    cfg: &RepoConfig,
    name: &WalFileName,
    dir: &Path,
    base: &str,
) -> Result<(TempFile, ObjectSummary)> {
    let mut decoder = repo.open::<WalFile>(name).map_err(|e| {
        if e.kind == Kind::NotFound {
            WalrsError::new(
                Kind::NotFound,
                format!("{name} is not in repository {}", repo.describe()),
            )
        } else {
            e
        }
    })?;
    let mut out = durable::create_in(dir, base)?;

    let mut frame = Vec::new();
    let mut first = true;
    while decoder.next_frame(&mut frame)? {
        if first && name.is_segment_like() {
            check_first_frame(name, cfg, &frame)?;
        }
        first = false;
        out.write_all(&frame).map_err(|e| local_io("writing", out.path(), &e))?;
    }
    let summary = decoder.summary().ok_or_else(|| {
        WalrsError::new(Kind::Internal, format!("{name}: decoder ended without a trailer"))
    })?;
    if first && name.is_segment_like() {
        return Err(WalrsError::new(Kind::Corrupt, format!("object {name} is empty")));
    }
    out.sync().map_err(|e| local_io("syncing", out.path(), &e))?;
    Ok((out, summary))
}
