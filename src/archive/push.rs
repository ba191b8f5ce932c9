//! `walrs push <path>`: archive one WAL file.
//!
//! Order of work (docs/invariants.md): validate the name and, for segments, the long page header
//! against the name; find or create the repository config and refuse WAL of another cluster; then
//! one conditional write (temporary file, fsync, link, directory fsync on the file system). If an
//! object already exists under the name, the stored content is decoded and compared byte for byte
//! with the local file: identical is success (PostgreSQL retries a push whose acknowledgement was
//! lost), different is refused with its own exit code and never overwritten.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Instant;

use crate::codec::envelope::read_full;
use crate::codec::{Compression, ObjectSummary};
use crate::error::{Kind, Result, WalrsError};
use crate::index::{self, SegmentIndexer};
use crate::pg::page::LONG_PAGE_HEADER_LEN;
use crate::pg::{LongPageHeader, TimelineHistory, WalFileKind, WalFileName};
use crate::repo::{PutExtras, PutNew, RepoConfig, Repository, WalFile};
use std::cell::RefCell;
use std::rc::Rc;

use crate::durable::local_io;

/// Largest `.history` / `.backup` file accepted (they are a few hundred bytes in practice).
const MAX_TEXT_FILE: u64 = 16 * 1024 * 1024;

/// Options of a push.
#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    /// Compression for the new object; the repository default when `None`.
    pub compression: Option<Compression>,
    /// Codec worker threads for this push (default: `WALRS_CODEC_THREADS` or the cores). Pushes
    /// that run side by side use none each: the segments are the parallelism.
    pub codec_workers: Option<usize>,
    /// This push is the command's answer: once its object is durable, a deadline that passes
    /// must not turn the success into a failure (see `cleanup::mark_committed`).
    pub commits_command: bool,
}

/// What a push did.
#[derive(Debug)]
pub enum PushOutcome {
    /// The file is now durably stored.
    Stored {
        /// Sizes and digest of what was stored.
        summary: ObjectSummary,
        /// The compression used.
        compression: Compression,
    },
    /// The same name with identical content was already archived.
    AlreadyArchived,
}

/// Reads exactly `len` bytes from `inner` and fails if it ends early or holds more: a WAL file
/// that changes while it is archived must not produce an object.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other("the file grew while it was being archived")),
            };
        }
        let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(buf.get_mut(..want).unwrap_or_default())?;
        if n == 0 && want > 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file shrank while it was being archived",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn invalid(msg: String) -> WalrsError {
    WalrsError::new(Kind::InvalidInput, msg)
}

/// Reads and checks the long page header of a segment file against its name.
fn check_segment(
    path: &Path,
    name: &WalFileName,
    file: &mut File,
    size: u64,
) -> Result<LongPageHeader> {
    let mut head = [0u8; LONG_PAGE_HEADER_LEN];
    let got = read_full(file, &mut head).map_err(|e| local_io("reading", path, &e))?;
    let hdr = LongPageHeader::decode(head.get(..got).unwrap_or_default())
        .map_err(|e| invalid(format!("{} is not a WAL segment: {e}", path.display())))?;
    let seg = hdr.seg_size;
    let size_ok = match name.kind() {
        WalFileKind::Partial => size >= LONG_PAGE_HEADER_LEN as u64 && size <= seg.bytes(),
        _ => size == seg.bytes(),
    };
    if !size_ok {
        return Err(invalid(format!(
            "{} is {size} bytes, but its header says the segment size is {} bytes",
            path.display(),
            seg.bytes()
        )));
    }
    if name.segno(seg) != Some(hdr.segno()) {
        return Err(invalid(format!(
            "{} holds the segment starting at {}, which is not {name} (a renamed or copied file?)",
            path.display(),
            hdr.page_addr
        )));
    }
    if hdr.tli > name.timeline() {
        return Err(invalid(format!(
            "{} holds WAL of timeline {}, newer than its name's timeline {}",
            path.display(),
            hdr.tli.get(),
            name.timeline().get()
        )));
    }
    Ok(hdr)
}

/// For the first push into a new repository of a file that is not a segment (a `.history` file
/// after a promotion, say): the newest segment beside it tells which cluster this is.
fn header_from_sibling_segment(path: &Path) -> Result<Option<LongPageHeader>> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(rd) = std::fs::read_dir(dir) else { return Ok(None) };
    let newest = rd
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| WalFileName::parse(n).is_ok_and(|w| w.kind() == WalFileKind::Segment))
        .max();
    let Some(n) = newest else { return Ok(None) };
    let p = dir.join(&n);
    let mut head = [0u8; LONG_PAGE_HEADER_LEN];
    let got = File::open(&p).and_then(|mut f| read_full(&mut f, &mut head));
    Ok(got.ok().and_then(|g| LongPageHeader::decode(head.get(..g).unwrap_or_default()).ok()))
}

