//! What the index needs from WAL records: transaction commits and aborts (prepared ones too) with
//! their xids and times, restore points, checkpoints, backup ends, timeline ends and switches.
//!
//! The record body is walked as `DecodeXLogRecord` (src/backend/access/transam/xlogreader.c)
//! does, to find the main data; the xact records are parsed as `ParseCommitRecord` /
//! `ParseAbortRecord` (src/backend/access/rmgrdesc/xactdesc.c) do. Version differences: block
//! image flags changed in PostgreSQL 15; dropped-statistics items exist from 15 on and grew from
//! 12 to 16 bytes in 18.

use super::FormatError;
use super::lsn::Lsn;
use super::names::TimeLineId;
use super::page::PgMajorVersion;
use super::wal::{RECORD_HEADER_LEN, Record};
use crate::bytes::{i64_at, u16_at, u32_at, u64_at};

const RM_XLOG_ID: u8 = 0;
const RM_XACT_ID: u8 = 1;

const XLOG_CHECKPOINT_SHUTDOWN: u8 = 0x00;
const XLOG_CHECKPOINT_ONLINE: u8 = 0x10;
const XLOG_SWITCH: u8 = 0x40;
const XLOG_BACKUP_END: u8 = 0x50;
const XLOG_RESTORE_POINT: u8 = 0x70;
const XLOG_END_OF_RECOVERY: u8 = 0x90;

const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_COMMIT: u8 = 0x00;
const XLOG_XACT_ABORT: u8 = 0x20;
const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;
const XLOG_XACT_HAS_INFO: u8 = 0x80;

const XACT_XINFO_HAS_DBINFO: u32 = 1 << 0;
const XACT_XINFO_HAS_SUBXACTS: u32 = 1 << 1;
const XACT_XINFO_HAS_RELFILELOCATORS: u32 = 1 << 2;
const XACT_XINFO_HAS_INVALS: u32 = 1 << 3;
const XACT_XINFO_HAS_TWOPHASE: u32 = 1 << 4;
const XACT_XINFO_HAS_DROPPED_STATS: u32 = 1 << 8;

const XLR_MAX_BLOCK_ID: u8 = 32;
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_HAS_DATA: u8 = 0x20;
const BKPBLOCK_SAME_REL: u8 = 0x80;
const BKPIMAGE_HAS_HOLE: u8 = 0x01;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01 00:00:00 UTC).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// A PostgreSQL `TimestampTz`: microseconds since 2000-01-01 00:00:00 UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgTimestamp(pub i64);

impl PgTimestamp {
    /// Microseconds since the Unix epoch.
    pub fn unix_micros(self) -> i64 {
        self.0.saturating_add(PG_EPOCH_OFFSET_MICROS)
    }

    /// From microseconds since the Unix epoch.
    pub fn from_unix_micros(us: i64) -> Self {
        PgTimestamp(us.saturating_sub(PG_EPOCH_OFFSET_MICROS))
    }
}

impl std::fmt::Display for PgTimestamp {
    /// `2026-11-21 14:03:07.123456+00`, as PostgreSQL prints a timestamptz in UTC.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = self.unix_micros();
        let secs = us.div_euclid(1_000_000);
        let frac = us.rem_euclid(1_000_000);
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0).unsigned_abs());
        let s = crate::timefmt::rfc3339_utc(t);
        // "YYYY-MM-DDTHH:MM:SSZ" -> "YYYY-MM-DD HH:MM:SS.ffffff+00"
        let base = s.trim_end_matches('Z').replacen('T', " ", 1);
        write!(f, "{base}.{frac:06}+00")
    }
}

impl serde::Serialize for PgTimestamp {
    /// RFC 3339 in UTC with microseconds (`2026-11-21T14:03:07.123456Z`), the form of every
    /// timestamp in walrs's `--json` output (docs/json.md); `Display` is PostgreSQL's form.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::timefmt::rfc3339_micros(self.unix_micros()))
    }
}

