//! The changed-block backup (issue 18, PostgreSQL 13–16): `BASE_BACKUP` still streams every file,
//! and walrs stores, for each file of a relation's main fork that its parent holds, only the
//! blocks the WAL between the parent's start and this backup's start touched, as the same
//! `INCREMENTAL.<name>` file PostgreSQL 17 writes (src/pg/incremental.rs), so the chain restore
//! reconstructs it unchanged. The blocks come from the [block maps](crate::index::blockmap) of
//! the segments in that range.
//!
//! Which files are stored whole follows PostgreSQL 17's `GetFileBackupMethod`
//! (src/backend/backup/basebackup_incremental.c): files that are not relation files, forks other
//! than main (the free space map and visibility map are not fully WAL-logged; init forks),
//! files the parent does not hold, relations created or dropped in the range, databases created
//! or dropped in the range. A truncation in the range makes the truncation block length of the
//! file the smallest length the truncations left (capped by the file's current length); every
//! block at or past it that the file now has is stored.
//!
//! Cross-check: every block walrs skips passes by in the stream anyway, so each one's page LSN is
//! checked (not a sample): a page whose LSN is at or past the parent's start changed although no
//! block map says so. Such a block is stored with the changed ones (the stream passes only once,
//! so the file's other blocks are gone: each of them passed the same check) and the file is
//! named in the log with both LSNs and counted in the manifest.

use std::collections::{HashMap, HashSet};

use crate::error::{Kind, Result, WalrsError};
use crate::index::blockmap::{BlockMap, load_block_map, resolve_unresolved};
use crate::pg::incremental::{BLCKSZ, INCREMENTAL_MAGIC, INCREMENTAL_PREFIX, RELSEG_SIZE};
use crate::pg::{Lsn, RelFileLocator, TimeLineId, WalFileName, WalSegSize, XLogSegNo};
use crate::repo::{BackupManifest, Repository};

use super::tar::TarHeader;

/// The method name of a changed-block backup in the manifest (`incremental_method`).
pub const METHOD_BLOCK_MAP: &str = "walrs-block-map";
/// The method name of a PostgreSQL 17 incremental backup taken from WAL summaries.
pub const METHOD_PG17: &str = "pg17-summaries";

/// Default tablespace and global tablespace oids.
const DEFAULTTABLESPACE_OID: u32 = 1663;
const GLOBALTABLESPACE_OID: u32 = 1664;

/// The most bytes of kept blocks one file may hold in memory while its incremental file is
/// built; a file whose planned blocks need more is stored whole.
pub const MAX_KEPT_BYTES: u64 = 64 << 20;

pub use crate::repo::manifest::BlockMapStats;

/// The union of the block maps of a WAL range, ready to answer "which blocks of this file?".
#[derive(Debug, Default)]
pub struct ChangedPlan {
    parent_start: Lsn,
    /// Changed main-fork blocks per relation: sorted, merged, inclusive ranges.
    changed: HashMap<RelFileLocator, Vec<(u32, u32)>>,
    /// The smallest length a truncation of the main fork left.
    truncated: HashMap<RelFileLocator, u32>,
    /// Relations created or dropped in the range.
    whole_rels: HashSet<RelFileLocator>,
    /// Databases created or dropped in the range.
    whole_dbs: HashSet<u32>,
    /// The files the parent holds: `(archive tablespace oid, path)`, incremental names as the
    /// files they stand for.
    parent_files: HashSet<(Option<u32>, String)>,
    /// Set when every file is to be stored whole.
    all_whole: Option<String>,
    /// What happened.
    pub stats: BlockMapStats,
}

/// How one tar entry is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileMethod {
    /// As streamed.
    Whole,
    /// As `INCREMENTAL.<name>`: the blocks of the file (relative to the segment file) that the
    /// map says changed, below `truncation`; every block from `truncation` on.
    Incremental {
        /// The relation.
        rel: RelFileLocator,
        /// Segment file number (`.N`).
        segno: u32,
        /// Truncation block length.
        truncation: u32,
        /// Changed ranges clipped to this segment file, relative, sorted.
        ranges: Vec<(u32, u32)>,
    },
}

