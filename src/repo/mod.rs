//! A repository: a [`Storage`] plus the codec, holding typed objects under the key layout of
//! [`layout`]. Every kind of object is a type ([`RepoObject`], [`object`]): the WAL
//! ([`WalFile`], [`TimelineHistory`]), the repository config and its twin ([`RepoConfig`]), base
//! backups ([`BackupManifest`], [`PgBackupManifest`], [`BackupChunk`]), and, implemented beside
//! their types, the WAL index (`index::SegmentSummary`, `index::GroupRollup`) and the binlogs
//! (`mysql::store`).
//!
//! Everything that reads or writes an object goes through here, by kind and id, so every object
//! is an envelope, every write is conditional (or, for derived data, atomic), every JSON document
//! passes the one version check, the encryption key is checked against the config before any
//! object is touched, and every object read must carry its kind's encryption (the repository's,
//! for every kind but the config objects).

pub mod backup_id;
pub mod config;
mod errors;
pub mod layout;
pub mod manifest;
pub mod object;
pub mod prune;
pub mod reread;
pub mod retention;
pub mod wal;

use std::io::Read;

use crate::codec::{Decoder, Encoder, EncodingBody, MasterKey, ObjectSummary};
use crate::error::{Kind, Result, WalrsError};
use crate::storage::{AnyStorage, Body, ErrorKind, ObjectMeta, PutOutcome, Storage};

pub use backup_id::BackupId;
pub use config::{ConfigObject, EncryptionInfo, RepoConfig};
pub use manifest::{
    Archive, BackupChunk, BackupManifest, Chunk, ChunkId, FileEntry, PgBackupManifest,
};
pub use object::{
    Document, Encryption, Fixed, Grouped, JsonObject, Listed, RepoObject, Write, decode_json,
};
pub use retention::{Expiring, HeldLease, Lease, LeaseKind, Pin};
pub use wal::WalFile;

pub use crate::pg::TimelineHistory;

impl<R: Read> Body for EncodingBody<R> {
    fn next_chunk(&mut self) -> std::result::Result<Option<&[u8]>, String> {
        EncodingBody::next_chunk(self)
    }
}

/// The outcome of writing a write-once object.
#[derive(Debug)]
pub enum PutNew {
    /// Stored and durable.
    Created(ObjectSummary),
    /// An object already exists under the key; nothing was written.
    Exists,
}

/// Optional extras of [`Repository::put_new_observed`].
#[derive(Default)]
pub struct PutExtras {
    /// Sees each plaintext frame as it is encoded (the WAL indexer).
    pub observer: Option<crate::codec::FrameObserver>,
    /// Codec worker threads (default: `codec::parallel::default_workers`).
    pub workers: Option<usize>,
}

/// A boxed object reader.
pub type ObjectReader<'a> = Box<dyn Read + Send + 'a>;

/// Storage, key and codec defaults of one repository.
pub struct Repository {
    storage: AnyStorage,
    key: Option<MasterKey>,
    /// Set once `read_config` has read a sound primary config: `repair_config` then need not
    /// ask whether it exists (one storage round trip less per push).
    primary_config_read: std::sync::atomic::AtomicBool,
}

impl Repository {
    /// A repository over `storage`, with the master key if one was configured.
    pub fn new(storage: AnyStorage, key: Option<MasterKey>) -> Self {
        Repository { storage, key, primary_config_read: false.into() }
    }

    /// The underlying storage.
    pub fn storage(&self) -> &AnyStorage {
        &self.storage
    }

    /// The configured master key.
    pub fn key(&self) -> Option<&MasterKey> {
        self.key.as_ref()
    }

    /// Where the repository is, for messages.
    pub fn describe(&self) -> String {
        self.storage.describe()
    }

    /// The key objects of kind `T` are encrypted with and read with: the configured key (which
    /// `check_key` has compared with the config) or none.
    fn key_for<T: RepoObject>(&self) -> Option<&MasterKey> {
        match T::ENCRYPTION {
            Encryption::Never => None,
            Encryption::Repository => self.key.as_ref(),
        }
    }

