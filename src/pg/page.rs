//! The long page header at the start of every WAL segment, and the PostgreSQL major version that
//! its magic number identifies.
//!
//! A segment begins with `XLogLongPageHeaderData` (src/include/access/xlog_internal.h): the short
//! header (magic, info flags, timeline, page address, remaining length of a continued record) plus
//! the system identifier, the segment size and the WAL block size. Page headers carry no CRC in
//! PostgreSQL, so this decoder checks every field it can against the others and against the name.
//! WAL is written in the server's byte order; walrs supports little-endian servers only.

use std::fmt;

use super::FormatError;
use super::lsn::Lsn;
use super::names::{TimeLineId, WalSegSize, XLogSegNo};
use crate::bytes::{u16_at, u32_at, u64_at};

/// The size of the long page header (`SizeOfXLogLongPHD`), MAXALIGNed on 64-bit platforms.
pub const LONG_PAGE_HEADER_LEN: usize = 40;

/// `XLP_LONG_HEADER`: this page starts with the long header.
const XLP_LONG_HEADER: u16 = 0x0002;
/// `XLP_ALL_FLAGS`: every flag bit defined in `xlp_info` (with `XLP_FIRST_IS_OVERWRITE_CONTRECORD`).
const XLP_ALL_FLAGS: u16 = 0x000F;

/// A cluster's system identifier, as `pg_controldata` prints it (decimal).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SystemId(pub u64);

impl fmt::Display for SystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl serde::Serialize for SystemId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // A string: JSON readers that hold numbers as f64 would round a 64-bit id.
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SystemId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(SystemId).map_err(serde::de::Error::custom)
    }
}

/// The PostgreSQL major versions whose WAL walrs understands.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum PgMajorVersion {
    /// PostgreSQL 13.
    V13,
    /// PostgreSQL 14.
    V14,
    /// PostgreSQL 15.
    V15,
    /// PostgreSQL 16.
    V16,
    /// PostgreSQL 17.
    V17,
    /// PostgreSQL 18.
    V18,
}

impl PgMajorVersion {
    /// Every supported version, oldest first (for version-looping tests).
    pub const ALL: [PgMajorVersion; 6] = [
        PgMajorVersion::V13,
        PgMajorVersion::V14,
        PgMajorVersion::V15,
        PgMajorVersion::V16,
        PgMajorVersion::V17,
        PgMajorVersion::V18,
    ];

    /// `XLOG_PAGE_MAGIC` of this version (src/include/access/xlog_internal.h of each release).
    pub fn xlog_page_magic(self) -> u16 {
        match self {
            PgMajorVersion::V13 => 0xD106,
            PgMajorVersion::V14 => 0xD10D,
            PgMajorVersion::V15 => 0xD110,
            PgMajorVersion::V16 => 0xD113,
            PgMajorVersion::V17 => 0xD116,
            PgMajorVersion::V18 => 0xD118,
        }
    }

    /// The version whose WAL carries this page magic.
    pub fn from_xlog_page_magic(magic: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.xlog_page_magic() == magic)
    }

    /// The major version number (13..18).
    pub fn number(self) -> u32 {
        match self {
            PgMajorVersion::V13 => 13,
            PgMajorVersion::V14 => 14,
            PgMajorVersion::V15 => 15,
            PgMajorVersion::V16 => 16,
            PgMajorVersion::V17 => 17,
            PgMajorVersion::V18 => 18,
        }
    }

    /// The version with this major number.
    pub fn from_number(n: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.number() == n)
    }
}

impl fmt::Display for PgMajorVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

impl serde::Serialize for PgMajorVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.number())
    }
}

impl<'de> serde::Deserialize<'de> for PgMajorVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        PgMajorVersion::from_number(n)
            .ok_or_else(|| serde::de::Error::custom(format!("unsupported PostgreSQL version {n}")))
    }
}

/// The decoded long page header of a segment (`XLogLongPageHeaderData`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LongPageHeader {
    /// The PostgreSQL major version, from `xlp_magic`.
    pub version: PgMajorVersion,
    /// `xlp_info` flags.
    pub info: u16,
    /// `xlp_tli`: the timeline of the first record on the page. At a timeline switch the first
    /// segment of the new timeline starts with pages copied from the old one, so this may be lower
    /// than the timeline in the file name.
    pub tli: TimeLineId,
    /// `xlp_pageaddr`: the LSN of this page, the start of the segment.
    pub page_addr: Lsn,
    /// `xlp_rem_len`: bytes of a record continued from the previous segment.
    pub rem_len: u32,
    /// `xlp_sysid`: the cluster's system identifier.
    pub system_id: SystemId,
    /// `xlp_seg_size`.
    pub seg_size: WalSegSize,
    /// `xlp_xlog_blcksz`: the WAL page size (8192 unless PostgreSQL was built otherwise).
    pub xlog_blcksz: u32,
}

