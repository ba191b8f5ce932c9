//! The WAL index (docs/format/index.md): a small summary object per archived segment, built from
//! the WAL itself while `push` streams the segment, and per-group roll-ups that readers keep up to
//! date, so "what is in the archive?" reads a handful of objects instead of listing millions.
//!
//! Ordering (docs/invariants.md): a summary is written only after its WAL object is durable, and a
//! summary is a cache: readers never trust one whose WAL object is missing (`wal verify` checks),
//! and every summary and roll-up can be rebuilt from the stored segments (`wal index --rebuild`).

pub mod blockmap;
mod stored;
pub mod summary;
pub mod verify;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codec::Compression;
use crate::error::{Kind, Result, WalrsError};
use crate::pg::{Lsn, TimeLineId, WalFileName, WalSegSize, XLogSegNo};
use crate::repo::{Fixed, Grouped, JsonObject, Listed, RepoObject, Repository, Write, layout};
use crate::storage::ObjectKey;

pub use summary::{EndKind, SegmentIndexer, SegmentSummary, SummaryBuilder};

/// Format version of summaries and roll-ups.
pub const FORMAT_VERSION: u32 = 1;

/// All summaries of one group (timeline + xlogid: 4 GiB of WAL), without the xid lists.
///
/// Written with a [digest](RollupDigest) of its segments before them (docs/format/index.md,
/// "Roll-up digest"), computed from `segments` each time it is serialized, so a stored digest is
/// always the one of the segments stored beside it. Read back, the digest is ignored (it is
/// derived): only [`load_briefs`] reads it, instead of the segments.
#[derive(Deserialize, Clone, Debug, Default)]
pub struct GroupRollup {
    /// Format version.
    pub format_version: u32,
    /// The group (first 16 characters of the segment names).
    pub group: String,
    /// Summaries by segment name.
    pub segments: BTreeMap<WalFileName, SegmentSummary>,
}

impl Serialize for GroupRollup {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let digest = RollupDigest::of(&self.group, &self.segments);
        let mut m = s.serialize_struct("GroupRollup", 3 + usize::from(digest.is_some()))?;
        m.serialize_field("format_version", &self.format_version)?;
        m.serialize_field("group", &self.group)?;
        match &digest {
            Some(d) => m.serialize_field("digest", d)?,
            None => m.skip_field("digest")?,
        }
        m.serialize_field("segments", &self.segments)?;
        m.end()
    }
}

/// Version of the [`RollupDigest`] layout: a reader uses a digest of this version only, and
/// reads the roll-up's segments for any other.
pub const DIGEST_VERSION: u32 = 1;

/// What [`load_briefs`] needs of a roll-up's segments, compactly, stored inside the roll-up
/// before its segments (the `digest` field): one array of numbers per segment, the names rebuilt
/// from the timeline and segment numbers. Written only when every segment's name is the one
/// its timeline, segment number and segment size give (with `.partial` for a partial file) and
/// every segment has the roll-up's timeline and segment size; otherwise the roll-up has no
/// digest and readers parse its segments.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct RollupDigest {
    /// [`DIGEST_VERSION`].
    pub v: u32,
    /// The timeline of every segment.
    pub timeline: TimeLineId,
    /// The segment size of every segment.
    pub seg_size: WalSegSize,
    /// One entry per segment, in the roll-up's order.
    pub segments: Vec<DigestEntry>,
}

/// One segment in a [`RollupDigest`], stored as a JSON array: segment number, start and end
/// LSN (as integers), commits, aborts, first and last xact time (Unix microseconds or `null`),
/// flags (1: a `.partial` file, 2: damaged, `error` set).
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Copy)]
pub struct DigestEntry(
    pub u64,
    pub u64,
    pub u64,
    pub u64,
    pub u64,
    pub Option<i64>,
    pub Option<i64>,
    pub u8,
);

const DIGEST_PARTIAL: u8 = 1;
const DIGEST_DAMAGED: u8 = 2;

impl RollupDigest {
    /// The digest of the segments of roll-up `group`; `None` when a segment does not fit it
    /// (its name is not the one the digest would rebuild, or its timeline or segment size
    /// differs from the others').
    pub fn of(group: &str, segments: &BTreeMap<WalFileName, SegmentSummary>) -> Option<Self> {
        let first = segments.values().next()?;
        let (timeline, seg_size) = (first.timeline, first.seg_size);
        let mut out = Vec::with_capacity(segments.len());
        for (key, s) in segments {
            let partial = match s.name.kind() {
                crate::pg::WalFileKind::Segment => false,
                crate::pg::WalFileKind::Partial => true,
                _ => return None,
            };
            let rebuilt = digest_name(timeline, s.segno, seg_size, partial);
            if key != &s.name
                || s.timeline != timeline
                || s.seg_size != seg_size
                || rebuilt != s.name
                || s.name.group() != Some(group)
            {
                return None;
            }
            let flags = if partial { DIGEST_PARTIAL } else { 0 }
                | if s.error.is_some() { DIGEST_DAMAGED } else { 0 };
            out.push(DigestEntry(
                s.segno.0,
                s.start.0,
                s.end.0,
                s.commits,
                s.aborts,
                s.first_xact_time_us,
                s.last_xact_time_us,
                flags,
            ));
        }
        Some(RollupDigest { v: DIGEST_VERSION, timeline, seg_size, segments: out })
    }

