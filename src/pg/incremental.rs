//! PostgreSQL 17's incremental relation file (`INCREMENTAL.<name>` in an incremental base
//! backup): a header, then the changed blocks. Pure format code, no I/O: the restore of a chain
//! (`backup/restore.rs`) reads the header through these types and the blocks itself.
//!
//! The layout, as written by `sendFile` with `INCREMENTAL` in src/backend/backup/basebackup.c and
//! read by `make_incremental_rfile` in src/bin/pg_combinebackup/reconstruct.c, all integers in the
//! server's byte order (little-endian on the platforms walrs runs on):
//! - `uint32` magic [`INCREMENTAL_MAGIC`];
//! - `uint32` number of blocks `n` (at most [`RELSEG_SIZE`]);
//! - `uint32` truncation block length: the relation segment's length in blocks at the parent
//!   backup's start as far as the WAL summaries know it (at most [`RELSEG_SIZE`]);
//! - `n` × `uint32` block numbers, relative to the segment file;
//! - when `n > 0`, zero padding up to a multiple of [`BLCKSZ`];
//! - `n` blocks of [`BLCKSZ`] bytes, in the order of the block numbers.
//!
//! The reconstructed file is `max(truncation length, highest block + 1)` blocks long
//! (`find_reconstructed_block_length`); each block comes from the newest backup of the chain
//! that has it, below the truncation length only from older backups; a block no backup has is
//! zero.

/// The file name prefix of an incremental file (`INCREMENTAL_PREFIX` in
/// src/include/backup/basebackup_incremental.h).
pub const INCREMENTAL_PREFIX: &str = "INCREMENTAL.";

/// The magic number (`INCREMENTAL_MAGIC` in src/include/backup/basebackup_incremental.h).
pub const INCREMENTAL_MAGIC: u32 = 0xd3ae_1f0d;

/// PostgreSQL's block size (`BLCKSZ`, the default of `--with-blocksize`); a build with another
/// block size writes incremental files whose sizes do not add up, which the reader reports.
pub const BLCKSZ: u64 = 8192;

/// Blocks per relation segment file (`RELSEG_SIZE`: 1 GiB of 8 kB blocks, the default).
pub const RELSEG_SIZE: u32 = 131_072;

/// Bytes of the fixed part of the header (magic, block count, truncation length).
pub const FIXED_HEADER_LEN: usize = 12;

/// The fixed part of an incremental file's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IncrementalHeader {
    /// Blocks stored in the file.
    pub num_blocks: u32,
    /// The truncation block length.
    pub truncation_block_length: u32,
}

/// What is wrong with an incremental file's header.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IncrementalError {
    /// Not an incremental file.
    #[error("bad incremental magic number 0x{0:08x} (not 0x{INCREMENTAL_MAGIC:08x})")]
    Magic(u32),
    /// A count above a segment's blocks.
    #[error("{what} {value} in excess of segment size {RELSEG_SIZE}")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: u32,
    },
    /// A block number beyond a segment.
    #[error("block number {0} in excess of segment size {RELSEG_SIZE}")]
    Block(u32),
    /// The file's size is not what its header says.
    #[error("{size} bytes, the header says {expected}")]
    Size {
        /// The file's size.
        size: u64,
        /// Header length plus the blocks.
        expected: u64,
    },
}

