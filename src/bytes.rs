//! Little-endian integers read out of byte slices, the one set every decoder uses (`pg/` for WAL
//! pages and records, `codec/` for envelope headers, frames and trailers, `mysql/` for binlog
//! events), and [`read_full`], the one "fill this buffer from a reader" (`codec/`, `storage/`,
//! `archive/`).
//!
//! Every reader returns `None` when the slice is too short (or the offset overflows), never a
//! made-up 0: a caller decides what a short field means (truncated, corrupt) and says so. This file
//! sits below every layer and imports nothing from the crate.

/// Reads until `buf` is full or the reader is at its end; returns the bytes read (less than
/// `buf.len()` only at the end). `Interrupted` reads are retried.
pub fn read_full<R: std::io::Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(buf.get_mut(done..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// `N` bytes at `at`, if the slice holds them.
fn array_at<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// The little-endian `u16` at `at`.
pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    array_at(b, at).map(u16::from_le_bytes)
}

/// The little-endian `u32` at `at`.
pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    array_at(b, at).map(u32::from_le_bytes)
}

/// The little-endian `u64` at `at`.
pub fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    array_at(b, at).map(u64::from_le_bytes)
}

/// The little-endian `i64` at `at`.
pub fn i64_at(b: &[u8], at: usize) -> Option<i64> {
    array_at(b, at).map(i64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_little_endian() {
        let b = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09];
        assert_eq!(u16_at(&b, 0), Some(0x0201));
        assert_eq!(u32_at(&b, 1), Some(0x0504_0302));
        assert_eq!(u64_at(&b, 1), Some(0x0908_0706_0504_0302));
        assert_eq!(i64_at(&[0xff; 8], 0), Some(-1));
    }

    #[test]
    fn short_input_is_none_not_zero() {
        let b = [0u8; 7];
        assert_eq!(u16_at(&b, 6), None);
        assert_eq!(u32_at(&b, 4), None);
        assert_eq!(u64_at(&b, 0), None);
        assert_eq!(i64_at(&b, 0), None);
        assert_eq!(u32_at(&b, usize::MAX - 1), None);
        assert_eq!(u16_at(&[], 0), None);
    }

    proptest! {
        #[test]
        fn agrees_with_from_le_bytes(b in proptest::collection::vec(any::<u8>(), 0..24), at in 0usize..24) {
            let want = |n: usize| b.get(at..at + n).map(<[u8]>::to_vec);
            prop_assert_eq!(u16_at(&b, at).map(|v| v.to_le_bytes().to_vec()), want(2));
            prop_assert_eq!(u32_at(&b, at).map(|v| v.to_le_bytes().to_vec()), want(4));
            prop_assert_eq!(u64_at(&b, at).map(|v| v.to_le_bytes().to_vec()), want(8));
            prop_assert_eq!(i64_at(&b, at).map(|v| v.to_le_bytes().to_vec()), want(8));
        }
    }
}
