//! Timeline ids, segment numbers, segment sizes and WAL file names.
//!
//! `WalFileName` is the only way a WAL file name enters walrs: it is parsed, classified (segment,
//! `.partial`, `.history`, `.backup`) and anything else is rejected, which is also what keeps a name
//! like `../../etc/passwd` from ever reaching the storage layer. Names follow PostgreSQL's
//! `IsXLogFileName` family exactly: upper-case hexadecimal only.

use std::fmt;
use std::str::FromStr;

use super::FormatError;
use super::lsn::Lsn;

/// A timeline id (`TimeLineID`), shown as PostgreSQL shows it in file names: `%08X`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeLineId(u32);

impl TimeLineId {
    /// The first timeline of every cluster.
    pub const FIRST: TimeLineId = TimeLineId(1);

    /// Timeline ids start at 1; 0 is not a valid timeline.
    pub fn new(v: u32) -> Result<Self, FormatError> {
        if v == 0 {
            return Err(FormatError::invalid("timeline id", "0 is not a valid timeline"));
        }
        Ok(TimeLineId(v))
    }

    /// The numeric value.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for TimeLineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}", self.0)
    }
}

impl fmt::Debug for TimeLineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TimeLineId({})", self.0)
    }
}

impl serde::Serialize for TimeLineId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TimeLineId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        TimeLineId::new(u32::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A WAL segment number (`XLogSegNo`): the LSN divided by the segment size.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct XLogSegNo(pub u64);

impl XLogSegNo {
    /// The LSN at which this segment starts.
    ///
    /// Port of `XLogSegNoOffsetToRecPtr` in src/include/access/xlog_internal.h.
    #[doc(alias = "XLogSegNoOffsetToRecPtr")]
    pub fn start_lsn(self, seg_size: WalSegSize) -> Lsn {
        Lsn(self.0.wrapping_mul(seg_size.bytes()))
    }

    /// The LSN just past this segment: the start of the next one (at most `FFFFFFFF/FFFFFFFF`).
    pub fn end_lsn(self, seg_size: WalSegSize) -> Lsn {
        self.start_lsn(seg_size).saturating_add(seg_size.bytes())
    }

    /// The segment `n` after this one; `None` past the last segment number.
    pub fn checked_add(self, n: u64) -> Option<XLogSegNo> {
        self.0.checked_add(n).map(XLogSegNo)
    }
}

/// Stored as a bare integer, as the index always stored segment numbers.
impl serde::Serialize for XLogSegNo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for XLogSegNo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64::deserialize(d).map(XLogSegNo)
    }
}

/// The WAL segment size of a cluster: a power of two from 1 MiB to 1 GiB.
///
/// It travels with the values that need it: it comes from a segment's long page header, from
/// pg_control or from the repository config, never from a global.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct WalSegSize(u32);

impl WalSegSize {
    /// The smallest segment size PostgreSQL accepts (`WalSegMinSize`).
    pub const MIN: u32 = 1024 * 1024;
    /// The largest segment size PostgreSQL accepts (`WalSegMaxSize`).
    pub const MAX: u32 = 1024 * 1024 * 1024;
    /// PostgreSQL's default (`DEFAULT_XLOG_SEG_SIZE`).
    pub const DEFAULT: WalSegSize = WalSegSize(16 * 1024 * 1024);

    /// Checks the size as `IsValidWalSegSize` in src/include/access/xlog_internal.h does.
    #[doc(alias = "IsValidWalSegSize")]
    pub fn new(bytes: u32) -> Result<Self, FormatError> {
        if bytes.is_power_of_two() && (Self::MIN..=Self::MAX).contains(&bytes) {
            Ok(WalSegSize(bytes))
        } else {
            Err(FormatError::invalid(
                "WAL segment size",
                format!("{bytes} is not a power of two between 1 MiB and 1 GiB"),
            ))
        }
    }

    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        u64::from(self.0)
    }

    /// The size in bytes as a `u32`.
    pub fn get(self) -> u32 {
        self.0
    }

    /// Segments per 4 GiB "xlogid" (`XLogSegmentsPerXLogId`), the modulus of the last 8 name digits.
    #[doc(alias = "XLogSegmentsPerXLogId")]
    pub fn segments_per_xlog_id(self) -> u64 {
        0x1_0000_0000 / self.bytes()
    }
}