    /// The briefs the digest describes, as [`GroupBrief`] would read them from the segments of
    /// roll-up `group`; `None` when the digest is of another version or names a segment outside
    /// the group (the roll-up is then read in full).
    pub fn briefs(&self, group: &str) -> Option<Vec<SegmentBrief>> {
        if self.v != DIGEST_VERSION {
            return None;
        }
        let mut out = Vec::with_capacity(self.segments.len());
        for &DigestEntry(segno, start, end, commits, aborts, first, last, flags) in &self.segments {
            if flags & !(DIGEST_PARTIAL | DIGEST_DAMAGED) != 0 {
                return None;
            }
            let name = digest_name(
                self.timeline,
                XLogSegNo(segno),
                self.seg_size,
                flags & DIGEST_PARTIAL != 0,
            );
            if name.group() != Some(group) {
                return None;
            }
            out.push(SegmentBrief {
                name,
                timeline: self.timeline,
                segno: XLogSegNo(segno),
                start: Lsn(start),
                end: Lsn(end),
                commits,
                aborts,
                first_xact_time_us: first,
                last_xact_time_us: last,
                damaged: flags & DIGEST_DAMAGED != 0,
            });
        }
        Some(out)
    }
}

fn digest_name(tli: TimeLineId, segno: XLogSegNo, seg: WalSegSize, partial: bool) -> WalFileName {
    if partial {
        WalFileName::partial_segment(tli, segno, seg)
    } else {
        WalFileName::segment(tli, segno, seg)
    }
}

/// The digest of a stored roll-up, read without parsing its segments: the document must open
/// exactly as walrs writes it, `{"format_version":1,"group":"<group>","digest":`, and the digest
/// must be of [`DIGEST_VERSION`]; `None` otherwise (the caller parses the whole roll-up).
fn stored_digest(group: &str, bytes: &[u8]) -> Option<Vec<SegmentBrief>> {
    let head = format!("{{\"format_version\":{FORMAT_VERSION},\"group\":\"{group}\",\"digest\":");
    let rest = bytes.strip_prefix(head.as_bytes())?;
    // One value, then stop: the segments after it are not scanned.
    let mut de = serde_json::Deserializer::from_slice(rest);
    let d = RollupDigest::deserialize(&mut de).ok()?;
    d.briefs(group)
}

/// A roll-up written as walrs wrote it before the [digest](RollupDigest) (no `digest` field), as
/// an older walrs that rewrites a roll-up leaves it: for tests of the readers' fallback.
#[doc(hidden)]
#[derive(Serialize, Deserialize, Debug)]
pub struct RollupWithoutDigest {
    /// Format version.
    pub format_version: u32,
    /// The group.
    pub group: String,
    /// Summaries by segment name.
    pub segments: BTreeMap<WalFileName, SegmentSummary>,
}

impl From<GroupRollup> for RollupWithoutDigest {
    fn from(r: GroupRollup) -> Self {
        RollupWithoutDigest {
            format_version: r.format_version,
            group: r.group,
            segments: r.segments,
        }
    }
}

/// Another view of the roll-up object (the same kind, key, version and codec): how it is
/// written without a digest, or read for status.
macro_rules! rollup_view {
    ($t:ty) => {
        impl RepoObject for $t {
            const KIND: &'static str = GroupRollup::KIND;
            const FORMAT_VERSION: Option<u32> = Some(FORMAT_VERSION);
            const WRITE: Write = Write::Replace;
            type Id = String;
            type Codec = Fixed;

            fn key(group: &String) -> Result<ObjectKey> {
                GroupRollup::key(group)
            }

            fn name(group: &String) -> Result<String> {
                GroupRollup::name(group)
            }

            fn compression(c: Fixed) -> Compression {
                GroupRollup::compression(c)
            }
        }
    };
}

rollup_view!(RollupWithoutDigest);

impl JsonObject for RollupWithoutDigest {
    const PRETTY: bool = false;
    const VERSION_FIELD: Option<fn(&Self) -> u32> = Some(|r| r.format_version);
}

/// The summary of a segment: derived data (replaced by a rebuild), compact JSON, zstd level 3,
/// encrypted when the repository is, bound to the name `index:<name>`.
impl RepoObject for SegmentSummary {
    const KIND: &'static str = "index summary";
    const FORMAT_VERSION: Option<u32> = Some(FORMAT_VERSION);
    const WRITE: Write = Write::Replace;
    type Id = WalFileName;
    type Codec = Fixed;

    fn key(name: &WalFileName) -> Result<ObjectKey> {
        layout::summary_key(name)
            .ok_or_else(|| WalrsError::new(Kind::Internal, format!("{name} has no group")))?
            .map_err(Into::into)
    }

    fn name(name: &WalFileName) -> Result<String> {
        Ok(format!("index:{name}"))
    }

    fn compression(_: Fixed) -> Compression {
        Compression::Zstd(3)
    }
}

