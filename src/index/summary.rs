//! Building a segment's summary from its records: the LSN range, commit and abort counts, times
//! and xids, restore points, checkpoints, backup ends, timeline ends, how the segment ends, and
//! the first problem the decoder found.

use serde::{Deserialize, Serialize};

use super::blockmap::{BlockMap, BlockMapBuilder};
use crate::pg::records::interpret;
use crate::pg::{
    LongPageHeader, Lsn, Record, RecordKind, ScanEnd, SegmentScan, TimeLineId, WalFileKind,
    WalFileName, WalGeometry, WalScanner, WalSegSize, XLogSegNo,
};

/// How the valid WAL of a segment ends.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EndKind {
    /// An `XLOG_SWITCH` record; the rest is unused.
    Switch,
    /// The last record ends exactly at the segment end.
    Full,
    /// The last record continues into the next segment.
    Continues,
    /// Valid WAL ends inside the segment (a `.partial` segment, or a damaged one).
    EndOfWal,
}

/// A restore point.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RestorePointEntry {
    /// Its name.
    pub name: String,
    /// Its record.
    pub lsn: Lsn,
    /// When it was created (Unix microseconds).
    pub time_us: i64,
}

/// A checkpoint record.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CheckpointEntry {
    /// The record.
    pub lsn: Lsn,
    /// Its redo pointer.
    pub redo: Lsn,
    /// A shutdown checkpoint.
    pub shutdown: bool,
}

/// The end of a base backup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BackupEndEntry {
    /// The record.
    pub lsn: Lsn,
    /// The backup's start.
    pub start: Lsn,
}

/// The end of a recovery that started a timeline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EndOfRecoveryEntry {
    /// The record.
    pub lsn: Lsn,
    /// The new timeline.
    pub tli: TimeLineId,
    /// The timeline it branched from.
    pub prev_tli: TimeLineId,
    /// When (Unix microseconds).
    pub time_us: i64,
}

/// The summary of one archived segment (docs/format/index.md).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    /// Format version.
    pub format_version: u32,
    /// The WAL file name (segment or `.partial`).
    pub name: WalFileName,
    /// Timeline in the name.
    pub timeline: TimeLineId,
    /// Segment number.
    pub segno: XLogSegNo,
    /// LSN of the segment's first byte.
    pub start: Lsn,
    /// Segment size.
    pub seg_size: WalSegSize,
    /// The first record that starts in the segment.
    pub first_record: Option<Lsn>,
    /// The last record that starts in the segment and ends in it (or in the next).
    pub last_record: Option<Lsn>,
    /// The end of valid WAL in the segment.
    pub end: Lsn,
    /// How it ends.
    pub end_kind: EndKind,
    /// Bytes at the start that continue a record of the previous segment.
    pub continuation: u64,
    /// The prev-link of the first record that starts here.
    pub first_prev: Option<Lsn>,
    /// Records read.
    pub records: u64,
    /// Commit records (prepared included).
    pub commits: u64,
    /// Abort records (prepared included).
    pub aborts: u64,
    /// The first and last commit or abort time (Unix microseconds).
    pub first_xact_time_us: Option<i64>,
    /// See `first_xact_time_us`.
    pub last_xact_time_us: Option<i64>,
    /// The smallest and largest xid that committed or aborted here.
    pub min_xid: Option<u32>,
    /// See `min_xid`.
    pub max_xid: Option<u32>,
    /// Every xid that committed or aborted here (only in per-segment summaries, not roll-ups).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xids: Vec<u32>,
    /// The LSN of the commit or abort record of each of `xids`, in the same order (only in
    /// per-segment summaries; absent from summaries of older walrs versions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xid_lsns: Vec<Lsn>,
    /// Restore points.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_points: Vec<RestorePointEntry>,
    /// Checkpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoints: Vec<CheckpointEntry>,
    /// Backup ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backup_ends: Vec<BackupEndEntry>,
    /// Timeline ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub end_of_recovery: Vec<EndOfRecoveryEntry>,
    /// The first problem found decoding the segment (a damaged record, a bad page header).
    pub error: Option<String>,
    /// The content digest of the stored WAL object this summary describes.
    pub content_digest: String,
    /// The segment's block map, built by the same scan ([`SegmentIndexer`]): not part of the
    /// summary's serialized form but its own object, which [`super::store_summary`] writes
    /// before the summary.
    #[serde(skip)]
    pub block_map: Option<Box<BlockMap>>,
}