/// `<relnumber>[.<segno>]` of a main fork: the numbers.
fn main_fork_file(name: &str) -> Option<(u32, u32)> {
    let (rel, seg) = match name.split_once('.') {
        Some((r, s)) => (r, s.parse::<u32>().ok()?),
        None => (name, 0),
    };
    if rel.is_empty() || !rel.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((rel.parse().ok()?, seg))
}

/// The relation of a path in archive `archive` (`None`: the main archive), if it is a main
/// fork file: `base/<db>/<rel>[.<n>]`, `global/<rel>[.<n>]`, or `<version dir>/<db>/<rel>[.<n>]`
/// in a tablespace's archive.
pub fn relation_of(archive: Option<u32>, path: &str) -> Option<(RelFileLocator, u32)> {
    let parts: Vec<&str> = path.split('/').collect();
    let (spc, db, file) = match (archive, parts.as_slice()) {
        (None, ["base", db, file]) => (DEFAULTTABLESPACE_OID, db.parse().ok()?, *file),
        (None, ["global", file]) => (GLOBALTABLESPACE_OID, 0, *file),
        (Some(spc), [_version, db, file]) => (spc, db.parse().ok()?, *file),
        _ => return None,
    };
    let (rel, seg) = main_fork_file(file)?;
    Some((RelFileLocator { spc, db, rel }, seg))
}

/// `dir/INCREMENTAL.name` → `dir/name`; other paths unchanged.
pub fn plain_path(path: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, f)) => match f.strip_prefix(INCREMENTAL_PREFIX) {
            Some(n) => format!("{dir}/{n}"),
            None => path.to_owned(),
        },
        None => path.strip_prefix(INCREMENTAL_PREFIX).unwrap_or(path).to_owned(),
    }
}

fn merge(v: &mut Vec<(u32, u32)>) {
    v.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(v.len());
    for &(a, b) in v.iter() {
        match out.last_mut() {
            Some((_, z)) if a <= z.saturating_add(1) => *z = (*z).max(b),
            _ => out.push((a, b)),
        }
    }
    *v = out;
}

impl ChangedPlan {
    /// A plan that stores every file whole, saying why.
    pub fn all_whole(parent: &BackupManifest, why: String) -> Self {
        let mut p = ChangedPlan { parent_start: parent.start_lsn, ..Default::default() };
        p.stats.all_whole = Some(why.clone());
        p.all_whole = Some(why);
        p
    }

    /// Why every file is stored whole, if it is.
    pub fn whole_reason(&self) -> Option<&str> {
        self.all_whole.as_deref()
    }

