//! One push and one fetch of a 16 MiB segment on the file-system backend, through the library
//! (what `walrs push`/`fetch` do minus process start). Set WALRS_BENCH_DIR to put the repository on
//! the disk to measure (default: a temporary directory).

// Benchmarks are edges, like tests: a failed setup may panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use walrs::archive::{self, PushOptions};
use walrs::repo::Repository;
use walrs::storage::{AnyStorage, FsStorage, Storage};

#[path = "common.rs"]
mod common;

fn push_fetch(c: &mut Criterion) {
    let base = std::env::var("WALRS_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let dir = tempfile::tempdir_in(base).unwrap();
    let repo_dir = dir.path().join("repo");
    let wal = dir.path().join("pg_wal");
    std::fs::create_dir_all(&repo_dir).unwrap();
    std::fs::create_dir_all(&wal).unwrap();
    let repo = Repository::new(AnyStorage::Fs(FsStorage::open(&repo_dir).unwrap()), None);
    let name = "000000010000000000000001";
    let seg_path = wal.join(name);
    std::fs::write(&seg_path, common::segment(1)).unwrap();
    let key = walrs::repo::layout::wal_key(&walrs::pg::WalFileName::parse(name).unwrap()).unwrap();

    let mut g = c.benchmark_group("fs-16MiB");
    g.throughput(Throughput::Bytes(common::SEG as u64));
    g.sample_size(20);
    for comp in ["zstd", "lz4"] {
        let opts = PushOptions { compression: Some(comp.parse().unwrap()), ..Default::default() };
        g.bench_function(format!("push/{comp}"), |b| {
            b.iter_batched(
                || repo.storage().delete(&key).unwrap(),
                |()| archive::push(&repo, &seg_path, &opts).unwrap(),
                BatchSize::PerIteration,
            )
        });
        g.bench_function(format!("fetch/{comp}"), |b| {
            b.iter(|| archive::fetch(&repo, name, &wal.join("RECOVERYXLOG")).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, push_fetch);
criterion_main!(benches);
