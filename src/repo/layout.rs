//! Where each kind of object lives in a repository (docs/format/layout.md): every key and every
//! key prefix walrs uses is spelled here, and only here.
//!
//! ```text
//! walrs.config                        repository config (and walrs.config.copy, its twin)
//! wal/<TTTTTTTTXXXXXXXX>/<name>       segments, .partial segments, .backup files, grouped by the
//!                                     first 16 characters of the name (timeline + xlogid)
//! wal/history/<TTTTTTTT>.history      timeline history files
//! index/seg/<group>/<name>            WAL index: the summary of one segment
//! index/group/<group>                 WAL index: the roll-up of one group's summaries
//! index/blocks/<group>/<name>         WAL index: the block map of one segment (changed blocks)
//! backups/<id>/<archive>/<NNNNNN>     base backup: a chunk of a tar archive
//! backups/<id>/backup_manifest        base backup: PostgreSQL's backup manifest
//! backups/<id>/manifest.json          base backup: walrs's manifest, the commit point
//! backups/<id>/expiring.json          base backup: its deletion has begun (`walrs expire`)
//! binlog/binlog.config                binlogs: which server they come from
//! binlog/files/<name>                 binlogs: a closed file, whole
//! binlog/meta/<name>.json             binlogs: a closed file's metadata
//! binlog/parts/<name>/<s>-<e>-<t0>-<t1>  binlogs: bytes [s, e) of a file not yet closed
//! binlog/gaps/<name>.json             binlogs: a file the server purged before walrs got it
//! check/<host>-<pid>-<time>           `walrs check`: a probe, deleted right after it is read back
//! drills/<id>.json                    restore drills: the record of one `walrs drill`
//! pins/<id>.json                      retention: backup <id> is kept whatever the policy
//! leases/<holder>.json                retention: a base backup or restore in progress
//! dumps/<id>/schema/pre-data          logical dump: pg_dump's archive of the pre-data section
//! dumps/<id>/schema/post-data         logical dump: pg_dump's archive of the post-data section
//! dumps/<id>/data/<oid>/<part>/<NNNNNN>  logical dump: a chunk of one table's COPY text
//! dumps/<id>/blobs/<NNNNNN>           logical dump: a chunk of the large objects
//! dumps/<id>/manifest.json            logical dump: its manifest, the commit point
//! ```
//! Object names are PostgreSQL's (and the binlog server's) own file names, so a listing reads as
//! the archive it is. The functions here build keys from already validated names; they know
//! nothing about what an object holds (that is the kinds' business, [`super::object`]).

use crate::pg::{TimeLineId, WalFileKind, WalFileName};
use crate::storage::{ObjectKey, StorageError};

use super::BackupId;

/// The repository config object.
pub const CONFIG: &str = "walrs.config";
/// Its twin, read when the first is missing or damaged.
pub const CONFIG_COPY: &str = "walrs.config.copy";
/// Prefix of every WAL object.
pub const WAL_PREFIX: &str = "wal/";
/// Prefix of the timeline history files (inside [`WAL_PREFIX`]).
pub const HISTORY_PREFIX: &str = "wal/history/";
/// Prefix of every WAL index object (derived data: rebuilt from the WAL).
pub const INDEX_PREFIX: &str = "index/";
/// Prefix of per-segment summaries: `index/seg/<group>/<name>`.
pub const SUMMARY_PREFIX: &str = "index/seg/";
/// Prefix of per-segment block maps: `index/blocks/<group>/<name>`.
pub const BLOCK_MAP_PREFIX: &str = "index/blocks/";
/// Prefix of group roll-ups: `index/group/<group>`.
pub const ROLLUP_PREFIX: &str = "index/group/";
/// Prefix of everything base backups store: `backups/<id>/...`.
pub const BACKUPS_PREFIX: &str = "backups/";
/// Prefix of every binlog object.
pub const BINLOG_PREFIX: &str = "binlog/";
/// The binlog config object.
pub const BINLOG_CONFIG: &str = "binlog/binlog.config";
/// Prefix of closed binlog files.
pub const BINLOG_FILES_PREFIX: &str = "binlog/files/";
/// Prefix of the metadata of closed binlog files.
pub const BINLOG_META_PREFIX: &str = "binlog/meta/";
/// Prefix of the parts of binlog files not yet closed.
pub const BINLOG_PARTS_PREFIX: &str = "binlog/parts/";
/// Prefix of recorded binlog gaps.
pub const BINLOG_GAPS_PREFIX: &str = "binlog/gaps/";
/// Prefix of the probe objects `walrs check` writes, reads back and deletes at once.
pub const CHECK_PREFIX: &str = "check/";
/// The name ending of binlog metadata and gap objects.
pub const JSON_SUFFIX: &str = ".json";
/// Prefix of restore drill records: `drills/<id>.json`.
pub const DRILLS_PREFIX: &str = "drills/";

