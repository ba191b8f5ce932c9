//! Binlogs in a repository (docs/format/binlog.md): the `binlog/` namespace, its config object,
//! closed files, part objects of the active file, per-file metadata and recorded gaps.
//!
//! ```text
//! binlog/binlog.config                         which server the binlogs come from (JSON envelope)
//! binlog/files/<name>                          a closed binlog, whole, byte-identical to the server's
//! binlog/meta/<name>.json                      its size, SHA-256, first/last event time (after the file)
//! binlog/parts/<name>/<start>-<end>-<t0>-<t1>  bytes [start, end) of a file not yet closed; t0/t1 the
//!                                              first/last event timestamps in it (20/20/10/10 digits)
//! binlog/gaps/<name>.json                      binlogs the server purged before walrs got them
//! ```
//! Every object is an envelope whose logical name is its key (the keys are spelled in
//! `repo/layout.rs`; the kinds, [`BinlogConfig`], [`BinlogFile`], [`BinlogPart`], [`FileMeta`] and
//! [`Gap`], are implemented here). Parts are written with `put_if_absent`, in order, each starting
//! where the previous one ends; the whole file is written from the parts, read back and compared,
//! then its metadata, then the parts are deleted. A file with both a whole object and parts is
//! closed (a crash came before the deletion).

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::event::{self, ChecksumAlg};
use crate::codec::Compression;
use crate::error::{Kind, Result, WalrsError};
use crate::repo::{
    Encryption, EncryptionInfo, Fixed, JsonObject, PutNew, RepoObject, Repository, layout,
};
use crate::storage::{ObjectKey, Storage};

/// The `format` field of the config.
pub const FORMAT_NAME: &str = "walrs-binlog";
/// The config format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// Which server the binlogs of a repository come from, and how they are stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BinlogConfig {
    /// Always `walrs-binlog`.
    pub format: String,
    /// Format version of this object.
    pub format_version: u32,
    /// `mariadb` or `mysql`.
    pub flavour: String,
    /// `@@server_id` of the source.
    pub server_id: u32,
    /// `@@server_uuid` (MySQL only; MariaDB has none).
    pub server_uuid: Option<String>,
    /// The binlog base name (`mysql-bin` for `mysql-bin.000001`).
    pub basename: String,
    /// `@@binlog_checksum` when the repository was created (each file's Format Description rules).
    pub checksum: ChecksumAlg,
    /// Server version when the repository was created.
    pub server_version: String,
    /// Compression of new objects.
    pub compression: String,
    /// Encryption, absent when unencrypted.
    pub encryption: Option<EncryptionInfo>,
}

/// What the tail learns about its server when it connects.
#[derive(Clone, Debug)]
pub struct ServerIdentity {
    /// `mariadb` or `mysql`.
    pub flavour: String,
    /// `@@server_id`.
    pub server_id: u32,
    /// `@@server_uuid`, MySQL only.
    pub server_uuid: Option<String>,
    /// Base name of the binlogs.
    pub basename: String,
    /// `@@binlog_checksum`.
    pub checksum: ChecksumAlg,
    /// `@@version`.
    pub version: String,
}

/// One part object of a file not yet closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// File offset of its first byte.
    pub start: u64,
    /// File offset just past its last byte.
    pub end: u64,
    /// Timestamp of its first event with a timestamp (0 if none).
    pub first_ts: u32,
    /// Timestamp of its last event.
    pub last_ts: u32,
}

impl Part {
    /// Its key under the file `name`.
    pub fn key(&self, name: &str) -> Result<ObjectKey> {
        Ok(layout::binlog_part_key(name, self.start, self.end, self.first_ts, self.last_ts)?)
    }

    fn parse(s: &str) -> Option<Part> {
        let mut it = s.split('-');
        let p = Part {
            start: it.next()?.parse().ok()?,
            end: it.next()?.parse().ok()?,
            first_ts: it.next()?.parse().ok()?,
            last_ts: it.next()?.parse().ok()?,
        };
        (it.next().is_none() && p.end > p.start).then_some(p)
    }
}

