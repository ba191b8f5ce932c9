//! Crafted WAL segments: a valid long page header followed by filler, enough for push/fetch
//! (which check the header against the name and the repository) without a server.

use std::path::{Path, PathBuf};

use walrs::pg::{
    LongPageHeader, Lsn, PgMajorVersion, SystemId, TimeLineId, WalFileName, WalSegSize, XLogSegNo,
};

pub const SYSID: u64 = 7_312_345_678_901_234_567;

/// How to fill the rest of the segment.
#[derive(Clone, Copy)]
pub enum Fill {
    /// A compressible pattern, varied by the seed.
    Pattern(u64),
    /// Incompressible pseudo-random bytes.
    Random(u64),
}

pub struct SegSpec {
    pub tli: u32,
    pub segno: u64,
    pub sysid: u64,
    pub seg_size: u32,
    pub version: PgMajorVersion,
    pub fill: Fill,
}

impl SegSpec {
    pub fn new(segno: u64) -> Self {
        SegSpec {
            tli: 1,
            segno,
            sysid: SYSID,
            seg_size: 16 << 20,
            version: PgMajorVersion::V15,
            fill: Fill::Pattern(segno),
        }
    }

    pub fn name(&self) -> String {
        let size = WalSegSize::new(self.seg_size).unwrap();
        WalFileName::segment(TimeLineId::new(self.tli).unwrap(), XLogSegNo(self.segno), size)
            .to_string()
    }

    pub fn bytes(&self) -> Vec<u8> {
        let size = WalSegSize::new(self.seg_size).unwrap();
        let hdr = LongPageHeader {
            version: self.version,
            info: 0x0002,
            tli: TimeLineId::new(self.tli).unwrap(),
            page_addr: Lsn(self.segno * u64::from(self.seg_size)),
            rem_len: 0,
            system_id: SystemId(self.sysid),
            seg_size: size,
            xlog_blcksz: 8192,
        };
        let mut b = vec![0u8; self.seg_size as usize];
        match self.fill {
            Fill::Pattern(seed) => {
                // Mostly zeros (like a switched segment) with a varied first half.
                for (i, x) in b.iter_mut().take(self.seg_size as usize / 2).enumerate() {
                    *x = ((i as u64).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8
                        & 0x1F;
                }
            }
            Fill::Random(seed) => {
                let mut s = seed | 1;
                for chunk in b.chunks_mut(8) {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    let bytes = s.to_le_bytes();
                    chunk.copy_from_slice(&bytes[..chunk.len()]);
                }
            }
        }
        b[..40].copy_from_slice(&hdr.encode());
        b
    }

    /// Writes the segment into `dir` under its name; returns the path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let p = dir.join(self.name());
        std::fs::write(&p, self.bytes()).unwrap();
        p
    }
}
