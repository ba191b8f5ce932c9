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
//! Every object is an envelope whose logical name is its key. Parts are written with
//! `put_if_absent`, in order, each starting where the previous one ends; the whole file is written
//! from the parts, read back and compared, then its metadata, then the parts are deleted. A file
//! with both a whole object and parts is closed (a crash came before the deletion).

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::event::{self, ChecksumAlg};
use crate::codec::Compression;
use crate::error::{Kind, Result, WalrsError};
use crate::repo::{EncryptionInfo, PutNew, Repository};
use crate::storage::{ErrorKind, ObjectKey, Storage};

/// Prefix of every binlog object.
pub const PREFIX: &str = "binlog/";
/// The binlog config object.
pub const CONFIG: &str = "binlog/binlog.config";
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
    pub fn key(&self, name: &str) -> String {
        format!(
            "{PREFIX}parts/{name}/{:020}-{:020}-{:010}-{:010}",
            self.start, self.end, self.first_ts, self.last_ts
        )
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

fn internal(e: impl std::fmt::Display) -> WalrsError {
    WalrsError::new(Kind::Internal, e.to_string())
}

/// The binlog side of a repository.
#[derive(Clone)]
pub struct BinlogStore {
    repo: Arc<Repository>,
    compression: Compression,
    encrypt: bool,
}

/// Reads the binlog config, if any.
pub fn read_config(repo: &Repository) -> Result<Option<BinlogConfig>> {
    let key = ObjectKey::new(CONFIG)?;
    let mut json = Vec::new();
    match repo.storage().get(&key) {
        Ok(r) => {
            crate::codec::Decoder::new(r, CONFIG, None)?.copy_to(&mut json)?;
        }
        Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let invalid = |e: String| {
        WalrsError::new(Kind::Corrupt, format!("binlog config {CONFIG} is not valid: {e}"))
    };
    let value: serde_json::Value =
        serde_json::from_slice(&json).map_err(|e| invalid(e.to_string()))?;
    if value.get("format").and_then(|v| v.as_str()) != Some(FORMAT_NAME) {
        return Err(invalid("not a walrs binlog config".into()));
    }
    match value.get("format_version").and_then(|v| v.as_u64()) {
        Some(v) if v > u64::from(FORMAT_VERSION) => {
            return Err(WalrsError::new(
                Kind::Unsupported,
                format!("binlog format version {v} is newer than this walrs understands"),
            )
            .hint("upgrade walrs"));
        }
        Some(v) if v >= 1 => {}
        _ => return Err(invalid("format_version is missing or invalid".into())),
    }
    let cfg: BinlogConfig = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
    Ok(Some(cfg))
}

impl BinlogStore {
    /// Opens the binlog namespace of `repo` for reading: the config must exist and match the key.
    pub fn open(repo: Arc<Repository>) -> Result<(BinlogStore, BinlogConfig)> {
        let cfg = read_config(&repo)?.ok_or_else(|| {
            WalrsError::new(
                Kind::NotInitialized,
                format!("{} holds no binlogs (no {CONFIG})", repo.describe()),
            )
            .hint("check WALRS_REPO; `walrs binlog tail` creates the binlog namespace")
        })?;
        repo.check_key_info(cfg.encryption.as_ref())?;
        let compression = cfg.compression.parse().map_err(|e: String| {
            WalrsError::new(Kind::Corrupt, format!("binlog config: compression: {e}"))
        })?;
        let encrypt = cfg.encryption.is_some();
        Ok((BinlogStore { repo, compression, encrypt }, cfg))
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
                let json = serde_json::to_vec_pretty(&cfg).map_err(internal)?;
                let key = ObjectKey::new(CONFIG)?;
                match repo.put_new(&key, CONFIG, json.as_slice(), Compression::None, false)? {
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
                        WalrsError::new(Kind::Io, format!("{CONFIG} vanished after it was created"))
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
        for item in self.repo.storage().list(PREFIX)? {
            let meta = item?;
            let key = meta.key.as_str();
            let Some(rest) = key.strip_prefix(PREFIX) else { continue };
            if let Some(name) = rest.strip_prefix("files/") {
                if event::valid_file_name(name) {
                    cat.files
                        .entry((event::file_index(name).unwrap_or(0), name.to_string()))
                        .or_default()
                        .whole = true;
                }
            } else if let Some(p) = rest.strip_prefix("parts/") {
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
            } else if rest.starts_with("meta/") {
                meta_keys.push(meta.key.clone());
            } else if rest.starts_with("gaps/") {
                gap_keys.push(meta.key.clone());
            }
        }
        for e in cat.files.values_mut() {
            e.parts.sort_by_key(|p| p.start);
        }
        for k in meta_keys {
            let m: FileMeta = self.read_json(&k)?;
            if let Some(e) =
                cat.files.get_mut(&(event::file_index(&m.name).unwrap_or(0), m.name.clone()))
            {
                e.meta = Some(m);
            }
        }
        for k in gap_keys {
            cat.gaps.push(self.read_json(&k)?);
        }
        Ok(cat)
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, key: &ObjectKey) -> Result<T> {
        let mut buf = Vec::new();
        self.repo.open_object(key, key.as_str())?.copy_to(&mut buf)?;
        serde_json::from_slice(&buf)
            .map_err(|e| WalrsError::new(Kind::Corrupt, format!("{key}: not valid JSON: {e}")))
    }

    fn put_json<T: Serialize>(&self, key: &str, v: &T) -> Result<()> {
        let json = serde_json::to_vec_pretty(v).map_err(internal)?;
        let k = ObjectKey::new(key)?;
        self.repo.put_new(&k, key, json.as_slice(), self.compression, self.encrypt)?;
        Ok(())
    }

    /// Stores a part of the file `name` (bytes `data` at `part.start`). Refuses an existing part:
    /// only one tail may write a binlog namespace.
    pub fn put_part(&self, name: &str, part: &Part, data: &[u8]) -> Result<()> {
        let key_s = part.key(name);
        let key = ObjectKey::new(key_s.as_str())?;
        match self.repo.put_new(&key, &key_s, data, self.compression, self.encrypt)? {
            PutNew::Created(_) => Ok(()),
            // A retry of a write that succeeded after all: the same bytes are fine.
            PutNew::Exists if self.object_equals(&key, data)? => Ok(()),
            PutNew::Exists => Err(WalrsError::new(
                Kind::Mismatch,
                format!("part {key_s} already exists in {}", self.repo.describe()),
            )
            .hint("is another `walrs binlog tail` writing to this repository?")),
        }
    }

    fn object_equals(&self, key: &ObjectKey, data: &[u8]) -> Result<bool> {
        let mut stored = Vec::with_capacity(data.len());
        self.repo.open_object(key, key.as_str())?.copy_to(&mut stored)?;
        Ok(stored == data)
    }

    /// Records a gap.
    pub fn record_gap(&self, gap: &Gap) -> Result<()> {
        self.put_json(&format!("{PREFIX}gaps/{}.json", gap.missing_file), gap)
    }

    /// A reader of what is stored of `name`: the whole file, or its parts concatenated (which
    /// must be contiguous from offset 0).
    pub fn reader<'a>(&'a self, name: &str, entry: &FileEntry) -> Result<ContentReader<'a>> {
        let mut objects = Vec::new();
        if entry.whole {
            objects.push(format!("{PREFIX}files/{name}"));
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
                objects.push(p.key(name));
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
        let key_s = format!("{PREFIX}files/{name}");
        let key = ObjectKey::new(key_s.as_str())?;
        let mut source = source;
        let created =
            self.repo.put_new(&key, &key_s, &mut source, self.compression, self.encrypt)?;
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
        self.put_json(&format!("{PREFIX}meta/{name}.json"), &meta)?;
        for p in parts {
            self.repo.storage().delete(&ObjectKey::new(p.key(name))?)?;
        }
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
        self.put_json(&format!("{PREFIX}meta/{name}.json"), &meta)?;
        Ok(meta)
    }

    /// Deletes the parts left over of a closed file.
    pub fn delete_parts(&self, name: &str, parts: &[Part]) -> Result<()> {
        for p in parts {
            self.repo.storage().delete(&ObjectKey::new(p.key(name))?)?;
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

/// Streams the content of stored objects one after the other, decoding and verifying each.
pub struct ContentReader<'a> {
    store: &'a BinlogStore,
    objects: std::collections::VecDeque<String>,
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
            let Some(name) = self.objects.pop_front() else { return Ok(0) };
            let key = ObjectKey::new(name.as_str())
                .map_err(|e| std::io::Error::other(WalrsErrorBox(e.into())))?;
            let dec = self
                .store
                .repo
                .open_object(&key, &name)
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
        let k = p.key("mysql-bin.000001");
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
        let whole = format!("{PREFIX}files/{name}");
        let k = ObjectKey::new(whole.as_str()).unwrap();
        repo.put_new(&k, &whole, &b"\xfebin"[..], Compression::None, false).unwrap();
        let e = read(&store).unwrap_err();
        assert!(e.kind == Kind::Corrupt && e.message.contains("foreign object"), "{e}");
    }
}