/// What a record means to the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A transaction commit; `prepared` for `COMMIT PREPARED` (then `xid` is the prepared xid).
    Commit {
        /// The committed transaction.
        xid: u32,
        /// Its commit time.
        time: PgTimestamp,
        /// Whether it was a prepared transaction.
        prepared: bool,
    },
    /// A transaction abort.
    Abort {
        /// The aborted transaction.
        xid: u32,
        /// Its abort time.
        time: PgTimestamp,
        /// Whether it was a prepared transaction.
        prepared: bool,
    },
    /// `pg_create_restore_point(name)`.
    RestorePoint {
        /// The name.
        name: String,
        /// When it was created.
        time: PgTimestamp,
    },
    /// A checkpoint record.
    Checkpoint {
        /// Its redo pointer.
        redo: Lsn,
        /// A shutdown checkpoint.
        shutdown: bool,
    },
    /// The end of a base backup; `start` is the backup's start LSN.
    BackupEnd {
        /// The backup's start.
        start: Lsn,
    },
    /// `XLOG_SWITCH`: the rest of the segment is unused.
    Switch,
    /// The end of a recovery that started a new timeline.
    EndOfRecovery {
        /// The new timeline.
        tli: TimeLineId,
        /// The one it branched from.
        prev_tli: TimeLineId,
        /// When recovery ended.
        time: PgTimestamp,
    },
    /// Anything else.
    Other,
}

/// The main data of a record (`XLogRecGetData`): the part after all block data, located by
/// walking the block headers as `DecodeXLogRecord` does. Checks that the headers and lengths
/// are consistent with the record length.
#[doc(alias = "DecodeXLogRecord")]
pub fn main_data<'a>(rec: &Record<'a>, version: PgMajorVersion) -> Result<&'a [u8], FormatError> {
    walk_blocks(rec, version, |_| {})
}

/// One block reference of a record (`DecodedBkpBlock`'s identity): the relation file locator
/// (tablespace, database, relfilenode/relfilenumber), the fork and the block number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockRef {
    /// The relation.
    pub rel: RelFileLocator,
    /// The fork (`ForkNumber`: 0 main, 1 fsm, 2 vm, 3 init).
    pub fork: u8,
    /// The block number within the fork.
    pub block: u32,
}

/// A relation file's identity: `RelFileNode` (13–15) / `RelFileLocator` (16+), the same 12 bytes
/// in every version.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct RelFileLocator {
    /// Tablespace oid (`spcOid`).
    pub spc: u32,
    /// Database oid (`dbOid`; 0 for shared relations).
    pub db: u32,
    /// Relation file number (`relNumber`).
    pub rel: u32,
}

impl RelFileLocator {
    /// Reads the 12 bytes at `at`.
    pub(crate) fn at(b: &[u8], at: usize) -> Option<Self> {
        Some(RelFileLocator {
            spc: u32_at(b, at)?,
            db: u32_at(b, at + 4)?,
            rel: u32_at(b, at + 8)?,
        })
    }
}

/// `BKPBLOCK_FORK_MASK`.
const BKPBLOCK_FORK_MASK: u8 = 0x0F;
/// The largest valid fork number (`MAX_FORKNUM`, the init fork).
const MAX_FORKNUM: u8 = 3;

/// Calls `f` for each block reference of the record, in block-id order, and returns the record's
/// main data. The block header walk of `DecodeXLogRecord` (src/backend/access/transam/
/// xlogreader.c): a header without `BKPBLOCK_SAME_REL` carries the relation, one with it
/// repeats the previous block's relation.
#[doc(alias = "DecodeXLogRecord")]
pub fn walk_blocks<'a>(
    rec: &Record<'a>,
    version: PgMajorVersion,
    f: impl FnMut(BlockRef),
) -> Result<&'a [u8], FormatError> {
    let b = rec.bytes;
    let main_len = walk(b, b.len(), rec.lsn, version, f)?;
    let bad = |d: &str| FormatError::AtLsn { what: "WAL record", lsn: rec.lsn, detail: d.into() };
    b.get(b.len() - main_len..).ok_or_else(|| bad("main data out of range"))
}

/// The block references of a record of which only the first bytes are at hand (`head`, the
/// record header included: the part of a record that continues into the next segment, which a
/// segment's own scan holds as its [`super::Carry`]). `None` when `head` ends before the last
/// block header: the references are then not all known.
pub fn head_block_refs(head: &[u8], lsn: Lsn, version: PgMajorVersion) -> Option<Vec<BlockRef>> {
    let total = u32_at(head, 0)? as usize;
    if total < RECORD_HEADER_LEN {
        return None;
    }
    let mut out = Vec::new();
    walk(head, total, lsn, version, |r| out.push(r)).ok()?;
    Some(out)
}

