//! Shared by the benches: a 16 MiB WAL-like segment. Set WALRS_BENCH_SEGMENT to a real segment
//! file (e.g. one archived by `benches/archive_drain.sh`) to measure on real WAL.

use walrs::pg::{LongPageHeader, Lsn, PgMajorVersion, SystemId, TimeLineId, WalSegSize};

pub const SEG: usize = 16 << 20;

/// A real segment from WALRS_BENCH_SEGMENT, or a synthetic one: a valid long header, then 8 KiB
/// pages of heap-like tuples (repeating structure with varying keys) in the first 3/4, zeros
/// after (as a segment closed by a switch).
pub fn segment(segno: u64) -> Vec<u8> {
    if let Ok(p) = std::env::var("WALRS_BENCH_SEGMENT") {
        let mut b = std::fs::read(&p).expect("reading WALRS_BENCH_SEGMENT");
        let mut hdr = LongPageHeader::decode(&b).expect("WALRS_BENCH_SEGMENT is a WAL segment");
        hdr.page_addr = Lsn(segno * hdr.seg_size.bytes());
        b[..40].copy_from_slice(&hdr.encode());
        return b;
    }
    let hdr = LongPageHeader {
        version: PgMajorVersion::V15,
        info: 2,
        tli: TimeLineId::new(1).unwrap(),
        page_addr: Lsn(segno * SEG as u64),
        rem_len: 0,
        system_id: SystemId(7_300_000_000_000_000_001),
        seg_size: WalSegSize::DEFAULT,
        xlog_blcksz: 8192,
    };
    let mut b = vec![0u8; SEG];
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15 ^ segno;
    for (i, chunk) in b[..SEG / 4 * 3].chunks_mut(64).enumerate() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        chunk[..8].copy_from_slice(&(i as u64).to_le_bytes());
        chunk[8..16].copy_from_slice(&s.to_le_bytes());
        for (j, x) in chunk[16..].iter_mut().enumerate() {
            *x = b"INSERT-tuple-payload-abcdefghijklmnopqrstuvwxyz"[j % 47];
        }
    }
    b[..40].copy_from_slice(&hdr.encode());
    b
}