impl JsonObject for SegmentSummary {
    const PRETTY: bool = false;
    const VERSION_FIELD: Option<fn(&Self) -> u32> = Some(|s| s.format_version);
}

impl Listed for SegmentSummary {
    /// The summaries of one group (`Some(group)`), or every summary (`None`).
    type Scope = Option<String>;

    fn prefix(group: &Option<String>) -> String {
        match group {
            Some(g) => layout::summary_group_prefix(g),
            None => layout::SUMMARY_PREFIX.to_owned(),
        }
    }

    fn id_of(key: &ObjectKey) -> Option<WalFileName> {
        WalFileName::parse(key.as_str().rsplit('/').next()?).ok()
    }
}

impl Grouped for SegmentSummary {
    /// The WAL groups that have summaries.
    type Group = String;
    const GROUPS: &'static str = layout::SUMMARY_PREFIX;

    fn group_of(name: &str) -> Option<String> {
        Some(name.to_owned())
    }
}

/// The roll-up of a group: derived data like the summaries, bound to `index-group:<group>`.
impl RepoObject for GroupRollup {
    const KIND: &'static str = "index roll-up";
    const FORMAT_VERSION: Option<u32> = Some(FORMAT_VERSION);
    const WRITE: Write = Write::Replace;
    type Id = String;
    type Codec = Fixed;

    fn key(group: &String) -> Result<ObjectKey> {
        Ok(layout::rollup_key(group)?)
    }

    fn name(group: &String) -> Result<String> {
        Ok(format!("index-group:{group}"))
    }

    fn compression(_: Fixed) -> Compression {
        Compression::Zstd(3)
    }
}

impl JsonObject for GroupRollup {
    const PRETTY: bool = false;
    const VERSION_FIELD: Option<fn(&Self) -> u32> = Some(|r| r.format_version);
}

impl Listed for GroupRollup {
    /// Every roll-up.
    type Scope = ();

    fn prefix(_: &()) -> String {
        layout::ROLLUP_PREFIX.to_owned()
    }

    fn id_of(key: &ObjectKey) -> Option<String> {
        key.as_str().strip_prefix(layout::ROLLUP_PREFIX).map(str::to_owned)
    }
}

/// Stores the summary of a segment (after its WAL object is durable), and first its block map
/// when the summary carries one. Summaries and block maps are derived data: an existing one is
/// replaced.
pub fn store_summary(repo: &Repository, s: &SegmentSummary) -> Result<()> {
    if let Some(m) = &s.block_map {
        blockmap::store_block_map(repo, m)?;
    }
    repo.save(&s.name, s, Fixed)
}

/// Reads the summary of a segment.
pub fn load_summary(repo: &Repository, name: &WalFileName) -> Result<Option<SegmentSummary>> {
    repo.load(name)
}

/// Whether a summary exists for `name`.
pub fn has_summary(repo: &Repository, name: &WalFileName) -> Result<bool> {
    Ok(repo.head::<SegmentSummary>(name)?.is_some())
}

/// Every summary in the repository, by timeline and segment number (a full segment rather than a
/// `.partial` of the same number): the group roll-ups, plus
/// the summaries not rolled up yet, which are then folded into their roll-ups (best effort; a
/// roll-up is a cache that any reader may rewrite). Reads one listing of groups, one object per
/// group, and one listing per group that is not complete.
pub fn load_all(
    repo: &Repository,
    seg_size: WalSegSize,
) -> Result<BTreeMap<(TimeLineId, XLogSegNo), SegmentSummary>> {
    let per_group = seg_size.segments_per_xlog_id();
    let mut out = BTreeMap::new();
    for g in repo.groups::<SegmentSummary>()? {
        // A damaged roll-up is only a cache: rebuild it from the summaries.
        let cached = repo.load::<GroupRollup>(&g).unwrap_or_else(|e| {
            tracing::warn!("index roll-up of {g} is unreadable ({e}); rebuilding it");
            None
        });
        for s in complete_group(repo, &g, cached, per_group)?.segments.into_values() {
            insert_segment(&mut out, s);
        }
    }
    Ok(out)
}

/// Adds `s` to `out`: a full segment wins over a `.partial` of the same number.
fn insert_segment<S: SegmentFacts>(out: &mut BTreeMap<(TimeLineId, XLogSegNo), S>, s: S) {
    if s.is_partial() && out.contains_key(&(s.timeline(), s.segno())) {
        return;
    }
    out.insert((s.timeline(), s.segno()), s);
}