impl SegmentSummary {
    /// Whether this summarises a `.partial` segment (PostgreSQL's restore_command never asks
    /// for one).
    pub fn is_partial(&self) -> bool {
        self.name.kind() == WalFileKind::Partial
    }

    /// The LSN just past the segment: the start of the next one.
    pub fn segment_end(&self) -> Lsn {
        self.start.saturating_add(self.seg_size.bytes())
    }
}

/// Accumulates a summary from records as the segment is scanned.
pub struct SummaryBuilder {
    s: SegmentSummary,
    geo: WalGeometry,
    last_end: Option<Lsn>,
}

impl SummaryBuilder {
    /// A builder for `name`, whose long page header is `hdr`.
    pub fn new(name: &WalFileName, hdr: &LongPageHeader) -> Self {
        let geo =
            WalGeometry { seg_size: hdr.seg_size, blcksz: hdr.xlog_blcksz, version: hdr.version };
        SummaryBuilder {
            geo,
            last_end: None,
            s: SegmentSummary {
                format_version: super::FORMAT_VERSION,
                name: name.clone(),
                timeline: name.timeline(),
                segno: hdr.segno(),
                start: hdr.page_addr,
                seg_size: hdr.seg_size,
                first_record: None,
                last_record: None,
                end: hdr.page_addr,
                end_kind: EndKind::EndOfWal,
                continuation: 0,
                first_prev: None,
                records: 0,
                commits: 0,
                aborts: 0,
                first_xact_time_us: None,
                last_xact_time_us: None,
                min_xid: None,
                max_xid: None,
                xids: Vec::new(),
                xid_lsns: Vec::new(),
                restore_points: Vec::new(),
                checkpoints: Vec::new(),
                backup_ends: Vec::new(),
                end_of_recovery: Vec::new(),
                error: None,
                content_digest: String::new(),
                block_map: None,
            },
        }
    }

    /// The geometry to scan with.
    pub fn geometry(&self) -> WalGeometry {
        self.geo
    }

    /// Takes one record into account.
    pub fn observe(&mut self, rec: &Record<'_>) {
        let s = &mut self.s;
        if rec.lsn < s.start {
            return; // the end of a record carried over from the previous segment
        }
        if s.first_record.is_none() {
            s.first_record = Some(rec.lsn);
            s.first_prev = Some(rec.header.prev);
        }
        s.last_record = Some(rec.lsn);
        self.last_end = Some(rec.end);
        s.records += 1;
        let kind = match interpret(rec, self.geo.version) {
            Ok(k) => k,
            Err(e) => {
                if s.error.is_none() {
                    s.error = Some(e.to_string());
                }
                return;
            }
        };
        let lsn = rec.lsn;
        let xact = |s: &mut SegmentSummary, xid: u32, us: i64| {
            s.first_xact_time_us.get_or_insert(us);
            s.last_xact_time_us = Some(us);
            s.min_xid = Some(s.min_xid.map_or(xid, |m| m.min(xid)));
            s.max_xid = Some(s.max_xid.map_or(xid, |m| m.max(xid)));
            s.xids.push(xid);
            s.xid_lsns.push(lsn);
        };
        match kind {
            RecordKind::Commit { xid, time, .. } => {
                s.commits += 1;
                xact(s, xid, time.unix_micros());
            }
            RecordKind::Abort { xid, time, .. } => {
                s.aborts += 1;
                xact(s, xid, time.unix_micros());
            }
            RecordKind::RestorePoint { name, time } => s.restore_points.push(RestorePointEntry {
                name,
                lsn: rec.lsn,
                time_us: time.unix_micros(),
            }),
            RecordKind::Checkpoint { redo, shutdown } => {
                s.checkpoints.push(CheckpointEntry { lsn: rec.lsn, redo, shutdown })
            }
            RecordKind::BackupEnd { start } => {
                s.backup_ends.push(BackupEndEntry { lsn: rec.lsn, start })
            }
            RecordKind::EndOfRecovery { tli, prev_tli, time } => {
                s.end_of_recovery.push(EndOfRecoveryEntry {
                    lsn: rec.lsn,
                    tli,
                    prev_tli,
                    time_us: time.unix_micros(),
                })
            }
            RecordKind::Switch | RecordKind::Other => {}
        }
    }