fn u32_at(b: &[u8; FIXED_HEADER_LEN], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

impl IncrementalHeader {
    /// Parses the fixed part; port of the checks of `make_incremental_rfile` in
    /// src/bin/pg_combinebackup/reconstruct.c.
    #[doc(alias = "make_incremental_rfile")]
    pub fn parse(b: &[u8; FIXED_HEADER_LEN]) -> Result<Self, IncrementalError> {
        let magic = u32_at(b, 0);
        if magic != INCREMENTAL_MAGIC {
            return Err(IncrementalError::Magic(magic));
        }
        let num_blocks = u32_at(b, 4);
        if num_blocks > RELSEG_SIZE {
            return Err(IncrementalError::TooLarge { what: "block count", value: num_blocks });
        }
        let truncation_block_length = u32_at(b, 8);
        if truncation_block_length > RELSEG_SIZE {
            return Err(IncrementalError::TooLarge {
                what: "truncation block length",
                value: truncation_block_length,
            });
        }
        Ok(IncrementalHeader { num_blocks, truncation_block_length })
    }

    /// Bytes of the whole header: the fixed part and the block numbers, padded to [`BLCKSZ`]
    /// when the file holds blocks.
    pub fn header_len(&self) -> u64 {
        let raw = FIXED_HEADER_LEN as u64 + 4 * u64::from(self.num_blocks);
        if self.num_blocks > 0 { raw.div_ceil(BLCKSZ) * BLCKSZ } else { raw }
    }

    /// Checks the file's size against the header.
    pub fn check_size(&self, size: u64) -> Result<(), IncrementalError> {
        let expected = self.header_len() + u64::from(self.num_blocks) * BLCKSZ;
        if size == expected { Ok(()) } else { Err(IncrementalError::Size { size, expected }) }
    }

    /// Parses the block numbers (`4 × num_blocks` bytes) and checks each.
    pub fn block_numbers(&self, b: &[u8]) -> Result<Vec<u32>, IncrementalError> {
        let mut out = Vec::with_capacity(self.num_blocks as usize);
        for w in b.chunks_exact(4).take(self.num_blocks as usize) {
            let mut a = [0u8; 4];
            a.copy_from_slice(w);
            let n = u32::from_le_bytes(a);
            if n >= RELSEG_SIZE {
                return Err(IncrementalError::Block(n));
            }
            out.push(n);
        }
        Ok(out)
    }

    /// Blocks of the reconstructed file: the truncation length, or further when the file holds
    /// blocks beyond it; port of `find_reconstructed_block_length`.
    #[doc(alias = "find_reconstructed_block_length")]
    pub fn reconstructed_len(&self, blocks: &[u32]) -> u32 {
        blocks.iter().map(|b| b + 1).fold(self.truncation_block_length, u32::max)
    }
}

/// The name a file of an incremental backup restores to: `INCREMENTAL.16384` → `16384`;
/// `None` for a file stored whole.
pub fn restored_name(file_name: &str) -> Option<&str> {
    file_name.strip_prefix(INCREMENTAL_PREFIX).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(magic: u32, n: u32, t: u32) -> [u8; FIXED_HEADER_LEN] {
        let mut b = [0u8; FIXED_HEADER_LEN];
        b[..4].copy_from_slice(&magic.to_le_bytes());
        b[4..8].copy_from_slice(&n.to_le_bytes());
        b[8..].copy_from_slice(&t.to_le_bytes());
        b
    }

    #[test]
    fn header_lengths_sizes_and_reconstructed_length() {
        let h = IncrementalHeader::parse(&fixed(INCREMENTAL_MAGIC, 0, 7)).unwrap();
        assert_eq!(h.header_len(), 12);
        h.check_size(12).unwrap();
        assert_eq!(h.reconstructed_len(&[]), 7);
        let h = IncrementalHeader::parse(&fixed(INCREMENTAL_MAGIC, 2, 3)).unwrap();
        assert_eq!(h.header_len(), 8192);
        h.check_size(8192 * 3).unwrap();
        assert!(h.check_size(8192 * 3 - 1).is_err());
        let mut nums = Vec::new();
        nums.extend_from_slice(&1u32.to_le_bytes());
        nums.extend_from_slice(&9u32.to_le_bytes());
        let blocks = h.block_numbers(&nums).unwrap();
        assert_eq!(blocks, vec![1, 9]);
        assert_eq!(h.reconstructed_len(&blocks), 10);
        // 2045 block numbers fill the first 8 kB exactly; one more needs a second page.
        let h = IncrementalHeader { num_blocks: 2045, truncation_block_length: 0 };
        assert_eq!(h.header_len(), 8192);
        let h = IncrementalHeader { num_blocks: 2046, truncation_block_length: 0 };
        assert_eq!(h.header_len(), 16384);
    }

    #[test]
    fn bad_headers_are_refused() {
        assert_eq!(IncrementalHeader::parse(&fixed(1, 0, 0)), Err(IncrementalError::Magic(1)));
        assert!(IncrementalHeader::parse(&fixed(INCREMENTAL_MAGIC, RELSEG_SIZE + 1, 0)).is_err());
        assert!(IncrementalHeader::parse(&fixed(INCREMENTAL_MAGIC, 0, RELSEG_SIZE + 1)).is_err());
        let h = IncrementalHeader { num_blocks: 1, truncation_block_length: 0 };
        assert_eq!(
            h.block_numbers(&RELSEG_SIZE.to_le_bytes()),
            Err(IncrementalError::Block(RELSEG_SIZE))
        );
        assert_eq!(restored_name("INCREMENTAL.16384_fsm"), Some("16384_fsm"));
        assert_eq!(restored_name("INCREMENTAL."), None);
        assert_eq!(restored_name("16384"), None);
    }
}