impl LongPageHeader {
    /// Decodes and checks the long page header at the start of `page`, the first bytes of a
    /// segment. The checks follow `XLogReaderValidatePageHeader` in
    /// src/backend/access/transam/xlogreader.c: a known magic, only defined flag bits, the long
    /// header flag, a valid segment size, a sane block size and a page address at a segment start.
    #[doc(alias = "XLogReaderValidatePageHeader")]
    pub fn decode(page: &[u8]) -> Result<Self, FormatError> {
        let bad =
            |lsn: Lsn, detail: String| FormatError::AtLsn { what: "WAL page header", lsn, detail };
        if page.len() < LONG_PAGE_HEADER_LEN {
            return Err(bad(
                Lsn::INVALID,
                format!("{} bytes is too short for a long page header", page.len()),
            ));
        }
        let field = |v: Option<u64>| v.unwrap_or_default();
        let page_addr = Lsn(field(u64_at(page, 8)));
        let magic = u16_at(page, 0).unwrap_or_default();
        let version = PgMajorVersion::from_xlog_page_magic(magic).ok_or_else(|| {
            bad(
                page_addr,
                format!("unknown WAL page magic {magic:#06X} (PostgreSQL 13 to 18 are supported)"),
            )
        })?;
        let info = u16_at(page, 2).unwrap_or_default();
        if info & !XLP_ALL_FLAGS != 0 {
            return Err(bad(page_addr, format!("invalid info bits {info:#06X}")));
        }
        if info & XLP_LONG_HEADER == 0 {
            return Err(bad(page_addr, "the first page of a segment lacks the long header".into()));
        }
        let tli = TimeLineId::new(u32_at(page, 4).unwrap_or_default())
            .map_err(|_| bad(page_addr, "timeline 0".into()))?;
        let rem_len = u32_at(page, 16).unwrap_or_default();
        let system_id = SystemId(field(u64_at(page, 24)));
        let raw_seg = u32_at(page, 32).unwrap_or_default();
        let seg_size = WalSegSize::new(raw_seg)
            .map_err(|_| bad(page_addr, format!("invalid segment size {raw_seg}")))?;
        let xlog_blcksz = u32_at(page, 36).unwrap_or_default();
        if !xlog_blcksz.is_power_of_two() || !(1024..=65536).contains(&xlog_blcksz) {
            return Err(bad(page_addr, format!("invalid WAL block size {xlog_blcksz}")));
        }
        if !page_addr.is_segment_start(seg_size) {
            return Err(bad(page_addr, "page address is not the start of a segment".into()));
        }
        Ok(LongPageHeader {
            version,
            info,
            tli,
            page_addr,
            rem_len,
            system_id,
            seg_size,
            xlog_blcksz,
        })
    }

    /// The segment this header belongs to, by its page address.
    pub fn segno(&self) -> XLogSegNo {
        self.page_addr.segment(self.seg_size)
    }

    /// Encodes the header (for tests and crafted segments).
    pub fn encode(&self) -> [u8; LONG_PAGE_HEADER_LEN] {
        let mut b = [0u8; LONG_PAGE_HEADER_LEN];
        let parts: [(usize, &[u8]); 8] = [
            (0, &self.version.xlog_page_magic().to_le_bytes()),
            (2, &self.info.to_le_bytes()),
            (4, &self.tli.get().to_le_bytes()),
            (8, &self.page_addr.0.to_le_bytes()),
            (16, &self.rem_len.to_le_bytes()),
            (24, &self.system_id.0.to_le_bytes()),
            (32, &self.seg_size.get().to_le_bytes()),
            (36, &self.xlog_blcksz.to_le_bytes()),
        ];
        for (at, bytes) in parts {
            if let Some(dst) = b.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LongPageHeader {
        LongPageHeader {
            version: PgMajorVersion::V15,
            info: XLP_LONG_HEADER,
            tli: TimeLineId::new(1).unwrap(),
            page_addr: Lsn(0x3_0000_0000 + 5 * 16 * 1024 * 1024),
            rem_len: 0,
            system_id: SystemId(7_312_345_678_901_234_567),
            seg_size: WalSegSize::DEFAULT,
            xlog_blcksz: 8192,
        }
    }

    #[test]
    fn roundtrip_every_version() {
        for v in PgMajorVersion::ALL {
            let h = LongPageHeader { version: v, ..sample() };
            let mut page = h.encode().to_vec();
            page.resize(8192, 0);
            assert_eq!(LongPageHeader::decode(&page).unwrap(), h);
            assert_eq!(PgMajorVersion::from_number(v.number()), Some(v));
        }
    }

    #[test]
    fn rejects_bad_fields() {
        let good = sample().encode();
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut m = good.to_vec();
        m[0] = 0x00;
        cases.push(("magic", m));
        let mut m = good.to_vec();
        m[2] = 0x00;
        cases.push(("no long header", m));
        let mut m = good.to_vec();
        m[2] = 0x12;
        cases.push(("info bits", m));
        let mut m = good.to_vec();
        m[4..8].copy_from_slice(&0u32.to_le_bytes());
        cases.push(("tli 0", m));
        let mut m = good.to_vec();
        m[8] = 0x28;
        cases.push(("page addr", m));
        let mut m = good.to_vec();
        m[32..36].copy_from_slice(&(3u32 << 20).to_le_bytes());
        cases.push(("seg size", m));
        let mut m = good.to_vec();
        m[36..40].copy_from_slice(&1000u32.to_le_bytes());
        cases.push(("blcksz", m));
        cases.push(("short", good[..39].to_vec()));
        for (what, bytes) in cases {
            let err = LongPageHeader::decode(&bytes);
            assert!(err.is_err(), "{what} must be rejected");
        }
    }

    #[test]
    fn error_names_the_lsn() {
        let mut m = sample().encode();
        m[0] = 0x01;
        let msg = LongPageHeader::decode(&m).unwrap_err().to_string();
        assert!(msg.contains("at 3/5000000"), "{msg}");
    }
}