impl serde::Serialize for WalSegSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for WalSegSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        WalSegSize::new(u32::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// What kind of file a WAL file name designates.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WalFileKind {
    /// A complete WAL segment, `000000010000000000000003`.
    Segment,
    /// A segment cut short at a timeline switch or by pg_receivewal, `...03.partial`.
    Partial,
    /// A timeline history file, `00000002.history`.
    History,
    /// A backup history file, `000000010000000000000003.00000028.backup`.
    BackupHistory,
}

/// A parsed, validated WAL file name. Its `Display` is the exact name PostgreSQL uses.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WalFileName {
    name: String,
    kind: WalFileKind,
    tli: TimeLineId,
    log: u32,
    seg: u32,
}

const XLOG_FNAME_LEN: usize = 24;

fn is_upper_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// Appends `v` as 8 upper-case hex digits (`%08X`), without the formatting machinery: `status`
/// builds 100,000 names from the index's roll-up digests.
fn push_hex8(out: &mut String, v: u32) {
    for shift in (0..8).rev() {
        let d = ((v >> (shift * 4)) & 0xF) as u8;
        out.push(char::from(if d < 10 { b'0' + d } else { b'A' + d - 10 }));
    }
}

fn hex_u32(s: &str) -> Option<u32> {
    if s.len() == 8 && is_upper_hex(s) { u32::from_str_radix(s, 16).ok() } else { None }
}

impl WalFileName {
    /// The name of segment `segno` on timeline `tli`.
    ///
    /// Port of `XLogFileName` in src/include/access/xlog_internal.h.
    #[doc(alias = "XLogFileName")]
    pub fn segment(tli: TimeLineId, segno: XLogSegNo, seg_size: WalSegSize) -> Self {
        let per = seg_size.segments_per_xlog_id();
        // Both quotients fit in u32: segno < 2^64 / seg_size and per <= 4096.
        let log = u32::try_from(segno.0 / per).unwrap_or(u32::MAX);
        let seg = u32::try_from(segno.0 % per).unwrap_or(u32::MAX);
        let mut name = String::with_capacity(XLOG_FNAME_LEN + ".partial".len());
        for v in [tli.get(), log, seg] {
            push_hex8(&mut name, v);
        }
        WalFileName { name, kind: WalFileKind::Segment, tli, log, seg }
    }

    /// The name of the `.partial` file of segment `segno` on timeline `tli`.
    pub fn partial_segment(tli: TimeLineId, segno: XLogSegNo, seg_size: WalSegSize) -> Self {
        let mut w = WalFileName::segment(tli, segno, seg_size);
        w.name.push_str(".partial");
        w.kind = WalFileKind::Partial;
        w
    }

    /// The name of the history file of timeline `tli` (`TLHistoryFileName`).
    #[doc(alias = "TLHistoryFileName")]
    pub fn history(tli: TimeLineId) -> Self {
        WalFileName {
            name: format!("{tli}.history"),
            kind: WalFileKind::History,
            tli,
            log: 0,
            seg: 0,
        }
    }

    /// The file name exactly as PostgreSQL spells it.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// Segment, partial segment, timeline history or backup history.
    pub fn kind(&self) -> WalFileKind {
        self.kind
    }

    /// The timeline in the name.
    pub fn timeline(&self) -> TimeLineId {
        self.tli
    }

    /// True for a segment or a `.partial` segment (files that begin with a long page header).
    pub fn is_segment_like(&self) -> bool {
        matches!(self.kind, WalFileKind::Segment | WalFileKind::Partial)
    }

    /// The first 16 characters (timeline and xlogid) for segment-like and backup history names.
    /// PostgreSQL's archives group files by this prefix; walrs's key layout does too.
    pub fn group(&self) -> Option<&str> {
        match self.kind {
            WalFileKind::History => None,
            _ => self.name.get(..16),
        }
    }

    /// The segment number, for names that designate a segment; `None` for history files and when the
    /// low digits are out of range for this segment size (such a name cannot be a real segment).
    ///
    /// Port of `XLogFromFileName` in src/include/access/xlog_internal.h.
    #[doc(alias = "XLogFromFileName")]
    pub fn segno(&self, seg_size: WalSegSize) -> Option<XLogSegNo> {
        if self.kind == WalFileKind::History {
            return None;
        }
        let per = seg_size.segments_per_xlog_id();
        if u64::from(self.seg) >= per {
            return None;
        }
        Some(XLogSegNo(u64::from(self.log) * per + u64::from(self.seg)))
    }

