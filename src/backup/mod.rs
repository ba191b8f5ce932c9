//! Base backups: streaming `BASE_BACKUP` into repository objects, the catalogue, and
//! verification against PostgreSQL's own backup manifest. The manifest's types and the backup
//! object kinds live in `repo::manifest` (re-exported here).
//!
//! Layout (docs/format/backup.md, keys in `repo/layout.rs`): `backups/<id>/<archive>/<NNNNNN>` chunk objects, each a run of
//! whole tar entries of one archive (`base.tar`, `<oid>.tar`) cut as the stream arrives;
//! `backups/<id>/backup_manifest`, PostgreSQL's manifest byte for byte; and
//! `backups/<id>/manifest.json`, written last, only once the WAL from the backup's start to its
//! stop is in the repository. A backup without `manifest.json` never happened.

pub mod archiving;
pub mod changed;
pub mod ids;
pub mod restore;
pub mod tar;

use std::io::Read;
use std::time::{Duration, Instant, SystemTime};

use crate::codec::Compression;
use crate::error::{Kind, Result, WalrsError};
use crate::pg::{Lsn, PgMajorVersion, TimeLineId, WalFileName};
use crate::replication::basebackup::{BackupOptions, BaseBackup, Event};
use crate::replication::{ConnParams, ReplConn};
use crate::repo::{
    BackupChunk, ChunkId, Fixed, PgBackupManifest, PutNew, RepoConfig, Repository, WalFile, layout,
};
use crate::storage::{ObjectKey, Storage};

use tar::TarTracker;

pub use crate::repo::BackupId;
pub use crate::repo::manifest::{
    Archive, BackupManifest, BackupType, BlockMapStats, Chunk, FORMAT_VERSION, FULL_FORMAT_VERSION,
    FileEntry, IncrementalInfo, chain_members,
};

/// Plaintext bytes after which a chunk object ends at the next tar entry boundary.
pub const CHUNK_BYTES: u64 = 64 << 20;

/// Reads a backup's manifest; `None` if the backup is incomplete or unknown.
pub fn load_manifest(repo: &Repository, id: &BackupId) -> Result<Option<BackupManifest>> {
    repo.load(id)
}

/// Every complete backup, oldest first, and the ids of incomplete ones.
pub fn catalogue(repo: &Repository) -> Result<(Vec<BackupManifest>, Vec<BackupId>)> {
    let mut done = Vec::new();
    let mut incomplete = Vec::new();
    for id in repo.groups::<BackupManifest>()? {
        match load_manifest(repo, &id)? {
            Some(m) => done.push(m),
            None => incomplete.push(id),
        }
    }
    done.sort_by(|a, b| a.stop_lsn.cmp(&b.stop_lsn).then(a.id.cmp(&b.id)));
    Ok((done, incomplete))
}

/// Options of `walrs basebackup`.
#[derive(Clone, Debug)]
pub struct TakeOptions {
    /// Immediate checkpoint.
    pub fast_checkpoint: bool,
    /// Compression of the chunks.
    pub compression: Compression,
    /// How long to wait for the WAL the backup needs to reach the repository.
    pub wal_wait: Duration,
    /// Timeout of each socket read or write.
    pub io_timeout: Duration,
    /// Deadline of the whole backup.
    pub deadline: Instant,
    /// Compression the server applies before sending (walrs decompresses, then compresses
    /// each chunk with `compression`).
    pub server_compression: ServerCompression,
    /// The repository's location, to check the server's archiving against before anything is
    /// streamed ([`archiving::check`]); `None` skips the check (`--no-archive-check`).
    pub archive_check: Option<crate::storage::RepoLocation>,
    /// `--incremental`: take an incremental backup against this parent; `None` takes a full one.
    pub incremental: Option<IncrementalRequest>,
}

/// What `--incremental` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncrementalMode {
    /// `--incremental` (or `=require`): refuse (exit 24) when no incremental can be taken.
    Require,
    /// `--incremental=auto`: take a full backup instead, saying why.
    Auto,
}

impl std::str::FromStr for IncrementalMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "require" => Ok(IncrementalMode::Require),
            "auto" => Ok(IncrementalMode::Auto),
            _ => Err(format!("{s:?}: expected require or auto")),
        }
    }
}

/// `--incremental[=MODE] [--parent ID|latest]`.
#[derive(Clone, Debug)]
pub struct IncrementalRequest {
    /// Refuse or fall back to a full backup.
    pub mode: IncrementalMode,
    /// The parent: an id, a unique prefix or `latest`.
    pub parent: String,
}

/// The parent an incremental backup is taken against, checked, and how the backup is taken.
struct Parent {
    manifest: BackupManifest,
    /// A changed-block backup from walrs's block maps (PostgreSQL 13–16) rather than
    /// PostgreSQL 17's `BASE_BACKUP INCREMENTAL`.
    block_map: bool,
}

/// A refusal of `--incremental` (exit 24).
fn no_incremental(why: impl Into<String>) -> WalrsError {
    WalrsError::new(Kind::NoIncremental, why).hint(
        "take a full backup (without --incremental), or --incremental=auto to fall back to one",
    )
}