    /// The summary, given how the scan ended and the stored object's digest.
    pub fn finish(mut self, scan: &SegmentScan, content_digest: String) -> SegmentSummary {
        let last_end = self.last_end;
        let s = &mut self.s;
        s.continuation = scan.skipped_continuation;
        let seg_end = s.segment_end();
        (s.end_kind, s.end) = match &scan.end {
            ScanEnd::Switch(_) => (EndKind::Switch, last_end.unwrap_or(s.start)),
            ScanEnd::Full => (EndKind::Full, seg_end),
            ScanEnd::Continues(_) => (EndKind::Continues, seg_end),
            ScanEnd::EndOfWal(l) => (EndKind::EndOfWal, *l),
        };
        if let Some(e) = &scan.error
            && s.error.is_none()
        {
            s.error = Some(e.to_string());
        }
        s.content_digest = content_digest;
        self.s
    }
}

/// Scans a segment fed frame by frame and builds its summary and its block map.
pub struct SegmentIndexer {
    scanner: WalScanner,
    builder: SummaryBuilder,
    blocks: BlockMapBuilder,
}

impl SegmentIndexer {
    /// An indexer for `name`, whose long page header is `hdr`.
    pub fn new(name: &WalFileName, hdr: &LongPageHeader) -> Self {
        let builder = SummaryBuilder::new(name, hdr);
        let blocks = BlockMapBuilder::new(name.clone(), hdr.page_addr, hdr.version);
        SegmentIndexer {
            scanner: WalScanner::new(hdr.page_addr, builder.geometry()),
            builder,
            blocks,
        }
    }

    /// Feeds the next bytes of the segment (consecutive, page-aligned chunks).
    pub fn feed(&mut self, chunk: &[u8]) {
        let b = &mut self.builder;
        let m = &mut self.blocks;
        self.scanner.feed(chunk, |r| {
            b.observe(r);
            m.observe(r);
        });
    }