/// The block header walk of [`walk_blocks`] over the first bytes `b` of a record `total` bytes
/// long; returns the main data length. When `b` is shorter than `total`, the data lengths are
/// not checked against the record's (its end is not at hand).
fn walk(
    b: &[u8],
    total: usize,
    lsn: Lsn,
    version: PgMajorVersion,
    mut f: impl FnMut(BlockRef),
) -> Result<usize, FormatError> {
    let bad = |d: String| FormatError::AtLsn { what: "WAL record", lsn, detail: d };
    let mut pos = RECORD_HEADER_LEN;
    let mut datatotal: usize = 0;
    let mut main_len: usize = 0;
    let mut last_block: i32 = -1;
    let mut last_rel: Option<RelFileLocator> = None;
    let byte = |at: usize| b.get(at).copied().ok_or_else(|| bad("truncated block headers".into()));
    let u16v = |at: usize| -> Result<usize, FormatError> {
        u16_at(b, at).map(usize::from).ok_or_else(|| bad("truncated block headers".into()))
    };
    let compressed_mask: u8 =
        if version >= PgMajorVersion::V15 { 0x04 | 0x08 | 0x10 } else { 0x02 };
    while total - pos > datatotal {
        let id = byte(pos)?;
        pos += 1;
        match id {
            XLR_BLOCK_ID_DATA_SHORT => {
                main_len = usize::from(byte(pos)?);
                pos += 1;
                datatotal += main_len;
                break;
            }
            XLR_BLOCK_ID_DATA_LONG => {
                let l = u32_at(b, pos).ok_or_else(|| bad("truncated block headers".into()))?;
                main_len = l as usize;
                pos += 4;
                datatotal += main_len;
                break;
            }
            XLR_BLOCK_ID_ORIGIN => pos += 2,
            XLR_BLOCK_ID_TOPLEVEL_XID => pos += 4,
            id if id <= XLR_MAX_BLOCK_ID => {
                if i32::from(id) <= last_block {
                    return Err(bad(format!("out-of-order block_id {id}")));
                }
                last_block = i32::from(id);
                let fork_flags = byte(pos)?;
                let data_len = u16v(pos + 1)?;
                pos += 3;
                let has_data = fork_flags & BKPBLOCK_HAS_DATA != 0;
                if has_data != (data_len > 0) {
                    return Err(bad(format!(
                        "block {id}: data flag and length {data_len} disagree"
                    )));
                }
                datatotal += data_len;
                if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
                    let img_len = u16v(pos)?;
                    let info = byte(pos + 4)?;
                    pos += 5;
                    if info & BKPIMAGE_HAS_HOLE != 0 && info & compressed_mask != 0 {
                        pos += 2;
                    }
                    datatotal += img_len;
                }
                if fork_flags & BKPBLOCK_SAME_REL == 0 {
                    last_rel = Some(
                        RelFileLocator::at(b, pos)
                            .ok_or_else(|| bad("truncated block headers".into()))?,
                    );
                    pos += 12;
                }
                let rel = last_rel.ok_or_else(|| {
                    bad(format!("block {id}: BKPBLOCK_SAME_REL but no previous relation"))
                })?;
                let block = u32_at(b, pos).ok_or_else(|| bad("truncated block headers".into()))?;
                pos += 4;
                let fork = fork_flags & BKPBLOCK_FORK_MASK;
                if fork > MAX_FORKNUM {
                    return Err(bad(format!("block {id}: invalid fork number {fork}")));
                }
                f(BlockRef { rel, fork, block });
            }
            other => return Err(bad(format!("invalid block_id {other}"))),
        }
        if pos > total {
            return Err(bad("truncated block headers".into()));
        }
    }
    if b.len() == total && total - pos != datatotal {
        return Err(bad(format!(
            "block data lengths ({datatotal}) do not add up to the record's remaining {} bytes",
            total - pos
        )));
    }
    if main_len > total {
        return Err(bad("main data out of range".into()));
    }
    Ok(main_len)
}

/// The start of a commit or abort record's main data after its time: the `xinfo` flags and the
/// offset past the database info and the subtransactions, where the relfilelocators begin.
fn xact_head(data: &[u8], info: u8) -> Option<(u32, usize)> {
    let mut p = 8usize;
    let mut xinfo = 0u32;
    if info & XLOG_XACT_HAS_INFO != 0 {
        xinfo = u32_at(data, p)?;
        p += 4;
    }
    if xinfo & XACT_XINFO_HAS_DBINFO != 0 {
        p += 8;
    }
    if xinfo & XACT_XINFO_HAS_SUBXACTS != 0 {
        let n = u32_at(data, p)? as usize;
        p += 4 + n.checked_mul(4)?;
    }
    Some((xinfo, p))
}