/// The roll-up of group `g` (`cached`: as read, `None` when missing or unreadable), completed
/// when it holds fewer than `per_group` segments: the group's summaries are listed, those it
/// lacks are read and added (without their xids), and the roll-up is written back when any
/// were (best effort).
fn complete_group(
    repo: &Repository,
    g: &String,
    cached: Option<GroupRollup>,
    per_group: u64,
) -> Result<GroupRollup> {
    let mut rollup: GroupRollup = cached.unwrap_or_else(|| GroupRollup {
        format_version: FORMAT_VERSION,
        group: g.clone(),
        segments: BTreeMap::new(),
    });
    if (rollup.segments.len() as u64) < per_group {
        let mut added = 0usize;
        let missing: Vec<WalFileName> = repo
            .list::<SegmentSummary>(&Some(g.clone()))?
            .filter_map(|n| n.ok())
            .filter(|n| !rollup.segments.contains_key(n))
            .collect();
        for (wal, loaded) in load_summaries(repo, &missing) {
            match loaded {
                Ok(Some(mut s)) => {
                    s.xids.clear();
                    s.xid_lsns.clear();
                    rollup.segments.insert(wal, s);
                    added += 1;
                }
                Ok(None) => {}
                Err(e) if e.is_foreign_object() => {
                    tracing::error!("index entry of {wal} is not used: {e}");
                }
                Err(e) if e.kind == Kind::Corrupt => {
                    tracing::warn!(
                        "index entry of {wal} is unreadable ({e}); run `walrs wal index --rebuild`"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        if added > 0
            && let Err(e) = repo.save(g, &rollup, Fixed)
        {
            tracing::warn!("could not update the index roll-up of {g}: {e}");
        }
    }
    Ok(rollup)
}

/// What `walrs status` and `walrs metrics` use of a segment's summary: its place, its LSN range,
/// its transactions and whether it is damaged. Read from a roll-up by [`load_briefs`] without
/// building the rest of the summary (the other fields are skipped unparsed).
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SegmentBrief {
    /// The WAL file name (segment or `.partial`).
    pub name: WalFileName,
    /// Timeline in the name.
    pub timeline: TimeLineId,
    /// Segment number.
    pub segno: XLogSegNo,
    /// LSN of the segment's first byte.
    pub start: Lsn,
    /// The end of valid WAL in the segment.
    pub end: Lsn,
    /// Commit records.
    pub commits: u64,
    /// Abort records.
    pub aborts: u64,
    /// The first commit or abort time (Unix microseconds).
    pub first_xact_time_us: Option<i64>,
    /// The last commit or abort time (Unix microseconds).
    pub last_xact_time_us: Option<i64>,
    /// Whether the decoder found a problem in the segment (`error` is set): the text itself is
    /// not kept.
    #[serde(rename = "error", deserialize_with = "is_set")]
    pub damaged: bool,
}

/// `true` when the field holds anything but `null` (the value is skipped unparsed).
fn is_set<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    Ok(Option::<serde::de::IgnoredAny>::deserialize(d)?.is_some())
}

impl From<&SegmentSummary> for SegmentBrief {
    fn from(s: &SegmentSummary) -> SegmentBrief {
        SegmentBrief {
            name: s.name.clone(),
            timeline: s.timeline,
            segno: s.segno,
            start: s.start,
            end: s.end,
            commits: s.commits,
            aborts: s.aborts,
            first_xact_time_us: s.first_xact_time_us,
            last_xact_time_us: s.last_xact_time_us,
            damaged: s.error.is_some(),
        }
    }
}

/// What the readers of ranges and gaps ([`verify::ranges`]) need of a segment, from a whole
/// summary or from a [`SegmentBrief`].
pub trait SegmentFacts {
    /// The WAL file name.
    fn name(&self) -> &WalFileName;
    /// Its timeline.
    fn timeline(&self) -> TimeLineId;
    /// Its segment number.
    fn segno(&self) -> XLogSegNo;
    /// The LSN of its first byte.
    fn start(&self) -> Lsn;
    /// The end of its valid WAL.
    fn end(&self) -> Lsn;
    /// Commits and aborts.
    fn xacts(&self) -> u64;
    /// The first commit or abort time (Unix microseconds).
    fn first_xact_time_us(&self) -> Option<i64>;
    /// The last commit or abort time (Unix microseconds).
    fn last_xact_time_us(&self) -> Option<i64>;
    /// Whether the index marks it as damaged.
    fn damaged(&self) -> bool;
    /// Whether it is a `.partial` segment.
    fn is_partial(&self) -> bool {
        self.name().kind() == crate::pg::WalFileKind::Partial
    }
}

/// Both forms of a segment's index entry answer [`SegmentFacts`] from fields of the same names;
/// only how "damaged" is stored differs (`$damaged`).
macro_rules! segment_facts {
    ($t:ty, $damaged:expr) => {
        impl SegmentFacts for $t {
            fn name(&self) -> &WalFileName {
                &self.name
            }
            fn timeline(&self) -> TimeLineId {
                self.timeline
            }
            fn segno(&self) -> XLogSegNo {
                self.segno
            }
            fn start(&self) -> Lsn {
                self.start
            }
            fn end(&self) -> Lsn {
                self.end
            }
            fn xacts(&self) -> u64 {
                self.commits + self.aborts
            }
            fn first_xact_time_us(&self) -> Option<i64> {
                self.first_xact_time_us
            }
            fn last_xact_time_us(&self) -> Option<i64> {
                self.last_xact_time_us
            }
            fn damaged(&self) -> bool {
                let damaged: fn(&$t) -> bool = $damaged;
                damaged(self)
            }
        }
    };
}
segment_facts!(SegmentSummary, |s| s.error.is_some());
segment_facts!(SegmentBrief, |s| s.damaged);

/// A group roll-up read for [`load_briefs`]: the same object as [`GroupRollup`] (same key, same
/// logical name, same checks), its segments read as [`SegmentBrief`]s and their names (the map's
/// keys) skipped. Read-only: it has no `Serialize`, so it is never written.
#[derive(Deserialize, Debug)]
pub struct GroupBrief {
    /// Format version.
    pub format_version: u32,
    /// The segments, in the roll-up's order.
    #[serde(deserialize_with = "brief_segments")]
    pub segments: Vec<SegmentBrief>,
    /// Whether the segments came from the roll-up's [digest](RollupDigest) (not its segments).
    #[serde(skip)]
    pub from_digest: bool,
}

fn brief_segments<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<SegmentBrief>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<SegmentBrief>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("segment summaries by file name")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(m.size_hint().unwrap_or(0));
            while let Some((serde::de::IgnoredAny, s)) = m.next_entry()? {
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_map(V)
}

rollup_view!(GroupBrief);

impl crate::repo::Document for GroupBrief {
    /// From the roll-up's digest when it has a usable one, else from its segments.
    fn decode(group: &String, bytes: &[u8]) -> Result<GroupBrief> {
        if let Some(segments) = stored_digest(group, bytes) {
            return Ok(GroupBrief { format_version: FORMAT_VERSION, segments, from_digest: true });
        }
        crate::repo::object::decode_versioned(
            &crate::repo::object::describe::<GroupBrief>(group),
            bytes,
            FORMAT_VERSION.into(),
            |b: &GroupBrief| b.format_version,
        )
    }
}

/// What [`load_all`] returns, as [`SegmentBrief`]s, for `walrs status` and `walrs metrics`: a
/// complete group's roll-up is read without building its summaries (the roll-ups by up to
/// [`BRIEF_READERS`] threads); a group whose roll-up is incomplete, missing or unreadable then
/// takes [`load_all`]'s path (listed, completed, written back), so both readers see the same
/// segments.
pub fn load_briefs(
    repo: &Repository,
    seg_size: WalSegSize,
) -> Result<BTreeMap<(TimeLineId, XLogSegNo), SegmentBrief>> {
    let per_group = seg_size.segments_per_xlog_id();
    let groups = repo.groups::<SegmentSummary>()?;
    // Collected, then built in one pass (the map's bulk build from sorted input; the input is
    // nearly sorted already: groups and their segments in name order). Ordered so that of a
    // `.partial` and a full segment of the same number the full one comes last and wins, as
    // `insert_segment` decides.
    let mut all: Vec<SegmentBrief> = Vec::new();
    for (g, brief) in groups.iter().zip(read_briefs(repo, &groups, per_group)) {
        if let Some(segments) = brief {
            all.extend(segments);
            continue;
        }
        // Incomplete, missing or unreadable: completed (or rebuilt, with the warning) as
        // `load_all` does, one group after another.
        let cached = repo.load::<GroupRollup>(g).unwrap_or_else(|e| {
            tracing::warn!("index roll-up of {g} is unreadable ({e}); rebuilding it");
            None
        });
        all.extend(
            complete_group(repo, g, cached, per_group)?.segments.values().map(SegmentBrief::from),
        );
    }
    all.sort_by_key(|s| (s.timeline, s.segno, !s.is_partial()));
    Ok(all.into_iter().map(|s| ((s.timeline, s.segno), s)).collect())
}

/// How many threads [`load_briefs`] reads roll-ups with, at most (one per core up to that):
/// each holds one roll-up's bytes at a time, so memory grows by one roll-up per thread.
const BRIEF_READERS: usize = 4;

/// The segments of each complete roll-up of `groups`, in order, read by several threads; `None`
/// for a group whose roll-up is incomplete, missing or unreadable (or whose reader failed).
fn read_briefs(
    repo: &Repository,
    groups: &[String],
    per_group: u64,
) -> Vec<Option<Vec<SegmentBrief>>> {
    let read = |g: &String| match repo.load::<GroupBrief>(g) {
        Ok(Some(b)) if b.segments.len() as u64 >= per_group => Some(b.segments),
        _ => None,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(BRIEF_READERS);
    if threads < 2 || groups.len() < 2 * threads {
        return groups.iter().map(read).collect();
    }
    let chunk = groups.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let read = &read;
        let workers: Vec<_> = groups
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(read).collect::<Vec<_>>()))
            .collect();
        let mut out = Vec::with_capacity(groups.len());
        for (w, part) in workers.into_iter().zip(groups.chunks(chunk)) {
            match w.join() {
                Ok(v) => out.extend(v),
                Err(_) => out.extend(part.iter().map(|_| None)),
            }
        }
        out
    })
}