    /// The summary of what was fed, carrying the segment's block map.
    pub fn finish(self, content_digest: String) -> SegmentSummary {
        let scan = self.scanner.finish();
        let mut s = self.builder.finish(&scan, content_digest);
        s.block_map = Some(Box::new(self.blocks.finish(&scan, s.end)));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::GroupRollup;

    /// A summary exactly as walrs wrote it before the newtypes (every field populated).
    const SUMMARY: &str = r#"{"format_version":1,"name":"000000020000000A0000003F","timeline":2,"segno":2623,"start":"A/3F000000","seg_size":16777216,"first_record":"A/3F000028","last_record":"A/3FFFFF00","end":"A/40000000","end_kind":"continues","continuation":40,"first_prev":"A/3EFFFFD0","records":1234,"commits":5,"aborts":1,"first_xact_time_us":1795269787000000,"last_xact_time_us":1795269788000000,"min_xid":700,"max_xid":705,"xids":[700,705],"xid_lsns":["A/3F000100","A/3F000200"],"restore_points":[{"name":"daily","lsn":"A/3F000300","time_us":1795269787500000}],"checkpoints":[{"lsn":"A/3F000400","redo":"A/3F000380","shutdown":false}],"backup_ends":[{"lsn":"A/3F000500","start":"A/3E000028"}],"end_of_recovery":[{"lsn":"A/3F000028","tli":2,"prev_tli":1,"time_us":1795269786000000}],"error":null,"content_digest":"xxh3:0123456789abcdef0123456789abcdef"}"#;

    /// A roll-up as walrs wrote it before the newtypes: a full segment and a `.partial` one,
    /// without xid lists, optional fields empty.
    const ROLLUP: &str = r#"{"format_version":1,"group":"000000020000000A","segments":{"000000020000000A0000003F":{"format_version":1,"name":"000000020000000A0000003F","timeline":2,"segno":2623,"start":"A/3F000000","seg_size":16777216,"first_record":"A/3F000028","last_record":"A/3FFFFF00","end":"A/40000000","end_kind":"full","continuation":0,"first_prev":"A/3EFFFFD0","records":1234,"commits":5,"aborts":1,"first_xact_time_us":1795269787000000,"last_xact_time_us":1795269788000000,"min_xid":700,"max_xid":705,"error":null,"content_digest":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},"000000020000000A00000040.partial":{"format_version":1,"name":"000000020000000A00000040.partial","timeline":2,"segno":2624,"start":"A/40000000","seg_size":16777216,"first_record":null,"last_record":null,"end":"A/40000000","end_kind":"end_of_wal","continuation":0,"first_prev":null,"records":0,"commits":0,"aborts":0,"first_xact_time_us":null,"last_xact_time_us":null,"min_xid":null,"max_xid":null,"error":"invalid WAL page header at A/40000000: zeroed","content_digest":"xxh3:00000000000000000000000000000000"}}}"#;

    /// [`ROLLUP`] as walrs writes it since the roll-up digest: the same bytes with the digest of
    /// its two segments before them (the `.partial` one flagged partial and damaged, 3).
    const ROLLUP_WITH_DIGEST_HEAD: &str = r#"{"format_version":1,"group":"000000020000000A","digest":{"v":1,"timeline":2,"seg_size":16777216,"segments":[[2623,44006637568,44023414784,5,1,1795269787000000,1795269788000000,0],[2624,44023414784,44023414784,0,0,null,null,3]]},"segments":"#;

    /// Stored index objects keep their bytes: what an earlier walrs wrote parses, and writes
    /// back identically (as `write_json` writes it: compact JSON), also through the
    /// `serde_json::Value` that `read_json` parses first; a roll-up is written back with its
    /// digest added before its segments, the rest byte for byte.
    #[test]
    fn stored_summaries_and_rollups_keep_their_serde_form() {
        let s: SegmentSummary = serde_json::from_str(SUMMARY).unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), SUMMARY);
        let v: serde_json::Value = serde_json::from_str(SUMMARY).unwrap();
        let s2: SegmentSummary = serde_json::from_value(v).unwrap();
        assert_eq!(s2, s);
        let r: GroupRollup = serde_json::from_str(ROLLUP).unwrap();
        assert_eq!(r.segments.len(), 2);
        let with_digest = ROLLUP.replacen(
            r#"{"format_version":1,"group":"000000020000000A","segments":"#,
            ROLLUP_WITH_DIGEST_HEAD,
            1,
        );
        assert_ne!(with_digest, ROLLUP);
        assert_eq!(serde_json::to_string(&r).unwrap(), with_digest);
        let v: serde_json::Value = serde_json::from_str(ROLLUP).unwrap();
        let r2: GroupRollup = serde_json::from_value(v).unwrap();
        assert_eq!(serde_json::to_string(&r2).unwrap(), with_digest);
        // Read back, the digest is ignored: the roll-up is its segments.
        let r3: GroupRollup = serde_json::from_str(&with_digest).unwrap();
        assert_eq!(serde_json::to_string(&r3).unwrap(), with_digest);
        let old = crate::index::RollupWithoutDigest::from(r3);
        assert_eq!(serde_json::to_string(&old).unwrap(), ROLLUP);
    }
}
