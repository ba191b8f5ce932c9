//! Scans every WAL segment in DIR (chained across segment boundaries), interprets every record,
//! and prints the record counts and the decode throughput: `wal_scan DIR [ROUNDS]`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::time::Instant;

use walrs::pg::records::interpret;
use walrs::pg::{LongPageHeader, RecordKind, ScanEnd, WalFileName, WalGeometry, scan_segment};

fn main() {
    let dir =
        std::path::PathBuf::from(std::env::args().nth(1).expect("usage: wal_scan DIR [ROUNDS]"));
    let rounds: u32 = std::env::args().nth(2).map(|r| r.parse().unwrap()).unwrap_or(3);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            WalFileName::parse(n).is_ok_and(|w| w.kind() == walrs::pg::WalFileKind::Segment)
        })
        .collect();
    names.sort();
    let segs: Vec<Vec<u8>> = names.iter().map(|n| std::fs::read(dir.join(n)).unwrap()).collect();
    let bytes: usize = segs.iter().map(Vec::len).sum();
    let mut best = f64::MAX;
    let (mut records, mut commits, mut errors) = (0u64, 0u64, 0u64);
    for _ in 0..rounds {
        let t = Instant::now();
        let (mut r, mut c) = (0u64, 0u64);
        let mut carry = None;
        errors = 0;
        for s in &segs {
            let h = LongPageHeader::decode(s).unwrap();
            let geo =
                WalGeometry { seg_size: h.seg_size, blcksz: h.xlog_blcksz, version: h.version };
            let scan = scan_segment(s, h.page_addr, geo, carry.take(), |rec| {
                r += 1;
                if let Ok(RecordKind::Commit { .. }) = interpret(rec, geo.version) {
                    c += 1;
                }
            });
            errors += u64::from(scan.error.is_some());
            if let ScanEnd::Continues(c) = scan.end {
                carry = Some(c);
            }
        }
        best = best.min(t.elapsed().as_secs_f64());
        (records, commits) = (r, c);
    }
    println!(
        "{} segments, {} MiB, {records} records, {commits} commits, {errors} segments with errors; best of {rounds}: {:.1} ms = {:.0} MB/s",
        segs.len(),
        bytes >> 20,
        best * 1e3,
        bytes as f64 / best / 1e6
    );
}