/// Metadata of a closed file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FileMeta {
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the file (hex).
    pub sha256: String,
    /// Timestamp of the first event (Unix seconds).
    pub first_event_time: u32,
    /// Timestamp of the last event.
    pub last_event_time: u32,
    /// MariaDB GTIDs in the file, one `D-S-N..D-S-M` range per replication domain.
    #[serde(default)]
    pub gtids: Vec<String>,
}

/// A gap: binlogs the server no longer had when walrs asked for them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The file walrs needed.
    pub missing_file: String,
    /// The offset in it walrs needed.
    pub missing_offset: u64,
    /// The server's oldest binlog when the gap was found (walrs may continue from there).
    pub server_first_file: Option<String>,
    /// When it was found (RFC 3339).
    pub detected_at: String,
}

/// What the repository holds of one binlog file.
#[derive(Clone, Debug, Default)]
pub struct FileEntry {
    /// The whole object exists (the file is closed).
    pub whole: bool,
    /// Its metadata, if written.
    pub meta: Option<FileMeta>,
    /// Parts, in offset order (left over for a closed file whose parts were not yet deleted).
    pub parts: Vec<Part>,
}

impl FileEntry {
    /// Bytes received of this file: the size of a whole file, else the end of the last part.
    pub fn received(&self) -> u64 {
        match (&self.meta, self.parts.last()) {
            (Some(m), _) => m.size,
            (None, Some(p)) => p.end,
            (None, None) => 0,
        }
    }
}

/// Everything stored under `binlog/`, files ordered by their numeric suffix.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// Files by (index, name).
    pub files: BTreeMap<(u64, String), FileEntry>,
    /// Recorded gaps.
    pub gaps: Vec<Gap>,
}

impl Catalog {
    /// The entry of `name`.
    pub fn get(&self, name: &str) -> Option<&FileEntry> {
        self.files.get(&(event::file_index(name).unwrap_or(0), name.to_string()))
    }

    /// The last file (highest index).
    pub fn last(&self) -> Option<(&str, &FileEntry)> {
        self.files.iter().next_back().map(|((_, n), e)| (n.as_str(), e))
    }
}

/// The binlog side of a repository.
#[derive(Clone)]
pub struct BinlogStore {
    repo: Arc<Repository>,
    compression: Compression,
}

/// The binlog config: one unencrypted, uncompressed JSON document (readable without the key),
/// written once.
impl RepoObject for BinlogConfig {
    const KIND: &'static str = "binlog config";
    const FORMAT_VERSION: Option<u32> = Some(FORMAT_VERSION);
    const ENCRYPTION: Encryption = Encryption::Never;
    type Id = ();
    type Codec = Fixed;

    fn key(_: &()) -> Result<ObjectKey> {
        Ok(ObjectKey::new(layout::BINLOG_CONFIG)?)
    }

    fn compression(_: Fixed) -> Compression {
        Compression::None
    }
}

impl JsonObject for BinlogConfig {
    const FORMAT_NAME: Option<&'static str> = Some(FORMAT_NAME);
    const VERSION_REQUIRED: bool = true;
    const PRETTY: bool = true;
}

/// A closed binlog file, whole, byte-identical to the server's.
#[derive(Debug)]
pub struct BinlogFile;

impl RepoObject for BinlogFile {
    const KIND: &'static str = "binlog file";
    const FORMAT_VERSION: Option<u32> = None;
    /// The file's name (`mysql-bin.000042`).
    type Id = String;
    type Codec = Compression;

    fn key(name: &String) -> Result<ObjectKey> {
        Ok(layout::binlog_file_key(name)?)
    }

    fn compression(codec: Compression) -> Compression {
        codec
    }
}

/// A part of a binlog file not yet closed.
#[derive(Debug)]
pub struct BinlogPart;

impl RepoObject for BinlogPart {
    const KIND: &'static str = "binlog part";
    const FORMAT_VERSION: Option<u32> = None;
    /// The file's name and the part.
    type Id = (String, Part);
    type Codec = Compression;

    fn key((name, part): &(String, Part)) -> Result<ObjectKey> {
        part.key(name)
    }

    fn compression(codec: Compression) -> Compression {
        codec
    }
}

