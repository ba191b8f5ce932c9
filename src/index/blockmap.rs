//! The block map of a segment (docs/format/index.md, "Block maps"): every relation block its
//! records reference (full-page images and WAL-logged bulk writes included), as sorted block
//! ranges per relation fork, plus the events that make a relation's block list incomplete
//! (smgr creates and truncates, relations dropped by commits and aborts, databases created or
//! dropped). Built while `push` scans the segment, beside its summary, and stored as its own
//! object so the summaries and roll-ups `status` reads stay as small as they were. A changed-block
//! backup (issue 18, PostgreSQL 13–16) unions the maps of the segments between its parent's start
//! and its own start. A segment without a map (pushed by an older walrs) is unknown, never "no
//! changes".

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

use crate::error::{Kind, Result, WalrsError};
use crate::pg::records::{RelationEvent, head_block_refs, relation_events, walk_blocks};
use crate::pg::{
    BlockRef, Lsn, PgMajorVersion, Record, RelFileLocator, ScanEnd, SegmentScan, WalFileName,
};
use crate::repo::{Fixed, JsonObject, Listed, RepoObject, Repository, Write, layout};
use crate::storage::ObjectKey;

/// Format version of block maps.
pub const BLOCK_MAP_FORMAT_VERSION: u32 = 1;

/// The blocks of one relation fork a segment's records reference: `(spc, db, rel, fork,
/// ranges)`, the ranges inclusive `[first, last]`, sorted and disjoint (not adjacent).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ForkBlocks(pub u32, pub u32, pub u32, pub u8, pub Vec<(u32, u32)>);

impl ForkBlocks {
    /// The relation.
    pub fn rel(&self) -> RelFileLocator {
        RelFileLocator { spc: self.0, db: self.1, rel: self.2 }
    }

    /// The fork.
    pub fn fork(&self) -> u8 {
        self.3
    }

    /// The block ranges (inclusive).
    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.4
    }
}

/// The block map of one segment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BlockMap {
    /// Format version.
    pub format_version: u32,
    /// The WAL file name (segment or `.partial`).
    pub name: WalFileName,
    /// The LSN of the segment's first byte.
    pub start: Lsn,
    /// The end of the valid WAL read.
    pub end: Lsn,
    /// Whether every record that starts in the segment was read and all its block references and
    /// events are in this map. `false` after a decoding error or when [`BlockMap::unresolved`]
    /// is set: the map then covers only part of the segment.
    pub complete: bool,
    /// The record that continues into the next segment when its block references or events are
    /// not all in the bytes this segment holds (its block headers are cut, or it is a record
    /// whose events sit in its main data: a commit, an abort, an smgr or a database record). A
    /// reader resolves it by decoding the two segments ([`resolve_unresolved`]).
    pub unresolved: Option<Lsn>,
    /// Referenced blocks per relation fork, sorted by (spc, db, rel, fork).
    pub forks: Vec<ForkBlocks>,
    /// `XLOG_SMGR_CREATE`: `(spc, db, rel, fork)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub creates: Vec<(u32, u32, u32, u8)>,
    /// `XLOG_SMGR_TRUNCATE`: `(spc, db, rel, new length in blocks, SMGR_TRUNCATE_* flags)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncates: Vec<(u32, u32, u32, u32, u32)>,
    /// Relations dropped by commit and abort records: `(spc, db, rel)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drops: Vec<(u32, u32, u32)>,
    /// Databases created (copied) here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub db_creates: Vec<u32>,
    /// Databases dropped here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub db_drops: Vec<u32>,
    /// The first decoding problem, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl BlockMap {
    /// Every block reference of the map, expanded (tests and small maps only: a range may be
    /// long).
    pub fn block_refs(&self) -> impl Iterator<Item = BlockRef> + '_ {
        self.forks.iter().flat_map(|f| {
            let rel = f.rel();
            let fork = f.fork();
            f.ranges()
                .iter()
                .flat_map(move |&(a, b)| (a..=b).map(move |block| BlockRef { rel, fork, block }))
        })
    }

    /// Adds the block references and events of one record (a record resolved by
    /// [`resolve_unresolved`]).
    pub fn add_record(&mut self, rec: &Record<'_>, version: PgMajorVersion) -> Result<()> {
        let mut b = BlockMapBuilder::new(self.name.clone(), self.start, version);
        b.observe_any(rec);
        if let Some(e) = b.error {
            return Err(WalrsError::new(Kind::Corrupt, e));
        }
        let other = b.finish_parts();
        let mut all: HashMap<(RelFileLocator, u8), Vec<u32>> = HashMap::new();
        for m in [&*self, &other] {
            for f in &m.forks {
                let v = all.entry((f.rel(), f.fork())).or_default();
                for &(a, z) in f.ranges() {
                    v.extend(a..=z);
                }
            }
        }
        self.forks = to_ranges(all);
        self.creates.extend(other.creates);
        self.truncates.extend(other.truncates);
        self.drops.extend(other.drops);
        self.db_creates.extend(other.db_creates);
        self.db_drops.extend(other.db_drops);
        Ok(())
    }
}