/// How many summaries [`load_summaries`] reads at once: on S3 each is a round trip, and a reader
/// that finds a thousand summaries not rolled up yet should not pay for them one after another.
const SUMMARY_READERS: usize = 8;

/// Reads the summaries of `names`, several at a time, in the order given.
fn load_summaries(
    repo: &Repository,
    names: &[WalFileName],
) -> Vec<(WalFileName, Result<Option<SegmentSummary>>)> {
    if names.len() < 2 * SUMMARY_READERS {
        return names.iter().map(|n| (n.clone(), load_summary(repo, n))).collect();
    }
    let chunk = names.len().div_ceil(SUMMARY_READERS);
    std::thread::scope(|scope| {
        let workers: Vec<_> = names
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter().map(|n| (n.clone(), load_summary(repo, n))).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(names.len());
        for (w, part) in workers.into_iter().zip(names.chunks(chunk)) {
            match w.join() {
                Ok(v) => out.extend(v),
                Err(_) => out.extend(part.iter().map(|n| {
                    (n.clone(), Err(WalrsError::new(Kind::Internal, "an index reader panicked")))
                })),
            }
        }
        out
    })
}

/// Removes the index entries of the WAL files `names`, whose objects were deleted
/// (`walrs expire`): their summaries (in batches), then each affected group's roll-up, rewritten
/// without them (deleted when nothing is left). Run after the WAL objects are gone: an
/// interrupted run leaves entries for deleted objects, which the next run, planning from the
/// index, deletes again.
pub fn forget(repo: &Repository, names: &[WalFileName]) -> Result<()> {
    let mut keys = Vec::new();
    let mut groups: BTreeMap<String, Vec<&WalFileName>> = BTreeMap::new();
    for n in names {
        if let Some(g) = n.group() {
            keys.push(SegmentSummary::key(n)?);
            keys.push(blockmap::BlockMap::key(n)?);
            groups.entry(g.to_owned()).or_default().push(n);
        }
    }
    crate::repo::prune::delete_keys(repo, &keys)?;
    for (g, gone) in groups {
        let Some(mut rollup) = repo.load::<GroupRollup>(&g).unwrap_or_else(|e| {
            tracing::warn!("index roll-up of {g} is unreadable ({e}); removing it");
            Some(GroupRollup::default())
        }) else {
            continue;
        };
        for n in gone {
            rollup.segments.remove(n);
        }
        if rollup.segments.is_empty() {
            repo.delete::<GroupRollup>(&g)?;
        } else {
            rollup.format_version = FORMAT_VERSION;
            rollup.group = g.clone();
            repo.save(&g, &rollup, Fixed)?;
        }
    }
    Ok(())
}