/// The metadata of a closed file: JSON without a version, compressed and encrypted like the
/// binlogs.
impl RepoObject for FileMeta {
    const KIND: &'static str = "binlog metadata";
    const FORMAT_VERSION: Option<u32> = None;
    /// The file's name.
    type Id = String;
    type Codec = Compression;

    fn key(name: &String) -> Result<ObjectKey> {
        Ok(layout::binlog_meta_key(name)?)
    }

    fn compression(codec: Compression) -> Compression {
        codec
    }
}

impl JsonObject for FileMeta {
    const PRETTY: bool = true;
}

/// A recorded gap: JSON without a version, like the metadata.
impl RepoObject for Gap {
    const KIND: &'static str = "binlog gap";
    const FORMAT_VERSION: Option<u32> = None;
    /// The name of the missing file.
    type Id = String;
    type Codec = Compression;

    fn key(name: &String) -> Result<ObjectKey> {
        Ok(layout::binlog_gap_key(name)?)
    }

    fn compression(codec: Compression) -> Compression {
        codec
    }
}

impl JsonObject for Gap {
    const PRETTY: bool = true;
}

/// The newest event the repository holds of its binlogs, for `walrs status` and `walrs metrics`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastEvent {
    /// The file that holds it (the active file, or the last closed one).
    pub file: String,
    /// Whether that file is closed (stored whole).
    pub closed: bool,
    /// The event's timestamp (Unix seconds, the server's clock).
    pub time: u32,
    /// Recorded gaps.
    pub gaps: usize,
}

/// The newest stored event, without reading any binlog: the names of the active file's part
/// objects carry their last event's timestamp, and a closed file's metadata its last event's.
/// One listing of the parts (only the active file has parts, or a file whose close was
/// interrupted), one of the metadata and one of the gaps (small: one object per file), and the
/// newest metadata object. `None` when nothing with a timestamp is stored.
pub fn last_stored_event(repo: &Repository) -> Result<Option<LastEvent>> {
    let names = |prefix: &str| -> Result<Vec<String>> {
        let mut out = Vec::new();
        for item in repo.storage().list(prefix)? {
            out.push(item?.key.as_str().strip_prefix(prefix).unwrap_or_default().to_owned());
        }
        Ok(out)
    };
    let order = |n: &str| (event::file_index(n).unwrap_or(0), n.to_owned());
    // The newest part of the newest file with parts.
    let mut active: Option<((u64, String), u32)> = None;
    for rest in names(layout::BINLOG_PARTS_PREFIX)? {
        let Some((name, part)) = rest.split_once('/') else { continue };
        let Some(part) = Part::parse(part) else { continue };
        if !event::valid_file_name(name) || part.last_ts == 0 {
            continue;
        }
        let o = order(name);
        match &mut active {
            Some((a, ts)) if *a == o => *ts = (*ts).max(part.last_ts),
            Some((a, _)) if *a > o => {}
            _ => active = Some((o, part.last_ts)),
        }
    }
    let closed = names(layout::BINLOG_META_PREFIX)?
        .into_iter()
        .filter_map(|m| m.strip_suffix(layout::JSON_SUFFIX).map(str::to_owned))
        .filter(|n| event::valid_file_name(n))
        .max_by_key(|n| order(n));
    let gaps = names(layout::BINLOG_GAPS_PREFIX)?.len();
    let closed = match closed {
        Some(name) => repo.load::<FileMeta>(&name)?.map(|m| (order(&m.name), m.last_event_time)),
        None => None,
    };
    let newest = match (active, closed) {
        (Some(a), Some(c)) if c.0 >= a.0 => Some((c, true)),
        (Some(a), _) => Some((a, false)),
        (None, Some(c)) => Some((c, true)),
        (None, None) => None,
    };
    Ok(newest.map(|(((_, file), time), closed)| LastEvent { file, closed, time, gaps }))
}

/// Reads the binlog config, if any.
pub fn read_config(repo: &Repository) -> Result<Option<BinlogConfig>> {
    repo.load(&())
}