/// Blocks per relation fork while a segment is scanned, hashed with [`FastHasher`] (the default
/// SipHash cost about a third of the block map's time on an OLTP segment).
type BlockTable = HashMap<(RelFileLocator, u8), Vec<u32>, BuildHasherDefault<FastHasher>>;

/// A multiply-rotate hasher for the small integer keys of [`BlockTable`] (the keys are relation
/// numbers from the WAL: no adversary chooses them to collide beyond what a bad workload could).
#[derive(Default)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// Sorted, merged ranges per fork.
fn to_ranges<S: std::hash::BuildHasher>(
    blocks: HashMap<(RelFileLocator, u8), Vec<u32>, S>,
) -> Vec<ForkBlocks> {
    let mut forks: Vec<ForkBlocks> = blocks
        .into_iter()
        .map(|((rel, fork), mut v)| {
            v.sort_unstable();
            v.dedup();
            let mut ranges: Vec<(u32, u32)> = Vec::new();
            for b in v {
                match ranges.last_mut() {
                    Some((_, z)) if z.checked_add(1) == Some(b) => *z = b,
                    _ => ranges.push((b, b)),
                }
            }
            ForkBlocks(rel.spc, rel.db, rel.rel, fork, ranges)
        })
        .collect();
    forks.sort_by_key(|f| (f.0, f.1, f.2, f.3));
    forks
}

/// Accumulates a segment's block map from its records as the segment is scanned.
pub struct BlockMapBuilder {
    name: WalFileName,
    start: Lsn,
    version: PgMajorVersion,
    blocks: BlockTable,
    events: Vec<RelationEvent>,
    error: Option<String>,
}

impl BlockMapBuilder {
    /// A builder for segment `name` starting at `start`, of WAL of `version`.
    pub fn new(name: WalFileName, start: Lsn, version: PgMajorVersion) -> Self {
        BlockMapBuilder {
            name,
            start,
            version,
            blocks: BlockTable::default(),
            events: Vec::new(),
            error: None,
        }
    }

    /// Takes one record into account (records carried over from the previous segment are that
    /// segment's business and skipped).
    pub fn observe(&mut self, rec: &Record<'_>) {
        if rec.lsn < self.start {
            return;
        }
        self.observe_any(rec);
    }

    fn observe_any(&mut self, rec: &Record<'_>) {
        if self.error.is_some() {
            return;
        }
        let r = walk_blocks(rec, self.version, |r| self.push(r));
        if let Err(e) = r {
            self.error = Some(e.to_string());
            return;
        }
        match relation_events(rec, self.version) {
            Ok(ev) => self.events.extend(ev),
            Err(e) => self.error = Some(e.to_string()),
        }
    }

    fn push(&mut self, r: BlockRef) {
        let v = self.blocks.entry((r.rel, r.fork)).or_default();
        if v.last() != Some(&r.block) {
            v.push(r.block);
        }
    }

    fn finish_parts(self) -> BlockMap {
        let mut m = BlockMap {
            format_version: BLOCK_MAP_FORMAT_VERSION,
            name: self.name,
            start: self.start,
            end: self.start,
            complete: self.error.is_none(),
            unresolved: None,
            forks: to_ranges(self.blocks),
            creates: Vec::new(),
            truncates: Vec::new(),
            drops: Vec::new(),
            db_creates: Vec::new(),
            db_drops: Vec::new(),
            error: self.error,
        };
        for e in self.events {
            match e {
                RelationEvent::Create { rel, fork } => {
                    m.creates.push((rel.spc, rel.db, rel.rel, fork))
                }
                RelationEvent::Truncate { rel, blocks, flags } => {
                    m.truncates.push((rel.spc, rel.db, rel.rel, blocks, flags))
                }
                RelationEvent::Drop { rel } => m.drops.push((rel.spc, rel.db, rel.rel)),
                RelationEvent::DatabaseCreate { db } => m.db_creates.push(db),
                RelationEvent::DatabaseDrop { db } => m.db_drops.push(db),
            }
        }
        m
    }