/// Checks what an incremental backup needs before the server does any work: a complete parent
/// whose whole chain is complete, of this cluster; PostgreSQL 17 or later with `summarize_wal =
/// on` takes PostgreSQL's own incremental backup; 13–16, and 17+ with `summarize_wal = off`, the
/// changed-block method from walrs's block maps, which needs a primary (walrs switches WAL
/// segments to get the WAL up to the backup's start indexed).
fn check_incremental(
    repo: &Repository,
    c: &mut ReplConn,
    conn: &ConnParams,
    opts: &TakeOptions,
    req: &IncrementalRequest,
) -> Result<Parent> {
    let parent = match ids::resolve(repo, &req.parent) {
        Ok(m) => m,
        Err(e) if matches!(e.kind, Kind::NotFound | Kind::Usage) => {
            return Err(no_incremental(format!("no parent for --incremental: {}", e.message)));
        }
        Err(e) => return Err(e),
    };
    if parent.is_incremental() {
        let (complete, _) = catalogue(repo)?;
        chain_members(&complete, &parent).map_err(no_incremental)?;
    }
    let summaries = match c.server_major() {
        Some(v) if v >= 17 => {
            let rows = c.simple_query("SHOW summarize_wal")?;
            rows.first().and_then(|r| r.first().cloned().flatten()).unwrap_or_default() == "on"
        }
        _ => false,
    };
    match c.server_major() {
        Some(v) if v >= 17 && summaries => {}
        Some(v) if v >= 13 => {
            let standby = ReplConn::connect_sql(conn, opts.io_timeout, opts.deadline)
                .and_then(|mut q| q.simple_query("SELECT pg_is_in_recovery()"))?;
            let in_recovery = standby
                .first()
                .and_then(|r| r.first().cloned().flatten())
                .is_some_and(|v| v == "t");
            let which = if v >= 17 {
                "the server has summarize_wal = off, so a changed-block backup from walrs's block maps"
            } else {
                "a changed-block backup (PostgreSQL 13-16)"
            };
            if in_recovery {
                return Err(no_incremental(format!(
                    "the server is a standby: {which} needs the WAL up to its start archived and indexed, and only a primary can switch WAL segments (pg_switch_wal) to get it there"
                )));
            }
            if v >= 17 {
                tracing::info!(
                    "the server has summarize_wal = off: taking a changed-block backup from walrs's block maps"
                );
            }
            return Ok(Parent { manifest: parent, block_map: true });
        }
        v => {
            return Err(no_incremental(format!(
                "incremental backups need PostgreSQL 13 or later; the server runs {}",
                v.map_or_else(|| "an unknown version".to_string(), |v| v.to_string())
            )));
        }
    }
    Ok(Parent { manifest: parent, block_map: false })
}

/// An envelope's plaintext as a reader, frame by frame (a frame's memory at a time). A failed
/// check of the envelope (at any frame, or the digest at the end) is a read error.
pub(crate) struct FrameReader<R: Read> {
    dec: crate::codec::Decoder<R>,
    frame: Vec<u8>,
    at: usize,
    done: bool,
}

impl<R: Read> FrameReader<R> {
    /// Reads `dec`'s plaintext.
    pub(crate) fn new(dec: crate::codec::Decoder<R>) -> Self {
        FrameReader { dec, frame: Vec::new(), at: 0, done: false }
    }
}

impl<R: Read> Read for FrameReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.frame.len() {
            if self.done {
                return Ok(0);
            }
            self.at = 0;
            self.frame.clear();
            if !self.dec.next_frame(&mut self.frame).map_err(std::io::Error::other)? {
                self.done = true;
            }
        }
        let n = out.len().min(self.frame.len() - self.at);
        let src = self.frame.get(self.at..self.at + n).unwrap_or_default();
        out.get_mut(..n).unwrap_or_default().copy_from_slice(src);
        self.at += n;
        Ok(n)
    }
}

/// Whether a `BASE_BACKUP` error is the server refusing the incremental backup: its WAL
/// summaries cannot serve it (PostgreSQL 17's `PrepareForIncrementalBackup`: "WAL summaries are
/// required on timeline ...", "incremental backups cannot be taken unless WAL summarization is
/// enabled", "manifest requires WAL from ...").
fn is_summary_refusal(e: &WalrsError) -> bool {
    let m = e.message.to_ascii_lowercase();
    m.starts_with("base_backup failed")
        && (m.contains("wal summar")
            || m.contains("incremental")
            || m.contains("manifest requires"))
}

/// Uploads the parent's manifest (incremental), starts `BASE_BACKUP` and streams it into
/// objects. A server refusal of the incremental is `NoIncremental`.
#[allow(clippy::too_many_arguments)]
fn stream_once(
    repo: &Repository,
    c: &mut ReplConn,
    id: &BackupId,
    label: &str,
    opts: &TakeOptions,
    parent: Option<&Parent>,
    stream_conn: &ConnParams,
    stream_seg: crate::pg::WalSegSize,
) -> Result<Streamed> {
    let refused = |e: WalrsError| {
        if parent.is_some() && e.kind == Kind::Io && is_summary_refusal(&e) {
            no_incremental(format!("the server cannot take the incremental backup: {}", e.message))
        } else {
            e
        }
    };
    let changed = parent.filter(|p| p.block_map).map(|p| ChangedCtx {
        parent: &p.manifest,
        conn: stream_conn,
        seg: stream_seg,
    });
    let parent = parent.filter(|p| !p.block_map);
    if let Some(p) = parent {
        let dec = repo.open::<PgBackupManifest>(&p.manifest.id)?;
        let mut r = FrameReader::new(dec);
        // Any failure here (the server rejecting the manifest, the parent's manifest object
        // unreadable) leaves nothing stored: no incremental backup can be taken.
        c.upload_manifest(&mut r).map_err(|e| {
            no_incremental(format!(
                "UPLOAD_MANIFEST of {}'s backup_manifest failed: {}",
                p.manifest.id, e.message
            ))
        })?;
    }
    let mut o = backup_options(label, opts);
    o.incremental = parent.is_some();
    let mut bb = BaseBackup::start(c, &o)?;
    stream_backup(repo, &mut bb, id, opts, changed.as_ref()).map_err(refused)
}

/// The bytes of one run of `BASE_BACKUP` data events (an archive's `Data`, compressed when the
/// server compresses, or the manifest's `ManifestData`), until the first other event, which is
/// kept in `next`.
struct EventBytes<'a, 'c> {
    bb: &'a mut BaseBackup<'c>,
    /// Read `ManifestData` events instead of `Data`.
    manifest: bool,
    pending: Vec<u8>,
    at: usize,
    next: Option<Event>,
    ended: bool,
    error: Option<WalrsError>,
}

impl<'a, 'c> EventBytes<'a, 'c> {
    fn new(bb: &'a mut BaseBackup<'c>, manifest: bool) -> Self {
        EventBytes {
            bb,
            manifest,
            pending: Vec::new(),
            at: 0,
            next: None,
            ended: false,
            error: None,
        }
    }