/// The key of the record of drill `id` (an id of `[0-9A-Za-z-]`, checked by the drill record).
pub fn drill_key(id: &str) -> Result<ObjectKey, StorageError> {
    ObjectKey::new(format!("{DRILLS_PREFIX}{id}{JSON_SUFFIX}"))
}

/// Prefix of everything logical dumps store: `dumps/<id>/...`.
pub const DUMPS_PREFIX: &str = "dumps/";

/// Where everything of dump `id` lives (ends with `/`; `id` is checked by the dump kinds).
pub fn dump_prefix(id: &str) -> String {
    format!("{DUMPS_PREFIX}{id}/")
}

/// The key of the manifest of dump `id`.
pub fn dump_manifest_key(id: &str) -> Result<ObjectKey, StorageError> {
    ObjectKey::new(format!("{DUMPS_PREFIX}{id}/manifest.json"))
}

/// The key of the object `name` (`schema/pre-data`, `data/<oid>/<part>/<NNNNNN>`,
/// `blobs/<NNNNNN>`) of dump `id`.
pub fn dump_object_key(id: &str, name: &str) -> Result<ObjectKey, StorageError> {
    ObjectKey::new(format!("{DUMPS_PREFIX}{id}/{name}"))
}

/// Prefix of backup pins (`walrs backup keep`).
pub const PINS_PREFIX: &str = "pins/";
/// Prefix of leases (a base backup or a restore in progress).
pub const LEASES_PREFIX: &str = "leases/";

/// The key of the pin of backup `id`.
pub fn pin_key(id: &BackupId) -> Result<ObjectKey, StorageError> {
    ObjectKey::new(format!("{PINS_PREFIX}{id}{JSON_SUFFIX}"))
}

/// The key of the lease `holder` (letters, digits, `-`, `.` and `_`: checked by the lease type).
pub fn lease_key(holder: &str) -> Result<ObjectKey, StorageError> {
    ObjectKey::new(format!("{LEASES_PREFIX}{holder}{JSON_SUFFIX}"))
}

/// The key of a WAL file.
pub fn wal_key(name: &WalFileName) -> Result<ObjectKey, StorageError> {
    match (name.kind(), name.group()) {
        (WalFileKind::History, _) | (_, None) => ObjectKey::new(format!("{HISTORY_PREFIX}{name}")),
        (_, Some(group)) => ObjectKey::new(format!("{WAL_PREFIX}{group}/{name}")),
    }
}

/// The key of the history file of timeline `tli` (the same object as
/// `wal_key(&WalFileName::history(tli))`).
pub fn history_key(tli: TimeLineId) -> Result<ObjectKey, StorageError> {
    wal_key(&WalFileName::history(tli))
}

/// The key of the index summary of the segment (or `.partial` segment) `name`; `None` for a
/// name without a group (`.history` files have no summary).
pub fn summary_key(name: &WalFileName) -> Option<Result<ObjectKey, StorageError>> {
    name.group().map(|group| ObjectKey::new(format!("{SUMMARY_PREFIX}{group}/{name}")))
}

