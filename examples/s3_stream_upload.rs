//! Streams GIB gibibytes through the envelope encoder (zstd:1) into one object of an S3 repository
//! (a backup chunk, the largest kind of object) and reports the throughput and this process's peak RSS (VmHWM): `s3_stream_upload ENDPOINT GIB`.
//! The data is generated on the fly (half compressible), so memory is the uploader's alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::io::Read;
use std::time::{Duration, Instant};

use walrs::codec::Compression;
use walrs::repo::{BackupChunk, BackupId, ChunkId, RepoObject, Repository};
use walrs::storage::{AnyStorage, S3Credentials, S3Location, S3Settings, S3Storage, Storage};

struct Gen {
    left: u64,
    state: u64,
}

impl Read for Gen {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left as usize).min(1 << 20);
        for chunk in buf[..n].chunks_mut(16) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let b = self.state.to_le_bytes();
            let k = chunk.len().min(8);
            chunk[..k].copy_from_slice(&b[..k]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn vm_hwm_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let endpoint = args.get(1).expect("usage: s3_stream_upload ENDPOINT GIB").clone();
    let gib: u64 = args.get(2).expect("usage: s3_stream_upload ENDPOINT GIB").parse().unwrap();
    let loc = S3Location::parse("s3://walrs-test/stream").unwrap();
    let settings = S3Settings { endpoint: Some(endpoint), ..Default::default() };
    let creds =
        S3Credentials::new("walrs-test-access-key", "walrs-test-secret-key-0123456789", None);
    let s3 = S3Storage::open(&loc, &settings, &creds, Instant::now() + Duration::from_secs(3600))
        .unwrap();
    let repo = Repository::new(AnyStorage::S3(Box::new(s3)), None);
    let chunk = ChunkId {
        backup: BackupId::at(std::time::SystemTime::now()),
        archive: format!("big-{gib}g"),
        number: 0,
    };
    let key = BackupChunk::key(&chunk).unwrap();
    let _ = repo.storage().delete(&key);
    let started = Instant::now();
    let bytes = gib << 30;
    let out = repo
        .put_new::<BackupChunk>(
            &chunk,
            Gen { left: bytes, state: 0x1234_5678_9abc_def1 },
            Compression::Zstd(1),
        )
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let stored = repo.storage().head(&key).unwrap().map(|m| m.size).unwrap_or(0);
    println!(
        "streamed {gib} GiB ({stored} bytes stored) in {secs:.1} s = {:.0} MiB/s; peak RSS {} MiB; {out:?}",
        (bytes as f64 / (1 << 20) as f64) / secs,
        vm_hwm_kib() / 1024
    );
    repo.storage().delete(&key).unwrap();
}