    /// The next message's bytes, moved out without a copy (what `read` left of the current one
    /// first); `None` at the end of the run.
    fn take_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.at < self.pending.len() {
            let mut v = std::mem::take(&mut self.pending);
            let rest = v.split_off(self.at);
            self.at = 0;
            return Ok(Some(rest));
        }
        loop {
            if self.ended {
                return Ok(None);
            }
            match self.bb.next_event() {
                Ok(Some(Event::Data(d))) if !self.manifest => return Ok(Some(d)),
                Ok(Some(Event::ManifestData(d))) if self.manifest => return Ok(Some(d)),
                Ok(Some(Event::Progress(_))) => {}
                Ok(other) => {
                    self.next = other;
                    self.ended = true;
                }
                Err(e) => {
                    let msg = e.to_string();
                    self.error = Some(e);
                    self.ended = true;
                    return Err(std::io::Error::other(msg));
                }
            }
        }
    }
}

impl Read for EventBytes<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.at < self.pending.len() {
                let n = out.len().min(self.pending.len() - self.at);
                let src = self.pending.get(self.at..self.at + n).unwrap_or_default();
                out.get_mut(..n).unwrap_or_default().copy_from_slice(src);
                self.at += n;
                return Ok(n);
            }
            match self.take_chunk()? {
                Some(c) => {
                    self.pending = c;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
    }
}

/// Where an archive's tar bytes come from: the raw stream, or a decoder of the server's
/// compression over it.
enum ArchiveSource<'a, 'c> {
    Plain(EventBytes<'a, 'c>),
    Zstd(Box<zstd::stream::read::Decoder<'static, std::io::BufReader<EventBytes<'a, 'c>>>>),
    Lz4(Box<lz4_flex::frame::FrameDecoder<EventBytes<'a, 'c>>>),
}

impl<'a, 'c> ArchiveSource<'a, 'c> {
    fn new(raw: EventBytes<'a, 'c>, server: ServerCompression) -> Result<Self> {
        Ok(match server {
            ServerCompression::None => ArchiveSource::Plain(raw),
            ServerCompression::Zstd(_) => ArchiveSource::Zstd(Box::new(
                zstd::stream::read::Decoder::new(raw)
                    .map_err(|e| WalrsError::new(Kind::Internal, format!("zstd decoder: {e}")))?,
            )),
            ServerCompression::Lz4 => {
                ArchiveSource::Lz4(Box::new(lz4_flex::frame::FrameDecoder::new(raw)))
            }
        })
    }

    fn raw(&mut self) -> &mut EventBytes<'a, 'c> {
        match self {
            ArchiveSource::Plain(r) => r,
            ArchiveSource::Zstd(d) => d.get_mut().get_mut(),
            ArchiveSource::Lz4(d) => d.get_mut(),
        }
    }

    /// After the decoder's end: the raw stream must end there too (nothing after the
    /// compressed data), and its following event is taken.
    fn finish(&mut self) -> std::io::Result<()> {
        let compressed = !matches!(self, ArchiveSource::Plain(_));
        let raw = self.raw();
        let mut scratch = [0u8; 4096];
        loop {
            match raw.read(&mut scratch)? {
                0 => return Ok(()),
                _ if compressed => {
                    return Err(std::io::Error::other(
                        "data after the end of the server-compressed archive",
                    ));
                }
                _ => {}
            }
        }
    }
}

impl Read for ArchiveSource<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        match self {
            ArchiveSource::Plain(r) => r.read(out),
            ArchiveSource::Zstd(d) => d.read(out),
            ArchiveSource::Lz4(d) => d.read(out),
        }
    }
}

/// Feeds one archive's tar stream, chunk by chunk, from the `BASE_BACKUP` events.
struct ArchiveReader<'a, 'c> {
    source: ArchiveSource<'a, 'c>,
    /// A changed-block backup: rewrites the relation files its plan makes incremental.
    rewriter: Option<changed::TarRewriter<'a>>,
    /// The rewriter's output buffer (swapped with `pending`).
    rewritten: Vec<u8>,
    tracker: &'a mut TarTracker,
    /// Tar bytes: a Data message moved in as it came (plain), or a buffer the decoder fills,
    /// allocated once (never re-zeroed per fill).
    pending: Vec<u8>,
    /// End of the valid bytes in `pending`.
    filled: usize,
    at: usize,
    chunk_bytes: u64,
    /// The archive ended; the event that followed it.
    next: Option<Event>,
    ended: bool,
    error: Option<WalrsError>,
    progress: &'a crate::progress::Progress,
}

impl ArchiveReader<'_, '_> {
    /// Takes the error of the event stream (if any) or else `e`.
    fn fail(&mut self, e: std::io::Error) -> std::io::Error {
        let raw = self.source.raw().error.take();
        let msg = raw.as_ref().map_or_else(|| e.to_string(), ToString::to_string);
        self.error = Some(raw.unwrap_or_else(|| {
            WalrsError::new(Kind::Io, format!("the server's archive stream: {e}"))
        }));
        std::io::Error::other(msg)
    }
}

impl Read for ArchiveReader<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.ended {
                return Ok(0);
            }
            if self.at < self.filled {
                let mut n = out.len().min(self.filled - self.at);
                if self.chunk_bytes >= CHUNK_BYTES {
                    if self.tracker.at_boundary() {
                        return Ok(0); // this chunk ends here; the next one continues
                    }
                    n = n.min(
                        usize::try_from(self.tracker.to_next_boundary()).unwrap_or(usize::MAX),
                    );
                }
                let src = self.pending.get(self.at..self.at + n).unwrap_or_default();
                self.tracker.feed(src);
                out.get_mut(..n).unwrap_or_default().copy_from_slice(src);
                self.at += n;
                self.chunk_bytes += n as u64;
                return Ok(n);
            }
            self.at = 0;
            self.filled = 0;
            let got = match &mut self.source {
                ArchiveSource::Plain(raw) => raw.take_chunk().map(|c| match c {
                    Some(c) => {
                        let n = c.len();
                        self.pending = c;
                        // An empty Data message is not the end.
                        Some(n)
                    }
                    None => None,
                }),
                decoder => {
                    if self.pending.len() != DECODE_BUF {
                        self.pending = vec![0; DECODE_BUF];
                    }
                    decoder.read(&mut self.pending).map(|n| (n > 0).then_some(n))
                }
            };
            match got {
                Ok(None) => {
                    if let Err(e) = self.source.finish() {
                        return Err(self.fail(e));
                    }
                    if let Some(w) = &self.rewriter
                        && let Err(e) = w.finish()
                    {
                        let msg = e.to_string();
                        self.error = Some(e);
                        return Err(std::io::Error::other(msg));
                    }
                    self.next = self.source.raw().next.take();
                    self.ended = true;
                }
                Ok(Some(n)) => {
                    self.filled = n;
                    self.progress.add(n as u64);
                    if let Some(w) = self.rewriter.as_mut() {
                        self.rewritten.clear();
                        let input = self.pending.get(..n).unwrap_or_default();
                        if let Err(e) = w.feed(input, &mut self.rewritten) {
                            let msg = e.to_string();
                            self.error = Some(e);
                            return Err(std::io::Error::other(msg));
                        }
                        std::mem::swap(&mut self.pending, &mut self.rewritten);
                        self.filled = self.pending.len();
                    }
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
    }
}