/// The key of the block map of a segment (`None` for names without a group: history files).
pub fn block_map_key(name: &WalFileName) -> Option<Result<ObjectKey, StorageError>> {
    name.group().map(|group| ObjectKey::new(format!("{BLOCK_MAP_PREFIX}{group}/{name}")))
}

/// Where the block maps of one group are listed.
pub fn block_map_group_prefix(group: &str) -> String {
    format!("{BLOCK_MAP_PREFIX}{group}/")
}

/// Where the summaries of one group are listed.
pub fn summary_group_prefix(group: &str) -> String {
    format!("{SUMMARY_PREFIX}{group}/")
}

/// The key of the roll-up of `group`.
pub fn rollup_key(group: &str) -> Result<ObjectKey, StorageError> {
    ObjectKey::new(format!("{ROLLUP_PREFIX}{group}"))
}

/// The key of `walrs check`'s probe object `id` (`<host>-<pid>-<unix time>`).
pub fn check_probe_key(id: &str) -> Result<ObjectKey, StorageError> {
    ObjectKey::new(format!("{CHECK_PREFIX}{id}"))
}

/// Where everything of backup `id` lives (ends with `/`).
pub fn backup_prefix(id: &BackupId) -> String {
    format!("{BACKUPS_PREFIX}{id}/")
}

/// The key of walrs's manifest of backup `id`.
pub fn manifest_key(id: &BackupId) -> Result<ObjectKey, StorageError> {
    ObjectKey::new(format!("{BACKUPS_PREFIX}{id}/manifest.json"))
}

/// The key of the marker that says the deletion of backup `id` has begun.
pub fn expiring_key(id: &BackupId) -> Result<ObjectKey, StorageError> {
    ObjectKey::new(format!("{BACKUPS_PREFIX}{id}/expiring{JSON_SUFFIX}"))
}

/// The key of PostgreSQL's backup manifest of backup `id`.
pub fn pg_manifest_key(id: &BackupId) -> Result<ObjectKey, StorageError> {
    ObjectKey::new(format!("{BACKUPS_PREFIX}{id}/backup_manifest"))
}

/// The key of chunk `number` of the tar archive `archive` of backup `id`.
pub fn chunk_key(id: &BackupId, archive: &str, number: u32) -> Result<ObjectKey, StorageError> {
    ObjectKey::new(format!("{BACKUPS_PREFIX}{id}/{archive}/{number:06}"))
}

/// The backup, archive and number of the chunk key `key` (the inverse of [`chunk_key`]).
pub fn parse_chunk_key(key: &str) -> Option<(BackupId, String, u32)> {
    let rest = key.strip_prefix(BACKUPS_PREFIX)?;
    let mut parts = rest.split('/');
    let (id, archive, number) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || number.len() < 6 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((id.parse().ok()?, archive.to_owned(), number.parse().ok()?))
}

/// The key of the closed binlog file `name`.
pub fn binlog_file_key(name: &str) -> Result<ObjectKey, StorageError> {
    ObjectKey::new(format!("{BINLOG_FILES_PREFIX}{name}"))
}

/// The key of the metadata of the closed binlog file `name`.
pub fn binlog_meta_key(name: &str) -> Result<ObjectKey, StorageError> {
    ObjectKey::new(format!("{BINLOG_META_PREFIX}{name}{JSON_SUFFIX}"))
}

/// The key of the gap recorded for the binlog file `name`.
pub fn binlog_gap_key(name: &str) -> Result<ObjectKey, StorageError> {
    ObjectKey::new(format!("{BINLOG_GAPS_PREFIX}{name}{JSON_SUFFIX}"))
}