fn new_config(hdr: &LongPageHeader, repo: &Repository, compression: Compression) -> RepoConfig {
    RepoConfig::new(
        hdr.system_id,
        hdr.version,
        hdr.seg_size,
        hdr.xlog_blcksz,
        compression,
        repo.key(),
    )
}

/// Refuses WAL whose header does not belong to the repository's cluster.
fn check_cluster(
    repo: &Repository,
    cfg: &RepoConfig,
    hdr: &LongPageHeader,
    path: &Path,
) -> Result<()> {
    let mut diffs = Vec::new();
    if hdr.system_id != cfg.system_identifier {
        diffs.push(format!(
            "system identifier {} (the repository holds {})",
            hdr.system_id, cfg.system_identifier
        ));
    }
    if hdr.version != cfg.pg_version {
        diffs.push(format!("PostgreSQL {} (the repository holds {})", hdr.version, cfg.pg_version));
    }
    if hdr.seg_size != cfg.wal_segment_size {
        diffs.push(format!(
            "segment size {} (the repository holds {})",
            hdr.seg_size.bytes(),
            cfg.wal_segment_size.bytes()
        ));
    }
    if diffs.is_empty() {
        return Ok(());
    }
    Err(WalrsError::new(
        Kind::ForeignCluster,
        format!(
            "{} is from another cluster than repository {}: {}",
            path.display(),
            repo.describe(),
            diffs.join(", ")
        ),
    )
    .hint("each cluster needs its own repository; after pg_upgrade or a new initdb, point WALRS_REPO to a new one"))
}

/// Archives the WAL file at `path` into `repo`.
pub fn push(repo: &Repository, path: &Path, opts: &PushOptions) -> Result<PushOutcome> {
    let started = Instant::now();
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| invalid(format!("{}: no file name", path.display())))?;
    let name = WalFileName::parse(file_name).map_err(|e| invalid(e.to_string()))?;
    let mut file = File::open(path).map_err(|e| local_io("opening", path, &e))?;
    let meta = file.metadata().map_err(|e| local_io("reading", path, &e))?;
    if !meta.is_file() {
        return Err(invalid(format!("{} is not a regular file", path.display())));
    }
    let size = meta.len();

    let header = if name.is_segment_like() {
        Some(check_segment(path, &name, &mut file, size)?)
    } else {
        if size > MAX_TEXT_FILE {
            return Err(invalid(format!(
                "{} is {size} bytes: too large for a {:?} file",
                path.display(),
                name.kind()
            )));
        }
        if name.kind() == WalFileKind::History {
            let mut text = Vec::new();
            (&mut file)
                .take(MAX_TEXT_FILE)
                .read_to_end(&mut text)
                .map_err(|e| local_io("reading", path, &e))?;
            TimelineHistory::parse(name.timeline(), &text).map_err(|e| {
                invalid(format!("{} is not a timeline history file: {e}", path.display()))
            })?;
        }
        None
    };

    let cfg = match repo.read_config()? {
        Some(cfg) => {
            repo.check_key(&cfg)?;
            repo.repair_config(&cfg)?;
            cfg
        }
        None => {
            let hdr = match header {
                Some(h) => h,
                None => header_from_sibling_segment(path)?.ok_or_else(|| {
                    WalrsError::new(
                        Kind::NotInitialized,
                        format!("{} has no repository config, and no WAL segment beside {} tells which cluster it is for", repo.describe(), path.display()),
                    )
                    .hint("the first file pushed into a new repository must be a WAL segment")
                })?,
            };
            let c = opts.compression.unwrap_or_default();
            repo.init_config(&new_config(&hdr, repo, c))?
        }
    };
    if let Some(hdr) = &header {
        check_cluster(repo, &cfg, hdr, path)?;
    }
    let compression = match opts.compression {
        Some(c) => c,
        None => cfg.compression().map_err(|e| {
            WalrsError::new(Kind::Corrupt, format!("repository config: compression: {e}"))
        })?,
    };

    file.seek(SeekFrom::Start(0)).map_err(|e| local_io("reading", path, &e))?;
    let source = ExactReader { inner: &mut file, remaining: size };
    // Segments are indexed as they stream through the encoder: no second pass over the file.
    let indexer = header.as_ref().map(|h| Rc::new(RefCell::new(SegmentIndexer::new(&name, h))));
    let observer = indexer.as_ref().map(|ix| {
        let ix = Rc::clone(ix);
        Box::new(move |frame: &[u8]| ix.borrow_mut().feed(frame)) as Box<dyn FnMut(&[u8])>
    });
    match repo.put_new_observed::<WalFile>(
        &name,
        source,
        compression,
        PutExtras { observer, workers: opts.codec_workers },
    )? {
        PutNew::Created(summary) => {
            if opts.commits_command {
                let _ = crate::cleanup::mark_committed();
            }
            if let Some(ix) = indexer.and_then(|ix| Rc::try_unwrap(ix).ok()) {
                record_in_index(repo, ix.into_inner().finish(summary.digest_hex()));
            }
            tracing::info!(
                "archived {name}: {} bytes stored as {} ({compression}{}) in {:.3} s",
                summary.plain_len,
                summary.stored_len,
                if cfg.encryption.is_some() { ", encrypted" } else { "" },
                started.elapsed().as_secs_f64()
            );
            Ok(PushOutcome::Stored { summary, compression })
        }
        PutNew::Exists => {
            file.seek(SeekFrom::Start(0)).map_err(|e| local_io("reading", path, &e))?;
            let digest = compare_with_stored(repo, &name, &mut file, path)?;
            if opts.commits_command {
                let _ = crate::cleanup::mark_committed();
            }
            tracing::warn!("{name} was already archived with identical content; nothing to do");
            // An earlier push may have stopped between the object and its summary.
            if let Some(h) = &header
                && !index::has_summary(repo, &name).unwrap_or(true)
            {
                file.seek(SeekFrom::Start(0)).map_err(|e| local_io("reading", path, &e))?;
                let mut ix = SegmentIndexer::new(&name, h);
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = read_full(&mut file, &mut buf)
                        .map_err(|e| local_io("reading", path, &e))?;
                    if n == 0 {
                        break;
                    }
                    ix.feed(buf.get(..n).unwrap_or_default());
                }
                record_in_index(repo, ix.finish(digest));
            }
            Ok(PushOutcome::AlreadyArchived)
        }
    }
}