/// Parses a commit or abort record's main data and returns (time, twophase xid if any).
/// Port of `ParseCommitRecord` / `ParseAbortRecord`.
#[doc(alias = "ParseCommitRecord")]
fn parse_xact(
    data: &[u8],
    info: u8,
    commit: bool,
    version: PgMajorVersion,
) -> Option<(PgTimestamp, Option<u32>)> {
    let time = PgTimestamp(i64_at(data, 0)?);
    let (xinfo, mut p) = xact_head(data, info)?;
    if xinfo & XACT_XINFO_HAS_RELFILELOCATORS != 0 {
        let n = u32_at(data, p)? as usize;
        p += 4 + n.checked_mul(12)?;
    }
    if version >= PgMajorVersion::V15 && xinfo & XACT_XINFO_HAS_DROPPED_STATS != 0 {
        let n = u32_at(data, p)? as usize;
        let item = if version >= PgMajorVersion::V18 { 16 } else { 12 };
        p += 4 + n.checked_mul(item)?;
    }
    if commit && xinfo & XACT_XINFO_HAS_INVALS != 0 {
        let n = u32_at(data, p)? as usize;
        p += 4 + n.checked_mul(16)?;
    }
    let twophase = if xinfo & XACT_XINFO_HAS_TWOPHASE != 0 { Some(u32_at(data, p)?) } else { None };
    Some((time, twophase))
}

/// The relfilelocators a commit or abort record drops (`xl_xact_relfilelocators`, named
/// `xl_xact_relfilenodes` before 16): the relations whose files are unlinked when the record is
/// replayed. Walks the main data as [`parse_xact`] does.
fn xact_dropped_rels(data: &[u8], info: u8) -> Option<Vec<RelFileLocator>> {
    let (xinfo, mut p) = xact_head(data, info)?;
    if xinfo & XACT_XINFO_HAS_RELFILELOCATORS == 0 {
        return Some(Vec::new());
    }
    let n = u32_at(data, p)? as usize;
    p += 4;
    // Bounded by the record: at most one entry per 12 bytes of main data.
    if n > data.len() / 12 {
        return None;
    }
    (0..n).map(|i| RelFileLocator::at(data, p + i * 12)).collect()
}

const RM_SMGR_ID: u8 = 2;
const RM_DBASE_ID: u8 = 4;
const XLOG_SMGR_CREATE: u8 = 0x10;
const XLOG_SMGR_TRUNCATE: u8 = 0x20;
/// `SMGR_TRUNCATE_HEAP`: the main fork is truncated (also `_VM` 2 and `_FSM` 4).
pub const SMGR_TRUNCATE_HEAP: u32 = 0x0001;

/// A change to relation files that block references do not describe: after one of these the
/// block list of the relation (or the database) in that WAL range is not the whole story.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelationEvent {
    /// `XLOG_SMGR_CREATE`: a fork's file was created (a new relfilenode).
    Create {
        /// The relation.
        rel: RelFileLocator,
        /// The fork created.
        fork: u8,
    },
    /// `XLOG_SMGR_TRUNCATE`: the relation was cut to `blocks` blocks (the forks in `flags`:
    /// [`SMGR_TRUNCATE_HEAP`] for the main fork).
    Truncate {
        /// The relation.
        rel: RelFileLocator,
        /// Its new length in blocks (of the main fork).
        blocks: u32,
        /// `SMGR_TRUNCATE_*` flags.
        flags: u32,
    },
    /// A relation whose files a commit or abort record unlinks.
    Drop {
        /// The relation.
        rel: RelFileLocator,
    },
    /// `XLOG_DBASE_CREATE*`: a database directory was copied or created (its files appear
    /// without block references when copied).
    DatabaseCreate {
        /// The new database.
        db: u32,
    },
    /// `XLOG_DBASE_DROP`: a database's directories were removed.
    DatabaseDrop {
        /// The database.
        db: u32,
    },
}

