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

/// Format version of `manifest.json`: the newest this walrs reads, and the one an incremental
/// backup's manifest carries (a walrs that knows only version 1 would restore an incremental
/// member as if it were whole; version 2 makes it refuse the manifest as unsupported instead).
pub const FORMAT_VERSION: u32 = 2;

/// The format version a full backup's manifest is written with: version 1's fields describe it
/// completely, so older walrs versions keep reading full backups.
pub const FULL_FORMAT_VERSION: u32 = 1;

/// Whether a backup holds every file whole or only what changed since its parent.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    /// Every file whole; restorable on its own. Manifests without a `type` field are full.
    #[default]
    Full,
    /// PostgreSQL 17+ `BASE_BACKUP ... INCREMENTAL`: relation files as `INCREMENTAL.<name>`
    /// holding the blocks changed since the parent; restorable with its chain.
    Incremental,
}

impl BackupType {
    /// `full` or `incremental`, as in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Incremental => "incremental",
        }
    }
}

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
    /// Full or incremental; absent (older manifests) reads as full.
    #[serde(rename = "type", default)]
    pub backup_type: BackupType,
    /// An incremental backup's parent: the backup whose PostgreSQL manifest it was taken against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<BackupId>,
    /// An incremental backup's chain, oldest first: the full backup, each incremental after it,
    /// and this backup last. Empty for a full backup (its chain is itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<BackupId>,
    /// An incremental backup: how it was made (absent in full backups and in incremental
    /// backups of walrs versions before the changed-block method, which were all
    /// `pg17-summaries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalInfo>,
}

/// How an incremental backup was made.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct IncrementalInfo {
    /// `pg17-summaries` (PostgreSQL 17's `BASE_BACKUP INCREMENTAL` from its WAL summaries) or
    /// `walrs-block-map` (a changed-block backup from walrs's block maps, PostgreSQL 13–16).
    pub method: String,
    /// What a `walrs-block-map` backup stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_map: Option<BlockMapStats>,
}

/// What a changed-block backup (`walrs-block-map`) did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockMapStats {
    /// Segments whose block maps made the plan.
    pub segments: u64,
    /// Why every file was stored whole, when it was (a segment without a block map, a range
    /// across a timeline switch, ...): the backup is then effectively full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_whole: Option<String>,
    /// Relation files stored as `INCREMENTAL.<name>`.
    pub files_incremental: u64,
    /// Main-fork relation files stored whole (absent from the parent, created or dropped in the
    /// range, in a database created or dropped in the range, too many changed blocks).
    pub relation_files_whole: u64,
    /// Blocks stored in the incremental files.
    pub blocks_stored: u64,
    /// Blocks not stored (the chain restore takes them from older members).
    pub blocks_skipped: u64,
    /// Blocks the block maps said were unchanged but whose page LSN said otherwise (stored).
    pub cross_check_mismatches: u64,
}

impl BackupManifest {
    /// Whether it is an incremental backup.
    pub fn is_incremental(&self) -> bool {
        self.backup_type == BackupType::Incremental
    }

    /// The ids of its chain, oldest first, itself last (a full backup's chain is itself).
    pub fn chain_ids(&self) -> Vec<BackupId> {
        if self.chain.is_empty() { vec![self.id.clone()] } else { self.chain.clone() }
    }
}

/// Why a backup's chain cannot be restored, or its members in order (the full backup first,
/// `m` last), found among `complete` (complete backups). The rules (docs/invariants.md, chains):
/// every member is complete, each one's parent is the member before it, each one's recorded chain
/// is the start of `m`'s, the first is full and the others incremental, all of one system.
pub fn chain_members<'a>(
    complete: &'a [BackupManifest],
    m: &'a BackupManifest,
) -> std::result::Result<Vec<&'a BackupManifest>, String> {
    if !m.is_incremental() {
        return Ok(vec![m]);
    }
    let ids = &m.chain;
    if ids.len() < 2 || ids.last() != Some(&m.id) || m.parent.as_ref() != ids.get(ids.len() - 2) {
        return Err(format!("backup {}: its manifest records an inconsistent chain", m.id));
    }
    let mut out: Vec<&BackupManifest> = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let member = if *id == m.id {
            m
        } else {
            complete.iter().find(|b| b.id == *id).ok_or_else(|| {
                format!("backup {}: member {id} of its chain is missing or incomplete", m.id)
            })?
        };
        let prefix = ids.get(..=i).unwrap_or_default();
        let ok = if i == 0 {
            !member.is_incremental()
        } else {
            member.is_incremental()
                && member.parent.as_ref() == ids.get(i - 1)
                && member.chain.as_slice() == prefix
        };
        if !ok || member.system_identifier != m.system_identifier {
            return Err(format!(
                "backup {}: member {id} of its chain does not match the chain its manifest records",
                m.id
            ));
        }
        out.push(member);
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn m(id: &str, parent: Option<&str>, chain: &[&str]) -> BackupManifest {
        let text = format!(
            r#"{{"format_version": 1, "id": "{id}", "label": "", "system_identifier": "1",
            "pg_version": 17, "timeline": 1, "start_lsn": "0/2000028", "stop_lsn": "0/2000100",
            "stop_timeline": 1, "start_time": "", "stop_time": "", "stop_time_us": 0,
            "first_wal": "", "last_wal": "", "archives": [], "pg_manifest_key": "", "bytes": 0,
            "stored_bytes": 0, "compression": "none", "encrypted": false}}"#
        );
        let mut b: BackupManifest = serde_json::from_str(&text).unwrap();
        if let Some(p) = parent {
            b.backup_type = BackupType::Incremental;
            b.parent = Some(p.parse().unwrap());
            b.chain = chain.iter().map(|c| c.parse().unwrap()).collect();
        }
        b
    }

    const F: &str = "20261205T000000Z";
    const I1: &str = "20261205T000100Z";
    const I2: &str = "20261205T000200Z";

    #[test]
    fn a_manifest_without_type_is_full_and_chains_are_checked() {
        let full = m(F, None, &[]);
        assert_eq!(full.backup_type, BackupType::Full);
        assert_eq!(full.chain_ids(), vec![full.id.clone()]);
        let i1 = m(I1, Some(F), &[F, I1]);
        let i2 = m(I2, Some(I1), &[F, I1, I2]);
        let all = vec![full.clone(), i1.clone(), i2.clone()];
        let ids: Vec<&str> =
            chain_members(&all, &i2).unwrap().iter().map(|b| b.id.as_str()).collect();
        assert_eq!(ids, vec![F, I1, I2]);
        // A member missing (incomplete), a parent that is not the member before, a chain that is
        // not the parent's plus itself, an incremental first member, another system.
        let e = chain_members(&all[..1], &i2).unwrap_err();
        assert!(e.contains(&format!("member {I1} of its chain is missing")), "{e}");
        let bad = m(I2, Some(F), &[F, I1, I2]);
        assert!(chain_members(&all, &bad).is_err());
        let odd = m(I1, Some(F), &[I2, I1]);
        assert!(
            chain_members(&[full.clone(), odd.clone()], &m(I2, Some(I1), &[F, I1, I2])).is_err()
        );
        let inc_first = m(F, Some(I1), &[I1, F]);
        assert!(chain_members(&[inc_first, i1.clone()], &i2).is_err());
        let mut foreign = full.clone();
        foreign.system_identifier = crate::pg::SystemId(2);
        assert!(chain_members(&[foreign, i1.clone()], &i2).is_err());
        // A full backup is its own chain.
        assert_eq!(chain_members(&[], &full).unwrap().len(), 1);
    }
}
