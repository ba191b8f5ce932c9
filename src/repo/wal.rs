//! The WAL kinds: [`WalFile`] (every file PostgreSQL archives: segments, `.partial` segments,
//! `.backup` files and `.history` files, stored as received) and [`TimelineHistory`] (a
//! `.history` file read as the timeline ancestry it holds). Both name their objects by
//! PostgreSQL's own file name, which is also the logical name their envelopes bind.

use crate::codec::Compression;
use crate::error::{Kind, Result, WalrsError};
use crate::pg::{TimeLineId, TimelineHistory, WalFileKind, WalFileName};
use crate::storage::ObjectKey;

use super::layout;
use super::object::{Document, Listed, RepoObject};

/// A WAL file as PostgreSQL archived it (docs/format/layout.md): write-once, compressed as the
/// pushing walrs was configured, encrypted when the repository is.
#[derive(Debug)]
pub struct WalFile;

impl RepoObject for WalFile {
    const KIND: &'static str = "WAL file";
    const FORMAT_VERSION: Option<u32> = None;
    type Id = WalFileName;
    type Codec = Compression;

    fn key(id: &WalFileName) -> Result<ObjectKey> {
        Ok(layout::wal_key(id)?)
    }

    fn name(id: &WalFileName) -> Result<String> {
        Ok(id.to_string())
    }

    fn compression(codec: Compression) -> Compression {
        codec
    }
}

impl Listed for WalFile {
    /// Every WAL object (`()`): a full listing of `wal/`, for `wal verify`, `wal index
    /// --rebuild` and `repo init --from-objects` only.
    type Scope = ();

    fn prefix(_: &()) -> String {
        layout::WAL_PREFIX.to_owned()
    }

    /// The WAL file name the key ends with (an object under another group's directory is
    /// listed by its name, and then read from its own key).
    fn id_of(key: &ObjectKey) -> Option<WalFileName> {
        WalFileName::parse(key.as_str().rsplit('/').next()?).ok()
    }
}

impl RepoObject for TimelineHistory {
    const KIND: &'static str = "timeline history";
    const FORMAT_VERSION: Option<u32> = None;
    type Id = TimeLineId;
    type Codec = Compression;

    fn key(tli: &TimeLineId) -> Result<ObjectKey> {
        Ok(layout::history_key(*tli)?)
    }

    fn name(tli: &TimeLineId) -> Result<String> {
        Ok(WalFileName::history(*tli).to_string())
    }

    fn compression(codec: Compression) -> Compression {
        codec
    }
}

impl Document for TimelineHistory {
    fn decode(tli: &TimeLineId, bytes: &[u8]) -> Result<Self> {
        TimelineHistory::parse(*tli, bytes).map_err(|e| {
            WalrsError::new(Kind::Corrupt, format!("{}: {e}", WalFileName::history(*tli)))
        })
    }
}

impl Listed for TimelineHistory {
    /// Every history file (`()`): one listing of `wal/history/`.
    type Scope = ();

    fn prefix(_: &()) -> String {
        layout::HISTORY_PREFIX.to_owned()
    }

    fn id_of(key: &ObjectKey) -> Option<TimeLineId> {
        let name = WalFileName::parse(key.as_str().strip_prefix(layout::HISTORY_PREFIX)?).ok()?;
        (name.kind() == WalFileKind::History).then(|| name.timeline())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_take_wal_file_names_only() {
        let id = |k: &str| WalFile::id_of(&ObjectKey::new(k).unwrap()).map(|n| n.to_string());
        let seg = "000000010000000000000005";
        assert_eq!(id(&format!("wal/0000000100000000/{seg}")).as_deref(), Some(seg));
        assert_eq!(id("wal/history/00000002.history").as_deref(), Some("00000002.history"));
        assert_eq!(id("wal/0000000100000000/notes.txt"), None);
        let tli = |k: &str| TimelineHistory::id_of(&ObjectKey::new(k).unwrap());
        assert_eq!(tli("wal/history/0000000A.history"), Some(TimeLineId::new(10).unwrap()));
        assert_eq!(tli(&format!("wal/history/{seg}")), None);
    }
}
