//! The base backup kinds (docs/format/backup.md): walrs's manifest (`manifest.json`, the commit
//! point of a backup, read by the catalogue, `backup verify`, the planner and `restore`),
//! PostgreSQL's own `backup_manifest` stored byte for byte, and the chunk objects that hold the tar
//! archives. The manifest's types live here, below `backup/` and `recovery/`, so the planner reads
//! manifests without importing the code that takes backups.

use serde::{Deserialize, Serialize};

use crate::codec::Compression;
use crate::error::{Kind, Result, WalrsError};
use crate::pg::{Lsn, PgMajorVersion, SystemId, TimeLineId};
use crate::storage::ObjectKey;

use super::BackupId;
use super::layout;
use super::object::{Fixed, Grouped, JsonObject, RepoObject};

/// Format version of `manifest.json`.
pub const FORMAT_VERSION: u32 = 1;

/// A regular file of a backup, as seen in its tar stream.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Path inside the archive.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC-32C of the content.
    pub crc32c: u32,
}

/// One stored piece of an archive.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Its key.
    pub key: String,
    /// Tar bytes it holds.
    pub plain_len: u64,
    /// Bytes stored.
    pub stored_len: u64,
    /// Content digest.
    pub digest: String,
}

/// One tar archive of the backup (the data directory or a tablespace).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Archive {
    /// `base.tar` or `<oid>.tar`.
    pub name: String,
    /// The tablespace's OID, `None` for the data directory.
    pub tablespace_oid: Option<u32>,
    /// The tablespace's location on the server.
    pub location: Option<String>,
    /// Its chunks, in order.
    pub chunks: Vec<Chunk>,
    /// Regular files with sizes and CRC-32C.
    pub files: Vec<FileEntry>,
}

/// `manifest.json`: a complete, restorable backup.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct BackupManifest {
    /// Format version.
    pub format_version: u32,
    /// The backup's id (`20261121T140307Z`).
    pub id: BackupId,
    /// Its label.
    pub label: String,
    /// The cluster.
    pub system_identifier: SystemId,
    /// Its major version.
    pub pg_version: PgMajorVersion,
    /// Timeline at the start.
    pub timeline: TimeLineId,
    /// Start LSN (redo point of the backup's checkpoint).
    pub start_lsn: Lsn,
    /// Stop LSN: recovery must replay at least to here.
    pub stop_lsn: Lsn,
    /// Timeline at the stop.
    pub stop_timeline: TimeLineId,
    /// Wall-clock start (RFC 3339) and Unix microseconds.
    pub start_time: String,
    /// Wall-clock stop.
    pub stop_time: String,
    /// Stop time in Unix microseconds.
    pub stop_time_us: i64,
    /// The first and last WAL segment the backup needs.
    pub first_wal: String,
    /// See `first_wal`.
    pub last_wal: String,
    /// The archives.
    pub archives: Vec<Archive>,
    /// PostgreSQL's backup manifest object.
    pub pg_manifest_key: String,
    /// Plaintext bytes of all archives.
    pub bytes: u64,
    /// Bytes stored.
    pub stored_bytes: u64,
    /// Compression of the chunks.
    pub compression: String,
    /// Whether the objects are encrypted.
    pub encrypted: bool,
}

impl RepoObject for BackupManifest {
    const KIND: &'static str = "backup manifest";
    const FORMAT_VERSION: Option<u32> = Some(FORMAT_VERSION);
    type Id = BackupId;
    type Codec = Fixed;

    fn key(id: &BackupId) -> Result<ObjectKey> {
        Ok(layout::manifest_key(id)?)
    }

    fn compression(_: Fixed) -> Compression {
        Compression::Zstd(3)
    }
}

impl JsonObject for BackupManifest {
    const PRETTY: bool = true;
}

impl Grouped for BackupManifest {
    /// The backups are the directories under `backups/`, complete (with a manifest) or not.
    type Group = BackupId;
    const GROUPS: &'static str = layout::BACKUPS_PREFIX;

    fn group_of(name: &str) -> Option<BackupId> {
        name.parse().ok()
    }
}

/// PostgreSQL's `backup_manifest` of a backup, byte for byte as the server sent it.
#[derive(Debug)]
pub struct PgBackupManifest;

impl RepoObject for PgBackupManifest {
    const KIND: &'static str = "PostgreSQL backup manifest";
    const FORMAT_VERSION: Option<u32> = None;
    type Id = BackupId;
    type Codec = Fixed;

    fn key(id: &BackupId) -> Result<ObjectKey> {
        Ok(layout::pg_manifest_key(id)?)
    }

    fn compression(_: Fixed) -> Compression {
        Compression::Zstd(3)
    }
}

/// A chunk of a backup's tar archive: a run of whole tar entries.
#[derive(Debug)]
pub struct BackupChunk;

/// Which chunk: backup, archive (`base.tar`, `<oid>.tar`) and number from 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkId {
    /// The backup.
    pub backup: BackupId,
    /// The archive's name.
    pub archive: String,
    /// The chunk's number in the archive.
    pub number: u32,
}

impl ChunkId {
    /// The chunk a manifest records under `key`; a key outside the chunk layout is corrupt.
    pub fn from_key(key: &str) -> Result<Self> {
        let (backup, archive, number) = layout::parse_chunk_key(key).ok_or_else(|| {
            WalrsError::new(Kind::Corrupt, format!("{key} is not the key of a backup chunk"))
        })?;
        Ok(ChunkId { backup, archive, number })
    }
}

impl RepoObject for BackupChunk {
    const KIND: &'static str = "backup chunk";
    const FORMAT_VERSION: Option<u32> = None;
    type Id = ChunkId;
    type Codec = Compression;

    fn key(id: &ChunkId) -> Result<ObjectKey> {
        Ok(layout::chunk_key(&id.backup, &id.archive, id.number)?)
    }

    fn compression(codec: Compression) -> Compression {
        codec
    }
}