    /// The map, given how the scan of the segment ended. The record that continues into the
    /// next segment: its block references are taken from its first bytes when they hold all its
    /// block headers; otherwise, or when its events sit in its main data, it is
    /// [`BlockMap::unresolved`]. `end` is the end of the valid WAL (the summary's).
    pub fn finish(mut self, scan: &SegmentScan, end: Lsn) -> BlockMap {
        let version = self.version;
        let mut unresolved = None;
        if let ScanEnd::Continues(c) = &scan.end
            && self.error.is_none()
        {
            match head_block_refs(&c.bytes, c.lsn, version) {
                Some(refs) => refs.into_iter().for_each(|r| self.push(r)),
                None => unresolved = Some(c.lsn),
            }
            let events = match (c.bytes.get(17), c.bytes.get(16)) {
                (Some(&rmid), Some(&info)) => may_carry_events(rmid, info),
                _ => true,
            };
            if events {
                unresolved = Some(c.lsn);
            }
        }
        let mut m = self.finish_parts();
        if m.error.is_none()
            && let Some(e) = &scan.error
        {
            m.error = Some(e.to_string());
        }
        m.end = end;
        m.complete = m.error.is_none() && unresolved.is_none();
        m.unresolved = unresolved;
        m
    }
}

/// Whether a record of resource manager `rmid` with `info` may hold [`RelationEvent`]s in its
/// main data (see `relation_events`).
fn may_carry_events(rmid: u8, info: u8) -> bool {
    match rmid {
        1 => matches!(info & 0x70, 0x00 | 0x20 | 0x30 | 0x40),
        2 | 4 => true,
        _ => false,
    }
}

/// Block maps: derived data like the summaries (replaced by a rebuild), compact JSON, zstd level
/// 3, encrypted when the repository is, bound to the name `blocks:<name>`.
impl RepoObject for BlockMap {
    const KIND: &'static str = "index block map";
    const FORMAT_VERSION: Option<u32> = Some(BLOCK_MAP_FORMAT_VERSION);
    const WRITE: Write = Write::Replace;
    type Id = WalFileName;
    type Codec = Fixed;

    fn key(name: &WalFileName) -> Result<ObjectKey> {
        layout::block_map_key(name)
            .ok_or_else(|| WalrsError::new(Kind::Internal, format!("{name} has no group")))?
            .map_err(Into::into)
    }

    fn name(name: &WalFileName) -> Result<String> {
        Ok(format!("blocks:{name}"))
    }

    fn compression(_: Fixed) -> crate::codec::Compression {
        crate::codec::Compression::Zstd(3)
    }
}

impl JsonObject for BlockMap {
    const PRETTY: bool = false;
    const VERSION_FIELD: Option<fn(&Self) -> u32> = Some(|s| s.format_version);
}

impl Listed for BlockMap {
    /// The block maps of one group (`Some(group)`), or every block map (`None`).
    type Scope = Option<String>;

    fn prefix(group: &Option<String>) -> String {
        match group {
            Some(g) => layout::block_map_group_prefix(g),
            None => layout::BLOCK_MAP_PREFIX.to_owned(),
        }
    }

    fn id_of(key: &ObjectKey) -> Option<WalFileName> {
        WalFileName::parse(key.as_str().rsplit('/').next()?).ok()
    }
}

/// Reads the block map of a segment (`None`: the segment has none, "unknown").
pub fn load_block_map(repo: &Repository, name: &WalFileName) -> Result<Option<BlockMap>> {
    repo.load(name)
}

/// Stores the block map of a segment.
pub fn store_block_map(repo: &Repository, m: &BlockMap) -> Result<()> {
    repo.save(&m.name, m, Fixed)
}