/// The key of the part of binlog file `name` holding bytes `[start, end)` whose first and last
/// events carry the timestamps `first_ts` and `last_ts` (zero-padded: 20, 20, 10, 10 digits).
pub fn binlog_part_key(
    name: &str,
    start: u64,
    end: u64,
    first_ts: u32,
    last_ts: u32,
) -> Result<ObjectKey, StorageError> {
    ObjectKey::new(format!(
        "{BINLOG_PARTS_PREFIX}{name}/{start:020}-{end:020}-{first_ts:010}-{last_ts:010}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let k = |s: &str| wal_key(&WalFileName::parse(s).unwrap()).unwrap().to_string();
        assert_eq!(k("00000001000000A20000003F"), "wal/00000001000000A2/00000001000000A20000003F");
        assert_eq!(
            k("00000002000000000000000F.partial"),
            "wal/0000000200000000/00000002000000000000000F.partial"
        );
        assert_eq!(
            k("000000010000000000000002.00000028.backup"),
            "wal/0000000100000000/000000010000000000000002.00000028.backup"
        );
        assert_eq!(k("00000002.history"), "wal/history/00000002.history");
    }

    /// The keys of every other kind, as docs/format/layout.md lists them.
    #[test]
    fn keys_of_every_kind() {
        let name = WalFileName::parse("000000010000000000000005").unwrap();
        let tli = TimeLineId::new(2).unwrap();
        let id: BackupId = "20261121T161225Z".parse().unwrap();
        let s = |k: Result<ObjectKey, StorageError>| k.unwrap().to_string();
        assert_eq!(s(history_key(tli)), "wal/history/00000002.history");
        assert_eq!(
            s(summary_key(&name).unwrap()),
            "index/seg/0000000100000000/000000010000000000000005"
        );
        assert!(summary_key(&WalFileName::history(tli)).is_none());
        assert_eq!(
            s(block_map_key(&name).unwrap()),
            "index/blocks/0000000100000000/000000010000000000000005"
        );
        assert_eq!(s(rollup_key("0000000100000000")), "index/group/0000000100000000");
        assert_eq!(backup_prefix(&id), "backups/20261121T161225Z/");
        assert_eq!(s(manifest_key(&id)), "backups/20261121T161225Z/manifest.json");
        assert_eq!(s(pg_manifest_key(&id)), "backups/20261121T161225Z/backup_manifest");
        assert_eq!(s(chunk_key(&id, "base.tar", 1)), "backups/20261121T161225Z/base.tar/000001");
        assert_eq!(
            parse_chunk_key("backups/20261121T161225Z/16384.tar/000012"),
            Some((id.clone(), "16384.tar".into(), 12))
        );
        assert_eq!(parse_chunk_key("backups/20261121T161225Z/base.tar/12"), None);
        assert_eq!(parse_chunk_key("backups/x/base.tar/000000"), None);
        assert_eq!(dump_prefix("20261204T235900Z-00ab"), "dumps/20261204T235900Z-00ab/");
        assert_eq!(
            s(dump_manifest_key("20261204T235900Z-00ab")),
            "dumps/20261204T235900Z-00ab/manifest.json"
        );
        assert_eq!(
            s(dump_object_key("20261204T235900Z-00ab", "data/16384/0/000001")),
            "dumps/20261204T235900Z-00ab/data/16384/0/000001"
        );
        assert_eq!(s(binlog_file_key("mysql-bin.000001")), "binlog/files/mysql-bin.000001");
        assert_eq!(s(binlog_meta_key("mysql-bin.000001")), "binlog/meta/mysql-bin.000001.json");
        assert_eq!(s(binlog_gap_key("mysql-bin.000001")), "binlog/gaps/mysql-bin.000001.json");
        assert_eq!(
            s(binlog_part_key("mysql-bin.000001", 4, 1000, 1_700_000_000, 1_700_000_005)),
            "binlog/parts/mysql-bin.000001/00000000000000000004-00000000000000001000-1700000000-1700000005"
        );
    }
}
