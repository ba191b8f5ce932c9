//! Where each kind of object lives in a repository (docs/format/layout.md).
//!
//! ```text
//! walrs.config                      repository config (and walrs.config.copy, its twin)
//! wal/<TTTTTTTTXXXXXXXX>/<name>     segments, .partial segments, .backup files, grouped by the
//!                                   first 16 characters of the name (timeline + xlogid)
//! wal/history/<TTTTTTTT>.history    timeline history files
//! ```
//! Object names are PostgreSQL's own file names, so a listing reads as the archive it is.

use crate::pg::{WalFileKind, WalFileName};
use crate::storage::{ObjectKey, StorageError};

/// The repository config object.
pub const CONFIG: &str = "walrs.config";
/// Its twin, read when the first is missing or damaged.
pub const CONFIG_COPY: &str = "walrs.config.copy";
/// Prefix of every WAL object.
pub const WAL_PREFIX: &str = "wal/";

/// The key of a WAL file.
pub fn wal_key(name: &WalFileName) -> Result<ObjectKey, StorageError> {
    match (name.kind(), name.group()) {
        (WalFileKind::History, _) | (_, None) => ObjectKey::new(format!("wal/history/{name}")),
        (_, Some(group)) => ObjectKey::new(format!("wal/{group}/{name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let k = |s: &str| wal_key(&WalFileName::parse(s).unwrap()).unwrap().to_string();
        assert_eq!(k("00000001000000A20000003F"), "wal/00000001000000A2/00000001000000A20000003F");
        assert_eq!(
            k("00000002000000000000000F.partial"),
            "wal/0000000200000000/00000002000000000000000F.partial"
        );
        assert_eq!(
            k("000000010000000000000002.00000028.backup"),
            "wal/0000000100000000/000000010000000000000002.00000028.backup"
        );
        assert_eq!(k("00000002.history"), "wal/history/00000002.history");
    }
}
