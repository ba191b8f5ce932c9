//! Fuzz the WAL reader and record interpreter: arbitrary bytes as the start of a 1 MiB segment
//! (the rest zero) must never panic, whatever the page headers and records claim.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walrs::pg::records::{interpret, main_data};
use walrs::pg::{
    LongPageHeader, Lsn, PgMajorVersion, SystemId, TimeLineId, WalGeometry, WalSegSize, scan_segment,
};

fuzz_target!(|data: &[u8]| {
    let Ok(seg_size) = WalSegSize::new(1 << 20) else { return };
    let mut seg = vec![0u8; 1 << 20];
    let n = data.len().min(seg.len());
    seg[..n].copy_from_slice(&data[..n]);
    let version = PgMajorVersion::ALL[usize::from(data.first().copied().unwrap_or(0)) % 6];
    if data.first().is_some_and(|b| b & 0x80 == 0) {
        // A valid long header, so the fuzzer spends its time on records.
        let hdr = LongPageHeader {
            version,
            info: 2 | u16::from(data.get(1).copied().unwrap_or(0) & 1),
            tli: TimeLineId::FIRST,
            page_addr: Lsn(0),
            rem_len: u32::from(data.get(2).copied().unwrap_or(0)),
            system_id: SystemId(1),
            seg_size,
            xlog_blcksz: 8192,
        };
        seg[..40].copy_from_slice(&hdr.encode());
    }
    let geo = WalGeometry { seg_size, blcksz: 8192, version };
    let _ = scan_segment(&seg, Lsn(0), geo, None, |rec| {
        let _ = main_data(rec, version);
        let _ = interpret(rec, version);
    });
});