    /// Reads the object `id` whole: a JSON document through the one versioned reader
    /// ([`decode_json`]: a newer `format_version` is exit 15), a history file parsed. `None` when
    /// it does not exist.
    ///
    /// From a network backend, an object that fails verification is read once more before it is
    /// called corrupt ([`reread`]).
    pub fn load<T: Document>(&self, id: &T::Id) -> Result<Option<T>> {
        let name = T::name(id)?;
        let bytes = reread::read_verified(self, &name, || {
            let dec = match self.open::<T>(id) {
                Ok(d) => d,
                Err(e) if e.kind == Kind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            Ok(Some(dec.into_vec()?))
        })?;
        bytes.map(|b| T::decode(id, &b)).transpose()
    }

    /// Stores `doc` as the object `id` of a kind of derived data ([`Write::Replace`]: the WAL
    /// index), replacing any object there. Returns once the write is durable and its size
    /// verified.
    pub fn save<T: JsonObject>(&self, id: &T::Id, doc: &T, codec: T::Codec) -> Result<()> {
        const { assert!(matches!(T::WRITE, Write::Replace), "save replaces: a derived kind only") };
        let json = object::encode_json(doc)?;
        let (key, name) = (T::key(id)?, T::name(id)?);
        let k = self.key_for::<T>();
        let mut body =
            EncodingBody::new(Encoder::new(&name, T::compression(codec), k)?, json.as_slice());
        let stored = self.storage.put(&key, &mut body);
        match Self::verify_put(&name, &mut body, stored.map(PutOutcome::Created))? {
            PutNew::Created(_) => Ok(()),
            PutNew::Exists => Err(WalrsError::new(
                Kind::Internal,
                format!("{name}: a replacing write was refused"),
            )),
        }
    }

    /// Stores `doc` as the object `id` unless one exists ([`Write::Once`]). Returns only after
    /// the write is durable and its size verified.
    pub fn save_new<T: JsonObject>(&self, id: &T::Id, doc: &T, codec: T::Codec) -> Result<PutNew> {
        let json = object::encode_json(doc)?;
        self.put_new::<T>(id, json.as_slice(), codec)
    }

    /// Writes `source` as the object `id` unless an object exists there ([`Write::Once`]); the
    /// kind decides the key, the logical name, the compression (from `codec`) and the
    /// encryption. Returns only after the write is durable and its size verified.
    pub fn put_new<T: RepoObject>(
        &self,
        id: &T::Id,
        source: impl Read,
        codec: T::Codec,
    ) -> Result<PutNew> {
        self.put_new_observed::<T>(id, source, codec, PutExtras::default())
    }

    /// [`Repository::put_new`], showing each plaintext frame to `extras.observer` as it is read.
    pub fn put_new_observed<T: RepoObject>(
        &self,
        id: &T::Id,
        source: impl Read,
        codec: T::Codec,
        extras: PutExtras,
    ) -> Result<PutNew> {
        const { assert!(matches!(T::WRITE, Write::Once), "put_new writes once: not a derived kind") };
        let (key, name) = (T::key(id)?, T::name(id)?);
        let k = self.key_for::<T>();
        let mut body = EncodingBody::new(Encoder::new(&name, T::compression(codec), k)?, source);
        if let Some(w) = extras.workers {
            body = body.with_workers(w);
        }
        if let Some(f) = extras.observer {
            body = body.with_observer(f);
        }
        let stored = self.storage.put_if_absent(&key, &mut body);
        Self::verify_put(&name, &mut body, stored)
    }

    /// What a write of `body` came to: the object's summary once the stored size is checked
    /// against what the encoder produced, or the encoder's own error when the body failed.
    fn verify_put<R: Read>(
        name: &str,
        body: &mut EncodingBody<R>,
        stored: std::result::Result<PutOutcome, crate::storage::StorageError>,
    ) -> Result<PutNew> {
        match stored {
            Ok(PutOutcome::Created(meta)) => {
                let summary = body.summary().ok_or_else(|| {
                    WalrsError::new(Kind::Internal, format!("{name}: stored without a trailer"))
                })?;
                if meta.size != summary.stored_len {
                    return Err(WalrsError::new(
                        Kind::Io,
                        format!(
                            "{name}: stored {} bytes, expected {}",
                            meta.size, summary.stored_len
                        ),
                    ));
                }
                Ok(PutNew::Created(summary))
            }
            Ok(PutOutcome::Exists) => Ok(PutNew::Exists),
            Err(e) if e.kind == ErrorKind::Body => match body.take_error() {
                Some(codec) => Err(codec.into()),
                None => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Opens the object `id` for verified, streaming decoding, with the kind's encryption
    /// expected: for every kind but the config objects, the repository's (the configured key,
    /// which `check_key` has compared with the config). An object not encrypted with it (or
    /// encrypted at all, in an unencrypted repository) is refused as a foreign object (`Corrupt`,
    /// [`WalrsError::is_foreign_object`]). A missing object is `NotFound`.
    pub fn open<T: RepoObject>(&self, id: &T::Id) -> Result<Decoder<ObjectReader<'_>>> {
        let (key, name) = (T::key(id)?, T::name(id)?);
        let reader = self.storage.get(&key)?;
        Ok(Decoder::new(reader, &name, self.key_for::<T>())?)
    }

    /// The stored size of the object `id`, or `None` when it does not exist.
    pub fn head<T: RepoObject>(&self, id: &T::Id) -> Result<Option<ObjectMeta>> {
        Ok(self.storage.head(&T::key(id)?)?)
    }

    /// Deletes the object `id`; an absent object is not an error.
    pub fn delete<T: RepoObject>(&self, id: &T::Id) -> Result<()> {
        match self.storage.delete(&T::key(id)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The ids of the objects of kind `T` within `scope`, in key order, lazily (one listing of
    /// the kind's prefix; keys that hold no object of the kind are skipped).
    pub fn list<T: Listed>(
        &self,
        scope: &T::Scope,
    ) -> Result<impl Iterator<Item = Result<T::Id>> + '_> {
        let listing = self.storage.list(&T::prefix(scope))?;
        Ok(listing.filter_map(|m| match m {
            Ok(m) => T::id_of(&m.key).map(Ok),
            Err(e) => Some(Err(e.into())),
        }))
    }

    /// The groups of kind `T` (backup ids, WAL groups of the index) that hold at least one
    /// object, in order, without listing the objects. A directory that names no group is
    /// skipped with a warning.
    pub fn groups<T: Grouped>(&self) -> Result<Vec<T::Group>> {
        let mut out = Vec::new();
        for name in self.storage.list_prefixes(T::GROUPS)? {
            match T::group_of(&name) {
                Some(g) => out.push(g),
                None => tracing::warn!("ignoring {}{name}/: not a {} group", T::GROUPS, T::KIND),
            }
        }
        Ok(out)
    }

    /// Whether any object exists under `prefix` (a key prefix from [`layout`]): one listing
    /// request that stops at the first object.
    pub fn holds_objects_under(&self, prefix: &str) -> Result<bool> {
        match self.storage.list(prefix)?.next() {
            Some(first) => first.map(|_| true).map_err(Into::into),
            None => Ok(false),
        }
    }

    /// Reads the config; falls back to the twin copy when the primary is missing or damaged.
    pub fn read_config(&self) -> Result<Option<RepoConfig>> {
        match self.load::<RepoConfig>(&ConfigObject::Primary) {
            Ok(Some(c)) => {
                self.primary_config_read.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(Some(c))
            }
            Ok(None) => match self.load::<RepoConfig>(&ConfigObject::Copy) {
                Ok(Some(c)) => {
                    tracing::warn!("{} is missing; using {}", layout::CONFIG, layout::CONFIG_COPY);
                    Ok(Some(c))
                }
                other => other,
            },
            Err(e) if matches!(e.kind, Kind::Corrupt) => {
                match self.load::<RepoConfig>(&ConfigObject::Copy) {
                    Ok(Some(c)) => {
                        tracing::warn!(
                            "{} is damaged ({e}); using {}",
                            layout::CONFIG,
                            layout::CONFIG_COPY
                        );
                        Ok(Some(c))
                    }
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Recreates a missing `walrs.config` or `walrs.config.copy` from `cfg`. Every push that finds
    /// an existing config calls it, so a crash between the two first writes leaves a repository
    /// without its twin only until the next push. Fields unknown to this walrs are not kept (the
    /// copy is written from the parsed config).
    pub fn repair_config(&self, cfg: &RepoConfig) -> Result<()> {
        for which in [ConfigObject::Primary, ConfigObject::Copy] {
            if which == ConfigObject::Primary
                && self.primary_config_read.load(std::sync::atomic::Ordering::Relaxed)
            {
                continue;
            }
            if self.head::<RepoConfig>(&which)?.is_none()
                && let PutNew::Created(_) = self.save_new(&which, cfg, Fixed)?
            {
                tracing::warn!(
                    "recreated the missing {} of {}",
                    RepoConfig::key(&which)?,
                    self.describe()
                );
            }
        }
        Ok(())
    }

    /// The config, which must exist, with the key checked against it.
    pub fn require_config(&self) -> Result<RepoConfig> {
        let cfg = self.read_config()?.ok_or_else(|| {
            WalrsError::new(
                Kind::NotInitialized,
                format!("{} is not a walrs repository (no {})", self.describe(), layout::CONFIG),
            )
            .hint("check WALRS_REPO; a repository is created by the first `walrs push` of a WAL segment")
        })?;
        self.check_key(&cfg)?;
        Ok(cfg)
    }

    /// What the repository holds that a config must describe: the first of `wal/`, `backups/`
    /// and `binlog/` with an object under it. One listing request each, at most three, made only
    /// when no config exists (the first push into a repository), never on the hot path.
    fn stored_data(&self) -> Result<Option<&'static str>> {
        for (prefix, what) in [
            (layout::WAL_PREFIX, "WAL"),
            (layout::BACKUPS_PREFIX, "base backups"),
            (layout::BINLOG_PREFIX, "binlogs"),
        ] {
            if self.holds_objects_under(prefix)? {
                return Ok(Some(what));
            }
        }
        Ok(None)
    }

    /// Stores `cfg` unless a config exists; returns the config now in force (ours or the one a
    /// concurrent first writer stored), with the key checked against it.
    ///
    /// Refuses (exit 14) when the repository already holds WAL, base backups or binlogs: their
    /// config was lost (both objects deleted), and a config made from the file at hand could
    /// belong to another cluster, after which every reader of the real one would fail. Such a
    /// repository is repaired from the twin or a copy of the config, never guessed.
    pub fn init_config(&self, cfg: &RepoConfig) -> Result<RepoConfig> {
        if let Some(what) = self.stored_data()? {
            // A concurrent first push may have stored its config (and then its WAL) since ours
            // was found missing: that config is in force.
            if let Some(c) = self.read_config()? {
                self.check_key(&c)?;
                return Ok(c);
            }
            return Err(WalrsError::new(
                Kind::NotInitialized,
                format!(
                    "{} has no config ({} and {} are both missing), but it holds {what}: walrs does not create a config for a repository that holds data",
                    self.describe(),
                    layout::CONFIG,
                    layout::CONFIG_COPY
                ),
            )
            .hint(format!(
                "put back {} or {} from a copy of the repository (the next push recreates the other), or derive it from the stored WAL with `walrs repo init --from-objects`; a new cluster needs a new repository",
                layout::CONFIG,
                layout::CONFIG_COPY
            )));
        }
        self.store_config(cfg)
    }

    /// Stores `cfg` (and its twin) unless a config exists, without looking at what the
    /// repository holds; returns the config in force, with the key checked against it. Only for
    /// a config derived from the stored objects themselves (`repo init --from-objects`); every
    /// other caller goes through [`Repository::init_config`].
    pub fn store_config(&self, cfg: &RepoConfig) -> Result<RepoConfig> {
        match self.save_new(&ConfigObject::Primary, cfg, Fixed)? {
            PutNew::Created(_) => {
                self.save_new(&ConfigObject::Copy, cfg, Fixed)?;
                tracing::info!(
                    "created repository {} for system {} (PostgreSQL {})",
                    self.describe(),
                    cfg.system_identifier,
                    cfg.pg_version
                );
                self.check_key(cfg)?;
                Ok(cfg.clone())
            }
            PutNew::Exists => self.require_config(),
        }
    }

    /// Refuses a missing key for an encrypted repository, a key that is not the repository's, and
    /// a key for an unencrypted repository (mixing would leave some objects unprotected).
    pub fn check_key(&self, cfg: &RepoConfig) -> Result<()> {
        self.check_key_info(cfg.encryption.as_ref())
    }

    /// [`Repository::check_key`] against the encryption settings of any config object (the
    /// repository config, the binlog config).
    pub fn check_key_info(&self, encryption: Option<&EncryptionInfo>) -> Result<()> {
        match (encryption, &self.key) {
            (None, None) => Ok(()),
            (Some(enc), None) => Err(WalrsError::new(
                Kind::Key,
                format!("repository {} is encrypted (key id {}) and no key is configured", self.describe(), enc.key_id),
            )
            .hint("set WALRS_ENCRYPTION_KEY_FILE (or WALRS_ENCRYPTION_KEY) to the repository's key")),
            (None, Some(_)) => Err(WalrsError::new(
                Kind::Key,
                format!("repository {} is not encrypted, but an encryption key is configured", self.describe()),
            )
            .hint("unset WALRS_ENCRYPTION_KEY_FILE / WALRS_ENCRYPTION_KEY, or use a new repository for encrypted archives")),
            (Some(enc), Some(k)) => {
                if EncryptionInfo::for_key(k) == *enc {
                    Ok(())
                } else {
                    Err(WalrsError::new(
                        Kind::Key,
                        format!(
                            "wrong encryption key: repository {} uses key id {}, the configured key has id {}",
                            self.describe(),
                            enc.key_id,
                            k.id()
                        ),
                    ))
                }
            }
        }
    }

    /// The cluster the stored WAL belongs to, for a repository that lost its config: the long
    /// page headers of its oldest and its newest segment object (by name), each decoded with the
    /// repository's expected encryption (the configured key) and checked against its name. They
    /// must agree (system identifier, version, segment and block size), else the repository
    /// holds WAL of more than one cluster (exit 5). Returns the header and the two names; exit 14
    /// when no segment is stored. Reads a full listing of `wal/` and two frames.
    pub fn identity_from_wal(&self) -> Result<(crate::pg::LongPageHeader, [String; 2])> {
        use crate::pg::{LongPageHeader, WalFileKind, WalFileName};
        let (mut oldest, mut newest): (Option<WalFileName>, Option<WalFileName>) = (None, None);
        for name in self.list::<WalFile>(&())? {
            let name = name?;
            if name.kind() != WalFileKind::Segment {
                continue;
            }
            if oldest.as_ref().is_none_or(|o| name.as_str() < o.as_str()) {
                oldest = Some(name.clone());
            }
            if newest.as_ref().is_none_or(|n| name.as_str() > n.as_str()) {
                newest = Some(name);
            }
        }
        let (Some(oldest), Some(newest)) = (oldest, newest) else {
            return Err(WalrsError::new(
                Kind::NotInitialized,
                format!("{} holds no WAL segment to derive a config from", self.describe()),
            ));
        };
        let header = |name: &WalFileName| -> Result<LongPageHeader> {
            let mut dec = self.open::<WalFile>(name)?;
            let mut frame = Vec::new();
            dec.next_frame(&mut frame)?;
            let h = LongPageHeader::decode(&frame).map_err(|e| {
                WalrsError::new(Kind::Corrupt, format!("{name} is not a WAL segment: {e}"))
            })?;
            if name.segno(h.seg_size) != Some(h.segno()) {
                return Err(WalrsError::new(
                    Kind::Corrupt,
                    format!("{name} holds the segment starting at {}", h.page_addr),
                ));
            }
            Ok(h)
        };
        let (a, b) = (header(&oldest)?, header(&newest)?);
        if (a.system_id, a.version, a.seg_size, a.xlog_blcksz)
            != (b.system_id, b.version, b.seg_size, b.xlog_blcksz)
        {
            return Err(WalrsError::new(
                Kind::ForeignCluster,
                format!(
                    "{} holds WAL of more than one cluster: {oldest} is system {} (PostgreSQL {}, {} byte segments), {newest} is system {} (PostgreSQL {}, {} byte segments)",
                    self.describe(),
                    a.system_id,
                    a.version,
                    a.seg_size.bytes(),
                    b.system_id,
                    b.version,
                    b.seg_size.bytes()
                ),
            )
            .hint("walrs cannot tell which cluster the repository is for; restore its config from a copy"));
        }
        Ok((b, [oldest.to_string(), newest.to_string()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Compression;
    use crate::pg::{PgMajorVersion, SystemId, WalSegSize};
    use crate::storage::{BytesBody, MemoryStorage, ObjectKey};

    fn config() -> RepoConfig {
        let seg = WalSegSize::new(16 << 20).unwrap_or_else(|e| panic!("{e}"));
        RepoConfig::new(SystemId(1), PgMajorVersion::V15, seg, 8192, Compression::None, None)
    }

    /// Issue 11, item 4: a config is created only in a repository that holds no WAL, backups or
    /// binlogs; index objects alone (derived data) do not count.
    #[test]
    fn init_config_refuses_a_repository_that_holds_data() {
        for key in [
            "wal/0000000100000000/000000010000000000000001",
            "backups/20261121T172545Z/base.tar/000000",
            "binlog/files/mysql-bin.000001",
        ] {
            let repo = Repository::new(AnyStorage::Memory(MemoryStorage::new()), None);
            let k = ObjectKey::new(key).unwrap_or_else(|e| panic!("{e}"));
            repo.storage().put(&k, &mut BytesBody::new(b"x")).unwrap_or_else(|e| panic!("{e}"));
            let e = repo.init_config(&config()).err().unwrap_or_else(|| panic!("{key}: created"));
            assert_eq!(e.kind, Kind::NotInitialized, "{key}: {e}");
            assert!(matches!(repo.read_config(), Ok(None)), "{key}");
        }
        let repo = Repository::new(AnyStorage::Memory(MemoryStorage::new()), None);
        let k = ObjectKey::new("index/group/0000000100000000").unwrap_or_else(|e| panic!("{e}"));
        repo.storage().put(&k, &mut BytesBody::new(b"x")).unwrap_or_else(|e| panic!("{e}"));
        assert!(repo.init_config(&config()).is_ok());
        assert!(matches!(repo.read_config(), Ok(Some(_))));
    }
}
