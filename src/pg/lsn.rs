//! `Lsn`: a position in the write-ahead log, shown and parsed as PostgreSQL prints it (`16/B374D848`).
//!
//! Segment arithmetic lives here as methods so that no caller does bit twiddling on bare integers.
//! The segment size is always passed in, never global.

use std::fmt;
use std::str::FromStr;

use super::FormatError;
use super::names::{WalSegSize, XLogSegNo};

/// A WAL location (`XLogRecPtr`): a byte offset into the infinite WAL stream.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The invalid LSN, `0/0` (`InvalidXLogRecPtr`).
    pub const INVALID: Lsn = Lsn(0);

    /// The segment that contains this LSN.
    ///
    /// Port of `XLByteToSeg` in src/include/access/xlog_internal.h.
    #[doc(alias = "XLByteToSeg")]
    pub fn segment(self, seg_size: WalSegSize) -> XLogSegNo {
        XLogSegNo(self.0 / seg_size.bytes())
    }

    /// The offset of this LSN inside its segment.
    ///
    /// Port of `XLogSegmentOffset` in src/include/access/xlog_internal.h.
    #[doc(alias = "XLogSegmentOffset")]
    pub fn segment_offset(self, seg_size: WalSegSize) -> u64 {
        self.0 & (seg_size.bytes() - 1)
    }

    /// Whether this is the start of a segment.
    pub fn is_segment_start(self, seg_size: WalSegSize) -> bool {
        self.segment_offset(seg_size) == 0
    }

    /// The position `bytes` further on; `None` past the end of the WAL address space.
    pub fn checked_add(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_add(bytes).map(Lsn)
    }

    /// The position `bytes` further on, at most `FFFFFFFF/FFFFFFFF`.
    pub fn saturating_add(self, bytes: u64) -> Lsn {
        Lsn(self.0.saturating_add(bytes))
    }

    /// The position `bytes` earlier; `None` before `0/0`.
    pub fn checked_sub(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_sub(bytes).map(Lsn)
    }

    /// The position `bytes` earlier, at least `0/0`.
    pub fn saturating_sub(self, bytes: u64) -> Lsn {
        Lsn(self.0.saturating_sub(bytes))
    }

    /// The bytes of WAL from `earlier` to this position; `None` if `earlier` is after it.
    pub fn bytes_since(self, earlier: Lsn) -> Option<u64> {
        self.0.checked_sub(earlier.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({self})")
    }
}

impl FromStr for Lsn {
    type Err = FormatError;

    /// Parses `X/X` where each half is 1 to 8 hexadecimal digits, as `pg_lsn_in` accepts.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |detail: &str| FormatError::invalid("LSN", format!("{s:?}: {detail}"));
        let (hi, lo) = s.split_once('/').ok_or_else(|| bad("expected X/X"))?;
        let half = |part: &str| -> Result<u64, FormatError> {
            if part.is_empty() || part.len() > 8 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("each half must be 1 to 8 hexadecimal digits"));
            }
            u64::from_str_radix(part, 16).map_err(|_| bad("not hexadecimal"))
        };
        Ok(Lsn((half(hi)? << 32) | half(lo)?))
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Read from the string in place (no `String` per value: the WAL index holds five LSNs per
/// segment, and `walrs status` reads 100,000 segments' worth).
impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Lsn;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an LSN string such as \"16/B374D848\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Lsn, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_and_print() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn::INVALID);
        assert_eq!("ffffffff/ffffffff".parse::<Lsn>().unwrap(), Lsn(u64::MAX));
        for bad in ["", "/", "1/", "/1", "1", "1/2/3", "g/0", "123456789/0", " 1/0", "1/-0", "+1/0"]
        {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn segment_math() {
        let seg = WalSegSize::new(16 * 1024 * 1024).unwrap();
        let lsn: Lsn = "1/3A000128".parse().unwrap();
        assert_eq!(lsn.segment(seg), XLogSegNo(0x13A));
        assert_eq!(lsn.segment_offset(seg), 0x128);
        assert!(!lsn.is_segment_start(seg));
        assert!(Lsn(0x1_3A00_0000).is_segment_start(seg));
    }

    #[test]
    fn arithmetic_is_checked_or_saturating() {
        let l: Lsn = "1/FFFFFFFF".parse().unwrap();
        assert_eq!(l.checked_add(1), Some("2/0".parse().unwrap()));
        assert_eq!(l.saturating_add(1).to_string(), "2/0");
        assert_eq!(l.checked_sub(0xFFFF_FFFF), Some("1/0".parse().unwrap()));
        assert_eq!(Lsn(u64::MAX).checked_add(1), None);
        assert_eq!(Lsn(u64::MAX).saturating_add(5), Lsn(u64::MAX));
        assert_eq!(Lsn(3).checked_sub(4), None);
        assert_eq!(Lsn(3).saturating_sub(4), Lsn::INVALID);
        assert_eq!(l.bytes_since(Lsn(0x1_0000_0000)), Some(0xFFFF_FFFF));
        assert_eq!(Lsn(1).bytes_since(l), None);
    }

    proptest! {
        #[test]
        fn add_then_sub_returns(v in any::<u64>(), d in any::<u64>()) {
            let l = Lsn(v);
            match l.checked_add(d) {
                Some(m) => {
                    prop_assert_eq!(m.saturating_add(0), l.saturating_add(d));
                    prop_assert_eq!(m.checked_sub(d), Some(l));
                    prop_assert_eq!(m.bytes_since(l), Some(d));
                }
                None => prop_assert_eq!(l.saturating_add(d), Lsn(u64::MAX)),
            }
        }

        #[test]
        fn roundtrip(v in any::<u64>()) {
            let lsn = Lsn(v);
            prop_assert_eq!(lsn.to_string().parse::<Lsn>().unwrap(), lsn);
        }

        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            let _ = s.parse::<Lsn>();
        }

        #[test]
        fn accepts_any_two_hex_halves(hi in "[0-9a-fA-F]{1,8}", lo in "[0-9a-fA-F]{1,8}") {
            let lsn: Lsn = format!("{hi}/{lo}").parse().unwrap();
            let want = (u64::from_str_radix(&hi, 16).unwrap() << 32) | u64::from_str_radix(&lo, 16).unwrap();
            prop_assert_eq!(lsn.0, want);
        }
    }
}
