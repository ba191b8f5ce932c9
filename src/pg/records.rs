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
    let b = rec.bytes;
    let bad = |d: String| FormatError::AtLsn { what: "WAL record", lsn: rec.lsn, detail: d };
    let total = b.len();
    let mut pos = RECORD_HEADER_LEN;
    let mut datatotal: usize = 0;
    let mut main_len: usize = 0;
    let mut last_block: i32 = -1;
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
                    pos += 12;
                }
                pos += 4;
            }
            other => return Err(bad(format!("invalid block_id {other}"))),
        }
        if pos > total {
            return Err(bad("truncated block headers".into()));
        }
    }
    if total - pos != datatotal {
        return Err(bad(format!(
            "block data lengths ({datatotal}) do not add up to the record's remaining {} bytes",
            total - pos
        )));
    }
    b.get(total - main_len..).ok_or_else(|| bad("main data out of range".into()))
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
