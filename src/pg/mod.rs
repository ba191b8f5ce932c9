//! Pure PostgreSQL formats: bytes and strings in, typed values out.
//!
//! This module knows how PostgreSQL names and lays out its write-ahead log: LSNs, timelines, segment
//! numbers, WAL file names, the page headers at the start of every segment and timeline history files.
//! It performs no I/O, spawns nothing and imports nothing from the storage, codec or command layers
//! (the neon `postgres_ffi` rule). Every decoder checks lengths before it reads a field and reports
//! where in the WAL it failed.

pub mod history;
pub mod incremental;
pub mod lsn;
pub mod names;
pub mod page;
pub mod records;
pub mod wal;

pub use history::{TimelineHistory, TimelineHistoryEntry};
pub use lsn::Lsn;
pub use names::{TimeLineId, WalFileKind, WalFileName, WalSegSize, XLogSegNo};
pub use page::{LongPageHeader, PgMajorVersion, SystemId};
pub use records::{BlockRef, PgTimestamp, RecordKind, RelFileLocator, RelationEvent};
pub use wal::{Carry, Record, ScanEnd, SegmentScan, WalGeometry, WalScanner, scan_segment};

/// An error in PostgreSQL-formatted input: a name, an LSN, a page header or a history file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The text could not be parsed as the named kind of value.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// What was being parsed ("LSN", "WAL file name", ...).
        what: &'static str,
        /// Why it was rejected.
        detail: String,
    },
    /// Binary WAL data failed a check; `lsn` says where.
    #[error("invalid {what} at {lsn}: {detail}")]
    AtLsn {
        /// The structure being decoded.
        what: &'static str,
        /// The WAL position of the structure.
        lsn: Lsn,
        /// Why it was rejected.
        detail: String,
    },
}

impl FormatError {
    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        FormatError::Invalid { what, detail: detail.into() }
    }
}