/// Size of the buffer a server-compression decoder fills.
const DECODE_BUF: usize = 256 * 1024;

/// Compression the server applies to the archives (PostgreSQL 15 and later).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ServerCompression {
    /// Plain tar.
    #[default]
    None,
    /// zstd at this level.
    Zstd(i32),
    /// lz4 (frame format).
    Lz4,
}

impl std::str::FromStr for ServerCompression {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "none" => Ok(ServerCompression::None),
            "lz4" => Ok(ServerCompression::Lz4),
            "zstd" => Ok(ServerCompression::Zstd(1)),
            z => match z.strip_prefix("zstd:").map(str::parse::<i32>) {
                Some(Ok(l)) if (1..=22).contains(&l) => Ok(ServerCompression::Zstd(l)),
                _ => Err(format!("{s:?}: expected none, lz4, zstd or zstd:LEVEL (1-22)")),
            },
        }
    }
}

fn backup_id(repo: &Repository) -> Result<BackupId> {
    let base = BackupId::at(SystemTime::now());
    let mut id = base.clone();
    for n in 2.. {
        if !repo.holds_objects_under(&layout::backup_prefix(&id))? {
            break;
        }
        id = base.nth(n);
    }
    Ok(id)
}

/// Parses a size setting as SHOW prints it (`16MB`, `8192`, `1GB`, `64kB`).
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().ok()?;
    let mult = match s.get(digits.len()..)?.trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Takes a base backup of the server described by `conn` into `repo`. A repository without a
/// config (nothing archived yet) is initialized from the server. The steps: refuse what would
/// fail (another user's repository, broken archiving, another cluster), stream the archives and
/// PostgreSQL's manifest into objects, wait for the WAL from the backup's start to its stop, then
/// commit `manifest.json`.
pub fn take(
    repo: &Repository,
    cfg: Option<RepoConfig>,
    conn: &ConnParams,
    opts: &TakeOptions,
) -> Result<BackupManifest> {
    prepare_repository(repo)?;
    let id = backup_id(repo)?;
    let started = SystemTime::now();
    let t0 = Instant::now();
    let mut c = ReplConn::connect(conn, opts.io_timeout, opts.deadline)?;
    let sys = c.identify_system()?;
    match &opts.archive_check {
        Some(loc) => check_archiving(&mut c, conn, loc, opts)?,
        None => tracing::warn!(
            "--no-archive-check: the server's archiving is not checked; the backup completes only once its WAL is in the repository"
        ),
    }
    let cfg = match cfg {
        Some(cfg) => cfg,
        None => init_config(repo, &mut c, &sys, opts)?,
    };
    let cfg = &cfg;
    check_cluster(&c, conn, &sys, cfg)?;
    tracing::info!("base backup {id} of system {} starting", sys.system_id);
    let mut parent = match &opts.incremental {
        None => None,
        Some(req) => match check_incremental(repo, &mut c, conn, opts, req) {
            Ok(p) => Some(p),
            Err(e) if req.mode == IncrementalMode::Auto && e.kind == Kind::NoIncremental => {
                tracing::warn!("--incremental=auto: taking a full backup: {}", e.message);
                None
            }
            Err(e) => return Err(e),
        },
    };
    let label = format!("walrs {id}");
    let seg = cfg.wal_segment_size;
    let streamed = match stream_once(repo, &mut c, &id, &label, opts, parent.as_ref(), conn, seg) {
        Err(e)
            if e.kind == Kind::NoIncremental
                && opts.incremental.as_ref().is_some_and(|r| r.mode == IncrementalMode::Auto)
                && !repo.holds_objects_under(&layout::backup_prefix(&id))? =>
        {
            tracing::warn!("--incremental=auto: taking a full backup: {}", e.message);
            parent = None;
            drop(c);
            c = ReplConn::connect(conn, opts.io_timeout, opts.deadline)?;
            stream_once(repo, &mut c, &id, &label, opts, None, conn, seg)?
        }
        r => r?,
    };
    drop(c);
    let Streamed { start_lsn, tli, stop_lsn, stop_tli, archives, pg_key, bytes, stored, block_map } =
        streamed;

    // Complete only once the WAL from start to stop is in the repository.
    let first = WalFileName::segment(tli, start_lsn.segment(seg), seg);
    let last = WalFileName::segment(stop_tli, stop_lsn.saturating_sub(1).segment(seg), seg);
    // A short timeout: the report must not hold up the wait it reports on.
    let stats_timeout = opts.io_timeout.min(WAIT_PROGRESS_EVERY);
    let archiver = || match archiving::archiver_stats(conn, stats_timeout, opts.deadline) {
        Ok((_, s)) => format!("pg_stat_archiver: {}", s.summary()),
        Err(e) => format!("pg_stat_archiver unavailable: {e}"),
    };
    wait_for_wal(
        repo,
        tli,
        start_lsn,
        stop_tli,
        stop_lsn,
        seg,
        opts.wal_wait.min(opts.deadline.saturating_duration_since(Instant::now())),
        &archiver,
    )?;

    let now = SystemTime::now();
    let (format_version, backup_type, parent_id, chain) = match &parent {
        Some(p) => {
            let mut chain = p.manifest.chain_ids();
            chain.push(id.clone());
            (FORMAT_VERSION, BackupType::Incremental, Some(p.manifest.id.clone()), chain)
        }
        None => (FULL_FORMAT_VERSION, BackupType::Full, None, Vec::new()),
    };
    let incremental = parent.as_ref().map(|p| IncrementalInfo {
        method: if p.block_map { changed::METHOD_BLOCK_MAP } else { changed::METHOD_PG17 }
            .to_owned(),
        block_map: block_map.clone(),
    });
    let m = BackupManifest {
        format_version,
        id: id.clone(),
        label,
        system_identifier: sys.system_id,
        pg_version: cfg.pg_version,
        timeline: tli,
        start_lsn,
        stop_lsn,
        stop_timeline: stop_tli,
        start_time: crate::timefmt::rfc3339_utc(started),
        stop_time: crate::timefmt::rfc3339_utc(now),
        stop_time_us: now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0),
        first_wal: first.to_string(),
        last_wal: last.to_string(),
        archives,
        pg_manifest_key: pg_key.to_string(),
        bytes,
        stored_bytes: stored,
        compression: opts.compression.to_string(),
        encrypted: cfg.encryption.is_some(),
        backup_type,
        parent: parent_id,
        chain,
        incremental,
    };
    commit_manifest(repo, &m)?;
    tracing::info!(
        "{} base backup {id} complete: {} MiB in {} archive(s), stored {} MiB, {start_lsn} .. {stop_lsn}, {:.1} s",
        m.backup_type.as_str(),
        bytes >> 20,
        m.archives.len(),
        stored >> 20,
        t0.elapsed().as_secs_f64()
    );
    Ok(m)
}