impl BinlogStore {
    /// Opens the binlog namespace of `repo` for reading: the config must exist and match the key.
    pub fn open(repo: Arc<Repository>) -> Result<(BinlogStore, BinlogConfig)> {
        let cfg = read_config(&repo)?.ok_or_else(|| {
            WalrsError::new(
                Kind::NotInitialized,
                format!("{} holds no binlogs (no {})", repo.describe(), layout::BINLOG_CONFIG),
            )
            .hint("check WALRS_REPO; `walrs binlog tail` creates the binlog namespace")
        })?;
        repo.check_key_info(cfg.encryption.as_ref())?;
        let compression = cfg.compression.parse().map_err(|e: String| {
            WalrsError::new(Kind::Corrupt, format!("binlog config: compression: {e}"))
        })?;
        Ok((BinlogStore { repo, compression }, cfg))
    }

    /// Opens for writing binlogs of `server`: creates the config if absent, refuses another
    /// server's binlogs. `compression` (when given) applies to new objects.
    pub fn open_for(
        repo: Arc<Repository>,
        server: &ServerIdentity,
        compression: Option<Compression>,
    ) -> Result<(BinlogStore, BinlogConfig)> {
        let cfg = match read_config(&repo)? {
            Some(c) => c,
            None => {
                let cfg = BinlogConfig {
                    format: FORMAT_NAME.into(),
                    format_version: FORMAT_VERSION,
                    flavour: server.flavour.clone(),
                    server_id: server.server_id,
                    server_uuid: server.server_uuid.clone(),
                    basename: server.basename.clone(),
                    checksum: server.checksum,
                    server_version: server.version.clone(),
                    compression: compression.unwrap_or_default().to_string(),
                    encryption: repo.key().map(EncryptionInfo::for_key),
                };
                match repo.save_new(&(), &cfg, Fixed)? {
                    PutNew::Created(_) => {
                        tracing::info!(
                            "created the binlog namespace of {} for {} server {} ({})",
                            repo.describe(),
                            cfg.flavour,
                            cfg.server_id,
                            cfg.basename
                        );
                        cfg
                    }
                    PutNew::Exists => read_config(&repo)?.ok_or_else(|| {
                        WalrsError::new(
                            Kind::Io,
                            format!("{} vanished after it was created", layout::BINLOG_CONFIG),
                        )
                    })?,
                }
            }
        };
        check_identity(&cfg, server)?;
        let (mut store, cfg) = BinlogStore::open(repo)?;
        if let Some(c) = compression {
            store.compression = c;
        }
        Ok((store, cfg))
    }

    /// The repository.
    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    /// Lists everything under `binlog/`.
    pub fn scan(&self) -> Result<Catalog> {
        let mut cat = Catalog::default();
        let mut gap_keys = Vec::new();
        let mut meta_keys = Vec::new();
        for item in self.repo.storage().list(layout::BINLOG_PREFIX)? {
            let meta = item?;
            let key = meta.key.as_str();
            if let Some(name) = key.strip_prefix(layout::BINLOG_FILES_PREFIX) {
                if event::valid_file_name(name) {
                    cat.files
                        .entry((event::file_index(name).unwrap_or(0), name.to_string()))
                        .or_default()
                        .whole = true;
                }
            } else if let Some(p) = key.strip_prefix(layout::BINLOG_PARTS_PREFIX) {
                let Some((name, part)) = p.split_once('/') else { continue };
                let Some(part) = Part::parse(part) else {
                    tracing::warn!("ignoring unrecognised object {key}");
                    continue;
                };
                if event::valid_file_name(name) {
                    cat.files
                        .entry((event::file_index(name).unwrap_or(0), name.to_string()))
                        .or_default()
                        .parts
                        .push(part);
                }
            } else if let Some(m) = key.strip_prefix(layout::BINLOG_META_PREFIX) {
                meta_keys.extend(m.strip_suffix(layout::JSON_SUFFIX).map(str::to_owned));
            } else if let Some(g) = key.strip_prefix(layout::BINLOG_GAPS_PREFIX) {
                gap_keys.extend(g.strip_suffix(layout::JSON_SUFFIX).map(str::to_owned));
            }
        }
        for e in cat.files.values_mut() {
            e.parts.sort_by_key(|p| p.start);
        }
        for name in meta_keys {
            let Some(m) = self.repo.load::<FileMeta>(&name)? else { continue };
            if let Some(e) =
                cat.files.get_mut(&(event::file_index(&m.name).unwrap_or(0), m.name.clone()))
            {
                e.meta = Some(m);
            }
        }
        for name in gap_keys {
            cat.gaps.extend(self.repo.load::<Gap>(&name)?);
        }
        Ok(cat)
    }