    /// Parses and classifies a name; everything that is not exactly one of PostgreSQL's four WAL
    /// file name forms is rejected.
    pub fn parse(s: &str) -> Result<Self, FormatError> {
        let bad = |detail: &str| FormatError::invalid("WAL file name", format!("{s:?}: {detail}"));
        if s.contains('/') || s.contains('\\') || s.contains("..") || s.contains('\0') {
            return Err(bad("a WAL file name is a bare file name, without a path"));
        }
        let head = |s: &str| -> Option<(TimeLineId, u32, u32)> {
            let t = hex_u32(s.get(0..8)?)?;
            let log = hex_u32(s.get(8..16)?)?;
            let seg = hex_u32(s.get(16..24)?)?;
            Some((TimeLineId::new(t).ok()?, log, seg))
        };
        let (kind, rest_ok) = if s.len() == XLOG_FNAME_LEN {
            (WalFileKind::Segment, true)
        } else if let Some(base) = s.strip_suffix(".partial") {
            (WalFileKind::Partial, base.len() == XLOG_FNAME_LEN)
        } else if let Some(base) = s.strip_suffix(".history") {
            let t = hex_u32(base)
                .ok_or_else(|| bad("a history file is 8 upper-case hex digits + .history"))?;
            let tli = TimeLineId::new(t).map_err(|_| bad("timeline 0 does not exist"))?;
            return Ok(WalFileName {
                name: s.to_owned(),
                kind: WalFileKind::History,
                tli,
                log: 0,
                seg: 0,
            });
        } else if let Some(base) = s.strip_suffix(".backup") {
            // 24 hex digits, '.', 8 hex digits (the start offset), then ".backup".
            let ok = base.len() == XLOG_FNAME_LEN + 9
                && base.as_bytes().get(XLOG_FNAME_LEN) == Some(&b'.')
                && base.get(XLOG_FNAME_LEN + 1..).and_then(hex_u32).is_some();
            (WalFileKind::BackupHistory, ok)
        } else {
            return Err(bad("not a segment, .partial, .history or .backup file name"));
        };
        if !rest_ok {
            return Err(bad("wrong length"));
        }
        let (tli, log, seg) = head(s).ok_or_else(|| {
            bad("expected 24 upper-case hexadecimal digits with a non-zero timeline")
        })?;
        Ok(WalFileName { name: s.to_owned(), kind, tli, log, seg })
    }
}

impl FromStr for WalFileName {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WalFileName::parse(s)
    }
}

impl fmt::Display for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalFileName({})", self.name)
    }
}

/// Ordered by the name, as the strings sort: the order of the index's maps and of a listing.
impl Ord for WalFileName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name.cmp(&other.name)
    }
}

impl PartialOrd for WalFileName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq<str> for WalFileName {
    fn eq(&self, other: &str) -> bool {
        self.name == other
    }
}

impl PartialEq<&str> for WalFileName {
    fn eq(&self, other: &&str) -> bool {
        self.name == *other
    }
}

/// Stored as the name itself; a stored name is parsed again, so nothing but one of PostgreSQL's
/// four forms is ever read back.
impl serde::Serialize for WalFileName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