/// The relation-file events of a record (see [`RelationEvent`]): smgr creates and truncates,
/// the relations commit and abort records drop, database creates and drops. Every other record
/// changes relation files only through its block references ([`walk_blocks`]). The layouts:
/// `xl_smgr_create` / `xl_smgr_truncate` (src/include/catalog/storage_xlog.h), `xl_dbase_*`
/// (src/include/commands/dbcommands_xlog.h: `CREATE` 0x00 and `DROP` 0x10 up to 14;
/// `CREATE_FILE_COPY` 0x00, `CREATE_WAL_LOG` 0x10 and `DROP` 0x20 from 15; `db_id` first in
/// each), `xl_xact_relfilenodes` / `xl_xact_relfilelocators` (src/include/access/xact.h).
pub fn relation_events(
    rec: &Record<'_>,
    version: PgMajorVersion,
) -> Result<Vec<RelationEvent>, FormatError> {
    let h = &rec.header;
    let bad =
        |d: &str| FormatError::AtLsn { what: "WAL record", lsn: rec.lsn, detail: d.to_owned() };
    let info = h.info & 0xF0;
    match h.rmid {
        RM_SMGR_ID if info == XLOG_SMGR_CREATE => {
            let d = main_data(rec, version)?;
            let rel = RelFileLocator::at(d, 0).ok_or_else(|| bad("truncated smgr create"))?;
            let fork = u32_at(d, 12).ok_or_else(|| bad("truncated smgr create"))?;
            let fork = u8::try_from(fork)
                .ok()
                .filter(|f| *f <= MAX_FORKNUM)
                .ok_or_else(|| bad("smgr create of an invalid fork"))?;
            Ok(vec![RelationEvent::Create { rel, fork }])
        }
        RM_SMGR_ID if info == XLOG_SMGR_TRUNCATE => {
            let d = main_data(rec, version)?;
            let blocks = u32_at(d, 0).ok_or_else(|| bad("truncated smgr truncate"))?;
            let rel = RelFileLocator::at(d, 4).ok_or_else(|| bad("truncated smgr truncate"))?;
            let flags = u32_at(d, 16).ok_or_else(|| bad("truncated smgr truncate"))?;
            Ok(vec![RelationEvent::Truncate { rel, blocks, flags }])
        }
        RM_DBASE_ID => {
            let d = main_data(rec, version)?;
            let db = u32_at(d, 0).ok_or_else(|| bad("truncated database record"))?;
            let drop = if version >= PgMajorVersion::V15 { 0x20 } else { 0x10 };
            Ok(vec![if info == drop {
                RelationEvent::DatabaseDrop { db }
            } else {
                RelationEvent::DatabaseCreate { db }
            }])
        }
        RM_XACT_ID => match h.info & XLOG_XACT_OPMASK {
            XLOG_XACT_COMMIT
            | XLOG_XACT_COMMIT_PREPARED
            | XLOG_XACT_ABORT
            | XLOG_XACT_ABORT_PREPARED => {
                let d = main_data(rec, version)?;
                let rels = xact_dropped_rels(d, h.info)
                    .ok_or_else(|| bad("truncated transaction record"))?;
                Ok(rels.into_iter().map(|rel| RelationEvent::Drop { rel }).collect())
            }
            _ => Ok(Vec::new()),
        },
        _ => Ok(Vec::new()),
    }
}