/// Before the server does any work for the backup: another user's repository is refused, and
/// what killed base backups left (temporary files in directories no later write comes back to)
/// is swept.
fn prepare_repository(repo: &Repository) -> Result<()> {
    if let crate::storage::AnyStorage::Fs(fs) = repo.storage() {
        fs.check_writer("write", layout::BACKUPS_PREFIX)?;
    }
    if let Err(e) = repo.storage().temporaries(layout::BACKUPS_PREFIX, true) {
        tracing::warn!("could not sweep temporary files under {}: {e}", layout::BACKUPS_PREFIX);
    }
    Ok(())
}

/// Initializes the config of a repository that has none from the server: its system, version,
/// segment and WAL block sizes.
fn init_config(
    repo: &Repository,
    c: &mut ReplConn,
    sys: &crate::replication::SystemInfo,
    opts: &TakeOptions,
) -> Result<RepoConfig> {
    let show = |c: &mut ReplConn, what: &str| -> Result<u64> {
        let rows = c.simple_query(&format!("SHOW {what}"))?;
        rows.first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|v| parse_size(&v))
            .ok_or_else(|| WalrsError::new(Kind::Io, format!("SHOW {what}: unexpected answer")))
    };
    let seg = show(c, "wal_segment_size")?;
    let blk = show(c, "wal_block_size")?;
    let seg = crate::pg::WalSegSize::new(u32::try_from(seg).unwrap_or(0))
        .map_err(|e| WalrsError::new(Kind::Io, e.to_string()))?;
    let version = c.server_major().and_then(PgMajorVersion::from_number).ok_or_else(|| {
        WalrsError::new(Kind::Unsupported, "the server's PostgreSQL version is not supported")
    })?;
    let new = RepoConfig::new(
        sys.system_id,
        version,
        seg,
        u32::try_from(blk).unwrap_or(8192),
        opts.compression,
        repo.key(),
    );
    repo.init_config(&new)
}

/// Refuses a server that is not the repository's cluster (system identifier, major version).
fn check_cluster(
    c: &ReplConn,
    conn: &ConnParams,
    sys: &crate::replication::SystemInfo,
    cfg: &RepoConfig,
) -> Result<()> {
    if sys.system_id != cfg.system_identifier {
        return Err(WalrsError::new(
            Kind::ForeignCluster,
            format!(
                "{conn} is system {}, the repository holds system {}",
                sys.system_id, cfg.system_identifier
            ),
        ));
    }
    if c.server_major() != Some(cfg.pg_version.number()) {
        return Err(WalrsError::new(
            Kind::ForeignCluster,
            format!(
                "{conn} runs PostgreSQL {:?}, the repository holds PostgreSQL {}",
                c.server_major(),
                cfg.pg_version
            ),
        ));
    }
    Ok(())
}

/// The `BASE_BACKUP` options of a backup labelled `label`.
fn backup_options(label: &str, opts: &TakeOptions) -> BackupOptions {
    BackupOptions {
        label: label.to_owned(),
        fast_checkpoint: opts.fast_checkpoint,
        // walrs waits for the WAL itself, in the repository, with progress (step 9 of
        // docs/commands/basebackup.md); the server's own wait is silent for minutes.
        wait_for_archive: false,
        notice_wait: opts.wal_wait,
        server_compression: match opts.server_compression {
            ServerCompression::None => None,
            ServerCompression::Lz4 => Some(("lz4", None)),
            ServerCompression::Zstd(l) => Some(("zstd", Some(l))),
        },
        incremental: false,
    }
}

/// What streaming `BASE_BACKUP` into the repository stored.
struct Streamed {
    start_lsn: Lsn,
    tli: TimeLineId,
    stop_lsn: Lsn,
    stop_tli: TimeLineId,
    archives: Vec<Archive>,
    /// The object holding PostgreSQL's backup manifest.
    pg_key: ObjectKey,
    /// Plaintext bytes of all archives.
    bytes: u64,
    /// Bytes stored for them.
    stored: u64,
    /// What the changed-block method did (13–16 incremental backups).
    block_map: Option<BlockMapStats>,
}

/// What a changed-block backup needs while it streams.
struct ChangedCtx<'a> {
    parent: &'a BackupManifest,
    conn: &'a ConnParams,
    seg: crate::pg::WalSegSize,
}