    /// Stores a part of the file `name` (bytes `data` at `part.start`). Refuses an existing part:
    /// only one tail may write a binlog namespace.
    pub fn put_part(&self, name: &str, part: &Part, data: &[u8]) -> Result<()> {
        let id = (name.to_owned(), part.clone());
        match self.repo.put_new::<BinlogPart>(&id, data, self.compression)? {
            PutNew::Created(_) => Ok(()),
            // A retry of a write that succeeded after all: the same bytes are fine.
            PutNew::Exists if self.part_equals(&id, data)? => Ok(()),
            PutNew::Exists => Err(WalrsError::new(
                Kind::Mismatch,
                format!("part {} already exists in {}", part.key(name)?, self.repo.describe()),
            )
            .hint("is another `walrs binlog tail` writing to this repository?")),
        }
    }

    fn part_equals(&self, id: &(String, Part), data: &[u8]) -> Result<bool> {
        let mut stored = Vec::with_capacity(data.len());
        self.repo.open::<BinlogPart>(id)?.copy_to(&mut stored)?;
        Ok(stored == data)
    }

    /// Records a gap.
    pub fn record_gap(&self, gap: &Gap) -> Result<()> {
        self.repo.save_new(&gap.missing_file, gap, self.compression)?;
        Ok(())
    }

    /// A reader of what is stored of `name`: the whole file, or its parts concatenated (which
    /// must be contiguous from offset 0).
    pub fn reader<'a>(&'a self, name: &str, entry: &FileEntry) -> Result<ContentReader<'a>> {
        let mut objects = Vec::new();
        if entry.whole {
            objects.push(Stored::File(name.to_owned()));
        } else {
            let mut at = 0;
            for p in &entry.parts {
                if p.start != at {
                    return Err(WalrsError::new(
                        Kind::Corrupt,
                        format!(
                            "{name}: stored parts leave a hole at offset {at} (next part starts at {})",
                            p.start
                        ),
                    ));
                }
                at = p.end;
                objects.push(Stored::Part((name.to_owned(), p.clone())));
            }
        }
        Ok(ContentReader {
            store: self,
            objects: objects.into_iter().collect(),
            current: None,
            buf: Vec::new(),
            pos: 0,
        })
    }

    /// Closes the file `name`: writes the whole object from its stored parts followed by `tail`
    /// (bytes not yet in a part), reads it back and compares, writes its metadata, deletes the
    /// parts. `expected_len` is the file's size.
    pub fn close_file(
        &self,
        name: &str,
        parts: &[Part],
        tail: &[u8],
        expected_len: u64,
        times: (u32, u32),
    ) -> Result<FileMeta> {
        let entry = FileEntry { whole: false, meta: None, parts: parts.to_vec() };
        let source = HashingReader {
            inner: self.reader(name, &entry)?.chain(tail),
            hasher: Sha256::new(),
            len: 0,
            scanner: Some(event::FileScanner::default()),
        };
        let file = name.to_owned();
        let key_s = BinlogFile::key(&file)?.to_string();
        let mut source = source;
        let created = self.repo.put_new::<BinlogFile>(&file, &mut source, self.compression)?;
        if let PutNew::Exists = created {
            // The store answered before reading the body: hash the rest of the source too.
            std::io::copy(&mut source, &mut std::io::sink()).map_err(|e| io_err(name, e))?;
        }
        let (sha, len) = (hex(&source.hasher.clone().finalize()), source.len);
        if len != expected_len {
            return Err(WalrsError::new(
                Kind::Internal,
                format!("{name}: {len} bytes assembled, {expected_len} received"),
            ));
        }
        if let PutNew::Exists = created {
            tracing::info!("{name} was already stored whole; checking it");
        }
        // Read back: the envelope checks its own checksum, the digest checks the content.
        let mut back = HashingReader {
            inner: self.reader(name, &FileEntry { whole: true, ..Default::default() })?,
            hasher: Sha256::new(),
            len: 0,
            scanner: None,
        };
        std::io::copy(&mut back, &mut std::io::sink()).map_err(|e| io_err(&key_s, e))?;
        let back_sha = hex(&back.hasher.finalize());
        if back_sha != sha || back.len != len {
            return Err(WalrsError::new(
                Kind::Mismatch,
                format!("{key_s}: stored content ({} bytes, sha256 {back_sha}) differs from the received binlog ({len} bytes, sha256 {sha})", back.len),
            )
            .hint("another tail may have written this file, or the repository holds another server's binlogs"));
        }
        let scanner = source.scanner.take().unwrap_or_default();
        if !scanner.at_boundary() {
            return Err(WalrsError::new(
                Kind::Corrupt,
                format!("{name}: the assembled file does not end on an event boundary"),
            ));
        }
        let times = if scanner.times.0 != 0 { scanner.times } else { times };
        let meta = FileMeta {
            name: name.to_string(),
            size: len,
            sha256: sha,
            first_event_time: times.0,
            last_event_time: times.1,
            gtids: scanner.gtid_ranges(),
        };
        self.repo.save_new(&file, &meta, self.compression)?;
        self.delete_parts(name, parts)?;
        Ok(meta)
    }

    /// Writes the metadata of a whole file from its stored bytes (no parts left to compare with).
    pub fn rebuild_meta(&self, name: &str) -> Result<FileMeta> {
        let mut r = HashingReader {
            inner: self.reader(name, &FileEntry { whole: true, ..Default::default() })?,
            hasher: Sha256::new(),
            len: 0,
            scanner: Some(event::FileScanner::default()),
        };
        std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| io_err(name, e))?;
        let scanner = r.scanner.take().unwrap_or_default();
        let meta = FileMeta {
            name: name.to_string(),
            size: r.len,
            sha256: hex(&r.hasher.finalize()),
            first_event_time: scanner.times.0,
            last_event_time: scanner.times.1,
            gtids: scanner.gtid_ranges(),
        };
        self.repo.save_new(&name.to_owned(), &meta, self.compression)?;
        Ok(meta)
    }

    /// Deletes the parts left over of a closed file.
    pub fn delete_parts(&self, name: &str, parts: &[Part]) -> Result<()> {
        for p in parts {
            self.repo.delete::<BinlogPart>(&(name.to_owned(), p.clone()))?;
        }
        Ok(())
    }
}