impl<'de> serde::Deserialize<'de> for WalFileName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = WalFileName;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a WAL file name")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<WalFileName, E> {
                WalFileName::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEG16: WalSegSize = WalSegSize::DEFAULT;

    #[test]
    fn classifies() {
        let n = WalFileName::parse("000000010000000A0000003F").unwrap();
        assert_eq!(n.kind(), WalFileKind::Segment);
        assert_eq!(n.timeline().get(), 1);
        assert_eq!(n.segno(SEG16), Some(XLogSegNo(0xA * 256 + 0x3F)));
        assert_eq!(n.group(), Some("000000010000000A"));
        let p = WalFileName::parse("000000020000000000000003.partial").unwrap();
        assert_eq!(p.kind(), WalFileKind::Partial);
        assert!(p.is_segment_like());
        let h = WalFileName::parse("0000000A.history").unwrap();
        assert_eq!(h.kind(), WalFileKind::History);
        assert_eq!(h.timeline().get(), 10);
        assert_eq!(h.group(), None);
        let b = WalFileName::parse("000000010000000000000002.00000028.backup").unwrap();
        assert_eq!(b.kind(), WalFileKind::BackupHistory);
        assert_eq!(b.segno(SEG16), Some(XLogSegNo(2)));
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "00000001000000000000000",
            "0000000100000000000000001",
            "000000010000000000000001\n",
            "00000001000000000000000a",
            "000000000000000000000001",
            "../00000001000000000000001",
            "../../etc/passwd",
            "pg_wal/000000010000000000000001",
            "00000001.history.partial",
            "00000000.history",
            "0000001.history",
            "000000010000000000000001.partial.partial",
            "000000010000000000000002.0000002.backup",
            "000000010000000000000002-00000028.backup",
            "RECOVERYXLOG",
            "000000010000000000000001.gz",
            "..",
        ] {
            assert!(WalFileName::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn segno_out_of_range_for_size() {
        // With 1 GiB segments only 4 segments fit in one xlogid: ...00000004 cannot exist.
        let big = WalSegSize::new(1 << 30).unwrap();
        let n = WalFileName::parse("000000010000000000000004").unwrap();
        assert_eq!(n.segno(big), None);
        assert_eq!(n.segno(SEG16), Some(XLogSegNo(4)));
    }

    #[test]
    fn seg_sizes() {
        assert!(WalSegSize::new(16 << 20).is_ok());
        assert!(WalSegSize::new(1 << 20).is_ok());
        assert!(WalSegSize::new(1 << 30).is_ok());
        for bad in [0, 512 * 1024, 3 << 20, 2 << 30, u32::MAX] {
            assert!(WalSegSize::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_forms() {
        let n = WalFileName::parse("000000020000000000000003.partial").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), r#""000000020000000000000003.partial""#);
        assert_eq!(
            serde_json::from_str::<WalFileName>(r#""000000020000000000000003.partial""#).unwrap(),
            n
        );
        assert!(serde_json::from_str::<WalFileName>(r#""../x""#).is_err());
        assert_eq!(serde_json::to_string(&XLogSegNo(2623)).unwrap(), "2623");
        assert_eq!(serde_json::from_str::<XLogSegNo>("2623").unwrap(), XLogSegNo(2623));
        assert_eq!(n, "000000020000000000000003.partial");
    }

    #[test]
    fn segment_ends() {
        assert_eq!(XLogSegNo(3).end_lsn(SEG16), Lsn(4 << 24));
        assert_eq!(XLogSegNo(u64::MAX >> 24).end_lsn(SEG16), Lsn(u64::MAX));
        assert_eq!(XLogSegNo(u64::MAX).checked_add(1), None);
        assert_eq!(XLogSegNo(1).checked_add(2), Some(XLogSegNo(3)));
    }

    proptest! {
        #[test]
        fn names_sort_as_their_strings(a in "[0-9A-F]{24}", b in "[0-9A-F]{24}") {
            if let (Ok(x), Ok(y)) = (WalFileName::parse(&a), WalFileName::parse(&b)) {
                prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            }
        }

        #[test]
        fn segment_name_roundtrip(t in 1u32.., segno_seed in any::<u64>(), shift in 20u32..=30) {
            // Every segment number an LSN can produce: below 2^64 / segment size.
            let segno = segno_seed >> shift;
            let size = WalSegSize::new(1 << shift).unwrap();
            let tli = TimeLineId::new(t).unwrap();
            let name = WalFileName::segment(tli, XLogSegNo(segno), size);
            let parsed = WalFileName::parse(name.as_str()).unwrap();
            prop_assert_eq!(parsed.kind(), WalFileKind::Segment);
            prop_assert_eq!(parsed.timeline(), tli);
            prop_assert_eq!(parsed.segno(size), Some(XLogSegNo(segno)));
            prop_assert_eq!(parsed.to_string(), name.to_string());
        }

        #[test]
        fn never_panics_and_never_accepts_paths(s in "\\PC{0,48}") {
            if let Ok(n) = WalFileName::parse(&s) {
                prop_assert!(!n.as_str().contains('/'));
                prop_assert!(!n.as_str().contains(".."));
                prop_assert_eq!(n.as_str(), s.as_str());
            }
        }

        #[test]
        fn history_roundtrip(t in 1u32..) {
            let tli = TimeLineId::new(t).unwrap();
            let h = WalFileName::history(tli);
            prop_assert_eq!(WalFileName::parse(h.as_str()).unwrap(), h);
        }

        #[test]
        fn lowercase_hex_is_rejected(s in "[0-9a-f]{24}") {
            prop_assume!(s.bytes().any(|b| b.is_ascii_lowercase()));
            prop_assert!(WalFileName::parse(&s).is_err());
        }
    }
}