/// Removes every roll-up (the next reader rebuilds them).
pub fn drop_rollups(repo: &Repository) -> Result<()> {
    let groups: Vec<String> = repo.list::<GroupRollup>(&())?.filter_map(|g| g.ok()).collect();
    for g in groups {
        repo.delete::<GroupRollup>(&g)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use crate::storage::{AnyStorage, memory::MemoryStorage};

    fn summary(name: &WalFileName, segno: u64, seg: WalSegSize) -> SegmentSummary {
        let start = XLogSegNo(segno).start_lsn(seg);
        SegmentSummary {
            format_version: FORMAT_VERSION,
            name: name.clone(),
            timeline: name.timeline(),
            segno: XLogSegNo(segno),
            start,
            seg_size: seg,
            first_record: Some(start.saturating_add(40)),
            last_record: Some(start.saturating_add(1000)),
            end: XLogSegNo(segno).end_lsn(seg),
            end_kind: EndKind::Full,
            continuation: 0,
            first_prev: None,
            records: segno,
            commits: 1,
            aborts: 0,
            first_xact_time_us: None,
            last_xact_time_us: None,
            min_xid: Some(7),
            max_xid: Some(9),
            xids: vec![7, 8, 9],
            xid_lsns: vec![],
            restore_points: vec![],
            checkpoints: vec![],
            backup_ends: vec![],
            end_of_recovery: vec![],
            error: None,
            content_digest: String::new(),
            block_map: None,
        }
    }

    /// `load_briefs` (status, metrics) sees what `load_all` sees: a complete roll-up read as
    /// briefs, an incomplete group completed from its summaries (and its roll-up written back),
    /// a `.partial` beside its full segment (the full one wins), a damaged segment flagged; a
    /// roll-up written by a newer walrs is unsupported for neither (both rebuild it from the
    /// summaries, as before).
    #[test]
    fn briefs_are_what_load_all_reads() {
        let repo = Repository::new(AnyStorage::Memory(MemoryStorage::new()), None);
        let seg = WalSegSize::new(1 << 30).unwrap(); // 4 segments per group
        let tli = TimeLineId::new(1).unwrap();
        // Group 0: segments 1..=3 (incomplete, not rolled up); group 1: 4..=7, rolled up.
        let mut full_group = GroupRollup {
            format_version: FORMAT_VERSION,
            group: String::new(),
            segments: BTreeMap::new(),
        };
        for segno in 1..=7u64 {
            let name = WalFileName::segment(tli, XLogSegNo(segno), seg);
            let mut s = summary(&name, segno, seg);
            if segno == 5 {
                s.error = Some("invalid record length at 1/40000A0".into());
            }
            store_summary(&repo, &s).unwrap();
            if segno >= 4 {
                full_group.group = name.group().unwrap().to_owned();
                s.xids.clear();
                full_group.segments.insert(name, s);
            }
        }
        let partial = WalFileName::parse("000000010000000000000003.partial").unwrap();
        let mut p = summary(&partial, 3, seg);
        p.end_kind = EndKind::EndOfWal;
        store_summary(&repo, &p).unwrap();
        let g1 = full_group.group.clone();
        repo.save(&g1, &full_group, Fixed).unwrap();

        let all = load_all(&repo, seg).unwrap();
        let briefs = load_briefs(&repo, seg).unwrap();
        let expect: BTreeMap<_, SegmentBrief> =
            all.iter().map(|(k, s)| (*k, SegmentBrief::from(s))).collect();
        assert_eq!(briefs, expect);
        assert_eq!(briefs.len(), 7);
        assert!(!briefs[&(tli, XLogSegNo(3))].is_partial(), "the full segment wins");
        assert!(briefs[&(tli, XLogSegNo(5))].damaged);
        assert!(!briefs[&(tli, XLogSegNo(4))].damaged);
        // The incomplete group was completed and written back by the first reader.
        let g0 = WalFileName::segment(tli, XLogSegNo(1), seg).group().unwrap().to_owned();
        let r0: GroupRollup = repo.load(&g0).unwrap().unwrap();
        assert_eq!(r0.segments.len(), 4, "segments 1..=3 and the .partial");
        // A complete roll-up is read as briefs alone: its summaries are not needed (one is
        // left: the groups are those with summaries).
        for segno in 4..=6u64 {
            let name = WalFileName::segment(tli, XLogSegNo(segno), seg);
            repo.delete::<SegmentSummary>(&name).unwrap();
        }
        assert_eq!(load_briefs(&repo, seg).unwrap(), expect);
        let b: GroupBrief = repo.load(&g1).unwrap().unwrap();
        assert_eq!(b.segments.len(), 4);
        assert_eq!(b.segments[1], expect[&(tli, XLogSegNo(5))]);
        // A roll-up of a newer format: unsupported as a brief, and both readers fall back to
        // the summaries (here only those of group 0 are left).
        let mut newer = full_group.clone();
        newer.format_version = FORMAT_VERSION + 1;
        repo.save(&g1, &newer, Fixed).unwrap();
        let e = repo.load::<GroupBrief>(&g1).unwrap_err();
        assert_eq!(e.kind, Kind::Unsupported, "{e}");
        repo.save(&g1, &newer, Fixed).unwrap();
        let a = load_all(&repo, seg).unwrap();
        repo.save(&g1, &newer, Fixed).unwrap();
        let b = load_briefs(&repo, seg).unwrap();
        let a: BTreeMap<_, SegmentBrief> =
            a.iter().map(|(k, s)| (*k, SegmentBrief::from(s))).collect();
        assert_eq!(a, b);
    }

    /// The digest stored in a roll-up gives `load_briefs` exactly what the roll-up's segments
    /// give (a damaged segment, a `.partial` beside its full segment, a `.partial` alone after a
    /// gap, xact times set and unset, two timelines); a roll-up without a digest (as an older
    /// walrs rewrites it), with a digest of another version, or stored under another group is
    /// read from its segments; a roll-up whose segments a digest cannot describe is written
    /// without one.
    #[test]
    fn a_rollups_digest_gives_what_its_segments_give() {
        let repo = Repository::new(AnyStorage::Memory(MemoryStorage::new()), None);
        let seg = WalSegSize::new(1 << 30).unwrap(); // 4 segments per group
        let mut groups: BTreeMap<String, GroupRollup> = BTreeMap::new();
        let mut add = |s: SegmentSummary| {
            store_summary(&repo, &s).unwrap();
            let g = s.name.group().unwrap().to_owned();
            let r = groups.entry(g.clone()).or_insert_with(|| GroupRollup {
                format_version: FORMAT_VERSION,
                group: g,
                segments: BTreeMap::new(),
            });
            let mut s = s;
            s.xids.clear();
            r.segments.insert(s.name.clone(), s);
        };
        for (t, range) in [(1u32, 4..=11u64), (2, 12..=15)] {
            let tli = TimeLineId::new(t).unwrap();
            for segno in range {
                if segno == 9 {
                    continue; // the gap
                }
                let name = WalFileName::segment(tli, XLogSegNo(segno), seg);
                let mut s = summary(&name, segno, seg);
                s.commits = segno % 3;
                s.aborts = segno % 2;
                if segno % 2 == 0 {
                    s.first_xact_time_us = Some(1_795_000_000_000_000 + segno as i64);
                    s.last_xact_time_us = Some(1_795_000_000_500_000 + segno as i64);
                }
                if segno == 5 || segno == 13 {
                    s.error = Some("invalid record length at 1/40000A0".into());
                }
                add(s);
            }
        }
        let tli = TimeLineId::new(1).unwrap();
        for segno in [7u64, 9] {
            let name = WalFileName::partial_segment(tli, XLogSegNo(segno), seg);
            let mut p = summary(&name, segno, seg);
            p.end_kind = EndKind::EndOfWal;
            p.end = p.start.saturating_add(8192);
            p.error = Some("zeroed page".into());
            add(p);
        }
        for (g, r) in &groups {
            repo.save(g, r, Fixed).unwrap();
        }
        let all: BTreeMap<_, SegmentBrief> = load_all(&repo, seg)
            .unwrap()
            .iter()
            .map(|(k, s)| (*k, SegmentBrief::from(s)))
            .collect();
        // 7 + 4 segments, and 9's .partial (7's is hidden by its full segment).
        assert_eq!(all.len(), 12);
        assert!(all[&(TimeLineId::new(1).unwrap(), XLogSegNo(9))].is_partial());
        assert!(all[&(TimeLineId::new(2).unwrap(), XLogSegNo(13))].damaged);
        assert_eq!(load_briefs(&repo, seg).unwrap(), all);
        for (g, r) in &groups {
            let digest: GroupBrief = repo.load(g).unwrap().unwrap();
            assert!(digest.from_digest, "{g}: read from its digest");
            repo.save(g, &RollupWithoutDigest::from(r.clone()), Fixed).unwrap();
            let full: GroupBrief = repo.load(g).unwrap().unwrap();
            assert!(!full.from_digest, "{g}: no digest, read from the segments");
            assert_eq!(digest.segments, full.segments, "{g}");
            assert_eq!(digest.segments.len(), r.segments.len());
        }
        // Every roll-up without its digest: the same briefs, from the segments.
        assert_eq!(load_briefs(&repo, seg).unwrap(), all);
        // A writer of this walrs (here `forget`, as `walrs expire` runs it) writes the digest of
        // what it keeps.
        let (g0, r0) = groups.iter().next().unwrap();
        let gone = r0.segments.keys().next().unwrap().clone();
        forget(&repo, std::slice::from_ref(&gone)).unwrap();
        let kept: GroupBrief = repo.load(g0).unwrap().unwrap();
        assert!(kept.from_digest);
        assert_eq!(kept.segments.len(), r0.segments.len() - 1);
        assert!(kept.segments.iter().all(|b| b.name != gone));
        let expect: Vec<SegmentBrief> =
            r0.segments.values().filter(|s| s.name != gone).map(SegmentBrief::from).collect();
        assert_eq!(kept.segments, expect);
        repo.save(g0, r0, Fixed).unwrap();

        let (g, r) = groups.iter().next().unwrap();
        let json = serde_json::to_string(r).unwrap();
        let decoded = |bytes: &str| {
            <GroupBrief as crate::repo::Document>::decode(g, bytes.as_bytes()).unwrap()
        };
        let from_digest = decoded(&json);
        assert!(from_digest.from_digest);
        // A digest of another version is not read: the segments are.
        let v2 = json.replacen(r#""digest":{"v":1,"#, r#""digest":{"v":2,"#, 1);
        assert_ne!(v2, json);
        let b = decoded(&v2);
        assert!(!b.from_digest);
        assert_eq!(b.segments, from_digest.segments);
        // Nor one whose document does not open as walrs writes it (here: another group).
        let other = json.replacen(g.as_str(), "0000000900000000", 1);
        assert!(stored_digest(g, other.as_bytes()).is_none());
        assert!(stored_digest("0000000900000000", other.as_bytes()).is_none(), "names outside");
        // A roll-up holding a name its timeline and segment number do not give: no digest.
        let mut odd = r.clone();
        let (k, s) = odd.segments.pop_last().unwrap();
        let mut s = s;
        s.segno = XLogSegNo(s.segno.0 + 1);
        odd.segments.insert(k, s);
        assert!(RollupDigest::of(&odd.group, &odd.segments).is_none());
        let odd_json = serde_json::to_string(&odd).unwrap();
        assert!(!odd_json.contains(r#""digest""#), "{odd_json}");
        assert!(!decoded(&odd_json).from_digest);
        assert!(RollupDigest::of(&r.group, &r.segments).is_some());
    }

    /// Enough summaries not rolled up yet that they are read by several readers: every one
    /// comes back, in order, and the roll-up written then serves the next reader alone.
    #[test]
    fn many_unrolled_summaries_are_all_read_and_rolled_up() {
        let repo = Repository::new(AnyStorage::Memory(MemoryStorage::new()), None);
        let seg = WalSegSize::new(1 << 20).unwrap();
        let tli = TimeLineId::new(1).unwrap();
        let n = 3 * 2 * SUMMARY_READERS as u64 + 5;
        for segno in 1..=n {
            let name = WalFileName::segment(tli, XLogSegNo(segno), seg);
            store_summary(&repo, &summary(&name, segno, seg)).unwrap();
        }
        let all = load_all(&repo, seg).unwrap();
        assert_eq!(all.len() as u64, n);
        for (i, ((t, segno), s)) in all.iter().enumerate() {
            assert_eq!((t.get(), segno.0), (1, i as u64 + 1));
            assert_eq!(s.records, segno.0);
            assert!(s.xids.is_empty(), "roll-ups carry no xid lists");
        }
        let group = WalFileName::segment(tli, XLogSegNo(1), seg).group().unwrap().to_owned();
        let rollup: GroupRollup = repo.load(&group).unwrap().unwrap();
        assert_eq!(rollup.segments.len() as u64, n);
        // A summary lost after the roll-up was written: the roll-up still answers.
        let gone = WalFileName::segment(tli, XLogSegNo(3), seg);
        repo.delete::<SegmentSummary>(&gone).unwrap();
        assert_eq!(load_all(&repo, seg).unwrap().len() as u64, n);
    }
}