fn io_err(what: &str, e: std::io::Error) -> WalrsError {
    if let Some(w) = e.get_ref().and_then(|i| i.downcast_ref::<WalrsErrorBox>()) {
        return WalrsError::new(w.0.kind, w.0.message.clone());
    }
    WalrsError::new(Kind::Io, format!("{what}: {e}"))
}

/// A [`WalrsError`] carried through an `io::Error`.
#[derive(Debug)]
struct WalrsErrorBox(WalrsError);

impl std::fmt::Display for WalrsErrorBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for WalrsErrorBox {}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Refuses binlogs of another server than the namespace's.
pub fn check_identity(cfg: &BinlogConfig, server: &ServerIdentity) -> Result<()> {
    let mut diffs = Vec::new();
    if cfg.server_id != server.server_id {
        diffs.push(format!("server_id {} (stored) vs {}", cfg.server_id, server.server_id));
    }
    if let (Some(a), Some(b)) = (&cfg.server_uuid, &server.server_uuid)
        && a != b
    {
        diffs.push(format!("server_uuid {a} (stored) vs {b}"));
    }
    if cfg.basename != server.basename {
        diffs.push(format!("binlog base name {} (stored) vs {}", cfg.basename, server.basename));
    }
    if diffs.is_empty() {
        return Ok(());
    }
    Err(WalrsError::new(
        Kind::ForeignCluster,
        format!("the repository's binlogs come from another server: {}", diffs.join(", ")),
    )
    .hint("use another repository (or prefix) for each server"))
}

/// One stored object of a binlog file's content.
enum Stored {
    /// The whole file.
    File(String),
    /// A part of it.
    Part((String, Part)),
}

