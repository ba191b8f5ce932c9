//! The CPU cost per segment of the index `push` builds as it streams a segment: the summary alone
//! (what push built before the block maps) against the summary and the block map (what it builds
//! now, `SegmentIndexer`), on every WAL segment in DIR, each segment on its own as push sees it:
//! `index_cost DIR [ROUNDS]` (docs/benchmarks.md, issue 18). Fed in 1 MiB frames, as push feeds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::time::Instant;

use walrs::index::{SegmentIndexer, SummaryBuilder};
use walrs::pg::{LongPageHeader, WalFileName, WalScanner};

fn main() {
    let dir =
        std::path::PathBuf::from(std::env::args().nth(1).expect("usage: index_cost DIR [ROUNDS]"));
    let rounds: u32 = std::env::args().nth(2).map(|r| r.parse().unwrap()).unwrap_or(5);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            WalFileName::parse(n).is_ok_and(|w| w.kind() == walrs::pg::WalFileKind::Segment)
        })
        .collect();
    names.sort();
    let segs: Vec<(WalFileName, Vec<u8>)> = names
        .iter()
        .map(|n| (WalFileName::parse(n).unwrap(), std::fs::read(dir.join(n)).unwrap()))
        .collect();
    let (mut summary_only, mut both) = (f64::MAX, f64::MAX);
    let mut blocks = 0usize;
    for _ in 0..rounds {
        let t = Instant::now();
        for (name, s) in &segs {
            let h = LongPageHeader::decode(s).unwrap();
            let mut b = SummaryBuilder::new(name, &h);
            let mut sc = WalScanner::new(h.page_addr, b.geometry());
            for f in s.chunks(1 << 20) {
                sc.feed(f, |r| b.observe(r));
            }
            let scan = sc.finish();
            std::hint::black_box(b.finish(&scan, String::new()));
        }
        summary_only = summary_only.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        blocks = 0;
        for (name, s) in &segs {
            let h = LongPageHeader::decode(s).unwrap();
            let mut ix = SegmentIndexer::new(name, &h);
            for f in s.chunks(1 << 20) {
                ix.feed(f);
            }
            let sum = ix.finish(String::new());
            blocks += sum.block_map.as_ref().map_or(0, |m| m.block_refs().count());
            std::hint::black_box(sum);
        }
        both = both.min(t.elapsed().as_secs_f64());
    }
    let n = segs.len() as f64;
    println!(
        "{} segments; best of {rounds}: summary only {:.2} ms/segment, summary + block map {:.2} ms/segment (+{:.2} ms, {:.0} %); {blocks} distinct blocks in the maps",
        segs.len(),
        summary_only * 1e3 / n,
        both * 1e3 / n,
        (both - summary_only) * 1e3 / n,
        (both / summary_only - 1.0) * 100.0
    );
}