    /// The plan for a backup starting at `start` on `tli` against `parent`: the block maps of the
    /// segments from the parent's start to the one before `start`'s byte, on one timeline.
    /// Anything that leaves the range not fully covered (another timeline, a segment without a
    /// map, a map that cannot be completed) makes every file whole, saying why.
    pub fn build(
        repo: &Repository,
        parent: &BackupManifest,
        start: Lsn,
        tli: TimeLineId,
        seg: WalSegSize,
    ) -> Result<Self> {
        let mut p = ChangedPlan { parent_start: parent.start_lsn, ..Default::default() };
        for a in &parent.archives {
            for f in &a.files {
                p.parent_files.insert((a.tablespace_oid, plain_path(&f.path)));
            }
        }
        if parent.timeline != tli {
            let why = format!(
                "the parent {} is on timeline {}, this backup on {tli}: a changed-block range across a timeline switch is not supported yet",
                parent.id, parent.timeline
            );
            return Ok(Self::all_whole_keeping(p, why));
        }
        if start <= parent.start_lsn {
            return Ok(Self::all_whole_keeping(
                p,
                format!(
                    "this backup starts at {start}, not after its parent's start {}",
                    parent.start_lsn
                ),
            ));
        }
        let first = parent.start_lsn.segment(seg).0;
        let last = start.saturating_sub(1).segment(seg).0;
        for n in first..=last {
            let name = WalFileName::segment(tli, XLogSegNo(n), seg);
            let map = match load_block_map(repo, &name) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    return Ok(Self::all_whole_keeping(
                        p,
                        format!(
                            "segment {name} has no block map (pushed by an older walrs, or not archived): the range is not covered"
                        ),
                    ));
                }
                Err(e) => {
                    return Ok(Self::all_whole_keeping(
                        p,
                        format!("the block map of {name} cannot be read: {e}"),
                    ));
                }
            };
            let map = if map.unresolved.is_some() {
                let next = WalFileName::segment(tli, XLogSegNo(n + 1), seg);
                match resolve_unresolved(repo, &map, &next) {
                    Ok(Some(m)) => m,
                    Ok(None) | Err(_) => {
                        return Ok(Self::all_whole_keeping(
                            p,
                            format!(
                                "the record of {name} that continues into {next} cannot be decoded from the repository"
                            ),
                        ));
                    }
                }
            } else {
                map
            };
            if !map.complete {
                return Ok(Self::all_whole_keeping(
                    p,
                    format!(
                        "the block map of {name} is incomplete ({})",
                        map.error.as_deref().unwrap_or("unknown reason")
                    ),
                ));
            }
            p.add(&map);
            p.stats.segments += 1;
        }
        for v in p.changed.values_mut() {
            merge(v);
        }
        Ok(p)
    }

    fn all_whole_keeping(mut p: ChangedPlan, why: String) -> Self {
        p.stats.all_whole = Some(why.clone());
        p.all_whole = Some(why);
        p
    }

    fn add(&mut self, m: &BlockMap) {
        for f in &m.forks {
            if f.fork() == 0 {
                self.changed.entry(f.rel()).or_default().extend_from_slice(f.ranges());
            }
        }
        for &(spc, db, rel, _) in &m.creates {
            self.whole_rels.insert(RelFileLocator { spc, db, rel });
        }
        for &(spc, db, rel) in &m.drops {
            self.whole_rels.insert(RelFileLocator { spc, db, rel });
        }
        for &(spc, db, rel, blocks, flags) in &m.truncates {
            if flags & crate::pg::records::SMGR_TRUNCATE_HEAP != 0 {
                let t = self.truncated.entry(RelFileLocator { spc, db, rel }).or_insert(blocks);
                *t = (*t).min(blocks);
            }
        }
        self.whole_dbs.extend(m.db_creates.iter().copied());
        self.whole_dbs.extend(m.db_drops.iter().copied());
    }

    /// How the file `path` of archive `archive`, `size` bytes, is stored.
    pub fn method(&self, archive: Option<u32>, path: &str, size: u64) -> FileMethod {
        if self.all_whole.is_some() {
            return FileMethod::Whole;
        }
        let Some((rel, segno)) = relation_of(archive, path) else {
            return FileMethod::Whole;
        };
        let whole = !size.is_multiple_of(BLCKSZ)
            || size > u64::from(RELSEG_SIZE) * BLCKSZ
            || !self.parent_files.contains(&(archive, path.to_owned()))
            || self.whole_rels.contains(&rel)
            || self.whole_dbs.contains(&rel.db);
        if whole {
            return FileMethod::Whole;
        }
        let nblocks = (size / BLCKSZ) as u32;
        let base = u64::from(segno) * u64::from(RELSEG_SIZE);
        let truncation = match self.truncated.get(&rel) {
            Some(&t) => (u64::from(t).saturating_sub(base)).min(u64::from(nblocks)) as u32,
            None => nblocks,
        };
        let ranges: Vec<(u32, u32)> = self
            .changed
            .get(&rel)
            .map(|v| {
                v.iter()
                    .filter_map(|&(a, b)| {
                        let (a, b) = (u64::from(a), u64::from(b));
                        if b < base || a >= base + u64::from(truncation) {
                            return None;
                        }
                        let lo = a.max(base) - base;
                        let hi = (b - base).min(u64::from(truncation).saturating_sub(1));
                        Some((lo as u32, hi as u32))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let kept: u64 = ranges.iter().map(|(a, b)| u64::from(b - a) + 1).sum::<u64>()
            + u64::from(nblocks - truncation);
        if kept * BLCKSZ > MAX_KEPT_BYTES {
            return FileMethod::Whole;
        }
        FileMethod::Incremental { rel, segno, truncation, ranges }
    }
}

/// Rewrites one archive's tar stream as it passes: entries the plan makes incremental become
/// `INCREMENTAL.<name>` entries; every other byte passes unchanged. Fed in arbitrary pieces;
/// holds at most one header, one block and the kept blocks of the current file.
pub struct TarRewriter<'p> {
    plan: &'p mut ChangedPlan,
    archive: Option<u32>,
    state: State,
    header: Vec<u8>,
    /// The previous entry modifies the next one (GNU long name, pax): pass the next unchanged.
    glued: bool,
    ended: bool,
}

enum State {
    /// Expecting a header.
    Header,
    /// Passing `n` more bytes (data and padding) unchanged.
    Pass(u64),
    /// Reading the data of a file stored as incremental.
    Incr(Box<IncrFile>),
}

struct IncrFile {
    header: Vec<u8>,
    path: String,
    size: u64,
    read: u64,
    padding: u64,
    block: Vec<u8>,
    blockno: u32,
    truncation: u32,
    ranges: Vec<(u32, u32)>,
    range_at: usize,
    kept_numbers: Vec<u32>,
    kept: Vec<u8>,
    mismatches: u64,
    first_mismatch: Option<(u32, Lsn)>,
}

impl<'p> TarRewriter<'p> {
    /// A rewriter of the archive of tablespace `archive` (`None`: the main one).
    pub fn new(plan: &'p mut ChangedPlan, archive: Option<u32>) -> Self {
        TarRewriter {
            plan,
            archive,
            state: State::Header,
            header: Vec::new(),
            glued: false,
            ended: false,
        }
    }

    /// Takes the next bytes of the stream and appends what to store to `out`.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        while !data.is_empty() {
            if self.ended {
                out.extend_from_slice(data);
                return Ok(());
            }
            match &mut self.state {
                State::Pass(n) => {
                    let take = (*n).min(data.len() as u64) as usize;
                    out.extend_from_slice(data.get(..take).unwrap_or_default());
                    data = data.get(take..).unwrap_or_default();
                    *n -= take as u64;
                    if *n == 0 {
                        self.state = State::Header;
                    }
                }
                State::Header => {
                    let take = (512 - self.header.len()).min(data.len());
                    self.header.extend_from_slice(data.get(..take).unwrap_or_default());
                    data = data.get(take..).unwrap_or_default();
                    if self.header.len() == 512 {
                        let h = std::mem::take(&mut self.header);
                        self.start_entry(h, out);
                    }
                }
                State::Incr(f) => {
                    let (take, full) = if f.read < f.size {
                        let want = (BLCKSZ as usize - f.block.len()).min(data.len());
                        f.block.extend_from_slice(data.get(..want).unwrap_or_default());
                        f.read += want as u64;
                        (want, f.block.len() == BLCKSZ as usize)
                    } else {
                        let want = f.padding.min(data.len() as u64) as usize;
                        f.padding -= want as u64;
                        (want, false)
                    };
                    data = data.get(take..).unwrap_or_default();
                    if full {
                        self.plan_block();
                    }
                    if let State::Incr(f) = &self.state
                        && f.read == f.size
                        && f.padding == 0
                        && f.block.is_empty()
                    {
                        self.finish_file(out)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn start_entry(&mut self, h: Vec<u8>, out: &mut Vec<u8>) {
        let Some(th) = TarHeader::parse(&h) else {
            // End of archive (zeros) or something walrs does not rewrite: pass the rest.
            out.extend_from_slice(&h);
            self.ended = true;
            return;
        };
        let glued =
            std::mem::replace(&mut self.glued, matches!(th.typeflag, b'L' | b'K' | b'x' | b'g'));
        let method = if th.is_file() && !glued && h.get(345..346) == Some(&[0u8][..]) {
            self.plan.method(self.archive, &th.path, th.size)
        } else {
            FileMethod::Whole
        };
        if matches!(method, FileMethod::Whole)
            && th.is_file()
            && relation_of(self.archive, &th.path).is_some()
        {
            self.plan.stats.relation_files_whole += 1;
        }
        match method {
            FileMethod::Incremental { truncation, ranges, .. } if th.size > 0 => {
                let padding = th.padded_size() - th.size;
                self.state = State::Incr(Box::new(IncrFile {
                    header: h,
                    path: th.path,
                    size: th.size,
                    read: 0,
                    padding,
                    block: Vec::with_capacity(BLCKSZ as usize),
                    blockno: 0,
                    truncation,
                    ranges,
                    range_at: 0,
                    kept_numbers: Vec::new(),
                    kept: Vec::new(),
                    mismatches: 0,
                    first_mismatch: None,
                }));
            }
            _ => {
                out.extend_from_slice(&h);
                let n = th.padded_size();
                self.state = if n > 0 { State::Pass(n) } else { State::Header };
            }
        }
    }

    /// Decides the block just completed: kept (changed, at or past the truncation length, or
    /// failing the cross-check) or skipped.
    fn plan_block(&mut self) {
        let parent_start = self.plan.parent_start;
        let State::Incr(f) = &mut self.state else { return };
        let b = f.blockno;
        while f.ranges.get(f.range_at).is_some_and(|&(_, z)| z < b) {
            f.range_at += 1;
        }
        let changed = f.ranges.get(f.range_at).is_some_and(|&(a, _)| a <= b);
        let mut keep = changed || b >= f.truncation;
        if !keep {
            let lsn = page_lsn(&f.block);
            if lsn >= parent_start {
                keep = true;
                f.mismatches += 1;
                f.first_mismatch.get_or_insert((b, lsn));
            }
        }
        if keep {
            f.kept_numbers.push(b);
            f.kept.extend_from_slice(&f.block);
        } else {
            self.plan.stats.blocks_skipped += 1;
        }
        f.block.clear();
        f.blockno += 1;
    }

    fn finish_file(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let State::Incr(f) = std::mem::replace(&mut self.state, State::Header) else {
            return Ok(());
        };
        if f.mismatches > 0 {
            let (b, lsn) = f.first_mismatch.unwrap_or((0, Lsn(0)));
            tracing::warn!(
                "{}: the block maps say {} block(s) did not change since the parent's start {}, but their page LSNs say they did (block {b}: page LSN {lsn}); they are stored",
                f.path,
                f.mismatches,
                self.plan.parent_start
            );
            self.plan.stats.cross_check_mismatches += f.mismatches;
        }
        let n = f.kept_numbers.len() as u32;
        let mut body = Vec::with_capacity(12 + 4 * f.kept_numbers.len());
        body.extend_from_slice(&INCREMENTAL_MAGIC.to_le_bytes());
        body.extend_from_slice(&n.to_le_bytes());
        body.extend_from_slice(&f.truncation.to_le_bytes());
        for k in &f.kept_numbers {
            body.extend_from_slice(&k.to_le_bytes());
        }
        if n > 0 {
            body.resize(body.len().div_ceil(BLCKSZ as usize) * BLCKSZ as usize, 0);
        }
        let size = body.len() as u64 + f.kept.len() as u64;
        let header = incremental_header(&f.header, &f.path, size).ok_or_else(|| {
            WalrsError::new(
                Kind::Internal,
                format!("{}: cannot write its incremental tar header", f.path),
            )
        })?;
        out.extend_from_slice(&header);
        out.extend_from_slice(&body);
        out.extend_from_slice(&f.kept);
        let pad = size.div_ceil(512) * 512 - size;
        out.resize(out.len() + pad as usize, 0);
        self.plan.stats.files_incremental += 1;
        self.plan.stats.blocks_stored += u64::from(n);
        Ok(())
    }

    /// After the stream's end: nothing may be left half read.
    pub fn finish(&self) -> Result<()> {
        match (&self.state, self.header.is_empty()) {
            (State::Header, true) | (State::Pass(0), _) => Ok(()),
            _ => Err(WalrsError::new(Kind::Io, "the server's archive ended inside an entry")),
        }
    }
}

/// `pd_lsn` of a page: its first 8 bytes (`xlogid`, `xrecoff`).
fn page_lsn(block: &[u8]) -> Lsn {
    let hi = crate::bytes::u32_at(block, 0).unwrap_or(0);
    let lo = crate::bytes::u32_at(block, 4).unwrap_or(0);
    Lsn((u64::from(hi) << 32) | u64::from(lo))
}

/// The ustar header `orig` renamed to `dir/INCREMENTAL.<name>` with `size` bytes of data, its
/// checksum recomputed; `None` when the name does not fit the 100-byte name field.
fn incremental_header(orig: &[u8], path: &str, size: u64) -> Option<Vec<u8>> {
    let new_path = match path.rsplit_once('/') {
        Some((dir, f)) => format!("{dir}/{INCREMENTAL_PREFIX}{f}"),
        None => format!("{INCREMENTAL_PREFIX}{path}"),
    };
    if new_path.len() > 100 || size >= 1 << 33 {
        return None;
    }
    let mut h = orig.get(..512)?.to_vec();
    h.get_mut(0..100)?.fill(0);
    h.get_mut(0..new_path.len())?.copy_from_slice(new_path.as_bytes());
    h.get_mut(124..136)?.copy_from_slice(format!("{size:011o}\0").as_bytes());
    h.get_mut(148..156)?.copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|c| u64::from(*c)).sum();
    h.get_mut(148..156)?.copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Some(h)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn relation_files_are_recognised() {
        let r = |spc, db, rel| RelFileLocator { spc, db, rel };
        assert_eq!(relation_of(None, "base/5/16384"), Some((r(1663, 5, 16384), 0)));
        assert_eq!(relation_of(None, "base/5/16384.2"), Some((r(1663, 5, 16384), 2)));
        assert_eq!(relation_of(None, "global/1262"), Some((r(1664, 0, 1262), 0)));
        assert_eq!(
            relation_of(Some(16390), "PG_15_202209061/5/16391"),
            Some((r(16390, 5, 16391), 0))
        );
        for other in [
            "base/5/16384_fsm",
            "base/5/16384_vm",
            "base/5/16384_init",
            "base/5/PG_VERSION",
            "base/5/pg_filenode.map",
            "global/pg_control",
            "pg_xact/0000",
            "base/5/t3_16384",
        ] {
            assert_eq!(relation_of(None, other), None, "{other}");
        }
        assert_eq!(plain_path("base/5/INCREMENTAL.16384.1"), "base/5/16384.1");
    }

    /// A tar of one relation file of 4 blocks (page LSNs 1, 2, 3, 4 GB) and a small other file,
    /// rewritten against a parent that started at 2/0 with block 1 in the map: blocks 1 (map)
    /// and 2, 3 (page LSN at or past the parent's start: the cross-check) are stored.
    #[test]
    fn a_relation_file_becomes_an_incremental_file_in_any_pieces() {
        fn header(path: &str, size: u64) -> Vec<u8> {
            let mut h = vec![0u8; 512];
            h[..path.len()].copy_from_slice(path.as_bytes());
            h[100..107].copy_from_slice(b"0000600");
            h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
            h[156] = b'0';
            h[257..263].copy_from_slice(b"ustar\0");
            h[148..156].copy_from_slice(b"        ");
            let sum: u64 = h.iter().map(|c| u64::from(*c)).sum();
            h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
            h
        }
        let mut tar = header("base/5/16384", 4 * BLCKSZ);
        for i in 0..4u32 {
            let mut b = vec![i as u8 + 1; BLCKSZ as usize];
            b[..4].copy_from_slice(&i.to_le_bytes()); // xlogid: page LSN i/0
            b[4..8].copy_from_slice(&0u32.to_le_bytes());
            tar.extend_from_slice(&b);
        }
        tar.extend_from_slice(&header("PG_VERSION", 3));
        tar.extend_from_slice(b"15\n");
        tar.resize(tar.len() + 509, 0);
        tar.resize(tar.len() + 1024, 0);
        for piece in [1usize, 7, 512, 5000, 1 << 20] {
            let mut plan = ChangedPlan { parent_start: Lsn(2 << 32), ..Default::default() };
            let rel = RelFileLocator { spc: 1663, db: 5, rel: 16384 };
            plan.changed.insert(rel, vec![(1, 1)]);
            plan.parent_files.insert((None, "base/5/16384".into()));
            let mut out = Vec::new();
            let mut w = TarRewriter::new(&mut plan, None);
            for c in tar.chunks(piece) {
                w.feed(c, &mut out).unwrap();
            }
            w.finish().unwrap();
            let h = TarHeader::parse(&out[..512]).unwrap();
            assert_eq!(h.path, "base/5/INCREMENTAL.16384");
            assert_eq!(h.size, BLCKSZ + 3 * BLCKSZ);
            let u = |at: usize| u32::from_le_bytes(out[512 + at..512 + at + 4].try_into().unwrap());
            assert_eq!((u(0), u(4), u(8), u(12), u(16), u(20)), (INCREMENTAL_MAGIC, 3, 4, 1, 2, 3));
            let data = 512 + BLCKSZ as usize;
            assert_eq!(out[data + 100], 2);
            assert_eq!(out[data + 2 * BLCKSZ as usize + 100], 4);
            let next = data + 3 * BLCKSZ as usize;
            assert_eq!(TarHeader::parse(&out[next..next + 512]).unwrap().path, "PG_VERSION");
            assert_eq!(&out[next + 512..next + 515], b"15\n");
            assert_eq!(out.len(), next + 1024 + 1024);
            assert_eq!(plan.stats.files_incremental, 1);
            assert_eq!(plan.stats.blocks_stored, 3);
            assert_eq!(plan.stats.blocks_skipped, 1);
            assert_eq!(plan.stats.cross_check_mismatches, 2);
        }
    }

    #[test]
    fn truncation_and_whole_rules() {
        let rel = RelFileLocator { spc: 1663, db: 5, rel: 16384 };
        let mut plan = ChangedPlan { parent_start: Lsn(1), ..Default::default() };
        plan.parent_files.insert((None, "base/5/16384".into()));
        plan.changed.insert(rel, vec![(0, 0), (5, 9)]);
        plan.truncated.insert(rel, 7);
        match plan.method(None, "base/5/16384", 10 * BLCKSZ) {
            FileMethod::Incremental { truncation, ranges, .. } => {
                assert_eq!(truncation, 7);
                assert_eq!(ranges, vec![(0, 0), (5, 6)]);
            }
            w => panic!("{w:?}"),
        }
        // Not in the parent; an odd size; a created relation; a created database.
        assert_eq!(plan.method(None, "base/5/16385", BLCKSZ), FileMethod::Whole);
        assert_eq!(plan.method(None, "base/5/16384", 100), FileMethod::Whole);
        plan.whole_dbs.insert(5);
        assert_eq!(plan.method(None, "base/5/16384", BLCKSZ), FileMethod::Whole);
        plan.whole_dbs.clear();
        plan.whole_rels.insert(rel);
        assert_eq!(plan.method(None, "base/5/16384", BLCKSZ), FileMethod::Whole);
    }
}