/// Streams the content of stored objects one after the other, decoding and verifying each.
pub struct ContentReader<'a> {
    store: &'a BinlogStore,
    objects: std::collections::VecDeque<Stored>,
    current: Option<crate::codec::Decoder<crate::repo::ObjectReader<'a>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ContentReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(rest) = self.buf.get(self.pos..)
                && !rest.is_empty()
            {
                let n = rest.len().min(out.len());
                out.get_mut(..n)
                    .unwrap_or_default()
                    .copy_from_slice(rest.get(..n).unwrap_or_default());
                self.pos += n;
                return Ok(n);
            }
            self.buf.clear();
            self.pos = 0;
            if let Some(dec) = self.current.as_mut() {
                let more = dec
                    .next_frame(&mut self.buf)
                    .map_err(|e| std::io::Error::other(WalrsErrorBox(e.into())))?;
                if !more {
                    self.current = None;
                }
                continue;
            }
            let Some(object) = self.objects.pop_front() else { return Ok(0) };
            let repo = &self.store.repo;
            let dec = match &object {
                Stored::File(name) => repo.open::<BinlogFile>(name),
                Stored::Part(id) => repo.open::<BinlogPart>(id),
            }
            .map_err(|e| std::io::Error::other(WalrsErrorBox(e)))?;
            self.current = Some(dec);
        }
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
    scanner: Option<event::FileScanner>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        let got = out.get(..n).unwrap_or_default();
        self.hasher.update(got);
        if let Some(s) = self.scanner.as_mut() {
            s.feed(got);
        }
        self.len += n as u64;
        Ok(n)
    }
}

/// Maps an error from reading a [`ContentReader`] back to a [`WalrsError`].
pub fn read_error(what: &str, e: std::io::Error) -> WalrsError {
    io_err(what, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_keys_roundtrip() {
        let p = Part { start: 4, end: 1000, first_ts: 1_700_000_000, last_ts: 1_700_000_005 };
        let k = p.key("mysql-bin.000001").unwrap().to_string();
        let tail = k.rsplit('/').next().unwrap();
        assert_eq!(Part::parse(tail), Some(p));
        assert_eq!(Part::parse("1-1-0-0"), None);
    }

    /// Issue 11, item 2: binlog objects are read with the repository's encryption expected, like
    /// every other object; an unencrypted one in an encrypted namespace is a foreign object.
    #[test]
    fn an_unencrypted_binlog_object_in_an_encrypted_namespace_is_refused() {
        use crate::codec::MasterKey;
        use crate::storage::{AnyStorage, MemoryStorage};
        let key = MasterKey::from_bytes([7; 32]);
        let repo = Arc::new(Repository::new(AnyStorage::Memory(MemoryStorage::new()), Some(key)));
        let server = ServerIdentity {
            flavour: "mariadb".into(),
            server_id: 1,
            server_uuid: None,
            basename: "mysql-bin".into(),
            checksum: ChecksumAlg::Crc32,
            version: "10.11".into(),
        };
        let (store, cfg) = BinlogStore::open_for(Arc::clone(&repo), &server, None).unwrap();
        assert!(cfg.encryption.is_some());
        let name = "mysql-bin.000001";
        let part = Part { start: 0, end: 4, first_ts: 0, last_ts: 0 };
        store.put_part(name, &part, b"\xfebin").unwrap();
        let read = |store: &BinlogStore| {
            let cat = store.scan()?;
            let entry = cat.get(name).cloned().unwrap_or_default();
            let mut out = Vec::new();
            store
                .reader(name, &entry)?
                .read_to_end(&mut out)
                .map_err(|e| read_error("reading", e))?;
            Ok::<_, WalrsError>(out)
        };
        assert_eq!(read(&store).unwrap(), b"\xfebin");
        // Planted without the key: the whole file, unencrypted, under its own name.
        let k = BinlogFile::key(&name.to_owned()).unwrap();
        let plain = crate::codec::encode_to_vec(k.as_str(), b"\xfebin", Compression::None, None);
        let mut body = crate::storage::BytesBody::new(plain.as_ref().unwrap());
        repo.storage().put(&k, &mut body).unwrap();
        let e = read(&store).unwrap_err();
        assert!(e.kind == Kind::Corrupt && e.message.contains("foreign object"), "{e}");
    }
}
