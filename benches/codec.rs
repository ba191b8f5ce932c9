//! Codec throughput on a 16 MiB segment: encode and decode with each compression, with and
//! without encryption.

// Benchmarks are edges, like tests: a failed setup may panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use walrs::codec::{Compression, MasterKey, decode_to_vec, encode_to_vec};

#[path = "common.rs"]
mod common;

fn codec(c: &mut Criterion) {
    let seg = common::segment(1);
    let key = MasterKey::from_bytes([7; 32]);
    let mut g = c.benchmark_group("codec-16MiB");
    g.throughput(Throughput::Bytes(seg.len() as u64));
    g.sample_size(20);
    for (label, comp, k) in [
        ("zstd1", Compression::Zstd(1), None),
        ("lz4", Compression::Lz4, None),
        ("none", Compression::None, None),
        ("zstd1+aes", Compression::Zstd(1), Some(&key)),
        ("lz4+aes", Compression::Lz4, Some(&key)),
    ] {
        let enc = encode_to_vec("000000010000000000000001", &seg, comp, k).unwrap();
        eprintln!(
            "{label}: {} -> {} bytes ({:.1} %)",
            seg.len(),
            enc.len(),
            100.0 * enc.len() as f64 / seg.len() as f64
        );
        g.bench_function(format!("encode/{label}"), |b| {
            b.iter(|| encode_to_vec("000000010000000000000001", &seg, comp, k).unwrap())
        });
        g.bench_function(format!("decode/{label}"), |b| {
            b.iter(|| decode_to_vec(&enc, "000000010000000000000001", k).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