/// Streams the backup's events into objects: each archive as chunk objects, PostgreSQL's
/// manifest into its object as it arrives (its size grows with the number of files, and memory
/// must not).
fn stream_backup(
    repo: &Repository,
    bb: &mut BaseBackup<'_>,
    id: &BackupId,
    opts: &TakeOptions,
    changed: Option<&ChangedCtx<'_>>,
) -> Result<Streamed> {
    let mut plan: Option<changed::ChangedPlan> = None;
    let (mut start, mut stop) = (None, None);
    let mut archives: Vec<Archive> = Vec::new();
    let pg_key = layout::pg_manifest_key(id)?;
    let mut manifest_stored = false;
    let (mut bytes, mut stored) = (0u64, 0u64);
    let progress = crate::progress::Progress::new("base backup", 0);
    let mut ev = bb.next_event()?;
    while let Some(e) = ev.take() {
        match e {
            Event::Start { lsn, tli } => {
                start = Some((lsn, tli));
                if let Some(cx) = changed {
                    plan = Some(changed_plan(repo, cx, lsn, tli, opts)?);
                }
            }
            Event::Tablespaces(t) => {
                progress.set_total(t.iter().filter_map(|t| t.size_kb).sum::<u64>() * 1024);
            }
            Event::Archive { name, path } => {
                let (archive, next) =
                    store_archive(repo, bb, id, &name, path, opts, &progress, plan.as_mut())?;
                for c in &archive.chunks {
                    bytes += c.plain_len;
                    stored += c.stored_len;
                }
                archives.push(archive);
                ev = next;
                continue;
            }
            Event::ManifestStart => {
                ev = store_pg_manifest(repo, bb, id, &pg_key)?;
                manifest_stored = true;
                continue;
            }
            Event::Data(_) | Event::Progress(_) | Event::ManifestData(_) => {}
            Event::End { lsn, tli } => stop = Some((lsn, tli)),
        }
        ev = bb.next_event()?;
    }
    progress.finish();
    let (start_lsn, tli) =
        start.ok_or_else(|| WalrsError::new(Kind::Io, "BASE_BACKUP sent no start position"))?;
    let (stop_lsn, stop_tli) =
        stop.ok_or_else(|| WalrsError::new(Kind::Io, "BASE_BACKUP sent no stop position"))?;
    if !manifest_stored {
        return Err(WalrsError::new(Kind::Io, "BASE_BACKUP sent no backup manifest"));
    }
    let block_map = plan.map(|p| p.stats);
    Ok(Streamed { start_lsn, tli, stop_lsn, stop_tli, archives, pg_key, bytes, stored, block_map })
}