/// Writes a segment's summary; a segment whose records are damaged is stored (the archive must
/// hold what PostgreSQL wrote) but flagged in its summary and reported. The index is derived
/// data: failing to write it does not fail the push (`wal verify` reports the gap and
/// `wal index --rebuild` fills it).
fn record_in_index(repo: &Repository, summary: index::SegmentSummary) {
    if let Some(e) = &summary.error {
        tracing::error!(
            "{}: the WAL in this segment is damaged: {e}; it is archived as received and flagged in the index",
            summary.name
        );
    }
    if let Err(e) = index::store_summary(repo, &summary) {
        tracing::warn!("{}: archived, but its index entry could not be written: {e}", summary.name);
    }
}

/// Decodes the stored object fully (verifying it) while comparing it with the local file;
/// returns the stored object's content digest. An object from a network backend that fails
/// verification is read once more before it is called corrupt (`reread`).
fn compare_with_stored(
    repo: &Repository,
    name: &WalFileName,
    file: &mut File,
    path: &Path,
) -> Result<String> {
    crate::repo::reread::read_verified(repo, name.as_str(), || {
        file.seek(SeekFrom::Start(0)).map_err(|e| local_io("reading", path, &e))?;
        compare_once(repo, name, file, path)
    })
}

/// One read of [`compare_with_stored`], from the start of `file`.
fn compare_once(
    repo: &Repository,
    name: &WalFileName,
    file: &mut File,
    path: &Path,
) -> Result<String> {
    let mut decoder = repo.open::<WalFile>(name)?;
    let mut stored = Vec::new();
    let mut local = Vec::new();
    let mut same = true;
    while decoder.next_frame(&mut stored)? {
        if same {
            local.resize(stored.len(), 0);
            let got = read_full(file, &mut local).map_err(|e| local_io("reading", path, &e))?;
            same = got == stored.len() && local == stored;
        }
    }
    if same {
        let mut probe = [0u8; 1];
        same = read_full(file, &mut probe).map_err(|e| local_io("reading", path, &e))? == 0;
    }
    if same {
        return Ok(decoder.summary().map(|s| s.digest_hex()).unwrap_or_default());
    }
    Err(WalrsError::new(
        Kind::Mismatch,
        format!("{name} is already archived in {} with different content; refusing to overwrite it", repo.describe()),
    )
    .hint(if name.kind() == WalFileKind::History {
        "two clusters promoted to the same timeline are archiving into one repository; give each its own repository"
    } else {
        "another cluster, or a restored copy of this one, archives into the same repository; give each its own repository"
    }))
}
