//! Writes seed envelopes for the `envelope_decode` fuzz target into DIR (`fuzz_seeds DIR`): small
//! objects of every compression, plain and encrypted with the target's key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use walrs::codec::{Compression, MasterKey, encode_to_vec};

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: fuzz_seeds DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let key = MasterKey::from_bytes([7; 32]);
    let texts: [&[u8]; 3] = [b"", b"1\t0/3000160\tno recovery target specified\n", &[0x5a; 600]];
    let mut n = 0;
    for c in [Compression::None, Compression::Zstd(1), Compression::Lz4] {
        for k in [None, Some(&key)] {
            for t in texts {
                let enc = encode_to_vec("000000010000000000000001", t, c, k).unwrap();
                std::fs::write(dir.join(format!("seed-{n}")), enc).unwrap();
                n += 1;
            }
        }
    }
    println!("{n} seeds in {}", dir.display());
}