/// The plan of a changed-block backup that starts at `start`: switches the server to a new WAL
/// segment (so the one holding `start` is archived), waits until the block maps of every segment
/// from the parent's start to `start` are in the repository (at most `--wal-wait`, saying what it
/// waits for), then reads them. When they do not come in time, or do not cover the range, every
/// file is stored whole, said once.
fn changed_plan(
    repo: &Repository,
    cx: &ChangedCtx<'_>,
    start: Lsn,
    tli: TimeLineId,
    opts: &TakeOptions,
) -> Result<changed::ChangedPlan> {
    use crate::index::blockmap::BlockMap;
    let seg = cx.seg;
    let parent_start = cx.parent.start_lsn;
    let plan = if cx.parent.timeline != tli || start <= parent_start {
        changed::ChangedPlan::build(repo, cx.parent, start, tli, seg)?
    } else {
        let switched = ReplConn::connect_sql(cx.conn, opts.io_timeout, opts.deadline)
            .and_then(|mut q| q.simple_query("SELECT pg_switch_wal()"));
        if let Err(e) = switched {
            let plan = changed::ChangedPlan::all_whole(
                cx.parent,
                format!(
                    "SELECT pg_switch_wal() failed ({e}): the segment holding the start is not archived (grant EXECUTE ON FUNCTION pg_switch_wal() to the backup role)"
                ),
            );
            tracing::warn!(
                "changed-block backup against {}: every file is stored whole: {}",
                cx.parent.id,
                plan.whole_reason().unwrap_or_default()
            );
            return Ok(plan);
        }
        let first = parent_start.segment(seg).0;
        let last = start.saturating_sub(1).segment(seg).0;
        let wait = opts.wal_wait.min(opts.deadline.saturating_duration_since(Instant::now()));
        let began = Instant::now();
        let mut next_report = began + WAIT_PROGRESS_EVERY;
        let mut missing: Option<WalFileName> = None;
        'segments: for n in first..=last {
            let name = WalFileName::segment(tli, crate::pg::XLogSegNo(n), seg);
            let mut said = false;
            loop {
                if repo.head::<BlockMap>(&name)?.is_some() {
                    break;
                }
                // A segment stored with its summary but no block map will not get one.
                if repo.head::<crate::index::SegmentSummary>(&name)?.is_some() {
                    missing = Some(name);
                    break 'segments;
                }
                if began.elapsed() > wait {
                    missing = Some(name);
                    break 'segments;
                }
                if !said {
                    tracing::info!(
                        "changed-block backup: waiting for {name} and its block map (the WAL from the parent's start {parent_start} to this backup's start {start} must be indexed; at most {} s, --wal-wait)",
                        wait.as_secs()
                    );
                    said = true;
                }
                if Instant::now() >= next_report {
                    tracing::warn!(
                        "changed-block backup: still waiting for the block map of {name} ({} s of {} s)",
                        began.elapsed().as_secs(),
                        wait.as_secs()
                    );
                    next_report += WAIT_PROGRESS_EVERY;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        match missing {
            Some(name) => changed::ChangedPlan::all_whole(
                cx.parent,
                format!(
                    "segment {name} has no block map in the repository (not archived within {} s, or archived by an older walrs)",
                    wait.as_secs()
                ),
            ),
            None => changed::ChangedPlan::build(repo, cx.parent, start, tli, seg)?,
        }
    };
    match plan.whole_reason() {
        Some(why) => tracing::warn!(
            "changed-block backup against {}: every file is stored whole: {why}",
            cx.parent.id
        ),
        None => tracing::info!(
            "changed-block backup against {}: block maps of {} segment(s) from {parent_start} to {start}",
            cx.parent.id,
            plan.stats.segments
        ),
    }
    Ok(plan)
}

/// Stores the archive `name` that the stream is at as chunk objects, each a run of whole tar
/// entries; returns it and the event that followed it.
#[allow(clippy::too_many_arguments)]
fn store_archive(
    repo: &Repository,
    bb: &mut BaseBackup<'_>,
    id: &BackupId,
    name: &str,
    path: String,
    opts: &TakeOptions,
    progress: &crate::progress::Progress,
    plan: Option<&mut changed::ChangedPlan>,
) -> Result<(Archive, Option<Event>)> {
    // With server compression the server names it base.tar.zst, 16384.tar.lz4, ...
    let name = [".zst", ".lz4", ".gz"]
        .iter()
        .find_map(|x| name.strip_suffix(x))
        .unwrap_or(name)
        .to_owned();
    let oid = name.strip_suffix(".tar").and_then(|o| o.parse::<u32>().ok());
    let mut tracker = TarTracker::default();
    let mut chunks = Vec::new();
    let raw = EventBytes::new(bb, false);
    let mut reader = ArchiveReader {
        source: ArchiveSource::new(raw, opts.server_compression)?,
        rewriter: plan.map(|p| changed::TarRewriter::new(p, oid)),
        rewritten: Vec::new(),
        tracker: &mut tracker,
        pending: Vec::new(),
        filled: 0,
        at: 0,
        chunk_bytes: 0,
        next: None,
        ended: false,
        error: None,
        progress,
    };
    for n in 0u32.. {
        let chunk = ChunkId { backup: id.clone(), archive: name.clone(), number: n };
        let k = layout::chunk_key(id, &name, n)?;
        reader.chunk_bytes = 0;
        let put = repo.put_new::<BackupChunk>(&chunk, &mut reader, opts.compression);
        if let Some(e) = reader.error.take() {
            return Err(e);
        }
        match put? {
            PutNew::Created(s) => {
                if s.plain_len > 0 || n == 0 {
                    chunks.push(Chunk {
                        key: k.to_string(),
                        plain_len: s.plain_len,
                        stored_len: s.stored_len,
                        digest: s.digest_hex(),
                    });
                } else {
                    repo.delete::<BackupChunk>(&chunk)?;
                }
            }
            PutNew::Exists => {
                return Err(WalrsError::new(Kind::Mismatch, format!("{k} already exists")));
            }
        }
        if reader.ended {
            break;
        }
    }
    let next = reader.next.take();
    if let Some(err) = tracker.error.take() {
        return Err(WalrsError::new(Kind::Io, format!("{name}: {err}")));
    }
    let location = (!path.is_empty()).then_some(path);
    let files = std::mem::take(&mut tracker.files);
    Ok((Archive { name, tablespace_oid: oid, location, chunks, files }, next))
}

/// Streams PostgreSQL's backup manifest into its object; returns the event that followed it.
fn store_pg_manifest(
    repo: &Repository,
    bb: &mut BaseBackup<'_>,
    id: &BackupId,
    pg_key: &ObjectKey,
) -> Result<Option<Event>> {
    let mut r = EventBytes::new(bb, true);
    let put = repo.put_new::<PgBackupManifest>(id, &mut r, Fixed);
    if let Some(e) = r.error.take() {
        return Err(e);
    }
    if let PutNew::Exists = put? {
        return Err(WalrsError::new(Kind::Mismatch, format!("{pg_key} already exists")));
    }
    Ok(r.next.take())
}

/// Writes `manifest.json`, the backup's commit point (write-once).
fn commit_manifest(repo: &Repository, m: &BackupManifest) -> Result<()> {
    match repo.save_new(&m.id, m, Fixed)? {
        PutNew::Created(_) => Ok(()),
        PutNew::Exists => {
            let mk = layout::manifest_key(&m.id)?;
            Err(WalrsError::new(Kind::Mismatch, format!("{mk} already exists")))
        }
    }
}

/// How often the wait for WAL reports what it waits for.
const WAIT_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Checks the server's archiving against the repository before the backup starts: logs what
/// is right (info) and what walrs cannot verify (warning), and refuses archiving that cannot
/// bring the backup's WAL to the repository.
fn check_archiving(
    c: &mut ReplConn,
    conn: &ConnParams,
    loc: &crate::storage::RepoLocation,
    opts: &TakeOptions,
) -> Result<()> {
    let report = archiving::check(c, conn, loc, opts.io_timeout, opts.deadline)?;
    for ok in &report.ok {
        tracing::info!("archiving: {ok}");
    }
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    match report.refusal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Waits until every segment from `start` (on `tli`) to `stop` (on `stop_tli`) is stored,
/// reporting every [`WAIT_PROGRESS_EVERY`] the segment awaited and `archiver()` (the server's
/// archiver statistics).
#[allow(clippy::too_many_arguments)]
fn wait_for_wal(
    repo: &Repository,
    tli: TimeLineId,
    start: Lsn,
    stop_tli: TimeLineId,
    stop: Lsn,
    seg: crate::pg::WalSegSize,
    wait: Duration,
    archiver: &dyn Fn() -> String,
) -> Result<()> {
    let began = Instant::now();
    let deadline = began + wait;
    let mut next_report = began + WAIT_PROGRESS_EVERY;
    let first = start.segment(seg).0;
    let last = stop.saturating_sub(1).segment(seg).0;
    let mut said = false;
    for n in first..=last {
        let t = if n == last { stop_tli } else { tli };
        let name = WalFileName::segment(t, crate::pg::XLogSegNo(n), seg);
        loop {
            if repo.head::<WalFile>(&name)?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                return Err(WalrsError::new(
                    Kind::Timeout,
                    format!(
                        "{name}, needed by the backup, did not reach the repository within {} s ({})",
                        wait.as_secs(),
                        archiver()
                    ),
                )
                .hint("check archive_command (it must push to this repository); the backup was not marked complete"));
            }
            if Instant::now() >= next_report {
                tracing::warn!(
                    "still waiting for {name} to reach the repository ({} s of --wal-wait {} s); {}",
                    began.elapsed().as_secs(),
                    wait.as_secs(),
                    archiver()
                );
                next_report += WAIT_PROGRESS_EVERY;
            }
            if !said {
                tracing::info!(
                    "waiting for {name} to be archived (the backup is complete only with its WAL)"
                );
                said = true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(())
}

/// `dir/name` → `dir/INCREMENTAL.name`.
fn incremental_path(path: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, f)) => format!("{dir}/{}{f}", crate::pg::incremental::INCREMENTAL_PREFIX),
        None => format!("{}{path}", crate::pg::incremental::INCREMENTAL_PREFIX),
    }
}

/// Problems `backup verify` found, one line each.
pub fn verify(repo: &Repository, m: &BackupManifest) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    // Every chunk decodes (each holds whole tar entries, so each is read on its own and a broken
    // one costs only its own files) and yields the files recorded at backup time.
    let mut seen: std::collections::BTreeMap<String, FileEntry> = std::collections::BTreeMap::new();
    // Archives (by path prefix) with a chunk that could not be read.
    let mut broken: Vec<String> = Vec::new();
    // Progress in the log (target walrs::progress): tar bytes of the chunks read.
    let progress = crate::progress::Progress::new(
        "backup verify",
        m.archives.iter().flat_map(|a| a.chunks.iter()).map(|c| c.plain_len).sum(),
    );
    for a in &m.archives {
        let prefix = match a.tablespace_oid {
            Some(oid) => format!("pg_tblspc/{oid}/"),
            None => String::new(),
        };
        let mut files_here = Vec::new();
        for c in &a.chunks {
            progress.add(c.plain_len);
            // From a network backend, a chunk that fails verification is read once more
            // (`repo::reread`) before it counts as damaged.
            let read = crate::repo::reread::read_verified(repo, &c.key, || {
                let mut t = TarTracker::default();
                let mut d = ChunkId::from_key(&c.key).and_then(|k| repo.open::<BackupChunk>(&k))?;
                let mut frame = Vec::new();
                while d.next_frame(&mut frame)? {
                    t.feed(&frame);
                }
                match d.summary() {
                    Some(sum) if sum.digest_hex() != c.digest => {
                        Err(WalrsError::new(Kind::Corrupt, "content differs from the manifest"))
                    }
                    _ => Ok(t),
                }
            });
            let (t, failed) = match read {
                Ok(t) => (t, None),
                Err(e) => (TarTracker::default(), Some(e.message)),
            };
            if let Some(why) = failed {
                problems.push(format!("{}: {why}", c.key));
                if !broken.contains(&prefix) {
                    broken.push(prefix.clone());
                }
                continue;
            }
            if let Some(e) = &t.error {
                problems.push(format!("{}: malformed tar: {e}", c.key));
            }
            files_here.extend(t.files);
        }
        // What the backup recorded for this archive at backup time.
        if !broken.contains(&prefix) {
            let now: std::collections::BTreeMap<&str, &FileEntry> =
                files_here.iter().map(|f| (f.path.as_str(), f)).collect();
            for f in &a.files {
                match now.get(f.path.as_str()) {
                    Some(g) if g.size == f.size && g.crc32c == f.crc32c => {}
                    Some(_) => problems.push(format!(
                        "{prefix}{}: differs from what manifest.json recorded at backup time",
                        f.path
                    )),
                    None => problems.push(format!(
                        "{prefix}{}: recorded in manifest.json but not in the backup",
                        f.path
                    )),
                }
            }
        }
        for f in files_here {
            seen.insert(format!("{prefix}{}", f.path), f);
        }
    }
    let in_broken = |path: &str| {
        broken.iter().any(|b| {
            if b.is_empty() {
                !path.starts_with("pg_tblspc/")
            } else {
                path.starts_with(b.as_str())
            }
        })
    };
    // Against PostgreSQL's own manifest.
    let mut json = Vec::new();
    let read = repo.open::<PgBackupManifest>(&m.id).and_then(|d| Ok(d.copy_to(&mut json)?));
    match read {
        Ok(_) => {}
        Err(e) if matches!(e.kind, Kind::NotFound | Kind::Corrupt) => {
            let what =
                if e.kind == Kind::NotFound { "missing from the repository" } else { "unreadable" };
            problems.push(format!(
                "{}: PostgreSQL's backup_manifest is {what} ({e}); the files cannot be checked against it",
                m.pg_manifest_key
            ));
            return Ok(problems);
        }
        Err(e) => return Err(e),
    }
    let pgm: serde_json::Value = serde_json::from_slice(&json).map_err(|e| {
        WalrsError::new(Kind::Corrupt, format!("{}: not JSON: {e}", m.pg_manifest_key))
    })?;
    let files = pgm.get("Files").and_then(|f| f.as_array()).cloned().unwrap_or_default();
    let block_map = m.incremental.as_ref().is_some_and(|i| i.method == changed::METHOD_BLOCK_MAP);
    let mut unchecked = 0usize;
    let mut listed = std::collections::BTreeSet::new();
    for f in files {
        let path = f.get("Path").and_then(|p| p.as_str()).unwrap_or_default();
        listed.insert(path.to_string());
        let size = f.get("Size").and_then(|s| s.as_u64()).unwrap_or(0);
        // A changed-block backup stores some relation files as INCREMENTAL.<name>, which
        // PostgreSQL's manifest lists whole: present is all that can be checked.
        if block_map && !seen.contains_key(path) && seen.contains_key(&incremental_path(path)) {
            continue;
        }
        let Some(ours) = seen.get(path) else {
            if in_broken(path) {
                unchecked += 1;
            } else {
                problems.push(format!("{path}: in PostgreSQL's manifest but not in the backup"));
            }
            continue;
        };
        if ours.size != size {
            problems
                .push(format!("{path}: {} bytes, PostgreSQL's manifest says {size}", ours.size));
        }
        if f.get("Checksum-Algorithm").and_then(|a| a.as_str()) == Some("CRC32C") {
            let want = f.get("Checksum").and_then(|c| c.as_str()).unwrap_or_default();
            let got: String =
                ours.crc32c.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect();
            if !want.eq_ignore_ascii_case(&got) {
                problems.push(format!("{path}: CRC-32C {got}, PostgreSQL's manifest says {want}"));
            }
        }
    }
    if unchecked > 0 {
        problems.push(format!(
            "{unchecked} more file(s) of PostgreSQL's manifest cannot be checked: they are in the unreadable chunk(s) above"
        ));
    }
    for path in seen.keys() {
        let as_plain = block_map && listed.contains(&changed::plain_path(path));
        if !listed.contains(path) && !as_plain {
            problems.push(format!("{path}: in the backup but not in PostgreSQL's manifest"));
        }
    }
    progress.finish();
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{AnyStorage, MemoryStorage};

    #[test]
    fn a_manifest_from_a_newer_walrs_is_refused() {
        let repo = Repository::new(AnyStorage::Memory(MemoryStorage::new()), None);
        let b1: BackupId = "20261121T161225Z".parse().unwrap();
        let json = br#"{"format_version": 99}"#;
        repo.put_new::<BackupManifest>(&b1, &json[..], Fixed).unwrap();
        let e = load_manifest(&repo, &b1).unwrap_err();
        assert_eq!(e.kind, Kind::Unsupported, "{e}");
        let none: BackupId = "20261121T161226Z".parse().unwrap();
        assert!(load_manifest(&repo, &none).unwrap().is_none());
    }
}