/// Resolves the [`BlockMap::unresolved`] record of `map` by decoding the stored segment and the
/// next one on its timeline (`next`), and returns the completed map; `Ok(None)` when the next
/// segment is not in the repository or does not complete the record. Reads two segments: a
/// changed-block backup calls it only for the segments of its range that need it.
pub fn resolve_unresolved(
    repo: &Repository,
    map: &BlockMap,
    next: &WalFileName,
) -> Result<Option<BlockMap>> {
    let Some(target) = map.unresolved else {
        return Ok(Some(map.clone()));
    };
    let mut scanner: Option<crate::pg::WalScanner> = None;
    let mut version = None;
    super::stored::decode_stored(repo, &map.name, |frame, hdr| {
        if let Some(h) = hdr {
            let geo = crate::pg::WalGeometry {
                seg_size: h.seg_size,
                blcksz: h.xlog_blcksz,
                version: h.version,
            };
            version = Some(h.version);
            scanner = Some(crate::pg::WalScanner::new(h.page_addr, geo));
        }
        if let Some(s) = scanner.as_mut() {
            s.feed(frame, |_| {});
        }
        Ok(())
    })?;
    let (Some(first), Some(version)) = (scanner, version) else {
        return Ok(None);
    };
    let prev = first.last_record();
    let ScanEnd::Continues(carry) = first.finish().end else {
        return Ok(None);
    };
    if carry.lsn != target {
        return Ok(None);
    }
    let mut out = map.clone();
    let mut found: Option<Result<()>> = None;
    let mut scanner: Option<crate::pg::WalScanner> = None;
    let mut carry = Some(carry);
    super::stored::decode_stored(repo, next, |frame, hdr| {
        if let Some(h) = hdr {
            let geo = crate::pg::WalGeometry {
                seg_size: h.seg_size,
                blcksz: h.xlog_blcksz,
                version: h.version,
            };
            let mut s = crate::pg::WalScanner::new(h.page_addr, geo);
            s.resume(carry.take(), prev);
            scanner = Some(s);
        }
        if let Some(s) = scanner.as_mut()
            && found.is_none()
        {
            s.feed(frame, |rec| {
                if rec.lsn == target && found.is_none() {
                    found = Some(out.add_record(rec, version));
                }
            });
        }
        Ok(())
    })?;
    match found {
        Some(r) => {
            r?;
            out.unresolved = None;
            out.complete = out.error.is_none();
            Ok(Some(out))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn blocks_become_sorted_merged_ranges() {
        let name = WalFileName::parse("000000010000000000000005").unwrap();
        let mut b = BlockMapBuilder::new(name.clone(), Lsn(0x500_0000), PgMajorVersion::V15);
        let r = |rel: u32, fork: u8, block: u32| BlockRef {
            rel: RelFileLocator { spc: 1663, db: 5, rel },
            fork,
            block,
        };
        for x in [r(2, 0, 9), r(2, 0, 9), r(1, 0, 4), r(2, 0, 10), r(2, 0, 8), r(2, 1, 0)] {
            b.push(x);
        }
        for blk in [3, 5, 4, 7, u32::MAX] {
            b.push(r(1, 0, blk));
        }
        let m = b.finish(
            &SegmentScan { end: ScanEnd::Full, skipped_continuation: 0, error: None },
            Lsn(0x600_0000),
        );
        assert!(m.complete);
        assert_eq!(
            m.forks,
            vec![
                ForkBlocks(1663, 5, 1, 0, vec![(3, 5), (7, 7), (u32::MAX, u32::MAX)]),
                ForkBlocks(1663, 5, 2, 0, vec![(8, 10)]),
                ForkBlocks(1663, 5, 2, 1, vec![(0, 0)]),
            ]
        );
        assert_eq!(m.block_refs().count(), 9);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"{"format_version":1,"name":"000000010000000000000005","start":"0/5000000","end":"0/6000000","complete":true,"unresolved":null,"forks":[[1663,5,1,0,[[3,5],[7,7],[4294967295,4294967295]]],[1663,5,2,0,[[8,10]]],[1663,5,2,1,[[0,0]]]]}"#
        );
        assert_eq!(serde_json::from_str::<BlockMap>(&json).unwrap(), m);
    }

    #[test]
    fn which_crossing_records_may_hold_events() {
        assert!(may_carry_events(1, 0x00)); // commit
        assert!(may_carry_events(1, 0x20)); // abort
        assert!(!may_carry_events(1, 0x10)); // prepare
        assert!(may_carry_events(2, 0x20)); // smgr truncate
        assert!(may_carry_events(4, 0x00)); // database
        assert!(!may_carry_events(10, 0x00)); // heap insert
    }
}