/// Interprets a record for the index.
pub fn interpret(rec: &Record<'_>, version: PgMajorVersion) -> Result<RecordKind, FormatError> {
    let h = &rec.header;
    let bad =
        |d: &str| FormatError::AtLsn { what: "WAL record", lsn: rec.lsn, detail: d.to_owned() };
    match h.rmid {
        RM_XACT_ID => {
            let op = h.info & XLOG_XACT_OPMASK;
            let (commit, prepared) = match op {
                XLOG_XACT_COMMIT => (true, false),
                XLOG_XACT_COMMIT_PREPARED => (true, true),
                XLOG_XACT_ABORT => (false, false),
                XLOG_XACT_ABORT_PREPARED => (false, true),
                _ => return Ok(RecordKind::Other),
            };
            let data = main_data(rec, version)?;
            let (time, twophase) = parse_xact(data, h.info, commit, version)
                .ok_or_else(|| bad("truncated transaction record"))?;
            let xid = if prepared {
                twophase.ok_or_else(|| bad("prepared transaction record without its xid"))?
            } else {
                h.xid
            };
            Ok(if commit {
                RecordKind::Commit { xid, time, prepared }
            } else {
                RecordKind::Abort { xid, time, prepared }
            })
        }
        RM_XLOG_ID => match h.info & 0xF0 {
            XLOG_SWITCH => Ok(RecordKind::Switch),
            XLOG_CHECKPOINT_SHUTDOWN | XLOG_CHECKPOINT_ONLINE => {
                let data = main_data(rec, version)?;
                let redo = u64_at(data, 0).ok_or_else(|| bad("truncated checkpoint record"))?;
                Ok(RecordKind::Checkpoint {
                    redo: Lsn(redo),
                    shutdown: h.info & 0xF0 == XLOG_CHECKPOINT_SHUTDOWN,
                })
            }
            XLOG_BACKUP_END => {
                let data = main_data(rec, version)?;
                let start = u64_at(data, 0).ok_or_else(|| bad("truncated backup-end record"))?;
                Ok(RecordKind::BackupEnd { start: Lsn(start) })
            }
            XLOG_RESTORE_POINT => {
                let data = main_data(rec, version)?;
                let time =
                    PgTimestamp(i64_at(data, 0).ok_or_else(|| bad("truncated restore point"))?);
                let name = data.get(8..).unwrap_or_default();
                let name = name.split(|b| *b == 0).next().unwrap_or_default();
                Ok(RecordKind::RestorePoint {
                    name: String::from_utf8_lossy(name).into_owned(),
                    time,
                })
            }
            XLOG_END_OF_RECOVERY => {
                let data = main_data(rec, version)?;
                let time = PgTimestamp(
                    i64_at(data, 0).ok_or_else(|| bad("truncated end-of-recovery record"))?,
                );
                let tli = u32_at(data, 8).ok_or_else(|| bad("truncated end-of-recovery record"))?;
                let prev_tli =
                    u32_at(data, 12).ok_or_else(|| bad("truncated end-of-recovery record"))?;
                // PostgreSQL never writes timeline 0 (`xlog_redo` would PANIC on it).
                let tli_of = |t: u32| {
                    TimeLineId::new(t).map_err(|_| bad("end-of-recovery record with timeline 0"))
                };
                let (tli, prev_tli) = (tli_of(tli)?, tli_of(prev_tli)?);
                Ok(RecordKind::EndOfRecovery { tli, prev_tli, time })
            }
            _ => Ok(RecordKind::Other),
        },
        _ => Ok(RecordKind::Other),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::pg::wal::RecordHeader;

    /// A record with two block references (the first with a 100-byte image with a hole, the
    /// second `BKPBLOCK_SAME_REL` with 3 bytes of data, in the fsm fork) and `main` as main data.
    fn record(rmid: u8, info: u8, main: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&[0, BKPBLOCK_HAS_IMAGE, 0, 0]); // block 0, main fork, no data
        body.extend_from_slice(&100u16.to_le_bytes()); // bimg_len
        body.extend_from_slice(&40u16.to_le_bytes()); // hole offset
        body.push(BKPIMAGE_HAS_HOLE); // not compressed: no hole length
        for v in [1663u32, 5, 16384, 7] {
            body.extend_from_slice(&v.to_le_bytes()); // spc, db, rel, block
        }
        body.extend_from_slice(&[1, BKPBLOCK_SAME_REL | BKPBLOCK_HAS_DATA | 1, 3, 0]);
        body.extend_from_slice(&9u32.to_le_bytes());
        body.extend_from_slice(&[XLR_BLOCK_ID_DATA_SHORT, main.len() as u8]);
        body.extend_from_slice(&[0xAA; 100]);
        body.extend_from_slice(&[0xBB; 3]);
        body.extend_from_slice(main);
        let tot = (RECORD_HEADER_LEN + body.len()) as u32;
        let mut b = tot.to_le_bytes().to_vec();
        b.extend_from_slice(&[0; 12]);
        b.extend_from_slice(&[info, rmid, 0, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&body);
        b
    }

    fn with<T>(bytes: &[u8], f: impl FnOnce(&Record<'_>) -> T) -> T {
        let rec = Record {
            lsn: Lsn(0x100_0028),
            end: Lsn(0x100_0028 + bytes.len() as u64),
            tli: TimeLineId::new(1).unwrap(),
            header: RecordHeader::parse(bytes).unwrap(),
            bytes,
        };
        f(&rec)
    }

    #[test]
    fn block_references_and_main_data() {
        let main = [1u8, 2, 3, 4];
        let b = record(10, 0, &main);
        let rel = RelFileLocator { spc: 1663, db: 5, rel: 16384 };
        let mut refs = Vec::new();
        let data =
            with(&b, |r| walk_blocks(r, PgMajorVersion::V15, |x| refs.push(x)).unwrap().to_vec());
        assert_eq!(data, &main);
        assert_eq!(
            refs,
            vec![BlockRef { rel, fork: 0, block: 7 }, BlockRef { rel, fork: 1, block: 9 }]
        );
        // From the head alone: all references once the block headers are in; none before.
        let headers_end = RECORD_HEADER_LEN + 4 + 5 + 12 + 4 + 4 + 4 + 2;
        for cut in [headers_end, headers_end + 10, b.len() - 1] {
            assert_eq!(head_block_refs(&b[..cut], Lsn(1), PgMajorVersion::V15), Some(refs.clone()));
        }
        for cut in [0, 20, RECORD_HEADER_LEN + 3, headers_end - 7] {
            assert_eq!(head_block_refs(&b[..cut], Lsn(1), PgMajorVersion::V15), None, "{cut}");
        }
        // A damaged length is an error, not a guess.
        let mut bad = b.clone();
        bad[RECORD_HEADER_LEN + 4] = 200;
        assert!(with(&bad, |r| walk_blocks(r, PgMajorVersion::V15, |_| {}).is_err()));
    }

    #[test]
    fn relation_events_of_smgr_dbase_and_xact_records() {
        let v = PgMajorVersion::V16;
        let mut trunc = 12u32.to_le_bytes().to_vec();
        for x in [1663u32, 5, 16390, 7] {
            trunc.extend_from_slice(&x.to_le_bytes());
        }
        let rel = RelFileLocator { spc: 1663, db: 5, rel: 16390 };
        let b = record(RM_SMGR_ID, XLOG_SMGR_TRUNCATE, &trunc);
        assert_eq!(
            with(&b, |r| relation_events(r, v)).unwrap(),
            vec![RelationEvent::Truncate { rel, blocks: 12, flags: 7 }]
        );
        let mut create = Vec::new();
        for x in [1663u32, 5, 16390, 3] {
            create.extend_from_slice(&x.to_le_bytes());
        }
        let b = record(RM_SMGR_ID, XLOG_SMGR_CREATE, &create);
        assert_eq!(
            with(&b, |r| relation_events(r, v)).unwrap(),
            vec![RelationEvent::Create { rel, fork: 3 }]
        );
        // DROP is 0x10 up to 14 and 0x20 from 15 (0x10 is CREATE_WAL_LOG there).
        let db = 16400u32.to_le_bytes();
        let b = record(RM_DBASE_ID, 0x10, &db);
        assert_eq!(
            with(&b, |r| relation_events(r, PgMajorVersion::V14)).unwrap(),
            vec![RelationEvent::DatabaseDrop { db: 16400 }]
        );
        assert_eq!(
            with(&b, |r| relation_events(r, PgMajorVersion::V15)).unwrap(),
            vec![RelationEvent::DatabaseCreate { db: 16400 }]
        );
        // A commit with subtransactions and two dropped relations.
        let mut c = 0i64.to_le_bytes().to_vec();
        c.extend_from_slice(
            &(XACT_XINFO_HAS_SUBXACTS | XACT_XINFO_HAS_RELFILELOCATORS).to_le_bytes(),
        );
        c.extend_from_slice(&1u32.to_le_bytes());
        c.extend_from_slice(&777u32.to_le_bytes());
        c.extend_from_slice(&2u32.to_le_bytes());
        for x in [1663u32, 5, 1, 1663, 5, 2] {
            c.extend_from_slice(&x.to_le_bytes());
        }
        let b = record(RM_XACT_ID, XLOG_XACT_COMMIT | XLOG_XACT_HAS_INFO, &c);
        let drops = with(&b, |r| relation_events(r, v)).unwrap();
        assert_eq!(
            drops,
            vec![
                RelationEvent::Drop { rel: RelFileLocator { spc: 1663, db: 5, rel: 1 } },
                RelationEvent::Drop { rel: RelFileLocator { spc: 1663, db: 5, rel: 2 } },
            ]
        );
        // Cut short: an error, never "no drops".
        let b = record(RM_XACT_ID, XLOG_XACT_COMMIT | XLOG_XACT_HAS_INFO, &c[..c.len() - 4]);
        assert!(with(&b, |r| relation_events(r, v)).is_err());
    }
}
