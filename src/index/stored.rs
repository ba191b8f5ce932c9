//! Reading a stored WAL segment back for the index: used by `wal verify`, the index rebuild
//! (`verify.rs`) and the block maps' resolution of records that cross a segment
//! (`blockmap.rs`).

use crate::error::{Kind, Result, WalrsError};
use crate::pg::{LongPageHeader, WalFileName};
use crate::repo::{Repository, WalFile};

/// Decodes a stored segment frame by frame (verifying the envelope); `f` gets each frame, the
/// first with its decoded long page header. Returns the object's content digest. From a network
/// backend, a segment that fails verification is decoded once more (`repo::reread`): `f` sees
/// the frames again from the first, and must start over when it gets a header.
pub(crate) fn decode_stored(
    repo: &Repository,
    name: &WalFileName,
    mut f: impl FnMut(&[u8], Option<&LongPageHeader>) -> Result<()>,
) -> Result<String> {
    crate::repo::reread::read_verified(repo, name.as_str(), || {
        let mut dec = repo.open::<WalFile>(name)?;
        let mut frame = Vec::new();
        let mut first = true;
        while dec.next_frame(&mut frame)? {
            if first {
                let h = LongPageHeader::decode(&frame).map_err(|e| {
                    WalrsError::new(Kind::Corrupt, format!("not a WAL segment: {e}"))
                })?;
                f(&frame, Some(&h))?;
                first = false;
            } else {
                f(&frame, None)?;
            }
        }
        if first {
            return Err(WalrsError::new(Kind::Corrupt, "empty object"));
        }
        Ok(dec.summary().map(|s| s.digest_hex()).unwrap_or_default())
    })
}
