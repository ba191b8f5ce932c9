//! What a codec failure means to the operator: `codec::CodecError` folded into the one
//! [`WalrsError`]. It lives in the repository layer because that is where the codec and storage
//! meet: a storage backend's reader hands its typed error to the decoder inside an I/O error, and
//! this conversion recovers it. (`storage::StorageError`'s own conversion is in `storage/`.)

use crate::codec::CodecError;
use crate::error::{Kind, WalrsError};
use crate::storage::StorageError;

/// The guidance for a foreign object. Never `wal index --rebuild`: that would take the object in.
const FOREIGN_OBJECT_HINT: &str = "walrs did not write this object with the repository's encryption: someone who can write to the repository may have planted it; move it aside, keep it for investigation and find out who wrote it";

impl From<CodecError> for WalrsError {
    fn from(e: CodecError) -> Self {
        match &e {
            CodecError::Corrupt { .. } => WalrsError::new(Kind::Corrupt, e.to_string())
                .hint("the stored object fails verification; restore it from another copy or move it aside"),
            CodecError::Unsupported { .. } => WalrsError::new(Kind::Unsupported, e.to_string())
                .hint("upgrade walrs to read this repository"),
            CodecError::Foreign { .. } => WalrsError::new(Kind::Corrupt, e.to_string())
                .hint(FOREIGN_OBJECT_HINT)
                .foreign_object(),
            CodecError::Key(_) => WalrsError::new(Kind::Key, e.to_string()),
            CodecError::Io { source, .. } => {
                // A storage backend's reader wraps its typed error in the io::Error.
                if let Some(se) = source.get_ref().and_then(|e| e.downcast_ref::<StorageError>()) {
                    return WalrsError::from(se.clone());
                }
                let kind = WalrsError::from(StorageError::from_io("", "", source)).kind;
                WalrsError::new(if kind == Kind::NotFound { Kind::Io } else { kind }, e.to_string())
            }
        }
    }
}
